"""Losses and style statistics against small NumPy references."""

import numpy as np
import pytest
from keras import ops

from nst_core import losses

pytestmark = pytest.mark.backends  # `make test` runs these on JAX too
RNG = np.random.default_rng(0)


def _features(h=4, w=5, c=3, batch=1, scale=1.0):
    return (RNG.standard_normal((batch, h, w, c)) * scale).astype(np.float32)


def test_gram_matrix_is_second_moment_over_positions():
    feats = _features()
    flat = feats.reshape(-1, 3)
    expected = flat.T @ flat / flat.shape[0]
    np.testing.assert_allclose(losses.gram_matrix(ops.convert_to_tensor(feats))[0], expected, rtol=1e-5)


def test_gram_statistic_is_size_invariant():
    """A tiled feature map (same distribution, 4x the positions) has the same Gram matrix."""
    feats = _features()
    tiled = np.tile(feats, (1, 2, 2, 1))
    small = losses.style_statistic("gram", ops.convert_to_tensor(feats), {})
    large = losses.style_statistic("gram", ops.convert_to_tensor(tiled), {})
    np.testing.assert_allclose(small, large, rtol=1e-4, atol=1e-6)


def test_mmd_poly_equals_the_polynomial_kernel_mmd():
    """||phi(x) - phi(y)||^2 with our statistic == MMD^2 with k(a, b) = (a.b + c)^2."""
    x, y = _features(), _features(h=3, w=3)
    context = losses.style_context("mmd-poly", [ops.convert_to_tensor(y)], [1.0], seed=0)
    c = float(context["c"][0])
    stat_x = ops.convert_to_numpy(losses.style_statistic("mmd-poly", ops.convert_to_tensor(x), context))
    stat_y = ops.convert_to_numpy(losses.style_statistic("mmd-poly", ops.convert_to_tensor(y), context))
    xs, ys = x.reshape(-1, 3).astype(np.float64), y.reshape(-1, 3).astype(np.float64)
    kernel = lambda a, b: (a @ b.T + c) ** 2  # noqa: E731
    exact = kernel(xs, xs).mean() + kernel(ys, ys).mean() - 2 * kernel(xs, ys).mean()
    assert np.sum((stat_x - stat_y) ** 2) == pytest.approx(exact, rel=1e-4)
    assert c == pytest.approx(np.mean(np.sum(ys**2, 1)), rel=1e-5)


def test_mmd_gauss_approximates_the_gaussian_kernel_mmd():
    x = _features(h=10, w=10, c=4)
    y = _features(h=10, w=10, c=4) * 2.0 + 1.0  # a different distribution
    context = losses.style_context("mmd-gauss", [ops.convert_to_tensor(y)], [1.0], seed=3)
    estimate = np.sum(
        (
            ops.convert_to_numpy(losses.style_statistic("mmd-gauss", ops.convert_to_tensor(x), context))
            - ops.convert_to_numpy(losses.style_statistic("mmd-gauss", ops.convert_to_tensor(y), context))
        )
        ** 2
    )
    xs, ys = x.reshape(-1, 4).astype(np.float64), y.reshape(-1, 4).astype(np.float64)
    sigma2 = np.mean(np.sum((ys[:, None] - ys[None]) ** 2, -1))  # E||y - y'||^2
    kernel = lambda a, b: np.exp(-np.sum((a[:, None] - b[None]) ** 2, -1) / (2 * sigma2))  # noqa: E731
    exact = kernel(xs, xs).mean() + kernel(ys, ys).mean() - 2 * kernel(xs, ys).mean()
    assert exact > 0.05
    assert estimate == pytest.approx(exact, rel=0.25)


def test_bn_statistic_is_channel_mean_and_std():
    feats = _features(c=6)
    stat = ops.convert_to_numpy(losses.style_statistic("bn", ops.convert_to_tensor(feats), {}))[0]
    flat = feats.reshape(-1, 6)
    np.testing.assert_allclose(stat[:6], flat.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stat[6:], flat.std(0), rtol=1e-3)


def test_unknown_statistic_is_rejected():
    with pytest.raises(ValueError, match="unknown style statistic"):
        losses.style_statistic("fancy", ops.convert_to_tensor(_features()), {})


def test_relative_error_and_content_loss():
    target = _features()
    value = target * 1.5
    # ||0.5 t||^2 / ||t||^2 = 0.25
    assert float(
        losses.relative_error(ops.convert_to_tensor(value), ops.convert_to_tensor(target))[0]
    ) == pytest.approx(0.25, rel=1e-5)
    loss = losses.content_loss(
        [ops.convert_to_tensor(value), ops.convert_to_tensor(target)], [ops.convert_to_tensor(target)] * 2, [0.5, 0.5]
    )
    assert float(loss[0]) == pytest.approx(0.125, rel=1e-5)


def test_style_loss_is_zero_at_the_target_and_weighted_by_layer():
    a, b = _features(), _features(c=2)
    stats = [losses.style_statistic("gram", ops.convert_to_tensor(f), {}) for f in (a, b)]
    assert (
        float(
            losses.style_loss(
                "gram", [ops.convert_to_tensor(a), ops.convert_to_tensor(b)], stats, [{}, {}], [0.5, 0.5]
            )[0]
        )
        == 0.0
    )
    moved = losses.style_loss(
        "gram", [ops.convert_to_tensor(a * 2), ops.convert_to_tensor(b)], stats, [{}, {}], [1.0, 0.0]
    )
    assert float(moved[0]) == pytest.approx(9.0, rel=1e-4)  # (4G - G)^2 / G^2


def test_total_variation_against_numpy():
    image = RNG.random((1, 6, 7, 3)).astype(np.float32)
    expected = np.mean(np.diff(image, axis=1) ** 2) + np.mean(np.diff(image, axis=2) ** 2)
    assert float(losses.total_variation_loss(ops.convert_to_tensor(image))[0]) == pytest.approx(expected, rel=1e-5)
    flat = np.full((1, 6, 7, 3), 0.3, np.float32)
    assert float(losses.total_variation_loss(ops.convert_to_tensor(flat))[0]) == 0.0


def _w2_squared_reference(x, y, eps=losses.W2_EPSILON):
    """Squared W2 between Gaussian fits, by SciPy's matrix square root, relative to E||y||^2."""
    import scipy.linalg

    xs, ys = x.reshape(-1, x.shape[-1]).astype(np.float64), y.reshape(-1, y.shape[-1]).astype(np.float64)
    cov_x = np.cov(xs.T, bias=True) + eps * np.eye(xs.shape[1])
    cov_y = np.cov(ys.T, bias=True) + eps * np.eye(ys.shape[1])
    root = scipy.linalg.sqrtm(cov_y).real
    cross = np.trace(scipy.linalg.sqrtm(root @ cov_x @ root).real)
    distance = ((xs.mean(0) - ys.mean(0)) ** 2).sum() + np.trace(cov_x) + np.trace(cov_y) - 2 * cross
    return distance / (ys**2).sum(1).mean()


def test_w2_is_the_wasserstein_distance_between_gaussian_fits():
    x, y = np.abs(_features(h=6, w=7, c=5, batch=2)), np.abs(_features(h=8, w=9, c=5, scale=2.0))
    context = losses.style_context("w2", [ops.convert_to_tensor(y)], [1.0], seed=0)
    target = losses.style_statistic("w2", ops.convert_to_tensor(y), context)
    batched = {"root": ops.concatenate([context["root"]] * 2, 0)}
    got = losses.layer_style_loss("w2", ops.convert_to_tensor(x), ops.concatenate([target] * 2, 0), batched)
    np.testing.assert_allclose(got, [_w2_squared_reference(x[i], y) for i in range(2)], rtol=1e-3)
    at_target = losses.layer_style_loss("w2", ops.convert_to_tensor(y), target, context)
    assert abs(float(at_target[0])) < 1e-4


def test_swd_is_zero_at_the_style_and_grows_with_its_distance():
    y = np.abs(_features(h=16, w=16, c=4))
    context = losses.style_context("swd", [ops.convert_to_tensor(y)], [1.0], seed=0)
    target = losses.style_statistic("swd", ops.convert_to_tensor(y), context)
    projection = ops.convert_to_numpy(context["projection"][0])
    np.testing.assert_allclose(projection.T @ projection, np.eye(4), atol=1e-5)  # orthonormal directions

    def loss(features):
        return float(losses.layer_style_loss("swd", ops.convert_to_tensor(features), target, context)[0])

    shuffled = RNG.permutation(y.reshape(-1, 4)).reshape(y.shape)  # same distribution, other positions
    assert loss(y) < 1e-4 and loss(shuffled) < 1e-4
    assert 0 < loss(y * 1.1) < loss(y * 1.5) < loss(y * 3.0)
