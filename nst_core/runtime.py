"""What the flows and the CLI need to know about the backend, without naming TensorFlow or JAX
themselves: which one runs, its version, the device, whether an error is out-of-memory, and
loading it (quietly, or with the install to make when none is there).

nst_core/backend.py holds the compute seam (gradients, compilation); this module imports
Keras only when asked, so `load()` can choose the backend before Keras does.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from importlib import metadata

INSTALL_HINT = (
    'no Keras backend is installed: pip install "nst-pipeline[tensorflow]" (the default), '
    '"nst-pipeline[jax]" (CPU) or "nst-pipeline[jax-cuda]" (NVIDIA GPU)'
)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # an import hook that refuses it, or a half-removed module
        return False


def choose() -> None:
    """Use JAX when KERAS_BACKEND is unset and only JAX is installed (`pip install "nst-pipeline[jax]"`),
    where Keras would otherwise pick TensorFlow and fail to import it. nst_core/__init__.py calls it."""
    if "KERAS_BACKEND" not in os.environ and not _installed("tensorflow") and _installed("jax"):
        os.environ["KERAS_BACKEND"] = "jax"


def load() -> str:
    """Choose and import the backend; returns its name. TensorFlow's C++ start-up banner (absl, oneDNN)
    reaches stderr during its import whatever TF_CPP_MIN_LOG_LEVEL says, so fd 2 is muted meanwhile.
    A missing backend is a RuntimeError naming the extra to install."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import keras
    except ImportError as error:
        raise RuntimeError(f"{INSTALL_HINT} ({error})") from None
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    return keras.backend.backend()


def name() -> str:
    from nst_core import backend

    return backend.NAME


def version() -> str | None:
    """The installed version of the backend's package (jax, or tensorflow / tensorflow-cpu)."""
    packages = ("jax",) if name() == "jax" else ("tensorflow", "tensorflow-cpu")
    for package in packages:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return None


def device() -> str:
    """The device the core computes on, as the results table records it: the first GPU, or CPU."""
    from nst_core import backend

    gpus = backend.gpu_names()
    return gpus[0] if gpus else "CPU"


def is_out_of_memory(error: BaseException) -> bool:
    """TensorFlow's ResourceExhaustedError, or JAX's runtime error with status RESOURCE_EXHAUSTED."""
    if name() == "jax":
        import jax

        return isinstance(error, jax.errors.JaxRuntimeError) and "RESOURCE_EXHAUSTED" in str(error)
    import tensorflow as tf

    return isinstance(error, tf.errors.ResourceExhaustedError)


def physical_gpu_count() -> int:
    """GPUs on this machine, without claiming their memory (for placing one worker per GPU)."""
    if name() == "jax":
        # jax.devices() would start XLA here, which reserves 75% of every GPU's memory by default;
        # the driver lists its GPUs without that.
        gpus = "/proc/driver/nvidia/gpus"
        return len(os.listdir(gpus)) if os.path.isdir(gpus) else 0
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))
