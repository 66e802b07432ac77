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
- w2:        Wasserstein-2 distance between Gaussian fits (mean and covariance) of the
             features, as crowsonkb's style-transfer-pytorch; the targets are the mean
             and second raw moment, which blend linearly
- swd:       sliced Wasserstein distance (Heitz et al. 2021): the features' full
             distribution along SWD_DIRECTIONS fixed random directions, compared as
             sorted projections (quantile functions)
w2 and swd are distances rather than matched statistics, so each layer's loss is the
distance squared relative to E||y||^2 of the style features (or of their projections).
"""

from __future__ import annotations

import numpy as np
from keras import ops

from .colors import sqrt_psd

W2_EPSILON = 1e-4  # added to covariances' diagonals, as crowsonkb: keeps their square roots' gradients finite
SWD_QUANTILES = 1024  # points of each projection's quantile function kept as the target
RANDOM_FEATURES = 512  # Fourier features per layer for mmd-gauss: error ~ 1/sqrt(512)
SELF_SIMILARITY_LAYERS = ("block3_conv1", "block4_conv1")  # mid-level layers: shapes and parts, not colours
SELF_SIMILARITY_SAMPLES = 1024  # positions per layer (Kolkin et al. sample 1024): a (1024, 1024) matrix per image
EPS = 1e-8
_POSITIONS = (1, 2)  # the H and W axes of (B, H, W, C) features: statistics are means over them


def _flat(stat):
    """(B, ...) -> (B, D), D known from the channel count (static under every backend)."""
    return ops.reshape(stat, (-1, int(np.prod(stat.shape[1:]))))


def _positions(features):
    return ops.cast(ops.shape(features)[1] * ops.shape(features)[2], features.dtype)


def gram_matrix(features):
    """E[x x^T] over positions: (B, C, C)."""
    return ops.einsum("bhwc,bhwd->bcd", features, features) / _positions(features)


def moment_sums(stat: str, features):
    """The sums over positions that gram's statistic (x x^T) and w2's (x, then x x^T) are the means
    of, flattened (B, D): summed over tiles and divided by the whole image's positions, they are
    style_statistic's (nst_core.tiling)."""
    products = _flat(ops.einsum("bhwc,bhwd->bcd", features, features))
    return ops.concatenate([ops.sum(features, _POSITIONS), products], -1) if stat == "w2" else products


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
            w * 2.0 * (_mean_sq_norm(f) - ops.sum(ops.mean(f, _POSITIONS) ** 2)) for f, w in zip(style_features, blend)
        )
        channels = int(style_features[0].shape[-1])
        rng = np.random.default_rng(seed)
        projection = ops.convert_to_tensor(rng.standard_normal((channels, RANDOM_FEATURES)), "float32")
        return {
            "projection": (projection / ops.sqrt(ops.maximum(spread, EPS)))[None],
            "phase": ops.convert_to_tensor(rng.uniform(0, 2 * np.pi, (1, RANDOM_FEATURES)), "float32"),
        }
    if stat == "w2":
        return w2_context(
            sum(w * ops.convert_to_numpy(style_statistic("w2", f, {})) for f, w in zip(style_features, blend))
        )
    if stat == "swd":
        # Fixed directions, not redrawn each step as Heitz et al.: L-BFGS needs one objective.
        channels = int(style_features[0].shape[-1])
        rotation, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((channels, channels)))
        return {"projection": ops.convert_to_tensor(rotation, "float32")[None]}
    return {}


def w2_context(moments) -> dict:
    """w2's constant: the square root of the covariance of the (blended) style moments (1, D)."""
    _, covariance = _gaussian(ops.convert_to_tensor(moments, "float32"))
    root = sqrt_psd(ops.convert_to_numpy(covariance[0]).astype(np.float64)).astype(np.float32)
    return {"root": ops.convert_to_tensor(root)[None]}


def _w2_channels(moments) -> int:
    """C, from w2's statistic (B, C + C^2)."""
    return int((np.sqrt(1 + 4 * int(moments.shape[-1])) - 1) / 2)


def _gaussian(moments):
    """(mean (B, C), covariance + W2_EPSILON I (B, C, C)) from w2's statistic [mean, E[x x^T]]."""
    channels = _w2_channels(moments)
    mean = moments[:, :channels]
    second = ops.reshape(moments[:, channels:], (-1, channels, channels))
    covariance = second - mean[:, :, None] * mean[:, None, :] + W2_EPSILON * ops.eye(channels)
    return mean, covariance


def _w2_squared(moments, target, root):
    """Squared W2 between the Gaussian fits of two sets of moments, per image:
    |m_x - m_y|^2 + tr(S_x) + tr(S_y) - 2 tr((S_y^1/2 S_x S_y^1/2)^1/2)."""
    (mean_x, cov_x), (mean_y, cov_y) = _gaussian(moments), _gaussian(target)
    product = root @ cov_x @ root
    eigenvalues, _ = ops.eigh((product + ops.transpose(product, (0, 2, 1))) / 2)  # symmetric up to float error
    cross = ops.sum(ops.sqrt(ops.maximum(eigenvalues, 0.0) + EPS), -1)
    trace = ops.trace(cov_x, axis1=1, axis2=2) + ops.trace(cov_y, axis1=1, axis2=2)
    return ops.sum((mean_x - mean_y) ** 2, -1) + trace - 2.0 * cross


def _sorted_projections(features, projection):
    """Each image's features projected on each direction and sorted: (B, directions, positions)."""
    projected = ops.einsum("bhwc,bck->bkhw", features, projection)
    return ops.sort(ops.reshape(projected, (-1, int(projection.shape[-1]), int(np.prod(features.shape[1:3])))), -1)


def _quantiles(ordered, count: int):
    """Sorted values (..., N) resampled at `count` evenly spaced quantile levels, linearly."""
    size = int(ordered.shape[-1])
    position = np.clip((np.arange(count) + 0.5) / count * size - 0.5, 0, size - 1)
    low = np.floor(position).astype("int32")
    high, fraction = np.minimum(low + 1, size - 1), (position - low).astype("float32")
    return ops.take(ordered, low, axis=-1) * (1 - fraction) + ops.take(ordered, high, axis=-1) * fraction


def style_statistic(stat: str, features, context: dict):
    """The statistic `stat` of each image's features, flattened: (B, D); `context` is per image too."""
    if stat in ("gram", "w2"):  # w2's raw moments: unlike the covariance, they blend linearly
        return moment_sums(stat, features) / _positions(features)
    if stat == "mmd-poly":
        first = ops.sqrt(2.0 * context["c"])[:, None] * ops.mean(features, _POSITIONS)
        return ops.concatenate([_flat(gram_matrix(features)), first], -1)
    if stat == "mmd-gauss":
        phi = ops.cos(ops.einsum("bhwc,bcd->bhwd", features, context["projection"]) + context["phase"][:, None, None])
        return np.sqrt(2.0 / RANDOM_FEATURES) * ops.mean(phi, _POSITIONS)
    if stat == "bn":
        mean, variance = ops.moments(features, axes=_POSITIONS)
        return ops.concatenate([mean, ops.sqrt(variance + EPS)], -1)
    if stat == "swd":
        return _flat(_quantiles(_sorted_projections(features, context["projection"]), SWD_QUANTILES))
    raise ValueError(f"unknown style statistic {stat!r}")


def relative_error(value, target):
    """||value - target||^2 / ||target||^2 per image: (B,)."""
    axes = tuple(range(1, len(value.shape)))
    return ops.sum((value - target) ** 2, axes) / (ops.sum(target**2, axes) + EPS)


def content_loss(features: list, targets: list, layer_weights: list[float]):
    """Weighted mean over layers of the feature maps' squared error, relative to the target's."""
    return sum(w * relative_error(f, t) for f, t, w in zip(features, targets, layer_weights))


def self_similarity_positions(shape, seed: int) -> np.ndarray:
    """Fixed random positions (flat indices into H x W) of a feature map of `shape` (B, H, W, C): the
    self-similarity loss compares these with each other, the same ones at every step of a scale."""
    positions = int(shape[1]) * int(shape[2])
    count = min(SELF_SIMILARITY_SAMPLES, positions)
    return np.sort(np.random.default_rng(seed).choice(positions, count, replace=False)).astype("int32")


def self_similarity(features, positions):
    """Cosine distances between the features at `positions`, over their mean: (B, N, N). Kolkin et
    al.'s content statistic: it says which parts of the picture are alike, not what colour they are."""
    flat = ops.reshape(features, (ops.shape(features)[0], -1, features.shape[3]))
    picked = ops.take(flat, positions, axis=1)
    unit = picked / (ops.sqrt(ops.sum(picked**2, -1, keepdims=True)) + EPS)
    distance = 1.0 - ops.einsum("bnc,bmc->bnm", unit, unit)
    return distance / (ops.mean(distance, (1, 2), keepdims=True) + EPS)


def self_similarity_loss(features: list, targets: list):
    """Mean over layers of the self-similarity matrices' relative error: (B,). `targets`: per layer,
    (positions, the content's self_similarity there)."""
    return sum(relative_error(self_similarity(f, positions), t) for f, (positions, t) in zip(features, targets)) / len(
        targets
    )


def layer_style_loss(stat: str, features, target, context: dict):
    """One layer's style loss per image: (B,), relative to the style features' scale."""
    if stat == "swd":
        ordered = _sorted_projections(features, context["projection"])
        expected = _quantiles(ops.reshape(target, (-1, int(ordered.shape[1]), SWD_QUANTILES)), int(ordered.shape[-1]))
        return relative_error(ordered, expected)
    return statistic_loss(stat, style_statistic(stat, features, context), target, context)


def statistic_loss(stat: str, statistic, target, context: dict):
    """layer_style_loss from the features' statistic (B, D), for every statistic but swd, whose loss
    needs the features themselves (tiles compute statistics, not features, of the whole image)."""
    if stat == "w2":
        channels = _w2_channels(target)
        second_moment = ops.trace(ops.reshape(target[:, channels:], (-1, channels, channels)), axis1=1, axis2=2)
        return _w2_squared(statistic, target, context["root"]) / (second_moment + EPS)
    return relative_error(statistic, target)


def style_loss(stat: str, features: list, targets: list, contexts: list[dict], layer_weights: list[float]):
    """Weighted mean over layers of the layers' style losses."""
    return sum(
        w * layer_style_loss(stat, f, t, ctx) for f, t, ctx, w in zip(features, targets, contexts, layer_weights)
    )


def total_variation_loss(images):
    """Mean squared difference of neighbouring pixels, per image: (B,)."""
    dy = images[:, 1:, :, :] - images[:, :-1, :, :]
    dx = images[:, :, 1:, :] - images[:, :, :-1, :]
    return ops.mean(dy**2, (1, 2, 3)) + ops.mean(dx**2, (1, 2, 3))
