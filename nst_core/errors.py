"""Errors that are the input's fault, for the core and the flows alike.

An InputError fails its pair alone: the flows record it and never retry it, and its
message is already a sentence a person can act on (it is shown without its type).
Anything else is either a storage hiccup worth a retry or a bug.
"""

import errno

# OSErrors about the path or the disk, not the network: no retry can fix them.
PERMANENT_ERRNOS = frozenset(
    {
        errno.ENOENT,
        errno.EACCES,
        errno.EPERM,
        errno.EISDIR,
        errno.ENOTDIR,
        errno.ELOOP,
        errno.ENAMETOOLONG,
        errno.EROFS,
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EFBIG,
        errno.EEXIST,
        errno.ENXIO,
        errno.ENODEV,
    }
)


def first_line(error: BaseException) -> str:
    """The error's reason in a line: an OSError's strerror (without the path), else its message or type."""
    text = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return (text or type(error).__name__).splitlines()[0]


class InputError(Exception):
    """The input (an image, a parameter, the weights, a missing extra) cannot give a picture."""


class ImageError(InputError, ValueError):
    """Bad image input (or an output that cannot be written): the message names the file and the
    problem, on one line."""


class WeightsError(InputError, RuntimeError):
    """The VGG weights cannot be found, downloaded or used."""


class OptimizationError(InputError, FloatingPointError):
    """The optimisation of one image failed; the image's pair fails with this message."""


class FastUnavailableError(InputError, RuntimeError):
    """The optional fast-lane package (the `fast` extra) is not installed."""
