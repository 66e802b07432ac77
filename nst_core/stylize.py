"""Neural style transfer of one content image (Gatys et al. 2016), coarse to fine."""

from __future__ import annotations

import functools
import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
from keras import ops

from . import backend, fast, losses
from .colors import match_color_histogram, transfer_luminance
from .model import feature_extractor, resolve_arch, resolve_weights
from .optimize import Progress, adam_state, lbfgs_state, make_adam_step, make_lbfgs_step, run_optimizer
from .params import StyleParams

_TARGET_CACHE_SIZE = 32
# Peak memory per output pixel of an optimisation: 3.8 KB measured for VGG16 at 512 and
# 768 px (peak RSS above the loaded model); 5 KB leaves room for VGG19's extra layers.
BYTES_PER_PIXEL = 5000


@dataclass
class StylizeResult:
    image: np.ndarray  # (H, W, 3) float32 in [0, 1]
    content_loss: float
    style_loss: float
    tv_loss: float
    total_loss: float
    loss_history: list[float]  # total loss per step, all scales in order
    iterations: int  # steps taken, all scales
    targets_seconds: float = 0.0
    optimize_seconds: float = 0.0
    arch: str = ""
    scale_iterations: list[int] = field(default_factory=list)
    content_loss_history: list[float] = field(default_factory=list)  # unweighted, per step, like loss_history
    style_loss_history: list[float] = field(default_factory=list)


def size_for(shape, longest_side: int) -> tuple[int, int]:
    """(height, width) with the longest side `longest_side`, aspect kept."""
    height, width = shape[:2]
    factor = longest_side / max(height, width)
    return max(1, round(height * factor)), max(1, round(width * factor))


def estimate_memory_bytes(height: int, width: int) -> int:
    """Roughly the peak memory one stylization of this output size needs."""
    return BYTES_PER_PIXEL * height * width


def resize(image, height_width) -> np.ndarray:
    """Antialiased resize of an (H, W, 3) image."""
    resized = ops.image.resize(ops.convert_to_tensor(image, "float32"), height_width, antialias=True)
    return np.clip(ops.convert_to_numpy(resized), 0.0, 1.0)


def initial_image(init: str, content: np.ndarray, style: np.ndarray, seed: int) -> np.ndarray:
    """Noise (seeded), the content, or the style resized to the content's shape."""
    if init == "content":
        return content
    if init == "style":
        return resize(style, content.shape[:2])
    noise = np.random.default_rng(seed).normal(0.5, 0.15, content.shape)
    return np.clip(noise, 0.0, 1.0).astype(np.float32)


def _normalized(weights, count: int) -> list[float]:
    weights = np.ones(count) if weights is None else np.asarray(weights, np.float64)
    if weights.sum() <= 0:
        return [0.0] * count
    return list(weights / weights.sum())


class _Objective:
    """alpha * content + beta * style + tv, for one set of layers and one statistic."""

    def __init__(self, params: StyleParams, weights: str, feature_dtype: str):
        self.layers = tuple(dict.fromkeys(params.content_layers + params.style_layers))
        self.extract = feature_extractor(params.arch, weights, self.layers, params.pooling, feature_dtype)
        self.params = params
        self.content_layer_weights = _normalized(params.content_layer_weights, len(params.content_layers))
        self.style_layer_weights = _normalized(params.style_layer_weights, len(params.style_layers))

    def features(self, images, names):
        by_name = dict(zip(self.layers, self.extract(images)))
        return [by_name[name] for name in names]

    def __call__(self, image, content_targets, style_targets, contexts, loss_weights):
        content_weight, style_weight, tv_weight = loss_weights[0], loss_weights[1], loss_weights[2]
        feats = self.features(image, self.params.content_layers + self.params.style_layers)
        n_content = len(self.params.content_layers)
        content = ops.sum(losses.content_loss(feats[:n_content], content_targets, self.content_layer_weights))
        style = ops.sum(
            losses.style_loss(self.params.style_stat, feats[n_content:], style_targets, contexts,
                              self.style_layer_weights)
        )
        tv = ops.sum(losses.total_variation_loss(image))
        total = content_weight * content + style_weight * style + tv_weight * tv
        return total, (content, style, tv)


@functools.lru_cache(maxsize=8)
def _compiled(params_structure: StyleParams, weights: str, feature_dtype: str = "float32"):
    """Objective and compiled steps, shared by all pairs with the same layers, statistic and precision."""
    objective = _Objective(params_structure, weights, feature_dtype)
    variables = objective.extract.model.variables
    step = (make_lbfgs_step(objective, variables) if params_structure.optimizer == "lbfgs"
            else make_adam_step(objective, params_structure.learning_rate, variables=variables))
    return objective, step


def _structure(params: StyleParams) -> StyleParams:
    """Params with the fields that do not change the compiled graph set to defaults."""
    return StyleParams(
        content_layers=params.content_layers, content_layer_weights=params.content_layer_weights,
        style_layers=params.style_layers, style_layer_weights=params.style_layer_weights,
        style_stat=params.style_stat, optimizer=params.optimizer, learning_rate=params.learning_rate,
        arch=params.arch, pooling=params.pooling,
    )


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


def style_side(side: int, params: StyleParams) -> int:
    """The style image's longest side for an output of longest side `side`."""
    return max(16, round(side * params.style_scale))


def style_targets(objective: _Objective, styles: list[np.ndarray], params: StyleParams, side: int):
    """Blended style statistics and their constants, per style layer, at output size `side`."""
    blend = _normalized(params.style_blend, len(styles))
    style_longest = style_side(side, params)
    digest = hashlib.sha1(b"".join(np.ascontiguousarray(s).tobytes() for s in styles)).hexdigest()
    key = (digest, tuple(blend), style_longest, _structure(params), params.seed, id(objective))

    def compute():
        per_style = [
            objective.features(resize(s, size_for(s.shape, style_longest))[None], params.style_layers) for s in styles
        ]
        targets, contexts = [], []
        for index in range(len(params.style_layers)):
            layer_feats = [feats[index] for feats in per_style]
            context = losses.style_context(params.style_stat, layer_feats, blend, params.seed + index)
            stats = [losses.style_statistic(params.style_stat, f, context) for f in layer_feats]
            targets.append(sum(w * s for w, s in zip(blend, stats)))
            contexts.append(context)
        return targets, contexts

    return _style_targets.get(key, compute)


def _recording(callback, scale_index: int, side: int, part_history: list):
    """A step callback that keeps each step's (content, style) loss, then calls the caller's callback."""
    def on_step(progress: Progress, image) -> None:
        part_history.append((progress.content, progress.style))
        if callback is not None:
            callback(scale_index, side, progress, image)
    return on_step


def styles_for(content: np.ndarray, styles: list[np.ndarray], params: StyleParams) -> list[np.ndarray]:
    """The style images as the stylization sees them: recoloured to the content's palette for "histogram"."""
    if params.preserve_colors == "histogram":
        return [match_color_histogram(style, content) for style in styles]
    return styles


def fast_image(content: np.ndarray, styles: list[np.ndarray], params: StyleParams) -> np.ndarray:
    """The fast network's rendering of `content`, at the content's size (method=fast, init=fast)."""
    network_input = resize(content, size_for(content.shape, fast.NETWORK_SIDE))
    rendered = fast.stylize(network_input, styles, _normalized(params.style_blend, len(styles)))
    return resize(rendered, content.shape[:2])


def finish(image: np.ndarray, content: np.ndarray, params: StyleParams) -> np.ndarray:
    """Style strength (a blend back towards the content), then colour preservation: both methods."""
    if params.style_strength < 1:
        image = params.style_strength * image + (1 - params.style_strength) * content
    if params.preserve_colors == "luminance":
        image = transfer_luminance(image, content)
    return image.astype(np.float32)


def fast_preview(content: np.ndarray, styles: list[np.ndarray], params: StyleParams) -> np.ndarray:
    """method=fast without the loss measurement (no VGG, no weights): contact sheets, in seconds."""
    content_at = resize(content, size_for(content.shape, params.size))
    return finish(fast_image(content_at, styles_for(content, styles, params), params), content_at, params)


def _loss_args(objective: _Objective, content: np.ndarray, styles: list[np.ndarray], params: StyleParams,
               side: int):
    """The content at `side`, and the loss's targets and weights for that size."""
    content_at = resize(content, size_for(content.shape, side))
    targets, contexts = style_targets(objective, styles, params, side)
    content_targets = objective.features(content_at[None], params.content_layers)
    loss_weights = ops.convert_to_tensor([params.content_weight, params.style_weight, params.tv_weight], "float32")
    return content_at, (content_targets, targets, contexts, loss_weights)


def _result(image: np.ndarray, parts, params: StyleParams, history: list[float], **fields) -> StylizeResult:
    content_loss, style_loss, tv_loss = (float(p) for p in parts)
    total = params.content_weight * content_loss + params.style_weight * style_loss + params.tv_weight * tv_loss
    return StylizeResult(image=image, content_loss=content_loss, style_loss=style_loss, tv_loss=tv_loss,
                         total_loss=total, loss_history=history, iterations=len(history), **fields)


def _fast(objective, step, content, styles, params, callback) -> StylizeResult:
    """One pass of the fast network, its losses measured with the optimisation's own objective."""
    started = time.perf_counter()
    content_at, loss_args = _loss_args(objective, content, styles, params, params.size)
    measured = time.perf_counter()
    image = fast_image(content_at, styles, params)
    made = time.perf_counter()
    parts = objective(ops.convert_to_tensor(image[None]), *loss_args)[1]
    targets_seconds = measured - started + time.perf_counter() - made
    return _result(image, parts, params, [], targets_seconds=targets_seconds, optimize_seconds=made - measured)


def _optimized(objective, step, content, styles, params, callback) -> StylizeResult:
    """Gatys et al.'s optimisation, coarse to fine, from the `init` image."""
    image, history, scale_iterations, part_history = None, [], [], []
    targets_seconds = optimize_seconds = 0.0
    sides = (*params.scales, params.size)
    for scale_index, side in enumerate(sides):
        started = time.perf_counter()
        content_at, loss_args = _loss_args(objective, content, styles, params, side)
        targets_seconds += time.perf_counter() - started

        started = time.perf_counter()
        if image is None and params.init == "fast":
            image = fast_image(content_at, styles, params)
        elif image is None:
            image = initial_image(params.init, content_at, styles[0], params.seed)
        else:
            image = resize(image, content_at.shape[:2])
        image = ops.convert_to_tensor(image[None])
        state = lbfgs_state(image) if params.optimizer == "lbfgs" else adam_state(image)
        iterations = params.iterations if scale_index == len(sides) - 1 else params.coarse_iterations
        image, parts, scale_history = run_optimizer(
            step, state, image, loss_args, iterations, tolerance=params.tolerance, patience=params.patience,
            callback=_recording(callback, scale_index, side, part_history),
        )
        if parts is None:  # no steps taken: measure the starting image
            parts = objective(image, *loss_args)[1]
        image = ops.convert_to_numpy(image[0])
        history += scale_history
        scale_iterations.append(len(scale_history))
        optimize_seconds += time.perf_counter() - started
    return _result(image, parts, params, history, targets_seconds=targets_seconds,
                   optimize_seconds=optimize_seconds, scale_iterations=scale_iterations,
                   content_loss_history=[c for c, _ in part_history],
                   style_loss_history=[s for _, s in part_history])


def stylize(content: np.ndarray, styles: list[np.ndarray], params: StyleParams = StyleParams(), *,
            weights: str | None = None,
            callback: Optional[Callable[[int, int, Progress, object], None]] = None) -> StylizeResult:
    """Stylize `content` (H, W, 3 in [0, 1]) with one or more style images.

    `weights` is "imagenet", a weights file, or None for $NST_WEIGHTS / "imagenet".
    `callback(scale_index, side, progress, image)` is called after every step.
    Losses are those of the stylized image before `style_strength` and colour
    preservation, for both methods, so runs of either compare in one table.
    """
    fast.check_installed(params.method, params.init)  # before the VGG network is built
    weights = resolve_weights(weights)
    objective, step = _compiled(_structure(params), weights, backend.feature_dtype())
    run = _fast if params.method == "fast" else _optimized
    result = run(objective, step, content, styles_for(content, styles, params), params, callback)
    result.image = finish(result.image, resize(content, result.image.shape[:2]), params)
    result.arch = resolve_arch(params.arch, weights)
    return result
