"""Optimising the image: compiled L-BFGS and Adam steps, the loop and its stopping rule.

Each step (loss, gradient, optimiser update, clip to [0, 1]) is one compiled
call (nst_core.backend); Python only reads the loss back for the stopping rule.
Targets and loss weights are arguments, not constants, so one compiled step
serves every pair (or batch of pairs) of the same image size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
from keras import ops

from . import backend
from .errors import OptimizationError

LBFGS_HISTORY = 20  # curvature pairs kept: 5, 10, 20 took 201, 203, 194 steps to the same loss, same ms/step
ARMIJO = 1e-4  # sufficient decrease for accepting a trial (Nocedal & Wright's c1)
MAX_BACKTRACKS = 10  # rejected trials in a row (step shrunk to under 1e-3) before the history is dropped
MIN_JUDGED_STEPS = 10  # runs given this many iterations must lower the loss by MIN_PROGRESS; shorter are previews
MIN_PROGRESS = 1e-3
ADAM_BETAS = (0.9, 0.999)  # Kingma & Ba defaults
ADAM_EPSILON = 1e-8  # small against our losses' gradients, which are relative errors


class NonFiniteLossError(OptimizationError):
    """The loss became NaN or infinite."""


class NoProgressError(OptimizationError):
    """The run ended without lowering the loss: its result would be the start image."""


@dataclass
class Progress:
    """What a progress callback sees after each step."""

    iteration: int
    iterations: int
    total: float
    content: float
    style: float
    tv: float


def _dot(a, b):
    """Per-image dot products of (B, N) vectors: (B,)."""
    return ops.sum(a * b, axis=-1)


def lbfgs_direction(grad, steps, grad_changes, count):
    """Two-loop recursion (Nocedal & Wright, alg. 7.4), for each image over its last `count` pairs.

    `grad` is (B, N); `steps`/`grad_changes` hold LBFGS_HISTORY (B, N) vectors, the newest
    last; unused slots have zero weight. Every dot product is per image, so each image of a
    batch follows exactly the path it would alone. With no history the step is the gradient
    scaled to unit L1 norm, as torch's L-BFGS (which jcjohnson/neural-style uses) does.
    The loops are loops in the compiled program, not unrolled: XLA compiles the step in 1.8 s
    instead of 2.9 (JAX, 128 px), at the same time per step on both backends.
    """
    history = steps.shape[0]
    valid = ops.arange(history)[:, None] >= history - count[None, :]  # (history, B)
    curvature = ops.sum(steps * grad_changes, axis=2)
    rho = ops.where(valid, 1.0 / ops.where(valid, curvature, 1.0), 0.0)

    def newest_first(k, carry):
        q, alphas = carry
        i = history - 1 - k
        alpha = rho[i] * _dot(steps[i], q)
        return q - alpha[:, None] * grad_changes[i], ops.slice_update(alphas, (i, 0), alpha[None])

    q, alphas = ops.fori_loop(0, history, newest_first, (grad, ops.zeros_like(rho)))
    # A select, not a branch: both sides are cheap, and the unused one may be 0/0.
    gamma = ops.where(
        count > 0,
        curvature[-1] / _dot(grad_changes[-1], grad_changes[-1]),
        ops.minimum(1.0, 1.0 / ops.sum(ops.abs(grad), axis=-1)),  # _steepest's scaling
    )

    def oldest_first(i, r):
        beta = rho[i] * _dot(grad_changes[i], r)
        return r + steps[i] * (alphas[i] - beta)[:, None]

    return -ops.fori_loop(0, history, oldest_first, gamma[:, None] * q)


def _steepest(grad):
    """The first step, and the fallback: the gradient scaled to unit L1 norm, as torch's L-BFGS
    (which jcjohnson/neural-style uses) starts."""
    return -grad * ops.minimum(1.0, 1.0 / ops.sum(ops.abs(grad), axis=-1))[:, None]


def _backtracked(length, trial_loss, accepted_loss, slope):
    """The next, shorter trial length after a rejected one: the minimiser of the quadratic through
    the accepted loss, its slope along the trial and the trial's loss, kept within [0.1, 0.5] of
    the rejected length (Nocedal & Wright, 3.5); half when that quadratic is of no use."""
    curvature = trial_loss - accepted_loss - slope
    usable = ops.isfinite(trial_loss) & (curvature > 0)
    factor = ops.where(usable, -slope / (2.0 * ops.where(usable, curvature, 1.0)), 0.5)
    return length * ops.clip(factor, 0.1, 0.5)


def make_lbfgs_step(loss_fn: Callable, variables=()):
    """Compiled L-BFGS step with a backtracking (Armijo) line search, one loss evaluation per step.

    Each call evaluates one trial image. Per image: a trial that lowers the loss enough
    (Armijo, along the actual step after clipping to [0, 1]) is accepted, adds its curvature
    pair and gets a new direction at unit length; a trial that does not is rejected, and the
    next trial goes back to the accepted image with a shorter step. So a bad step (a wrong
    curvature estimate, an overshoot) is never built on, and the accepted loss only falls.
    After MAX_BACKTRACKS rejections in a row the history is dropped (steepest descent).

    `loss_fn(images, *args) -> (sum of the per-image totals, (totals, content, style, tv))`;
    each image's loss depends on that image only, so the summed loss's gradient is each
    image's own. Returns the trial's losses. `variables`: the model's, handed to backend.compile.
    """
    loss_and_grad = backend.value_and_grad(loss_fn)

    def step(image, state, loss_args):
        (_, (totals, *parts)), grad = loss_and_grad(image, *loss_args)
        trial, state = lbfgs_update(image, state, totals, grad)
        return trial, state, totals, parts

    return backend.compile(step, variables)


def lbfgs_update(image, state, totals, grad):
    """make_lbfgs_step's step after the loss: (next trial, state) from the trial `image`'s losses
    `totals` (B,) and gradient. Apart so a loss computed tile by tile (nst_core.tiling) can use it."""
    accepted, accepted_loss, accepted_grad, direction, length, steps, grad_changes, count, backtracks = state
    batch = ops.shape(image)[0]
    grad = ops.reshape(grad, (batch, -1))
    s = ops.reshape(image - accepted, (batch, -1))
    slope = _dot(accepted_grad, s)
    accept = ops.isfinite(totals) & (totals <= accepted_loss + ARMIJO * ops.minimum(slope, 0.0))
    y = grad - accepted_grad
    new_pair = accept & (_dot(s, y) > 1e-10)  # keep only pairs with positive curvature
    keep = new_pair[None, :, None]
    steps = ops.where(keep, ops.concatenate([steps[1:], s[None]], 0), steps)
    grad_changes = ops.where(keep, ops.concatenate([grad_changes[1:], y[None]], 0), grad_changes)
    backtracks = ops.where(accept, 0, backtracks + 1)
    restart = backtracks >= MAX_BACKTRACKS
    count = ops.where(restart, 0, ops.minimum(count + ops.cast(new_pair, "int32"), steps.shape[0]))
    backtracks = ops.where(restart, 0, backtracks)

    first = ops.isinf(accepted_loss)  # the start image: keep the state's first length
    length = ops.where(
        first, length, ops.where(accept | restart, 1.0, _backtracked(length, totals, accepted_loss, slope))
    )
    accepted_loss = ops.where(accept, totals, accepted_loss)
    accepted_grad = ops.where(accept[:, None], grad, accepted_grad)
    accepted = ops.where(accept[:, None, None, None], image, accepted)
    fresh = lbfgs_direction(accepted_grad, steps, grad_changes, count)
    # Rounding in a long history can give an ascent direction: steepest descent then.
    fresh = ops.where((_dot(accepted_grad, fresh) < 0)[:, None], fresh, _steepest(accepted_grad))
    direction = ops.where((accept | restart)[:, None], fresh, direction)
    trial = ops.clip(accepted + ops.reshape(length[:, None] * direction, ops.shape(image)), 0.0, 1.0)
    state = (accepted, accepted_loss, accepted_grad, direction, length, steps, grad_changes, count, backtracks)
    return trial, state


def lbfgs_state(image, first_length=1.0, history=LBFGS_HISTORY):
    """The state before the first step: the start image is the first trial, always accepted
    (its accepted loss is infinite). `first_length` (a number, or one per image) scales the
    first step; tests force a bad one with it. `history`: curvature pairs kept (fewer at print
    sizes, where each is an image's worth of memory)."""
    batch, size = image.shape[0], math.prod(image.shape[1:])
    pairs, flat = ops.zeros((history, batch, size)), ops.zeros((batch, size))
    lengths = ops.ones((batch,)) * ops.convert_to_tensor(first_length, "float32")
    return (
        image,
        ops.full((batch,), float("inf")),
        flat,
        flat,
        lengths,
        pairs,
        pairs,
        ops.zeros((batch,), "int32"),
        ops.zeros((batch,), "int32"),
    )


def make_adam_step(loss_fn: Callable, learning_rate: float, betas=ADAM_BETAS, epsilon=ADAM_EPSILON, variables=()):
    """Compiled Adam step on the pixels (element-wise, so per image by nature)."""
    beta1, beta2 = betas
    loss_and_grad = backend.value_and_grad(loss_fn)

    def step(image, state, loss_args):
        m, v, t = state
        (_, (totals, *parts)), grad = loss_and_grad(image, *loss_args)
        t += 1.0
        m = beta1 * m + (1 - beta1) * grad
        v = beta2 * v + (1 - beta2) * grad**2
        update = (m / (1 - beta1**t)) / (ops.sqrt(v / (1 - beta2**t)) + epsilon)
        new_image = ops.clip(image - learning_rate * update, 0.0, 1.0)
        return new_image, (m, v, t), totals, parts

    return backend.compile(step, variables)


def adam_state(image):
    return (ops.zeros_like(image), ops.zeros_like(image), ops.convert_to_tensor(0.0, "float32"))


def has_converged(best_losses: list[float], tolerance: float, patience: int) -> bool:
    """True once the best loss improved by less than `tolerance` (relative) over `patience` steps."""
    if tolerance <= 0 or patience <= 0 or len(best_losses) <= patience:
        return False
    before, now = best_losses[-patience - 1], best_losses[-1]
    return (before - now) <= tolerance * abs(before)


@dataclass
class Track:
    """One image of a batch: its stopping rule, its losses so far and its best image.

    The history records the best loss so far at each step (with the line search, the
    accepted image's loss), so it only falls; a rejected trial never becomes the result.
    """

    iterations: int
    tolerance: float
    patience: int
    average_decay: float = 0.0  # > 0: the result is a moving average of the best iterates
    history: list = field(default_factory=list)  # best total loss after each step
    part_history: list = field(default_factory=list)  # its (content, style)
    best_image: object = None
    best_parts: Optional[tuple] = None
    error: Optional[Exception] = None
    done: bool = False
    average: Optional[np.ndarray] = None  # bias-corrected as Adam's moments (crowsonkb's EMA)
    average_weight: float = 0.0

    def __post_init__(self) -> None:
        self.done = self.iterations <= 0

    def record(self, iteration: int, total: float, parts: tuple, image) -> None:
        """Take step `iteration`'s loss of `image` (the trial evaluated at that step)."""
        if not math.isfinite(total):
            self.error = NonFiniteLossError(
                f"the loss became {total} at iteration {iteration}; lower the loss weights or the learning rate"
            )
            self.done = True
            return
        if not self.history or total < self.history[-1]:
            self.best_image, self.best_parts = image, parts
        self.history.append(min(total, self.history[-1]) if self.history else total)
        self.part_history.append(self.best_parts[:2])
        if self.average_decay:
            best, decay = ops.convert_to_numpy(self.best_image), self.average_decay
            self.average = (1 - decay) * best + (decay * self.average if self.average is not None else 0.0)
            self.average_weight = (1 - decay) + decay * self.average_weight
        self.done = iteration >= self.iterations or has_converged(self.history, self.tolerance, self.patience)
        if self.done:
            self.error = self.no_progress()

    def final_image(self, start):
        """What this image's run returns: the average or the best iterate; `start` if it took no step."""
        if self.average is not None:
            return ops.convert_to_tensor(self.average / self.average_weight, "float32")
        return start if self.best_image is None else self.best_image

    @property
    def final_is_measured(self) -> bool:
        """Whether best_parts are the losses of final_image (not so for an average, or for no steps)."""
        return self.best_image is not None and self.average is None

    def no_progress(self) -> Optional[NoProgressError]:
        """A run of MIN_JUDGED_STEPS or more iterations that ended without clearly lowering its loss."""
        start, end = self.history[0], self.history[-1]
        if self.iterations < MIN_JUDGED_STEPS or start <= 0 or end < (1 - MIN_PROGRESS) * start:
            return None
        return NoProgressError(
            f"no progress: loss did not fall below its starting value ({start:.4g} -> {end:.4g} "
            f"in {len(self.history)} steps); lower the style weight or the learning rate"
        )


def run_optimizer(
    step,
    state,
    images,
    loss_args,
    tracks: list[Track],
    *,
    callback: Optional[Callable[[int, Progress, object], None]] = None,
    first_iteration: int = 0,
) -> None:
    """Step the batch `images` until every image's track is done; the tracks keep the results.

    An image whose track is done (converged, out of iterations, or non-finite) rides
    along unrecorded until the others finish: its best image is already kept, and the
    per-image L-BFGS keeps the others exactly on their own paths.
    `callback(index, progress, image)` after each recorded step of image `index`.
    `first_iteration`: steps already taken (a run resumed from a checkpoint).
    """
    iteration = first_iteration
    while not all(track.done for track in tracks):
        iteration += 1
        new_images, state, totals, parts = step(images, state, loss_args)
        totals, parts = ops.convert_to_numpy(totals), [ops.convert_to_numpy(p) for p in parts]
        for index, track in enumerate(tracks):
            if track.done:
                continue
            track.record(iteration, float(totals[index]), tuple(float(p[index]) for p in parts), images[index])
            if callback is not None and track.error is None:
                progress = Progress(iteration, track.iterations, track.history[-1], *track.best_parts)
                callback(index, progress, track.best_image)
        images = new_images
