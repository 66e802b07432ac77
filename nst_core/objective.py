"""The loss of Gatys et al. (2016) for a batch of images, and its compiled steps, built once per graph.

An Objective is alpha * content + beta * style + TV per image, for one set of VGG layers and
one style statistic. `compiled_objective` shares it, with its compiled optimiser step, among
all pairs whose parameters have the same compile key (StyleParams.compile_key).
"""

from __future__ import annotations

import functools

import numpy as np
from keras import ops

from . import backend, losses
from .model import feature_extractor, resolve_arch
from .optimize import make_adam_step, make_lbfgs_step
from .params import StyleParams


def normalized(weights, count: int) -> list[float]:
    """`count` weights summing to 1 (equal ones for None); all 0 when they sum to nothing."""
    weights = np.ones(count) if weights is None else np.asarray(weights, np.float64)
    if weights.sum() <= 0:
        return [0.0] * count
    return list(weights / weights.sum())


class Objective:
    """alpha * content + beta * style + tv per image, for one set of layers and one statistic."""

    def __init__(self, params: StyleParams, weights: str, feature_dtype: str):
        self.similarity_layers = losses.SELF_SIMILARITY_LAYERS if params.self_similarity_weight > 0 else ()
        self.layers = tuple(dict.fromkeys(params.content_layers + params.style_layers + self.similarity_layers))
        self.extract = feature_extractor(params.arch, weights, self.layers, params.pooling, feature_dtype)
        self._extract_now = backend.compile_under_jax(self.extract, self.extract.model.variables)
        self._statistics_now = backend.compile_under_jax(self._statistics)
        self.params = params
        self.arch = resolve_arch(params.arch, weights)  # the memory plan's network
        self.content_layer_weights = normalized(params.content_layer_weights, len(params.content_layers))
        self.style_layer_weights = normalized(params.style_layer_weights, len(params.style_layers))

    def features(self, images, names):
        """`names`' features of `images`, inside the compiled step."""
        return self._named(self.extract(images), names)

    def measure(self, images, names):
        """`names`' features of `images` computed now, outside any step: the targets."""
        return self._named(self._extract_now(images), names)

    def style_statistics(self, features: list, contexts: list[dict]) -> list:
        """The style statistic of each style layer's measured `features`, computed now: the targets
        (one program per image size under JAX, not a dozen eager operations each compiled alone)."""
        return self._statistics_now(features, contexts)

    def _statistics(self, features, contexts):
        return [losses.style_statistic(self.params.style_stat, f, c) for f, c in zip(features, contexts)]

    def _named(self, features, names):
        by_name = dict(zip(self.layers, features))
        return [by_name[name] for name in names]

    def __call__(self, images, content_targets, style_targets, contexts, similarity_targets, loss_weights):
        """(sum of the per-image totals, (totals, content, style, tv)), each of those (B,).

        The content figure is the feature loss plus self_similarity_weight times the self-similarity
        loss (whose `similarity_targets` are empty when it is off). `loss_weights` is (B, 3): content,
        style and TV weight of each image.
        """
        feats = self.features(images, self.params.content_layers + self.params.style_layers + self.similarity_layers)
        n_content, n_style = len(self.params.content_layers), len(self.params.style_layers)
        tv = losses.total_variation_loss(images)
        content = losses.content_loss(feats[:n_content], content_targets, self.content_layer_weights) + 0 * tv
        if self.similarity_layers:
            similarity = losses.self_similarity_loss(feats[n_content + n_style :], similarity_targets)
            content = content + self.params.self_similarity_weight * similarity
        style = (
            losses.style_loss(
                self.params.style_stat,
                feats[n_content : n_content + n_style],
                style_targets,
                contexts,
                self.style_layer_weights,
            )
            + 0 * tv
        )  # (B,) even with no layers of a kind
        totals = loss_weights[:, 0] * content + loss_weights[:, 1] * style + loss_weights[:, 2] * tv
        return ops.sum(totals), (totals, content, style, tv)


def compiled_objective(params: StyleParams, weights: str, feature_dtype: str = "float32"):
    """(Objective, compiled optimiser step) for `params`' graph: built once per compile key, weights
    file and precision, and shared by every pair with those."""
    return _compiled(params.compile_key(), weights, feature_dtype)


def clear_compiled() -> None:
    """Forget the compiled objectives (benchmarks do, after switching XLA on or off)."""
    _compiled.cache_clear()


@functools.lru_cache(maxsize=8)
def _compiled(key: StyleParams, weights: str, feature_dtype: str):
    objective = Objective(key, weights, feature_dtype)
    variables = objective.extract.model.variables
    step = (
        make_lbfgs_step(objective, variables)
        if key.optimizer == "lbfgs"
        else make_adam_step(objective, key.learning_rate, variables=variables)
    )
    return objective, step
