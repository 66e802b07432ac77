"""Scale-out: the same manifest through `nst run` on threads in one process, then on a local Dask cluster.

The sample photos x paintings (4 x 3 = 12 pairs) at --size px with --iterations steps;
each configuration is a fresh `nst run` into a fresh output folder, timed from the
command's start to its exit (Prefect, the cluster and every worker's TensorFlow
start-up included, as a user sees it). The baseline is one process with one thread.

Usage: python benchmarks/bench_dask.py [--size 64] [--iterations 50] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nst_core.storage import LOCAL

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "manifests" / "samples"


def timed_run(manifest: Path, out: Path, size: int, iterations: int, runner: list[str]) -> tuple[float, float]:
    """(wall seconds of one `nst run`, seconds its pairs spent stylizing, summed over pairs)."""
    from flows.results import read_results

    command = [
        sys.executable,
        "-m",
        "flows.cli",
        "run",
        str(manifest),
        "--out",
        str(out),
        "--size",
        str(size),
        "--iterations",
        str(iterations),
        "--tolerance",
        "0",
        *runner,
    ]
    started = time.perf_counter()
    result = subprocess.run(
        command,
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PREFECT_LOGGING_LEVEL": "WARNING"},
    )
    wall = time.perf_counter() - started
    if result.returncode:
        sys.exit(result.stderr[-3000:])
    table = read_results(str(out / "results"), storage=LOCAL)
    assert (table.status == "succeeded").sum() == 12, table.status.value_counts()
    return wall, float(table.total_seconds.sum())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--workers", default="1,2", help="local Dask cluster sizes to time")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    work = Path(tempfile.mkdtemp(prefix="nst_dask_"))
    manifest = work / "m.csv"
    manifest.write_text(f"content,style\n{SAMPLES / 'content'},{SAMPLES / 'styles'}\n")
    configs = [("threads, 1 process (baseline)", [])] + [
        (f"dask, {n} worker process{'es' if n > 1 else ''}", ["--task-runner", "dask", "--dask-workers", str(n)])
        for n in map(int, args.workers.split(","))
    ]
    print(f"12 pairs, {args.size} px, {args.iterations} steps, {os.cpu_count()} CPU cores\n")
    print("| runner | wall s | pairs per minute | stylizing s (sum over pairs) | wall vs baseline |")
    print("|---|---|---|---|---|")
    baseline = None
    for index, (name, runner) in enumerate(configs):
        wall, stylizing = timed_run(manifest, work / f"out{index}", args.size, args.iterations, runner)
        baseline = baseline or wall
        print(f"| {name} | {wall:.1f} | {12 * 60 / wall:.0f} | {stylizing:.1f} | {wall / baseline:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
