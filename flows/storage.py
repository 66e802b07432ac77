"""Where the flows read and write: local paths and URIs (s3://...) named one way everywhere."""

from __future__ import annotations

import os
import posixpath


def join_uri(root: str, name: str) -> str:
    """`name` under `root`: joined with "/" for a URI, with the OS's separator for a local path."""
    if "://" in root:
        return f"{root.rstrip('/')}/{posixpath.normpath(name)}"
    return os.path.join(root, os.path.normpath(name))


def absolute(uri: str | None) -> str | None:
    """Local paths made absolute (a URI or None as given): what a later run or another folder still finds."""
    return uri if uri is None or "://" in uri else os.path.abspath(uri)
