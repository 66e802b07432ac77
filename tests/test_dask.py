"""Scale-out on Dask: a real two-worker local cluster (spawned processes) runs the flow's pairs."""

from __future__ import annotations

import shutil

import pytest

from conftest import SAMPLES
from flows.dask_runner import worker_env
from flows.pipeline import run_manifest
from flows.results import read_results
from nst_core.model import WeightsError


@pytest.fixture
def collection(tmp_path):
    """3 photos x 2 styles = 6 pairs."""
    (tmp_path / "photos").mkdir()
    (tmp_path / "styles").mkdir()
    for name in ("chelsea", "coffee", "rocket"):
        shutil.copy(SAMPLES / "content" / f"{name}.jpg", tmp_path / "photos" / f"{name}.jpg")
    for name in ("the_scream", "shipwreck"):
        shutil.copy(SAMPLES / "styles" / f"{name}.jpg", tmp_path / "styles" / f"{name}.jpg")
    (tmp_path / "m.csv").write_text("content,style\nphotos,styles\n")
    return tmp_path


def test_two_dask_workers_share_the_pairs_and_the_table_is_complete(prefect_api, collection, weights_path,
                                                                     monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", prefect_api)  # the spawned workers report to the same server
    out = collection / "out"
    with pytest.raises(WeightsError, match="missing.h5"):  # checked on a worker, before any pair
        run_manifest(str(collection / "m.csv"), str(out), task_runner="dask", dask_workers=1,
                     overrides={"size": 32}, weights=str(collection / "missing.h5"))
    assert read_results(str(out / "results")).empty
    outcome = run_manifest(str(collection / "m.csv"), str(out), task_runner="dask", dask_workers=2,
                           overrides={"size": 32, "iterations": 5, "tolerance": 0.0}, weights=weights_path)
    assert (outcome["succeeded"], outcome["failed"]) == (6, 0)
    table = read_results(str(out / "results"))
    assert len(table) == 6 and (table.status == "succeeded").all() and table.pair_id.is_unique
    assert table.worker.nunique() == 2, table.worker.value_counts()  # both workers took pairs
    assert not table.worker.str.endswith(f":{__import__('os').getpid()}").any()  # none ran in the flow process
    assert len(list(out.glob("*.png"))) == 6 and not list(out.glob(".*.tmp"))

    again = run_manifest(str(collection / "m.csv"), str(out), task_runner="dask", dask_workers=2,
                         overrides={"size": 32, "iterations": 5, "tolerance": 0.0}, weights=weights_path)
    assert (again["unchanged"], again["succeeded"]) == (6, 0)  # the ledger is shared by every worker's rows


def test_each_local_worker_is_pinned_to_its_own_gpu_or_its_share_of_cores():
    assert worker_env(1, 2, ["0", "1"]) == {"CUDA_VISIBLE_DEVICES": "1"}
    assert worker_env(0, 2, ["4", "6"])["CUDA_VISIBLE_DEVICES"] == "4"  # ids as this process sees them
    cpu = worker_env(0, 2, [])
    assert cpu["CUDA_VISIBLE_DEVICES"] == "-1" and int(cpu["TF_NUM_INTRAOP_THREADS"]) >= 1
