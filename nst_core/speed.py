"""How long pairs take on this machine, before any work: a measured model of a step, cached.

A step of the optimiser at a scale of `pixels` per image costs about
    seconds = per_step + per_pixel_step * pixels * batch
(the network's convolutions grow with the pixels; the compiled call and L-BFGS's bookkeeping
add a fixed part), a scale's targets (the photo's features; a painting's statistics are cached)
about targets_per_pixel * pixels, and the first step at an image shape not seen before
compile_seconds more (under TensorFlow only the first few shapes: backend.compiles). The
figures are measured here once (a few steps at two sizes, about 20 s) and kept in a small JSON
file, measured again when the machine, backend, precision or objective (style layers and
statistic) differ or the figures are older than MAX_AGE_DAYS.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import backend
from .model import resolve_weights
from .params import StyleParams

CALIBRATION_SIDES = (128, 320)  # px, square: two sizes fit the fixed and the per-pixel part
CALIBRATION_STEPS = 8  # timed steps at each side, after WARMUP_STEPS (the first compiles)
WARMUP_STEPS = 2
MAX_AGE_DAYS = 30  # a machine's speed drifts with its software: measure again after a month


@dataclass(frozen=True)
class Speed:
    """This machine's measured cost of a step and of a scale's targets."""

    per_step: float  # seconds
    per_pixel_step: float  # seconds per pixel per step
    targets_per_pixel: float  # seconds per output pixel, at each scale
    compile_seconds: float  # the first step at a new image shape, beyond a step
    machine: str  # what the figures hold for (machine_key())
    measured_at: float  # time.time()

    def step_seconds(self, pixels: int, batch: int = 1) -> float:
        return self.per_step + self.per_pixel_step * pixels * batch

    def pair_seconds(self, shapes: list[tuple[int, int]], steps: list[int], batch: int = 1) -> float:
        """One pair's share of its batch's seconds: every scale's steps and targets."""
        total = 0.0
        for (height, width), count in zip(shapes, steps):
            pixels = height * width
            total += count * self.step_seconds(pixels, batch) / batch + self.targets_per_pixel * pixels
        return total


def machine_key(params: StyleParams = StyleParams()) -> str:
    """What a measured speed depends on: the CPU or GPU, the cores, the backend and precision, the network
    and what a step computes (the style layers and statistic: each a compiled objective of its own)."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    device = "gpu" if backend.has_gpu() else f"{os.cpu_count()} cpus"
    return f"{cpu}, {device}, {backend.NAME}, {backend.feature_dtype()}, {params.arch}, {params.compile_key().hash()}"


def _timed(side: int, weights: str | None, params: StyleParams) -> tuple[float, float, float]:
    """(seconds per step after the warm-up, a scale's targets, compiling a new shape's step) at side x side."""
    from .objective import compiled_objective  # the network: only when measuring
    from .stylize import Job, stylize_batch
    from .targets import loss_args

    rng = np.random.default_rng(0)
    job = Job(
        rng.random((side, side, 3), dtype=np.float32),
        [rng.random((side, side, 3), dtype=np.float32)],
        params.replace(size=side, scales=(), min_scale=0, iterations=WARMUP_STEPS + CALIBRATION_STEPS, tolerance=0.0),
    )
    times = [time.perf_counter()]
    (outcome,) = stylize_batch([job], weights=weights, callback=lambda *_: times.append(time.perf_counter()))
    if isinstance(outcome, Exception):
        raise outcome
    steps = np.diff(times[WARMUP_STEPS:])
    step = float(np.mean(steps))
    started = time.perf_counter()  # again, now traced: a scale's targets in a run (its painting's cached)
    loss_args(compiled_objective(job.params, resolve_weights(weights), backend.feature_dtype())[0], [job], side)
    targets = time.perf_counter() - started
    return step, targets, max(times[1] - times[0] - outcome.targets_seconds - step, 0.0)


def measure(weights: str | None, params: StyleParams = StyleParams(), sides=CALIBRATION_SIDES) -> Speed:
    """Time a few steps at two `sides` and fit the fixed and per-pixel parts of a step."""
    (small_step, _, _), (large_step, large_targets, compile_seconds) = (_timed(side, weights, params) for side in sides)
    small, large = (side * side for side in sides)
    per_pixel = max((large_step - small_step) / (large - small), 0.0)
    return Speed(
        per_step=max(small_step - per_pixel * small, 0.0),
        per_pixel_step=per_pixel,
        targets_per_pixel=large_targets / large,
        compile_seconds=compile_seconds,
        machine=machine_key(params),
        measured_at=time.time(),
    )


def cached(path: str, weights: str | None, params: StyleParams = StyleParams(), now: float | None = None) -> Speed:
    """This machine's Speed from `path`, measured (and written there) when missing, stale or another machine's."""
    now = time.time() if now is None else now
    file = Path(os.path.expanduser(path))
    try:
        speed = Speed(**json.loads(file.read_text()))
        if speed.machine == machine_key(params) and now - speed.measured_at < MAX_AGE_DAYS * 86400:
            return speed
    except (OSError, ValueError, TypeError):
        pass  # none yet, or unreadable: measure
    speed = measure(weights, params)
    file.parent.mkdir(parents=True, exist_ok=True)
    temporary = file.with_suffix(".tmp")
    temporary.write_text(json.dumps(asdict(speed), indent=1))
    temporary.replace(file)  # a reader never sees half a file
    return speed
