"""One run at a time per results table.

A second `nst run` on the same table refuses with a message that names the run
holding it: two runs would stylize the same pairs twice. The lock is a small
JSON file beside the rows (`_run.lock`, which Parquet readers ignore), created
exclusively (linked in locally, a conditional PUT on S3) and refreshed by a
heartbeat while the run lives, so a killed or hung run's lock is taken over
instead of blocking forever. A takeover replaces only the very lock judged dead
(compared under an flock of the folder locally, a PUT with If-Match on its ETag
on S3): of runs started together after a crash, one takes it.

The conditional PUTs (If-None-Match: *, If-Match) are honoured by AWS S3 and by
moto; other S3-compatible stores may ignore them and overwrite. Before its first
lock on a remote store, the process probes the store's endpoint (a second
conditional create of a probe key, and a replace of it on a wrong ETag, must be
refused) and refuses a store that ignores them unless NST_UNSAFE_LOCK=1, which
falls back to look, write, read back.
"""

from __future__ import annotations

import contextlib
import fcntl
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
STOP_GRACE_SECONDS = 120  # a run asked to stop this long ago that still holds its lock is hung
UNSAFE_ENV = variable("unsafe_lock")  # "1": lock a store that ignores conditional creates anyway
_held: set[str] = set()  # run ids holding a lock in this process
_honours_create: dict[str, bool] = {}  # endpoint -> verdict of its probe, once per process


class RunLockedError(RuntimeError):
    """Another run holds the results table."""


class UnsafeLockStoreError(RunLockedError):
    """The results table's store ignores conditional creates, so its lock cannot be exclusive."""


def _put_local(path: str, data: bytes, replace: bool) -> None:
    """Write the lock file whole, so a reader never sees part of one: a temporary beside it renamed
    over it (`replace`), or linked in (FileExistsError if a lock is there)."""
    temporary = f"{path}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(temporary, "xb") as handle:
            handle.write(data)
        (os.replace if replace else os.link)(temporary, path)
    except OSError as error:
        if error.filename is None:  # a write's error (a full disk) names no file: name the lock
            raise OSError(error.errno, error.strerror, path) from error
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)


def _refused(error: OSError) -> bool:
    """Whether S3 refused a conditional write (412 PreconditionFailed; s3fs keeps the S3 error as the cause)."""
    code = getattr(error.__cause__, "response", {}).get("Error", {}).get("Code")
    return code == "PreconditionFailed" or "PreconditionFailed" in str(error) or "412" in str(error)


def _create(fs, path: str, holder: dict, local: bool) -> bool:
    """Write the lock only if none exists; False if one does."""
    data = json.dumps(holder).encode()
    try:
        if local:
            fs.makedirs(os.path.dirname(path), exist_ok=True)
            _put_local(path, data, replace=False)
        else:
            fs.pipe_file(path, data, mode="create")
    except FileExistsError:
        return False
    except OSError as error:
        if not _refused(error):
            raise
        return False
    return True


@contextlib.contextmanager
def _guard(path: str, local: bool):
    """Locally, one process at a time between reading the lock and replacing or removing it: an
    exclusive flock of its folder, which the kernel drops if the holder dies. On S3 the conditional
    PUT (If-Match) is the guard."""
    if not local:
        yield
        return
    folder = os.open(os.path.dirname(path), os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        yield
    finally:
        os.close(folder)


def _replace(fs, path: str, expected: dict, version: str | None, holder: dict, exclusive: bool, local: bool) -> bool:
    """Write `holder` over the lock only if it still is `expected` (read at `version`, its ETag on S3);
    False if it changed. On a store that ignores conditions: look, write, read back."""
    data = json.dumps(holder).encode()
    if not exclusive:
        if _read(fs, path) != expected:
            return False
        fs.pipe_file(path, data)
        return _read(fs, path).get("run_id") == holder["run_id"]
    if local:
        with _guard(path, local):
            if _read(fs, path) != expected:
                return False
            _put_local(path, data, replace=True)
        return True
    try:
        fs.pipe_file(path, data, IfMatch=version)
    except OSError as error:
        if not _refused(error):
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
    wrong = '"' + "0" * 32 + '"'  # an ETag no object has
    try:
        return (
            _create(fs, probe, {"probe": True}, False)
            and not _create(fs, probe, {"probe": True}, False)
            and not _replace(fs, probe, {"probe": True}, wrong, {"probe": 2, "run_id": ""}, True, False)
        )
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
            f"{results_uri}: the store at {endpoint} does not honour conditional creates (If-None-Match, If-Match), "
            f"so it cannot keep two runs off one results table; put the table on AWS S3 or local disk (--results), or set "
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


def _read_versioned(fs, path: str, local: bool) -> tuple[dict, str | None]:
    """The lock's holder ({} if none) and, on object storage, its ETag, read before it: a change in
    between makes a replace conditional on that ETag fail, so no lock is replaced unseen."""
    version = None
    if not local:
        fs.invalidate_cache(path)
        with contextlib.suppress(FileNotFoundError):
            version = fs.info(path)["ETag"]
    return _read(fs, path), version


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


def _run_alive(stopped_at) -> bool:
    """Whether the run still deserves its lock: its main thread is running, and a signal did not ask it
    to stop more than STOP_GRACE_SECONDS ago (stopping takes seconds; longer, it is hung)."""
    since = stopped_at()
    return threading.main_thread().is_alive() and (since is None or time.monotonic() - since < STOP_GRACE_SECONDS)


def _beat(fs, path: str, holder: dict, exclusive: bool, local: bool) -> bool:
    """Refresh this run's lock; False when it is not this run's any more (taken over as stale)."""
    current, version = _read_versioned(fs, path, local)
    if current.get("run_id") != holder["run_id"]:
        return False
    return _replace(fs, path, current, version, {**holder, "heartbeat": time.time()}, exclusive, local)


def _heartbeat(fs, path: str, holder: dict, stop: threading.Event, stopped_at, exclusive: bool, local: bool) -> None:
    """Refresh the lock while the run is alive; a hung run's lock then goes stale and is taken over."""
    while not stop.wait(HEARTBEAT_SECONDS) and _run_alive(stopped_at):
        try:
            if not _beat(fs, path, holder, exclusive, local):
                return
        except Exception:  # noqa: BLE001 - storage down: a missed beat is harmless; STALE_AFTER is 10 beats
            pass


def _acquire(results_uri: str, fs, path: str, holder: dict, exclusive: bool, local: bool) -> None:
    """Take the lock, from a dead run if need be, or raise RunLockedError naming its live holder."""
    for _ in range(3):  # each pass ends when another run creates, releases or replaces the lock in between
        if _take(fs, path, holder, exclusive, local):
            return
        current, version = _read_versioned(fs, path, local)
        if current and not _is_stale(current):
            raise _in_use(results_uri, current)
        if current and _replace(fs, path, current, version, holder, exclusive, local):  # a dead run's lock
            return
    raise RunLockedError(f"{results_uri}: other runs took and released the lock meanwhile; try again")


def _release(fs, path: str, run_id: str, local: bool) -> None:
    """Remove the lock if it is still this run's: a run taken over as hung must not remove its successor's."""
    with _guard(path, local):
        if _read(fs, path).get("run_id") == run_id:
            fs.rm_file(path)


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
def run_lock(results_uri: str, run_id: str, storage: Storage, stopped_at=lambda: None):
    """Hold the results table for this run, or raise RunLockedError naming the holder. stopped_at():
    when (time.monotonic()) a signal asked the run to stop, or None."""
    fs, path, local = _lock_path(results_uri, storage)
    holder = {
        "run_id": run_id,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "heartbeat": time.time(),
    }
    exclusive = _exclusive(fs, results_uri, path, local)
    _acquire(results_uri, fs, path, holder, exclusive, local)
    _held.add(run_id)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(fs, path, holder, stop, stopped_at, exclusive, local), daemon=True)
    beat.start()
    try:
        yield
    finally:
        stop.set()
        _held.discard(run_id)
        with contextlib.suppress(Exception):  # storage down: the lock goes stale and is taken over
            _release(fs, path, run_id, local)
