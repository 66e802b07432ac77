"""Neural style transfer (Gatys et al. 2016), coarse to fine, one pair or a batch of pairs at once.

A batch is several pairs of the same output size optimised as one tensor: one forward
and backward pass for all, each image with its own targets, loss weights, L-BFGS
history and stopping rule, so each ends where it would have alone.

This is the batch API (Job, stylize_batch, stylize); the loss and its compiled steps are in
objective.py, what it compares against (and the style cache) in targets.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
from keras import ops

from . import backend, checkpoint, fast, memory, tiling
from .colors import match_color_histogram, transfer_luminance
from .image_io import size_for
from .model import resolve_arch, resolve_weights
from .objective import Objective, compiled_objective
from .optimize import LBFGS_HISTORY, Progress, Track, adam_state, lbfgs_state, run_optimizer
from .params import StyleParams
from .targets import loss_args, resize, resize_longest, style_shape
from .terms import normalized


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

    def to_row(self) -> dict:
        """The results table's cells this result fills (flows/results.py's SCHEMA names them)."""
        return {
            "content_loss": self.content_loss,
            "style_loss": self.style_loss,
            "tv_loss": self.tv_loss,
            "total_loss": self.total_loss,
            "loss_history": self.loss_history,
            "content_loss_history": self.content_loss_history,
            "style_loss_history": self.style_loss_history,
            "iterations_run": self.iterations,
            "network": self.arch,
            "batch_size": self.batch_size,
            "height": self.image.shape[0],
            "width": self.image.shape[1],
            "targets_seconds": self.targets_seconds,
            "optimize_seconds": self.optimize_seconds,
        }


def initial_image(init: str, content: np.ndarray, style: np.ndarray, seed: int, noise_share: float = 0.0) -> np.ndarray:
    """Noise (seeded), the content, the content in the style's colours, or the style resized to the
    content's shape; with `noise_share` of the seeded noise mixed in."""
    if init == "content":
        image = content
    elif init == "recolored":
        image = match_color_histogram(content, style)
    elif init == "style":
        image = resize(style, content.shape[:2])
    else:
        return _noise(content.shape, seed)
    if not noise_share:
        return image
    return ((1 - noise_share) * image + noise_share * _noise(content.shape, seed)).astype(np.float32)


def _noise(shape, seed: int) -> np.ndarray:
    return np.clip(np.random.default_rng(seed).normal(0.5, 0.15, shape), 0.0, 1.0).astype(np.float32)


def styles_for(content: np.ndarray, styles: list[np.ndarray], params: StyleParams) -> list[np.ndarray]:
    """The style images as the stylization sees them: recoloured to the content's palette for "histogram"."""
    if params.preserve_colors == "histogram":
        return [match_color_histogram(style, content) for style in styles]
    return styles


def fast_image(content: np.ndarray, styles: list[np.ndarray], params: StyleParams) -> np.ndarray:
    """The fast network's rendering of `content`, at the content's size (method=fast, init=fast)."""
    network_input = resize_longest(content, fast.NETWORK_SIDE)
    rendered = fast.stylize(network_input, styles, normalized(params.style_blend, len(styles)))
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
    content_at = resize_longest(content, params.size)
    return finish(fast_image(content_at, styles_for(content, styles, params), params), content_at, params)


@dataclass
class Job:
    """One content image (H, W, 3 in [0, 1]), its style image(s) and parameters: a pair, as the core sees it."""

    content: np.ndarray
    styles: list[np.ndarray]
    params: StyleParams = StyleParams()
    checkpoint: Optional[str] = None  # where a long run saves its progress (nst_core.checkpoint); None: never


def scale_shapes(content_shape, params: StyleParams) -> list[tuple[int, int]]:
    """(height, width) of every scale, coarse to fine."""
    return [size_for(content_shape, side) for side in params.sides()]


def painting_pixels(jobs: list[Job]) -> list[int]:
    """The largest painting's pixels at every scale of the jobs' schedule, at the size its style
    targets measure it (style_scale, style_fit): what the memory plan counts of the paintings."""
    return [
        max(h * w for job in jobs for s in job.styles for h, w in [style_shape(s.shape, shape, job.params)])
        for shape in scale_shapes(jobs[0].content.shape, jobs[0].params)
    ]


def batch_key(content_shape, params: StyleParams) -> tuple:
    """Pairs with equal keys can share one batch: the same compiled objective, method and schedule,
    and the same image size at every scale."""
    return params.compile_key(), params.method, params.sides(), tuple(scale_shapes(content_shape, params))


def _result(image: np.ndarray, parts, params: StyleParams, history: list[float], **fields) -> StylizeResult:
    content_loss, style_loss, tv_loss = (float(p) for p in parts)
    total = params.content_weight * content_loss + params.style_weight * style_loss + params.tv_weight * tv_loss
    return StylizeResult(
        image=image,
        content_loss=content_loss,
        style_loss=style_loss,
        tv_loss=tv_loss,
        total_loss=total,
        loss_history=history,
        iterations=len(history),
        **fields,
    )


def _fast(objective: Objective, job: Job) -> StylizeResult:
    """One pass of the fast network, its losses measured with the optimisation's own objective."""
    started = time.perf_counter()
    (content_at,), args = loss_args(objective, [job], job.params.size)
    measured = time.perf_counter()
    image = fast_image(content_at, job.styles, job.params)
    made = time.perf_counter()
    _, content, style, tv = objective(ops.convert_to_tensor(image[None]), *args)[1]
    targets_seconds = measured - started + time.perf_counter() - made
    return _result(
        image,
        (content[0], style[0], tv[0]),
        job.params,
        [],
        targets_seconds=targets_seconds,
        optimize_seconds=made - measured,
    )


def _start_image(job: Job, content_at: np.ndarray, previous: Optional[np.ndarray]) -> np.ndarray:
    """The previous scale's result resized, or the `init` image at the first scale."""
    if previous is not None:
        return resize(previous, content_at.shape[:2])
    if job.params.init == "fast":
        return fast_image(content_at, job.styles, job.params)
    return initial_image(job.params.init, content_at, job.styles[0], job.params.seed, job.params.init_noise)


@dataclass
class _JobState:
    """One job of a batch, over the scales: its best image so far, its tracks, its share of the
    time, or the error that ended it."""

    index: int  # in the batch, as callbacks name it
    job: Job
    image: Optional[np.ndarray] = None
    parts: tuple = ()
    tracks: list = field(default_factory=list)
    targets_seconds: float = 0.0
    optimize_seconds: float = 0.0
    error: Optional[Exception] = None

    def record(self, track: Track, final, targets_seconds: float, optimize_seconds: float) -> None:
        """One scale's outcome, and this job's share of the scale's seconds."""
        self.tracks.append(track)
        self.targets_seconds += targets_seconds
        self.optimize_seconds += optimize_seconds
        if track.error is not None:
            self.error = track.error
        else:
            self.image, self.parts = ops.convert_to_numpy(final), track.best_parts

    def outcome(self, batch_size: int):
        """The StylizeResult over all scales, or the OptimizationError that ended the job."""
        if self.error is not None:
            return self.error
        tracks = self.tracks
        return _result(
            self.image,
            self.parts,
            self.job.params,
            [loss for t in tracks for loss in t.history],
            targets_seconds=self.targets_seconds,
            optimize_seconds=self.optimize_seconds,
            batch_size=batch_size,
            scale_iterations=[len(t.history) for t in tracks],
            content_loss_history=[c for t in tracks for c, _ in t.part_history],
            style_loss_history=[s for t in tracks for _, s in t.part_history],
        )


@dataclass(frozen=True)
class _Scale:
    """One scale of the schedule: its place, side, and the tile side the memory plan gives it (None: one pass)."""

    index: int
    side: int
    last: bool
    tile: Optional[int]


def _optimized(objective: Objective, step, jobs: list[Job], callback, memory_limit: float) -> list:
    """Gatys et al.'s optimisation, coarse to fine, from each job's `init` image (or its checkpoint),
    all jobs in one batch.

    Seconds are shared out: each job is charged the batch's time over its size.
    Returns a StylizeResult per job, or the OptimizationError that ended it (non-finite loss, no progress).
    """
    sides = jobs[0].params.sides()
    states = [_JobState(index, job) for index, job in enumerate(jobs)]
    saver = checkpoint.Checkpointer(jobs, [job.checkpoint for job in jobs])
    resumed = saver.resume(list(range(len(jobs))))
    plans = memory.plan_pair(
        scale_shapes(jobs[0].content.shape, jobs[0].params),
        len(jobs),
        memory_limit,
        objective.arch,
        painting_pixels(jobs),
    )
    for index, side in enumerate(sides):
        live = [state for state in states if state.error is None]
        if not live:
            break
        if resumed and index < resumed.scale_index:  # done before the kill
            continue
        scale = _Scale(index, side, index == len(sides) - 1, plans[index].tile)
        _optimize_scale(
            objective, step, states, live, scale, saver, resumed, on_step=_job_callback(callback, live, index, side)
        )
        resumed = None
    return [state.outcome(len(jobs)) for state in states]


def _optimize_scale(
    objective: Objective,
    step,
    states: list[_JobState],
    live: list[_JobState],
    scale: _Scale,
    saver: checkpoint.Checkpointer,
    resumed: Optional[checkpoint.Resumed],
    on_step,
) -> None:
    """One scale of the jobs still running, each from its previous scale's image (or its init image,
    or the checkpoint's), in one pass or over tiles; each is charged an equal share of the seconds."""
    jobs = [state.job for state in live]
    started = time.perf_counter()
    evaluation = _evaluation(objective, step, scale, jobs[0].params.seed)
    contents, args = evaluation.loss_args(jobs, scale.side)
    targets_seconds = time.perf_counter() - started

    started = time.perf_counter()
    images = ops.convert_to_tensor(
        np.stack([_start_image(state.job, content_at, state.image) for state, content_at in zip(live, contents)])
    )
    optimizer_state = (
        lbfgs_state(images, history=evaluation.history) if jobs[0].params.optimizer == "lbfgs" else adam_state(images)
    )
    tracks = [_track(job.params, scale.last) for job in jobs]
    indices, done_steps = [state.index for state in live], 0
    if resumed:  # the scale a killed run saved last: on from its step
        images, optimizer_state, done_steps = resumed.images, resumed.state, resumed.iteration
        resumed.restore(tracks, states, indices)
    scale_step = saver.wrap(evaluation.step, indices, scale.index, done_steps, tracks, states)
    run_optimizer(scale_step, optimizer_state, images, args, tracks, callback=on_step, first_iteration=done_steps)
    finals = _final_images(evaluation, tracks, images, args)
    seconds = time.perf_counter() - started
    for state, track, final in zip(live, tracks, finals):
        state.record(track, final, targets_seconds / len(live), seconds / len(live))


@dataclass
class _OnePass:
    """The objective through VGG in one pass per step, with its compiled optimiser step."""

    objective: Objective
    step: Callable
    history: int = LBFGS_HISTORY

    def loss_args(self, jobs: list[Job], side: int):
        return loss_args(self.objective, jobs, side)

    def __call__(self, images, *args):
        return self.objective(images, *args)


def _evaluation(objective: Objective, step, scale: _Scale, seed: int):
    """How a scale evaluates the objective: in one pass, or over the tiles the memory plan gave it
    (the same loss, arguments and step: nst_core.tiling)."""
    return tiling.TiledObjective(objective, scale.tile, seed=seed) if scale.tile else _OnePass(objective, step)


def _track(params: StyleParams, last: bool) -> Track:
    """The stopping rule at one scale: `iterations` at the output size, `coarse_iterations` before."""
    return Track(
        params.iterations if last else params.coarse_iterations, params.tolerance, params.patience, params.average_decay
    )


def _final_images(objective, tracks: list[Track], images, args) -> list:
    """Each track's final image; one the run did not measure (an average, or the start) gets its losses now."""
    finals = [track.final_image(images[k]) for k, track in enumerate(tracks)]
    if any(not track.final_is_measured and track.error is None for track in tracks):
        measured = objective(ops.stack(finals), *args)[1]
        for k, track in enumerate(tracks):
            if not track.final_is_measured:
                track.best_parts = tuple(float(p[k]) for p in measured[1:])
    return finals


def _job_callback(callback, live: list[_JobState], scale_index: int, side: int):
    """stylize_batch's callback(job index, scale index, side, progress, image) as run_optimizer calls
    it: with the image's position among the jobs still running."""
    if callback is None:
        return None
    return lambda k, progress, image: callback(live[k].index, scale_index, side, progress, image)


def stylize_batch(
    jobs: list[Job],
    *,
    weights: str | None = None,
    callback: Optional[Callable[[int, int, int, Progress, object], None]] = None,
    memory_limit: float | None = None,
) -> list:
    """Stylize several jobs with equal batch_key()s as one batch; a StylizeResult or an exception per job.

    Each job's result is the one stylize() gives it alone, to float error: a job that
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
        memory.check(
            scale_shapes(jobs[0].content.shape, params),
            len(jobs),
            memory_limit,
            resolve_arch(params.arch, weights),
            painting_pixels(jobs),
        )
    objective, step = compiled_objective(params, weights, backend.feature_dtype())
    jobs = [
        Job(job.content, styles_for(job.content, job.styles, job.params), job.params, job.checkpoint) for job in jobs
    ]
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


def stylize(
    content: np.ndarray,
    styles: list[np.ndarray],
    params: StyleParams = StyleParams(),
    *,
    weights: str | None = None,
    callback: Optional[Callable[[int, int, Progress, object], None]] = None,
    checkpoint: Optional[str] = None,
) -> StylizeResult:
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
