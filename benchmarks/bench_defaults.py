"""How the defaults were chosen: a sweep of one parameter and the initialisation.

For each setting it prints the final content, style and TV losses (relative
errors, the same measure whatever the setting) and the steps taken, and writes a
picture grid to look at (rows: pair x init, columns: the swept values).
Usage: python benchmarks/bench_defaults.py [--size 192] [--sweep style_weight=3,10,30,100]
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

from nst_core.image_io import load_image, save_image  # noqa: E402
from nst_core.params import StyleParams  # noqa: E402
from nst_core.storage import LOCAL  # noqa: E402
from nst_core.stylize import stylize  # noqa: E402

SAMPLES = REPO / "manifests" / "samples"
PAIRS = [("chelsea", "starry_night"), ("astronaut", "the_scream")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--weights", default=os.environ.get("NST_WEIGHTS"))
    parser.add_argument("--sweep", default="style_weight=3,10,30,100", help="NAME=V1,V2,...")
    parser.add_argument("--inits", default="content,noise")
    parser.add_argument("--out", default="out/bench_defaults.png")
    args = parser.parse_args()
    name, values = args.sweep.split("=")
    values = [StyleParams.parse(name, v) for v in values.split(",")]
    print(f"| pair | init | {name} | content loss | style loss | tv loss | steps | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for content_name, style_name in PAIRS:
        content = load_image(str(SAMPLES / "content" / f"{content_name}.jpg"), LOCAL, max_side=args.size)
        style = load_image(str(SAMPLES / "styles" / f"{style_name}.jpg"), LOCAL, max_side=args.size)
        for init in args.inits.split(","):
            cells = []
            for value in values:
                params = StyleParams(size=args.size, init=init).replace(**{name: value})
                started = time.perf_counter()
                result = stylize(content, [style], params, weights=args.weights)
                print(
                    f"| {content_name} x {style_name} | {init} | {value} | {result.content_loss:.3f} "
                    f"| {result.style_loss:.4f} | {result.tv_loss:.4f} | {result.iterations} "
                    f"| {time.perf_counter() - started:.1f} |",
                    flush=True,
                )
                cells.append(result.image)
            height = min(c.shape[0] for c in cells)
            rows.append(np.concatenate([c[:height] for c in cells], axis=1))
    width = min(r.shape[1] for r in rows)
    save_image(np.concatenate([r[:, :width] for r in rows], axis=0), args.out, LOCAL)
    print(f"grid: {args.out}")


if __name__ == "__main__":
    main()
