"""The loss of Gatys et al. (2016) for a batch of images, and its compiled steps, built once per graph.

An Objective is its terms' weighted sum per image (alpha * content + beta * style + TV, and the
content terms that keep the layout), for one set of VGG layers and one style statistic.
`compiled_objective` shares it, with its compiled optimiser step, among all pairs whose
parameters have the same compile key (StyleParams.compile_key).
"""

from __future__ import annotations

import functools

from keras import ops

from . import backend, losses
from .model import feature_extractor, resolve_arch
from .optimize import make_adam_step, make_lbfgs_step
from .params import StyleParams
from .terms import combine, terms_for


class Objective:
    """The loss's terms (nst_core.terms) for one set of layers and one statistic, on one VGG."""

    def __init__(self, params: StyleParams, weights: str, feature_dtype: str):
        self.params = params
        self.terms = terms_for(params)
        self.layers = tuple(dict.fromkeys(name for term in self.terms for name in term.layers))
        self.extract = feature_extractor(params.arch, weights, self.layers, params.pooling, feature_dtype)
        self._extract_now = backend.compile_under_jax(self.extract, self.extract.model.variables)
        self._statistics_now = backend.compile_under_jax(self._statistics)
        self.arch = resolve_arch(params.arch, weights)  # the memory plan's network

    def features(self, images, names=None) -> dict:
        """`names`' features of `images` (default: every layer the terms read), by name, inside the step."""
        return self._named(self.extract(images), names)

    def measure(self, images, names=None) -> dict:
        """As `features`, computed now, outside any step: the targets."""
        return self._named(self._extract_now(images), names)

    def style_statistics(self, features: list, contexts: list[dict]) -> list:
        """The style statistic of each style layer's measured `features`, computed now: the targets
        (one program per image size under JAX, not a dozen eager operations each compiled alone)."""
        return self._statistics_now(features, contexts)

    def _statistics(self, features, contexts):
        return [losses.style_statistic(self.params.style_stat, f, c) for f, c in zip(features, contexts)]

    def _named(self, features, names) -> dict:
        by_name = dict(zip(self.layers, features))
        return by_name if names is None else {name: by_name[name] for name in names}

    def __call__(self, images, targets, weights, shares):
        """(sum of the per-image totals, (totals, content, style, tv)), each of those (B,).

        `targets`: each term's; `weights` and `shares`: (B, T), each term's weight in the total and
        in its reported part (terms.loss_weights).
        """
        features = self.features(images)
        term_losses = [term.loss(features, images, t) for term, t in zip(self.terms, targets)]
        totals, *parts = combine(self.terms, term_losses, weights, shares)
        return ops.sum(totals), (totals, *parts)


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
