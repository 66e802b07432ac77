"""The VGG feature extractor: weights resolution, architecture inference, layer cuts."""

import keras
import numpy as np
import pytest

from nst_core import model
from nst_core.model import WeightsError, feature_extractor, infer_arch


@pytest.fixture(scope="module")
def vgg19_weights_file(tmp_path_factory):
    """A VGG19-shaped weights file (random values): enough to test inference."""
    path = tmp_path_factory.mktemp("weights") / "vgg19_random.weights.h5"
    keras.applications.VGG19(include_top=False, weights=None).save_weights(str(path))
    return str(path)


def test_arch_is_inferred_from_the_weights_file(weights_path, vgg19_weights_file):
    if weights_path == "imagenet":
        pytest.skip("no local weights file")
    assert infer_arch(weights_path) == "vgg16"
    assert infer_arch(vgg19_weights_file) == "vgg19"


def test_weights_that_do_not_match_the_arch_say_which_arch(vgg19_weights_file):
    with pytest.raises(WeightsError, match="holds VGG19 weights, but arch is vgg16; pass --arch vgg19"):
        feature_extractor("vgg16", vgg19_weights_file, ("block1_conv1",))


def test_a_file_that_is_not_vgg_weights_is_named(tmp_path):
    bogus = tmp_path / "notes.h5"
    bogus.write_text("not hdf5")
    with pytest.raises(WeightsError, match="notes.h5: cannot read VGG weights"):
        infer_arch(str(bogus))


def test_offline_without_a_file_explains_how_to_pass_one(monkeypatch, tmp_path):
    """No internet here: Keras' download fails, and the error says what to do."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # no cached download
    monkeypatch.delenv(model.WEIGHTS_ENV, raising=False)
    try:
        feature_extractor("vgg19", None, ("block1_conv1",))
    except WeightsError as error:
        assert "--weights PATH" in str(error) and "NST_WEIGHTS" in str(error)
    else:
        pytest.skip("this machine can download the ImageNet weights")


def test_weights_come_from_the_environment(monkeypatch):
    monkeypatch.setenv(model.WEIGHTS_ENV, "/some/file.h5")
    assert model.resolve_weights(None) == "/some/file.h5"
    assert model.resolve_weights("other.h5") == "other.h5"
    monkeypatch.delenv(model.WEIGHTS_ENV)
    assert model.resolve_weights(None) == "imagenet"


def test_layers_are_selected_and_the_network_is_cut_at_the_deepest(vgg19_weights_file):
    extract = feature_extractor("vgg19", vgg19_weights_file, ("block2_conv1", "block1_conv1"))
    feats = extract(np.zeros((1, 32, 48, 3)))
    assert [tuple(f.shape) for f in feats] == [(1, 16, 24, 128), (1, 32, 48, 64)]
    built = model._extractor("vgg19", vgg19_weights_file, ("block2_conv1", "block1_conv1"), "max")
    assert built.layers[-1].name == "block2_conv1"  # nothing deeper is computed
    with pytest.raises(ValueError, match="unknown vgg19 layer"):
        feature_extractor("vgg19", vgg19_weights_file, ("block9_conv1",))


def test_the_model_is_built_once_per_process(vgg19_weights_file):
    model._extractor.cache_clear()
    for _ in range(3):
        feature_extractor("vgg19", vgg19_weights_file, ("block1_conv1",))
    assert model._extractor.cache_info().misses == 1


def test_average_pooling_replaces_max_pooling(vgg19_weights_file):
    layers = ("block2_conv1",)
    built = model._extractor("vgg19", vgg19_weights_file, layers, "avg")
    kinds = {type(layer).__name__ for layer in built.layers}
    assert "AveragePooling2D" in kinds and "MaxPooling2D" not in kinds
    image = np.random.default_rng(0).random((1, 16, 16, 3)).astype(np.float32)
    maxed = feature_extractor("vgg19", vgg19_weights_file, layers, "max")(image)[0]
    averaged = feature_extractor("vgg19", vgg19_weights_file, layers, "avg")(image)[0]
    assert not np.allclose(maxed, averaged)
