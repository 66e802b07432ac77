"""`nst run --plan`: the night's pairs in the batches the run makes, with their time and memory, from the
images' headers and this machine's cached speed; nothing written."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import time

import pytest

from conftest import SAMPLES, nst
from flows.manifest import expand_manifest
from flows.pairs import plan_batches
from flows.plan import duration, plan_lines, plan_night
from nst_core import backend, memory, runtime, speed
from nst_core.storage import LOCAL

# Made-up figures, so the arithmetic is checked exactly; the model's fit is tests/test_speed.py's.
SPEED = speed.Speed(
    per_step=0.1, per_pixel_step=1e-6, targets_per_pixel=2e-6, compile_seconds=5.0, machine="", measured_at=0.0
)


@pytest.fixture
def collection(tmp_path):
    """Two photos of different shapes x two paintings, and a pair whose painting is not an image."""
    for name in ("chelsea.jpg", "rocket.jpg"):
        shutil.copy(SAMPLES / "content" / name, tmp_path / name)
    for name in ("starry_night.jpg", "the_scream.jpg"):
        shutil.copy(SAMPLES / "styles" / name, tmp_path / name)
    (tmp_path / "broken.jpg").write_bytes(b"not a picture")
    (tmp_path / "m.csv").write_text(
        "content,style,size,iterations,coarse_iterations,scales\n"
        "chelsea.jpg,starry_night.jpg,64,7,3,32\n"
        "chelsea.jpg,the_scream.jpg,64,7,3,32\n"
        "rocket.jpg,starry_night.jpg,64,7,3,32\n"
        "rocket.jpg,broken.jpg,64,7,3,32\n"
    )
    return tmp_path


def test_the_plan_batches_times_and_sizes_the_pairs_as_the_run_would(collection):
    pairs, _ = expand_manifest(str(collection / "m.csv"), str(collection / "out"), storage=LOCAL)
    plan = plan_night(pairs, LOCAL, batch_size=4, memory_limit_gb=8.0, speed=SPEED)

    assert list(plan.unreadable) == [str(collection / "broken.jpg")]  # its pair fails at once, named
    assert "broken.jpg" in plan.unreadable[str(collection / "broken.jpg")]
    # The run's batches (by parameters), split by the photo's shape: the two chelsea pairs together.
    assert len(plan_batches(pairs[:3], 4, 8.0)) == 1
    assert sorted((b.shape, b.pairs) for b in plan.batches) == [((42, 64), 2), ((43, 64), 1)]
    chelsea = next(b for b in plan.batches if b.pairs == 2)
    shapes = [(21, 32), (42, 64)]  # the photo's shape at 32 and 64 px
    steps = 3 * (0.1 + 1e-6 * 21 * 32 * 2) + 7 * (0.1 + 1e-6 * 42 * 64 * 2)  # one optimisation of both images
    targets = 2 * 2e-6 * (21 * 32 + 42 * 64)
    assert chelsea.seconds == pytest.approx(steps + targets + 5.0 * len(shapes))  # each scale compiles once
    assert chelsea.memory_bytes == max(p.bytes for p in memory.plan_pair(shapes, 2, 8 * 2**30, pairs[0].params.arch))
    assert not chelsea.tiled
    assert plan.pairs == 3 and plan.seconds == pytest.approx(sum(b.seconds for b in plan.batches))
    assert (
        plan_lines(plan, 8.0)[-1] == f"about {duration(plan.seconds)} for 3 pairs on this machine (memory limit 8.0 GB)"
    )

    tight = plan_night(pairs, LOCAL, batch_size=4, memory_limit_gb=0.5, speed=SPEED)
    assert all(b.tiled for b in tight.batches)  # under the network's own size, every scale in tiles
    # Under TensorFlow a step compiles for its first four input shapes only (test_batch checks the step).
    assert [backend.compiles(shapes) for shapes in (1, 4, 9)] == ([1, 4, 9] if backend.NAME == "jax" else [1, 4, 4])
    compiling_only = dataclasses.replace(SPEED, per_step=0.0, per_pixel_step=0.0, targets_per_pixel=0.0)
    assert plan_night(pairs, LOCAL, 4, 8.0, compiling_only).seconds == pytest.approx(5.0 * backend.compiles(4))
    # Other style layers are a step of their own: the same photo's two shapes compile again for it.
    other = dataclasses.replace(pairs[1], params=pairs[1].params.replace(style_layers=("block1_conv1",)))
    assert plan_night([pairs[0], other], LOCAL, 4, 8.0, compiling_only).seconds == pytest.approx(5.0 * 2 * 2)
    assert [duration(s) for s in (45, 720, 12000)] == ["45 s", "12 min", "3 h 20 min"]


def test_nst_run_plan_prints_the_night_and_writes_nothing(collection, weights_path):
    runtime.load()
    cache = collection / "speed.json"
    measured = dataclasses.replace(SPEED, machine=speed.machine_key(), measured_at=time.time())
    cache.write_text(json.dumps(dataclasses.asdict(measured)))
    out = collection / "out"
    result = subprocess.run(
        nst("run", collection / "m.csv", "-o", out, "--plan", "--weights", weights_path),
        capture_output=True,
        text=True,
        env={**os.environ, "NST_SPEED_CACHE": str(cache)},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].endswith("4 pairs: 4 new, 0 changed, 0 unchanged (skipped); 4 to stylize")
    assert "  1 x 2 pairs at 64 x 42 px: " in result.stdout and "  1 x 1 pair at 64 x 43 px: " in result.stdout
    assert any(line.startswith("  fails at once: ") and "broken.jpg" in line for line in lines)
    assert "for 3 pairs on this machine" in result.stdout
    assert not out.exists()  # nothing written: no outputs, no results table
    assert json.loads(cache.read_text()) == dataclasses.asdict(measured)  # the cached speed used, not measured again


def test_nst_run_names_the_files_that_will_fail_before_the_backend_or_prefect_starts(collection):
    """The bad painting is named first, then the run goes on: here it stops at the next step, the
    weights check (a file that is not there), so the name came before the backend loaded."""
    (collection / "m.csv").write_text("content,style,size\nchelsea.jpg,broken.jpg,32\nchelsea.jpg,gone.jpg,32\n")
    result = subprocess.run(
        nst("run", collection / "m.csv", "-o", collection / "out", "--weights", collection / "no-weights.h5"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    start = lines.index("nst: 2 file(s) cannot be stylized; their pairs will fail:")
    assert lines[start + 1 : start + 3] == [
        f"  {collection / 'broken.jpg'}: not an image Pillow can read",
        f"  {collection / 'gone.jpg'}: file not found",
    ]
    assert "no-weights.h5" in "\n".join(lines[start + 3 :])  # the weights error came after
    assert not (collection / "out" / "results").exists()
