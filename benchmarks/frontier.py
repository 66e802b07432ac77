"""The quality frontier: every configuration bench_quality.py measured, as a point of style against structure.

Each point is one configuration's means over one set of pairs (the benchmark's, or the held-out photos'):
x, the independent style distance (0 = the painting's style, lower is closer to the painting); y, the
structure kept (1 = the photo). A good configuration is low and to the left without falling below the
structure the targets ask for; a copy of the painting would sit at x = 0, y = 0.1. The shaded box is
the targets (mean style at most 0.24, mean structure at least 0.62).

Usage: python benchmarks/frontier.py out/bench_quality_512.csv [more.csv ...] -o docs/frontier_512.png
       [--only PHOTO:PAINTING,...] [--highlight NAME] [--title TEXT]
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TARGET_STYLE = 0.24  # mean style distance at most this
TARGET_STRUCTURE = 0.62  # mean structure kept at least this
SET_MARKERS = {"benchmark": "o", "held-out": "s", "all": "D"}


def points(paths: list[str], only: set[tuple[str, str]], merge: bool = False) -> dict:
    """{(config, set): (mean style, mean structure, pairs)}; a configuration measured in several files
    counts with every pair of each; `only`: just these (photo, painting) pairs, when given; `merge`:
    the sets as one ("all")."""
    figures = defaultdict(list)
    for path in paths:
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                if only and (row["photo"], row["painting"]) not in only:
                    continue
                figures[row["config"], "all" if merge else row.get("set", "benchmark")].append(
                    (float(row["style"]), float(row["structure"]))
                )
    return {
        key: (sum(s for s, _ in rows) / len(rows), sum(k for _, k in rows) / len(rows), len(rows))
        for key, rows in figures.items()
    }


def draw(measured: dict, out: str, highlight: set[str], title: str) -> None:
    figure, axes = plt.subplots(figsize=(9, 6.5), dpi=110)
    axes.add_patch(plt.Rectangle((0, TARGET_STRUCTURE), TARGET_STYLE, 1 - TARGET_STRUCTURE, color="#d8f0d8", zorder=0))
    axes.text(0.005, 0.985, "targets", va="top", fontsize=9, color="#2a6a2a")
    for (config, photo_set), (style, structure, count) in sorted(measured.items()):
        chosen = config in highlight
        axes.scatter(
            style,
            structure,
            marker=SET_MARKERS.get(photo_set, "^"),
            s=70 if chosen else 30,
            color="#c0392b" if chosen else ("#2c3e50" if photo_set == "benchmark" else "#7f8c8d"),
            zorder=3,
        )
        axes.annotate(f"{config} ({count})", (style, structure), textcoords="offset points", xytext=(4, 3), fontsize=7)
    for photo_set in sorted({photo_set for _, photo_set in measured}):
        axes.scatter([], [], marker=SET_MARKERS.get(photo_set, "^"), color="#2c3e50", label=f"{photo_set} photos")
    axes.set_xlabel("style distance (independent; 0 = the painting's style, lower is closer)")
    axes.set_ylabel("structure kept (no network; 1 = the photo)")
    axes.set_xlim(0, max(0.45, max(s for s, _, _ in measured.values()) + 0.03))
    axes.set_ylim(0, 1)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(out)
    print(f"frontier: {out} ({len(measured)} points)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", nargs="+", help="bench_quality.py's figures")
    parser.add_argument("-o", "--out", required=True, help="the PNG to write")
    parser.add_argument("--only", default="", help="just these pairs, PHOTO:PAINTING comma-separated")
    parser.add_argument("--merge", action="store_true", help="one point per configuration over every set")
    parser.add_argument("--highlight", action="append", default=[], help="configurations to mark (the defaults)")
    parser.add_argument(
        "--title", default="Quality frontier: closer to the painting (left) against the photo kept (up)"
    )
    args = parser.parse_args()
    only = {tuple(pair.split(":")) for pair in args.only.split(",") if pair.strip()}
    draw(points(args.csv, only, args.merge), args.out, set(args.highlight), args.title)


if __name__ == "__main__":
    main()
