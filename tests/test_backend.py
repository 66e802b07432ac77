"""The backend seam (TensorFlow or JAX) and the feature precision."""

import os
import subprocess
import sys

import numpy as np
import pytest
from keras import ops

from conftest import NO_TENSORFLOW, REPO, SAMPLES
from nst_core import backend, runtime
from nst_core.image_io import load_image
from nst_core.params import StyleParams
from nst_core.storage import LOCAL
from nst_core.stylize import stylize
from nst_core.targets import style_load_side


@pytest.mark.backends
def test_the_core_does_not_import_tensorflow_on_jax():
    """A GPU image with JAX but no TensorFlow can run the core."""
    check = (
        "import sys, nst_core.stylize, nst_core.image_io, nst_core.grid; "
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'"
    )
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    done = subprocess.run([sys.executable, "-c", check], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.backends
def test_the_backends_out_of_memory_error_is_recognised():
    """TensorFlow's ResourceExhaustedError or JAX's RESOURCE_EXHAUSTED, from a real 4 TiB allocation."""
    import keras

    with pytest.raises(Exception) as raised:
        keras.ops.zeros((2**40,))
    assert runtime.is_out_of_memory(raised.value), repr(raised.value)
    assert not runtime.is_out_of_memory(RuntimeError("RESOURCE_EXHAUSTED"))  # only the backend's own error
    assert not runtime.is_out_of_memory(MemoryError())


def _without_tensorflow(code: str, **env) -> subprocess.CompletedProcess:
    """`python -c code` in a process that cannot import TensorFlow (tests/no_tensorflow)."""
    environ = {key: value for key, value in os.environ.items() if key != "KERAS_BACKEND"}
    environ["PYTHONPATH"] = os.pathsep.join([str(NO_TENSORFLOW), str(REPO)])
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env={**environ, **env}, capture_output=True, text=True, timeout=120
    )


@pytest.mark.backends
def test_without_tensorflow_jax_is_chosen_and_without_either_the_cli_names_the_extras():
    chosen = _without_tensorflow("import os, nst_core; print(os.environ['KERAS_BACKEND'])")
    assert chosen.returncode == 0 and chosen.stdout.strip() == "jax", chosen.stderr[-2000:]
    # Asked for TensorFlow where it is missing: the one-line reason says what to install.
    cli = _without_tensorflow(
        "import sys; from flows.cli import main; sys.exit(main(['stylize', 'a.jpg', 'b.jpg', '-o', 'c.png']))",
        KERAS_BACKEND="tensorflow",
    )
    lines = cli.stderr.strip().splitlines()
    assert cli.returncode == 2 and len(lines) == 1, cli.stderr[-2000:]
    assert lines[0].startswith("nst: no Keras backend is installed") and '"nst-pipeline[jax]"' in lines[0]


@pytest.mark.backends
def test_precision_is_float32_on_a_cpu_without_bfloat16_unless_asked():
    if backend.has_gpu():
        pytest.skip("a GPU is present: auto means bfloat16 here")
    native = backend.NAME == "tensorflow" and backend.cpu_has_bfloat16()
    assert backend.feature_dtype("auto") == ("bfloat16" if native else "float32")
    assert backend.feature_dtype("bfloat16") == "bfloat16"
    with pytest.raises(ValueError, match="NST_PRECISION must be one of auto, float32, bfloat16"):
        backend.feature_dtype("float8")


@pytest.mark.slow
@pytest.mark.skipif(
    backend.NAME == "jax",
    reason="under JAX bfloat16 runs on a GPU only (auto is float32 on a CPU), and XLA's CPU bfloat16 "
    "convolutions, summing in bfloat16, are not what a GPU computes: total loss 11% off after 40 steps",
)
def test_bfloat16_features_keep_the_final_losses(weights_path, monkeypatch):
    """Mixed precision changes the pixels a little, not the quality: final losses within 5%, the
    defaults run to their end at 128 px. (A snapshot of a loss still falling steeply, such as 40 steps
    at style_weight 500, moves by 5-14% either way with any change to the path; at 64 px, too coarse
    for VGG's deep layers, bfloat16 ends 12% above; at 256 px the independent measure rates the two
    alike, docs/benchmarks.md.)"""
    params = StyleParams(size=128, init="content")  # the start these tolerances were measured from
    content = load_image(str(SAMPLES / "content" / "chelsea.jpg"), LOCAL, max_side=128)
    style = load_image(str(SAMPLES / "styles" / "starry_night.jpg"), LOCAL, max_side=style_load_side(128, params))
    results = {}
    for precision in ("float32", "bfloat16"):
        monkeypatch.setenv("NST_PRECISION", precision)
        results[precision] = stylize(content, [style], params, weights=weights_path)
    full, mixed = results["float32"], results["bfloat16"]
    assert (mixed.image != full.image).any()  # bfloat16 really ran
    numbers = {
        name: (getattr(full, name), getattr(mixed, name)) for name in ("total_loss", "content_loss", "style_loss")
    }
    for f32, bf16 in numbers.values():
        assert bf16 == pytest.approx(f32, rel=0.05), numbers


@pytest.mark.backends
def test_the_targets_features_are_the_steps(weights_path):
    """Objective.measure (compiled on its own under JAX) gives the features the step computes."""
    from nst_core.objective import compiled_objective

    objective, _ = compiled_objective(StyleParams(size=32), weights_path)
    images = np.random.default_rng(0).random((2, 32, 40, 3), np.float32)
    names = objective.params.content_layers + objective.params.style_layers
    for measured, traced in zip(objective.measure(images, names).values(), objective.features(images, names).values()):
        traced = ops.convert_to_numpy(traced)  # float rounding: to 1e-5 of the layer's largest feature
        np.testing.assert_allclose(ops.convert_to_numpy(measured), traced, rtol=0, atol=1e-5 * np.abs(traced).max())


TINY_STYLIZE = (
    "import numpy as np; from nst_core.params import StyleParams; from nst_core.stylize import stylize; "
    "noise = np.random.default_rng(0).random((32, 32, 3), np.float32); "
    "stylize(noise, [noise[::-1]], StyleParams(size=32, iterations=2, tolerance=0))"
)
CACHE_FOLDER = "import jax, nst_core.backend; print(jax.config.jax_compilation_cache_dir or 'none')"


@pytest.mark.backends
def test_jax_keeps_compiled_programs_for_the_next_run_unless_told_not_to(tmp_path, weights_path):
    """Under JAX a run leaves what it compiled in NST_JAX_CACHE (default ~/.cache/nst/jax) for the next
    run to load; `off` keeps nothing, and JAX's own JAX_COMPILATION_CACHE_DIR wins."""
    if backend.NAME != "jax":
        pytest.skip("JAX's compilation cache: the JAX line of `make test` runs this")
    home, defaults = tmp_path / "home", {"NST_JAX_CACHE": "", "JAX_COMPILATION_CACHE_DIR": ""}  # "": unset
    run = _without_tensorflow(TINY_STYLIZE, HOME=str(home), NST_WEIGHTS=weights_path, **defaults)
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(list((home / ".cache" / "nst" / "jax").iterdir())) > 1  # the step, the VGG passes, ...
    off = _without_tensorflow(CACHE_FOLDER, **{**defaults, "NST_JAX_CACHE": "off"})
    assert off.returncode == 0 and off.stdout.strip() == "none", off.stderr[-2000:]
    theirs = _without_tensorflow(CACHE_FOLDER, NST_JAX_CACHE=str(tmp_path), JAX_COMPILATION_CACHE_DIR="/their/cache")
    assert theirs.returncode == 0 and theirs.stdout.strip() == "/their/cache", theirs.stderr[-2000:]


@pytest.mark.backends
@pytest.mark.parametrize("kind", ["pooling", "convolution"])
def test_the_faster_layers_give_the_keras_layers_values_and_input_gradients(kind):
    """backend.faster_layer's swaps (under JAX) against the Keras layers they replace, on odd sides."""
    import keras

    rng = np.random.default_rng(0)
    if kind == "pooling":
        layer, out_shape = keras.layers.MaxPooling2D(), (2, 3, 4, 5)
    else:
        layer, out_shape = keras.layers.Conv2D(5, 3, padding="same", activation="relu"), (2, 7, 9, 5)
        layer.build((None, None, None, 5))
        layer.set_weights([rng.normal(size=(3, 3, 5, 5)).astype("float32"), rng.normal(size=5).astype("float32")])
    faster = backend.faster_layer(layer)
    assert (faster is layer) == (backend.NAME == "tensorflow")
    images = ops.convert_to_tensor(rng.normal(size=(2, 7, 9, 5)).astype("float32"))
    weights = ops.convert_to_tensor(rng.random(out_shape).astype("float32"))

    def value_and_input_gradient(layer):
        (total, _), gradient = backend.value_and_grad(lambda x: (ops.sum(layer(x) * weights), ()))(images)
        return float(total), ops.convert_to_numpy(gradient)

    (total, gradient), (expected_total, expected_gradient) = map(value_and_input_gradient, (faster, layer))
    np.testing.assert_allclose(ops.convert_to_numpy(faster(images)), ops.convert_to_numpy(layer(images)), atol=1e-5)
    assert total == pytest.approx(expected_total, rel=1e-5)
    np.testing.assert_allclose(gradient, expected_gradient, atol=1e-5)
