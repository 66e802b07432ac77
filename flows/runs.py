"""The run table: a row per run beside the results table (RESULTS/_runs, a folder Parquet readers
of RESULTS skip, as they skip the lock): when the run ended, its counts, and which pairs it covered.

A run writes a results row for each pair it stylized, none for a pair it skipped, so a flow run
with nothing new to do adds one row here and nothing to the results table. The pairs a run covered
are stored as the change from the previous recorded run of the same manifest (pair ids added, pair
ids removed): nothing, on a night when the collection did not change. Reports and grids show a run's
pairs as its own rows plus, for the pairs it skipped, their earlier rows (flows/grids.py).
"""

from __future__ import annotations

from typing import Iterable

import pandas as pd
import pyarrow as pa

from nst_core.storage import Storage, join_uri

from .parts import Kind, read_parts, write_part

# The run's counts of pairs, as the flow returns them.
COUNTS = (
    "succeeded",
    "failed",
    "skipped",
    "stopped",
    "new",
    "changed",
    "unchanged",
    "earlier_defaults",
    "still_failing",
)

SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("manifest", pa.string()),  # runs of one manifest chain their pairs (added, removed)
        ("started_at", pa.timestamp("us", tz="UTC")),
        ("finished_at", pa.timestamp("us", tz="UTC")),
        *[(name, pa.int64()) for name in COUNTS],
        ("added", pa.list_(pa.string())),  # pair ids covered now, not by the manifest's previous run
        ("removed", pa.list_(pa.string())),  # pair ids the manifest's previous run covered, not this one
        ("flow_run_id", pa.string()),
    ]
)
RUNS = Kind(SCHEMA, "run record", "reports of its run show only the pairs it stylized")


def runs_location(results_uri: str) -> str:
    return join_uri(results_uri, "_runs")


def read_runs(results_uri: str, storage: Storage, columns: list[str] | None = None) -> pd.DataFrame:
    """The run table (empty, with its columns, before the first recorded run)."""
    return read_parts(runs_location(results_uri), RUNS, storage, columns).to_pandas()


def record_run(results_uri: str, row: dict, pair_ids: Iterable[str], storage: Storage) -> str:
    """Append the run's row (its counts and times; `manifest` keys the chain), with the pairs it
    covered stored as the change from its manifest's previous run; returns the file's URI."""
    runs = read_runs(results_uri, storage, columns=["run_id", "manifest", "finished_at", "added", "removed"])
    before, now = _replay(runs[runs["manifest"] == row["manifest"]]), set(pair_ids)
    row = {**row, "added": sorted(now - before), "removed": sorted(before - now)}
    table = pa.Table.from_pylist([{name: row.get(name) for name in SCHEMA.names}], schema=SCHEMA)
    return write_part(runs_location(results_uri), table, storage, prefix=row["run_id"])


def pairs_of(runs: pd.DataFrame, run_id: str) -> set[str]:
    """The pair ids run `run_id` covered; none for a run without a record (killed, or recorded before
    the run table existed: its results table has a `skipped` row per pair it skipped)."""
    own = runs[runs["run_id"] == run_id]
    if own.empty:
        return set()
    chain = runs[runs["manifest"] == own["manifest"].iloc[0]]
    return _replay(chain[chain["finished_at"] <= own["finished_at"].iloc[0]])


def _replay(chain: pd.DataFrame) -> set[str]:
    """The pairs of the last run of `chain` (one manifest's runs): each run's change applied in order."""
    pairs: set[str] = set()
    for added, removed in chain.sort_values(["finished_at", "run_id"])[["added", "removed"]].itertuples(index=False):
        pairs.difference_update(removed)
        pairs.update(added)
    return pairs
