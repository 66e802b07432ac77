"""A night through `nst run`: pairs per hour at the defaults against a baseline's, and the plan against the clock.

Builds a collection of N photos of mixed sizes and shapes (scikit-image's and benchmarks/photos/,
each cropped to one of a few aspect ratios and scaled to one of a few sizes, as phones, cameras and
scans give them) and a manifest of every photo x each shared painting. Then, for each night's
flags (default: the defaults, then the 0.3.0 defaults), in this one run and each into its own
folder:
1. `nst run MANIFEST -o OUT --plan`: the plan's estimate of the night (its last line);
2. `nst run MANIFEST -o OUT`: the real night, with its batching and its temporary Prefect server,
   timed on the wall clock, and the pairs that succeeded counted in the results table.
Prints pairs per hour for each, the first's against the last's, and each plan's estimate against
the real time.

Usage: python benchmarks/bench_night.py [--photos 100] [--paintings 3] [--size 512] [--night NAME=FLAGS ...]
       (NST_WEIGHTS: the weights file, as for `nst`)
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))

from bench_quality import HELD_OUT, PAINTINGS, PHOTOS, SHARED, photo  # noqa: E402

from flows.results import read_results  # noqa: E402
from nst_core.storage import LOCAL  # noqa: E402

NST = str(Path(sys.executable).parent / "nst")
NIGHTS = (
    "defaults=",
    "0.3.0=--style-weight 300 --iterations 100 --last-jump 1.41 "
    "--style-layers block1_conv1,block2_conv1,block3_conv1,block4_conv1,block5_conv1",
)
# (width, height) ratios and longest sides of a mixed collection: phone, camera, square, scan.
ASPECTS = ((4, 3), (3, 4), (3, 2), (16, 9), (1, 1), (2, 3))
LONGEST = (640, 1024, 1600, 2400)


def collection(count: int, folder: Path) -> list[Path]:
    """`count` JPEGs, each a crop of one of the benchmark's photos at its own aspect and size."""
    sources = [photo(name, 1024) for name in PHOTOS + HELD_OUT]
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        source = sources[index % len(sources)]
        (wide, high), longest = ASPECTS[index % len(ASPECTS)], LONGEST[index % len(LONGEST)]
        height, width = source.shape[:2]
        scale = min(width / wide, height / high) * rng.uniform(0.7, 1.0)  # the largest crop of that aspect, or less
        crop_w, crop_h = int(wide * scale), int(high * scale)
        top, left = rng.integers(0, height - crop_h + 1), rng.integers(0, width - crop_w + 1)
        crop = Image.fromarray((source[top : top + crop_h, left : left + crop_w] * 255).astype(np.uint8))
        side = longest / max(crop_w, crop_h)
        path = folder / f"photo_{index:03d}.jpg"
        crop.resize((round(crop_w * side), round(crop_h * side)), Image.LANCZOS).save(path, quality=90)
        paths.append(path)
    return paths


def write_manifest(photos: list[Path], paintings: list[str], path: Path) -> int:
    rows = [f"{p},{SHARED / 'images' / 'styles' / f'{name}.jpg'}" for p in photos for name in paintings]
    path.write_text("content,style\n" + "\n".join(rows) + "\n")
    return len(rows)


def seconds_of(text: str) -> float:
    """The plan's total, 'about 3 h 20 min for ...' / '12 min' / '45 s', in seconds."""
    match = re.search(r"about (?:(\d+) h )?(?:(\d+) min|(\d+) s) for", text)
    if not match:
        raise ValueError(f"no plan total in:\n{text}")
    hours, minutes, seconds = (int(group or 0) for group in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def nst_run(manifest: Path, out: Path, flags: list[str], log: Path, plan: bool = False) -> str:
    command = [NST, "run", str(manifest), "-o", str(out), *flags, *(["--plan"] if plan else [])]
    done = subprocess.run(command, capture_output=True, text=True)
    log.write_text(done.stdout + done.stderr)
    if done.returncode not in (0, 1):  # 1: some pairs failed, counted below
        raise SystemExit(f"{shlex.join(command)} failed ({done.returncode}); see {log}")
    return done.stdout


def night(name: str, manifest: Path, out: Path, flags: list[str]) -> dict:
    plan_text = nst_run(manifest, out, flags, out.with_suffix(".plan.log"), plan=True)
    print(f"{name}: {plan_text.strip().splitlines()[-2]}", flush=True)
    started = time.perf_counter()
    nst_run(manifest, out, flags, out.with_suffix(".log"))
    seconds = time.perf_counter() - started
    results = read_results(str(out / "results"), storage=LOCAL, columns=["status"])
    succeeded = int((results["status"] == "succeeded").sum())
    return {"name": name, "plan": seconds_of(plan_text), "seconds": seconds, "succeeded": succeeded}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=100)
    parser.add_argument("--paintings", default=",".join(PAINTINGS), help="of the shared paintings, comma-separated")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--night", action="append", help=f"NAME=nst run flags, repeated (default: {NIGHTS})")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "photos").mkdir()
        photos = collection(args.photos, root / "photos")
        pairs = write_manifest(photos, args.paintings.split(","), root / "night.csv")
        shapes = sorted({Image.open(p).size for p in photos})
        print(f"{len(photos)} photos ({len(shapes)} sizes, {shapes[0]} to {shapes[-1]}) x paintings: {pairs} pairs")
        nights = []
        for spec in args.night or NIGHTS:
            name, _, flags = spec.partition("=")
            flags = ["--size", str(args.size), *shlex.split(flags)]
            nights.append(night(name, root / "night.csv", root / f"night{len(nights)}", flags))

    print(f"\n| night | pairs succeeded | seconds | pairs an hour | plan said | plan / real |\n|{'---|' * 6}")
    for run in nights:
        print(
            f"| {run['name']} | {run['succeeded']}/{pairs} | {run['seconds']:.0f} | "
            f"{3600 * run['succeeded'] / run['seconds']:.1f} | {run['plan']:.0f} s | "
            f"{run['plan'] / run['seconds']:.2f} |"
        )
    if len(nights) > 1:
        first, last = (run["succeeded"] / run["seconds"] for run in (nights[0], nights[-1]))
        print(f"\npairs an hour, {nights[0]['name']} against {nights[-1]['name']}: {first / last:.2f}x")


if __name__ == "__main__":
    main()
