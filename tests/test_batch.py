"""Batches: several pairs optimised as one tensor end where each would have alone.

Real VGG weights, 64 px, few steps. "Identical" is measured. A batched convolution rounds
differently from a single one, and L-BFGS without a line search amplifies rounding after
5-10 steps (sooner under JAX): a 1e-6 change of the content image moves a 25-step result
by 0.1-0.9% in loss and 0.007-0.02 in mean pixel value, and batching moves it by as much
(0.3-1.3%, 0.004-0.009).
So: the same losses to 0.1% over the first 5 steps (the same algorithm, per image), then
final losses within 3% and images within 0.03 (the same quality), and failures of their own.
"""

import numpy as np
import pytest

from conftest import SAMPLES, first
from nst_core import backend
from nst_core.image_io import load_image
from nst_core.objective import compiled_objective
from nst_core.optimize import NonFiniteLossError
from nst_core.storage import LOCAL
from nst_core.stylize import Job, batch_key, stylize, stylize_batch

SIZE = 64


def _load(folder, name, side=SIZE):
    return load_image(str(SAMPLES / folder / name), LOCAL, max_side=side)


@pytest.fixture(scope="module")
def jobs():
    """Three pairs of one output size: two contents cropped alike, three styles, three style weights."""
    chelsea, coffee = _load("content", "chelsea.jpg"), _load("content", "coffee.jpg")
    height, width = min(chelsea.shape[0], coffee.shape[0]), min(chelsea.shape[1], coffee.shape[1])
    chelsea, coffee = chelsea[:height, :width], coffee[:height, :width]
    styles = [_load("styles", name) for name in ("starry_night.jpg", "the_scream.jpg", "shipwreck.jpg")]
    # Style weights 10, 30 and 3 over the first tables' layer weights, where these tolerances were measured.
    params = first(size=SIZE, iterations=25, tolerance=0)
    return [
        Job(chelsea, [styles[0]], params),
        Job(coffee, [styles[1]], params.replace(style_weight=30.0, seed=3)),
        Job(chelsea, [styles[2]], params.replace(style_weight=3.0, tv_weight=0.0)),
    ]


def _assert_same(batched, alone):
    np.testing.assert_allclose(batched.loss_history[:5], alone.loss_history[:5], rtol=1e-3)
    assert batched.total_loss == pytest.approx(alone.total_loss, rel=0.03)
    assert batched.style_loss == pytest.approx(alone.style_loss, rel=0.05)
    assert batched.content_loss == pytest.approx(alone.content_loss, rel=0.05, abs=1e-6)
    assert np.abs(batched.image - alone.image).mean() < 0.03


@pytest.mark.backends
def test_a_batch_gives_each_pair_its_result_alone(jobs, weights_path):
    batched = stylize_batch(jobs, weights=weights_path)
    alone = [stylize(job.content, job.styles, job.params, weights=weights_path) for job in jobs]
    for b, a in zip(batched, alone):
        assert b.iterations == a.iterations == 25 and (b.batch_size, a.batch_size) == (3, 1)
        _assert_same(b, a)
    # The pairs differ, so this is not one image three times.
    assert len({round(r.style_loss, 4) for r in batched}) == 3
    assert batched[0].loss_history[-1] < 0.5 * batched[0].loss_history[0]


def test_each_pair_stops_by_its_own_rule(jobs, weights_path):
    """A pair that is done stops recording; the others go on to their own end."""
    short = jobs[0].params.replace(iterations=12)
    converging = jobs[2].params.replace(iterations=300, tolerance=0.05, patience=5)
    batch = [Job(jobs[0].content, jobs[0].styles, short), jobs[1], Job(jobs[2].content, jobs[2].styles, converging)]
    batched = stylize_batch(batch, weights=weights_path)
    assert [r.iterations for r in batched[:2]] == [12, 25]
    assert batched[2].iterations < 100  # its tolerance ended it, long before its 300 steps
    _assert_same(batched[0], stylize(batch[0].content, batch[0].styles, short, weights=weights_path))


def test_a_non_finite_pair_fails_alone(jobs, weights_path):
    broken = jobs[0].params.replace(style_weight=1e39, content_weight=1e39)
    outcomes = stylize_batch([Job(jobs[0].content, jobs[0].styles, broken), jobs[1]], weights=weights_path)
    assert isinstance(outcomes[0], NonFiniteLossError)
    alone = stylize(jobs[1].content, jobs[1].styles, jobs[1].params, weights=weights_path)
    _assert_same(outcomes[1], alone)


def test_coarse_to_fine_batches_every_scale(jobs, weights_path):
    params = jobs[0].params.replace(scales=(32,), coarse_iterations=5, iterations=5)
    batch = [Job(job.content, job.styles, params) for job in jobs[:2]]
    batched = stylize_batch(batch, weights=weights_path)
    for job, result in zip(batch, batched):
        assert result.scale_iterations == [5, 5]
        _assert_same(result, stylize(job.content, job.styles, params, weights=weights_path))


def test_pairs_that_cannot_share_a_batch_are_refused(jobs, weights_path):
    other_size = Job(jobs[0].content, jobs[0].styles, jobs[0].params.replace(size=48))
    assert batch_key(other_size.content.shape, other_size.params) != batch_key(jobs[0].content.shape, jobs[0].params)
    other_layers = Job(jobs[0].content, jobs[0].styles, jobs[0].params.replace(content_layers=("block3_conv2",)))
    for stranger in (other_size, other_layers):
        with pytest.raises(ValueError, match="batch_key"):
            stylize_batch([jobs[0], stranger], weights=weights_path)
    # Loss weights and seeds may differ within a batch: they are arguments, not the graph.
    assert batch_key(jobs[1].content.shape, jobs[1].params) == batch_key(jobs[0].content.shape, jobs[0].params)


@pytest.mark.skipif(backend.NAME == "jax", reason="jax.jit compiles once per input shape")
def test_after_four_traces_one_tensorflow_graph_serves_every_shape_and_batch(jobs, weights_path):
    """A trace takes seconds: a night of photos in many shapes and batch sizes traces the step four
    times, once more as each of batch, height and width first changes (backend.compiles), not once
    per shape; nst run --plan counts it so."""
    params = jobs[0].params.replace(size=48, iterations=2, content_layers=("block2_conv2",))  # a step of its own
    _, step = compiled_objective(params, weights_path, backend.feature_dtype())
    photos = np.random.default_rng(0).random((3, 48, 48, 3), dtype=np.float32)
    shapes = [((36, 48), 1), ((48, 48), 1), ((40, 48), 1), ((36, 48), 2), ((48, 32), 2), ((48, 48), 3), ((30, 48), 1)]
    for (height, width), batch in shapes:
        batched = [Job(photo[:height, :width], job.styles, params) for photo, job in zip(photos[:batch], jobs)]
        stylize_batch(batched, weights=weights_path)
    assert step.experimental_get_tracing_count() == backend.compiles(len(shapes)) == 4
