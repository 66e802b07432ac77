"""Optimising the image: compiled L-BFGS and Adam steps, the loop and its stopping rule.

Each step (loss, gradient, optimiser update, clip to [0, 1]) is one compiled
TensorFlow call; Python only reads the loss back for the stopping rule.
Targets and loss weights are arguments, not constants, so one compiled step
serves every pair of the same image size.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable, Optional

import tensorflow as tf

LBFGS_HISTORY = 20  # curvature pairs kept: 5, 10, 20 took 201, 203, 194 steps to the same loss, same ms/step
ADAM_BETAS = (0.9, 0.999)  # Kingma & Ba defaults
ADAM_EPSILON = 1e-8  # small against our losses' gradients, which are relative errors
# XLA measured 0.72-0.79x the speed of plain graph mode on this CPU (bench_core) and
# compiles each image shape anew; NST_JIT=1 turns it on, e.g. to measure on a GPU.
JIT_COMPILE = os.environ.get("NST_JIT", "0") == "1"


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
    return tf.reduce_sum(a * b)


def lbfgs_direction(grad, steps, grad_changes, count):
    """Two-loop recursion (Nocedal & Wright, alg. 7.4) over the last `count` pairs.

    `steps`/`grad_changes` hold LBFGS_HISTORY flat vectors, the newest last; unused
    slots have zero weight. With no history the step is the gradient scaled to unit
    L1 norm, as torch's L-BFGS (which jcjohnson/neural-style uses) does.
    """
    history = steps.shape[0]
    valid = tf.range(history) >= history - count
    curvature = tf.reduce_sum(steps * grad_changes, axis=1)
    rho = tf.where(valid, 1.0 / tf.where(valid, curvature, 1.0), 0.0)
    q, alphas = grad, []
    for i in reversed(range(history)):
        alpha = rho[i] * _dot(steps[i], q)
        q -= alpha * grad_changes[i]
        alphas.append(alpha)
    alphas.reverse()
    gamma = tf.cond(
        count > 0,
        lambda: curvature[-1] / _dot(grad_changes[-1], grad_changes[-1]),
        lambda: tf.minimum(1.0, 1.0 / tf.reduce_sum(tf.abs(grad))),
    )
    r = gamma * q
    for i in range(history):
        beta = rho[i] * _dot(grad_changes[i], r)
        r += steps[i] * (alphas[i] - beta)
    return -r


def make_lbfgs_step(loss_fn: Callable):
    """Compiled L-BFGS step with unit step length and no line search (as neural-style)."""

    def step(image, state, loss_args):
        previous_image, previous_grad, steps, grad_changes, count = state
        with tf.GradientTape() as tape:
            tape.watch(image)
            total, parts = loss_fn(image, *loss_args)
        grad = tape.gradient(total, image)
        flat_grad = tf.reshape(grad, [-1])
        s = tf.reshape(image - previous_image, [-1])
        y = flat_grad - tf.reshape(previous_grad, [-1])
        accept = _dot(s, y) > 1e-10  # keep only pairs with positive curvature
        steps = tf.where(accept, tf.concat([steps[1:], s[None]], 0), steps)
        grad_changes = tf.where(accept, tf.concat([grad_changes[1:], y[None]], 0), grad_changes)
        count = tf.minimum(count + tf.cast(accept, tf.int32), steps.shape[0])
        direction = tf.reshape(lbfgs_direction(flat_grad, steps, grad_changes, count), tf.shape(image))
        new_image = tf.clip_by_value(image + direction, 0.0, 1.0)
        return new_image, (image, grad, steps, grad_changes, count), total, parts

    return tf.function(step, jit_compile=JIT_COMPILE)


def lbfgs_state(image):
    size = int(tf.size(image))
    zeros = tf.zeros([LBFGS_HISTORY, size])
    return (image, tf.zeros_like(image), zeros, zeros, tf.constant(0))


def make_adam_step(loss_fn: Callable, learning_rate: float, betas=ADAM_BETAS, epsilon=ADAM_EPSILON):
    """Compiled Adam step on the pixels."""
    beta1, beta2 = betas

    def step(image, state, loss_args):
        m, v, t = state
        with tf.GradientTape() as tape:
            tape.watch(image)
            total, parts = loss_fn(image, *loss_args)
        grad = tape.gradient(total, image)
        t += 1.0
        m = beta1 * m + (1 - beta1) * grad
        v = beta2 * v + (1 - beta2) * grad**2
        update = (m / (1 - beta1**t)) / (tf.sqrt(v / (1 - beta2**t)) + epsilon)
        new_image = tf.clip_by_value(image - learning_rate * update, 0.0, 1.0)
        return new_image, (m, v, t), total, parts

    return tf.function(step, jit_compile=JIT_COMPILE)


def adam_state(image):
    return (tf.zeros_like(image), tf.zeros_like(image), tf.constant(0.0))


def has_converged(best_losses: list[float], tolerance: float, patience: int) -> bool:
    """True once the best loss improved by less than `tolerance` (relative) over `patience` steps."""
    if tolerance <= 0 or patience <= 0 or len(best_losses) <= patience:
        return False
    before, now = best_losses[-patience - 1], best_losses[-1]
    return (before - now) <= tolerance * abs(before)


def run_optimizer(step, state, image, loss_args, iterations: int, *, tolerance: float, patience: int,
                  callback: Optional[Callable[[Progress, tf.Tensor], None]] = None):
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
