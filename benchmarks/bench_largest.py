"""The largest square image that fits on the device in one pass (one scale, one image).

Tries one compiled L-BFGS step (forward, input gradient, update: what a pair holds in
memory at once) at --start px, doubling until the backend runs out of memory or
--max-side is reached, then bisects between the last size that fitted and the first
that did not, to a multiple of --step px. Stops searching at --seconds and says so.
Features in the precision the product would use here (NST_PRECISION, auto: bfloat16 on
a GPU). Under JAX a process may use XLA_PYTHON_CLIENT_MEM_FRACTION of the GPU (0.75 by
default), so that is the memory measured against.

Usage: python benchmarks/bench_largest.py [--start 512] [--max-side 8192] [--step 256] [--seconds 150]
"""

from __future__ import annotations

import argparse
import os
import time

from bench_core import SHARED, seconds_per_step

from nst_core import backend, runtime


def fits(weights: str, side: int, dtype: str) -> bool:
    try:
        seconds_per_step(weights, "vgg16", side, jit=False, steps=1, precision=dtype)
    except Exception as error:  # noqa: BLE001 - anything but the backend's out-of-memory is a real failure
        if runtime.is_out_of_memory(error):
            return False
        raise
    return True


def largest_side(weights: str, start: int, max_side: int, step: int, seconds: float, dtype: str):
    """(largest side that fitted or None, smallest that ran out of memory or None)."""
    deadline = time.monotonic() + seconds
    fitted, failed, side = None, None, start
    while side <= max_side and time.monotonic() < deadline:  # doubling
        if not fits(weights, side, dtype):
            failed = side
            break
        print(f"{side} px: fits", flush=True)
        fitted, side = side, side * 2
    while fitted and failed and failed - fitted > step and time.monotonic() < deadline:  # bisection
        middle = (fitted + failed) // 2 // step * step
        if fits(weights, middle, dtype):
            fitted = middle
        else:
            failed = middle
        print(f"{middle} px: {'fits' if fitted == middle else 'out of memory'}", flush=True)
    return fitted, failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=os.environ.get("NST_WEIGHTS") or str(SHARED))
    parser.add_argument("--start", type=int, default=512)
    parser.add_argument(
        "--max-side", type=int, default=8192, help="stop doubling here (a CPU's RAM takes long to fill)"
    )
    parser.add_argument("--step", type=int, default=256, help="resolution of the bisection, px")
    parser.add_argument("--seconds", type=float, default=150, help="time limit of the search")
    args = parser.parse_args()
    dtype = backend.feature_dtype()
    print(f"{runtime.name()} {runtime.version()} on {runtime.device()}, {dtype} features, VGG16, one image")
    fitted, failed = largest_side(args.weights, args.start, args.max_side, args.step, args.seconds, dtype)
    if fitted is None:
        print(
            f"largest side in one pass: under {args.start} px (out of memory there)"
            if failed
            else "largest side in one pass: not measured, the time limit came first"
        )
    elif failed is None:
        print(
            f"largest side in one pass: at least {fitted} px (the --max-side cap or the time limit stopped "
            "the search, not the device)"
        )
    else:
        cut = "" if failed - fitted <= args.step else "; the time limit cut the bisection short"
        print(f"largest side in one pass: {fitted} px (out of memory at {failed} px{cut})")


if __name__ == "__main__":
    main()
