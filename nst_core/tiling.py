"""Print sizes: the loss and its gradient over tiles, with the style statistics of the whole image.

A scale too large for one pass through VGG (nst_core.memory) is computed tile by tile, each
tile read with a halo of context around its core. Per step:
1. forward over every tile, each layer's features cropped to the tile's core, so every feature
   position counts once: the Gram matrices' sums over positions and the content loss's squared
   errors add up over tiles to the whole image's (exactly, up to what the halo leaves out of a
   feature's receptive field);
2. d(style loss)/d(Gram matrix) once, on the whole-image Gram matrices; then per tile, under a
   gradient tape, the surrogate sum(dL/dG * G_tile) + the tile's content term, whose gradient
   with respect to the tile's pixels (halo included) is that tile's share of the full gradient.
The optimiser sees one loss and one gradient of the whole image, as at a scale that fits.
The grid moves by a random offset every step, so whatever error the halo leaves at a tile
border is never at the same place twice. TV is the whole image's (no network: cheap).

The self-similarity content loss is left out at tiled scales: it compares positions across the
whole image, and the coarse scales before them, which set the layout, run in one pass with it.

Gram and w2 statistics are tiled: each is a mean over positions of per-position terms (x x^T,
and x for w2's mean), so its sums over tiles' cores are the whole image's. swd sorts every
position's projections together; the others are not offered over tiles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from keras import ops

from . import backend, losses
from .image_io import size_for
from .model import min_input_side
from .objective import normalized
from .optimize import lbfgs_update
from .settings import settings
from .targets import loss_weights, resize, style_shape

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
    network's stride (16 px for block5), so each tile's pooling windows are the whole image's."""
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


TILED_STATS = ("gram", "w2")


class TiledObjective:
    """_Objective's loss and gradient for images too large for one pass, computed tile by tile."""

    def __init__(self, objective, tile: int, halo: int = HALO, seed: int = 0):
        params = objective.params
        if params.style_stat not in TILED_STATS:
            raise TilingError(
                f"style_stat {params.style_stat} cannot be computed over tiles (only {' and '.join(TILED_STATS)} "
                f"can); lower `size` or use style_stat=gram"
            )
        if params.optimizer != "lbfgs":
            raise TilingError("tiled scales run L-BFGS only; use optimizer=lbfgs or lower `size`")
        self.objective, self.params = objective, params
        self.stride = min_input_side(params.content_layers + params.style_layers)
        self.tile = max(self.stride, tile // self.stride * self.stride)
        self.halo = -(-halo // self.stride) * self.stride
        self.strides = [min_input_side((name,)) for name in params.content_layers + params.style_layers]
        self.rng = np.random.default_rng(seed)
        self.history = PRINT_HISTORY
        self.update = backend.compile(lbfgs_update)
        self.content_and_style_grad = backend.value_and_grad(self._surrogate)
        self.tv_and_grad = backend.value_and_grad(lambda images: (ops.sum(losses.total_variation_loss(images)), ()))

    def tiles(self, height: int, width: int, move: bool = False) -> list[Tile]:
        """The grid, shifted by a random multiple of the stride when `move`."""
        offset = (
            tuple(int(self.rng.integers(0, self.tile // self.stride)) * self.stride for _ in range(2))
            if move
            else (0, 0)
        )
        return grid(height, width, self.tile, self.halo, offset)

    def _cores(self, images, names, tile: Tile, strides):
        feats = self.objective.features(_crop(images, tile), names)
        return [_core_of(f, tile, s, images.shape[1:3]) for f, s in zip(feats, strides)]

    def content_features(self, images) -> list[np.ndarray]:
        """The content layers' features of the whole `images`, assembled from tiles' cores."""
        names, strides = self.params.content_layers, self.strides[: len(self.params.content_layers)]
        height, width = images.shape[1:3]
        out = None
        for tile in self.tiles(height, width):
            cores = self._cores(images, names, tile, strides)
            if out is None:
                out = [
                    np.zeros((images.shape[0], height // s, width // s, int(f.shape[-1])), np.float32)
                    for (f, _), s in zip(cores, strides)
                ]
            for target, (features, (rows, cols)) in zip(out, cores):
                target[:, rows, cols] = ops.convert_to_numpy(features)
        return out

    def statistics(self, images) -> list:
        """The style layers' statistics of the whole `images`: sums over tiles' cores / positions."""
        names, strides = self.params.style_layers, self.strides[len(self.params.content_layers) :]
        height, width = images.shape[1:3]
        sums = [0.0] * len(names)
        for tile in self.tiles(height, width):
            for index, (features, _) in enumerate(self._cores(images, names, tile, strides)):
                sums[index] = sums[index] + losses.moment_sums(self.params.style_stat, features)
        return [total / float((height // s) * (width // s)) for total, s in zip(sums, strides)]

    def loss_args(self, jobs, side: int):
        """As targets.loss_args: the contents at `side` and (content targets, style targets, their
        contexts, content target norms, loss weights), every figure the whole image's."""
        contents = [resize(job.content, size_for(job.content.shape, side)) for job in jobs]
        content_targets = [ops.convert_to_tensor(t) for t in self.content_features(np.stack(contents))]
        per_job = [self._style_targets(job, content.shape) for job, content in zip(jobs, contents)]
        targets = [
            ops.concatenate([job_targets[layer] for job_targets in per_job], 0)
            for layer in range(len(self.params.style_layers))
        ]
        contexts = [self._contexts([job_targets[layer] for job_targets in per_job]) for layer in range(len(targets))]
        norms = [ops.sum(t**2, (1, 2, 3)) for t in content_targets]
        return contents, (content_targets, targets, contexts, norms, loss_weights(jobs, side))

    def _style_targets(self, job, output_shape) -> list:
        """The blended statistics of a job's style image(s), at their shapes for `output_shape`."""
        blend = normalized(job.params.style_blend, len(job.styles))
        per_style = [
            self.statistics(resize(s, style_shape(s.shape, output_shape, job.params))[None]) for s in job.styles
        ]
        return [sum(w * stats[layer] for w, stats in zip(blend, per_style)) for layer in range(len(per_style[0]))]

    def _contexts(self, job_targets: list) -> dict:
        """One layer's statistic constants, stacked over jobs (each job's (1, D) target): w2's roots."""
        if self.params.style_stat != "w2":
            return {}
        return {"root": ops.concatenate([losses.w2_context(target)["root"] for target in job_targets], 0)}

    def _pass_one(self, images, content_targets, tiles):
        """Whole-image style statistics and content squared errors per layer, summed over tiles."""
        names = self.params.content_layers + self.params.style_layers
        n_content = len(self.params.content_layers)
        sums, errors = [0.0] * len(self.params.style_layers), [0.0] * n_content
        for tile in tiles:
            cores = self._cores(images, names, tile, self.strides)
            for index, (core, target) in enumerate(zip(cores[:n_content], content_targets)):
                errors[index] = errors[index] + _squared_error(core, target)
            for index, (features, _) in enumerate(cores[n_content:]):
                sums[index] = sums[index] + losses.moment_sums(self.params.style_stat, features)
        positions = [(images.shape[1] // s) * (images.shape[2] // s) for s in self.strides[n_content:]]
        return [total / float(count) for total, count in zip(sums, positions)], errors

    def _style_loss(self, stats, targets, contexts):
        """Per-image style loss (B,) of whole-image statistics."""
        weights, stat = self.objective.style_layer_weights, self.params.style_stat
        return (
            sum(w * losses.statistic_loss(stat, s, t, c) for s, t, c, w in zip(stats, targets, contexts, weights))
            + 0 * targets[0][:, 0]
        )

    def _losses(self, images, loss_args, tiles):
        """(totals, content, style, tv), each (B,), and the whole-image style statistics."""
        content_targets, targets, contexts, norms, loss_weights = loss_args
        stats, errors = self._pass_one(images, content_targets, tiles)
        content = (
            sum(w * e / (n + losses._EPS) for w, e, n in zip(self.objective.content_layer_weights, errors, norms))
            + 0 * norms[0]
        )
        style, tv = self._style_loss(stats, targets, contexts), losses.total_variation_loss(images)
        totals = loss_weights[:, 0] * content + loss_weights[:, 1] * style + loss_weights[:, 2] * tv
        return (totals, content, style, tv), stats

    def _surrogate(self, tile_images, tile, stat_grads, content_targets, norms, loss_weights, full_shape):
        """A tile's share of the loss: its statistic sums against dL/d(statistic), plus its content errors."""
        names = self.params.content_layers + self.params.style_layers
        n_content = len(self.params.content_layers)
        feats = self.objective.features(tile_images, names)
        cores = [_core_of(f, tile, s, full_shape) for f, s in zip(feats, self.strides)]
        content = 0.0
        weights = self.objective.content_layer_weights
        for core, target, norm, w in zip(cores[:n_content], content_targets, norms, weights):
            content = content + w * _squared_error(core, target) / (norm + losses._EPS)
        style = 0.0
        for (features, _), grad, s in zip(cores[n_content:], stat_grads, self.strides[n_content:]):
            positions = (full_shape[0] // s) * (full_shape[1] // s)
            style = style + ops.sum(losses.moment_sums(self.params.style_stat, features) * grad, 1) / positions
        return ops.sum(loss_weights[:, 0] * content + style), ()  # stat_grads carry the style weight

    def value_and_grad(self, images, loss_args, move: bool = True):
        """(totals, (content, style, tv), gradient) of the whole `images`: each (B,), and (B, H, W, 3)."""
        content_targets, targets, contexts, norms, loss_weights = loss_args
        full_shape = tuple(images.shape[1:3])
        tiles = self.tiles(*full_shape, move=move)
        (totals, *parts), stats = self._losses(images, loss_args, tiles)
        _, stat_grads = backend.value_and_grad(
            lambda s: (ops.sum(loss_weights[:, 1] * self._style_loss(s, targets, contexts)), ())
        )(stats)
        _, tv_grad = self.tv_and_grad(images)
        grad = ops.convert_to_numpy(tv_grad * loss_weights[:, 2][:, None, None, None])
        for tile in tiles:
            y0, y1, x0, x1 = tile.outer
            _, tile_grad = self.content_and_style_grad(
                _crop(images, tile), tile, stat_grads, content_targets, norms, loss_weights, full_shape
            )
            grad[:, y0:y1, x0:x1] += ops.convert_to_numpy(tile_grad)
        return totals, tuple(parts), ops.convert_to_tensor(grad)

    def __call__(self, images, *loss_args):
        """_Objective's (sum, (totals, content, style, tv)), without the gradient."""
        parts, _ = self._losses(images, loss_args, self.tiles(*images.shape[1:3]))
        return ops.sum(parts[0]), parts

    def step(self, images, state, loss_args):
        """make_lbfgs_step's step, its loss and gradient computed over tiles."""
        totals, parts, grad = self.value_and_grad(images, loss_args)
        trial, state = self.update(images, state, totals, grad)
        return trial, state, totals, parts


def _squared_error(core, target):
    """A tile core's squared feature error against the whole image's target there, per image: (B,)."""
    features, (rows, cols) = core
    return ops.sum((features - target[:, rows, cols]) ** 2, (1, 2, 3))


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
