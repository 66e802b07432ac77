"""The independent quality measures, both sides: their scales, and that the optimisation never sees them."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageFilter

from conftest import REPO, SAMPLES
from nst_core import quality
from nst_core.colors import match_color_histogram
from nst_core.image_io import load_image, to_uint8
from nst_core.storage import LOCAL
from nst_core.stylize import resize


@pytest.fixture(scope="module")
def pair():
    content = load_image(str(SAMPLES / "content" / "chelsea.jpg"), LOCAL)
    style = load_image(str(SAMPLES / "styles" / "starry_night.jpg"), LOCAL)
    return content, style


def test_style_distance_is_0_at_the_painting_and_1_at_the_photo(pair):
    content, style = pair
    assert quality.style_distance(style, style, content) == pytest.approx(0.0, abs=1e-6)
    assert quality.style_distance(content, style, content) == pytest.approx(1.0, abs=1e-6)
    halfway = 0.5 * content + 0.5 * resize(style, content.shape[:2])
    assert 0.2 < quality.style_distance(halfway, style, content) < 0.9


def test_content_distance_is_0_at_the_photo_and_grows_away_from_it(pair, weights_path):
    content, style = pair
    vgg = quality.VggDistances(weights_path)
    assert vgg.content_distance(content, content) == pytest.approx(0.0, abs=1e-3)
    noisy = np.clip(content + np.random.default_rng(0).normal(0, 0.1, content.shape), 0, 1).astype(np.float32)
    painting = resize(style, content.shape[:2])
    assert 0 < vgg.content_distance(noisy, content) < vgg.content_distance(painting, content)
    assert vgg.gram_distance(painting, style) < vgg.gram_distance(content, style)


def test_structure_kept_is_1_at_the_photo_and_low_at_the_painting(pair):
    content, style = pair
    assert quality.structure_kept(content, content) == pytest.approx(1.0, abs=1e-6)
    painting = resize(style, content.shape[:2])
    assert quality.structure_kept(painting, content) < 0.25
    noise = np.random.default_rng(0).uniform(0, 1, content.shape).astype(np.float32)
    assert quality.structure_kept(noise, content) < 0.35


def test_structure_kept_forgives_blur_and_recolouring_but_not_a_fade(pair):
    """What a painter changes (colours, fine texture) keeps the structure; losing the layout does not."""
    content, style = pair
    blurred = np.asarray(Image.fromarray(to_uint8(content)).filter(ImageFilter.GaussianBlur(2)), np.float32) / 255
    recoloured = match_color_histogram(content, style)
    painting = resize(style, content.shape[:2])
    faded = 0.3 * content + 0.7 * painting  # the photo as a faint trace in the painting
    assert quality.structure_kept(blurred, content) > 0.9
    assert quality.structure_kept(recoloured, content) > 0.85
    assert quality.structure_kept(painting, content) < quality.structure_kept(faded, content) < 0.9


def test_structure_kept_compares_at_the_outputs_shape_whatever_the_photos_size(pair):
    content, _ = pair
    smaller = resize(content, (content.shape[0] // 2, content.shape[1] // 2))
    assert quality.structure_kept(smaller, content) > 0.95


def test_the_optimisation_never_imports_the_measure():
    code = (
        "import sys; import nst_core.stylize, nst_core.optimize, nst_core.losses; "
        "assert 'nst_core.quality' not in sys.modules, 'the objective must not see the quality measure'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
