"""Multi-scale schedules: the fewest pixel-iterations that reach full-resolution quality.

For a target size (default 512) and several content x style pairs (real VGG16
weights), runs the single-scale default (`iterations` 300 at `size`) as the
baseline, then coarse-to-fine schedules: `coarse_iterations` steps at each
coarser side (a fraction of the target: 1/2, or 1/4 then 1/2), then `iterations`
at the target, all from the default init and with the default stopping rule.

Cost is counted in pixel-iterations, sum over scales of H * W * steps taken,
which does not depend on the machine or its load; seconds are printed too.
Quality is the product's objective at full resolution at the end (total, and
its content and style parts). A schedule REACHES FULL-RESOLUTION QUALITY when its
final total loss is at most 2% above the baseline's, on every pair.

Shorter final phases are read off one run: the optimiser keeps the best image,
its stopping rule looks only at past steps, and runs are deterministic on CPU,
so the result after k final steps is the best loss among the first k steps of a
longer run with the same coarse phase. Seconds for a prefix are the run's
seconds per step at each scale times the steps.

Usage: python benchmarks/bench_schedule.py [--size 512] [--pairs 3] [--quick] [--out out/schedule]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from bench_core import REPO, SAMPLES, SHARED  # noqa: E402

from nst_core.image_io import load_image, save_image  # noqa: E402
from nst_core.params import StyleParams  # noqa: E402
from nst_core.storage import LOCAL  # noqa: E402
from nst_core.stylize import size_for, stylize  # noqa: E402

PAIRS = [("chelsea", "starry_night"), ("astronaut", "the_scream"), ("coffee", "shipwreck")]
LARGE_STYLES = REPO.parent / "shared" / "images" / "styles"
QUALITY_MARGIN = 0.02  # final total loss at most 2% above the single-scale baseline's
BASELINE_STEPS = 300  # the single-scale default before this benchmark
# (coarse sides as fractions of the target, coarse_iterations, final iterations of the longest run)
SCHEDULES = [((), 0, BASELINE_STEPS), ((0.5,), 100, 150), ((0.5,), 200, 150), ((0.25, 0.5), 100, 150)]
FINAL_PREFIXES = (50, 100, 150)
SINGLE_PREFIXES = (100, 150, 200, 300)


@dataclass
class Row:
    schedule: str
    megapixel_steps: float
    seconds: float
    total: float
    content: float
    style: float


def load_pair(content_name: str, style_name: str, side: int):
    """The 256 px samples up to 256 px; above, the shared paintings and scikit-image's photos."""
    if side <= 256:
        return (
            load_image(str(SAMPLES / "content" / f"{content_name}.jpg"), LOCAL, max_side=side),
            load_image(str(SAMPLES / "styles" / f"{style_name}.jpg"), LOCAL, max_side=side),
        )
    import skimage.data

    content = getattr(skimage.data, content_name)()[..., :3].astype(np.float32) / 255.0
    return content, load_image(str(LARGE_STYLES / f"{style_name}.jpg"), LOCAL, max_side=side)


def schedule_params(size: int, fractions, coarse_iterations: int, iterations: int) -> StyleParams:
    return StyleParams(
        size=size,
        scales=tuple(round(size * f) for f in fractions),
        coarse_iterations=coarse_iterations,
        iterations=iterations,
    )


def timed_run(content, style, params: StyleParams, weights: str):
    """stylize with per-step wall times; compiled at these sizes first so tracing is not counted."""
    stylize(content, [style], params.replace(iterations=2, coarse_iterations=2), weights=weights)
    stamps = []
    started = time.perf_counter()
    result = stylize(
        content,
        [style],
        params,
        weights=weights,
        callback=lambda scale, side, progress, image: stamps.append(time.perf_counter()),
    )
    step_seconds = np.diff([started] + stamps)
    return result, step_seconds


def prefix_row(label, result, step_seconds, pixels_per_scale, final_steps: int) -> Row:
    """The figures a run would have ended with had its final phase stopped after `final_steps` steps."""
    coarse = sum(result.scale_iterations[:-1])
    taken = min(final_steps, result.scale_iterations[-1])
    best = coarse + int(np.argmin(result.loss_history[coarse : coarse + taken]))
    steps = [*result.scale_iterations[:-1], taken]
    return Row(
        label,
        sum(p * s for p, s in zip(pixels_per_scale, steps)) / 1e6,
        float(step_seconds[: coarse + taken].sum()),
        result.loss_history[best],
        result.content_loss_history[best],
        result.style_loss_history[best],
    )


def measure_pair(content, style, size: int, weights: str, schedules, out: Path, name: str) -> list[Row]:
    rows = []
    for fractions, coarse_iterations, iterations in schedules:
        params = schedule_params(size, fractions, coarse_iterations, iterations)
        sides = (*params.scales, params.size)
        pixels = [np.prod(size_for(content.shape, side)) for side in sides]
        result, step_seconds = timed_run(content, style, params, weights)
        save_image(result.image, str(out / f"{name}-{'-'.join(map(str, sides))}-c{coarse_iterations}.png"), LOCAL)
        prefixes = FINAL_PREFIXES if params.scales else SINGLE_PREFIXES
        for final_steps in (p for p in prefixes if p <= iterations):
            label = " + ".join(f"{s}x{coarse_iterations}" for s in params.scales) + " + " if params.scales else ""
            rows.append(prefix_row(f"{label}{size}x{final_steps}", result, step_seconds, pixels, final_steps))
        print(f"  {name}: {rows[-1].schedule} done, steps per scale {result.scale_iterations}", flush=True)
    return rows


def baseline_of(rows: list[Row], size: int) -> Row:
    return next(r for r in rows if r.schedule == f"{size}x{BASELINE_STEPS}")


def print_table(name: str, rows: list[Row], baseline: Row) -> None:
    print(
        f"\n### {name}\n| schedule | megapixel-steps | of baseline | seconds | of baseline | total loss "
        "| of baseline | content | style | reached |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    for row in rows:
        ratio = row.total / baseline.total
        print(
            f"| {row.schedule} | {row.megapixel_steps:.2f} | {row.megapixel_steps / baseline.megapixel_steps:.2f} "
            f"| {row.seconds:.1f} | {row.seconds / baseline.seconds:.2f} | {row.total:.4f} | {ratio:.3f} "
            f"| {row.content:.3f} | {row.style:.4f} | {'yes' if ratio <= 1 + QUALITY_MARGIN else 'no'} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--pairs", type=int, default=len(PAIRS))
    parser.add_argument("--schedules", default="all", help="comma-separated indices into SCHEDULES, or all")
    parser.add_argument("--weights", default=os.environ.get("NST_WEIGHTS") or str(SHARED))
    parser.add_argument("--quick", action="store_true", help="128 px, one pair, two schedules: a smoke test")
    parser.add_argument("--out", default="out/schedule")
    args = parser.parse_args()
    schedules = SCHEDULES if args.schedules == "all" else [SCHEDULES[int(i)] for i in args.schedules.split(",")]
    if args.quick:
        args.size, args.pairs, schedules = 128, 1, SCHEDULES[:2]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"target {args.size} px, {os.cpu_count()} CPU cores, weights {args.weights}, load {os.getloadavg()[0]:.1f}")
    tables = {}
    for content_name, style_name in PAIRS[: args.pairs]:
        name = f"{content_name} x {style_name}"
        content, style = load_pair(content_name, style_name, args.size)
        tables[name] = measure_pair(
            content, style, args.size, args.weights, schedules, out, f"{content_name}-{style_name}"
        )
        print_table(name, tables[name], baseline_of(tables[name], args.size))  # each pair as soon as it is done
    reached = {row.schedule for row in next(iter(tables.values()))}
    for rows in tables.values():
        baseline = baseline_of(rows, args.size)
        reached &= {r.schedule for r in rows if r.total <= (1 + QUALITY_MARGIN) * baseline.total}
    cost = {r.schedule: r.megapixel_steps for r in next(iter(tables.values()))}
    best = min(reached, key=cost.get)
    print(
        f"\nfewest pixel-iterations reaching the baseline within {QUALITY_MARGIN:.0%} on every pair: {best} "
        f"(load at the end {os.getloadavg()[0]:.1f})"
    )


if __name__ == "__main__":
    main()
