"""Neural style transfer (Gatys et al. 2016), coarse to fine, one pair or a batch of pairs at once.

A batch is several pairs of the same output size optimised as one tensor: one forward
and backward pass for all, each image with its own targets, loss weights, L-BFGS
history and stopping rule, so each ends where it would have alone.
"""

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

from . import backend, checkpoint, fast, losses, memory, tiling
from .colors import match_color_histogram, transfer_luminance
from .model import feature_extractor, resolve_arch, resolve_weights
from .optimize import (LBFGS_HISTORY, Progress, Track, adam_state, lbfgs_state, make_adam_step, make_lbfgs_step,
                       run_optimizer)
from .params import StyleParams

_TARGET_CACHE_SIZE = 32


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
    batch_size: int = 1  # images optimised together with this one; its seconds are its share
    scale_iterations: list[int] = field(default_factory=list)
    content_loss_history: list[float] = field(default_factory=list)  # unweighted, per step, like loss_history
    style_loss_history: list[float] = field(default_factory=list)


def size_for(shape, longest_side: int) -> tuple[int, int]:
    """(height, width) with the longest side `longest_side`, aspect kept."""
    height, width = shape[:2]
    factor = longest_side / max(height, width)
    return max(1, round(height * factor)), max(1, round(width * factor))


def resize(image, height_width) -> np.ndarray:
    """Antialiased resize of an (H, W, 3) image."""
    resized = ops.image.resize(ops.convert_to_tensor(image, "float32"), height_width, antialias=True)
    return np.clip(ops.convert_to_numpy(resized), 0.0, 1.0)


def initial_image(init: str, content: np.ndarray, style: np.ndarray, seed: int) -> np.ndarray:
    """Noise (seeded), the content, the content in the style's colours, or the style resized to the content's shape."""
    if init == "content":
        return content
    if init == "recolored":
        return match_color_histogram(content, style)
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
    """alpha * content + beta * style + tv per image, for one set of layers and one statistic."""

    def __init__(self, params: StyleParams, weights: str, feature_dtype: str):
        self.layers = tuple(dict.fromkeys(params.content_layers + params.style_layers))
        self.extract = feature_extractor(params.arch, weights, self.layers, params.pooling, feature_dtype)
        self.params = params
        self.arch = resolve_arch(params.arch, weights)  # the memory plan's network
        self.content_layer_weights = _normalized(params.content_layer_weights, len(params.content_layers))
        self.style_layer_weights = _normalized(params.style_layer_weights, len(params.style_layers))

    def features(self, images, names):
        by_name = dict(zip(self.layers, self.extract(images)))
        return [by_name[name] for name in names]

    def __call__(self, images, content_targets, style_targets, contexts, loss_weights):
        """(sum of the per-image totals, (totals, content, style, tv)), each of those (B,).

        `loss_weights` is (B, 3): content, style and TV weight of each image.
        """
        feats = self.features(images, self.params.content_layers + self.params.style_layers)
        n_content = len(self.params.content_layers)
        tv = losses.total_variation_loss(images)
        content = losses.content_loss(feats[:n_content], content_targets, self.content_layer_weights) + 0 * tv
        style = losses.style_loss(self.params.style_stat, feats[n_content:], style_targets, contexts,
                                  self.style_layer_weights) + 0 * tv  # (B,) even with no layers of a kind
        totals = loss_weights[:, 0] * content + loss_weights[:, 1] * style + loss_weights[:, 2] * tv
        return ops.sum(totals), (totals, content, style, tv)


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


@dataclass
class Job:
    """One content image (H, W, 3 in [0, 1]), its style image(s) and parameters: a pair, as the core sees it."""

    content: np.ndarray
    styles: list[np.ndarray]
    params: StyleParams = StyleParams()
    checkpoint: Optional[str] = None  # where a long run saves its progress (nst_core.checkpoint); None: never


def batch_key(content_shape, params: StyleParams) -> tuple:
    """Pairs with equal keys can share one batch: the same compiled objective, method and schedule,
    and the same image size at every scale."""
    sides = (*params.scales, params.size)
    return _structure(params), params.method, params.scales, tuple(size_for(content_shape, side) for side in sides)


def _loss_args(objective: _Objective, jobs: list[Job], side: int):
    """The contents at `side`, and the loss's targets and weights for that size, stacked per job."""
    contents = [resize(job.content, size_for(job.content.shape, side)) for job in jobs]
    per_job = [style_targets(objective, job.styles, job.params, side) for job in jobs]
    content_targets = objective.features(np.stack(contents), objective.params.content_layers)
    targets = [ops.concatenate([job_targets[layer] for job_targets, _ in per_job], 0)
               for layer in range(len(objective.params.style_layers))]
    contexts = [{key: ops.concatenate([job_contexts[layer][key] for _, job_contexts in per_job], 0)
                 for key in per_job[0][1][layer]}
                for layer in range(len(objective.params.style_layers))]
    loss_weights = ops.convert_to_tensor(
        [[job.params.content_weight, job.params.style_weight, job.params.tv_weight] for job in jobs], "float32")
    return contents, (content_targets, targets, contexts, loss_weights)


def _result(image: np.ndarray, parts, params: StyleParams, history: list[float], **fields) -> StylizeResult:
    content_loss, style_loss, tv_loss = (float(p) for p in parts)
    total = params.content_weight * content_loss + params.style_weight * style_loss + params.tv_weight * tv_loss
    return StylizeResult(image=image, content_loss=content_loss, style_loss=style_loss, tv_loss=tv_loss,
                         total_loss=total, loss_history=history, iterations=len(history), **fields)


def _fast(objective, job: Job) -> StylizeResult:
    """One pass of the fast network, its losses measured with the optimisation's own objective."""
    started = time.perf_counter()
    (content_at,), loss_args = _loss_args(objective, [job], job.params.size)
    measured = time.perf_counter()
    image = fast_image(content_at, job.styles, job.params)
    made = time.perf_counter()
    _, content, style, tv = objective(ops.convert_to_tensor(image[None]), *loss_args)[1]
    targets_seconds = measured - started + time.perf_counter() - made
    return _result(image, (content[0], style[0], tv[0]), job.params, [], targets_seconds=targets_seconds,
                   optimize_seconds=made - measured)


def _start_image(job: Job, content_at: np.ndarray, previous: Optional[np.ndarray]) -> np.ndarray:
    """The previous scale's result resized, or the `init` image at the first scale."""
    if previous is not None:
        return resize(previous, content_at.shape[:2])
    if job.params.init == "fast":
        return fast_image(content_at, job.styles, job.params)
    return initial_image(job.params.init, content_at, job.styles[0], job.params.seed)


@dataclass
class _JobState:
    """One job of a batch, over the scales: its best image so far, its tracks and its share of the time."""

    image: Optional[np.ndarray] = None
    parts: tuple = ()
    tracks: list = field(default_factory=list)
    targets_seconds: float = 0.0
    optimize_seconds: float = 0.0


def scale_shapes(content_shape, params: StyleParams) -> list[tuple[int, int]]:
    """(height, width) of every scale, coarse to fine."""
    return [size_for(content_shape, side) for side in (*params.scales, params.size)]


def _optimized(objective, step, jobs: list[Job], callback, memory_limit: float) -> list:
    """Gatys et al.'s optimisation, coarse to fine, from each job's `init` image, all jobs in one batch.

    Seconds are shared out: each job is charged the batch's time over its size.
    Returns a StylizeResult per job, or the OptimizationError that ended it (non-finite loss, no progress).
    """
    first = jobs[0].params
    sides = (*first.scales, first.size)
    states = [_JobState() for _ in jobs]
    outcomes: list = [None] * len(jobs)
    live = list(range(len(jobs)))
    saver = checkpoint.Checkpointer(jobs, [job.checkpoint for job in jobs])
    resumed = saver.resume(live)
    plans = memory.plan_pair(scale_shapes(jobs[0].content.shape, first), len(jobs), memory_limit, objective.arch)
    for scale_index, side in enumerate(sides):
        if not live:
            break
        if resumed and scale_index < resumed.scale_index:
            continue
        optimizer_state = loss_args = None  # the previous scale's, freed before this one's are made
        started = time.perf_counter()
        tile = plans[scale_index].tile
        tiled = tiling.TiledObjective(objective, tile, seed=first.seed) if tile else None
        contents, loss_args = (tiled.loss_args if tiled else functools.partial(_loss_args, objective))(
            [jobs[i] for i in live], side)
        targets_seconds = time.perf_counter() - started

        started = time.perf_counter()
        images = ops.convert_to_tensor(np.stack(
            [_start_image(jobs[i], content_at, states[i].image) for i, content_at in zip(live, contents)]))
        optimizer_state = (lbfgs_state(images, history=tiled.history if tiled else LBFGS_HISTORY)
                           if first.optimizer == "lbfgs" else adam_state(images))
        last = scale_index == len(sides) - 1
        tracks = [Track(jobs[i].params.iterations if last else jobs[i].params.coarse_iterations,
                        jobs[i].params.tolerance, jobs[i].params.patience, jobs[i].params.average_decay)
                  for i in live]
        on_step = None if callback is None else (
            lambda k, step_progress, image: callback(live[k], scale_index, side, step_progress, image))
        done_steps = 0
        if resumed:  # the scale a killed run saved last: on from its step
            images, optimizer_state, done_steps = resumed.images, resumed.state, resumed.iteration
            resumed.restore(tracks, states, live)
            resumed = None
        scale_step = saver.wrap(tiled.step if tiled else step, live, scale_index, done_steps, tracks, states)
        run_optimizer(scale_step, optimizer_state, images, loss_args, tracks, callback=on_step,
                      first_iteration=done_steps)
        finals = [track.final_image(images[k]) for k, track in enumerate(tracks)]
        if any(not track.final_is_measured and track.error is None for track in tracks):
            measured = (tiled or objective)(ops.stack(finals), *loss_args)[1]  # an average, or a start
            for k, track in enumerate(tracks):
                if not track.final_is_measured:
                    track.best_parts = tuple(float(p[k]) for p in measured[1:])
        seconds = time.perf_counter() - started
        for i, track, final in zip(live, tracks, finals):
            job_state = states[i]
            job_state.tracks.append(track)
            job_state.targets_seconds += targets_seconds / len(live)
            job_state.optimize_seconds += seconds / len(live)
            if track.error is not None:
                outcomes[i] = track.error
            else:
                job_state.image, job_state.parts = ops.convert_to_numpy(final), track.best_parts
        live = [i for i in live if outcomes[i] is None]
    for i in live:
        job_state, tracks = states[i], states[i].tracks
        outcomes[i] = _result(
            job_state.image, job_state.parts, jobs[i].params, [loss for t in tracks for loss in t.history],
            targets_seconds=job_state.targets_seconds, optimize_seconds=job_state.optimize_seconds,
            batch_size=len(jobs), scale_iterations=[len(t.history) for t in tracks],
            content_loss_history=[c for t in tracks for c, _ in t.part_history],
            style_loss_history=[s for t in tracks for _, s in t.part_history])
    return outcomes


def stylize_batch(jobs: list[Job], *, weights: str | None = None,
                  callback: Optional[Callable[[int, int, int, Progress, object], None]] = None,
                  memory_limit: float | None = None) -> list:
    """Stylize several jobs with equal batch_key()s as one batch; a StylizeResult or an exception per job.

    Each job's result is the one stylize() gives it alone, to float rounding: a job that
    fails (a non-finite loss) fails alone. `callback(job_index, scale_index, side, progress,
    image)` after every step of every job still running. `memory_limit` (bytes, default
    nst_core.memory's) decides which scales run in tiles; a batch that cannot fit even in
    tiles raises MemoryPlanError before any work.
    """
    if not jobs:
        return []
    keys = {batch_key(job.content.shape, job.params) for job in jobs}
    if len(keys) > 1:
        raise ValueError("a batch needs one batch_key(): the same layers, optimiser, schedule and image size")
    params = jobs[0].params
    fast.check_installed(params.method, params.init)  # before the VGG network is built
    weights = resolve_weights(weights)
    memory_limit = memory_limit or memory.default_limit_bytes()
    if params.method == "optimize":
        memory.check(scale_shapes(jobs[0].content.shape, params), len(jobs), memory_limit,
                     resolve_arch(params.arch, weights))
    objective, step = _compiled(_structure(params), weights, backend.feature_dtype())
    jobs = [Job(job.content, styles_for(job.content, job.styles, job.params), job.params, job.checkpoint)
            for job in jobs]
    if params.method == "fast":
        outcomes = [_fast(objective, job) for job in jobs]
    else:
        outcomes = _optimized(objective, step, jobs, callback, memory_limit)
    arch = resolve_arch(params.arch, weights)
    for job, outcome in zip(jobs, outcomes):
        if isinstance(outcome, StylizeResult):
            outcome.image = finish(outcome.image, resize(job.content, outcome.image.shape[:2]), job.params)
            outcome.arch = arch
    return outcomes


def stylize(content: np.ndarray, styles: list[np.ndarray], params: StyleParams = StyleParams(), *,
            weights: str | None = None,
            callback: Optional[Callable[[int, int, Progress, object], None]] = None,
            checkpoint: Optional[str] = None) -> StylizeResult:
    """Stylize `content` (H, W, 3 in [0, 1]) with one or more style images.

    `weights` is "imagenet", a weights file, or None for $NST_WEIGHTS / "imagenet".
    `callback(scale_index, side, progress, image)` is called after every step, with the
    (H, W, 3) image whose loss `progress` holds.
    Losses are those of the stylized image before `style_strength` and colour
    preservation, for both methods, so runs of either compare in one table.
    `checkpoint`: a path where a long run saves its progress and a rerun resumes from.
    """
    on_step = None if callback is None else (lambda _, *step: callback(*step))
    (outcome,) = stylize_batch([Job(content, styles, params, checkpoint)], weights=weights, callback=on_step)
    if isinstance(outcome, Exception):
        raise outcome
    return outcome
