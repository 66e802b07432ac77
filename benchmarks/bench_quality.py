"""Picture quality by a measure the optimisation never sees: the defaults are chosen by it.

Every configuration stylizes the same pairs (4 scikit-image photos x the 3 shared
paintings, 12 in all) in this run; the first configuration is the baseline. For each
pair it prints (nst_core.quality):
- style: the independent style distance (Magenta's style-predict network; 0 = the
  painting's style, 1 = the photo's), the measure defaults are judged by;
- content: relative VGG block4_conv2 feature distance to the photo (1.0 is the limit);
- gram: the Gram-matrix loss, the quantity the default objective minimises (not a judge);
then per configuration the means, the worst content distance, seconds per pair and the
ratios to the baseline, and writes a contact sheet (rows: pairs; columns: the painting,
then each configuration) and a CSV of every figure.

A configuration is NAME:FIELD=VALUE;FIELD=VALUE... over StyleParams (size comes from
--size), e.g. "w2:style_stat=w2;style_weight=30".
Usage: python benchmarks/bench_quality.py [--size 256] [--config SPEC ...] [--photos a,b] [--pairs 12] [--skip 0]
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
from skimage import data  # noqa: E402

from nst_core import quality  # noqa: E402
from nst_core.grid import GridOptions, draw_grid  # noqa: E402
from nst_core.image_io import load_image  # noqa: E402
from nst_core.params import StyleParams  # noqa: E402
from nst_core.stylize import Job, resize, size_for, stylize_batch  # noqa: E402
from nst_core.targets import style_load_side  # noqa: E402

SHARED = REPO.parent / "shared"
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
PAINTINGS = ("starry_night", "the_scream", "shipwreck")
# The defaults before issue 13, pinned, so the baseline stays "before" whatever params.py says now.
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
    """A scikit-image photo as RGB in [0, 1]: a stereo pair gives its left view, a grey photo three
    equal channels."""
    image = getattr(data, name)()
    image = image[0] if isinstance(image, tuple) else image
    image = np.atleast_3d(image)[..., :3].astype(np.float32) / 255.0
    image = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image
    return resize(image, size_for(image.shape, side))


def load_painting(name: str, side: int) -> np.ndarray:
    return load_image(str(SHARED / "images" / "styles" / f"{name}.jpg"), max_side=side)


def run_config(params: StyleParams, photos: dict, pairs, weights: str) -> dict:
    """{(photo, painting): (image, seconds, steps per scale)}; the pairs of one photo run as one
    batch, each painting loaded as the pipeline loads it for these params."""
    paintings = {name: load_painting(name, style_load_side(params.size, params)) for name in PAINTINGS}
    out = {}
    for photo_name in dict.fromkeys(p for p, _ in pairs):
        names = [painting for p, painting in pairs if p == photo_name]
        started = time.perf_counter()
        jobs = [Job(photos[photo_name], [paintings[name]], params) for name in names]
        outcomes = stylize_batch(jobs, weights=weights)
        seconds = (time.perf_counter() - started) / len(jobs)
        for name, outcome in zip(names, outcomes):
            out[photo_name, name] = (
                outcome if isinstance(outcome, Exception) else (outcome.image, seconds, outcome.scale_iterations)
            )
    return out


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
    parser.add_argument(
        "--photos",
        default=",".join(PHOTOS),
        help="scikit-image photos, comma-separated; e.g. stereo_motorcycle,camera: photos the defaults "
        "were not chosen on",
    )
    parser.add_argument("--pairs", type=int, default=12, help="the first N of photo x painting")
    parser.add_argument("--skip", type=int, default=0, help="of those, leave out the first K (a later slice)")
    parser.add_argument(
        "--weights",
        default=os.environ.get("NST_WEIGHTS") or str(SHARED / "weights" / "vgg16_imagenet_notop.weights.h5"),
    )
    parser.add_argument("--out", default="out/bench_quality")
    args = parser.parse_args()

    configs = [parse_config(spec, args.size) for spec in [args.baseline, *args.config] if spec]
    names = [name.strip() for name in args.photos.split(",") if name.strip()]
    pairs = [(p, s) for p in names for s in PAINTINGS][args.skip : args.pairs]
    photos = {name: photo(name, args.size) for name in names}
    paintings = {name: load_painting(name, args.size) for name in PAINTINGS}  # what the measure compares with
    vgg = quality.VggDistances(args.weights)
    rows, images = [], {}
    print("| config | pair | style | content | gram | s/pair | steps |\n|---|---|---|---|---|---|---|", flush=True)
    for name, params in configs:
        for (photo_name, painting), outcome in run_config(params, photos, pairs, args.weights).items():
            if isinstance(outcome, Exception):
                print(f"| {name} | {photo_name} x {painting} | failed: {outcome} |", flush=True)
                images[name, photo_name, painting] = str(outcome)
                continue
            image, seconds, steps = outcome
            content, style = resize(photos[photo_name], image.shape[:2]), paintings[painting]
            row = {
                "config": name,
                "photo": photo_name,
                "painting": painting,
                "style": quality.style_distance(image, style, content),
                "content": vgg.content_distance(image, content),
                "gram": vgg.gram_distance(image, style),
                "seconds": seconds,
            }
            rows.append(row)
            images[name, photo_name, painting] = image
            print(
                f"| {name} | {photo_name} x {painting} | {row['style']:.3f} | {row['content']:.3f} "
                f"| {row['gram']:.4f} | {seconds:.1f} | {'+'.join(map(str, steps))} |",
                flush=True,
            )
    summarize(rows, [name for name, _ in configs])
    write_outputs(args.out, args.size, rows, images, configs, pairs, photos, paintings)


def summarize(rows: list[dict], names: list[str]) -> None:
    def mean(name, key):
        return float(np.mean([r[key] for r in rows if r["config"] == name]))

    base_style, base_seconds = mean(names[0], "style"), mean(names[0], "seconds")
    print(
        "\n| config | mean style | vs baseline | mean content | worst content | mean gram | s/pair | time vs baseline |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        worst = max(r["content"] for r in rows if r["config"] == name)
        print(
            f"| {name} | {mean(name, 'style'):.3f} | {mean(name, 'style') / base_style:.2f}x "
            f"| {mean(name, 'content'):.3f} | {worst:.3f} | {mean(name, 'gram'):.4f} "
            f"| {mean(name, 'seconds'):.1f} | {mean(name, 'seconds') / base_seconds:.2f}x |",
            flush=True,
        )


def write_outputs(out: str, size: int, rows, images, configs, pairs, photos, paintings) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(f"{out}_{size}.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    names = [name for name, _ in configs]
    sheet = draw_grid(
        [[paintings[painting], *(images[name, p, painting] for name in names)] for p, painting in pairs],
        row_labels=[f"{p} x {painting}" for p, painting in pairs],
        col_labels=["painting", *names],
        row_headers=[photos[p] for p, _ in pairs],
        options=GridOptions(cell=min(size, 256)),
    )
    sheet.save(f"{out}_{size}.png")
    print(f"\ncontact sheet: {out}_{size}.png, figures: {out}_{size}.csv")


if __name__ == "__main__":
    main()
