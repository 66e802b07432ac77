"""Keeping the content's colours (Gatys et al. 2017, "Controlling Perceptual Factors")."""

from __future__ import annotations

import numpy as np

# RGB <-> YIQ: luminance Y and two chroma channels, as jcjohnson/neural-style's -original_colors.
RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
_YIQ_TO_RGB = np.linalg.inv(RGB_TO_YIQ).astype(np.float32)


def transfer_luminance(stylized: np.ndarray, content: np.ndarray) -> np.ndarray:
    """The stylized image's luminance with the content's chroma (same shapes)."""
    yiq_stylized = stylized @ RGB_TO_YIQ.T
    yiq_content = content @ RGB_TO_YIQ.T
    merged = np.concatenate([yiq_stylized[..., :1], yiq_content[..., 1:]], axis=-1)
    return np.clip(merged @ _YIQ_TO_RGB.T, 0.0, 1.0)


def sqrt_psd(matrix: np.ndarray, inverse: bool = False) -> np.ndarray:
    """Square root (or inverse square root) of a symmetric positive semi-definite matrix."""
    values, vectors = np.linalg.eigh(matrix)
    values = np.maximum(values, 1e-5) ** (-0.5 if inverse else 0.5)
    return (vectors * values) @ vectors.T


def match_color_histogram(source: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Recolour `source` so its colour mean and covariance equal `reference`'s.

    Applied to the style image before its statistics are taken, the stylization paints
    with the content's palette; applied to the content (init="recolored"), it starts
    from the photo in the painting's palette.
    """
    src = source.reshape(-1, 3).astype(np.float64)
    ref = reference.reshape(-1, 3).astype(np.float64)
    transform = sqrt_psd(np.cov(ref.T)) @ sqrt_psd(np.cov(src.T), inverse=True)
    matched = (src - src.mean(0)) @ transform.T + ref.mean(0)
    return np.clip(matched, 0.0, 1.0).reshape(source.shape).astype(np.float32)
