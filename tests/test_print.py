"""Print sizes: tiled loss and gradient, seams, the memory plan, checkpoints.

Small images stand in for print sizes: tiles are forced (NST_TILE) where memory would ask for
them, so each test takes seconds to a minute on a CPU.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from keras import ops

from conftest import REPO, SAMPLES, first, nst
from nst_core import backend, checkpoint, memory, tiling
from nst_core.image_io import load_image
from nst_core.objective import compiled_objective
from nst_core.params import StyleParams
from nst_core.storage import LOCAL
from nst_core.stylize import Job, stylize, stylize_batch
from nst_core.targets import loss_args


@pytest.fixture(scope="module")
def images():
    content = load_image(str(SAMPLES / "content" / "chelsea.jpg"), LOCAL, max_side=256)
    style = load_image(str(SAMPLES / "styles" / "starry_night.jpg"), LOCAL, max_side=256)
    return content, style


def _cosine(a, b) -> float:
    a, b = np.ravel(ops.convert_to_numpy(a)), np.ravel(ops.convert_to_numpy(b))
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.skipif(
    backend.NAME == "jax",
    reason="tiles are TensorFlow-only for now: under JAX each eager operation compiles anew for every tile "
    "shape, and this test ran past its 300 s timeout (README: print sizes on JAX are not usable yet)",
)
@pytest.mark.parametrize("stat", ["gram", "w2"])
def test_tiled_loss_and_gradient_match_the_whole_images(images, weights_path, stat):
    """Whole-image statistics over tiles: with the default halo the loss and gradient are the
    untiled ones to rounding, wherever the grid lies; a thin halo only approximates them."""
    content, style = images
    params = first(size=256, style_stat=stat)  # the layer weights these halo figures were measured with
    objective, _ = compiled_objective(params, weights_path)
    job = Job(content, [style], params)
    contents, whole_args = loss_args(objective, [job], 256)
    noisy = np.clip(contents[0] + np.random.default_rng(0).normal(0, 0.1, contents[0].shape), 0, 1)
    image = ops.convert_to_tensor(noisy[None].astype("float32"))
    (_, (totals, *_)), gradient = backend.value_and_grad(objective)(image, *whole_args)

    tiled = tiling.TiledObjective(objective, tile=64, seed=1)
    _, tiled_args = tiled.loss_args([job], 256)
    for move in (False, True):
        tiled_totals, _, tiled_gradient = tiled.value_and_grad(image, tiled_args, move=move)
        assert float(tiled_totals[0]) == pytest.approx(float(totals[0]), rel=1e-3)
        assert _cosine(tiled_gradient, gradient) > 0.999
    thin = tiling.TiledObjective(objective, tile=64, halo=16)
    assert 0.9 < _cosine(thin.value_and_grad(image, tiled_args, move=False)[2], gradient) < 0.999


def test_tiles_cover_the_image_once_on_the_network_stride():
    tiles = tiling.grid(100, 70, tile=32, halo=16, offset=(16, 0))
    covered = np.zeros((100, 70), int)
    for tile in tiles:
        y0, y1, x0, x1 = tile.core
        covered[y0:y1, x0:x1] += 1
        assert all(edge % 16 == 0 for edge in tile.outer[::2])  # tops and lefts on the stride
    assert (covered == 1).all()


@pytest.mark.parametrize("stat", ["swd", "bn"])
def test_statistics_that_cannot_be_tiled_are_refused_clearly(weights_path, stat):
    objective, _ = compiled_objective(StyleParams(style_stat=stat), weights_path)
    with pytest.raises(tiling.TilingError, match=f"style_stat {stat} cannot be computed over tiles"):
        tiling.TiledObjective(objective, tile=64)


@pytest.mark.slow
@pytest.mark.timeout(900)  # 24 tiles a step, each read with its halo: 2 to 5 minutes on 2 cores
def test_forced_tiles_leave_no_seam_and_the_measure_sees_one_without_a_halo(images, weights_path, monkeypatch):
    """The worst case, a grid that never moves, in forced 32 px tiles: the seam measure (gradient
    energy across tile borders over that across other lines) stays within 10% of 1 with the halo;
    without one, the same run shows its seams, so the measure can see them."""
    content, style = images
    monkeypatch.setenv("NST_TILE", "32")
    ratios = {}
    for halo in (tiling.HALO, 0):
        monkeypatch.setattr(
            tiling.TiledObjective,
            "tiles",
            lambda self, height, width, move=False, halo=halo: tiling.grid(height, width, 32, halo),
        )
        result = stylize(content, [style], first(size=192, iterations=20, tolerance=0), weights=weights_path)
        ratios[halo] = tiling.seam_ratio(result.image, 32)
    assert 0.9 <= ratios[tiling.HALO] <= 1.1 and ratios[0] > 1.1, ratios


def test_a_scale_runs_in_one_pass_in_tiles_or_is_refused_by_the_memory_model():
    one_pass = memory.one_pass_bytes(4096 * 2731)
    assert memory.plan_scale(512, 768, 1, 16 * 2**30).tile is None
    plan = memory.plan_scale(2731, 4096, 1, 16 * 2**30)
    assert plan.tile and plan.fits and plan.bytes <= 16 * 2**30 < one_pass
    assert memory.batch_fits(512 * 512, 16 * 2**30) > memory.batch_fits(1024 * 1024, 16 * 2**30) >= 1
    with pytest.raises(
        memory.MemoryPlanError,
        match=r"needs about \d+\.\d GB even in tiles of 128 px, over the "
        r"memory limit of 2.0 GB",
    ):
        memory.check([(2731, 4096)], 1, 2 * 2**30)


def test_the_painting_at_its_style_scale_counts_in_the_memory_plan(samples):
    """style_scale sizes the painting, which is measured whole at a scale in one pass: at 1.2 GB a
    512 px pair fits at style_scale 1, and at 8 (the largest) its painting is refused by the plan; at 4
    the painting sends a scale the photo alone would do in one pass to tiles. Past 8 it is a bad value."""
    from flows.manifest import Pair
    from flows.pairs import load_pairs
    from nst_core.stylize import painting_pixels, scale_shapes

    folder = samples("", "chelsea", "starry_night")
    pairs = [
        Pair(
            1,
            str(folder / "chelsea.jpg"),
            (str(folder / "starry_night.jpg"),),
            StyleParams(size=512, style_scale=scale),
            f"at {scale}",
            str(folder / f"{scale}.png"),
        )
        for scale in (1, 8)
    ]
    errors = {}
    (loaded,) = load_pairs(pairs, LOCAL, 1.2, lambda pair, error: errors.setdefault(pair.pair_id, str(error)))
    assert loaded.pair.pair_id == "at 1"
    assert "over the memory limit of 1.2 GB; lower `size` or `style_scale` for this pair" in errors["at 8"]
    job = Job(loaded.job.content, loaded.job.styles, loaded.job.params.replace(style_scale=4))
    shapes = scale_shapes(job.content.shape, job.params)
    photo_alone = memory.plan_pair(shapes, 1, 1.2 * 2**30, "vgg16")
    paintings = painting_pixels([job])
    with_painting = memory.plan_pair(shapes, 1, 1.2 * 2**30, "vgg16", paintings)
    assert photo_alone[1].tile is None and with_painting[1].tile
    assert with_painting[1].bytes <= 1.2 * 2**30 < memory.painting_bytes(paintings[1], "vgg16")  # measured in tiles
    with pytest.raises(ValueError, match="style_scale must be above 0 and at most 8, got 60$"):
        StyleParams(style_scale=60)


def test_a_too_large_pair_is_refused_before_any_work(images, weights_path, monkeypatch):
    content, style = images
    monkeypatch.setattr(tiling.TiledObjective, "__init__", lambda *_: pytest.fail("work started"))
    with pytest.raises(memory.MemoryPlanError, match="even in tiles"):
        stylize_batch([Job(content, [style], StyleParams(size=4096))], weights=weights_path, memory_limit=2**30)


class _Killed(Exception):
    pass


def test_a_resumed_pair_continues_from_its_checkpoint_to_the_same_image(images, weights_path, tmp_path, monkeypatch):
    """Stopped mid-run after a save, rerun: it starts from the saved step, not 0, and ends on the
    image an uninterrupted run gives (the whole optimiser state was kept)."""
    content, style = images
    params = StyleParams(size=64, iterations=12, tolerance=0, scales=(48,), coarse_iterations=6)
    whole = stylize(content, [style], params, weights=weights_path)
    monkeypatch.setenv("NST_CHECKPOINT_SECONDS", "0")  # save before every step
    path = str(tmp_path / "out.png.checkpoint.npz")

    def stop_at_second_scale(index, scale_index, side, progress, image):
        if scale_index == 1 and progress.iteration == 5:
            raise _Killed

    with pytest.raises(_Killed):
        stylize_batch([Job(content, [style], params, path)], weights=weights_path, callback=stop_at_second_scale)
    steps = []
    (resumed,) = stylize_batch(
        [Job(content, [style], params, path)],
        weights=weights_path,
        callback=lambda index, scale_index, side, progress, image: steps.append((scale_index, progress.iteration)),
    )
    assert steps[0] == (1, 5) and len(steps) == 8  # the 5th step of the second scale redone (it was unsaved), on to 12
    assert resumed.loss_history == pytest.approx(whole.loss_history, rel=1e-5)
    np.testing.assert_allclose(resumed.image, whole.image, atol=1e-4)


def test_a_checkpoint_of_another_job_is_ignored(images, weights_path, tmp_path, monkeypatch):
    content, style = images
    monkeypatch.setenv("NST_CHECKPOINT_SECONDS", "0")
    path = str(tmp_path / "out.png.checkpoint.npz")
    params = StyleParams(size=48, iterations=4, tolerance=0)
    stylize_batch([Job(content, [style], params, path)], weights=weights_path)
    steps = []
    stylize_batch(
        [Job(content, [style], params.replace(style_weight=3.0), path)],
        weights=weights_path,
        callback=lambda *args: steps.append(args[3].iteration),
    )
    assert steps[0] == 1


def _results(out: Path):
    from flows.results import read_results

    return read_results(str(out / "results"), storage=LOCAL)


def test_a_sigkilled_long_pair_resumes_and_other_pairs_are_not_redone(prefect_api, tmp_path, samples, weights_path):
    """SIGKILL of a real `nst run` once the second pair has saved a checkpoint (the first pair
    finished), then a rerun: the second resumes from the saved step and finishes; the first is
    skipped; the checkpoint is gone."""
    samples("photos", "chelsea", "coffee")
    samples("", starry_night="style.jpg")
    manifest = tmp_path / "m.csv"
    # Only the second pair has to be long (to be killed mid-run): the first, run first (the flow
    # sorts by photo), needs only to finish, so it takes a few steps of its own.
    manifest.write_text("content,style,iterations\nphotos/chelsea.jpg,style.jpg,5\nphotos/coffee.jpg,style.jpg,150\n")
    out = tmp_path / "out"
    command = nst("run", str(manifest), "--out", str(out), "--size", "96", "--tolerance", "0", "--batch-size", "1")
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "NST_WEIGHTS": weights_path, "NST_CHECKPOINT_SECONDS": "1"}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline, saved = time.time() + 300, []
    while process.poll() is None and time.time() < deadline and not saved:
        done = list((out / "results").glob("part-*.parquet"))
        saved = [path for path in out.glob("*.checkpoint.npz") if done]
        time.sleep(0.2)
    assert saved, "no checkpoint of the second pair before the run ended"
    time.sleep(np.random.default_rng(16).uniform(0.5, 3.0))  # a random point after the first save
    process.kill()
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    first = _results(out)
    assert list(first.status) == ["succeeded"]
    stored_step = checkpoint._read(str(saved[0]))[0]["iteration"]
    assert stored_step > 0
    rerun = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming from checkpoint at scale 0, step " in rerun.stderr
    resumed_step = int(rerun.stderr.split("resuming from checkpoint at scale 0, step ")[1].split()[0])
    assert resumed_step == stored_step  # the last save before the kill
    final = _results(out)
    assert final.pair_id.is_unique and set(final.status) == {"succeeded"} and len(final) == 2  # none redone
    assert not list(out.glob("*.checkpoint.npz")) and not list(out.glob(".*.tmp"))
