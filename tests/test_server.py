"""`nst run`'s temporary Prefect server: it is waited for while it starts, started again once, and
its troubles told in one line."""

from __future__ import annotations

import contextlib
import http.server
import os
import pty
import socket
import sqlite3
import subprocess
import sys
import threading
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
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL, temporary_settings

    holder = sqlite3.connect(tmp_path / "prefect.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    with temporary_settings(
        updates={PREFECT_API_DATABASE_CONNECTION_URL: f"sqlite+aiosqlite:///{tmp_path}/prefect.db"}
    ):
        with pytest.raises(RuntimeError) as failed, temporary_server():
            pass
    holder.close()
    assert str(failed.value) == server.LOCKED
    told = capfd.readouterr().err
    assert told.count("Starting temporary server") == 1  # not started again: it would wait as long for nothing
    assert "Traceback" not in told and "OperationalError" not in told


@pytest.mark.timeout(600)
def test_a_run_on_a_machine_saturated_by_other_work_starts_its_server_and_finishes(tmp_path, samples, weights_path):
    """Every core busy with another program at the same priority: the run's temporary server starts
    however long that takes, and its pair is stylized (32 px, one step)."""
    samples("photos", "chelsea")
    samples("styles", "the_scream")
    (tmp_path / "m.csv").write_text("content,style\nphotos,styles\n")
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}  # the run starts its own
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
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


def test_a_rerun_with_nothing_to_do_ends_in_seconds_without_a_server(prefect_api, tmp_path, samples, weights_path):
    from flows.pipeline import run_manifest
    from flows.results import read_results
    from nst_core.storage import LOCAL

    samples("photos", "chelsea", "coffee")
    samples("styles", "the_scream")
    (tmp_path / "m.csv").write_text("content,style\nphotos,styles\n")
    out = tmp_path / "out"
    flags = tiny_run(weights_path, iterations=1)
    run_manifest(
        str(tmp_path / "m.csv"),
        str(out),
        overrides={"size": 32, "iterations": 1, "tolerance": 0.0},
        weights=weights_path,
    )
    rows = len(read_results(str(out / "results"), storage=LOCAL))
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}  # a server would be started
    started = time.monotonic()
    rerun = subprocess.run(
        nst("run", tmp_path / "m.csv", "--out", out, *flags),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    seconds = time.monotonic() - started
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert (
        "0 succeeded, 2 skipped, 0 failed (0 new, 0 changed, 2 unchanged (skipped)): nothing to stylize" in rerun.stdout
    )
    assert "Starting temporary server" not in rerun.stderr
    assert len(read_results(str(out / "results"), storage=LOCAL)) == rows  # nothing written
    assert seconds < 8, f"{seconds:.1f} s"  # 2.2 s on the shared 2-core machine; a run with a server takes 25 s


class _Unavailable(http.server.BaseHTTPRequestHandler):
    """A Prefect API that is up (health and version answer) but overloaded: every other call is a 503."""

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = self.path.split("?")[0].rstrip("/")
        status, body = {"/api/health": (200, b"true"), "/api/admin/version": (200, b'"3.8.8"')}.get(
            path, (503, b'{"detail": "Service Unavailable"}')
        )
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _answer

    def log_message(self, *args) -> None:
        pass


def _in_a_terminal(command: list[str], env: dict) -> str:
    """What `command` prints when its output is a terminal (as a person running it sees it)."""
    main, terminal = pty.openpty()
    process = subprocess.Popen(command, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal)
    os.close(terminal)
    said = b""
    with contextlib.suppress(OSError):  # EIO: the terminal closed with the process
        while chunk := os.read(main, 4096):
            said += chunk
    os.close(main)
    process.wait(timeout=120)
    return said.decode(errors="replace")


def test_an_overloaded_prefect_api_is_one_line_without_prefects_notice(tmp_path, samples, weights_path):
    """A Prefect server answering 503: one line naming it, no traceback; in a terminal, on a new
    PREFECT_HOME, no notice about usage data either."""
    api = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Unavailable)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    samples("photos", "chelsea")
    samples("styles", "the_scream")
    (tmp_path / "m.csv").write_text("content,style\nphotos,styles\n")
    env = {key: value for key, value in os.environ.items() if key not in ("DO_NOT_TRACK", "CI")}
    address = f"http://127.0.0.1:{api.server_address[1]}/api"
    env.update(PREFECT_API_URL=address, PREFECT_HOME=str(tmp_path / "home"), PREFECT_CLIENT_MAX_RETRIES="1")
    try:
        said = _in_a_terminal(nst("run", tmp_path / "m.csv", "--out", tmp_path / "out", *tiny_run(weights_path)), env)
    finally:
        api.shutdown()
    lines = [line for line in said.splitlines() if line.strip()]
    assert lines[-1] == (
        f"nst: the Prefect API at {address}/csrf-token answered 503 Service Unavailable: its server is "
        "overloaded or failing; try again once it answers"
    ), said[-3000:]
    assert "Traceback" not in said and "anonymous usage" not in said


def test_the_temporary_server_is_quiet_offline(tmp_path):
    """Offline (as this machine is), a Prefect server reporting usage logs an ERROR for each report it
    cannot send; the temporary server reports none, and its output stays off the terminal."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PREFECT_API_URL", "PREFECT_SERVER_ANALYTICS"))
    }
    script = "import time\nfrom flows.server import temporary_server\nwith temporary_server():\n    time.sleep(10)\n"
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.splitlines() == [
        line for line in result.stderr.splitlines() if line.startswith("Starting temporary server")
    ]
