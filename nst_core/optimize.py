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

from keras import ops

from . import backend

LBFGS_HISTORY = 20  # curvature pairs kept: 5, 10, 20 took 201, 203, 194 steps to the same loss, same ms/step
ADAM_BETAS = (0.9, 0.999)  # Kingma & Ba defaults
ADAM_EPSILON = 1e-8  # small against our losses' gradients, which are relative errors


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite."""


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
    """
    history = steps.shape[0]
    valid = ops.arange(history)[:, None] >= history - count[None, :]  # (history, B)
    curvature = ops.sum(steps * grad_changes, axis=2)
    rho = ops.where(valid, 1.0 / ops.where(valid, curvature, 1.0), 0.0)
    q, alphas = grad, []
    for i in reversed(range(history)):
        alpha = rho[i] * _dot(steps[i], q)
        q -= alpha[:, None] * grad_changes[i]
        alphas.append(alpha)
    alphas.reverse()
    # A select, not a branch: both sides are cheap, and the unused one may be 0/0.
    gamma = ops.where(
        count > 0,
        curvature[-1] / _dot(grad_changes[-1], grad_changes[-1]),
        ops.minimum(1.0, 1.0 / ops.sum(ops.abs(grad), axis=-1)),
    )
    r = gamma[:, None] * q
    for i in range(history):
        beta = rho[i] * _dot(grad_changes[i], r)
        r += steps[i] * (alphas[i] - beta)[:, None]
    return -r


def make_lbfgs_step(loss_fn: Callable, variables=()):
    """Compiled L-BFGS step with unit step length and no line search (as neural-style).

    `loss_fn(images, *args) -> (sum of the per-image totals, (totals, content, style, tv))`;
    each image's loss depends on that image only, so the summed loss's gradient is each
    image's own. `variables`: the model's, handed to backend.compile.
    """
    loss_and_grad = backend.value_and_grad(loss_fn)

    def step(image, state, loss_args):
        previous_image, previous_grad, steps, grad_changes, count = state
        (_, (totals, *parts)), grad = loss_and_grad(image, *loss_args)
        batch = image.shape[0]
        flat_grad = ops.reshape(grad, (batch, -1))
        s = ops.reshape(image - previous_image, (batch, -1))
        y = flat_grad - ops.reshape(previous_grad, (batch, -1))
        accept = _dot(s, y) > 1e-10  # keep only pairs with positive curvature, per image
        keep = accept[None, :, None]
        steps = ops.where(keep, ops.concatenate([steps[1:], s[None]], 0), steps)
        grad_changes = ops.where(keep, ops.concatenate([grad_changes[1:], y[None]], 0), grad_changes)
        count = ops.minimum(count + ops.cast(accept, "int32"), steps.shape[0])
        direction = ops.reshape(lbfgs_direction(flat_grad, steps, grad_changes, count), ops.shape(image))
        new_image = ops.clip(image + direction, 0.0, 1.0)
        return new_image, (image, grad, steps, grad_changes, count), totals, parts

    return backend.compile(step, variables)


def lbfgs_state(image):
    batch = image.shape[0]
    zeros = ops.zeros((LBFGS_HISTORY, batch, math.prod(image.shape[1:])))
    return (image, ops.zeros_like(image), zeros, zeros, ops.zeros((batch,), "int32"))


def make_adam_step(loss_fn: Callable, learning_rate: float, betas=ADAM_BETAS, epsilon=ADAM_EPSILON,
                   variables=()):
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

    L-BFGS without a line search can overshoot; keeping the best image seen makes
    that harmless.
    """

    iterations: int
    tolerance: float
    patience: int
    history: list = field(default_factory=list)  # total loss per step
    part_history: list = field(default_factory=list)  # (content, style) per step
    best_losses: list = field(default_factory=list)
    best_image: object = None
    best_parts: Optional[tuple] = None
    error: Optional[Exception] = None
    done: bool = False

    def __post_init__(self) -> None:
        self.done = self.iterations <= 0

    def record(self, iteration: int, total: float, parts: tuple, image) -> None:
        """Take step `iteration`'s loss of `image` (the image before the step's update)."""
        if not math.isfinite(total):
            self.error = NonFiniteLossError(
                f"the loss became {total} at iteration {iteration}; lower the loss weights or the learning rate"
            )
            self.done = True
            return
        self.history.append(total)
        self.part_history.append(parts[:2])
        if not self.best_losses or total < self.best_losses[-1]:
            self.best_image, self.best_parts = image, parts
        self.best_losses.append(min(total, self.best_losses[-1]) if self.best_losses else total)
        self.done = iteration >= self.iterations or has_converged(self.best_losses, self.tolerance, self.patience)


def run_optimizer(step, state, images, loss_args, tracks: list[Track], *,
                  callback: Optional[Callable[[int, Progress, object], None]] = None) -> None:
    """Step the batch `images` until every image's track is done; the tracks keep the results.

    An image whose track is done (converged, out of iterations, or non-finite) rides
    along unrecorded until the others finish: its best image is already kept, and the
    per-image L-BFGS keeps the others exactly on their own paths.
    `callback(index, progress, image)` after each recorded step of image `index`.
    """
    iteration = 0
    while not all(track.done for track in tracks):
        iteration += 1
        new_images, state, totals, parts = step(images, state, loss_args)
        totals, parts = ops.convert_to_numpy(totals), [ops.convert_to_numpy(p) for p in parts]
        for index, track in enumerate(tracks):
            if track.done:
                continue
            image, total = images[index], float(totals[index])
            content, style, tv = (float(p[index]) for p in parts)
            track.record(iteration, total, (content, style, tv), image)
            if callback is not None and track.error is None:
                callback(index, Progress(iteration, track.iterations, total, content, style, tv), image)
        images = new_images
