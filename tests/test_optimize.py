"""The L-BFGS line search and the no-progress rule, on a cheap loss (no VGG) and on real style transfer.

The cheap loss is a per-image weighted least squares with a minimum inside [0, 1], so
the optimiser's own behaviour (accepting, rejecting, backtracking) is what is measured.
"""

import numpy as np
import pytest
from keras import ops

from conftest import SAMPLES, first
from nst_core import quality
from nst_core.image_io import load_image
from nst_core.optimize import (
    MIN_JUDGED_STEPS,
    MIN_PROGRESS,
    NoProgressError,
    Track,
    lbfgs_state,
    make_lbfgs_step,
    run_optimizer,
)
from nst_core.storage import LOCAL
from nst_core.stylize import Job, resize, stylize_batch

SHAPE = (2, 8, 8, 3)
TARGET = np.random.default_rng(1).uniform(0.35, 0.65, SHAPE).astype("float32")
SCALES = np.random.default_rng(2).uniform(1.0, 50.0, SHAPE).astype("float32")  # ill-conditioned on purpose


def quadratic(images, target, scales):
    per_image = ops.sum(scales * (images - target) ** 2, (1, 2, 3))
    zeros = ops.zeros_like(per_image)
    return ops.sum(per_image), (per_image, zeros, per_image, zeros)


def start_and_args():
    images = ops.convert_to_tensor(np.full(SHAPE, 0.5, "float32"))
    return images, (ops.convert_to_tensor(TARGET), ops.convert_to_tensor(SCALES))


def trial_losses(first_lengths, steps=12):
    """Each image's loss at every trial of the compiled step, and the tracks of the same run."""
    step = make_lbfgs_step(quadratic)
    images, args = start_and_args()
    state, trials = lbfgs_state(images, np.asarray(first_lengths)), []
    for _ in range(steps):
        images, state, totals, _ = step(images, state, args)
        trials.append(ops.convert_to_numpy(totals))
    images, args = start_and_args()
    tracks = [Track(steps, 0.0, 0) for _ in range(SHAPE[0])]
    run_optimizer(step, lbfgs_state(images, np.asarray(first_lengths)), images, args, tracks)
    return np.array(trials), tracks


@pytest.mark.backends
def test_a_far_too_large_first_step_is_rejected_and_the_run_still_converges():
    trials, tracks = trial_losses([1e4, 1.0])
    start = trials[0]
    assert trials[1, 0] > 2 * start[0]  # the forced step overshoots to a far worse image ...
    for track in tracks:  # ... which is never kept: the recorded loss only falls, far below the start
        assert all(later <= earlier for earlier, later in zip(track.history, track.history[1:]))
        assert track.history[-1] < 0.05 * track.history[0]
    assert tracks[0].error is None


@pytest.mark.backends
def test_each_image_of_a_batch_searches_alone():
    """Image 1's trials are the same whether or not image 0 is forced into a bad step."""
    forced, _ = trial_losses([1e4, 1.0])
    normal, _ = trial_losses([1.0, 1.0])
    np.testing.assert_allclose(forced[:, 1], normal[:, 1], rtol=1e-5)
    assert not np.allclose(forced[:, 0], normal[:, 0])


@pytest.mark.backends
def test_a_wrong_curvature_pair_does_not_send_the_run_uphill():
    """A curvature pair that claims the loss is 1e6 times flatter than it is makes the L-BFGS
    direction 1e6 times too long; the line search backs off instead of taking it."""
    step = make_lbfgs_step(quadratic)
    images, args = start_and_args()
    images, state, totals, _ = step(images, lbfgs_state(images), args)  # the start: accepted
    start = ops.convert_to_numpy(totals)
    flat = int(np.prod(SHAPE[1:]))
    wrong_step = np.ones((SHAPE[0], flat), "float32")
    history = ops.convert_to_numpy(state[5]).copy(), ops.convert_to_numpy(state[6]).copy()
    history[0][-1], history[1][-1] = wrong_step, wrong_step * 1e-6  # s.y > 0, tiny curvature
    state = (
        state[:5]
        + tuple(ops.convert_to_tensor(h) for h in history)
        + (ops.convert_to_tensor(np.ones(SHAPE[0], "int32")), state[8])
    )
    losses = []
    for _ in range(15):
        images, state, totals, _ = step(images, state, args)
        losses.append(ops.convert_to_numpy(totals))
    accepted = ops.convert_to_numpy(state[1])
    assert (accepted < 0.5 * start).all()
    assert max(loss.max() for loss in losses) > start.max()  # bad trials happened, and were not kept


@pytest.mark.backends
def test_a_run_that_never_lowers_its_loss_fails_loudly():
    track = Track(iterations=100, tolerance=1e-3, patience=5)
    for iteration in range(1, 100):
        track.record(iteration, 57.0 if iteration == 1 else 3180.0, (1.0, 2.0, 3.0), image=iteration)
        if track.done:
            break
    assert isinstance(track.error, NoProgressError)
    assert str(track.error).startswith("no progress: loss did not fall below its starting value")
    assert track.best_image == 1 and track.history == [57.0] * len(track.history)


@pytest.mark.backends
def test_short_runs_and_real_progress_are_not_judged():
    short = Track(iterations=MIN_JUDGED_STEPS - 1, tolerance=0, patience=0)
    for iteration in range(1, MIN_JUDGED_STEPS):
        short.record(iteration, 1.0, (1.0, 0.0, 0.0), image=None)
    assert short.done and short.error is None
    falling = Track(iterations=20, tolerance=0, patience=0)
    for iteration in range(1, 21):
        falling.record(iteration, 1.0 / iteration, (1.0, 0.0, 0.0), image=None)
    assert falling.done and falling.error is None


@pytest.mark.slow
def test_style_weights_from_1_to_10000_stylize_or_fail_loudly(weights_path):
    """A sweep of style weights 1 to 10^4 at 256 px on the shipped pairs: each picture moves
    away from the photo (its loss falls and its independent style distance, nst_core.quality,
    is below the photo's; from 100 up the loss falls by 40% and the distance is well below), or the
    pair fails with a reason: never a silent copy of the photo."""
    # manifests/example.csv's photos and paintings (its fourth pair repeats chelsea's size and settings)
    pairs = [("chelsea", ["starry_night"]), ("coffee", ["the_scream"]), ("rocket", ["shipwreck", "starry_night"])]
    for photo_name, style_names in pairs:
        content = load_image(str(SAMPLES / "content" / f"{photo_name}.jpg"), LOCAL, max_side=256)
        styles = [load_image(str(SAMPLES / "styles" / f"{name}.jpg"), LOCAL, max_side=256) for name in style_names]
        jobs = [
            Job(content, styles, first(size=256, iterations=MIN_JUDGED_STEPS, style_weight=weight))
            # The ends, and 100, the weakest held to the strong bar: each image searches alone, so the
            # others of the batch change no outcome, and the decades between cost 40% more for no new check
            for weight in (1.0, 100.0, 10000.0)
        ]
        for job, outcome in zip(jobs, stylize_batch(jobs, weights=weights_path)):
            weight = job.params.style_weight
            if isinstance(outcome, Exception):
                assert str(outcome), (photo_name, weight)
                continue
            # The style term dominates: the loss falls by 40% or more within these steps (to 0.42-0.44 of
            # its start on TensorFlow, 0.49-0.50 on JAX, whose rounding has the line search reject two trials).
            strong = weight >= 100
            assert outcome.total_loss < (0.6 if strong else 1 - MIN_PROGRESS) * outcome.loss_history[0], (
                photo_name,
                weight,
            )
            photo = resize(content, outcome.image.shape[:2])
            distance = min(quality.style_distance(outcome.image, style, photo) for style in styles)
            assert distance < (0.85 if strong else 1.0), (photo_name, weight, distance)
