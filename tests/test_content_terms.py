"""The content terms that keep the photo's layout while the strokes change: the start blended with
noise, content weight by scale, and the self-similarity loss. Each is checked by what it is for,
measured with the structure judge the optimisation never sees (nst_core.quality)."""

import numpy as np
import pytest
from keras import ops

from conftest import SAMPLES
from nst_core import losses, quality
from nst_core.colors import match_color_histogram
from nst_core.image_io import load_image
from nst_core.model import feature_extractor
from nst_core.params import StyleParams
from nst_core.storage import LOCAL
from nst_core.stylize import Job, initial_image, resize, stylize
from nst_core.terms import loss_weights, terms_for

SIZE = 96


@pytest.fixture(scope="module")
def images():
    content = load_image(str(SAMPLES / "content" / "chelsea.jpg"), LOCAL, max_side=SIZE)
    style = load_image(str(SAMPLES / "styles" / "starry_night.jpg"), LOCAL, max_side=2 * SIZE)
    return content, style


def test_the_blended_start_is_the_photo_and_the_seeded_noise_in_proportion(images):
    content, style = images
    noise = initial_image("noise", content, style, seed=3)
    blended = initial_image("content", content, style, seed=3, noise_share=0.25)
    np.testing.assert_allclose(blended, 0.75 * content + 0.25 * noise, atol=1e-6)
    np.testing.assert_array_equal(initial_image("content", content, style, seed=3), content)


def test_content_weight_eases_from_the_coarse_multiple_to_one_at_the_output_size():
    params = StyleParams(size=512, min_scale=128, content_weight=2.0, coarse_content_weight=8.0)
    sides = params.sides()
    weights = [params.content_weight_at(side) for side in sides]
    assert weights[0] == pytest.approx(16.0) and weights[-1] == pytest.approx(2.0)
    assert all(a > b for a, b in zip(weights, weights[1:]))  # falls at every scale
    assert StyleParams(size=512, min_scale=0, coarse_content_weight=8.0).content_weight_at(512) == 1.0


def test_self_similarity_ignores_colour_but_not_layout(images, weights_path):
    """A recoloured photo has nearly the photo's self-similarity; the painting has not."""
    content, style = images
    extract = feature_extractor("auto", weights_path, losses.SELF_SIMILARITY_LAYERS)

    def matrices(image):
        features = extract(ops.convert_to_tensor(image[None]))
        return [losses.self_similarity(f, losses.self_similarity_positions(f.shape, 0)) for f in features]

    photo = matrices(content)
    recoloured = matrices(match_color_histogram(content, style))
    painting = matrices(resize(style, content.shape[:2]))
    for layer in range(len(photo)):
        near = float(losses.relative_error(recoloured[layer], photo[layer])[0])
        far = float(losses.relative_error(painting[layer], photo[layer])[0])
        assert near < far / 3, (layer, near, far)
    assert float(losses.relative_error(photo[0], photo[0])[0]) == pytest.approx(0.0, abs=1e-6)


def _synthesized(images, weights_path, self_similarity_weight: float):
    """Texture synthesis from noise (the painting's statistics, almost no feature content loss), with or
    without the self-similarity loss: (structure kept, style distance)."""
    content, style = images
    params = StyleParams(
        size=SIZE,
        min_scale=0,
        iterations=60,
        init="noise",
        content_weight=1e-3,
        style_weight=1.0,
        coarse_content_weight=1.0,
        self_similarity_weight=self_similarity_weight,
    )
    result = stylize(content, [style], params, weights=weights_path)
    return quality.structure_kept(result.image, content), quality.style_distance(result.image, style, content)


@pytest.mark.backends
def test_self_similarity_alone_draws_the_photos_layout_in_the_paintings_texture(images, weights_path):
    texture, _ = _synthesized(images, weights_path, 0.0)
    laid_out, style = _synthesized(images, weights_path, 5000.0)
    assert texture < 0.35 and laid_out > texture + 0.2, (texture, laid_out)
    assert style < 0.8  # the painting's texture, not the photo


def test_the_coarse_scales_weigh_content_more_in_the_loss():
    params = StyleParams(size=SIZE, min_scale=48, coarse_content_weight=8.0, content_weight=2.0)
    job = Job(np.zeros((SIZE, SIZE, 3), np.float32), [np.zeros((SIZE, SIZE, 3), np.float32)], params)
    terms = terms_for(params)
    coarse, fine = (
        ops.convert_to_numpy(loss_weights(terms, [job, job], side)[0]) for side in (params.sides()[0], SIZE)
    )
    column = {type(term).__name__: k for k, term in enumerate(terms)}
    content, similarity = column["FeatureContent"], column["SelfSimilarity"]
    style, tv = column["Style"], column["TotalVariation"]
    np.testing.assert_allclose(coarse[:, content], 16.0)
    np.testing.assert_allclose(fine[:, content], 2.0)
    np.testing.assert_allclose(coarse[:, similarity], 16.0 * params.self_similarity_weight)
    np.testing.assert_allclose(coarse[:, [style, tv]], fine[:, [style, tv]])  # style and TV weights do not move
