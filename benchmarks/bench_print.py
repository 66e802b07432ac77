"""Print sizes: peak memory against nst_core.memory's model, and time per step and per pair.

Each measurement runs in a fresh process (peak resident memory is a high-water mark), on
chelsea (3:2) against starry_night, VGG weights from $NST_WEIGHTS:
- --memory SIZES: one scale, --steps L-BFGS steps, in one pass (SIZE) or in tiles (SIZE/TILE px);
  prints measured and predicted peak and seconds per step and per megapixel-step;
- --fit: the model's constants, least squares over the one-pass rows just measured;
- --pair SIZE: a whole pair with --scales and --iterations/--coarse-iterations, planned by
  the model within --limit-gb: seconds, seconds per megapixel, peak memory.

Usage: python benchmarks/bench_print.py --memory 256,512,1024,2048,1024/256,2048/512 [--steps 3] [--fit]
       python benchmarks/bench_print.py --pair 4096 --scales 512,724,1024,1448,2048,2896 --iterations 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

SAMPLES = REPO / "manifests" / "samples"


def measure(args) -> dict:
    """One run in this process: seconds, seconds per step after the first, peak RSS."""
    from nst_core import memory
    from nst_core.image_io import load_image
    from nst_core.params import StyleParams
    from nst_core.storage import LOCAL
    from nst_core.stylize import scale_shapes, stylize

    content = load_image(str(SAMPLES / "content" / "chelsea.jpg"), LOCAL)
    style = load_image(str(SAMPLES / "styles" / "starry_night.jpg"), LOCAL)
    params = StyleParams(
        size=args.size,
        iterations=args.iterations,
        tolerance=0.0,
        scales=tuple(args.scales),
        coarse_iterations=args.coarse_iterations,
    )
    limit = memory.default_limit_bytes()
    shapes = scale_shapes(content.shape, params)
    plans = memory.plan_pair(shapes, 1, limit, "vgg16")
    stamps = []
    started = time.perf_counter()

    def progress(scale_index, side, step, image):
        stamps.append(time.perf_counter())
        print(
            f"{args.size} px: scale {side} px, step {step.iteration}, {stamps[-1] - started:.0f} s, "
            f"resident {_resident_gb():.2f} GB, peak {_peak_gb():.2f} GB",
            file=sys.stderr,
            flush=True,
        )

    result = stylize(content, [style], params, callback=progress)
    seconds = time.perf_counter() - started
    final = [t - s for s, t in zip(stamps[-args.iterations :], stamps[-args.iterations + 1 :])]
    height, width = result.image.shape[:2]
    return {
        "size": args.size,
        "height": height,
        "width": width,
        "tiles": [p.tile for p in plans],
        "predicted_gb": max(p.bytes for p in plans) / 2**30,
        "seconds": seconds,
        "step_seconds": float(np.median(final)) if final else None,
        "loss": result.total_loss,
        "peak_gb": _peak_gb(),
    }


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30


def _resident_gb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 2**20


def child(size: int, args, extra: list[str]) -> dict:
    """measure() in a fresh process."""
    command = [sys.executable, __file__, "--measure", str(size), *extra]
    env = {
        **os.environ,
        **({"NST_TILE": str(args.tile)} if args.tile else {}),
        **({"NST_MEMORY_LIMIT_GB": str(args.limit_gb)} if args.limit_gb else {}),
    }  # the plan stylize makes
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=env, check=False)  # progress: stderr
    if done.returncode:
        raise SystemExit(f"{size} px failed")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(rows: list[dict]) -> None:
    print(
        "| size | pixels | tiles | predicted peak | measured peak | ratio | s/step | s/MP-step | seconds |\n"
        "|---|---|---|---|---|---|---|---|---|"
    )
    for row in rows:
        megapixels = row["height"] * row["width"] / 1e6
        step = row["step_seconds"]
        print(
            f"| {row['size']} | {row['width']} x {row['height']} | {row['tiles']} | {row['predicted_gb']:.2f} GB "
            f"| {row['peak_gb']:.2f} GB | {row['predicted_gb'] / row['peak_gb']:.2f} "
            f"| {step:.2f} | {step / megapixels:.2f} | {row['seconds']:.0f} |"
            if step
            else f"| {row['size']} | {row['width']} x {row['height']} | {row['tiles']} | {row['predicted_gb']:.2f} GB "
            f"| {row['peak_gb']:.2f} GB | - | - | {row['seconds']:.0f} |",
            flush=True,
        )


def fit(rows: list[dict]) -> None:
    """The model's constants by least squares on relative error (each size counts alike): from
    one-pass rows, peak - L-BFGS history = BASE + PASS * pixels; from tiled rows, peak - BASE -
    history = TILE_PASS * tile's pixels with halo + WHOLE_IMAGE * pixels."""
    from nst_core.optimize import LBFGS_HISTORY
    from nst_core.tiling import HALO, PRINT_HISTORY

    whole = [r for r in rows if r["tiles"][-1] is None]
    pixels = np.array([r["height"] * r["width"] for r in whole], float)
    peaks = np.array([r["peak_gb"] * 2**30 for r in whole])
    (base, per_pixel), *_ = np.linalg.lstsq(
        np.stack([np.ones_like(pixels), pixels], 1) / peaks[:, None],
        (peaks - 2 * LBFGS_HISTORY * pixels * 12) / peaks,
        rcond=None,
    )
    print(f"\none pass, {len(whole)} sizes: BASE_BYTES = {base:.3g}, PASS_BYTES_PER_PIXEL = {per_pixel:.0f}")
    tiled = [r for r in rows if r["tiles"][-1] is not None]
    if len(tiled) < 2:
        return
    pixels = np.array([r["height"] * r["width"] for r in tiled], float)
    outer = np.array(
        [min(r["height"], r["tiles"][-1] + 2 * HALO) * min(r["width"], r["tiles"][-1] + 2 * HALO) for r in tiled], float
    )
    peaks = np.array([r["peak_gb"] * 2**30 for r in tiled])
    (tile_pass, whole_image), *_ = np.linalg.lstsq(
        np.stack([outer, pixels], 1) / peaks[:, None],
        (peaks - base - 2 * PRINT_HISTORY * pixels * 12) / peaks,
        rcond=None,
    )
    print(
        f"in tiles, {len(tiled)} runs: TILE_PASS_BYTES_PER_PIXEL = {tile_pass:.0f}, "
        f"WHOLE_IMAGE_BYTES_PER_PIXEL = {whole_image:.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory", help="comma-separated SIZE or SIZE/TILE, one scale each")
    parser.add_argument("--pair", type=int, help="one whole pair at this size")
    parser.add_argument("--measure", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--tile", type=int, help="--pair: force tiles of this many px (NST_TILE)")
    parser.add_argument("--scales", default="")
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--coarse-iterations", type=int, default=None)
    parser.add_argument("--limit-gb", type=float, help="the memory limit the plan keeps within")
    parser.add_argument("--fit", action="store_true")
    args = parser.parse_args()
    args.scales = [int(s) for s in args.scales.split(",") if s]
    if args.measure:
        args.size, args.iterations = args.measure, args.iterations or args.steps
        args.coarse_iterations = args.coarse_iterations or args.iterations
        print(json.dumps(measure(args)))
        return
    passthrough = ["--steps", str(args.steps)]
    for name in ("iterations", "coarse_iterations", "limit_gb"):
        if getattr(args, name) is not None:
            passthrough += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    if args.pair:
        report([child(args.pair, args, passthrough + ["--scales", ",".join(map(str, args.scales))])])
        return
    rows = []
    for spec in args.memory.split(","):  # SIZE, or SIZE/TILE for a run in tiles of TILE px
        size, _, tile = spec.partition("/")
        args.tile = int(tile) if tile else None
        rows.append(child(int(size), args, passthrough))
        report(rows[-1:])
    if args.fit:
        fit(rows)


if __name__ == "__main__":
    main()
