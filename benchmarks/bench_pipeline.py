"""Pipeline throughput and overhead: 12 pairs (4 photos x 3 paintings) at 128 px.

Runs the same pairs three times in one process: directly through nst_core, one
pair at a time (load, stylize, save), through the Prefect flow one pair at a time
(`--batch-size 1`: manifest expansion, tasks, results table, artifacts, against
Prefect's default local server), and through the flow with its default batches
(each photo's 3 paintings in one batch). Prints pairs per hour for each, the
pipeline's overhead per pair as a share of the stylization time, and the batches'
speed-up. Shapes (and batch shapes) are traced once beforehand so no path pays for it.

Usage: python benchmarks/bench_pipeline.py [--iterations N]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flows.manifest import expand_manifest  # noqa: E402
from flows.pipeline import run_manifest  # noqa: E402
from nst_core.image_io import load_image, save_image  # noqa: E402
from nst_core.storage import LOCAL  # noqa: E402
from nst_core.stylize import stylize  # noqa: E402

SAMPLES = REPO / "manifests" / "samples"


def stylize_directly(pairs, weights) -> float:
    started = time.perf_counter()
    for pair in pairs:
        content = load_image(pair.content, LOCAL, max_side=pair.params.size)
        styles = [load_image(uri, LOCAL, max_side=pair.params.size) for uri in pair.styles]
        save_image(stylize(content, styles, pair.params, weights=weights).image, pair.output, LOCAL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=None, help="default: the product's default")
    parser.add_argument("--weights", default=os.environ.get("NST_WEIGHTS"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="nst_bench_pipeline_"))
    manifest = work / "manifest.csv"
    manifest.write_text(f"content,style\n{SAMPLES / 'content'},{SAMPLES / 'styles'}\n")
    overrides = {"size": 128, "tolerance": 0.0}
    if args.iterations:
        overrides["iterations"] = args.iterations
    warm, _ = expand_manifest(
        str(manifest), str(work / "warm"), overrides={**overrides, "iterations": 2}, storage=LOCAL
    )
    stylize_directly(warm, args.weights)  # trace every image shape once
    pairs, _ = expand_manifest(str(manifest), str(work / "direct"), overrides=overrides, storage=LOCAL)
    direct = stylize_directly(pairs, args.weights)

    run_manifest(str(manifest), str(work / "warm"), overrides={**overrides, "iterations": 2}, weights=args.weights)
    seconds = {}
    for batch_size in (1, None):
        started = time.perf_counter()
        outcome = run_manifest(
            str(manifest),
            str(work / f"flow{batch_size}"),
            overrides=overrides,
            weights=args.weights,
            batch_size=batch_size,
        )
        seconds[batch_size] = time.perf_counter() - started
        assert outcome["succeeded"] == len(pairs), outcome
    flow, batched = seconds[1], seconds[None]

    n = len(pairs)
    print(f"{n} pairs at 128 px, {pairs[0].params.iterations} iterations each, {os.cpu_count()} CPU cores")
    print("| path | seconds | seconds per pair | pairs per hour |\n|---|---|---|---|")
    print(f"| nst_core directly | {direct:.1f} | {direct / n:.2f} | {3600 * n / direct:.0f} |")
    print(f"| Prefect flow, `--batch-size 1` | {flow:.1f} | {flow / n:.2f} | {3600 * n / flow:.0f} |")
    print(f"| Prefect flow, default batches | {batched:.1f} | {batched / n:.2f} | {3600 * n / batched:.0f} |")
    overhead = (flow - direct) / n
    print(
        f"pipeline overhead: {overhead:.2f} s per pair = {100 * overhead / (direct / n):.1f}% of the "
        f"stylization time (flow start-up included: {flow - direct:.1f} s over the whole run)"
    )
    print(f"batches: {flow / batched:.2f}x the pairs per hour of the flow one pair at a time")


if __name__ == "__main__":
    main()
