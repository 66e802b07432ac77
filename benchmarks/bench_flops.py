"""Achieved FLOP rate of an optimisation step against this machine's matrix-multiply rate.

The work of one step is the convolutions: the forward pass up to the deepest layer
the loss reads, and the input-gradient pass back through the same layers (the
weights are frozen, so no weight gradients are computed). Each 3x3 convolution
costs 2 * H * W * 9 * C_in * C_out FLOPs forward and the same again for its
input gradient; everything else (Gram matrices, pooling, the L-BFGS update) is
counted as overhead, not as useful work.

The practical peak is a large matrix product, timed in the same run on the same
backend (KERAS_BACKEND=jax on a GPU image without TensorFlow), in the precision the
steps compute their VGG features in (--precision: float32, or bfloat16 as a GPU does).

With --batches 1,4 each size is also timed on batches of images (nst_core.stylize_batch):
the work per step grows with the batch, and small images use the cores better in a batch.

Usage: python benchmarks/bench_flops.py [--sizes 128,256,512] [--steps 10] [--batches 1] [--precision bfloat16]
"""

from __future__ import annotations

import argparse
import time

import keras
from bench_core import random_vgg19_file, seconds_per_step
from keras import ops

from nst_core import backend
from nst_core.model import feature_extractor
from nst_core.params import StyleParams


def conv_flops_per_step(model: keras.Model, height: int, width: int) -> float:
    """Forward plus input-gradient FLOPs of every convolution in `model` at this input size."""
    flops = 0.0
    for layer in model.layers:
        if isinstance(layer, keras.layers.MaxPooling2D | keras.layers.AveragePooling2D):
            height, width = height // 2, width // 2
        if isinstance(layer, keras.layers.Conv2D):
            kernel_h, kernel_w, channels_in, channels_out = layer.kernel.shape
            flops += 2.0 * height * width * kernel_h * kernel_w * channels_in * channels_out
    return 2 * flops


def matmul_flops_per_second(n: int = 2048, repeats: int = 10, dtype: str = "float32") -> float:
    """The practical peak: the best of `repeats` n x n matrix products in `dtype`, compiled
    by the backend the steps use (TensorFlow, or XLA under JAX: float32 is TF32 on a recent GPU)."""
    a = keras.random.normal((n, n), dtype=dtype)
    product = backend.compile(lambda x: ops.matmul(x, x))
    ops.convert_to_numpy(product(a))
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        ops.convert_to_numpy(product(a)[0, 0])
        best = min(best, time.perf_counter() - started)
    return 2.0 * n**3 / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="128,256,512")
    parser.add_argument("--matmul-size", type=int, default=2048, help="n of the n x n peak product (8192 on a GPU)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batches", default="1", help="images per step, comma-separated")
    parser.add_argument(
        "--precision",
        default="float32",
        choices=("float32", "bfloat16"),
        help="of the VGG features and of the peak's matrix product",
    )
    args = parser.parse_args()

    weights = random_vgg19_file()  # timings do not depend on the weight values
    peak = matmul_flops_per_second(args.matmul_size, dtype=args.precision)
    print(f"{backend.NAME}: {args.precision} matmul peak ({args.matmul_size}^2, best of 10): {peak / 1e9:.1f} GFLOP/s")
    print("| size | batch | GFLOP per step | s per step | GFLOP/s | fraction of matmul peak |")
    print("|---|---|---|---|---|---|")
    defaults = StyleParams()
    model = feature_extractor("vgg19", weights, defaults.content_layers + defaults.style_layers, "max", "float32").model
    for side in (int(s) for s in args.sizes.split(",")):
        for batch in (int(b) for b in args.batches.split(",")):
            flops = batch * conv_flops_per_step(model, side, side)
            seconds = seconds_per_step(
                weights, "vgg19", side, jit=False, steps=args.steps, precision=args.precision, batch=batch
            )
            print(
                f"| {side} | {batch} | {flops / 1e9:.1f} | {seconds:.3f} | {flops / seconds / 1e9:.1f} | "
                f"{flops / seconds / peak:.0%} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
