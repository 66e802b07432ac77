"""Neural style transfer on Keras 3: TensorFlow by default, JAX where only JAX is installed."""

from nst_core import runtime as _runtime

# Before any module here imports Keras, which would otherwise default to TensorFlow
# on an install with only the [jax] extra.
_runtime.choose()
