"""The results table: a Parquet dataset with one row per pair attempt.

Every write is a new file with a unique name, written in one piece (flows/parts.py), so a crash
or a kill never leaves a half-written row and concurrent writers never touch the same file.
`pandas.read_parquet(RESULTS)` reads the whole table at any time. A run that skips a pair writes no
row for it: the run table (flows/runs.py, RESULTS/_runs) says which pairs each run covered.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable, Optional

import pandas as pd
import pyarrow as pa

from nst_core.params import StyleParams, as_text
from nst_core.settings import settings
from nst_core.storage import LOCAL, Storage, join_uri

from .parts import Compacted, Kind, compact, read_parts, write_part
from .runs import RUNS, runs_location

_PARAM_TYPES = {int: pa.int64(), float: pa.float64(), Optional[float]: pa.float64()}  # by StyleParams' type hint


def results_location(out: str, results: str | None) -> str:
    """The results table of a run: `results`, else OUT/results."""
    return results or join_uri(out, "results")


def param_fields(params_class: type = StyleParams) -> list[pa.Field]:
    """One column per StyleParams field; tuples are stored as manifest text ("a,b")."""
    return [pa.field(spec.name, _PARAM_TYPES.get(spec.hint, pa.string())) for spec in params_class.specs()]


SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("pair_id", pa.string()),
        ("row", pa.int64()),
        ("content_uri", pa.string()),
        ("style_uri", pa.string()),
        ("output_uri", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("attempts", pa.int64()),
        *param_fields(),
        ("params_hash", pa.string()),
        ("content_loss", pa.float64()),
        ("style_loss", pa.float64()),
        ("tv_loss", pa.float64()),
        ("total_loss", pa.float64()),
        ("loss_history", pa.list_(pa.float64())),
        # Unweighted content and style loss per step, beside the weighted total: the report's loss curves.
        ("content_loss_history", pa.list_(pa.float64())),
        ("style_loss_history", pa.list_(pa.float64())),
        ("sweep", pa.string()),  # the sweep the pair's row asked for: the grid lays its values out in this order
        ("iterations_run", pa.int64()),  # steps taken; `iterations` is the budget parameter
        ("load_seconds", pa.float64()),
        ("targets_seconds", pa.float64()),
        ("optimize_seconds", pa.float64()),
        ("save_seconds", pa.float64()),
        ("total_seconds", pa.float64()),
        ("batch_size", pa.int64()),  # pairs optimised together with this one; its seconds are its share
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("network", pa.string()),  # arch resolved: vgg16 or vgg19
        ("device", pa.string()),
        ("host", pa.string()),
        ("worker", pa.string()),  # host:pid of the process that stylized the pair (a Dask worker, or the run)
        # Which version of the input files the row saw (size + mtime, or S3 ETag): the ledger of --since-last.
        ("content_fingerprint", pa.string()),
        ("style_fingerprint", pa.string()),
        ("transient", pa.bool_()),  # failed on a storage error that outlasted the retries: always retried
        ("started_at", pa.timestamp("us", tz="UTC")),
        ("finished_at", pa.timestamp("us", tz="UTC")),
        # The Prefect flow run that wrote the row, and its page in the Prefect UI (None outside a run).
        ("flow_run_id", pa.string()),
        ("flow_run_url", pa.string()),
        ("backend", pa.string()),
        ("backend_version", pa.string()),  # Keras' backend: tensorflow or jax
        ("nst_version", pa.string()),
        ("tensorflow_version", pa.string()),  # null under JAX; kept for tables written before `backend`
        ("keras_version", pa.string()),
        ("prefect_version", pa.string()),
        ("python_version", pa.string()),
    ]
)


RESULTS = Kind(SCHEMA, "results file", "its pairs count as not done")


def params_columns(params: StyleParams) -> dict:
    """A StyleParams as table cells (tuples joined with commas, as in manifests)."""
    return {name: as_text(value) for name, value in params.to_dict().items()}


def flow_run_columns() -> dict:
    """The Prefect flow run this code runs in (a task on a Dask worker knows its flow run too):
    its id and UI page, so a row leads back to the run's logs. Both None outside a run; the page
    None on a `nst run`'s temporary server, whose pages are gone once the run ends."""
    from prefect.runtime import flow_run
    from prefect.utilities.urls import url_for

    from .server import on_temporary_server

    run_id = flow_run.id
    lasting = run_id and not on_temporary_server()
    return {"flow_run_id": run_id, "flow_run_url": url_for("flow-run", obj_id=run_id) if lasting else None}


def write_rows(results_uri: str, rows: Iterable[dict], *, storage: Storage) -> str | None:
    """Append rows to the table as one new Parquet file; returns its URI (None for no rows)."""
    rows = list(rows)
    if not rows:
        return None
    run = flow_run_columns()
    rows = [{**run, **row} for row in rows]  # a row that names its flow run keeps it
    table = pa.Table.from_pylist([{name: row.get(name) for name in SCHEMA.names} for row in rows], schema=SCHEMA)
    return write_part(results_uri, table, storage, prefix=rows[0]["run_id"])


def spool_folder(results_uri: str) -> Path:
    """Where rows wait, on local disk, while their results table cannot be reached."""
    digest = hashlib.sha256(results_uri.encode()).hexdigest()[:16]
    return Path(settings().spool).expanduser() / digest


def spool_rows(results_uri: str, rows: list[dict]) -> str:
    """Keep rows locally for a table that is unreachable now; the next run delivers them."""
    return write_rows(str(spool_folder(results_uri)), rows, storage=LOCAL)


def deliver_spooled(results_uri: str, *, storage: Storage) -> int:
    """Move rows spooled by earlier runs into the table; returns how many files moved."""
    folder = spool_folder(results_uri)
    files = sorted(folder.glob("part-*.parquet")) if folder.exists() else []
    for path in files:
        storage.write_atomic(join_uri(results_uri, path.name), path.read_bytes())
        path.unlink()
    return len(files)


def read_results(results_uri: str, *, storage: Storage, columns: list[str] | None = None) -> pd.DataFrame:
    """The whole table, or its `columns` (empty, with them, when nothing was written yet), without the
    files that are not Parquet any more (flows.parts.decode)."""
    return read_parts(results_uri, RESULTS, storage, columns).to_pandas()


DECISIVE = ("succeeded", "failed")  # `skipped` rows (written by earlier versions) only repeat an earlier outcome


def latest_rows(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(each pair's latest succeeded-or-failed row, each pair's latest succeeded row), indexed by pair_id.

    `skipped` rows only repeat an earlier outcome, so they do not decide.
    """
    decisive = table[table["status"].isin(DECISIVE)].sort_values("finished_at")
    latest = decisive.groupby("pair_id").tail(1).set_index("pair_id")
    succeeded = decisive[decisive["status"] == "succeeded"].groupby("pair_id").tail(1).set_index("pair_id")
    return latest, succeeded


def compact_results(results_uri: str, *, storage: Storage, whole: bool = True) -> list[Compacted]:
    """Merge the small files of the results table and of its run table, every row kept (flows.parts.compact;
    not `whole`: as a run does at its end). Hold the table's run lock while doing it."""
    folders = ((results_uri, RESULTS), (runs_location(results_uri), RUNS))
    return [compact(folder, kind, storage, whole=whole) for folder, kind in folders]
