"""Incremental collections: the results table as a ledger of which file versions were stylized.

Real flow runs against the real Prefect server fixture, real files touched and replaced
between runs, a real S3 endpoint (moto) for ETags.
"""

from __future__ import annotations

import dataclasses
import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from conftest import SAMPLES, tiny_run
from flows.cli import main
from flows.grids import run_pairs
from flows.manifest import expand_manifest
from flows.pairs import base_row
from flows.pipeline import PairsFailedError, run_manifest
from flows.results import read_results, write_rows
from flows.runs import read_runs
from nst_core.image_io import load_image, save_image
from nst_core.storage import LOCAL, Storage

FAST = {"size": 32, "iterations": 3, "tolerance": 0.0}


def _counts(outcome: dict) -> tuple:
    return tuple(outcome[k] for k in ("new", "changed", "unchanged", "succeeded", "skipped", "failed"))


def _mtimes(out) -> dict:
    return {p.name.split("--")[0]: p.stat().st_mtime_ns for p in out.glob("*.png")}


def test_only_new_and_changed_photos_are_redone(prefect_api, tmp_path, samples, weights_path):
    photos, out = tmp_path / "photos", tmp_path / "out"
    samples("photos", "chelsea", "coffee", "rocket")
    samples("", the_scream="scream.jpg")
    manifest = tmp_path / "m.csv"
    manifest.write_text("content,style\nphotos,scream.jpg\n")

    def run(**kwargs):
        return run_manifest(str(manifest), str(out), overrides=FAST, weights=weights_path, **kwargs)

    assert _counts(run()) == (3, 0, 0, 3, 0, 0)
    before = _mtimes(out)
    samples("photos", astronaut="chelsea.jpg")  # replaced under the same name
    stat = os.stat(photos / "coffee.jpg")
    os.utime(photos / "coffee.jpg", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched
    samples("photos", "astronaut")  # added
    assert _counts(run()) == (1, 2, 1, 3, 1, 0)
    after = _mtimes(out)
    assert after["rocket"] == before["rocket"]  # unchanged: not redone
    assert after["chelsea"] != before["chelsea"] and after["coffee"] != before["coffee"]

    table = read_results(str(out / "results"), storage=LOCAL)
    chelsea = table[table.content_uri.str.endswith("chelsea.jpg") & (table.status == "succeeded")]
    assert chelsea.content_fingerprint.nunique() == 2  # the row records which version it stylized
    assert chelsea.content_fingerprint.str.startswith("size:").all()
    assert table.style_fingerprint.notna().all() and table.worker.str.match(r".+:\d+$").any()
    assert _counts(run()) == (0, 0, 4, 0, 4, 0)  # nothing changed: nothing redone

    samples("", shipwreck="scream.jpg")  # the painting replaced
    assert _counts(run()) == (0, 4, 0, 4, 0, 0)


def test_since_last_leaves_unchanged_failures_alone_until_the_file_changes(
    prefect_api, tmp_path, samples, weights_path, capsys
):
    photos, out = tmp_path / "photos", tmp_path / "out"
    samples("photos", "coffee")
    (photos / "broken.jpg").write_bytes((SAMPLES / "content" / "chelsea.jpg").read_bytes()[:300])
    samples("", the_scream="scream.jpg")
    manifest = tmp_path / "m.csv"
    manifest.write_text("content,style\nphotos,scream.jpg\n")

    def run(**kwargs):
        return run_manifest(str(manifest), str(out), overrides=FAST, weights=weights_path, **kwargs)

    with pytest.raises(PairsFailedError, match=r"1 of 2 pairs failed \(2 new, 0 changed, 0 unchanged"):
        run(since_last=True)
    quiet = run(since_last=True)  # the broken photo has not changed: it would fail the same way
    assert (quiet["still_failing"], quiet["unchanged"], quiet["succeeded"], quiet["failed"]) == (1, 1, 0, 0)
    with pytest.raises(PairsFailedError):  # the default run retries it
        run()

    samples("photos", rocket="broken.jpg")  # fixed under the same name
    assert (
        main(
            [
                "run",
                str(manifest),
                "--out",
                str(out),
                "--since-last",
                *tiny_run(weights_path),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1] == "1 succeeded, 1 skipped, 0 failed (1 new, 0 changed, 1 unchanged (skipped))"
    report = next(line for line in printed if line.startswith("report:")).split()[1]  # next to outputs, results
    assert report.startswith(str(out / "reports")) and os.path.isfile(report)
    table = read_results(str(out / "results"), storage=LOCAL)
    assert "skipped" not in set(table.status)  # a skipped pair has no row: the run's record counts it
    runs = read_runs(str(out / "results"), LOCAL).sort_values("finished_at")
    assert (runs.still_failing.tolist(), runs.succeeded.tolist()) == ([0, 1, 0, 0], [1, 0, 0, 1])
    assert (table[table.status == "failed"].transient == False).all()  # noqa: E712 - bad input, not storage


def test_s3_fingerprints_are_etags_from_the_listing(prefect_api, s3, weights_path):
    fs, options = s3
    for name, key in (("chelsea", "chelsea.jpg"), ("coffee", "Café/coffee.jpg")):  # an album
        fs.put(str(SAMPLES / "content" / f"{name}.jpg"), f"nst-test/in/photos/{key}")
    fs.put(str(SAMPLES / "styles" / "shipwreck.jpg"), "nst-test/in/styles/shipwreck.jpg")
    fs.pipe("nst-test/in/manifest.csv", b"content,style\nphotos/,styles/shipwreck.jpg\n")

    def run():
        return run_manifest(
            "s3://nst-test/in/manifest.csv",
            "s3://nst-test/out",
            overrides=FAST,
            weights=weights_path,
            storage_options=options,
        )

    assert _counts(run()) == (2, 0, 0, 2, 0, 0)
    assert len(fs.glob("nst-test/out/Café/coffee--shipwreck--*.png")) == 1  # under its album
    fs.put(str(SAMPLES / "content" / "rocket.jpg"), "nst-test/in/photos/Café/coffee.jpg")  # replaced: a new ETag
    assert _counts(run()) == (0, 1, 1, 1, 1, 0)
    table = read_results("s3://nst-test/out/results", storage=Storage(options))
    assert table.content_fingerprint.str.startswith("etag:").all()
    assert table.style_fingerprint.str.startswith("etag:").all()


def test_pairs_made_with_earlier_defaults_are_kept_until_forced(
    prefect_api, tmp_path, samples, weights_path, monkeypatch
):
    samples("", "rocket", the_scream="scream.jpg")
    manifest = tmp_path / "m.csv"
    manifest.write_text("content,style,tv_weight\nrocket.jpg,scream.jpg,2\n")  # what tv_weight's default was
    out = tmp_path / "out"

    def run(**kwargs):
        return run_manifest(str(manifest), str(out), weights=weights_path, **{"overrides": FAST, **kwargs})

    assert run()["succeeded"] == 1
    made = _mtimes(out)
    monkeypatch.setattr("nst_core.params.EARLIER_DEFAULTS", ({"tv_weight": 2.0},))
    manifest.write_text("content,style\nrocket.jpg,scream.jpg\n")  # now the default's pair: the same picture
    outcome = run()
    assert (outcome["earlier_defaults"], outcome["skipped"], outcome["succeeded"]) == (1, 1, 0)
    assert _mtimes(out) == made
    # Set explicitly, the new value is what the user asked for: made anew.
    assert run(overrides={**FAST, "tv_weight": 1.0})["succeeded"] == 1
    assert run(force=True)["succeeded"] == 1


def test_outputs_named_as_earlier_versions_named_them_are_found_not_redone(
    prefect_api, tmp_path, samples, weights_path
):
    """Earlier versions wrote every output flat, with ASCII letters only ("_t____Paris___caf__01--..."):
    a rerun finds such an output where the table says it is and redoes nothing; --force writes it
    under its album, with the photo's own name."""
    samples("photos")
    samples("photos/Été", chelsea="Été à Paris — café 01.jpg")
    samples("", the_scream="scream.jpg")
    manifest, out = tmp_path / "m.csv", tmp_path / "out"
    manifest.write_text("content,style\nphotos,scream.jpg\n")
    (pair,), _ = expand_manifest(str(manifest), str(out), overrides=FAST, storage=LOCAL)
    former = out / f"_t____Paris___caf__01--scream--{pair.pair_id[:8]}.png"
    assert pair.former_output == str(former)
    # What an earlier version left: its output, and its row in the table.
    save_image(load_image(pair.content, LOCAL, max_side=32), str(former), LOCAL)
    now = datetime.now(timezone.utc)
    row = {**base_row(dataclasses.replace(pair, output=str(former)), "earlier"), "started_at": now}
    write_rows(str(out / "results"), [{**row, "status": "succeeded", "finished_at": now}], storage=LOCAL)

    def run(**kwargs):
        return run_manifest(str(manifest), str(out), overrides=FAST, weights=weights_path, **kwargs)

    outcome = run()
    assert _counts(outcome) == (0, 0, 1, 0, 1, 0)
    assert [p.relative_to(out) for p in out.rglob("*.png")] == [former.relative_to(out)]
    (shown,) = run_pairs(str(out / "results"), None, LOCAL)[0].output_uri
    assert shown == str(former)  # the report shows it there
    assert "Été à Paris — café 01</td>" in Path(outcome["report"]).read_text()  # the photo's own name

    assert run(force=True)["succeeded"] == 1
    assert (out / "Été" / f"Été à Paris — café 01--scream--{pair.pair_id[:8]}.png").is_file()
    assert _counts(run()) == (0, 0, 1, 0, 1, 0)  # and found there on the next run


def _recorded(pairs, results: str, storage=LOCAL) -> list[str]:
    """One results file per pair, each recording it succeeded; returns the files' URIs."""
    now = datetime.now(timezone.utc)
    return [
        write_rows(
            results,
            [{**base_row(p, "r1"), "status": "succeeded", "started_at": now, "finished_at": now}],
            storage=storage,
        )
        for p in pairs
    ]


def test_a_damaged_results_file_is_skipped_with_its_name_and_its_pairs_redone(tree, caplog):
    from flows.ledger import classify

    (tree / "m.csv").write_text("content,style\nphotos/a.png,styles/x.png\nphotos/b.png,styles/x.png\n")
    pairs, _ = expand_manifest(str(tree / "m.csv"), str(tree / "out"), storage=LOCAL)
    for pair in pairs:
        save_image(load_image(pair.content, LOCAL), pair.output, LOCAL)
    results = str(tree / "out" / "results")
    _, damaged = _recorded(pairs, results)
    os.truncate(damaged, os.path.getsize(damaged) // 2)  # what a copy cut short leaves
    table = read_results(results, storage=LOCAL)
    assert list(table.pair_id) == [pairs[0].pair_id]
    assert f"{damaged}: skipped, not a readable results file" in caplog.text and "Move it out" in caplog.text
    ledger = classify(pairs, table, LOCAL)
    assert (ledger.unchanged[0].pair_id, ledger.new[0].pair_id) == (pairs[0].pair_id, pairs[1].pair_id)
    assert os.path.exists(damaged)  # kept, for its rows to be recovered


def test_a_results_file_that_cannot_be_fetched_stops_the_read(s3_iam_enforced, tree):
    """A storage error is not damage: skipping it would redo every pair the file records."""
    (tree / "m.csv").write_text("content,style\nphotos/a.png,styles/x.png\n")
    pairs, _ = expand_manifest(str(tree / "m.csv"), str(tree / "out"), storage=LOCAL)
    reader = Storage(s3_iam_enforced)  # may write and list there, not read
    _recorded(pairs, "s3://nst-test/private/results", reader)
    with pytest.raises(PermissionError):
        read_results("s3://nst-test/private/results", storage=reader)
