"""Pairs on a Dask cluster (`nst run --task-runner dask`), through prefect-dask.

Either an existing scheduler (`--dask-address tcp://host:8786`, workers started on
GPU hosts with `dask worker`), or a local cluster: one worker process per GPU, each
seeing only its own GPU (CUDA_VISIBLE_DEVICES), or a chosen number of CPU workers
sharing the cores. Each worker runs one pair at a time and loads the network once
(nst_core caches it per process). Worker processes are spawned, never forked:
s3fs is not fork-safe (distributed's default, stated here so it stays that way).
"""

from __future__ import annotations

import os

import dask
from distributed import Nanny, Scheduler, SpecCluster
from prefect_dask import DaskTaskRunner

from nst_core import runtime


def visible_gpus() -> list[str]:
    """The CUDA device ids this process may use, without claiming their memory."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip() and d.strip() != "-1"]
    return [str(i) for i in range(runtime.physical_gpu_count())]


def prefect_api_url() -> str | None:
    """The Prefect API this process reports to: the configured one, or the temporary server it
    started (without it, each worker would start a temporary server of its own)."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL

    temporary = SubprocessASGIServer()
    return PREFECT_API_URL.value() or (temporary.api_url if temporary.running else None)


def worker_env(index: int, workers: int, gpus: list[str]) -> dict[str, str]:
    """One worker's environment: its own GPU, or its share of the CPU cores for TensorFlow's threads."""
    if gpus:
        return {"CUDA_VISIBLE_DEVICES": gpus[index % len(gpus)]}
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    return {
        "CUDA_VISIBLE_DEVICES": "-1",
        "TF_NUM_INTRAOP_THREADS": threads,
        "TF_NUM_INTEROP_THREADS": "1",
        "OMP_NUM_THREADS": threads,
    }


def local_cluster(n_workers: int | None = None) -> SpecCluster:
    """A cluster on this machine: `n_workers` processes (default: one per GPU, else one), one thread each."""
    gpus = visible_gpus()
    count = n_workers or max(1, len(gpus))
    api_url = prefect_api_url()
    api = {"PREFECT_API_URL": api_url} if api_url else {}
    workers = {
        f"nst-{i}": {"cls": Nanny, "options": {"nthreads": 1, "env": {**worker_env(i, count, gpus), **api}}}
        for i in range(count)
    }
    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": ":0"}}
    with dask.config.set({"distributed.worker.multiprocessing-method": "spawn"}):
        return SpecCluster(workers=workers, scheduler=scheduler, name="nst-local")


def dask_task_runner(address: str | None = None, workers: int | None = None) -> DaskTaskRunner:
    """Prefect's task runner on the scheduler at `address`, or on a local cluster of `workers` processes."""
    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(cluster_class=local_cluster, cluster_kwargs={"n_workers": workers})
