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
import tensorflow as tf

RANDOM_FEATURES = 512  # Fourier features per layer for mmd-gauss: error ~ 1/sqrt(512)
_EPS = 1e-8


def _positions(features: tf.Tensor) -> tf.Tensor:
    """(B, H, W, C) -> (B, H*W, C)."""
    shape = tf.shape(features)
    return tf.reshape(features, [shape[0], shape[1] * shape[2], shape[3]])


def gram_matrix(features: tf.Tensor) -> tf.Tensor:
    """E[x x^T] over positions: (B, C, C)."""
    x = _positions(features)
    return tf.einsum("bnc,bnd->bcd", x, x) / tf.cast(tf.shape(x)[1], features.dtype)


def style_context(stat: str, style_features: list[tf.Tensor], blend: list[float], seed: int) -> dict:
    """Constants a statistic needs, taken from the style image(s) of one layer."""
    if stat == "mmd-poly":
        sq_norm = sum(w * tf.reduce_mean(tf.reduce_sum(_positions(f) ** 2, -1)) for f, w in zip(style_features, blend))
        return {"c": sq_norm}
    if stat == "mmd-gauss":
        # E||y - y'||^2 = 2 (E||y||^2 - ||E y||^2), blended over the style images.
        spread = sum(
            w * 2.0 * (tf.reduce_mean(tf.reduce_sum(_positions(f) ** 2, -1))
                       - tf.reduce_sum(tf.reduce_mean(_positions(f), 1) ** 2))
            for f, w in zip(style_features, blend)
        )
        channels = int(style_features[0].shape[-1])
        rng = np.random.default_rng(seed)
        return {
            "projection": tf.constant(rng.standard_normal((channels, RANDOM_FEATURES)), tf.float32)
            / tf.sqrt(tf.maximum(spread, _EPS)),
            "phase": tf.constant(rng.uniform(0, 2 * np.pi, RANDOM_FEATURES), tf.float32),
        }
    return {}


def style_statistic(stat: str, features: tf.Tensor, context: dict) -> tf.Tensor:
    """The statistic `stat` of each image's features, flattened: (B, D)."""
    batch = tf.shape(features)[0]
    if stat == "gram":
        return tf.reshape(gram_matrix(features), [batch, -1])
    if stat == "mmd-poly":
        first = tf.sqrt(2.0 * context["c"]) * tf.reduce_mean(_positions(features), 1)
        return tf.concat([tf.reshape(gram_matrix(features), [batch, -1]), first], -1)
    if stat == "mmd-gauss":
        phi = tf.cos(tf.einsum("bnc,cd->bnd", _positions(features), context["projection"]) + context["phase"])
        return tf.sqrt(2.0 / RANDOM_FEATURES) * tf.reduce_mean(phi, 1)
    if stat == "bn":
        mean, variance = tf.nn.moments(_positions(features), axes=[1])
        return tf.concat([mean, tf.sqrt(variance + _EPS)], -1)
    raise ValueError(f"unknown style statistic {stat!r}")


def relative_error(value: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """||value - target||^2 / ||target||^2 per image: (B,)."""
    axes = list(range(1, len(value.shape)))
    return tf.reduce_sum((value - target) ** 2, axes) / (tf.reduce_sum(target**2, axes) + _EPS)


def content_loss(features: list[tf.Tensor], targets: list[tf.Tensor], layer_weights: list[float]) -> tf.Tensor:
    """Weighted mean over layers of the feature maps' squared error, relative to the target's."""
    return sum(w * relative_error(f, t) for f, t, w in zip(features, targets, layer_weights))


def style_loss(stat: str, features: list[tf.Tensor], targets: list[tf.Tensor], contexts: list[dict],
               layer_weights: list[float]) -> tf.Tensor:
    """Weighted mean over layers of the style statistic's relative squared error."""
    return sum(
        w * relative_error(style_statistic(stat, f, ctx), t)
        for f, t, ctx, w in zip(features, targets, contexts, layer_weights)
    )


def total_variation_loss(images: tf.Tensor) -> tf.Tensor:
    """Mean squared difference of neighbouring pixels, per image: (B,)."""
    dy = images[:, 1:, :, :] - images[:, :-1, :, :]
    dx = images[:, :, 1:, :] - images[:, :, :-1, :]
    return tf.reduce_mean(dy**2, [1, 2, 3]) + tf.reduce_mean(dx**2, [1, 2, 3])
