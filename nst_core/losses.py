"""Losses of Gatys et al. 2016, with the style statistics of Li et al. 2017.

Size invariance: every feature statistic is a mean over pixel positions, and every
layer's loss is a relative squared error, ||stat(x) - target||^2 / ||target||^2.
Neither changes with the image size or with a layer's activation scale, so the
default weights need no retuning at 128 or 1024 px and each layer counts alike.

A style statistic maps features (B, H, W, C) to a vector per image; matching it
is an MMD with the matching kernel (Li et al. 2017):
- gram:      second moments, E[x x^T]  (kernel (x.y)^2; Gatys et al.)
- mmd-poly:  kernel (x.y + c)^2 with c = E||y||^2 of the style features: its exact
             feature map adds the first moments E[x] to Gram's second moments
- mmd-gauss: Gaussian kernel, bandwidth^2 = E||y - y'||^2 of the style features,
             through random Fourier features (Rahimi & Recht 2007): exact in
             expectation, linear in the number of positions
- bn:        per-channel mean and standard deviation (batch-norm statistics)
"""

from __future__ import annotations

import numpy as np
from keras import ops

RANDOM_FEATURES = 512  # Fourier features per layer for mmd-gauss: error ~ 1/sqrt(512)
_EPS = 1e-8
_POSITIONS = (1, 2)  # the H and W axes of (B, H, W, C) features: statistics are means over them


def _flat(stat):
    """(B, ...) -> (B, D), D known from the channel count (static under every backend)."""
    return ops.reshape(stat, (-1, int(np.prod(stat.shape[1:]))))


def gram_matrix(features):
    """E[x x^T] over positions: (B, C, C)."""
    positions = ops.cast(ops.shape(features)[1] * ops.shape(features)[2], features.dtype)
    return ops.einsum("bhwc,bhwd->bcd", features, features) / positions


def _mean_sq_norm(features):
    """E||y||^2 over positions (and images)."""
    return ops.mean(ops.sum(features**2, -1))


def style_context(stat: str, style_features: list, blend: list[float], seed: int) -> dict:
    """Constants a statistic needs, taken from the style image(s) of one layer.

    Each has a leading axis of length 1, so the contexts of a batch's pairs stack
    along it (nst_core.stylize.stylize_batch).
    """
    if stat == "mmd-poly":
        return {"c": ops.reshape(sum(w * _mean_sq_norm(f) for f, w in zip(style_features, blend)), (1,))}
    if stat == "mmd-gauss":
        # E||y - y'||^2 = 2 (E||y||^2 - ||E y||^2), blended over the style images.
        spread = sum(
            w * 2.0 * (_mean_sq_norm(f) - ops.sum(ops.mean(f, _POSITIONS) ** 2))
            for f, w in zip(style_features, blend)
        )
        channels = int(style_features[0].shape[-1])
        rng = np.random.default_rng(seed)
        projection = ops.convert_to_tensor(rng.standard_normal((channels, RANDOM_FEATURES)), "float32")
        return {
            "projection": (projection / ops.sqrt(ops.maximum(spread, _EPS)))[None],
            "phase": ops.convert_to_tensor(rng.uniform(0, 2 * np.pi, (1, RANDOM_FEATURES)), "float32"),
        }
    return {}


def style_statistic(stat: str, features, context: dict):
    """The statistic `stat` of each image's features, flattened: (B, D); `context` is per image too."""
    if stat == "gram":
        return _flat(gram_matrix(features))
    if stat == "mmd-poly":
        first = ops.sqrt(2.0 * context["c"])[:, None] * ops.mean(features, _POSITIONS)
        return ops.concatenate([_flat(gram_matrix(features)), first], -1)
    if stat == "mmd-gauss":
        phi = ops.cos(ops.einsum("bhwc,bcd->bhwd", features, context["projection"]) + context["phase"][:, None, None])
        return np.sqrt(2.0 / RANDOM_FEATURES) * ops.mean(phi, _POSITIONS)
    if stat == "bn":
        mean, variance = ops.moments(features, axes=_POSITIONS)
        return ops.concatenate([mean, ops.sqrt(variance + _EPS)], -1)
    raise ValueError(f"unknown style statistic {stat!r}")


def relative_error(value, target):
    """||value - target||^2 / ||target||^2 per image: (B,)."""
    axes = tuple(range(1, len(value.shape)))
    return ops.sum((value - target) ** 2, axes) / (ops.sum(target**2, axes) + _EPS)


def content_loss(features: list, targets: list, layer_weights: list[float]):
    """Weighted mean over layers of the feature maps' squared error, relative to the target's."""
    return sum(w * relative_error(f, t) for f, t, w in zip(features, targets, layer_weights))


def style_loss(stat: str, features: list, targets: list, contexts: list[dict], layer_weights: list[float]):
    """Weighted mean over layers of the style statistic's relative squared error."""
    return sum(
        w * relative_error(style_statistic(stat, f, ctx), t)
        for f, t, ctx, w in zip(features, targets, contexts, layer_weights)
    )


def total_variation_loss(images):
    """Mean squared difference of neighbouring pixels, per image: (B,)."""
    dy = images[:, 1:, :, :] - images[:, :-1, :, :]
    dx = images[:, :, 1:, :] - images[:, :, :-1, :]
    return ops.mean(dy**2, (1, 2, 3)) + ops.mean(dx**2, (1, 2, 3))
