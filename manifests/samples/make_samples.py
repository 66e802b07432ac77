"""Regenerate the sample images in this folder (run from anywhere).

Content photos come from scikit-image's bundled data; style paintings from
shared/images/styles/ beside the repository (public-domain paintings).
Each is resized so its longest side is 256 px and saved as JPEG quality 88.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from skimage import data

HERE = Path(__file__).resolve().parent
STYLES_SOURCE = HERE.parents[2] / "shared" / "images" / "styles"
SIDE, QUALITY = 256, 88
CONTENT = {"astronaut": data.astronaut, "chelsea": data.chelsea, "coffee": data.coffee, "rocket": data.rocket}
STYLES = ("starry_night", "the_scream", "shipwreck")


def save(image: Image.Image, path: Path) -> None:
    image = ImageOps.exif_transpose(image).convert("RGB")
    image.thumbnail((SIDE, SIDE), Image.Resampling.LANCZOS)  # longest side 256, aspect kept
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "JPEG", quality=QUALITY, optimize=True)
    print(f"{path.relative_to(HERE)}: {image.size[0]} x {image.size[1]}, {path.stat().st_size // 1024} KB")


def main() -> None:
    for name, load in CONTENT.items():
        save(Image.fromarray(np.asarray(load())), HERE / "content" / f"{name}.jpg")
    for name in STYLES:
        with Image.open(STYLES_SOURCE / f"{name}.jpg") as painting:
            save(painting, HERE / "styles" / f"{name}.jpg")


if __name__ == "__main__":
    main()
