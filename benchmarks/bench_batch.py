"""Pairs per hour, one at a time against batched (nst_core.stylize_batch), at the defaults.

For each size, N content x style pairs of one output size (square crops of the sample
photos, each with a different painting; real VGG16 weights) are stylized with the
default parameters twice in this run: one stylize() call per pair, then one
stylize_batch() call for all N. Each way is compiled just before its clock starts.
Printed per size: seconds per pair, pairs per hour and the ratio, the steps taken
(a batch steps until its slowest pair stops; pairs that stopped earlier ride along),
the mean final loss of each way (the same quality: within a few percent), and the
process's peak memory after each way (so the batch's is the larger of the two).

Usage: python benchmarks/bench_batch.py [--sizes 256,512] [--pairs 4] [--iterations N]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from bench_core import SAMPLES, SHARED  # noqa: E402

from nst_core import backend  # noqa: E402
from nst_core.image_io import load_image  # noqa: E402
from nst_core.params import StyleParams  # noqa: E402
from nst_core.storage import LOCAL  # noqa: E402
from nst_core.stylize import Job, stylize, stylize_batch  # noqa: E402

PAIRS = [
    ("chelsea", "starry_night"),
    ("astronaut", "the_scream"),
    ("coffee", "shipwreck"),
    ("rocket", "starry_night"),
    ("chelsea", "the_scream"),
    ("astronaut", "shipwreck"),
    ("coffee", "starry_night"),
    ("rocket", "the_scream"),
]


def square(image: np.ndarray) -> np.ndarray:
    side = min(image.shape[:2])
    top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
    return image[top : top + side, left : left + side]


def jobs_at(side: int, count: int, params: StyleParams) -> list[Job]:
    return [
        Job(
            square(load_image(str(SAMPLES / "content" / f"{content}.jpg"), LOCAL)),
            [load_image(str(SAMPLES / "styles" / f"{style}.jpg"), LOCAL, max_side=side)],
            params,
        )
        for content, style in PAIRS[:count]
    ]


def peak_memory_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=os.environ.get("NST_WEIGHTS") or str(SHARED))
    parser.add_argument("--sizes", default="256,512")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=StyleParams.iterations)
    args = parser.parse_args()
    print(f"{backend.NAME}, {os.cpu_count()} CPU cores, {args.pairs} pairs per size, weights {args.weights}")
    print(
        "| size | way | s per pair | pairs per hour | speed-up | steps (per pair / run) | mean final loss "
        "| peak memory |\n|---|---|---|---|---|---|---|---|"
    )
    for side in (int(s) for s in args.sizes.split(",")):
        params = StyleParams(size=side, iterations=args.iterations)
        jobs = jobs_at(side, args.pairs, params)
        compile_params = params.replace(iterations=2)
        stylize(jobs[0].content, jobs[0].styles, compile_params, weights=args.weights)
        started = time.perf_counter()
        alone = [stylize(job.content, job.styles, job.params, weights=args.weights) for job in jobs]
        alone_seconds = (time.perf_counter() - started) / len(jobs)
        alone_memory = peak_memory_gb()

        stylize_batch([Job(j.content, j.styles, compile_params) for j in jobs], weights=args.weights)
        started = time.perf_counter()
        batched = stylize_batch(jobs, weights=args.weights)
        batched_seconds = (time.perf_counter() - started) / len(jobs)
        for way, results, seconds, memory in (
            ("one at a time", alone, alone_seconds, alone_memory),
            (f"batch of {len(jobs)}", batched, batched_seconds, peak_memory_gb()),
        ):
            steps = [r.iterations for r in results]
            run_steps = sum(steps) if results is alone else max(steps)
            print(
                f"| {side} | {way} | {seconds:.1f} | {3600 / seconds:.1f} | {alone_seconds / seconds:.2f}x "
                f"| {np.mean(steps):.0f} / {run_steps} | {np.mean([r.total_loss for r in results]):.4f} "
                f"| {memory:.1f} GB |",
                flush=True,
            )


if __name__ == "__main__":
    main()
