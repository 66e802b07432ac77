"""One run at a time per results table: the second refuses, a dead run's lock is taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from conftest import REPO, SAMPLES
from flows.lock import LOCK_NAME, RunLockedError, run_lock
from flows.results import read_results


def test_a_second_holder_is_refused_with_the_first_named(tmp_path):
    results = str(tmp_path / "results")
    with run_lock(results, "first-run"):
        with pytest.raises(RunLockedError, match=r"in use by run first-run on .* \(pid \d+"):
            with run_lock(results, "second-run"):
                pass
    assert not (tmp_path / "results" / LOCK_NAME).exists()  # released
    with run_lock(results, "third-run"):  # free again
        assert json.loads((tmp_path / "results" / LOCK_NAME).read_text())["run_id"] == "third-run"


def test_a_dead_runs_lock_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "results").mkdir()
    lock = {"run_id": "killed-run", "host": socket.gethostname(), "pid": dead.pid, "heartbeat": time.time()}
    (tmp_path / "results" / LOCK_NAME).write_text(json.dumps(lock))
    with run_lock(str(tmp_path / "results"), "next-run"):
        assert "next-run" in (tmp_path / "results" / LOCK_NAME).read_text()


def test_a_silent_lock_from_another_host_is_taken_over_but_a_fresh_one_is_not(tmp_path):
    (tmp_path / "results").mkdir()
    path = tmp_path / "results" / LOCK_NAME
    path.write_text(json.dumps({"run_id": "busy", "host": "elsewhere", "pid": 1, "heartbeat": time.time()}))
    with pytest.raises(RunLockedError, match="busy on elsewhere"):
        with run_lock(str(tmp_path / "results"), "mine"):
            pass
    path.write_text(json.dumps({"run_id": "gone", "host": "elsewhere", "pid": 1, "heartbeat": time.time() - 3600}))
    with run_lock(str(tmp_path / "results"), "mine"):
        assert "mine" in path.read_text()


def test_nst_run_refuses_a_held_table_within_seconds_before_starting_prefect(tmp_path):
    (tmp_path / "out" / "results").mkdir(parents=True)
    holder = {"run_id": "nightly-1", "host": socket.gethostname(), "pid": os.getpid(), "started_at": "02:00",
              "heartbeat": time.time()}  # this test's process: alive
    (tmp_path / "out" / "results" / LOCK_NAME).write_text(json.dumps(holder))
    (tmp_path / "m.csv").write_text(f"content,style\n{SAMPLES / 'content' / 'chelsea.jpg'},{SAMPLES / 'styles'}\n")
    started = time.time()
    result = subprocess.run([sys.executable, "-m", "flows.cli", "run", str(tmp_path / "m.csv"), "--out",
                             str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert time.time() - started < 5, "the lock must be checked before Prefect's server starts"
    assert result.returncode == 2 and "is in use by run nightly-1" in result.stderr
    assert "Starting temporary server" not in result.stderr + result.stdout


def test_the_lock_on_s3_is_a_conditional_put(s3):
    fs, options = s3
    with run_lock("s3://nst-test/res", "first", options):
        assert fs.exists(f"nst-test/res/{LOCK_NAME}")
        with pytest.raises(RunLockedError, match="in use by run first"):
            with run_lock("s3://nst-test/res", "second", options):
                pass
    assert not fs.exists(f"nst-test/res/{LOCK_NAME}")


def test_two_runs_at_once_on_one_output_root(prefect_api, tmp_path, weights_path):
    """Started together: one runs, the other refuses with a clear message; the table is whole."""
    (tmp_path / "photos").mkdir()
    for name in ("chelsea", "coffee"):
        (tmp_path / "photos" / f"{name}.jpg").write_bytes((SAMPLES / "content" / f"{name}.jpg").read_bytes())
    (tmp_path / "m.csv").write_text(f"content,style\nphotos,{SAMPLES / 'styles' / 'shipwreck.jpg'}\n")
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "NST_WEIGHTS": weights_path}
    command = [sys.executable, "-m", "flows.cli", "run", str(tmp_path / "m.csv"), "--out", str(tmp_path / "out"),
               "--size", "32", "--iterations", "200", "--tolerance", "0"]  # holds the lock for seconds
    runs = [subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    results = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], [err[-1500:] for _, err in results]
    refused = next(err for code, err in results if code == 2)
    assert "is in use by run" in refused and LOCK_NAME in refused
    table = read_results(str(tmp_path / "out" / "results"))
    assert len(table) == 2 and set(table.status) == {"succeeded"} and table.pair_id.is_unique
