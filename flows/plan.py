"""A night, planned before any work (`nst run --plan`): the pairs to do in the batches the flow would
make, how long each takes on this machine (nst_core.speed: its measured seconds per pixel-step) and the
memory it needs (nst_core.memory), from the images' headers alone.

The time is the most the run takes: a pair stops early when its picture stops improving (`tolerance`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from nst_core import backend, memory
from nst_core.image_io import image_size
from nst_core.speed import Speed
from nst_core.storage import Storage
from nst_core.stylize import scale_shapes

from .manifest import Pair, unreadable_files
from .pairs import plan_batches


@dataclass(frozen=True)
class BatchPlan:
    """One optimisation: its pairs share the output's shape (height, width)."""

    shape: tuple[int, int]
    pairs: int
    seconds: float  # steps, targets, and compiling when its shapes are new to the run
    memory_bytes: float  # the predicted peak of its largest scale
    tiled: bool  # a scale too large for one pass runs in tiles


@dataclass(frozen=True)
class NightPlan:
    batches: list[BatchPlan]
    unreadable: dict[str, str]  # file -> why its pairs will fail at once

    @property
    def seconds(self) -> float:
        return sum(batch.seconds for batch in self.batches)

    @property
    def pairs(self) -> int:
        return sum(batch.pairs for batch in self.batches)


def plan_night(todo: list[Pair], storage: Storage, batch_size: int, memory_limit_gb: float, speed: Speed) -> NightPlan:
    """The batches `todo` runs in (flows.pairs.plan_batches, then split by the photo's shape as
    stylize_pairs splits them), each with its time and memory; pairs whose files do not open are left
    out, their files named."""
    unreadable = unreadable_files(todo, storage)
    readable = [pair for pair in todo if not any(uri in unreadable for uri in pair.files)]
    photos = sorted({pair.content for pair in readable})
    with ThreadPoolExecutor(max_workers=8) as pool:  # a header each: a GET each on S3
        sizes = dict(zip(photos, pool.map(lambda uri: image_size(uri, storage), photos)))
    compiled: dict = {}  # per compiled step (compile key): the input shapes it has seen
    batches = []
    for batch in plan_batches(readable, batch_size, memory_limit_gb):
        by_shapes: dict[tuple, list[Pair]] = {}
        for pair in batch:
            width, height = sizes[pair.content]
            by_shapes.setdefault(tuple(scale_shapes((height, width), pair.params)), []).append(pair)
        for shapes, pairs in by_shapes.items():
            batches.append(_batch_plan(list(shapes), pairs, memory_limit_gb, speed, compiled))
    return NightPlan(batches, unreadable)


def _batch_plan(
    shapes: list[tuple[int, int]], pairs: list[Pair], memory_limit_gb: float, speed: Speed, compiled: dict
) -> BatchPlan:
    params, count = pairs[0].params, len(pairs)
    steps = [params.coarse_iterations] * (len(shapes) - 1) + [params.iterations]
    seen = compiled.setdefault(params.compile_key(), set())
    before = len(seen)
    seen |= {(shape, count) for shape in shapes}  # the step's input shapes: each scale's, at this batch size
    compiles = backend.compiles(len(seen)) - backend.compiles(before)
    seconds = speed.pair_seconds(shapes, steps, count) * count + speed.compile_seconds * compiles
    plans = memory.plan_pair(shapes, count, memory_limit_gb * 2**30, params.arch)
    return BatchPlan(shapes[-1], count, seconds, max(plan.bytes for plan in plans), any(plan.tile for plan in plans))


def duration(seconds: float) -> str:
    """'45 s', '12 min', '3 h 20 min'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def plan_lines(plan: NightPlan, memory_limit_gb: float) -> list[str]:
    """The plan in words: a line per kind of batch (shape and size), then the total."""
    kinds: dict[tuple, list[BatchPlan]] = {}
    for batch in plan.batches:
        kinds.setdefault((batch.shape, batch.pairs), []).append(batch)
    lines = []
    for (shape, pairs), batches in kinds.items():
        first = batches[0]
        lines.append(
            f"  {len(batches)} x {pairs} pair{'s' if pairs > 1 else ''} at {shape[1]} x {shape[0]} px: "
            f"{first.memory_bytes / 2**30:.1f} GB{' in tiles' if first.tiled else ''}, "
            f"{duration(sum(b.seconds for b in batches))}"
        )
    lines += [f"  fails at once: {reason}" for _, reason in sorted(plan.unreadable.items())]  # names the file
    lines.append(
        f"about {duration(plan.seconds)} for {plan.pairs} pairs on this machine (memory limit {memory_limit_gb:.1f} GB)"
    )
    return lines
