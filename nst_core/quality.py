"""Judging a stylized picture with a measure the optimisation never sees.

A distance computed with the VGG features and statistics that the loss uses always
says the optimiser did well (it is the quantity minimised). The style distance here
comes from another network: Magenta's style-predict network (Ghiasi et al. 2017,
the `[fast]` extra), which maps a 256 px centre crop to a 100-number style vector.
It is a measuring instrument only: nothing in nst_core.stylize imports this module.

- style_distance: |v(output) - v(style)| / |v(content) - v(style)|;
  0 is the painting's style, 1 the photo's.
- content_distance: ||F(output) - F(content)|| / ||F(content)|| at VGG block4_conv2;
  0 is the photo, 1 as far from it as a blank image's features.
- gram_distance: the Gram-matrix loss itself (relative error, mean over the five
  style layers), for continuity with earlier figures; not a judge.
"""

from __future__ import annotations

import numpy as np
from keras import ops

from . import fast, losses
from .image_io import to_uint8
from .model import feature_extractor
from .params import VGG_STYLE_LAYERS

CONTENT_LAYER = "block4_conv2"


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
