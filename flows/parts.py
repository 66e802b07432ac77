"""A table kept as a folder of Parquet files ("parts"): appended a file per write, read whole,
merged by compaction.

Every write is a new file with a unique name, written in one piece (a local temporary renamed into
place, or one S3 PUT), so a crash never leaves half a file and writers never touch the same file.
A part's name starts with the month its rows were written in (`part-202611...`, from the run id).

Compaction merges each month's parts into one, then removes them. The merged part names the parts
it replaces in its Parquet metadata, and a reader skips every part a merged part names: a
compaction killed between its two steps leaves rows that are read once, from the merged part, and
the next compaction removes what it left. `pandas.read_parquet` does not know this and would read
such rows twice until then.
"""

from __future__ import annotations

import io
import json
import logging
import posixpath
import re
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from nst_core.errors import first_line
from nst_core.storage import Storage, fault_delay, join_uri

PART_GLOB = "part-*.parquet"
MERGED = "-merged-"  # in a merged part's name: only those name parts they replace
REPLACES = b"nst.replaces"  # a merged part's metadata: the JSON list of the file names it replaces
BUFFER = "Could not open Parquet input source '<Buffer>': "  # pyarrow's words for bytes in memory, not the file


@dataclass(frozen=True)
class Kind:
    """What a folder of parts holds: its columns, and what a warning says about a damaged part."""

    schema: pa.Schema
    name: str  # "results file"
    if_damaged: str  # what skipping a damaged part costs, for its warning


def write_part(folder: str, table: pa.Table, storage: Storage, *, prefix: str, replaces: list[str] = ()) -> str:
    """`table` as a new part of `folder`, named part-PREFIX-RANDOM.parquet; returns its URI."""
    if replaces:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), REPLACES: json.dumps(replaces)})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    uri = join_uri(folder, f"part-{prefix}-{uuid.uuid4().hex[:12]}.parquet")
    storage.write_atomic(uri, buffer.getvalue())
    return uri


def read_parts(folder: str, kind: Kind, storage: Storage, columns: list[str] | None = None) -> pa.Table:
    """Every row of the folder's parts (only `columns`, when given: the others are never decoded),
    each row once; empty, with the columns, when there is no part yet."""
    tables = [decode(uri, data, kind, columns) for uri, data in live_parts(folder, storage).items()]
    empty = kind.schema.empty_table()
    return pa.concat_tables([t for t in tables if t is not None] or [empty.select(columns) if columns else empty])


def live_parts(folder: str, storage: Storage) -> dict[str, bytes]:
    """The bytes of each part of `folder` that no merged part replaces, by URI."""
    parts = storage.read_many(storage.list(folder, PART_GLOB))
    replaced = _replaced(parts)
    return {uri: data for uri, data in parts.items() if posixpath.basename(uri) not in replaced}


def _replaced(parts: dict[str, bytes]) -> set[str]:
    """The file names the merged parts among `parts` replace."""
    names = set()
    for uri, data in parts.items():
        if MERGED in posixpath.basename(uri):
            try:
                metadata = pq.read_metadata(pa.BufferReader(data)).metadata or {}
            except (pa.ArrowException, OSError):
                continue  # damaged: decode() says so
            names.update(json.loads(metadata.get(REPLACES, b"[]")))
    return names


def decode(uri: str, data: bytes, kind: Kind, columns: list[str] | None = None) -> pa.Table | None:
    """One part's rows; None, with a warning naming it, when its bytes are not a Parquet table of the
    kind's columns (cut short or damaged by a copy or a disk: nst writes whole files only).

    Skipped, not fatal: refusing would stop every later run, scheduled ones included, until someone
    moves the file. The file stays where it is, for its rows to be recovered. (A storage error while
    fetching it was raised before: a file that could not be read is not a damaged one.)"""
    try:
        return _read(data, kind.schema, columns or kind.schema.names)
    except (pa.ArrowException, OSError) as error:  # from bytes in memory: the file's own content
        reason = first_line(error).removeprefix(BUFFER)
        logging.getLogger(__name__).warning(
            f"{uri}: skipped, not a readable {kind.name} ({reason}); {kind.if_damaged}. "
            "Move it out of its folder, or replace it with a good copy."
        )
        return None


def _read(data: bytes, schema: pa.Schema, columns: list[str]) -> pa.Table:
    """`columns` of a Parquet file's bytes, as `schema` types them; a column the file lacks (written
    before the column existed) is null. (pq.read_table(schema=...) does the same at 3x the time.)"""
    file = pq.ParquetFile(pa.BufferReader(data))
    present = set(file.schema_arrow.names)
    table = file.read(columns=[name for name in columns if name in present])
    fields = [schema.field(name) for name in columns]
    arrays = [table[f.name].cast(f.type) if f.name in present else pa.nulls(table.num_rows, f.type) for f in fields]
    return pa.table(arrays, schema=pa.schema(fields))


@dataclass(frozen=True)
class Compacted:
    """What a compaction of one folder did."""

    folder: str
    before: int  # parts there before
    after: int  # parts there after
    rows: int  # rows in the parts it merged


MONTH_PARTS = 2  # parts the latest month keeps at most after a run's compaction; earlier months keep one


def compact(folder: str, kind: Kind, storage: Storage, *, whole: bool = True) -> Compacted:
    """Merge each month's parts of `folder` into one, then remove them; first remove the parts an
    earlier, killed compaction merged but left. Damaged parts stay as they are.

    Not `whole` (what a run does at its end): earlier months are merged into one part once, and the
    latest month once it has more than MONTH_PARTS, its largest part left out while it holds more
    rows than the others together, so that a night's few rows do not rewrite the month's."""
    listed = storage.list(folder, PART_GLOB)
    months = Counter(map(month_of, listed))
    latest = None if whole else max((month for month in months if month != OTHER), default=None)
    keeps = {month: MONTH_PARTS if month == latest else 1 for month in months}
    parts = storage.read_many([uri for uri in listed if months[month_of(uri)] > keeps[month_of(uri)]])
    replaced = _replaced(parts)
    left = [uri for uri in parts if posixpath.basename(uri) in replaced]
    for uri in left:
        storage.remove(uri)
    tables = defaultdict(dict)
    for uri, data in parts.items():
        if uri not in left and (table := decode(uri, data, kind)) is not None:
            tables[month_of(uri)][uri] = table
    merged = [
        _merge(folder, month, _chosen(month_tables, month == latest), storage)
        for month, month_tables in sorted(tables.items())
    ]
    after = len(listed) - len(left) - sum(max(0, count - 1) for count, _ in merged)
    return Compacted(folder, len(listed), after, sum(rows for _, rows in merged))


def _chosen(tables: dict[str, pa.Table], tiered: bool) -> dict[str, pa.Table]:
    """The month's parts to merge: all of them, or (`tiered`) all but the largest while it outweighs the rest."""
    largest = max(tables, key=lambda uri: tables[uri].num_rows)
    rest = {uri: table for uri, table in tables.items() if uri != largest}
    return rest if tiered and tables[largest].num_rows > sum(t.num_rows for t in rest.values()) else tables


def _merge(folder: str, month: str, tables: dict[str, pa.Table], storage: Storage) -> tuple[int, int]:
    """One part holding `tables`' rows, written before they are removed; returns (parts merged, rows).
    A single part is left as it is."""
    if len(tables) < 2:
        return 0, 0
    merged = pa.concat_tables(tables.values())
    write_part(folder, merged, storage, prefix=f"{month}-merged", replaces=sorted(map(posixpath.basename, tables)))
    for uri in tables:
        fault_delay()
        storage.remove(uri)
    return len(tables), merged.num_rows


OTHER = "other"  # the month of parts whose names have none (rows written outside a run)


def month_of(uri: str) -> str:
    """The month a part's rows were written in, from its name (part-202611...), or OTHER."""
    found = re.match(r"part-(\d{6})", posixpath.basename(uri))
    return found[1] if found else OTHER
