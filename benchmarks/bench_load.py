"""Load: many tiny pairs through the whole pipeline, memory and per-pair overhead.

For each count (default 100 and 1000) a fresh process runs the Prefect flow over
that many 32 px content images x 1 style (5 steps each), then reports pairs per
minute, the peak resident memory of that process, and the pipeline's overhead per
pair (wall time minus the pairs' own stylization time, divided by the count).
Memory that stays flat from 100 to 1000 pairs means nothing grows per pair.

Usage: python benchmarks/bench_load.py [--counts 100,1000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from nst_core.storage import LOCAL

REPO = Path(__file__).resolve().parents[1]


def make_inputs(folder: Path, count: int) -> Path:
    """`count` distinct 32 x 32 content images and one style image, as real PNG files."""
    from PIL import Image

    rng = np.random.default_rng(0)
    (folder / "photos").mkdir(parents=True)
    for index in range(count):
        base = rng.random(3) * 255
        pixels = np.clip(base + rng.normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / "photos" / f"p{index:05d}.png")
    Image.open(REPO / "manifests" / "samples" / "styles" / "starry_night.jpg").save(folder / "style.png")
    manifest = folder / "manifest.csv"
    manifest.write_text("content,style,size,iterations,tolerance\nphotos,style.png,32,5,0\n")
    return manifest


def run_once(count: int) -> dict:
    """Child process: run the flow over `count` pairs and report."""
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    sys.path.insert(0, str(REPO))
    from flows.pipeline import run_manifest
    from flows.results import read_results

    work = Path(tempfile.mkdtemp(prefix=f"nst_load_{count}_"))
    manifest = make_inputs(work, count)
    started = time.perf_counter()
    outcome = run_manifest(str(manifest), str(work / "out"))
    wall = time.perf_counter() - started
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before reading the table back
    table = read_results(outcome["results"], storage=LOCAL)
    return {
        "count": count,
        "succeeded": outcome["succeeded"],
        "wall": wall,
        "stylize": float(table["total_seconds"].sum()),
        "peak_rss_mb": peak_rss_mb,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--counts", default="100,1000")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_once(args.child)))
        return
    print("| pairs | succeeded | wall s | pairs per minute | overhead per pair s | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    for count in [int(c) for c in args.counts.split(",")]:
        child = subprocess.run(
            [sys.executable, __file__, "--child", str(count)],
            capture_output=True,
            text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
        if child.returncode:
            sys.exit(child.stderr[-3000:])
        report = json.loads(child.stdout.strip().splitlines()[-1])
        print(
            f"| {count} | {report['succeeded']} | {report['wall']:.1f} | {60 * count / report['wall']:.0f} "
            f"| {(report['wall'] - report['stylize']) / count:.3f} | {report['peak_rss_mb']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
