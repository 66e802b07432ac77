"""Stylization parameters: the one place where defaults live.

Each default is explained in one line; the figures behind them are in the README
("How the defaults were chosen") and come from `benchmarks/bench_core.py`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Literal, Optional, get_args, get_type_hints

Method = Literal["optimize", "fast"]
Optimizer = Literal["lbfgs", "adam"]
Init = Literal["noise", "content", "style", "fast", "recolored"]
StyleStat = Literal["gram", "mmd-poly", "mmd-gauss", "bn", "w2", "swd"]
PreserveColors = Literal["none", "luminance", "histogram"]
Arch = Literal["auto", "vgg19", "vgg16"]
Pooling = Literal["max", "avg"]

# Fields newer than the first results tables, with the value that behaves as before they existed:
# a field at that value is left out of StyleParams.hash, so older pairs keep their ids.
NEUTRAL = {"method": "optimize", "style_strength": 1.0, "average_decay": 0.0, "min_scale": 0}
# Each earlier set of defaults, as the fields that have changed since: a pair made under them
# is recognised by the ledger and not redone unless asked (`--force`); newest first.
EARLIER_DEFAULTS: tuple[dict, ...] = ()
VGG_STYLE_LAYERS = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1")


@dataclass(frozen=True)
class StyleParams:
    """Everything that decides what a stylized image looks like (and nothing that does not)."""

    size: int = 512  # longest side of the output, in pixels
    iterations: int = 300  # L-BFGS passes the tutorial's 500-step Adam loss by step ~200 (bench_core)
    method: Method = "optimize"  # Gatys' optimisation; "fast": one pass of Ghiasi et al.'s network, previews ([fast] extra)
    optimizer: Optimizer = "lbfgs"  # L-BFGS reaches a given loss in far fewer steps than Adam (bench_core)
    learning_rate: float = 0.02  # Adam only: step in [0, 1] pixel units, as in the TensorFlow tutorial
    init: Init = "content"  # over noise, fast (bench_defaults, bench_fast); noise, recolored: bench_quality
    content_weight: float = 1.0  # losses are relative errors, so the ratio to style_weight is what matters
    style_weight: float = 10.0  # strong, painterly, content still readable (sweep 3..100, bench_defaults)
    tv_weight: float = 1.0  # 30-35% less pixel speckle (TV), content and style losses within 1% (bench_defaults)
    content_layers: tuple[str, ...] = ("block4_conv2",)  # Gatys et al. 2016
    content_layer_weights: Optional[tuple[float, ...]] = None  # None: equal weights
    style_layers: tuple[str, ...] = VGG_STYLE_LAYERS  # Gatys et al. 2016
    style_layer_weights: Optional[tuple[float, ...]] = None  # None: equal weights
    style_stat: StyleStat = "gram"  # Gatys; the others follow Li et al. 2017
    style_blend: Optional[tuple[float, ...]] = None  # weights of several style images; None: equal
    style_scale: float = 1.0  # style image size relative to the output size
    preserve_colors: PreserveColors = "none"  # keep the content's colours (luminance or histogram)
    style_strength: float = 1.0  # both methods: the result blended with the content, 1 = all result, 0 = the photo
    scales: tuple[int, ...] = ()  # coarser sizes optimised first (coarse-to-fine), e.g. (256,); set: min_scale unused
    min_scale: int = 0  # coarse-to-fine in sqrt(2) steps from about this side up to size (crowsonkb); 0: size only
    coarse_iterations: int = 200  # optimiser steps at each coarser scale
    average_decay: float = 0.0  # > 0 returns a moving average of the iterates (crowsonkb's 0.99); 0: the best one
    tolerance: float = 1e-3  # stop once the loss improved by less than this fraction ...
    patience: int = 20  # ... over this many steps
    arch: Arch = "auto"  # VGG19 (Gatys) with ImageNet weights; a weights file says which VGG it holds
    pooling: Pooling = "max"  # Keras' VGG; "avg" is Gatys' choice
    seed: int = 0  # noise init and random features are seeded: same seed, same image on CPU

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(problems))

    def problems(self) -> list[str]:
        """Human-readable list of what is wrong with these values (empty when valid)."""
        out = []
        hints = get_type_hints(StyleParams)
        for name in ("method", "optimizer", "init", "style_stat", "preserve_colors", "arch", "pooling"):
            allowed = get_args(hints[name])
            if getattr(self, name) not in allowed:
                out.append(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        for name in ("size", "iterations", "coarse_iterations", "patience", "min_scale"):
            if getattr(self, name) < (16 if name == "size" else 0):
                out.append(f"{name} must be {'at least 16' if name == 'size' else 'non-negative'}, got {getattr(self, name)}")
        for name in ("content_weight", "style_weight", "tv_weight", "tolerance"):
            if not getattr(self, name) >= 0:
                out.append(f"{name} must be a non-negative number, got {getattr(self, name)}")
        for name in ("learning_rate", "style_scale"):
            if not getattr(self, name) > 0:
                out.append(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.average_decay < 1:
            out.append(f"average_decay must be at least 0 and below 1, got {self.average_decay}")
        if not 0 <= self.style_strength <= 1:
            out.append(f"style_strength must be between 0 and 1, got {self.style_strength}")
        for layers, weights in (("content_layers", "content_layer_weights"), ("style_layers", "style_layer_weights")):
            values = getattr(self, weights)
            if values is not None and len(values) != len(getattr(self, layers)):
                out.append(f"{weights} needs one weight per layer in {layers}")
        if self.style_blend is not None and (min(self.style_blend) < 0 or sum(self.style_blend) <= 0):
            out.append(f"style_blend weights must be non-negative and not all zero, got {self.style_blend}")
        if any(s < 16 or s >= self.size for s in self.scales):
            out.append(f"scales must be between 16 and size ({self.size}), got {self.scales}")
        if 0 < self.min_scale < 16:
            out.append(f"min_scale must be 0 (off) or at least 16, got {self.min_scale}")
        return out

    def sides(self) -> tuple[int, ...]:
        """Every side optimised, coarse to fine, ending at `size`: `scales` when given, else
        crowsonkb's schedule, size / sqrt(2)^k down to min_scale."""
        if self.scales or not self.min_scale:
            return (*self.scales, self.size)
        count = int(math.floor(2 * math.log2(self.size / self.min_scale) + 1e-9))
        return tuple(round(self.size / 2 ** (k / 2)) for k in range(count, 0, -1)) + (self.size,)

    def replace(self, **changes) -> "StyleParams":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """Short stable hash of every field: names outputs and keys resume.

        Fields added after results tables existed count only once set away from their
        default, so a pair recorded before they existed keeps its id and is not redone.
        """
        fields = {name: value for name, value in self.to_dict().items()
                  if not (name in NEUTRAL and value == NEUTRAL[name])}
        blob = json.dumps(fields, sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]

    def earlier(self, explicit=frozenset()) -> list["StyleParams"]:
        """These parameters as each earlier set of defaults made them: every changed field that was
        not set explicitly (`explicit`: names from the manifest, flags or a sweep) at its old value."""
        out = []
        for old in EARLIER_DEFAULTS:
            changes = {name: value for name, value in old.items()
                       if name not in explicit and getattr(self, name) == getattr(StyleParams, name)}
            if changes and self.replace(**changes) not in out:
                out.append(self.replace(**changes))
        return out

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def parse(cls, name: str, text: str):
        """Turn a string from a manifest cell or the CLI into the field's type.

        Tuples are comma-separated (`block1_conv1,block2_conv1`); raises ValueError
        with a readable reason.
        """
        hint = get_type_hints(cls)[name]
        return _parse_as(hint, text.strip(), name)


def _parse_as(hint, text: str, name: str):
    args = get_args(hint)
    if type(None) in args:  # Optional[X]
        if text.lower() in ("", "none", "null"):
            return None
        hint = next(a for a in args if a is not type(None))
        args = get_args(hint)
    origin = getattr(hint, "__origin__", None)
    if origin is tuple:
        return tuple(_parse_as(args[0], part.strip(), name) for part in text.split(",") if part.strip())
    if origin is Literal:
        return text
    try:
        if hint is int:
            value = float(text)
            if value != int(value):
                raise ValueError
            return int(value)
        if hint is float:
            return float(text)
    except ValueError:
        raise ValueError(f"{name} must be a{'n integer' if hint is int else ' number'}, got {text!r}") from None
    return text


# Contact sheets (`nst sheet`): cells at 256 px keep the fast network's detail, at seconds a sheet.
SHEET_PARAMS = StyleParams(size=256, method="fast")
