"""What the loss compares against, at one output size: the contents' features and the styles'
statistics, stacked for a batch. Style statistics are cached per style, so a style shared by
many pairs is measured once.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np
from keras import ops

from . import losses
from .image_io import size_for
from .objective import Objective
from .params import StyleParams
from .terms import Measured, loss_weights, normalized, photo_layers

_TARGET_CACHE_SIZE = 32
SHORT_FIT_MAX = 2  # style_fit short: the painting's long side at most this times the long fit's (a panorama)


def resize(image, height_width) -> np.ndarray:
    """Antialiased resize of an (H, W, 3) image."""
    resized = ops.image.resize(ops.convert_to_tensor(image, "float32"), height_width, antialias=True)
    return np.clip(ops.convert_to_numpy(resized), 0.0, 1.0)


def resize_longest(image, side: int) -> np.ndarray:
    """`image` resized to longest side `side`, aspect kept."""
    return resize(image, size_for(image.shape, side))


class _StyleTargetCache:
    """Style statistics per (style images, statistic, layers, size): computed once per style."""

    def __init__(self, capacity: int):
        self.capacity, self.entries, self.lock = capacity, OrderedDict(), threading.Lock()

    def get(self, key, compute):
        with self.lock:
            if key in self.entries:
                self.entries.move_to_end(key)
                return self.entries[key]
        value = compute()
        with self.lock:
            self.entries[key] = value
            while len(self.entries) > self.capacity:
                self.entries.popitem(last=False)
        return value


_style_targets = _StyleTargetCache(_TARGET_CACHE_SIZE)


def style_shape(shape, output_shape, params: StyleParams) -> tuple[int, int]:
    """The (height, width) a style image of `shape` is measured at for an output of `output_shape`:
    its short side style_scale times the output's short side (`style_fit` short), its long side at most
    twice the long fit's; or its long side style_scale times the output's long side (long)."""
    longest = round(max(output_shape[:2]) * params.style_scale)
    if params.style_fit == "short":
        height, width = shape[:2]
        fitted = round(min(output_shape[:2]) * params.style_scale * max(height, width) / min(height, width))
        longest = min(fitted, SHORT_FIT_MAX * longest)
    return size_for(shape, max(16, longest))


def style_load_side(side: int, params: StyleParams) -> int:
    """The longest side to load a style image at, for outputs of longest side `side`: style_shape
    never needs more."""
    return max(16, round(side * params.style_scale)) * (SHORT_FIT_MAX if params.style_fit == "short" else 1)


def style_targets(objective: Objective, styles: list[np.ndarray], params: StyleParams, output_shape):
    """Blended style statistics and their constants, per style layer, for an output of `output_shape`."""
    blend = normalized(params.style_blend, len(styles))
    shapes = [style_shape(s.shape, output_shape, params) for s in styles]
    digest = hashlib.sha1(b"".join(np.ascontiguousarray(s).tobytes() for s in styles)).hexdigest()
    key = (digest, tuple(blend), tuple(shapes), params.compile_key(), params.seed, id(objective))

    def compute():
        per_style = [
            list(objective.measure(resize(s, shape)[None], params.style_layers).values())
            for s, shape in zip(styles, shapes)
        ]
        contexts = [
            losses.style_context(params.style_stat, [feats[index] for feats in per_style], blend, params.seed + index)
            for index in range(len(params.style_layers))
        ]
        stats = [objective.style_statistics(feats, contexts) for feats in per_style]
        targets = [sum(w * style[index] for w, style in zip(blend, stats)) for index in range(len(params.style_layers))]
        return targets, contexts

    return _style_targets.get(key, compute)


def loss_args(objective: Objective, jobs: list, side: int):
    """The contents at `side`, and the loss's arguments for that size: each term's targets, stacked
    per job (stylize.Job: content, styles, params), and the terms' weights and shares."""
    contents = [resize_longest(job.content, side) for job in jobs]
    photo = objective.measure(np.stack(contents), photo_layers(objective.terms))  # one pass for every content term

    def painting(job):
        return style_targets(objective, job.styles, job.params, contents[0].shape)

    return contents, term_args(objective.terms, Measured(jobs, photo, painting), side)


def term_args(terms: list, measured: Measured, side: int, left_out=()):
    """(each term's targets, weights, shares): the Objective's arguments after the images; the
    `left_out` terms get no targets."""
    targets = [() if term in left_out else term.targets(measured) for term in terms]
    return (targets, *loss_weights(terms, measured.jobs, side))
