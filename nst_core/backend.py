"""The only backend-specific code: gradients, compilation (and keeping what JAX compiled between
runs), building a model whose weights are loaded, and the feature precision.

Everything else is written in `keras.ops` and runs on TensorFlow (the default) or
JAX (`KERAS_BACKEND=jax`, e.g. a GPU image with JAX but no TensorFlow).
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Callable

import keras
import numpy as np
from keras import ops

from .settings import settings

NAME = keras.backend.backend()
PRECISIONS = ("auto", "float32", "bfloat16")


def _keep_compiled_programs() -> None:
    """JAX's persistent compilation cache in NST_JAX_CACHE, so that a rerun (a nightly run) loads what
    it compiled before instead of compiling it again: the steps (seconds per image size) and the
    operations of the targets and model building. JAX_COMPILATION_CACHE_DIR, when set, stays."""
    import jax

    folder = settings().jax_cache
    if folder == "off" or jax.config.jax_compilation_cache_dir:
        return
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(folder))
    # Every program, not only those over JAX's default of 1 s: the eager operations of each new
    # image size compile in 0.02-0.4 s each, seconds in all.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


if NAME == "jax":
    _keep_compiled_programs()


def value_and_grad(loss_fn: Callable) -> Callable:
    """`loss_fn(x, *args) -> (total, aux)` to `f(x, *args) -> ((total, aux), d total / d x)`."""
    if NAME == "jax":
        import jax

        return jax.value_and_grad(loss_fn, has_aux=True)
    import tensorflow as tf

    def with_gradient(x, *args):
        with tf.GradientTape() as tape:
            tape.watch(x)
            total, aux = loss_fn(x, *args)
        return (total, aux), tape.gradient(total, x)

    return with_gradient


def compile(step_fn: Callable, variables=()) -> Callable:  # noqa: A001 - the backend's verb
    """`step_fn` compiled: under JAX once per input shape, under TensorFlow for the first shapes only
    (compiles()).

    Under JAX the model `variables` are passed in as arguments, not baked into the
    program as constants (docs/benchmarks.md: compile time).
    """
    if NAME == "jax":
        import jax

        def with_values(values, *args):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return step_fn(*args)

        compiled = jax.jit(with_values)
        return lambda *args: compiled([v.value for v in variables], *args)
    import tensorflow as tf

    # XLA compiles each image shape anew and measured slower on a CPU (bench_core): NST_JIT=1 turns it on.
    # reduce_retracing: a new shape is traced once more with what changed left free, and that graph
    # serves every later shape; a trace took 1.2-1.6 s of a 2-core CPU, 4 per 512 px pair.
    return tf.function(step_fn, jit_compile=settings().jit, reduce_retracing=True)


# Traces before TensorFlow's step has a graph for every shape: one at the first shape, then one as each
# of the batch, the height and the width first changes (XLA, NST_JIT=1, still compiles every shape).
_TENSORFLOW_TRACES = 4


def compiles(shapes: int) -> int:
    """How many times compile()'s step has compiled once it has seen `shapes` different input shapes."""
    return shapes if NAME == "jax" or settings().jit else min(shapes, _TENSORFLOW_TRACES)


def compile_under_jax(fn: Callable, variables=()) -> Callable:
    """`fn`, called outside a compiled step, as one program per input shape under JAX, where each of
    its eager operations would otherwise compile on its own for every new shape (VGG's forward pass:
    about 40 for each style or content size); unchanged under TensorFlow, whose eager operations
    need no compiling."""
    return compile(fn, variables) if NAME == "jax" else fn


def building_loaded_model():
    """For building a model whose weights are replaced from a file at once: under JAX, Keras'
    random initial weights compile a random generator for each kernel shape (VGG's eight took 9 s
    of a 2-core CPU), which the older, unpartitionable threefry compiles in a third of the time.
    Nothing under TensorFlow, whose random operations need no compiling."""
    if NAME == "jax":
        import jax

        return jax.threefry_partitionable(False)
    return contextlib.nullcontext()


class _PairMaxPooling(keras.layers.Layer):
    """2 x 2 max pooling, stride 2, no padding, as the maximum over a reshape."""

    def call(self, x):
        height, width = x.shape[1] // 2, x.shape[2] // 2
        pairs = ops.reshape(x[:, : 2 * height, : 2 * width], (-1, height, 2, width, 2, x.shape[3]))
        return ops.max(pairs, axis=(2, 4))

    def compute_output_shape(self, shape):
        return (shape[0], *(None if side is None else side // 2 for side in shape[1:3]), shape[3])


@functools.cache
def _convolution_with_stored_flip() -> Callable:
    """JAX: `f(x, kernel, flipped)`, a stride 1, "same" convolution whose input gradient convolves with
    `flipped` (the kernel reversed in space, input and output channels swapped). No gradient for
    the kernel: the network is frozen."""
    import jax
    from jax import lax

    def convolve(x, kernel):
        return lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    @jax.custom_vjp
    def convolution(x, kernel, flipped):
        return convolve(x, kernel)

    def forward(x, kernel, flipped):
        return convolve(x, kernel), flipped

    def backward(flipped, gradient):
        return convolve(gradient, flipped), None, None

    convolution.defvjp(forward, backward)
    return convolution


class _StoredFlipConv(keras.layers.Layer):
    """A frozen Conv2D (stride 1, "same", odd kernel) that keeps its kernel flipped as a second weight."""

    def __init__(self, conv: keras.layers.Conv2D):
        super().__init__(name=conv.name, dtype=conv.dtype_policy)
        self.conv = conv
        flipped = np.ascontiguousarray(np.flip(ops.convert_to_numpy(conv.kernel), (0, 1)).swapaxes(2, 3))
        self.flipped = self.add_weight(
            shape=flipped.shape, initializer=lambda shape, dtype=None: flipped, trainable=False, name="flipped_kernel"
        )

    def call(self, x):
        kernel, flipped = ops.convert_to_tensor(self.conv.kernel), ops.convert_to_tensor(self.flipped)
        return self.conv.activation(_convolution_with_stored_flip()(x, kernel, flipped) + self.conv.bias)

    def compute_output_shape(self, shape):
        return self.conv.compute_output_shape(shape)


def faster_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
    """A frozen VGG `layer` with the same values and input gradient, in the form whose gradient this
    backend computes fastest. Under JAX (XLA on a 2-core CPU; docs/benchmarks.md):
    - max pooling (2 x 2, stride 2) as the maximum over a reshape: the gradient of Keras' pooling
      (reduce_window) compiles to a scatter, a fifth of an L-BFGS step, the reshape's is
      elementwise (8% less CPU time per step; the gradient differs only where a window's largest
      values tie);
    - a convolution with a stored copy of its kernel flipped for the input gradient, which XLA
      otherwise copies out of the kernel in every step, a sixth of it (14% less; VGG16: 38 MB more).
    TensorFlow's layers are kept."""
    if NAME != "jax":
        return layer
    if isinstance(layer, keras.layers.MaxPooling2D):
        if layer.pool_size == layer.strides == (2, 2) and layer.padding == "valid":
            return _PairMaxPooling(name=layer.name, dtype=layer.dtype_policy)
    elif isinstance(layer, keras.layers.Conv2D):
        plain = layer.strides == layer.dilation_rate == (1, 1) and layer.groups == 1 and layer.use_bias
        if plain and layer.padding == "same" and all(side % 2 for side in layer.kernel_size):
            return _StoredFlipConv(layer)
    return layer


def gpu_names() -> list[str]:
    """The GPUs the backend computes on, by the backend's own names."""
    if NAME == "jax":
        import jax

        return [f"{d.platform}:{d.id} {d.device_kind}" for d in jax.devices() if d.platform == "gpu"]
    import tensorflow as tf

    return [device.name for device in tf.config.list_logical_devices("GPU")]


def has_gpu() -> bool:
    return bool(gpu_names())


def cpu_has_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512_BF16 or AMX_BF16 among /proc/cpuinfo's flags)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def feature_dtype(precision: str | None = None) -> str:
    """The dtype VGG computes its features in: bfloat16 on a GPU, and on a CPU with bfloat16
    instructions under TensorFlow (oneDNN: 1.8x the pairs per hour, the independent style
    measure no worse; JAX's XLA runs them slowly on a CPU); float32 elsewhere unless asked for."""
    precision = precision or settings().precision
    if precision not in PRECISIONS:
        raise ValueError(f"NST_PRECISION must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bfloat16" if has_gpu() or (NAME == "tensorflow" and cpu_has_bfloat16()) else "float32"
    return precision
