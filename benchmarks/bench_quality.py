"""Picture quality judged from both sides, by measures the optimisation never sees: the defaults are chosen by them.

Every configuration stylizes the same pairs in this run: the benchmark's (4 scikit-image
photos x the 3 shared paintings, 12 in all) and, reported apart, photos the defaults were not
chosen on (benchmarks/photos/: people and buildings); the first configuration is the baseline.
For each pair it prints (nst_core.quality):
- style: the independent style distance (Magenta's style-predict network; 0 = the
  painting's style, 1 = the photo's): how close to the painting;
- structure: how much of the photo's structure is kept, with no network (greyscale SSIM and
  edge correlation at 128 px; 1 = the photo, about 0.1 = a crop of the painting);
- content: relative VGG block4_conv2 feature distance to the photo (1.0 = a blank image);
- gram: the Gram-matrix loss (not a judge, for continuity with earlier figures);
then per configuration and set the means, the lowest structure, seconds per pair and the
ratios to the baseline, and writes a contact sheet (rows: pairs; columns: the photo, the
painting, then each configuration, each cell stamped with its two figures) and a CSV of every
figure; benchmarks/frontier.py draws the CSVs as a frontier plot.

A configuration is NAME:FIELD=VALUE;FIELD=VALUE... over StyleParams (size comes from
--size), e.g. "w2:style_stat=w2;style_weight=30".
Usage: python benchmarks/bench_quality.py [--size 256] [--config SPEC ...] [--photos a,b] [--held-out c,d]
       [--paintings x,y] [--pairs 12] [--skip 0]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from PIL import ImageDraw  # noqa: E402
from skimage import data  # noqa: E402

from nst_core import quality  # noqa: E402
from nst_core.grid import GridOptions, draw_grid, label_font, thumbnail  # noqa: E402
from nst_core.image_io import load_image, save_image  # noqa: E402
from nst_core.params import StyleParams  # noqa: E402
from nst_core.storage import LOCAL  # noqa: E402
from nst_core.stylize import Job, resize, size_for, stylize_batch  # noqa: E402
from nst_core.targets import style_load_side  # noqa: E402

SHARED = REPO.parent / "shared"
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
# Outside the benchmark: two people (the cameraman, Grace Hopper), a building (a temple in China), a machine.
HELD_OUT = ("camera", "grace_hopper", "china", "motorcycle")
HELD_OUT_FOLDER = REPO / "benchmarks" / "photos"
PAINTINGS = ("starry_night", "the_scream", "shipwreck")
# The first defaults (0.1.0), pinned, so the baseline stays "before" whatever params.py says now.
BASELINE = (
    "before:style_stat=gram;style_weight=10;tv_weight=1;iterations=300;init=content;pooling=max;"
    "style_layer_weights=none;scales=;min_scale=0;coarse_iterations=200;style_fit=long"
)


def parse_config(spec: str, size: int) -> tuple[str, StyleParams]:
    name, _, fields = spec.partition(":")
    changes = dict(field.split("=", 1) for field in fields.split(";") if field.strip())
    return name, StyleParams(size=size).replace(
        **{key.strip(): StyleParams.parse(key.strip(), value) for key, value in changes.items()}
    )


def photo(name: str, side: int) -> np.ndarray:
    """A photo of benchmarks/photos/ or scikit-image's as RGB in [0, 1]: a stereo pair gives its
    left view, a grey photo three equal channels."""
    if (HELD_OUT_FOLDER / f"{name}.jpg").exists():
        return load_image(str(HELD_OUT_FOLDER / f"{name}.jpg"), LOCAL, max_side=side)
    image = getattr(data, name)()
    image = image[0] if isinstance(image, tuple) else image
    image = np.atleast_3d(image)[..., :3].astype(np.float32) / 255.0
    image = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image
    return resize(image, size_for(image.shape, side))


def load_painting(name: str, side: int) -> np.ndarray:
    return load_image(str(SHARED / "images" / "styles" / f"{name}.jpg"), LOCAL, max_side=side)


def run_config(params: StyleParams, photos: dict, pairs, weights: str):
    """Yields ((photo, painting), (image, seconds, steps per scale) or the exception), one pair at a
    time (the seconds are each pair's own), each painting loaded as the pipeline loads it for these params."""
    paintings = {name: load_painting(name, style_load_side(params.size, params)) for _, name in pairs}
    for photo_name, name in pairs:
        started = time.perf_counter()
        (outcome,) = stylize_batch([Job(photos[photo_name], [paintings[name]], params)], weights=weights)
        seconds = time.perf_counter() - started
        yield (
            (photo_name, name),
            (outcome if isinstance(outcome, Exception) else (outcome.image, seconds, outcome.scale_iterations)),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--config", action="append", default=[], metavar="SPEC")
    parser.add_argument(
        "--baseline",
        default=BASELINE,
        metavar="SPEC",
        help="the reference configuration; '' for none (the first --config is then the reference)",
    )
    parser.add_argument("--photos", default=",".join(PHOTOS), help="the benchmark's photos, comma-separated")
    parser.add_argument(
        "--held-out",
        default=",".join(HELD_OUT),
        help="photos the defaults were not chosen on, reported apart (benchmarks/photos/ or scikit-image); '' for none",
    )
    parser.add_argument("--paintings", default=",".join(PAINTINGS), help="of the shared paintings")
    parser.add_argument("--pairs", type=int, default=12, help="the first N of photo x painting, in each set")
    parser.add_argument("--skip", type=int, default=0, help="of those, leave out the first K (a later slice)")
    parser.add_argument(
        "--only",
        default="",
        help="just these pairs, in this order, PHOTO:PAINTING comma-separated (e.g. camera:the_scream)",
    )
    parser.add_argument(
        "--weights",
        default=os.environ.get("NST_WEIGHTS") or str(SHARED / "weights" / "vgg16_imagenet_notop.weights.h5"),
    )
    parser.add_argument("--out", default="out/bench_quality")
    args = parser.parse_args()

    configs = [parse_config(spec, args.size) for spec in [args.baseline, *args.config] if spec]
    painting_names = _names(args.paintings)
    sets = {"benchmark": _names(args.photos), "held-out": _names(args.held_out)}
    pairs = [
        (photo_set, p, s)
        for photo_set, names in sets.items()
        for p, s in [(p, s) for p in names for s in painting_names][args.skip : args.pairs]
    ]
    if args.only:
        of = {(p, s): (photo_set, p, s) for photo_set, p, s in pairs}
        pairs = [of[pair] for pair in (tuple(text.split(":")) for text in _names(args.only)) if pair in of]
    photos = {name: photo(name, args.size) for names in sets.values() for name in names}
    paintings = {name: load_painting(name, args.size) for name in painting_names}  # what the measure compares with
    vgg = quality.VggDistances(args.weights)
    rows, images = [], {}
    print(
        "| config | set | pair | style | structure | content | gram | s/pair | steps |\n|---|---|---|---|---|---|---|---|---|",
        flush=True,
    )
    photo_set = {(p, s): photo_set for photo_set, p, s in pairs}
    try:
        for name, params in configs:
            for pair, outcome in run_config(params, photos, [(p, s) for _, p, s in pairs], args.weights):
                row = record(name, pair, outcome, photo_set[pair], vgg, photos, paintings, images, args)
                if row:
                    rows.append(row)
                    write_figures(f"{args.out}_{args.size}.csv", rows)  # each row as it comes
    except KeyboardInterrupt:  # Ctrl-C: the summary and the sheet of what was measured
        print("\nstopped: the pairs measured so far", flush=True)
    done = [(p, s) for _, p, s in pairs if all((name, p, s) in images for name, _ in configs)]
    summarize(rows, [name for name, _ in configs])
    write_outputs(args.out, args.size, rows, images, configs, done, photos, paintings)


def record(name, pair, outcome, photo_set, vgg, photos, paintings, images, args) -> dict | None:
    """One pair's figures, printed, and its picture stamped with them (kept in `images` and saved);
    None for a pair that failed."""
    photo_name, painting = pair
    if isinstance(outcome, Exception):
        print(f"| {name} | {photo_set} | {photo_name} x {painting} | failed: {outcome} |", flush=True)
        images[name, photo_name, painting] = str(outcome)
        return None
    image, seconds, steps = outcome
    row = {
        "config": name,
        "set": photo_set,
        "photo": photo_name,
        "painting": painting,
        **measure(vgg, image, photos[photo_name], paintings[painting]),
        "seconds": seconds,
    }
    images[name, photo_name, painting] = stamped(image, row, min(args.size, 256))
    Path(f"{args.out}_{args.size}").mkdir(parents=True, exist_ok=True)
    save_image(image, f"{args.out}_{args.size}/{name}--{photo_name}--{painting}.png", LOCAL)
    print(
        f"| {name} | {photo_set} | {photo_name} x {painting} | {row['style']:.3f} | {row['structure']:.3f} "
        f"| {row['content']:.3f} | {row['gram']:.4f} | {seconds:.1f} | {'+'.join(map(str, steps))} |",
        flush=True,
    )
    return row


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def measure(vgg: quality.VggDistances, image: np.ndarray, photo_image: np.ndarray, painting: np.ndarray) -> dict:
    """Both sides of one picture, and the VGG figures kept for continuity."""
    content = resize(photo_image, image.shape[:2])
    return {
        "style": quality.style_distance(image, painting, content),
        "structure": quality.structure_kept(image, content),
        "content": vgg.content_distance(image, content),
        "gram": vgg.gram_distance(image, painting),
    }


def stamped(image: np.ndarray, row: dict, side: int):
    """The picture as a contact sheet shows it: its two figures written across its foot."""
    picture = thumbnail(image, side)
    draw, font = ImageDraw.Draw(picture), label_font(max(11, side // 16))
    text = f"style {row['style']:.2f}  structure {row['structure']:.2f}"
    box = draw.textbbox((0, 0), text, font=font)
    draw.rectangle((0, picture.height - box[3] - 6, box[2] + 8, picture.height), fill=(0, 0, 0))
    draw.text((4, picture.height - box[3] - 3), text, fill=(255, 255, 255), font=font)
    return picture


def summarize(rows: list[dict], names: list[str]) -> None:
    """Per configuration and set: both sides' means, the lowest structure, time, ratios to the baseline."""
    print(
        "\n| config | set | mean style | vs baseline | mean structure | lowest structure | worst content "
        "| s/pair | time vs baseline |\n|---|---|---|---|---|---|---|---|---|"
    )
    for photo_set in dict.fromkeys(r["set"] for r in rows):
        of = {name: [r for r in rows if r["config"] == name and r["set"] == photo_set] for name in names}
        base = of[names[0]]
        for name in names:
            mine = of[name]
            if not mine or not base:
                continue
            style, seconds = np.mean([r["style"] for r in mine]), np.mean([r["seconds"] for r in mine])
            print(
                f"| {name} | {photo_set} | {style:.3f} | {style / np.mean([r['style'] for r in base]):.2f}x "
                f"| {np.mean([r['structure'] for r in mine]):.3f} | {min(r['structure'] for r in mine):.3f} "
                f"| {max(r['content'] for r in mine):.3f} | {seconds:.1f} "
                f"| {seconds / np.mean([r['seconds'] for r in base]):.2f}x |",
                flush=True,
            )


def write_figures(path: str, rows: list[dict]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_outputs(out: str, size: int, rows, images, configs, pairs, photos, paintings) -> None:
    names = [name for name, _ in configs]
    sheet = draw_grid(
        [[paintings[painting], *(images[name, p, painting] for name in names)] for p, painting in pairs],
        row_labels=[f"{p} x {painting}" for p, painting in pairs],
        col_labels=["painting", *names],
        row_headers=[photos[p] for p, _ in pairs],
        options=GridOptions(cell=min(size, 256)),
    )
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(f"{out}_{size}.png")
    print(f"\ncontact sheet: {out}_{size}.png, figures: {out}_{size}.csv")


if __name__ == "__main__":
    main()
