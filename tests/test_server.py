"""`nst run`'s temporary Prefect server: it is waited for while it starts, started again once, and
its troubles told in one line."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time

import httpx
import pytest

from conftest import REPO, nst, tiny_run
from flows import server
from flows.server import START_ENV, temporary_server


@pytest.fixture
def no_api(monkeypatch):
    """No PREFECT_API_URL: temporary_server starts a server of its own."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        yield


def test_a_server_that_cannot_start_is_started_again_once(no_api, monkeypatch, capsys):
    """Its first port taken in between (as by another program), the second start answers."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    ports = iter([port])
    real_free_port = server.free_port
    monkeypatch.setattr(server, "free_port", lambda: next(ports, None) or real_free_port())
    with taken, temporary_server() as api:
        assert httpx.get(f"{api}/health", timeout=10).status_code == 200
    told = capsys.readouterr().err
    assert told.count("Starting temporary server") == 2
    assert (
        f"[Errno 98] error while attempting to bind on address ('127.0.0.1', {port}): address already in use; trying once more"
        in told
    )


def test_a_server_slower_than_the_setting_fails_in_one_line_naming_it(no_api, monkeypatch, capsys):
    monkeypatch.setenv(START_ENV, "0.5")  # no server answers this fast
    with pytest.raises(RuntimeError) as failed:
        with temporary_server():
            pass
    message = str(failed.value)
    assert "\n" not in message and "did not answer" in message and f"{START_ENV}=SECONDS" in message
    told = capsys.readouterr().err
    assert told.count("Starting temporary server") == 2 and told.count("trying once more") == 1


def test_a_locked_prefect_database_is_told_in_one_line(no_api, tmp_path, capfd):
    """Another process holds Prefect's SQLite database (as a second Prefect server on the same
    PREFECT_HOME can): the run says so and how to fix it, without the server's tracebacks."""
    from prefect.settings import PREFECT_HOME, temporary_settings

    holder = sqlite3.connect(tmp_path / "prefect.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    with temporary_settings(updates={PREFECT_HOME: str(tmp_path)}):
        with pytest.raises(RuntimeError) as failed, temporary_server():
            pass
    holder.close()
    assert str(failed.value) == server.LOCKED
    told = capfd.readouterr().err
    assert told.count("Starting temporary server") == 1  # not started again: it would wait as long for nothing
    assert "Traceback" not in told and "OperationalError" not in told


@pytest.mark.timeout(600)
def test_a_run_on_a_machine_saturated_by_other_work_starts_its_server_and_finishes(tmp_path, samples, weights_path):
    """Both cores busy with other programs at the same priority: the run's temporary server starts
    however long that takes, and its pair is stylized (32 px, one step)."""
    samples("photos", "chelsea")
    samples("styles", "the_scream")
    (tmp_path / "m.csv").write_text("content,style\nphotos,styles\n")
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}  # the run starts its own
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2 * (os.cpu_count() or 1))]
    try:
        started = time.monotonic()
        result = subprocess.run(
            nst("run", tmp_path / "m.csv", "--out", tmp_path / "out", *tiny_run(weights_path, iterations=1)),
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=540,
        )
    finally:
        for process in busy:
            process.kill()
            process.wait()
    assert result.returncode == 0, result.stderr[-2000:]
    assert "1 succeeded" in result.stdout and "did not answer" not in result.stderr
    print(f"finished in {time.monotonic() - started:.0f} s on a saturated machine")
