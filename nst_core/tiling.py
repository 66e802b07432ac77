"""Print sizes: the loss and its gradient over tiles, with the statistics of the whole image.

A scale too large for one pass through VGG (nst_core.memory) is computed tile by tile, each
tile read with a halo of context on every side of its core. The terms are the Objective's own
(nst_core.terms): each term that runs over tiles gives sums over feature positions (the
content loss's squared errors, the style statistics' sums of x x^T and x), and its loss is a
function of those sums, so per step:
1. forward over every tile, each layer's features cropped to the tile's core, so every feature
   position counts once: the sums over tiles are the whole image's (exactly, up to what the
   halo leaves out of a feature's receptive field);
2. d(total)/d(sums) once, on the whole image's sums; then per tile, under a gradient tape, the
   surrogate sum(d(total)/d(sums) * the tile's sums), whose gradient with respect to the tile's
   pixels (halo included) is that tile's share of the full gradient.
The optimiser sees one loss and one gradient of the whole image, as at a scale that fits.
The grid moves by a random offset every step, so whatever error the halo leaves at a tile
border is never at the same place twice. TV is the whole image's (no network: cheap).

A term without sums is left out at tiled scales: the self-similarity content loss compares
positions across the whole image, and the coarse scales before them, which set the layout, run
in one pass with it. swd sorts every position's projections together, and the other
statistics are not offered over tiles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from keras import ops

from . import backend
from .image_io import size_for
from .model import min_input_side
from .optimize import lbfgs_update
from .settings import settings
from .targets import resize, style_shape, term_args
from .terms import Measured, combine, normalized, photo_layers

HALO = 64  # px of context on each side: half of block5_conv1's 132 px receptive field, whose effective field is smaller
PRINT_HISTORY = 5  # L-BFGS pairs kept at tiled scales: each is an image of memory; 5, 10, 20 took 201, 203, 194 steps


class TilingError(ValueError):
    """This objective cannot be computed over tiles."""


def forced_tile() -> int | None:
    """$NST_TILE, or None: let the memory plan decide."""
    return settings().tile or None


@dataclass(frozen=True)
class Tile:
    """A tile's core (rows, columns it owns) and outer box (core plus halo, clipped to the image), in px."""

    core: tuple[int, int, int, int]  # y0, y1, x0, x1
    outer: tuple[int, int, int, int]


def _cuts(length: int, tile: int, offset: int) -> list[int]:
    """Borders of cores along one axis: every `tile` px from `offset`, plus the ends."""
    return [0, *range(offset % tile or tile, length, tile), length]


def grid(height: int, width: int, tile: int, halo: int = HALO, offset: tuple[int, int] = (0, 0)) -> list[Tile]:
    """Tiles whose cores partition the image. `tile`, `halo` and `offset` are multiples of the
    network's stride (8 px for block4, 16 px for block5), so each tile's pooling windows are the whole image's."""
    rows, cols = _cuts(height, tile, offset[0]), _cuts(width, tile, offset[1])
    return [
        Tile((y0, y1, x0, x1), (max(0, y0 - halo), min(height, y1 + halo), max(0, x0 - halo), min(width, x1 + halo)))
        for y0, y1 in zip(rows, rows[1:])
        for x0, x1 in zip(cols, cols[1:])
    ]


def _core_of(features, tile: Tile, stride: int, full_shape: tuple[int, int]):
    """(features of the tile's core, its (row, column) slices in the whole image's feature map)."""
    (y0, y1, x0, x1), (oy, _, ox, _) = tile.core, tile.outer
    fy1 = y1 // stride if y1 < full_shape[0] else full_shape[0] // stride  # VGG's pooling floors at the end
    fx1 = x1 // stride if x1 < full_shape[1] else full_shape[1] // stride
    rows, cols = slice(y0 // stride, fy1), slice(x0 // stride, fx1)
    local_rows = slice(rows.start - oy // stride, rows.stop - oy // stride)
    local_cols = slice(cols.start - ox // stride, cols.stop - ox // stride)
    return features[:, local_rows, local_cols, :], (rows, cols)


def _crop(images, tile: Tile):
    y0, y1, x0, x1 = tile.outer
    return images[:, y0:y1, x0:x1, :]


class TiledObjective:
    """The Objective's loss and gradient for images too large for one pass, computed tile by tile:
    each term's sums over positions summed over tiles (terms.Term.sums), the term's loss from their
    totals, and the gradient through each tile's share of them."""

    def __init__(self, objective, tile: int, halo: int = HALO, seed: int = 0):
        params = objective.params
        problems = [problem for term in objective.terms if (problem := term.tiling_problem())]
        if problems:
            raise TilingError(problems[0])
        if params.optimizer != "lbfgs":
            raise TilingError("tiled scales run L-BFGS only; use optimizer=lbfgs or lower `size`")
        self.objective, self.terms = objective, objective.terms
        self.network_terms = [term for term in self.terms if term.tiled and term.layers]
        self.pixel_terms = [term for term in self.terms if not term.layers]
        self.left_out = [term for term in self.terms if term not in self.network_terms + self.pixel_terms]
        self.layers = tuple(dict.fromkeys(name for term in self.network_terms for name in term.layers))
        self.stride = min_input_side(self.layers)
        self.tile = max(self.stride, tile // self.stride * self.stride)
        self.halo = -(-halo // self.stride) * self.stride
        self.strides = {name: min_input_side((name,)) for name in self.layers}
        self.rng = np.random.default_rng(seed)
        self.history = PRINT_HISTORY
        self.update = backend.compile(lbfgs_update)
        self.network_grad = backend.value_and_grad(self._surrogate)
        self.network_losses_and_grad = backend.value_and_grad(self._network_losses)
        self.pixel_grad = backend.value_and_grad(self._pixel_losses)

    def tiles(self, height: int, width: int, move: bool = False) -> list[Tile]:
        """The grid, shifted by a random multiple of the stride when `move`."""
        offset = (
            tuple(int(self.rng.integers(0, self.tile // self.stride)) * self.stride for _ in range(2))
            if move
            else (0, 0)
        )
        return grid(height, width, self.tile, self.halo, offset)

    def _cores(self, images, names, tile: Tile) -> dict:
        """Per layer: (its features on the tile's core, the core's slices in the whole feature map)."""
        feats = self.objective.features(_crop(images, tile), names)
        return {name: _core_of(f, tile, self.strides[name], images.shape[1:3]) for name, f in feats.items()}

    def measure(self, images, names) -> dict:
        """`names`' features of the whole `images`, assembled from tiles' cores."""
        height, width = images.shape[1:3]
        out = {}
        for tile in self.tiles(height, width):
            for name, (features, (rows, cols)) in self._cores(images, names, tile).items():
                if name not in out:
                    stride = self.strides[name]
                    out[name] = np.zeros(
                        (images.shape[0], height // stride, width // stride, int(features.shape[-1])), np.float32
                    )
                out[name][:, rows, cols] = ops.convert_to_numpy(features)
        return {name: ops.convert_to_tensor(features) for name, features in out.items()}

    def _positions(self, term, shape) -> list[int]:
        return [(shape[0] // self.strides[name]) * (shape[1] // self.strides[name]) for name in term.layers]

    def loss_args(self, jobs, side: int):
        """As targets.loss_args, every figure the whole image's, measured over tiles."""
        contents = [resize(job.content, size_for(job.content.shape, side)) for job in jobs]
        photo = self.measure(np.stack(contents), photo_layers(self.network_terms))
        style = next(term for term in self.network_terms if term.part == "style")

        def painting(job):
            statistics = self._painting_statistics(style, job, contents[0].shape)
            return statistics, [style.context_of(statistic) for statistic in statistics]

        return contents, term_args(self.terms, Measured(jobs, photo, painting), side, self.left_out)

    def _painting_statistics(self, style, job, output_shape) -> list:
        """The blended statistics of a job's style image(s), at their shapes for `output_shape`."""
        blend = normalized(job.params.style_blend, len(job.styles))
        per_style = []
        for painting in job.styles:
            image = resize(painting, style_shape(painting.shape, output_shape, job.params))[None]
            shape = image.shape[1:3]
            sums = self._sums([style], image, [()], self.tiles(*shape))[0]
            per_style.append([total / float(count) for total, count in zip(sums, self._positions(style, shape))])
        return [sum(w * stats[layer] for w, stats in zip(blend, per_style)) for layer in range(len(style.layers))]

    def _sums(self, terms, images, targets, tiles) -> list:
        """Per term, per layer: its sums over positions, added up over `tiles`."""
        names = tuple(dict.fromkeys(name for term in terms for name in term.layers))
        totals = [None] * len(terms)
        for tile in tiles:
            cores = self._cores(images, names, tile)
            for index, (term, term_targets) in enumerate(zip(terms, targets)):
                sums = term.sums(cores, term_targets)
                totals[index] = sums if totals[index] is None else [a + b for a, b in zip(totals[index], sums)]
        return totals

    def _of(self, terms, values) -> list:
        """Of `values` (one per term of the objective, in its order), those of `terms`."""
        by_term = dict(zip(self.terms, values))
        return [by_term[term] for term in terms]

    def _network_losses(self, sums, targets, weights, shape):
        """(the network terms' weighted total, each one's loss (B,)) from their whole-image sums: the
        total's gradient with respect to the sums weighs every tile's."""
        columns = self._of(self.network_terms, [weights[:, k] for k in range(len(self.terms))])
        term_losses = [
            term.from_sums(term_sums, term_targets, self._positions(term, shape))
            for term, term_sums, term_targets in zip(self.network_terms, sums, self._of(self.network_terms, targets))
        ]
        return sum(ops.sum(w * loss) for w, loss in zip(columns, term_losses)), term_losses

    def _pixel_losses(self, images, targets, weights):
        """(the pixel terms' weighted total, each one's loss (B,)) on the whole image."""
        columns = self._of(self.pixel_terms, [weights[:, k] for k in range(len(self.terms))])
        term_losses = [
            term.loss({}, images, term_targets)
            for term, term_targets in zip(self.pixel_terms, self._of(self.pixel_terms, targets))
        ]
        return sum(ops.sum(w * loss) for w, loss in zip(columns, term_losses)), term_losses

    def _combined(self, network_losses, pixel_losses, weights, shares):
        """(totals, content, style, tv), each (B,), from the terms' losses; a term left out counts 0."""
        by_term = dict(zip(self.network_terms + self.pixel_terms, network_losses + pixel_losses))
        left_out = 0 * weights[:, 0]
        return combine(self.terms, [by_term.get(term, left_out) for term in self.terms], weights, shares)

    def _network_sums(self, images, targets, tiles) -> list:
        return self._sums(self.network_terms, images, self._of(self.network_terms, targets), tiles)

    def _surrogate(self, tile_images, tile, sum_grads, targets, full_shape):
        """A tile's share of the network terms: its sums against d(total)/d(sums), whose gradient with
        respect to the tile's pixels is the tile's share of the whole image's gradient."""
        feats = self.objective.features(tile_images, self.layers)
        cores = {name: _core_of(f, tile, self.strides[name], full_shape) for name, f in feats.items()}
        total = 0.0
        for term, grads, term_targets in zip(self.network_terms, sum_grads, targets):
            for tile_sums, grad in zip(term.sums(cores, term_targets), grads):
                total = total + ops.sum(tile_sums * grad)
        return total, ()

    def value_and_grad(self, images, loss_args, move: bool = True):
        """(totals, (content, style, tv), gradient) of the whole `images`: each (B,), and (B, H, W, 3)."""
        targets, weights, shares = loss_args
        full_shape = tuple(images.shape[1:3])
        tiles = self.tiles(*full_shape, move=move)
        sums = self._network_sums(images, targets, tiles)
        (_, network_losses), sum_grads = self.network_losses_and_grad(sums, targets, weights, full_shape)
        (_, pixel_losses), pixel_grad = self.pixel_grad(images, targets, weights)
        totals, *parts = self._combined(network_losses, pixel_losses, weights, shares)
        grad = ops.convert_to_numpy(pixel_grad)
        network_targets = self._of(self.network_terms, targets)
        for tile in tiles:
            y0, y1, x0, x1 = tile.outer
            _, tile_grad = self.network_grad(_crop(images, tile), tile, sum_grads, network_targets, full_shape)
            grad[:, y0:y1, x0:x1] += ops.convert_to_numpy(tile_grad)
        return totals, tuple(parts), ops.convert_to_tensor(grad)

    def __call__(self, images, targets, weights, shares):
        """The Objective's (sum, (totals, content, style, tv)), without the gradient."""
        shape = tuple(images.shape[1:3])
        sums = self._network_sums(images, targets, self.tiles(*shape))
        _, network_losses = self._network_losses(sums, targets, weights, shape)
        _, pixel_losses = self._pixel_losses(images, targets, weights)
        parts = self._combined(network_losses, pixel_losses, weights, shares)
        return ops.sum(parts[0]), parts

    def step(self, images, state, loss_args):
        """make_lbfgs_step's step, its loss and gradient computed over tiles."""
        totals, parts, grad = self.value_and_grad(images, loss_args)
        trial, state = self.update(images, state, totals, grad)
        return trial, state, totals, parts


def seam_ratio(image: np.ndarray, tile: int, stride: int = 16) -> float:
    """Gradient energy across the borders of a grid of `tile` px (offset 0) over that across the
    other lines on the network's stride: 1 where no seam shows, above at a visible edge.

    Energy is the mean squared difference of the pixels either side of a line. The comparison
    lines share the borders' phase of VGG's 16 px pooling grid, which marks a stylized image a
    little even untiled, so only the tiles' share is measured.
    """
    border, other = [], []
    for axis in (0, 1):
        steps = np.diff(image, axis=axis) ** 2  # index k: between pixels k and k + 1
        energy = steps.mean(axis=tuple(a for a in range(steps.ndim) if a != axis))
        for line in range(stride, image.shape[axis], stride):
            (border if line % tile == 0 else other).append(energy[line - 1])
    return float(np.mean(border) / np.mean(other))
