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
from .objective import Objective, normalized
from .params import StyleParams

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
        per_style = [objective.measure(resize(s, shape)[None], params.style_layers) for s, shape in zip(styles, shapes)]
        contexts = [
            losses.style_context(params.style_stat, [feats[index] for feats in per_style], blend, params.seed + index)
            for index in range(len(params.style_layers))
        ]
        stats = [objective.style_statistics(feats, contexts) for feats in per_style]
        targets = [sum(w * style[index] for w, style in zip(blend, stats)) for index in range(len(params.style_layers))]
        return targets, contexts

    return _style_targets.get(key, compute)


def loss_weights(jobs: list, side: int):
    """(B, 3): each job's content, style and TV weight at the scale of longest side `side`."""
    return ops.convert_to_tensor(
        [[job.params.content_weight_at(side), job.params.style_weight, job.params.tv_weight] for job in jobs], "float32"
    )


def similarity_targets(layer_features: list, seed: int) -> list:
    """Per self-similarity layer's measured content features, (positions, the self-similarity there)."""
    out = []
    for index, features in enumerate(layer_features):
        positions = ops.convert_to_tensor(losses.self_similarity_positions(features.shape, seed + index))
        out.append((positions, losses.self_similarity(features, positions)))
    return out


def loss_args(objective: Objective, jobs: list, side: int):
    """The contents at `side`, and the loss's targets and weights for that size, stacked per job
    (stylize.Job: content, styles, params)."""
    contents = [resize_longest(job.content, side) for job in jobs]
    per_job = [style_targets(objective, job.styles, job.params, content.shape) for job, content in zip(jobs, contents)]
    content_layers = objective.params.content_layers
    measured = objective.measure(np.stack(contents), content_layers + objective.similarity_layers)  # one pass
    content_targets = measured[: len(content_layers)]
    targets = [
        ops.concatenate([job_targets[layer] for job_targets, _ in per_job], 0)
        for layer in range(len(objective.params.style_layers))
    ]
    contexts = [
        {
            key: ops.concatenate([job_contexts[layer][key] for _, job_contexts in per_job], 0)
            for key in per_job[0][1][layer]
        }
        for layer in range(len(objective.params.style_layers))
    ]
    similarity = similarity_targets(measured[len(content_layers) :], jobs[0].params.seed)
    return contents, (content_targets, targets, contexts, similarity, loss_weights(jobs, side))
