"""The results table over many nights: a skipped pair adds no row, the table's small files are
merged (`nst compact`, and by every run) without losing or repeating a row
however the merge is killed, locally and on S3 (moto); and a soak of 30 nights of a changing
collection with kills."""

from __future__ import annotations

import functools
import json
import os
import random
import subprocess
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import REPO, nst
from flows.cli import main
from flows.ledger import COLUMNS, read_ledger
from flows.lock import run_lock
from flows.manifest import expand_manifest
from flows.parts import MONTH_PARTS, PART_GLOB, REPLACES, month_of
from flows.results import compact_results, read_results, write_rows
from flows.runs import read_runs, record_run, runs_location
from nights import Collection, after, in_child, night
from nst_core.storage import FAULT_WRITE_DELAY_ENV, LOCAL, Storage

START = datetime(2026, 10, 30, tzinfo=timezone.utc)


def _table(results: str, storage: Storage, stamps=("20261030", "20261030", "20261101", "20261102"), rows=2) -> list:
    """A file of `rows` rows per run id (a run a day, from these dates), and a run record per run;
    returns the rows as (run_id, pair_id, finished_at)."""
    written = []
    for stamp in stamps:
        run_id = f"{stamp}T020000-{os.urandom(3).hex()}"
        made = [
            {"run_id": run_id, "pair_id": f"p{n}", "status": "succeeded", "finished_at": START} for n in range(rows)
        ]
        write_rows(results, made, storage=storage)
        record_run(results, {"run_id": run_id, "manifest": "m.csv", "finished_at": START}, [], storage)
        written += [(row["run_id"], row["pair_id"], row["finished_at"]) for row in made]
    return sorted(written)


def _rows(results: str, storage: Storage) -> list:
    table = read_results(results, storage=storage, columns=["run_id", "pair_id", "finished_at"])
    return sorted(table.itertuples(index=False, name=None))


@pytest.mark.parametrize("where", ["local", "s3"])
def test_compaction_merges_each_months_files_keeping_every_row(where, tmp_path, request):
    if where == "s3":
        _, options = request.getfixturevalue("s3")
        storage, out = Storage(options), "s3://nst-test/out"
    else:
        storage, out = LOCAL, str(tmp_path / "out")
    results = f"{out}/results"
    rows = _table(results, storage)
    november = [uri.rsplit("/", 1)[1] for uri in storage.list(results, "part-202611*")]
    merged = compact_results(results, storage=storage)
    assert [(m.before, m.after, m.rows) for m in merged] == [(4, 2, 8), (4, 2, 4)]  # a file per month
    assert _rows(results, storage) == rows and len(read_runs(results, storage)) == 4
    files = storage.list(results, PART_GLOB)
    assert [f.rsplit("/", 1)[1][:19] for f in files] == ["part-202610-merged-", "part-202611-merged-"]
    with storage.open(files[1]) as handle:
        assert json.loads(pq.read_metadata(handle).metadata[REPLACES]) == november  # what it replaces
    if where == "local":  # plain Parquet readers see the same rows, the run table not among them
        assert len(pd.read_parquet(results)) == len(rows)

    # A run's compaction leaves a month's largest file alone while it outweighs the others.
    base = files[1]
    more = _table(results, storage, ("20261103", "20261104", "20261105"), rows=1)
    assert [(m.before, m.after) for m in compact_results(results, storage=storage, whole=False)] == [(5, 3), (5, 2)]
    assert base in storage.list(results, PART_GLOB) and _rows(results, storage) == sorted(rows + more)
    assert [(m.before, m.after) for m in compact_results(results, storage=storage)] == [(3, 2), (2, 2)]
    assert _rows(results, storage) == sorted(rows + more)


# Where `nst compact` is killed: its merged file's temporary on disk (local only: S3 takes one PUT),
# the merged file written and none of the files it replaces removed yet, one of them removed.
KILL_POINTS = {"local": ["writing", "written", "one removed"], "s3": ["written", "one removed"]}


@pytest.mark.parametrize("where,point", [(w, p) for w, points in KILL_POINTS.items() for p in points])
def test_a_compaction_killed_at_each_step_loses_no_row_and_repeats_none(where, point, tmp_path, request):
    """A real `nst compact` SIGKILLed at the step; NST_FAULT_WRITE_DELAY holds it there half a second."""
    if where == "s3":
        _, options = request.getfixturevalue("s3")
        storage, out, flags = Storage(options), "s3://nst-test/out", ["--s3-endpoint-url", options["endpoint_url"]]
    else:
        storage, out, flags = LOCAL, str(tmp_path / "out"), []
    results = f"{out}/results"
    rows = _table(results, storage, ("20261030", "20261031", "20261101"))  # 3 files: 2 merged, then 1
    env = {**os.environ, FAULT_WRITE_DELAY_ENV: "0.5"}
    process = subprocess.Popen(nst("compact", out, *flags), cwd=REPO, env=env)
    deadline = time.time() + 60
    while process.poll() is None and time.time() < deadline and not _at(point, results, storage):
        time.sleep(0.01)
    process.kill()
    assert process.wait() == -9, f"`nst compact` ended before the kill at {point!r}"
    assert _rows(results, storage) == rows  # nothing lost, nothing twice

    compact_results(results, storage=storage)  # the next compaction finishes the killed one's work
    assert _rows(results, storage) == rows
    assert len(storage.list(results, PART_GLOB)) == 2


def _at(point: str, results: str, storage: Storage) -> bool:
    """Whether the compaction has reached `point` (the first month's merge: 2 files into 1)."""
    if point == "writing":
        return any(path.name.startswith(".part-") for path in Path(results).iterdir())
    storage.fs(results)[0].invalidate_cache()  # S3: list what is there now
    names = [uri.rsplit("/", 1)[1] for uri in storage.list(results, PART_GLOB)]
    merged = sum("-merged-" in name for name in names)
    return merged == 1 and len(names) - merged == (3 if point == "written" else 2)


def test_nst_compact_refuses_a_missing_table_and_a_table_in_use(tmp_path, capsys):
    assert main(["compact", str(tmp_path / "nowhere")]) == 2
    assert f"{tmp_path / 'nowhere' / 'results'}: no results table there" in capsys.readouterr().err
    results = str(tmp_path / "out" / "results")
    rows = _table(results, LOCAL)
    with run_lock(results, "20261102T020000-night", LOCAL):
        assert main(["compact", str(tmp_path / "out")]) == 2
    assert "20261102T020000-night" in capsys.readouterr().err
    assert main(["compact", str(tmp_path / "out")]) == 0
    assert f"{results}: 4 files -> 2 (8 rows merged)" in capsys.readouterr().out
    assert _rows(results, LOCAL) == rows


def test_the_ledger_reads_only_its_columns(tmp_path):
    results = str(tmp_path / "results")
    _table(results, LOCAL)
    assert list(read_ledger(results, LOCAL).columns) == COLUMNS


# Each night's changes to the collection: (photos added, changed, removed); quiet nights change nothing.
CHANGES = [(0, 0, 0), (0, 0, 0), (3, 2, 1), (5, 0, 0), (0, 4, 0), (2, 1, 3)]


@pytest.mark.soak
def test_thirty_nights_of_a_changing_collection_with_kills(tmp_path, monkeypatch):
    """300 pairs (100 photos x 3 paintings), 30 nights of the flow's bookkeeping (tests/nights.py:
    no Prefect, a stand-in for the stylization): photos added, changed and removed; about one night
    in four SIGKILLed at a random moment and run again, as the next night would; from night 20, an
    `nst compact` killed between its steps, then finished. After every night: each live pair has one
    succeeded row made from its photo as it is now, and its output is that photo; no row twice; a
    night with nothing new adds no results row; no month keeps more than MONTH_PARTS files. 30-50 s
    on a shared 2-core machine, held under 90 s."""
    monkeypatch.setenv("NST_SPOOL", str(tmp_path / "spool"))
    rng = random.Random(33)
    collection, out = Collection(tmp_path / "in", photos=100, styles=3, seed=33), tmp_path / "out"
    results = str(out / "results")
    started, kills, compacted = time.monotonic(), 0, None
    for number in range(1, 31):
        change = rng.choice(CHANGES) if number > 1 else (0, 0, 0)
        collection.change(*change)
        before = len(read_results(results, storage=LOCAL, columns=["pair_id"]))
        tonight = functools.partial(night, collection, out, number)
        if rng.random() < 0.25:
            kills += not in_child(tonight, kill_when=after(rng.uniform(0.02, 0.5)))
            _assert_no_row_twice(results)
        assert in_child(tonight)
        listed = set(LOCAL.list(results, PART_GLOB))
        if number >= 20 and not compacted and max(Counter(map(month_of, listed)).values()) > 1:
            compacted = number
            assert not in_child(functools.partial(_slow_compact, out), kill_when=_merging(listed, rng.uniform(0, 0.15)))
            now = set(LOCAL.list(results, PART_GLOB))
            (merged,) = now - listed
            assert {Path(uri).name for uri in now} & set(json.loads(pq.read_metadata(merged).metadata[REPLACES]))
            _assert_no_row_twice(results)  # killed between writing the merged file and removing what it replaces
            assert main(["compact", str(out)]) == 0
            assert len(LOCAL.list(results, PART_GLOB)) <= 2  # a file per month
        table = _assert_each_live_pair_once(collection, out)
        if change == (0, 0, 0) and number > 1:
            assert len(table) == before  # nothing new: no results row
        for folder in (results, runs_location(results)):
            assert max(Counter(map(month_of, LOCAL.list(folder, PART_GLOB))).values()) <= MONTH_PARTS
    assert kills >= 3 and compacted
    assert len(read_runs(results, LOCAL)) >= 30  # a record per finished night (and per killed one that got there)
    assert time.monotonic() - started < 90


def _slow_compact(out) -> None:
    """`nst compact`, 0.2 s before each file it removes: a window to kill it in."""
    os.environ[FAULT_WRITE_DELAY_ENV] = "0.2"
    main(["compact", str(out)])


def _merging(before: set[str], seconds: float):
    """A kill_when: `seconds` after a merged file not among `before` appeared beside them."""
    folder, appeared = os.path.dirname(next(iter(before))), []

    def due() -> bool:
        if not appeared and set(LOCAL.list(folder, "part-*-merged-*")) - before:
            appeared.append(time.monotonic())
        return bool(appeared) and time.monotonic() >= appeared[0] + seconds

    return due


def _assert_no_row_twice(results: str) -> pd.DataFrame:
    """No version of a pair (its id and its photo's fingerprint) has two succeeded rows."""
    table = read_results(results, storage=LOCAL, columns=["pair_id", "content_fingerprint", "status"])
    assert set(table.status) <= {"succeeded"}
    versions = table.groupby(["pair_id", "content_fingerprint"]).size()
    assert versions.max() == 1, versions[versions > 1]
    return table


def _assert_each_live_pair_once(collection: Collection, out) -> pd.DataFrame:
    table = _assert_no_row_twice(str(out / "results"))
    pairs, _ = expand_manifest(collection.manifest, str(out), storage=LOCAL)
    assert len(pairs) == 3 * len(collection.colours)
    made = set(zip(table.pair_id, table.content_fingerprint))
    assert {(p.pair_id, p.content_fingerprint) for p in pairs} <= made
    for pair in pairs:
        with Image.open(pair.output) as output:
            assert output.getpixel((0, 0)) == collection.colours[pair.content], pair.output
    return table
