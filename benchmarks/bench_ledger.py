"""The results table over a month of nights: how it grows, and what the ledger costs to read.

A collection of 100 photos x 3 paintings (300 pairs) runs 30 nights (tests/nights.py: the flow's
own bookkeeping under the run lock, a stand-in for the stylization, no Prefect), with photos
added, changed and removed between nights and some nights with nothing new. After each night it
prints the pairs stylized (attempts), the rows and files of the results table and of the run
table, and the ledger's time (best of 5): reading the table (read_ledger), and reading it and
sorting the pairs into new, changed and unchanged (classify): what a night spends on the ledger.
The targets: results rows at most the attempts, run rows one per night; files bounded (a run
leaves each month at most MONTH_PARTS); the ledger's time on night 30 within 1.5x night 1's.

Usage: python benchmarks/bench_ledger.py [--nights 30] [--photos 100] [--styles 3]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from flows.ledger import classify, read_ledger  # noqa: E402
from flows.manifest import expand_manifest  # noqa: E402
from flows.parts import PART_GLOB  # noqa: E402
from flows.results import read_results  # noqa: E402
from flows.runs import read_runs, runs_location  # noqa: E402
from nights import Collection, night  # noqa: E402
from nst_core.storage import LOCAL  # noqa: E402

# A night's changes: (photos added, changed, removed); a third of the nights bring nothing new.
CHANGES = [(0, 0, 0), (3, 2, 1), (5, 0, 0), (0, 4, 0), (2, 1, 3), (0, 0, 0)]


def ledger_seconds(results: str, pairs: list, repeats: int) -> tuple[float, float]:
    """(reading the table, reading it and classifying `pairs`), best of `repeats`."""
    read = ledger = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        table = read_ledger(results, LOCAL)
        read = min(read, time.perf_counter() - started)
        classify(pairs, table, LOCAL)
        ledger = min(ledger, time.perf_counter() - started)
    return read, ledger


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nights", type=int, default=30)
    parser.add_argument("--photos", type=int, default=100)
    parser.add_argument("--styles", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench_ledger-"))
    os.environ["NST_SPOOL"] = str(root / "spool")
    rng = random.Random(30)
    collection, out = Collection(root / "in", args.photos, args.styles, seed=30), root / "out"
    results = str(out / "results")
    attempts, first = 0, None
    print("night  pairs  stylized  results rows  files  run rows  files  read ms  ledger ms  night s")
    for number in range(1, args.nights + 1):
        if number > 1:
            collection.change(*rng.choice(CHANGES))
        started = time.perf_counter()
        counts = night(collection, out, number)
        seconds = time.perf_counter() - started
        attempts += counts["succeeded"] + counts["failed"]
        pairs, _ = expand_manifest(collection.manifest, str(out), storage=LOCAL)
        if first is None:  # night 1's table and pairs, timed again beside the last night's at the end
            first = (shutil.copytree(results, root / "night1-results"), pairs)
        read, ledger = ledger_seconds(results, pairs, repeats=5)
        rows, runs = len(read_results(results, storage=LOCAL, columns=["pair_id"])), len(read_runs(results, LOCAL))
        files = len(LOCAL.list(results, PART_GLOB))
        run_files = len(LOCAL.list(runs_location(results), PART_GLOB))
        print(
            f"{number:5d}  {len(pairs):5d}  {counts['succeeded']:8d}  {rows:12d}  {files:5d}  {runs:8d}  {run_files:5d}"
            f"  {read * 1000:7.1f}  {ledger * 1000:9.1f}  {seconds:7.2f}"
        )
    skipped = int(read_runs(results, LOCAL)["skipped"].sum())
    print(f"\nresults rows: {rows} for {attempts} pairs stylized ({rows + skipped} with a row per skipped pair)")
    print(f"run rows: {runs} for {args.nights} nights")
    # Timed in turns, so that the machine's load falls on both alike.
    times = {1: [], args.nights: []}
    for _ in range(10):
        times[1].append(ledger_seconds(str(first[0]), first[1], repeats=2))
        times[args.nights].append(ledger_seconds(results, pairs, repeats=2))
    for name, index in (("read", 0), ("ledger (read + classify)", 1)):
        then, now = (min(t[index] for t in times[n]) * 1000 for n in times)
        print(f"{name}: night 1 {then:.1f} ms, night {args.nights} {now:.1f} ms ({now / then:.2f}x)")


if __name__ == "__main__":
    main()
