"""Judging a stylized picture from both sides, with measures the optimisation never sees.

A distance computed with the VGG features and statistics that the loss uses always
says the optimiser did well (it is the quantity minimised), and a judge of one side is
gamed: the closest thing to the painting is the painting itself. So a picture gets two
figures, each from outside the objective; nothing in nst_core.stylize imports this module.

- style_distance (how close to the painting): Magenta's style-predict network (Ghiasi et
  al. 2017, the `[fast]` extra) maps a 256 px centre crop to a 100-number style vector;
  |v(output) - v(style)| / |v(content) - v(style)|, 0 is the painting's style, 1 the photo's.
- structure_kept (how much of the photo is left): no network at all. Both pictures in
  greyscale at 128 px; the mean of their SSIM after a 2 px blur (the layout of light and
  dark, with the strokes' texture blurred away) and the correlation of their Sobel edge
  strengths after a 1 px blur (where the outlines are). 1 is the photo; a crop of a
  painting scores about 0.1; a blurred or recoloured photo stays high (tests/test_quality.py).
- content_distance: ||F(output) - F(content)|| / ||F(content)|| at VGG block4_conv2;
  0 is the photo, 1 as far from it as a blank image's features.
- gram_distance: the Gram-matrix loss itself (relative error, mean over the five
  style layers), for continuity with earlier figures; not a judge.
"""

from __future__ import annotations

import numpy as np
from keras import ops
from PIL import Image

from . import fast, losses
from .image_io import size_for, to_uint8
from .model import feature_extractor
from .params import VGG_STYLE_LAYERS

CONTENT_LAYER = "block4_conv2"
STRUCTURE_SIDE = 128  # px: the layout a viewer reads at a glance, below the scale of brush strokes
SSIM_BLUR = 2.0  # px (Gaussian sigma, at STRUCTURE_SIDE) before SSIM: strokes' texture is not structure
EDGE_BLUR = 1.0  # px before the Sobel filter: the outlines, not every stroke's edge
_SSIM_WINDOW = 1.5  # Wang et al. 2004's Gaussian window
_SSIM_C1, _SSIM_C2 = 0.01**2, 0.03**2  # Wang et al.'s constants for values in [0, 1]


def style_vector(image: np.ndarray) -> np.ndarray:
    """The style-predict network's 100-number vector of an (H, W, 3) image in [0, 1]."""
    return np.ravel(fast.network().style_vector(to_uint8(image)))


def style_distance(output: np.ndarray, style: np.ndarray, content: np.ndarray) -> float:
    """How far the output's style vector is from the painting's, relative to the photo's."""
    target = style_vector(style)
    return float(np.linalg.norm(style_vector(output) - target) / np.linalg.norm(style_vector(content) - target))


class VggDistances:
    """content_distance and gram_distance on one VGG network (built once)."""

    def __init__(self, weights: str | None = None):
        self.extract = feature_extractor("auto", weights, (CONTENT_LAYER, *VGG_STYLE_LAYERS), precision="float32")

    def _features(self, image: np.ndarray) -> list:
        return self.extract(np.asarray(image, np.float32)[None])

    def content_distance(self, output: np.ndarray, content: np.ndarray) -> float:
        output_features, content_features = self._features(output)[0], self._features(content)[0]
        return float(np.sqrt(ops.convert_to_numpy(losses.relative_error(output_features, content_features))[0]))

    def gram_distance(self, output: np.ndarray, style: np.ndarray) -> float:
        output_features, style_features = self._features(output)[1:], self._features(style)[1:]
        errors = [
            losses.relative_error(losses.gram_matrix(o), losses.gram_matrix(s))
            for o, s in zip(output_features, style_features)
        ]
        return float(np.mean([ops.convert_to_numpy(e)[0] for e in errors]))


def _grey(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Rec. 601 luma of an (H, W, 3) image in [0, 1], resized (antialiased) to `shape`."""
    luma = np.asarray(image, np.float32)[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.asarray(Image.fromarray(luma, mode="F").resize(shape[::-1], Image.Resampling.BICUBIC), np.float64)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with mirrored edges."""
    radius = int(np.ceil(3 * sigma))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    for axis in (0, 1):
        padded = np.pad(image, [(radius, radius) if a == axis else (0, 0) for a in (0, 1)], mode="reflect")
        image = np.apply_along_axis(lambda line: np.convolve(line, kernel, mode="valid"), axis, padded)
    return image


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean structural similarity (Wang et al. 2004) of two greyscale images in [0, 1]."""
    mean_a, mean_b = _blur(a, _SSIM_WINDOW), _blur(b, _SSIM_WINDOW)
    var_a = _blur(a * a, _SSIM_WINDOW) - mean_a**2
    var_b = _blur(b * b, _SSIM_WINDOW) - mean_b**2
    covariance = _blur(a * b, _SSIM_WINDOW) - mean_a * mean_b
    numerator = (2 * mean_a * mean_b + _SSIM_C1) * (2 * covariance + _SSIM_C2)
    return float(np.mean(numerator / ((mean_a**2 + mean_b**2 + _SSIM_C1) * (var_a + var_b + _SSIM_C2))))


def edge_strength(image: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of a greyscale image."""
    padded = np.pad(image, 1, mode="reflect")
    smooth_rows = padded[:-2] + 2 * padded[1:-1] + padded[2:]
    smooth_cols = padded[:, :-2] + 2 * padded[:, 1:-1] + padded[:, 2:]
    dx = smooth_rows[:, 2:] - smooth_rows[:, :-2]
    dy = smooth_cols[2:] - smooth_cols[:-2]
    return np.hypot(dx, dy)


def structure_kept(output: np.ndarray, content: np.ndarray) -> float:
    """How much of the photo's structure the output keeps: 1 is the photo, about 0.1 a painting."""
    shape = size_for(output.shape, STRUCTURE_SIDE)
    out, photo = _grey(output, shape), _grey(content, shape)
    layout = ssim(_blur(out, SSIM_BLUR), _blur(photo, SSIM_BLUR))
    edges = np.corrcoef(edge_strength(_blur(out, EDGE_BLUR)).ravel(), edge_strength(_blur(photo, EDGE_BLUR)).ravel())
    return float((layout + np.nan_to_num(edges[0, 1])) / 2)
