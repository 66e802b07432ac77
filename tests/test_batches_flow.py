"""Batches in the pipeline: planning (plain functions) and a real flow run that batches pairs."""

from __future__ import annotations

import pandas as pd
import pytest

from flows.manifest import Pair
from flows.pairs import plan_batches
from flows.pipeline import PairsFailedError, run_manifest
from flows.results import read_results
from nst_core import memory
from nst_core.params import StyleParams
from nst_core.storage import LOCAL


def _pair(row: int, content: str, **params) -> Pair:
    return Pair(
        row=row,
        content=content,
        styles=("s.jpg",),
        params=StyleParams(**params),
        pair_id=f"{content}-{row}",
        output=f"out/{content}-{row}.png",
    )


def test_batches_hold_pairs_that_can_share_one_optimisation():
    pairs = [
        _pair(0, "b.jpg", size=64),
        _pair(1, "a.jpg", size=64),
        _pair(2, "a.jpg", size=64, style_weight=3.0),
        _pair(3, "a.jpg", size=128),
        _pair(4, "c.jpg", size=64, content_layers=("block3_conv2",)),
        _pair(5, "a.jpg", size=64, seed=4),
    ]
    batches = plan_batches(pairs, batch_size=3, memory_limit_gb=100)
    as_rows = sorted(sorted(p.row for p in batch) for batch in batches)
    # Loss weights and seeds may differ in a batch; size and layers may not. One content stays together.
    assert as_rows == [[0], [1, 2, 5], [3], [4]]
    assert [p.content for p in batches[0]] == ["a.jpg"] * 3
    assert sorted(p.row for b in plan_batches(pairs, 2, 100) for p in b) == list(range(6))  # none lost
    assert max(len(b) for b in plan_batches(pairs, 2, 100)) == 2


def test_batches_stay_within_the_memory_limit():
    pairs = [_pair(row, f"{row}.jpg", size=512) for row in range(7)]
    one, two = (memory.one_pass_bytes(512 * 512, batch, "auto") for batch in (1, 2))
    batches = plan_batches(pairs, batch_size=8, memory_limit_gb=(one + 2.5 * (two - one)) / 2**30)
    assert [len(b) for b in batches] == [3, 3, 1]
    # A pair too large for one pass gets a batch of its own, where it runs in tiles or fails with its reason.
    assert [len(b) for b in plan_batches(pairs[:2], 8, 0.5 * one / 2**30)] == [1, 1]


@pytest.fixture
def two_photos(samples):
    return samples("", "chelsea", "astronaut", "starry_night", "the_scream", "shipwreck")


def test_the_flow_batches_pairs_and_records_each(prefect_api, two_photos, weights_path):
    """6 pairs, 2 photos of different shapes: each photo's 3 styles share one optimisation."""
    manifest = two_photos / "m.csv"
    manifest.write_text(
        "content,style\nchelsea.jpg,starry_night.jpg\nastronaut.jpg,starry_night.jpg\n"
        "chelsea.jpg,the_scream.jpg\nastronaut.jpg,the_scream.jpg\n"
        "chelsea.jpg,shipwreck.jpg\nastronaut.jpg,missing.jpg\n"
    )
    overrides = {"size": 48, "iterations": 6, "tolerance": 0.0}
    with pytest.raises(PairsFailedError, match="1 of 6 pairs failed"):
        run_manifest(str(manifest), str(two_photos / "out"), overrides=overrides, weights=weights_path, batch_size=8)
    table = read_results(str(two_photos / "out" / "results"), storage=LOCAL).set_index("style_uri")
    succeeded = table[table.status == "succeeded"]
    assert len(succeeded) == 5 and table.loc[str(two_photos / "missing.jpg"), "error"].endswith("file not found")
    by_photo = succeeded.groupby(succeeded.content_uri.str.rsplit("/", n=1).str[-1])["batch_size"].agg(set)
    assert by_photo.to_dict() == {"chelsea.jpg": {3}, "astronaut.jpg": {2}}  # split by image size, missing one out
    assert (succeeded.iterations_run == 6).all() and (succeeded.total_loss < succeeded.loss_history.str[0]).all()
    assert len(set(succeeded.total_loss.round(6))) == 5  # five different pairs, not one result copied
    # One batch, recorded in one write (the missing painting failed earlier, in planning).
    assert succeeded.finished_at.nunique() == 1


def test_batch_size_one_runs_pairs_one_at_a_time(prefect_api, two_photos, weights_path):
    manifest = two_photos / "m.csv"
    manifest.write_text("content,style\nchelsea.jpg,starry_night.jpg\nchelsea.jpg,the_scream.jpg\n")
    outcome = run_manifest(
        str(manifest),
        str(two_photos / "out"),
        overrides={"size": 32, "iterations": 3},
        weights=weights_path,
        batch_size=1,
    )
    assert outcome["succeeded"] == 2
    table = pd.read_parquet(two_photos / "out" / "results")
    assert (table.batch_size == 1).all() and table.finished_at.nunique() == 2


@pytest.mark.backends
def test_a_batch_out_of_memory_is_redone_one_pair_at_a_time(two_photos, weights_path, monkeypatch):
    """A batch too large for the device still gives every pair. The backend's own out-of-memory error
    (a 4 TiB tensor) stands in for the batch's: a real one needs a full GPU."""
    import keras

    from flows import pairs as pairs_module

    real = pairs_module.stylize_batch

    def short_of_memory(jobs, **kwargs):
        if len(jobs) > 1:
            keras.ops.zeros((2**40,))  # raises the backend's out-of-memory error
            raise AssertionError("a 4 TiB tensor was allocated")
        return real(jobs, **kwargs)

    monkeypatch.setattr(pairs_module, "stylize_batch", short_of_memory)
    params = StyleParams(size=32, iterations=3)
    batch = [
        Pair(
            row,
            str(two_photos / "chelsea.jpg"),
            (str(two_photos / style),),
            params,
            f"p{row}",
            str(two_photos / f"p{row}.png"),
        )
        for row, style in enumerate(("starry_night.jpg", "shipwreck.jpg"))
    ]
    rows = pairs_module.stylize_pairs(batch, "run", str(two_photos / "results"), weights=weights_path, storage=LOCAL)
    assert [(row["status"], row["batch_size"]) for row in rows] == [("succeeded", 1), ("succeeded", 1)]
    assert len(read_results(str(two_photos / "results"), storage=LOCAL)) == 2


def test_one_pairs_bad_value_fails_that_pair_not_its_batch(two_photos, weights_path):
    """A value no validation lets through (seed -1: numpy's generator refuses it) breaks the whole
    batch's optimisation; each pair is then run as itself, so only that one fails."""
    from flows import pairs as pairs_module

    good = StyleParams(size=32, iterations=2, min_scale=0, init="noise")
    bad = good.replace(seed=1)
    object.__setattr__(bad, "seed", -1)  # as if validation had missed it
    batch = [
        Pair(
            row,
            str(two_photos / "chelsea.jpg"),
            (str(two_photos / "the_scream.jpg"),),
            params,
            f"p{row}",
            str(two_photos / f"p{row}.png"),
        )
        for row, params in enumerate((good, bad))
    ]
    assert len(plan_batches(batch, 4, 100)) == 1  # one batch
    rows = pairs_module.stylize_pairs(batch, "run", str(two_photos / "results"), weights=weights_path, storage=LOCAL)
    assert [row["status"] for row in rows] == ["succeeded", "failed"]
    assert "negative" in rows[1]["error"] and (two_photos / "p0.png").exists() and not (two_photos / "p1.png").exists()
