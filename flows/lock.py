"""One run at a time per results table.

A second `nst run` on the same table refuses with a message that names the run
holding it: two runs would stylize the same pairs twice. The lock is a small
JSON file beside the rows (`_run.lock`, which Parquet readers ignore), created
exclusively (O_EXCL locally, a conditional PUT on S3) and refreshed by a
heartbeat, so a killed run's lock is taken over instead of blocking forever.

The conditional PUT (If-None-Match: *) is honoured by AWS S3 and by moto; other
S3-compatible stores may ignore it and overwrite. Before its first lock on a
remote store, the process probes the store's endpoint (a second conditional
create of a probe key must be refused) and refuses a store that ignores it
unless NST_UNSAFE_LOCK=1, which falls back to look, write, read back.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid

from nst_core.settings import settings, variable
from nst_core.storage import Storage, join_uri

LOCK_NAME = "_run.lock"
HEARTBEAT_SECONDS = 30
STALE_AFTER_SECONDS = 300  # a lock not refreshed for this long belongs to a dead run
UNSAFE_ENV = variable("unsafe_lock")  # "1": lock a store that ignores conditional creates anyway
_held: set[str] = set()  # run ids holding a lock in this process
_honours_create: dict[str, bool] = {}  # endpoint -> verdict of its probe, once per process


class RunLockedError(RuntimeError):
    """Another run holds the results table."""


class UnsafeLockStoreError(RunLockedError):
    """The results table's store ignores conditional creates, so its lock cannot be exclusive."""


def _create(fs, path: str, holder: dict, local: bool) -> bool:
    """Write the lock only if none exists; False if one does."""
    data = json.dumps(holder).encode()
    try:
        if local:
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


def _endpoint(fs) -> str:
    """The service a remote filesystem talks to: a probe's verdict holds for every bucket there."""
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    if "s3" in protocols:
        fs.connect()
        return fs.s3.meta.endpoint_url  # the one botocore resolved: argument, environment or profile
    return f"{protocols[0]}://"


def _probe(fs, folder: str) -> bool:
    """Whether the store creates a fresh key conditionally and refuses a second conditional create of
    it (the probe key is removed afterwards)."""
    probe = f"{folder}/{LOCK_NAME}.probe-{uuid.uuid4().hex[:12]}"
    try:
        return _create(fs, probe, {"probe": True}, False) and not _create(fs, probe, {"probe": True}, False)
    finally:
        with contextlib.suppress(Exception):  # a leftover probe key is inert: readers look at part-*.parquet
            fs.rm_file(probe)


def _exclusive(fs, results_uri: str, path: str, local: bool) -> bool:
    """Whether `_create` on this store is exclusive; raises UnsafeLockStoreError for a store that does
    not honour the condition, unless NST_UNSAFE_LOCK=1 accepts the risk (then False)."""
    if local:
        return True  # O_EXCL
    endpoint = _endpoint(fs)
    if endpoint not in _honours_create:
        _honours_create[endpoint] = _probe(fs, path.rsplit("/", 1)[0])
    if _honours_create[endpoint]:
        return True
    if not settings().unsafe_lock:
        raise UnsafeLockStoreError(
            f"{results_uri}: the store at {endpoint} does not honour conditional creates (If-None-Match), so it cannot "
            f"keep two runs off one results table; put the table on AWS S3 or local disk (--results), or set "
            f"{UNSAFE_ENV}=1 to lock it by look-then-write (two runs started within a second may both run)"
        )
    logging.getLogger(__name__).warning(
        f"{results_uri}: {endpoint} does not honour conditional creates; {UNSAFE_ENV}=1: locking by look-then-write"
    )
    return False


def _take(fs, path: str, holder: dict, exclusive: bool, local: bool) -> bool:
    """Create the lock if none exists; False if one does. On a store that ignores the condition:
    look, write, read back (a run that wrote at the same moment wins; one request and its reply of risk)."""
    if exclusive:
        return _create(fs, path, holder, local)
    if _read(fs, path):
        return False
    fs.pipe_file(path, json.dumps(holder).encode())
    return _read(fs, path).get("run_id") == holder["run_id"]


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


def _lock_path(results_uri: str, storage: Storage):
    """The lock's file system, its path there, and whether that is this machine's disk."""
    fs, root = storage.fs(results_uri)
    return fs, join_uri(root, LOCK_NAME), storage.local_path(results_uri) is not None


def _in_use(results_uri: str, holder: dict) -> RunLockedError:
    return RunLockedError(
        f"{results_uri} is in use by run {holder.get('run_id')} on {holder.get('host')} "
        f"(pid {holder.get('pid')}, since {holder.get('started_at')}); wait for it to finish or use "
        f"another --out/--results. If that run is dead, delete {join_uri(results_uri, LOCK_NAME)}"
    )


def check_free(results_uri: str, storage: Storage) -> None:
    """Raise RunLockedError naming the holder if a live run holds the table, or UnsafeLockStoreError:
    `nst run` asks before starting Prefect (tens of seconds); run_lock still takes the lock,
    exclusively, afterwards."""
    fs, path, local = _lock_path(results_uri, storage)
    _exclusive(fs, results_uri, path, local)  # a store the lock cannot work on is refused here too, at once
    holder = _read(fs, path)
    if holder and not _is_stale(holder):
        raise _in_use(results_uri, holder)


@contextlib.contextmanager
def run_lock(results_uri: str, run_id: str, storage: Storage):
    """Hold the results table for this run, or raise RunLockedError naming the holder."""
    fs, path, local = _lock_path(results_uri, storage)
    holder = {
        "run_id": run_id,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "heartbeat": time.time(),
    }
    exclusive = _exclusive(fs, results_uri, path, local)
    if not _take(fs, path, holder, exclusive, local):
        current = _read(fs, path)
        if not _is_stale(current):
            raise _in_use(results_uri, current)
        fs.rm_file(path)  # a dead run's lock
        if not _take(fs, path, holder, exclusive, local):
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
