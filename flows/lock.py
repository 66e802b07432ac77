"""One run at a time per results table.

A second `nst run` on the same table refuses with a message that names the run
holding it: two runs would stylize the same pairs twice. The lock is a small
JSON file beside the rows (`_run.lock`, which Parquet readers ignore), created
exclusively (O_EXCL locally, a conditional PUT on S3) and refreshed by a
heartbeat, so a killed run's lock is taken over instead of blocking forever.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time

import fsspec
from fsspec.implementations.local import LocalFileSystem

LOCK_NAME = "_run.lock"
HEARTBEAT_SECONDS = 30
STALE_AFTER_SECONDS = 300  # a lock not refreshed for this long belongs to a dead run
_held: set[str] = set()  # run ids holding a lock in this process


class RunLockedError(RuntimeError):
    """Another run holds the results table."""


def _create(fs, path: str, holder: dict) -> bool:
    """Write the lock only if none exists; False if one does."""
    data = json.dumps(holder).encode()
    try:
        if isinstance(fs, LocalFileSystem):
            fs.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "xb") as handle:
                handle.write(data)
        else:
            fs.pipe_file(path, data, mode="create")
    except FileExistsError:
        return False
    except OSError as error:  # S3 answers a failed condition with 412 PreconditionFailed
        if "PreconditionFailed" not in str(error) and "412" not in str(error):
            raise
        return False
    return True


def _read(fs, path: str) -> dict:
    try:
        return json.loads(fs.cat_file(path))
    except (FileNotFoundError, ValueError):
        return {}


def _is_stale(holder: dict) -> bool:
    """Dead if on this host with no such process (or this process, not running it), or silent for
    STALE_AFTER_SECONDS anywhere."""
    if holder.get("host") == socket.gethostname():
        if holder.get("pid") == os.getpid():  # left by an earlier run of this process
            return holder.get("run_id") not in _held
        try:
            os.kill(int(holder.get("pid", 0)), 0)
        except (ProcessLookupError, ValueError):
            return True
        except PermissionError:
            pass  # alive, another user's
    return time.time() - float(holder.get("heartbeat", 0)) > STALE_AFTER_SECONDS


def _heartbeat(fs, path: str, holder: dict, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_SECONDS):
        with contextlib.suppress(Exception):  # storage down: a missed beat is harmless; STALE_AFTER is 10 beats
            fs.pipe_file(path, json.dumps({**holder, "heartbeat": time.time()}).encode())


def _lock_path(results_uri: str, storage_options: dict | None):
    fs, root = fsspec.core.url_to_fs(results_uri, **(storage_options or {}))
    return fs, f"{root.rstrip('/')}/{LOCK_NAME}"


def _in_use(results_uri: str, holder: dict) -> RunLockedError:
    return RunLockedError(
        f"{results_uri} is in use by run {holder.get('run_id')} on {holder.get('host')} "
        f"(pid {holder.get('pid')}, since {holder.get('started_at')}); wait for it to finish or use "
        f"another --out/--results. If that run is dead, delete {results_uri.rstrip('/')}/{LOCK_NAME}"
    )


def check_free(results_uri: str, storage_options: dict | None = None) -> None:
    """Raise RunLockedError naming the holder if a live run holds the table: `nst run` asks before
    starting Prefect (tens of seconds); run_lock still takes the lock, exclusively, afterwards."""
    fs, path = _lock_path(results_uri, storage_options)
    holder = _read(fs, path)
    if holder and not _is_stale(holder):
        raise _in_use(results_uri, holder)


@contextlib.contextmanager
def run_lock(results_uri: str, run_id: str, storage_options: dict | None = None):
    """Hold the results table for this run, or raise RunLockedError naming the holder."""
    fs, path = _lock_path(results_uri, storage_options)
    holder = {"run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(),
              "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "heartbeat": time.time()}
    if not _create(fs, path, holder):
        current = _read(fs, path)
        if not _is_stale(current):
            raise _in_use(results_uri, current)
        fs.rm_file(path)  # a dead run's lock
        if not _create(fs, path, holder):
            raise RunLockedError(f"{results_uri}: another run took the lock at the same moment; try again")
    _held.add(run_id)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(fs, path, holder, stop), daemon=True)
    beat.start()
    try:
        yield
    finally:
        stop.set()
        _held.discard(run_id)
        with contextlib.suppress(Exception):  # storage down: the lock goes stale and is taken over
            fs.rm_file(path)
