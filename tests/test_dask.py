"""Scale-out on Dask: a real two-worker local cluster (spawned processes) runs the flow's pairs."""

from __future__ import annotations

import os
import subprocess

import pytest

from conftest import nst, tiny_run
from flows.dask_runner import worker_env
from flows.pipeline import run_manifest
from flows.results import read_results
from nst_core.model import WeightsError
from nst_core.storage import LOCAL


@pytest.fixture
def collection(samples):
    """2 photos x 2 styles = 4 pairs."""
    samples("photos", "chelsea", "coffee")
    root = samples("styles", "the_scream", "shipwreck")
    (root / "m.csv").write_text("content,style\nphotos,styles\n")
    return root


def test_two_dask_workers_share_the_pairs_and_the_table_is_complete(collection, weights_path):
    """`nst run --task-runner dask` with Prefect's temporary server: the workers report to it too."""
    out = collection / "out"
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    result = subprocess.run(
        nst(
            "run",
            "m.csv",
            "--out",
            "out",
            "--task-runner",
            "dask",
            "--dask-workers",
            "2",
            "--batch-size",
            "2",
            *tiny_run(weights_path, iterations=5),
        ),
        cwd=collection,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1].startswith("4 succeeded, 0 skipped, 0 failed (4 new")
    assert result.stderr.count("Starting temporary server") == 1  # one server, not one per worker
    table = read_results(str(out / "results"), storage=LOCAL)
    assert len(table) == 4 and (table.status == "succeeded").all() and table.pair_id.is_unique
    assert table.worker.nunique() == 2, table.worker.value_counts()  # both workers took a batch of 2
    assert (table.batch_size == 2).all()
    assert table.content_fingerprint.notna().all()
    assert len(list(out.glob("*.png"))) == 4 and not list(out.glob(".*.tmp"))


def test_a_weights_problem_stops_the_run_before_any_pair(prefect_api, collection):
    """The network is loaded by a task where pairs run (a Dask worker's, or this process's threads)."""
    out = collection / "out"
    with pytest.raises(WeightsError, match="missing.h5"):
        run_manifest(
            str(collection / "m.csv"), str(out), overrides={"size": 32}, weights=str(collection / "missing.h5")
        )
    assert read_results(str(out / "results"), storage=LOCAL).empty


def test_each_local_worker_is_pinned_to_its_own_gpu_or_its_share_of_cores():
    assert worker_env(1, 2, ["0", "1"]) == {"CUDA_VISIBLE_DEVICES": "1"}
    assert worker_env(0, 2, ["4", "6"])["CUDA_VISIBLE_DEVICES"] == "4"  # ids as this process sees them
    cpu = worker_env(0, 2, [])
    assert cpu["CUDA_VISIBLE_DEVICES"] == "-1" and int(cpu["TF_NUM_INTRAOP_THREADS"]) >= 1
