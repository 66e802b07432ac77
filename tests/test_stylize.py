"""The optimisation with the real VGG weights: the paper's three experiments, measured.

Small images (64 to 96 px) and few steps keep each test to seconds on a CPU; the
checks are measurements (losses and distances falling), not "it ran".
"""

import numpy as np
import pytest
from keras import ops

from conftest import SAMPLES
from nst_core import losses
from nst_core.colors import match_color_histogram, transfer_luminance
from nst_core.image_io import load_image
from nst_core.model import feature_extractor
from nst_core.params import VGG_STYLE_LAYERS, StyleParams
from nst_core.storage import LOCAL
from nst_core.stylize import initial_image, resize, size_for, stylize
from nst_core.targets import style_load_side, style_shape

SIZE = 64
# Tests marked `backends` run on TensorFlow and, in `make test`, again on JAX.


@pytest.fixture(scope="module")
def images():
    content = load_image(str(SAMPLES / "content" / "chelsea.jpg"), LOCAL, max_side=SIZE)
    style = load_image(str(SAMPLES / "styles" / "starry_night.jpg"), LOCAL, max_side=SIZE)
    return content, style


def _params(**changes):
    return StyleParams(size=SIZE, tolerance=0, **changes)


def style_distance(weights, image, style):
    """Gram distance to the style image over Gatys' style layers (independent of any run)."""
    extract = feature_extractor("auto", weights, VGG_STYLE_LAYERS)
    ours = extract(ops.convert_to_tensor(image[None]))
    theirs = extract(ops.convert_to_tensor(resize(style, size_for(style.shape, max(image.shape[:2])))[None]))
    grams = [
        (losses.style_statistic("gram", a, {}), losses.style_statistic("gram", b, {})) for a, b in zip(ours, theirs)
    ]
    return float(np.mean([losses.relative_error(a, b)[0] for a, b in grams]))


def structure_similarity(image, reference):
    """Correlation of the 4x-downsampled luminance: 1 for the same picture, ~0 for noise."""

    def small_luma(x):
        return resize(x, (x.shape[0] // 4, x.shape[1] // 4)) @ np.array([0.299, 0.587, 0.114])

    return float(np.corrcoef(small_luma(image).ravel(), small_luma(reference).ravel())[0, 1])


def content_distance(weights, image, content):
    extract = feature_extractor("auto", weights, ("block4_conv2",))
    a = extract(ops.convert_to_tensor(image[None]))[0]
    b = extract(ops.convert_to_tensor(resize(content, image.shape[:2])[None]))[0]
    return float(losses.relative_error(a, b)[0])


def test_content_reconstruction_from_noise(images, weights_path):
    content, style = images
    params = _params(style_weight=0, tv_weight=0, init="noise", iterations=60)
    result = stylize(content, [style], params, weights=weights_path)
    assert result.loss_history[0] / result.content_loss >= 10, result.loss_history[::10]
    noise = initial_image("noise", content, style, seed=0)
    assert structure_similarity(result.image, content) > 0.5 > 0.1 > structure_similarity(noise, content)


def test_content_reconstruction_from_several_layers(images, weights_path):
    content, style = images
    params = _params(
        style_weight=0,
        tv_weight=0,
        init="noise",
        iterations=40,
        content_layers=("block2_conv2", "block4_conv2"),
        content_layer_weights=(1.0, 1.0),
    )
    result = stylize(content, [style], params, weights=weights_path)
    assert result.loss_history[0] / result.content_loss >= 10


def test_style_reconstruction_is_texture_synthesis(images, weights_path):
    content, style = images
    params = _params(content_weight=0, tv_weight=0, init="noise", iterations=60)
    result = stylize(content, [style], params, weights=weights_path)
    assert result.loss_history[0] / result.style_loss >= 10, result.loss_history[::10]


@pytest.mark.backends
def test_transfer_moves_style_and_keeps_content(images, weights_path):
    content, style = images
    result = stylize(content, [style], _params(iterations=80), weights=weights_path)
    stylized_style = style_distance(weights_path, result.image, style)
    content_own_style = style_distance(weights_path, content, style)
    assert stylized_style < 0.2 * content_own_style, (stylized_style, content_own_style)
    kept = content_distance(weights_path, result.image, content)
    style_as_content = content_distance(weights_path, resize(style, content.shape[:2]), content)
    assert kept < style_as_content, (kept, style_as_content)


@pytest.mark.parametrize("stat", ["mmd-poly", "mmd-gauss", "bn", "w2", "swd"])
def test_every_style_statistic_lowers_its_loss(images, weights_path, stat):
    content, style = images
    result = stylize(
        content, [style], _params(style_stat=stat, content_weight=0, init="noise", iterations=30), weights=weights_path
    )
    assert result.loss_history[0] / result.loss_history[-1] >= 5


def test_adam_lowers_the_loss_too(images, weights_path):
    content, style = images
    result = stylize(
        content, [style], _params(optimizer="adam", learning_rate=0.05, iterations=40), weights=weights_path
    )
    assert result.total_loss < 0.5 * result.loss_history[0]


@pytest.mark.backends
def test_same_seed_same_image(images, weights_path):
    content, style = images
    params = _params(init="noise", iterations=15, seed=7)
    first = stylize(content, [style], params, weights=weights_path)
    second = stylize(content, [style], params, weights=weights_path)
    np.testing.assert_array_equal(first.image, second.image)
    assert first.loss_history == second.loss_history


def test_stopping_rule_ends_a_converged_run(images, weights_path):
    content, style = images
    params = StyleParams(size=SIZE, iterations=400, tolerance=0.01, patience=10)
    result = stylize(content, [style], params, weights=weights_path)
    assert result.iterations < 400
    window = result.loss_history
    assert min(window[:-10]) - min(window) <= 0.01 * min(window[:-10]) + 1e-9


def test_a_moving_average_of_the_iterates_lags_behind_the_best_one(images, weights_path):
    """From the content, the average holds earlier iterates: nearer the photo, further from the
    style, and its reported losses are its own."""
    content, style = images
    best = stylize(content, [style], _params(iterations=15), weights=weights_path)
    averaged = stylize(content, [style], _params(iterations=15, average_decay=0.9), weights=weights_path)
    assert averaged.content_loss < 0.95 * best.content_loss and averaged.style_loss > 1.05 * best.style_loss
    assert averaged.loss_history == best.loss_history  # the same run; only what it returns differs


def test_coarse_to_fine_runs_each_scale(images, weights_path):
    content, style = images
    params = _params(scales=(32,), coarse_iterations=10, iterations=10)
    result = stylize(content, [style], params, weights=weights_path)
    assert result.scale_iterations == [10, 10]
    assert max(result.image.shape[:2]) == SIZE


def test_two_styles_blend_between_them(images, weights_path):
    content, style = images
    other = load_image(str(SAMPLES / "styles" / "the_scream.jpg"), LOCAL, max_side=SIZE)
    results = {
        blend: stylize(content, [style, other], _params(style_blend=blend, iterations=40), weights=weights_path).image
        for blend in [(1.0, 0.0), (0.0, 1.0)]
    }
    towards_first = style_distance(weights_path, results[(1.0, 0.0)], style)
    towards_second = style_distance(weights_path, results[(0.0, 1.0)], style)
    assert towards_first < towards_second


def test_preserve_colors_by_luminance_keeps_content_chroma(images, weights_path):
    content, style = images
    result = stylize(content, [style], _params(iterations=10, preserve_colors="luminance"), weights=weights_path)
    to_yiq = np.array([[0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    chroma_error = np.abs(result.image @ to_yiq.T - content @ to_yiq.T).max(axis=-1)
    # Where the new luminance with the photo's chroma leaves the RGB cube, clipping moves the chroma.
    assert np.mean(chroma_error < 0.03) > 0.99 and chroma_error.max() < 0.1, chroma_error.max()


def test_histogram_matching_moves_style_colours_to_the_content():
    rng = np.random.default_rng(1)
    source = rng.random((20, 20, 3)).astype(np.float32) * 0.3
    reference = np.clip(rng.normal([0.7, 0.4, 0.2], 0.05, (20, 20, 3)), 0, 1).astype(np.float32)
    matched = match_color_histogram(source, reference)
    np.testing.assert_allclose(matched.reshape(-1, 3).mean(0), reference.reshape(-1, 3).mean(0), atol=0.02)


def test_recolored_start_is_the_photo_in_the_paintings_colours(images):
    content, style = images
    start = initial_image("recolored", content, style, seed=0)
    np.testing.assert_allclose(start.reshape(-1, 3).mean(0), style.reshape(-1, 3).mean(0), atol=0.03)
    edges = np.corrcoef(np.diff(start.mean(-1), axis=1).ravel(), np.diff(content.mean(-1), axis=1).ravel())[0, 1]
    assert edges > 0.8  # the photo's structure is kept


def test_luminance_transfer_keeps_luminance():
    rng = np.random.default_rng(2)
    stylized, content = rng.random((8, 8, 3)).astype(np.float32), rng.random((8, 8, 3)).astype(np.float32) * 0.5 + 0.25
    merged = transfer_luminance(stylized, content)
    luma = np.array([0.299, 0.587, 0.114])
    inside = (merged > 0.001).all(-1) & (merged < 0.999).all(-1)
    np.testing.assert_allclose((merged @ luma)[inside], (stylized @ luma)[inside], atol=1e-4)


def test_non_finite_loss_fails_clearly(images, weights_path):
    from nst_core.optimize import NonFiniteLossError

    content, style = images
    with pytest.raises(NonFiniteLossError, match="lower the loss weights"):
        stylize(content, [style], _params(style_weight=1e39, content_weight=1e39, iterations=5), weights=weights_path)


def test_the_painting_is_fitted_by_its_short_side_to_the_outputs():
    """style_fit short: the painting's short side is the output's (x style_scale) whatever the two shapes,
    its long side at most twice the long fit's, within what is loaded; long: longest to longest."""
    starry, scream, strip = (640, 1024, 3), (1528, 1200, 3), (100, 1000, 3)
    short, long = StyleParams(style_fit="short"), StyleParams(style_fit="long")
    assert style_shape(starry, (512, 512), short) == (512, 819)  # a landscape painting on a square photo
    assert style_shape(scream, (340, 512), short) == (433, 340)  # a portrait painting on a landscape photo
    assert style_shape(starry, (512, 512), short.replace(style_scale=0.5)) == (256, 410)
    assert style_shape(strip, (512, 512), short) == (102, 1024) and style_load_side(512, short) == 1024  # capped
    assert style_shape(starry, (512, 512), long) == (320, 512) and style_load_side(512, long) == 512


def test_style_statistics_are_computed_once_per_style(images, weights_path, monkeypatch):
    from nst_core import losses

    content, style = images
    calls = []
    real = losses.style_context
    monkeypatch.setattr(losses, "style_context", lambda *a, **k: calls.append(1) or real(*a, **k))
    params = _params(iterations=2, seed=123)  # a seed no other test uses: a cold cache entry
    for _ in range(3):
        stylize(content, [style], params, weights=weights_path)
    assert len(calls) == len(params.style_layers)  # one computation, then two cache hits
    stylize(content, [style], params.replace(style_scale=0.5), weights=weights_path)
    assert len(calls) == 2 * len(params.style_layers)  # a different style size is a new entry
    other_fit = "long" if params.style_fit == "short" else "short"
    stylize(content, [style], params.replace(style_fit=other_fit), weights=weights_path)
    assert len(calls) == 3 * len(params.style_layers)  # so is the other fit (the two images' shapes differ)


@pytest.mark.backends
def test_content_and_style_losses_are_recorded_per_step(images, weights_path):
    content, style = images
    params = _params(tv_weight=0, iterations=6, scales=(32,), coarse_iterations=3, init="content")
    result = stylize(content, [style], params, weights=weights_path)
    assert len(result.content_loss_history) == len(result.style_loss_history) == len(result.loss_history) == 9
    weighted = params.content_weight * np.array(result.content_loss_history) + params.style_weight * np.array(
        result.style_loss_history
    )
    np.testing.assert_allclose(weighted, result.loss_history, rtol=1e-4)  # no TV: the parts make the total
    # Starts at the content: 0, up to bfloat16 features' rounding (the compiled step's and the targets' differ).
    assert result.content_loss_history[0] < 1e-4 < result.content_loss_history[-1]
