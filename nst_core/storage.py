"""Where nst reads and writes: local paths and URIs (s3://...) through one object, and the only
module that knows the file-system library underneath (fsspec).

A Storage is a file system plus the run's options (S3 endpoint, profile, anonymous access).
Credentials are never among the options (they come from the environment or the AWS profile), and
a Storage shows only the options' names, so logging one reveals nothing. It is made once, where
the options arrive (the flow's parameters, the `nst` commands' flags), and handed on: nothing
falls back to a Storage of its own, which would silently drop the run's S3 options.

Writes are atomic: readers see the old file or the whole new one, never a part.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import posixpath
import re
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

import fsspec
from fsspec.implementations.local import LocalFileSystem

from .errors import PERMANENT_ERRNOS, ImageError, first_line
from .settings import settings, variable

HEAD_BLOCK = 64 * 1024  # bytes per read of open_head: most images' headers in one


def join_uri(root: str, name: str) -> str:
    """`name` under `root`: joined with "/" for a URI, with the OS's separator for a local path."""
    if "://" in root:
        return f"{root.rstrip('/')}/{posixpath.normpath(name)}"
    return os.path.join(root, os.path.normpath(name))


def absolute(uri: str | None) -> str | None:
    """Local paths made absolute (a URI or None as given): what a later run or another folder still finds."""
    return uri if uri is None or "://" in uri else os.path.abspath(uri)


@dataclass(frozen=True)
class Storage:
    """Local disk or object storage, with the options every access needs."""

    options: dict | None = None

    def __repr__(self) -> str:
        return f"Storage(options={sorted(self.options or {})})"

    def fs(self, uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
        """The file system holding `uri`, and the path it knows it by."""
        return fsspec.core.url_to_fs(uri, **(self.options or {}))

    def local_path(self, uri: str) -> str | None:
        """`uri`'s path on this machine's disk; None for object storage."""
        fs, path = self.fs(uri)
        return path if isinstance(fs, LocalFileSystem) else None

    def open(self, uri: str, mode: str = "rb"):
        return fsspec.open(uri, mode, **(self.options or {}))

    def open_head(self, uri: str):
        """`uri` open for reading its first bytes (an image's header): from S3 in 64 KiB ranges, where
        open() would fetch 50 MiB blocks, the whole of most photos."""
        fs, path = self.fs(uri)
        return fs.open(path, "rb", block_size=HEAD_BLOCK)

    def exists(self, uri: str) -> bool:
        fs, path = self.fs(uri)
        return fs.exists(path)

    def list(self, folder: str, pattern: str) -> list[str]:
        """The URIs in `folder` whose names match `pattern` (a glob), sorted; none for a missing folder."""
        fs, root = self.fs(folder)
        if not fs.exists(root):
            return []
        return [join_uri(folder, posixpath.basename(path)) for path in sorted(fs.glob(join_uri(root, pattern)))]

    def read_many(self, uris: list[str]) -> dict[str, bytes]:
        """Each file's bytes, by URI (one folder's files, on one file system): from S3 concurrently."""
        if not uris:
            return {}
        fs, _ = self.fs(uris[0])
        paths = [self.fs(uri)[1] for uri in uris]
        return dict(zip(uris, fs.cat_ranges(paths, None, None, on_error="raise")))

    def remove(self, uri: str) -> None:
        """Delete `uri`; one already gone is fine."""
        fs, path = self.fs(uri)
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(path)

    def write_atomic(self, uri: str, data: bytes) -> None:
        """Write `data` whole or not at all (a local temporary renamed into place, or one PUT)."""
        with self.open_atomic(uri) as handle:
            handle.write(data)

    @contextlib.contextmanager
    def open_atomic(self, uri: str) -> Iterator[BinaryIO]:
        """A handle whose bytes replace `uri` when the block ends without error, and are dropped
        otherwise: locally a hidden temporary in the same folder (same file system, so the rename
        is atomic), streamed; remotely a buffer sent in one PUT, which S3 applies all-or-nothing.
        A local path or disk that cannot take it (a directory there, read-only, full) is an
        ImageError naming `uri`."""
        fs, path = self.fs(uri)
        if not isinstance(fs, LocalFileSystem):
            buffer = io.BytesIO()
            yield buffer
            fs.pipe_file(path, buffer.getvalue())
            return
        try:
            with _replacing(path) as handle:
                yield handle
        except OSError as error:
            if error.errno not in PERMANENT_ERRNOS:
                raise
            raise ImageError(f"{uri}: cannot write it: {first_line(error).lower()}") from error

    def sign(self, uri: str) -> str:
        """A link a browser opens: presigned https for S3, file:// for a local path. A presigned link
        names the access key id (never the secret) and grants reading that one object to whoever
        holds it, so it lives only NST_LINK_SECONDS (an hour by default)."""
        if uri.startswith("s3://"):
            fs, path = self.fs(uri)
            return fs.sign(path, expiration=settings().link_seconds)
        return uri if "://" in uri else Path(os.path.abspath(uri)).as_uri()


LOCAL = Storage()  # this machine's disk, which needs no options: checkpoints, spooled rows, samples


# A temporary's name says which host and process wrote it, so a later run can tell a killed writer's
# leftover from a live writer's file: ".NAME.HOST-PID-RANDOM.tmp", HOST a hash of the host name.
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-[0-9a-f]{8}\.tmp")
ORPHAN_AFTER_SECONDS = 3600  # a temporary this old is a dead writer's whatever host wrote it
FAULT_WRITE_DELAY_ENV = variable("fault_write_delay")


def fault_delay() -> None:
    """Sleep NST_FAULT_WRITE_DELAY seconds between writing a temporary and renaming it, and before each
    file a compaction removes: the windows in which the fault-injection tests kill a run or a
    compaction between two steps. Unset outside those tests: no delay."""
    delay = settings().fault_write_delay
    if delay:
        time.sleep(delay)


def _temporary_beside(path: str) -> str:
    """A hidden temporary's path beside local `path` (its folder made), named so that
    remove_orphan_temporaries can tell a killed writer's."""
    directory, name = os.path.split(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    return os.path.join(directory, f".{name}.{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


@contextlib.contextmanager
def _replacing(path: str) -> Iterator[BinaryIO]:
    """A hidden temporary file beside local `path`, synced and renamed over it when the block ends."""
    temporary = _temporary_beside(path)
    try:
        with open(temporary, "xb") as handle:  # plain open: the file gets the usual umask permissions
            yield handle
            handle.flush()
            os.fsync(handle.fileno())  # on disk before the rename, so a crash cannot leave an empty file
        fault_delay()
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise


def _writer_is_dead(match: re.Match, age_seconds: float) -> bool:
    """A temporary from a process gone from this host, or old enough to be from a dead one anywhere."""
    if age_seconds > ORPHAN_AFTER_SECONDS:
        return True
    if match["host"] != _HOST or int(match["pid"]) == os.getpid():
        return False  # another host's (on a shared disk), or being written by this process now
    try:
        os.kill(int(match["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    return False


def remove_orphan_temporaries(folder: str) -> list[str]:
    """Remove the hidden temporaries that writers killed mid-write left directly in local `folder`
    (readers ignore them, but they pile up); returns their paths. A live writer's stay; remote
    folders have none (one PUT)."""
    root = folder.removeprefix("file://")
    if "://" in root or not os.path.isdir(root):
        return []
    removed = []
    for entry in os.scandir(root):
        match = _TEMPORARY.fullmatch(entry.name)
        with contextlib.suppress(FileNotFoundError):  # renamed or removed by its writer meanwhile
            if match and _writer_is_dead(match, time.time() - entry.stat(follow_symlinks=False).st_mtime):
                os.remove(entry.path)
                removed.append(entry.path)
    return removed
