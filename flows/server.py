"""The temporary Prefect server of a `nst run` that has no PREFECT_API_URL, started here rather
than lazily by Prefect, so that it cannot outlive or undercut the run.

- Its own session: Ctrl-C in a terminal signals every process the command started; had it
  reached the server, the run would spend minutes retrying a dead API before it could stop.
  Here only the run gets it, stops cleanly, then stops the server.
- It dies with the run: a parent-death signal (Linux `prctl(PR_SET_PDEATHSIG)`), so a
  SIGKILL of the run leaves no orphaned uvicorn holding memory.

The command and environment are those Prefect's own SubprocessASGIServer uses, with its UI on, so
a run can be watched while it lasts. `nst ui` starts the other kind here: a server that keeps its
history (`prefect server start`), which schedules need.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import httpx

from nst_core.settings import settings, variable

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
START_ENV = variable("server_start_seconds")
TEMPORARY = "NST_TEMPORARY_PREFECT_SERVER"  # set while a run reports to its temporary server
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


def app_with_ui():
    """The temporary server's ASGI app (a uvicorn factory): Prefect's ephemeral server, which runs only
    the services a run needs (no scheduler to fire other deployments' runs), with the UI that Prefect
    serves only on full servers, so a run can be watched while it lasts."""
    from prefect.server.api.server import create_app, create_ui_app

    server, ui = create_app(ephemeral=True, final=True), create_ui_app(ephemeral=False)

    async def app(scope, receive, send):
        to = ui if scope["type"] == "http" and not scope["path"].startswith("/api") else server
        await to(scope, receive, send)

    return app


def _start(port: int, log) -> subprocess.Popen:
    """The server on `port`, its output to the file `log`."""
    import prefect
    from prefect.settings import get_current_settings

    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        str(prefect.__module_path__.parent),
        "--factory",
        "flows.server:app_with_ui",
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
        "PREFECT_SERVER_UI_ENABLED": "1",  # a setting of the user's own, below, still wins
        "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",  # where the browser's UI finds the API
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "0",  # a temporary server reports no usage (nor errors when offline)
        **get_current_settings().to_environment_variables(exclude_unset=True),
    }
    return subprocess.Popen(
        command,
        env=env,
        stdout=log,
        stderr=log,
        start_new_session=True,
        preexec_fn=_die_with_parent(os.getpid()),
    )


LOCKED = (
    "Prefect's database is locked by another process (another Prefect server using the same PREFECT_HOME?): "
    "send this run to that server with PREFECT_API_URL=http://127.0.0.1:4200/api (its address), or give "
    "this run a PREFECT_HOME of its own"
)


def _output(log) -> str:
    """What the server wrote so far (read without moving the offset the server writes at)."""
    return os.pread(log.fileno(), os.fstat(log.fileno()).st_size, 0).decode(errors="replace")


def _locked(log) -> bool:
    return "database is locked" in _output(log)


def _exit_reason(process: subprocess.Popen, log) -> str:
    """Why the server exited, in one line: a locked database, else its first error (without its time
    and logger: "[Errno 98] ... address already in use"), else its last line."""
    if _locked(log):
        return LOCKED
    lines = [line.strip() for line in _output(log).splitlines() if line.strip()]
    errors = [line.split(" - ", 1)[-1] for line in lines if "| ERROR" in line]
    said = errors[0] if errors else (lines[-1] if lines else "")
    return f"the temporary Prefect server exited with code {process.returncode}" + (f": {said}" if said else "")


def _wait_healthy(process: subprocess.Popen, api_url: str, log) -> None:
    """Wait while the server's process lives and starts, up to NST_SERVER_START_SECONDS."""
    timeout = settings().server_start_seconds
    deadline = time.monotonic() + timeout
    with httpx.Client() as client:
        while time.monotonic() < deadline and process.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"{api_url}/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
    if process.poll() is not None:
        raise RuntimeError(_exit_reason(process, log))
    raise RuntimeError(
        f"the temporary Prefect server did not answer at {api_url} within {timeout:.0f} s; "
        f"on a busy machine give it longer with {START_ENV}=SECONDS"
    )


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _start_answering(log) -> tuple[subprocess.Popen, str]:
    """A temporary server that answers, and its address: started a second time, on another port,
    when the first did not answer in time or exited (a busy machine, a port taken meanwhile)."""
    for attempt in (1, 2):
        port = free_port()
        address = f"http://127.0.0.1:{port}"
        print(f"Starting temporary server on {address} (stops with this run)", file=sys.stderr)
        process = _start(port, log)
        try:
            _wait_healthy(process, f"{address}/api", log)
            return process, address
        except RuntimeError as error:
            _stop(process)
            if attempt == 2 or _locked(log):  # a locked database stays locked: a second minute spent for nothing
                raise
            print(f"nst: {error}; trying once more", file=sys.stderr)
            os.truncate(log.fileno(), 0)


def _serves_ui(address: str) -> bool:
    """Whether the server's UI answers (Prefect leaves it out when its files cannot be copied, or
    when the user's settings turn it off)."""
    with contextlib.suppress(httpx.HTTPError):
        page = httpx.get(address, headers={"Accept": "text/html"}, timeout=10, follow_redirects=True)  # as a browser
        return page.status_code == 200 and page.headers.get("content-type", "").startswith("text/html")
    return False


def on_temporary_server() -> bool:
    """Whether this process reports to the temporary server of a `nst run`, whose pages go with it."""
    return os.environ.get(TEMPORARY) == "1"


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
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    if PREFECT_API_URL.value():
        yield PREFECT_API_URL.value()
        return
    log = tempfile.TemporaryFile()  # the server's output: its tracebacks would bury the run's own lines
    process, address = _start_answering(log)
    try:
        ui = address if _serves_ui(address) else ""  # "": no "View at" link to a page that is not there
        os.environ[TEMPORARY] = "1"  # inherited by the Dask workers a run starts
        with temporary_settings(updates={PREFECT_API_URL: f"{address}/api", PREFECT_UI_URL: ui}):
            yield f"{address}/api"
    finally:
        os.environ.pop(TEMPORARY, None)
        _drain_prefect_queues()
        _stop(process)
        if _locked(log):  # the database locked during the run: a line instead of the server's tracebacks
            print(f"nst: {LOCKED}", file=sys.stderr)
        log.close()


def lasting_server(host: str, port: int) -> int:
    """`nst ui`: `prefect server start` in the foreground, its history in PREFECT_HOME (~/.prefect), and
    once it answers, where its UI is and how to send runs to it; returns its exit code (Ctrl-C stops it)."""
    from prefect.settings import PREFECT_HOME

    with socket.socket() as sock:
        if sock.connect_ex((host, port)) == 0:
            raise RuntimeError(f"port {port} is taken (a Prefect server already? open http://{host}:{port}); --port N")
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port), "--ui"]
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    process = subprocess.Popen(command, env=env, preexec_fn=_die_with_parent(os.getpid()))
    address = f"http://{host}:{port}"
    try:
        while process.poll() is None and not _answers(f"{address}/api/health"):
            time.sleep(0.5)
        if process.poll() is None:
            print(
                f"\nPrefect UI: {address}  (history in {PREFECT_HOME.value()}; Ctrl-C stops it)\n"
                "Send runs to it from another terminal:\n"
                f"  export PREFECT_API_URL={address}/api\n"
                "  nst run manifests/example.csv --out out/example",
                flush=True,
            )
        return process.wait()
    except KeyboardInterrupt:  # the terminal's Ctrl-C reached the server too: it is stopping
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.terminate()
            process.wait()
        return 0


def _answers(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url, timeout=2).status_code == 200
    return False
