"""The loss's terms: each one weight, its VGG layers and its statistic, composed by the Objective.

A term measures its targets once per scale (from the photos' features or the paintings'
statistics, `Measured`) and gives a loss per image from the output's features, by layer name.
Each adds, with its share, to one of the losses the results report (PARTS), and to the total
with its weight.

Over tiles (nst_core.tiling), a term whose loss is a function of sums over feature positions
gives those sums per tile (`sums`) and its loss from their totals (`from_sums`), so a tiled
scale optimises the same objective; a term without layers (TV) is computed on the whole image.

Adding a term: a class here, a line in `terms_for`, and its weight's field in params.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from keras import ops

from . import losses
from .params import StyleParams

PARTS = ("content", "style", "tv")  # the losses results report: each term adds to one


TILED_STATS = ("gram", "w2")  # statistics that are means over positions of per-position terms


def normalized(weights, count: int) -> list[float]:
    """`count` weights summing to 1 (equal ones for None); all 0 when they sum to nothing."""
    weights = np.ones(count) if weights is None else np.asarray(weights, np.float64)
    if weights.sum() <= 0:
        return [0.0] * count
    return list(weights / weights.sum())


@dataclass
class Measured:
    """What targets are measured from at one scale: the jobs (stylize.Job), their photos' features
    by layer (B, H, W, C), and `painting(job)`: per style layer, the job's blended statistic (1, D)
    and its constants."""

    jobs: list
    photo: dict
    painting: Callable


class Term:
    """One term of the loss. `part`: which reported loss it adds to; `layers`: the VGG layers it reads."""

    part: str = "content"
    layers: tuple[str, ...] = ()
    tiled: bool = False  # True: it gives `sums` and runs over tiles; False: left out at tiled scales

    def tiling_problem(self) -> str | None:
        """Why this term cannot run over tiles, or None."""
        return None

    def weight(self, params: StyleParams, side: int) -> float:
        """The term's weight in the total, for a pair at the scale of longest side `side`."""
        return self.share(params) * part_weight(self.part, params, side)

    def share(self, params: StyleParams) -> float:
        """The term's weight within its reported part."""
        return 1.0

    def targets(self, measured: Measured):
        """What `loss` compares against, stacked for the batch."""
        return ()

    def loss(self, features: dict, images, targets):
        """The term per image: (B,)."""
        raise NotImplementedError

    def sums(self, cores: dict, targets) -> list:
        """Over tiles: per layer, sums over this tile's core positions, (B, D); `cores` maps a layer to
        (its features on the tile's core, the core's (rows, columns) in the whole feature map)."""
        raise NotImplementedError

    def from_sums(self, sums: list, targets, positions: list[int]):
        """Over tiles: the loss (B,) from the whole image's `sums`, with each layer's position count."""
        raise NotImplementedError


def part_weight(part: str, params: StyleParams, side: int) -> float:
    """alpha, beta or the TV weight, for a pair at the scale of longest side `side`."""
    return {"content": params.content_weight_at(side), "style": params.style_weight, "tv": params.tv_weight}[part]


class FeatureContent(Term):
    """Gatys et al.'s content loss: the feature maps' squared error, relative to the photo's."""

    tiled = True

    def __init__(self, params: StyleParams):
        self.layers = params.content_layers
        self.layer_weights = normalized(params.content_layer_weights, len(self.layers))

    def targets(self, measured: Measured):
        return [measured.photo[name] for name in self.layers]

    def loss(self, features, images, targets):
        return losses.content_loss([features[name] for name in self.layers], targets, self.layer_weights)

    def sums(self, cores, targets):
        return [
            ops.sum((features - target[:, rows, cols]) ** 2, (1, 2, 3))[:, None]
            for (features, (rows, cols)), target in zip((cores[name] for name in self.layers), targets)
        ]

    def from_sums(self, sums, targets, positions):
        return sum(
            w * error[:, 0] / (ops.sum(t**2, (1, 2, 3)) + losses.EPS)
            for w, error, t in zip(self.layer_weights, sums, targets)
        )


class SelfSimilarity(Term):
    """Kolkin et al.'s content loss: which sampled positions are alike (cosine self-similarity), not
    their features; it compares positions across the whole image, so it is left out over tiles."""

    layers = losses.SELF_SIMILARITY_LAYERS

    def share(self, params):
        return params.self_similarity_weight

    def targets(self, measured):
        seed = measured.jobs[0].params.seed
        out = []
        for index, name in enumerate(self.layers):
            features = measured.photo[name]
            positions = ops.convert_to_tensor(losses.self_similarity_positions(features.shape, seed + index))
            out.append((positions, losses.self_similarity(features, positions)))
        return out

    def loss(self, features, images, targets):
        return losses.self_similarity_loss([features[name] for name in self.layers], targets)


class Style(Term):
    """The style loss: each layer's statistic (params.style_stat) against the painting's."""

    part = "style"
    tiled = True

    def __init__(self, params: StyleParams):
        self.layers, self.stat = params.style_layers, params.style_stat
        self.layer_weights = normalized(params.style_layer_weights, len(self.layers))

    def targets(self, measured):
        per_job = [measured.painting(job) for job in measured.jobs]
        statistics = [ops.concatenate([stats[k] for stats, _ in per_job], 0) for k in range(len(self.layers))]
        contexts = [
            {key: ops.concatenate([ctx[k][key] for _, ctx in per_job], 0) for key in per_job[0][1][k]}
            for k in range(len(self.layers))
        ]
        return statistics, contexts

    def loss(self, features, images, targets):
        statistics, contexts = targets
        layers = [features[name] for name in self.layers]
        return losses.style_loss(self.stat, layers, statistics, contexts, self.layer_weights)

    def sums(self, cores, targets):
        return [losses.moment_sums(self.stat, cores[name][0]) for name in self.layers]

    def from_sums(self, sums, targets, positions):
        statistics, contexts = targets
        return sum(
            w * losses.statistic_loss(self.stat, total / float(count), target, context)
            for w, total, count, target, context in zip(self.layer_weights, sums, positions, statistics, contexts)
        )

    def context_of(self, statistic) -> dict:
        """The constants of a tiled statistic's (blended) target (1, D): w2's covariance root."""
        return losses.w2_context(statistic) if self.stat == "w2" else {}

    def tiling_problem(self):
        if self.stat in TILED_STATS:
            return None
        return (
            f"style_stat {self.stat} cannot be computed over tiles (only {' and '.join(TILED_STATS)} can); "
            "lower `size` or use style_stat=gram"
        )


class TotalVariation(Term):
    """Neighbouring pixels' squared differences: smooths speckle; no network."""

    part = "tv"

    def loss(self, features, images, targets):
        return losses.total_variation_loss(images)


def terms_for(params: StyleParams) -> list[Term]:
    """The terms `params` asks for: a term whose weight is switched off by its graph field is left out."""
    terms = [FeatureContent(params), Style(params), TotalVariation()]
    if params.self_similarity_weight > 0:
        terms.insert(1, SelfSimilarity())
    return terms


def photo_layers(terms: list[Term]) -> tuple[str, ...]:
    """The layers whose photo features the content terms compare against, once each."""
    return tuple(dict.fromkeys(name for term in terms if term.part == "content" for name in term.layers))


def loss_weights(terms: list[Term], jobs: list, side: int):
    """((B, T) weights in the total, (B, T) shares in the reported parts): each job's, per term, at
    the scale of longest side `side`."""
    weights = [[term.weight(job.params, side) for term in terms] for job in jobs]
    shares = [[term.share(job.params) for term in terms] for job in jobs]
    return ops.convert_to_tensor(weights, "float32"), ops.convert_to_tensor(shares, "float32")


def combine(terms: list[Term], term_losses: list, weights, shares):
    """(totals, content, style, tv), each (B,): the weighted sum, and each reported part's."""
    totals = sum(weights[:, k] * loss for k, loss in enumerate(term_losses))
    parts = [
        sum(
            (shares[:, k] * loss for k, (term, loss) in enumerate(zip(terms, term_losses)) if term.part == part),
            0 * totals,
        )
        for part in PARTS
    ]
    return totals, *parts
