"""Optimising the image: compiled L-BFGS and Adam steps, the loop and its stopping rule.

Each step (loss, gradient, optimiser update, clip to [0, 1]) is one compiled
call (nst_core.backend); Python only reads the loss back for the stopping rule.
Targets and loss weights are arguments, not constants, so one compiled step
serves every pair of the same image size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
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
    return ops.sum(a * b)


def lbfgs_direction(grad, steps, grad_changes, count):
    """Two-loop recursion (Nocedal & Wright, alg. 7.4) over the last `count` pairs.

    `steps`/`grad_changes` hold LBFGS_HISTORY flat vectors, the newest last; unused
    slots have zero weight. With no history the step is the gradient scaled to unit
    L1 norm, as torch's L-BFGS (which jcjohnson/neural-style uses) does.
    """
    history = steps.shape[0]
    valid = ops.arange(history) >= history - count
    curvature = ops.sum(steps * grad_changes, axis=1)
    rho = ops.where(valid, 1.0 / ops.where(valid, curvature, 1.0), 0.0)
    q, alphas = grad, []
    for i in reversed(range(history)):
        alpha = rho[i] * _dot(steps[i], q)
        q -= alpha * grad_changes[i]
        alphas.append(alpha)
    alphas.reverse()
    # A select, not a branch: both sides are cheap, and the unused one may be 0/0.
    gamma = ops.where(
        count > 0,
        curvature[-1] / _dot(grad_changes[-1], grad_changes[-1]),
        ops.minimum(1.0, 1.0 / ops.sum(ops.abs(grad))),
    )
    r = gamma * q
    for i in range(history):
        beta = rho[i] * _dot(grad_changes[i], r)
        r += steps[i] * (alphas[i] - beta)
    return -r


def make_lbfgs_step(loss_fn: Callable, variables=()):
    """Compiled L-BFGS step with unit step length and no line search (as neural-style).

    `variables`: the model's, handed to backend.compile.
    """
    loss_and_grad = backend.value_and_grad(loss_fn)

    def step(image, state, loss_args):
        previous_image, previous_grad, steps, grad_changes, count = state
        (total, parts), grad = loss_and_grad(image, *loss_args)
        flat_grad = ops.reshape(grad, (-1,))
        s = ops.reshape(image - previous_image, (-1,))
        y = flat_grad - ops.reshape(previous_grad, (-1,))
        accept = _dot(s, y) > 1e-10  # keep only pairs with positive curvature
        steps = ops.where(accept, ops.concatenate([steps[1:], s[None]], 0), steps)
        grad_changes = ops.where(accept, ops.concatenate([grad_changes[1:], y[None]], 0), grad_changes)
        count = ops.minimum(count + ops.cast(accept, "int32"), steps.shape[0])
        direction = ops.reshape(lbfgs_direction(flat_grad, steps, grad_changes, count), ops.shape(image))
        new_image = ops.clip(image + direction, 0.0, 1.0)
        return new_image, (image, grad, steps, grad_changes, count), total, parts

    return backend.compile(step, variables)


def lbfgs_state(image):
    zeros = ops.zeros((LBFGS_HISTORY, math.prod(image.shape)))
    return (image, ops.zeros_like(image), zeros, zeros, ops.convert_to_tensor(0, "int32"))


def make_adam_step(loss_fn: Callable, learning_rate: float, betas=ADAM_BETAS, epsilon=ADAM_EPSILON,
                   variables=()):
    """Compiled Adam step on the pixels."""
    beta1, beta2 = betas
    loss_and_grad = backend.value_and_grad(loss_fn)

    def step(image, state, loss_args):
        m, v, t = state
        (total, parts), grad = loss_and_grad(image, *loss_args)
        t += 1.0
        m = beta1 * m + (1 - beta1) * grad
        v = beta2 * v + (1 - beta2) * grad**2
        update = (m / (1 - beta1**t)) / (ops.sqrt(v / (1 - beta2**t)) + epsilon)
        new_image = ops.clip(image - learning_rate * update, 0.0, 1.0)
        return new_image, (m, v, t), total, parts

    return backend.compile(step, variables)


def adam_state(image):
    return (ops.zeros_like(image), ops.zeros_like(image), ops.convert_to_tensor(0.0, "float32"))


def has_converged(best_losses: list[float], tolerance: float, patience: int) -> bool:
    """True once the best loss improved by less than `tolerance` (relative) over `patience` steps."""
    if tolerance <= 0 or patience <= 0 or len(best_losses) <= patience:
        return False
    before, now = best_losses[-patience - 1], best_losses[-1]
    return (before - now) <= tolerance * abs(before)


def run_optimizer(step, state, image, loss_args, iterations: int, *, tolerance: float, patience: int,
                  callback: Optional[Callable[[Progress, object], None]] = None):
    """Run `step` up to `iterations` times; return the best image, its loss parts and the history.

    L-BFGS without a line search can overshoot; keeping the best image seen makes
    that harmless.
    """
    best_image, best_parts, best_losses, history = image, None, [], []
    for iteration in range(1, iterations + 1):
        new_image, state, total, parts = step(image, state, loss_args)
        total = float(total)
        if not math.isfinite(total):
            raise NonFiniteLossError(
                f"the loss became {total} at iteration {iteration}; lower the loss weights or the learning rate"
            )
        history.append(total)
        if not best_losses or total < best_losses[-1]:
            best_image, best_parts = image, parts
        best_losses.append(min(total, best_losses[-1]) if best_losses else total)
        if callback is not None:
            content, style, tv = (float(p) for p in parts)
            callback(Progress(iteration, iterations, total, content, style, tv), image)
        image = new_image
        if has_converged(best_losses, tolerance, patience):
            break
    return best_image, best_parts, history
