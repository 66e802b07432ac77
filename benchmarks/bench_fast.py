"""The fast lane: its speed, and whether `init=fast` is a better start than `init=content`.

1. Seconds per image for `method=fast` (the network pass, resizing, finishing; no
   loss measurement) at 256 and 512 px, over the 12 sample pairs, after a warm-up.
2. At 256 px with real VGG16 weights and the product's defaults (L-BFGS, the
   default weights), each pair optimised from the content and from the fast
   network's output for the same step budget. Every 5 steps the image is measured
   with distances the optimisation does not see (see `independent_distances`).
   Reported: the steps and seconds each start needs to reach the same style
   distance (two levels: where init=content is after 50 steps, and the worse of
   the two runs' best), the ratios, and the content distance each has there.

Usage: python benchmarks/bench_fast.py [--weights FILE] [--steps 200] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from nst_core import losses  # noqa: E402
from nst_core.image_io import load_image  # noqa: E402
from nst_core.model import feature_extractor  # noqa: E402
from nst_core.params import StyleParams  # noqa: E402
from nst_core.storage import LOCAL  # noqa: E402
from nst_core.stylize import fast_preview, resize, size_for, stylize  # noqa: E402

SAMPLES = REPO / "manifests" / "samples"
SHARED = REPO.parent / "shared" / "weights" / "vgg16_imagenet_notop.weights.h5"
PAIRS = [("chelsea", "starry_night"), ("astronaut", "the_scream"), ("rocket", "shipwreck")]
# Not the layers the product optimises (block{1..5}_conv1 for style, block4_conv2 for content),
# and for style not its statistic (Gram) either: per-channel mean and standard deviation.
CHECK_STYLE_LAYERS = ("block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3")
CHECK_CONTENT_LAYERS = ("block3_conv3", "block5_conv1")
CHECK_EVERY = 5
EARLY_STEPS = 50  # a preview-sized budget, as in the first measurement


def sample(kind: str, name: str, side: int) -> np.ndarray:
    return load_image(str(SAMPLES / kind / f"{name}.jpg"), LOCAL, max_side=side)


def seconds_per_fast_image(side: int, repeats: int) -> float:
    params = StyleParams(size=side, method="fast")
    contents = [sample("content", c, side) for c in ("chelsea", "astronaut", "rocket", "coffee")]
    styles = [sample("styles", s, side) for s in ("starry_night", "the_scream", "shipwreck")]
    fast_preview(contents[0], styles[:1], params)  # warm-up: opens the onnxruntime sessions
    started, count = time.perf_counter(), 0
    for _ in range(repeats):
        for content in contents:
            for style in styles:
                fast_preview(content, [style], params)
                count += 1
    return (time.perf_counter() - started) / count


def independent_distances(weights: str, content: np.ndarray, style: np.ndarray):
    """f(image) -> (style distance, content distance), neither the optimised loss.

    Style: relative error of per-channel mean and std on CHECK_STYLE_LAYERS, mean over
    layers. Content: relative feature error on CHECK_CONTENT_LAYERS, mean over layers.
    """
    extract = feature_extractor("auto", weights, CHECK_STYLE_LAYERS + CHECK_CONTENT_LAYERS)
    n_style = len(CHECK_STYLE_LAYERS)
    style_feats = extract(tf.constant(style[None]))[:n_style]
    style_stats = [losses.style_statistic("bn", f, {}) for f in style_feats]
    content_feats = extract(tf.constant(content[None]))[n_style:]

    def measure(image: np.ndarray):
        feats = extract(tf.constant(image[None]))
        style_d = np.mean(
            [
                float(losses.relative_error(losses.style_statistic("bn", f, {}), t)[0])
                for f, t in zip(feats[:n_style], style_stats)
            ]
        )
        content_d = np.mean([float(losses.relative_error(f, t)[0]) for f, t in zip(feats[n_style:], content_feats)])
        return style_d, content_d

    return measure


def trajectory(content, style, params, weights):
    """[(step, seconds since the call, image)] every CHECK_EVERY steps, and the result."""
    snapshots, started = [], time.perf_counter()

    def on_step(scale, side, progress, image):
        if (progress.iteration - 1) % CHECK_EVERY == 0 or progress.iteration == progress.iterations:
            snapshots.append((progress.iteration - 1, time.perf_counter() - started, np.asarray(image)))

    result = stylize(content, [style], params, weights=weights, callback=on_step)
    return snapshots, result


def first_reaching(points, target):
    """(step, seconds, content distance) of the first point with style distance <= target."""
    return next(((step, secs, cd) for step, secs, sd, cd in points if sd <= target + 1e-12), None)


def compare_inits(weights: str, side: int, steps: int, pairs):
    rows = []
    for content_name, style_name in pairs:
        content = sample("content", content_name, side)
        style_full = sample("styles", style_name, side)
        content_at = resize(content, size_for(content.shape, side))
        measure = independent_distances(weights, content_at, resize(style_full, size_for(style_full.shape, side)))
        runs = {}
        for init in ("content", "fast"):
            params = StyleParams(size=side, iterations=steps, init=init, tolerance=0)
            stylize(content, [style_full], params.replace(iterations=1), weights=weights)  # compile outside timing
            snapshots, result = trajectory(content, style_full, params, weights)
            runs[init] = [(step, secs, *measure(image)) for step, secs, image in snapshots]
            at_budgets = ", ".join(
                f"{step}: {sd:.4f}/{cd:.3f}"
                for step, _, sd, cd in runs[init]
                if step in (0, 25, 50, 100, 150, steps - 1)
            )
            print(
                f"  {content_name} x {style_name} init={init}: style/content distance at step {at_budgets}; "
                f"final product loss {result.total_loss:.4f} (style {result.style_loss:.4f}), "
                f"{result.optimize_seconds:.1f} s",
                flush=True,
            )
        early = next(sd for step, _, sd, _ in runs["content"] if step == EARLY_STEPS)
        common_best = max(min(sd for _, _, sd, _ in points) for points in runs.values())
        for label, target in (
            (f"init=content's at {EARLY_STEPS} steps", early),
            ("the worse best of the two", common_best),
        ):
            reached = {init: first_reaching(points, target) for init, points in runs.items()}
            rows.append((f"{content_name} x {style_name}", label, target, reached))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=os.environ.get("NST_WEIGHTS") or str(SHARED))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 64 px, 60 steps, two pairs")
    args = parser.parse_args()
    side, steps, pairs, repeats = (64, 60, PAIRS[:2], 1) if args.quick else (256, args.steps, PAIRS, 3)

    print("1. method=fast, seconds per image (12 sample pairs)")
    for size in (side,) if args.quick else (256, 512):
        print(f"  {size} px: {seconds_per_fast_image(size, repeats):.3f} s per image", flush=True)

    print(
        f"\n2. init=fast vs init=content at {side} px, L-BFGS defaults, {steps} steps each, "
        f"style/content distances on {','.join(CHECK_STYLE_LAYERS)} / {','.join(CHECK_CONTENT_LAYERS)}"
    )
    rows = compare_inits(args.weights, side, steps, pairs)
    print(
        "\n| pair | style distance to reach | init=content: steps / s / content dist. "
        "| init=fast: steps / s / content dist. | steps ratio | seconds ratio |"
    )
    print("|---|---|---|---|---|---|")
    for name, label, target, reached in rows:
        content_run, fast_run = reached["content"], reached["fast"]
        print(
            f"| {name} | {target:.4f} ({label}) | {content_run[0]} / {content_run[1]:.1f} / {content_run[2]:.3f} "
            f"| {fast_run[0]} / {fast_run[1]:.1f} / {fast_run[2]:.3f} "
            f"| {fast_run[0] / max(content_run[0], 1):.2f} | {fast_run[1] / content_run[1]:.2f} |"
        )


if __name__ == "__main__":
    main()
