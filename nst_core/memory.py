"""A pair's peak memory, planned before any work: whether each scale runs in one pass or in tiles.

The model (fitted by benchmarks/bench_print.py --memory --fit on peak resident memory, TensorFlow
on CPU, VGG16, one scale, batch 1, 256 to 2048 px, per feature precision; README, "Print sizes"):
- one pass:  BASE + batch * pixels * (PASS_BYTES_PER_PIXEL * network + L-BFGS history)
- in tiles:  BASE + batch * (tile pixels, halo included, * TILE_PASS_BYTES_PER_PIXEL * network
                             + pixels * (WHOLE_IMAGE_BYTES_PER_PIXEL + L-BFGS history))
L-BFGS history is 2 * pairs kept * 3 channels * 4 bytes per pixel (20 pairs in one pass,
tiling.PRINT_HISTORY in tiles). A pair's peak is its largest scale's.
The painting, at its style_scale size, counts too: measured whole (a scale in one pass), a forward
pass of BASE + its pixels * PAINTING_PASS_BYTES_PER_PIXEL, before the optimisation's arrays exist;
in tiles it is measured tile by tile, and only its pixels are held whole.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from .backend import feature_dtype
from .optimize import LBFGS_HISTORY
from .settings import settings
from .tiling import HALO, PRINT_HISTORY, forced_tile

BASE_BYTES = 0.95e9  # the process: Python, TensorFlow, the network (fits: 0.92e9 bfloat16, 0.97e9 float32)
# A compiled pass through VGG16 (forward and backward) and the step's arrays, per feature dtype.
PASS_BYTES_PER_PIXEL = {"bfloat16": 2806.0, "float32": 3920.0}
# An eager pass over one tile (its shape changes as the grid moves: not compiled); float32's is
# bfloat16's measured figure scaled as the compiled passes, not measured.
TILE_PASS_BYTES_PER_PIXEL = {"bfloat16": 1623.0, "float32": 1623.0 * 3920 / 2806}
WHOLE_IMAGE_BYTES_PER_PIXEL = 554.0  # at a tiled scale: image, gradient, L-BFGS vectors, content targets
# Activations per input pixel kept for the backward pass up to block5_conv1: VGG19's conv3_4 and
# conv4_4 add 16 + 8 to VGG16's 296 (channels / stride^2 summed over layers).
NETWORK_FACTOR = {"vgg16": 1.0, "vgg19": 320 / 296}
# Measured: 1024 px square output, Starry Night short-fitted to 1024 x 1638, 2.8 GB peak. Under the
# short fit a painting has up to twice the output's pixels, but style_scale multiplies them by its square.
PAINTING_PASS_BYTES_PER_PIXEL = 1200.0
PAINTING_HELD_BYTES_PER_PIXEL = 2 * 3 * 4  # as loaded and as resized to its scale: float32 RGB
MIN_TILE = 128  # below this the halo's share makes tiles slow: 4x the core's pixels at 128 px
MAX_TILE = 1024  # larger tiles save little (the halo adds 27% to a 1024 px core, 13% to 2048) and cost memory


class MemoryPlanError(ValueError):
    """A pair too large for the memory limit even in tiles."""


def default_limit_bytes() -> float:
    """$NST_MEMORY_LIMIT_GB, else two thirds of this machine's memory (16 GB of 24: a 4096 px pair's
    plan then peaks at 10.7 GB measured, where 80% let its 2896 px scale run in one pass at ~18 GB)."""
    configured = settings().memory_limit_gb
    if configured:
        return configured * 2**30
    return 2 / 3 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _history_bytes(pixels: int, pairs: int) -> float:
    return 2 * pairs * pixels * 3 * 4


def _network(arch: str) -> float:
    return NETWORK_FACTOR.get(arch, max(NETWORK_FACTOR.values()))  # "auto": the larger, until resolved


def one_pass_bytes(pixels: int, batch: int = 1, arch: str = "vgg16") -> float:
    """Peak memory of a scale of `pixels` per image optimised in one pass."""
    per_image = pixels * PASS_BYTES_PER_PIXEL[feature_dtype()] * _network(arch)
    return BASE_BYTES + batch * (per_image + _history_bytes(pixels, LBFGS_HISTORY))


def painting_bytes(pixels: int, arch: str = "vgg16") -> float:
    """Peak memory of measuring a painting of `pixels` whole: its style targets, a forward pass."""
    return BASE_BYTES + pixels * PAINTING_PASS_BYTES_PER_PIXEL * _network(arch)


def tiled_bytes(height: int, width: int, tile: int, batch: int = 1, arch: str = "vgg16") -> float:
    """Peak memory of a scale of height x width optimised in tiles of `tile` px (plus halo)."""
    outer = min(height, tile + 2 * HALO) * min(width, tile + 2 * HALO)
    pixels = height * width
    per_image = (
        outer * TILE_PASS_BYTES_PER_PIXEL[feature_dtype()] * _network(arch)
        + pixels * WHOLE_IMAGE_BYTES_PER_PIXEL
        + _history_bytes(pixels, PRINT_HISTORY)
    )
    return BASE_BYTES + batch * per_image


@dataclass(frozen=True)
class Plan:
    """How one scale runs: `tile` None for one pass; `bytes` its predicted peak; `fits` the limit."""

    tile: Optional[int]
    bytes: float
    fits: bool


def plan_scale(height: int, width: int, batch: int, limit: float, arch: str = "vgg16", painting: int = 0) -> Plan:
    """One pass when it (and measuring the `painting` of that many pixels whole) fits in `limit` bytes,
    else the largest tile up to MAX_TILE that does (fewer tiles, less halo), else the smallest tile,
    marked as not fitting. $NST_TILE forces its tile."""
    held = painting * PAINTING_HELD_BYTES_PER_PIXEL  # in tiles, the painting's pixels alone stay whole
    forced = forced_tile()
    if forced and forced < max(height, width):
        needed = tiled_bytes(height, width, forced, batch, arch) + held
        return Plan(forced, needed, needed <= limit)
    whole = max(one_pass_bytes(height * width, batch, arch), painting_bytes(painting, arch))
    if whole <= limit:
        return Plan(None, whole, True)
    for tile in range(min(MAX_TILE, max(height, width) // 16 * 16), MIN_TILE - 1, -16):
        needed = tiled_bytes(height, width, tile, batch, arch) + held
        if needed <= limit:
            return Plan(tile, needed, True)
    return Plan(MIN_TILE, tiled_bytes(height, width, MIN_TILE, batch, arch) + held, False)


def plan_pair(
    shapes: list[tuple[int, int]], batch: int, limit: float, arch: str = "vgg16", paintings: list[int] | None = None
) -> list[Plan]:
    """The plan of every scale (height, width), coarse to fine, with the largest painting's pixels
    at each (`paintings`, stylize.painting_pixels; None: not counted). A scale reuses the memory the
    ones before it freed, so the pair's peak is its largest scale's (4096 px after 2048 px in one
    pass: 10.7 GB measured, 9.9 GB predicted for 4096 px alone)."""
    paintings = paintings or [0] * len(shapes)
    return [plan_scale(h, w, batch, limit, arch, painting) for (h, w), painting in zip(shapes, paintings)]


def check(
    shapes: list[tuple[int, int]], batch: int, limit: float, arch: str = "vgg16", paintings: list[int] | None = None
) -> float:
    """The pair's predicted peak in bytes; MemoryPlanError, naming what it needs, when a scale
    cannot fit in `limit` even in tiles (its painting counted: plan_pair)."""
    plans = plan_pair(shapes, batch, limit, arch, paintings)
    worst = max(plans, key=lambda plan: plan.bytes)
    if not all(plan.fits for plan in plans):
        raise MemoryPlanError(
            f"needs about {worst.bytes / 2**30:.1f} GB even in tiles of {worst.tile} px, "
            f"over the memory limit of {limit / 2**30:.1f} GB"
        )
    return worst.bytes


def batch_fits(pixels: int, limit: float, arch: str = "vgg16") -> int:
    """How many images of `pixels` one pass can optimise together within `limit` (at least 1: a
    pair that fits no batch runs alone, in tiles)."""
    per_image = one_pass_bytes(pixels, 2, arch) - one_pass_bytes(pixels, 1, arch)
    return max(1, int((limit - BASE_BYTES) // per_image))
