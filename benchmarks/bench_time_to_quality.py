"""Where a run could have stopped: the two judges every few steps, and seconds per stage.

For each pair (512 px by default) it stylizes with the configuration given (the defaults
unless --config), keeps the picture every --every steps at every scale (and each scale's
last), and after the run judges each kept picture with the two measures the optimisation
never sees (nst_core.quality: the style distance and the structure kept), upscaled to the
output's size as a stop there would have returned it. It prints per pair:
- the first step (scale and step) where both judges are within --within of their final
  values and stay there, and the seconds the run had taken by then;
- seconds per stage: the painting's and photo's targets, each coarse scale, the output
  scale, saving the PNG.
Judging happens after the run, so the seconds are the run's own. The step at which the
judges settle does not depend on how busy the machine is; the seconds do.

Usage: python benchmarks/bench_time_to_quality.py [--size 512] [--only photo:painting,...]
       [--config "NAME:field=value;..."] [--every 5] [--within 0.01]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from bench_quality import load_painting, parse_config, photo  # noqa: E402
from keras import ops  # noqa: E402

from nst_core import quality  # noqa: E402
from nst_core.image_io import save_image  # noqa: E402
from nst_core.model import resolve_weights  # noqa: E402
from nst_core.storage import LOCAL  # noqa: E402
from nst_core.stylize import Job, resize, stylize_batch  # noqa: E402
from nst_core.targets import style_load_side  # noqa: E402

# Six of the benchmark's pairs: each photo, each painting twice, the two hardest among them.
PAIRS = (
    "astronaut:starry_night,chelsea:the_scream,coffee:shipwreck,"
    "rocket:the_scream,astronaut:shipwreck,coffee:starry_night"
)


@dataclass
class Kept:
    """A picture kept during the run: where it was, when, and what the judges say of it."""

    scale: int
    side: int
    step: int
    seconds: float
    image: np.ndarray
    style: float = 0.0
    structure: float = 0.0
    change: float = float("nan")  # mean |difference| from the previous kept picture of its scale, in 0-255 levels


@dataclass
class Recorder:
    """stylize_batch's callback: every step's time, every `every`-th step's picture (and each scale's last)."""

    every: int
    started: float = field(default_factory=time.perf_counter)
    kept: list = field(default_factory=list)
    last_step: dict = field(default_factory=dict)  # scale -> (side, step, seconds, image tensor)

    def __call__(self, _job, scale, side, progress, image) -> None:
        now = time.perf_counter() - self.started
        self.last_step[scale] = (side, progress.iteration, now, image)
        if progress.iteration % self.every == 0:
            self.kept.append(Kept(scale, side, progress.iteration, now, ops.convert_to_numpy(image)))

    def pictures(self) -> list[Kept]:
        """The kept pictures, with each scale's last step added, in run order."""
        kept = list(self.kept)
        for scale, (side, step, seconds, image) in self.last_step.items():
            if not any(k.scale == scale and k.step == step for k in kept):
                kept.append(Kept(scale, side, step, seconds, ops.convert_to_numpy(image)))
        kept.sort(key=lambda k: k.seconds)
        for before, after in zip(kept, kept[1:]):
            if before.scale == after.scale:
                after.change = 255 * float(np.mean(np.abs(after.image - before.image)))
        return kept

    def scale_seconds(self) -> list[float]:
        """Seconds each scale took (its targets included), from the previous scale's last step to its own."""
        ends = [self.last_step[scale][2] for scale in sorted(self.last_step)]
        return [end - start for start, end in zip([0.0, *ends], ends)]


def settled(kept: list[Kept], final_style: float, final_structure: float, within: float) -> Kept:
    """The first kept picture from which both judges stay within `within` of their final values."""
    for index, picture in enumerate(kept):
        if all(
            abs(k.style - final_style) <= within and abs(k.structure - final_structure) <= within for k in kept[index:]
        ):
            return picture
    return kept[-1]


def run_pair(params, photo_image, painting, weights, every) -> tuple:
    recorder = Recorder(every)
    (outcome,) = stylize_batch([Job(photo_image, [painting], params)], weights=weights, callback=recorder)
    if isinstance(outcome, Exception):
        raise outcome
    run_seconds = time.perf_counter() - recorder.started
    with tempfile.TemporaryDirectory() as folder:
        saving = time.perf_counter()
        save_image(outcome.image, f"{folder}/out.png", LOCAL)
        save_seconds = time.perf_counter() - saving
    return outcome, recorder, run_seconds, save_seconds


def judge(kept: list[Kept], final: np.ndarray, photo_image: np.ndarray, painting: np.ndarray) -> tuple:
    """Both judges of every kept picture, each upscaled to the final's size, and of the final."""
    content = resize(photo_image, final.shape[:2])
    for picture in kept:
        image = resize(np.clip(picture.image, 0, 1), final.shape[:2])
        picture.style = quality.style_distance(image, painting, content)
        picture.structure = quality.structure_kept(image, content)
    return quality.style_distance(final, painting, content), quality.structure_kept(final, content)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--only", default=PAIRS, help="photo:painting pairs, comma-separated")
    parser.add_argument("--config", default="defaults:", metavar="SPEC", help="NAME:field=value;...")
    parser.add_argument("--every", type=int, default=5, help="keep a picture every this many steps")
    parser.add_argument("--within", type=float, default=0.01, help="how close to the final judges counts as there")
    args = parser.parse_args()
    name, params = parse_config(args.config, args.size)
    weights = resolve_weights(None)
    print(
        f"config {name}: sides {params.sides()}, steps {params.coarse_iterations} per coarse scale, "
        f"{params.iterations} at {params.size} px; judged every {args.every} steps"
    )
    print(
        "| pair | style | structure | seconds | steps per scale | settled at (scale px, step) | "
        "seconds to settle | targets | seconds per scale | saving |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    totals, settle_times = [], []
    for pair in args.only.split(","):
        photo_name, painting_name = pair.strip().split(":")
        photo_image = photo(photo_name, args.size)
        painting = load_painting(painting_name, style_load_side(args.size, params))
        outcome, recorder, run_seconds, save_seconds = run_pair(params, photo_image, painting, weights, args.every)
        kept = recorder.pictures()
        final_style, final_structure = judge(kept, outcome.image, photo_image, painting)
        stop = settled(kept, final_style, final_structure, args.within)
        per_scale = "+".join(f"{s:.0f}" for s in recorder.scale_seconds())
        print(
            f"| {photo_name} x {painting_name} | {final_style:.3f} | {final_structure:.3f} | {run_seconds:.1f} "
            f"| {'+'.join(map(str, outcome.scale_iterations))} | {stop.side} px, {stop.step} | {stop.seconds:.1f} "
            f"| {outcome.targets_seconds:.1f} | {per_scale} | {save_seconds:.2f} |",
            flush=True,
        )
        trace = " ".join(f"{k.side}/{k.step}:{k.style:.3f},{k.structure:.3f},{k.change:.2f}" for k in kept)
        print(f"    judges (side/step:style,structure,change in levels): {trace}", flush=True)
        totals.append(run_seconds)
        settle_times.append(stop.seconds)
    print(
        f"median seconds per pair {np.median(totals):.1f}; median seconds to settle {np.median(settle_times):.1f} "
        f"({np.median(settle_times) / np.median(totals):.2f} of the run)"
    )


if __name__ == "__main__":
    main()
