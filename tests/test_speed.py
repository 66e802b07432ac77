"""The measured speed model that plans a night: its fit, its cache, and its estimate against a real run."""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest

from nst_core import speed
from nst_core.params import StyleParams
from nst_core.stylize import Job, scale_shapes, stylize_batch

SIDES = (64, 128)  # small, so the suite stays quick; the estimate is checked at these sizes


@pytest.fixture(scope="module")
def measured(weights_path):
    return speed.measure(weights_path, sides=SIDES)


def test_measured_figures_are_this_machines(measured):
    assert measured.per_pixel_step > 0
    assert measured.per_step >= 0
    assert measured.targets_per_pixel > 0
    assert measured.machine == speed.machine_key()
    # a step at the larger side costs more than at the smaller
    assert measured.step_seconds(128 * 128) > measured.step_seconds(64 * 64)


def test_pair_is_the_sum_of_its_scales(measured):
    shapes, steps = [(48, 64), (96, 128)], [10, 20]
    whole = measured.pair_seconds(shapes, steps)
    assert whole == pytest.approx(sum(measured.pair_seconds([s], [n]) for s, n in zip(shapes, steps)))
    # in a batch each pair pays its share of the fixed part only
    assert measured.pair_seconds(shapes, steps, batch=4) < whole


def test_estimate_is_near_a_real_run(measured, weights_path):
    params = StyleParams(size=128, scales=(64,), coarse_iterations=10, iterations=10, tolerance=0.0)
    photo = np.random.default_rng(1).random((96, 128, 3), dtype=np.float32)
    painting = np.random.default_rng(2).random((128, 128, 3), dtype=np.float32)
    stylize_batch([Job(photo, [painting], params)], weights=weights_path)  # compiled, as in a run's later pairs
    started = time.perf_counter()
    (outcome,) = stylize_batch([Job(photo, [painting], params)], weights=weights_path)
    seconds = time.perf_counter() - started
    estimate = measured.pair_seconds(scale_shapes(photo.shape, params), outcome.scale_iterations)
    assert outcome.scale_iterations == [10, 10]
    assert 0.5 * seconds < estimate < 2 * seconds, (estimate, seconds)


def test_cache_is_reused_and_measured_again_when_stale_or_another_machines(tmp_path, measured, monkeypatch):
    path = tmp_path / "speed.json"
    path.write_text(json.dumps(dataclasses.asdict(measured)))
    calls = []
    monkeypatch.setattr(speed, "measure", lambda *args, **kw: calls.append(1) or dataclasses.replace(measured))

    assert speed.cached(str(path), None) == measured
    assert calls == []

    speed.cached(str(path), None, now=measured.measured_at + (speed.MAX_AGE_DAYS + 1) * 86400)
    assert calls == [1]

    path.write_text(json.dumps({**dataclasses.asdict(measured), "machine": "another machine"}))
    speed.cached(str(path), None)
    assert calls == [1, 1]
    assert json.loads(path.read_text())["machine"] == speed.machine_key()  # the new figures are kept

    path.write_text("{not json")
    speed.cached(str(path), None)
    assert calls == [1, 1, 1]
