"""Where the flows read and write: local paths and URIs (s3://...) through one object.

A Storage is fsspec plus the run's options (S3 endpoint, profile, anonymous access). Credentials
are never among the options (they come from the environment or the AWS profile), and a Storage
shows only the options' names, so logging one reveals nothing.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from pathlib import Path

import fsspec

from nst_core.image_io import write_bytes_atomic

SIGNED_SECONDS = 7 * 24 * 3600  # a week: the longest an S3 (SigV4) presigned link may live


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

    def join(self, root: str, name: str) -> str:
        return join_uri(root, name)

    def open(self, uri: str, mode: str = "rb"):
        return fsspec.open(uri, mode, **(self.options or {}))

    def exists(self, uri: str) -> bool:
        fs, path = self.fs(uri)
        return fs.exists(path)

    def list(self, folder: str, pattern: str) -> list[str]:
        """The URIs in `folder` whose names match `pattern` (a glob), sorted; none for a missing folder."""
        fs, root = self.fs(folder)
        if not fs.exists(root):
            return []
        return [join_uri(folder, posixpath.basename(path)) for path in sorted(fs.glob(join_uri(root, pattern)))]

    def write_atomic(self, uri: str, data: bytes) -> None:
        """Write `data` whole or not at all (a local temporary renamed into place, or one PUT)."""
        write_bytes_atomic(uri, data, storage_options=self.options)

    def sign(self, uri: str, seconds: int = SIGNED_SECONDS) -> str:
        """A link a browser opens: presigned https for S3 (valid `seconds`), file:// for a local path."""
        if uri.startswith("s3://"):
            fs, path = self.fs(uri)
            return fs.sign(path, expiration=seconds)
        return uri if "://" in uri else Path(os.path.abspath(uri)).as_uri()
