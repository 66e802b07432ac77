"""The temporary Prefect server of a `nst run` that has no PREFECT_API_URL, started here rather
than lazily by Prefect, so that it cannot outlive or undercut the run.

- Its own session: Ctrl-C in a terminal signals every process the command started; had it
  reached the server, the run would spend minutes retrying a dead API before it could stop.
  Here only the run gets it, stops cleanly, then stops the server.
- It dies with the run: a parent-death signal (Linux `prctl(PR_SET_PDEATHSIG)`), so a
  SIGKILL of the run leaves no orphaned uvicorn holding memory.

The command and environment are those Prefect's own SubprocessASGIServer uses.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time

import httpx

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# Looked up before any fork: the child between fork and exec should not load libraries.
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def _die_with_parent(parent: int):
    """preexec_fn: SIGTERM this child when the process that started it dies (Linux only)."""

    def arrange() -> None:
        if _prctl is not None:
            _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return arrange


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(port: int) -> subprocess.Popen:
    import prefect
    from prefect.settings import get_current_settings

    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        str(prefect.__module_path__.parent),
        "--factory",
        "prefect.server.api.server:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "error",
        "--lifespan",
        "on",
    ]
    env = {
        **os.environ,
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
        **get_current_settings().to_environment_variables(exclude_unset=True),
    }
    return subprocess.Popen(command, env=env, start_new_session=True, preexec_fn=_die_with_parent(os.getpid()))


def _wait_healthy(process: subprocess.Popen, api_url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client() as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the temporary Prefect server exited with code {process.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"{api_url}/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
    raise RuntimeError(f"the temporary Prefect server did not answer at {api_url} within {timeout:.0f} s")


def _drain_prefect_queues() -> None:
    """Send the logs and events Prefect still holds before their server goes ("Error logging to API")."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for queue in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):  # the server already gone: nothing more to deliver to
            queue.drain_all(timeout=5)


@contextlib.contextmanager
def temporary_server():
    """Inside, Prefect reports to a temporary server of this process's own (none is started when
    PREFECT_API_URL is set); yields the API URL it uses."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings

    if PREFECT_API_URL.value():
        yield PREFECT_API_URL.value()
        return
    port = free_port()
    address = f"http://127.0.0.1:{port}"
    print(f"Starting temporary server on {address} (stops with this run)", file=sys.stderr)
    process = _start(port)
    try:
        _wait_healthy(process, f"{address}/api", PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
        with temporary_settings(updates={PREFECT_API_URL: f"{address}/api"}):
            yield f"{address}/api"
    finally:
        _drain_prefect_queues()
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
