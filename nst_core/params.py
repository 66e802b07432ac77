"""Stylization parameters: the one place where a parameter is declared, with everything derived from it.

Each field is one `param(...)` line: its default, why that default (the help text of its CLI flag),
and whether it changes the compiled graph. The compile key, the hash that names outputs, validation,
the CLI flags, the manifest columns, their table in manifests/README.md and the results table's
columns are all derived from these fields (`StyleParams.specs()`), so adding a parameter is adding
one line here. The figures behind
the defaults are in docs/defaults.md and come from `benchmarks/`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional, get_args, get_origin, get_type_hints

from nst_core import markdown

Method = Literal["optimize", "fast"]
Optimizer = Literal["lbfgs", "adam"]
Init = Literal["noise", "content", "style", "fast", "recolored"]
StyleStat = Literal["gram", "mmd-poly", "mmd-gauss", "bn", "w2", "swd"]
PreserveColors = Literal["none", "luminance", "histogram"]
Arch = Literal["auto", "vgg19", "vgg16"]
Pooling = Literal["max", "avg"]
StyleFit = Literal["long", "short"]

VGG_STYLE_LAYERS = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1")  # Gatys'
# jcjohnson/neural-style divides each Gram matrix by C*H*W and sums squared errors, so its layers
# count by their activations' size; measured on the three paintings, our relative errors need these.
GATYS_JCJOHNSON_WEIGHTS = (0.002, 0.49, 0.49, 0.012, 0.0001)  # one per VGG_STYLE_LAYERS
# Gatys' layers but block5_conv1, which weighs 0.0001 there: without it a step is 0.85x the time and
# neither judge moves (docs/defaults.md).
STYLE_LAYERS = VGG_STYLE_LAYERS[:4]
JCJOHNSON_LAYER_WEIGHTS = GATYS_JCJOHNSON_WEIGHTS[:4]

# Each earlier set of defaults, as the fields that have changed since: a pair made under them
# is recognised by the ledger and not redone unless asked (`--force`); newest first.
_SQRT2_LADDER = {  # 0.4.0: Gatys' five style layers, and every sqrt(2) size up to the full size
    "style_layers": VGG_STYLE_LAYERS,
    "style_layer_weights": GATYS_JCJOHNSON_WEIGHTS,
    "last_jump": 1.41,
}
_STRONGER = {**_SQRT2_LADDER, "style_weight": 300.0}  # before 0.4.0: strength 0.5
_AT_MOST_100 = {**_STRONGER, "iterations": 100}  # 0.3.0: up to 100 steps at the output size
_LONGER_FINE_SCALE = {**_STRONGER, "iterations": 300}  # 0.2.0: up to 300 steps at the output size
_BEFORE_CONTENT_TERMS = {
    **_LONGER_FINE_SCALE,
    "content_layers": ("block4_conv2",),
    "coarse_content_weight": 1.0,
    "self_similarity_weight": 0.0,
}
_NOISE = {**_BEFORE_CONTENT_TERMS, "init": "noise"}  # the last defaults of 0.1.0
_BEFORE_NOISE = _BEFORE_CONTENT_TERMS  # started from the photo, as now
_BEFORE_W2 = {**_BEFORE_NOISE, "style_stat": "gram", "style_weight": 500.0}
_BEFORE_STYLE_FIT = {**_BEFORE_W2, "style_weight": 100.0, "style_fit": "long"}
_FIRST = {**_BEFORE_STYLE_FIT, "style_weight": 10.0, "style_layer_weights": None, "coarse_iterations": 200}
EARLIER_DEFAULTS: tuple[dict, ...] = (
    _SQRT2_LADDER,
    _AT_MOST_100,
    _LONGER_FINE_SCALE,
    _NOISE,
    _BEFORE_NOISE,
    _BEFORE_W2,
    _BEFORE_STYLE_FIT,
    {**_FIRST, "min_scale": 512},
    {**_FIRST, "min_scale": 0},  # the first defaults
)
# `strength` as style weights, measured on the quality frontier (docs/defaults.md): 0 is the photo,
# 0.25 the defaults (0.5 those before 0.4.0), 1 the closest to the painting before both judges get
# worse (3000 was further from the painting than 1000 and kept less of the photo).
STRENGTH_POINTS = ((0.0, 0.0), (0.25, 100.0), (0.5, 300.0), (1.0, 1000.0))
# The first results tables (0.1.0) hash every one of these fields into their pair ids; a field added
# since needs `added_in` and a `neutral` value, or every earlier pair id would change.
FIRST_TABLES = "0.1.0"
FIRST_FIELDS = frozenset(
    """size iterations optimizer learning_rate init content_weight style_weight tv_weight content_layers
    content_layer_weights style_layers style_layer_weights style_stat style_blend style_scale preserve_colors
    scales coarse_iterations tolerance patience arch pooling seed""".split()
)
_NO_NEUTRAL = object()


@dataclass(frozen=True)
class Check:
    """A range a field's value must lie in, and how to say so."""

    holds: Callable[[Any], bool]
    message: str
    schema: dict = dataclasses.field(default_factory=dict)  # the same range in JSON Schema (the Prefect form)


# The largest values the fields take: past them a value is a typo (1e20 steps), and every value
# accepted fits the results table's 64-bit integers.
MAX_SIDE = 16384  # px: a 1.4 m print at 300 dpi; the memory plan says what this machine can paint
MAX_STEPS = 100_000
MAX_JUMP = 16  # the full size 16 times the last smaller one: past that the smaller sizes hardly count
MAX_SEED = 2**32 - 1
MAX_STYLE_SCALE = 8  # the painting 8 times the picture's side; the memory plan counts it (nst_core.memory)


def _finite(v) -> bool:
    return -math.inf < v < math.inf  # False for NaN too


def between(low: int, high: int) -> Check:
    """From `low` to `high`, both included."""
    return Check(
        lambda v: low <= v <= high, f"must be at least {low} and at most {high}", {"minimum": low, "maximum": high}
    )


SIDE = between(16, MAX_SIDE)
STEPS = between(0, MAX_STEPS)
SEED = between(0, MAX_SEED)
# Comparisons are False for NaN, and _finite refuses inf: "1e400" parses as inf.
NON_NEGATIVE = Check(lambda v: 0 <= v and _finite(v), "must be a non-negative number", {"minimum": 0})
POSITIVE = Check(lambda v: 0 < v and _finite(v), "must be a positive number", {"exclusiveMinimum": 0})
STYLE_SCALE = Check(
    lambda v: 0 < v <= MAX_STYLE_SCALE,
    f"must be above 0 and at most {MAX_STYLE_SCALE:g}",
    {"exclusiveMinimum": 0, "maximum": MAX_STYLE_SCALE},
)
WEIGHTS = Check(
    lambda v: v is None or all(0 <= w and _finite(w) for w in v),
    "must be non-negative numbers",
    {"items": {"minimum": 0}},
)
BLEND = Check(
    lambda v: v is None or (WEIGHTS.holds(v) and sum(v) > 0),
    "weights must be non-negative numbers, not all zero",
    {"items": {"minimum": 0}},
)
BELOW_ONE = Check(lambda v: 0 <= v < 1, "must be at least 0 and below 1", {"minimum": 0, "exclusiveMaximum": 1})
FRACTION = Check(lambda v: 0 <= v <= 1, "must be between 0 and 1", {"minimum": 0, "maximum": 1})
UNSET_OR_FRACTION = Check(lambda v: v is None or 0 <= v <= 1, "must be between 0 and 1", {"minimum": 0, "maximum": 1})
JUMP = Check(
    lambda v: 1 <= v <= MAX_JUMP and _finite(v),
    f"must be at least 1 and at most {MAX_JUMP}",
    {"minimum": 1, "maximum": MAX_JUMP},
)
OFF_OR_SIDE = Check(
    lambda v: v == 0 or 16 <= v <= MAX_SIDE,
    f"must be 0 (off) or at least 16 and at most {MAX_SIDE}",
    {"minimum": 0, "maximum": MAX_SIDE},
)


def param(
    default,
    help: str,
    *,
    detail: str = "",
    graph: bool = False,
    check: Check | None = None,
    added_in: str | None = None,
    neutral=_NO_NEUTRAL,
    fast: bool = False,
):
    """A StyleParams field: `help` says what it does in one plain sentence (the flags' help, the Prefect form);
    `detail` adds the evidence behind its default, its limits and sources (manifests/README.md); `graph`: it changes the compiled
    objective (the compile key); `added_in` and `neutral`, required for fields not in FIRST_FIELDS: the
    version that added it and the value that behaves as before it existed (the hash leaves the field out
    at that value, keeping old pair ids); `fast`: the fast network's previews use it too (`nst sheet`
    offers only these)."""
    return dataclasses.field(
        default=default,
        metadata={
            "help": help,
            "detail": detail,
            "graph": graph,
            "check": check,
            "added_in": added_in,
            "neutral": neutral,
            "fast": fast,
        },
    )


@dataclass(frozen=True)
class ParamSpec:
    """One StyleParams field as the rest of the code sees it."""

    name: str
    hint: Any  # the type, e.g. int, tuple[str, ...], Optional[tuple[float, ...]], Literal[...]
    default: Any
    help: str
    choices: tuple[str, ...]  # the Literal's values; () for free values
    graph: bool
    check: Check | None
    added_in: str
    neutral: Any
    fast: bool = False  # the fast network's previews (nst_core.stylize.fast_preview) use it
    detail: str = ""  # the evidence behind the default, limits, sources: the docs' table, not the help

    def is_neutral(self, value) -> bool:
        """Whether `value` behaves as the code did before this field existed (never, for the first fields)."""
        return self.neutral is not _NO_NEUTRAL and value == self.neutral

    def problem(self, value) -> str | None:
        if self.choices and value not in self.choices:
            return f"{self.name} must be one of {', '.join(self.choices)}, got {value!r}"
        if self.check is not None and not self.check.holds(value):
            return f"{self.name} {self.check.message}, got {value}"
        return None


def as_text(value):
    """A value as typed in a manifest cell or a flag: tuples comma-separated ("a,b"), others unchanged."""
    return ",".join(str(v) for v in value) if isinstance(value, tuple) else value


@functools.cache
def _specs(cls: type) -> tuple[ParamSpec, ...]:
    hints = get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        meta = f.metadata
        first = f.name in FIRST_FIELDS
        if not first and (meta["added_in"] is None or meta["neutral"] is _NO_NEUTRAL):
            raise TypeError(
                f"{cls.__name__}.{f.name} is not in the first results tables (FIRST_FIELDS), so it needs a neutral "
                f'value, or every earlier pair id changes: declare it with param(..., added_in="<the version adding '
                f'it, e.g. 0.2.0>", neutral=<the value at which it behaves as before {f.name} existed>)'
            )
        choices = get_args(hints[f.name]) if get_origin(hints[f.name]) is Literal else ()
        specs.append(
            ParamSpec(
                f.name,
                hints[f.name],
                f.default,
                meta["help"],
                choices,
                meta["graph"],
                meta["check"],
                FIRST_TABLES if first else meta["added_in"],
                meta["neutral"],
                meta.get("fast", False),
                meta.get("detail", ""),
            )
        )
    return tuple(specs)


def params_dataclass(cls: type) -> type:
    """`@dataclass(frozen=True)` that also checks every field's declaration, so a field that would change
    earlier pair ids fails at import, saying what to write."""
    cls = dataclass(frozen=True)(cls)
    _specs(cls)
    return cls


@params_dataclass
class StyleParams:
    """Everything that decides what a stylized image looks like (and nothing that does not)."""

    size: int = param(
        512,
        "longest side of the finished picture, in pixels",
        detail="the photo's and the painting's shorter sides must reach 8 px at it (16 px with a block5 layer), "
        "or the pair fails saying so",
        check=SIDE,
        fast=True,
    )
    iterations: int = param(
        40,
        "most refining steps at the full size: more can add detail, fewer finish sooner",
        detail="after the smaller sizes' steps; at 512 px both judges were within 0.01 of their values "
        "at 100 steps by step 40 on 6 pairs (bench_time_to_quality)",
        check=STEPS,
    )
    method: Method = param(
        "optimize",
        "optimize paints each picture carefully (minutes on a CPU); fast gives a quick preview in seconds "
        "(needs the fast extra)",
        detail="optimize: Gatys' optimisation; fast: one pass of Ghiasi et al.'s network ([fast] extra)",
        added_in="0.1.0+fast",
        neutral="optimize",
    )
    optimizer: Optimizer = param(
        "lbfgs",
        "how the picture is refined step by step: lbfgs needs far fewer steps than adam",
        detail="L-BFGS reaches a given loss in far fewer steps than Adam (bench_core)",
        graph=True,
    )
    learning_rate: float = param(
        0.02,
        "step size of the adam optimizer (not used by lbfgs)",
        detail="in [0, 1] pixel units, as in the TensorFlow tutorial",
        graph=True,
        check=POSITIVE,
    )
    init: Init = param(
        "content",
        "what the painting starts from: the photo (content), noise, the painting (style), the quick preview "
        "(fast) or the photo in the painting's colours (recolored)",
        detail="the photo keeps its layout; seeded noise came closer to the painting but redrew the painting's "
        "own figures into the frame (docs/defaults.md)",
    )
    init_noise: float = param(
        0.0,
        "share of random noise mixed into the starting picture, from 0 (none) to 1 (all noise)",
        check=FRACTION,
        added_in="0.2.0",
        neutral=0.0,
    )
    content_weight: float = param(
        1.0,
        "how strongly the result keeps the photo (0: the painting's texture alone)",
        detail="losses are relative errors, so the ratio to style_weight is what matters",
        check=NON_NEGATIVE,
    )
    coarse_content_weight: float = param(
        8.0,
        "how many times more the photo counts at the smallest size, where the layout is set, easing to once "
        "at the full size",
        detail="a multiple of content_weight at the coarsest scale; 8 kept more of the photo as close to the painting",
        check=POSITIVE,
        added_in="0.2.0",
        neutral=1.0,
    )
    self_similarity_weight: float = param(
        16.0,
        "how strongly the photo's shapes and layout are kept while its colours and textures change (0: off)",
        detail="the self-similarity content loss (Kolkin et al. 2019), relative to the feature content loss; 16: "
        "more of the photo kept, as close to the painting; left out at scales that run in tiles",
        graph=True,
        check=NON_NEGATIVE,
        added_in="0.2.0",
        neutral=0.0,
    )
    strength: Optional[float] = param(
        None,
        "how strongly the painting is applied, from 0 (the photo) to 1 (the strongest look that still keeps "
        "the photo's structure); none: use style_weight",
        detail="sets style_weight along measured points; the defaults are strength 0.25",
        check=UNSET_OR_FRACTION,
        added_in="0.2.0",
        neutral=None,
    )
    style_weight: float = param(
        100.0,
        "how strongly the result takes on the painting's look, against content_weight",
        detail="losses are relative errors, so the ratio is what matters; at 512 px over 24 pairs 100 kept 0.07 "
        "more of the photo's structure than 300, 0.007 further from the painting (bench_quality); `strength` "
        "sets it along measured points",
        check=NON_NEGATIVE,
    )
    tv_weight: float = param(
        1.0,
        "how much the picture is smoothed against pixel speckle (0: not at all)",
        detail="total-variation smoothing: 30-35% less pixel speckle, content and style losses within 1% "
        "(bench_defaults)",
        check=NON_NEGATIVE,
    )
    content_layers: tuple[str, ...] = param(
        ("block3_conv2", "block4_conv2"),
        "which layers of the image network judge how much of the photo is kept, comma-separated",
        detail="VGG layers: Gatys et al.'s block4_conv2 with block3_conv2, which holds the photo's outlines",
        graph=True,
    )
    content_layer_weights: Optional[tuple[float, ...]] = param(
        None, "one weight per content layer, comma-separated (none: equal weights)", graph=True, check=WEIGHTS
    )
    style_layers: tuple[str, ...] = param(
        STYLE_LAYERS,
        "which layers of the image network judge the painting's look, comma-separated",
        detail="VGG layers, as in Gatys et al. 2016 but block5_conv1, which jcjohnson's weights make 0.0001 of the "
        "loss: 0.85x the time, the judges unmoved (bench_quality)",
        graph=True,
    )
    style_layer_weights: Optional[tuple[float, ...]] = param(
        JCJOHNSON_LAYER_WEIGHTS,
        "one weight per style layer, comma-separated (none: equal weights)",
        detail="default: jcjohnson's effective weights, for the default layers or Gatys' five; other layers "
        "start equal",
        graph=True,
        check=WEIGHTS,
    )
    style_stat: StyleStat = param(
        "w2",
        "how the painting's look is measured: w2 (the average and spread of its colours and textures), gram "
        "(the original method's), swd (their whole distribution, along random directions), bn (averages and spreads "
        "one by one), mmd-poly or mmd-gauss (kernel distances)",
        detail="w2 (crowsonkb's: mean and covariance) came closer to the painting than Gatys' Gram matrices, in "
        "less time (bench_quality); swd: sliced Wasserstein; mmd-poly, mmd-gauss and bn follow Li et al. 2017",
        graph=True,
    )
    style_blend: Optional[tuple[float, ...]] = param(
        None,
        "weights of several paintings blended into one style, comma-separated (none: equal)",
        detail="the paintings are joined with ` + ` in a manifest's style cell",
        check=BLEND,
    )
    style_scale: float = param(
        1.0,
        "size of the painting relative to the finished picture: above 1 larger brush strokes, below 1 smaller",
        detail="the painting at this size counts in the memory plan",
        check=STYLE_SCALE,
    )
    style_fit: StyleFit = param(
        "short",
        "how the painting is sized against the picture: short matches the short sides (larger strokes from a "
        "wide painting), long the long sides",
        detail="short: the painting's long side at most twice the output's; more content kept at a high "
        "style_weight; long: longest side to longest (jcjohnson's) (bench_quality)",
        added_in="0.1.0+style-fit",
        neutral="long",
    )
    preserve_colors: PreserveColors = param(
        "none",
        "keep the photo's colours: none, luminance (the painting's light and shade only) or histogram (the "
        "photo's range of colours)",
        detail="both methods",
        fast=True,
    )
    style_strength: float = param(
        1.0,
        "fade between the photo (0) and the finished picture (1); strength paints more lightly instead",
        detail="both methods: the finished picture's pixels blended with the photo's",
        check=FRACTION,
        added_in="0.1.0+fast",
        neutral=1.0,
        fast=True,
    )
    scales: tuple[int, ...] = param(
        (),
        "smaller sizes to paint first, in pixels, comma-separated, e.g. 256 (given, min_scale is not used)",
        detail="coarse-to-fine",
    )
    min_scale: int = param(
        128,
        "smallest size painted first, in pixels, growing by 1.4 times up to the full size (0: full size only)",
        detail="coarse-to-fine in sqrt(2) steps from about this side (crowsonkb's 128): the painting's large-scale "
        "structure, the measure's largest gain (bench_quality)",
        check=OFF_OR_SIDE,
        added_in="0.1.0+min-scale",
        neutral=0,
    )
    last_jump: float = param(
        2.0,
        "how many times larger the full size is than the last smaller size painted (1.41: one more smaller "
        "size, slower)",
        detail="min_scale's sizes only; 2 leaves out the sqrt(2) ladder's last size (362 px at 512 px): 0.7x the "
        "time, both judges within 0.01 (bench_quality)",
        check=JUMP,
        added_in="0.5.0",
        neutral=1.41,
    )
    coarse_iterations: int = param(
        60,
        "refining steps at each smaller size",
        detail="enough to carry structure up (100 and 200 scored alike)",
        check=STEPS,
    )
    average_decay: float = param(
        0.0,
        "above 0, the result is an average of the latest steps' pictures (0: the best single step)",
        detail="a moving average of the iterates (crowsonkb's 0.99)",
        check=BELOW_ONE,
        added_in="0.1.0+average",
        neutral=0.0,
    )
    tolerance: float = param(
        1e-3,
        "stop early once the result improves by less than this fraction over `patience` steps",
        check=NON_NEGATIVE,
    )
    patience: int = param(20, "steps over which the result must improve by `tolerance` to go on", check=STEPS)
    arch: Arch = param(
        "auto",
        "which image network judges the pictures: vgg19, vgg16, or auto (the one the weights file holds)",
        detail="VGG19 (Gatys) with ImageNet weights; a weights file says which VGG it holds",
        graph=True,
    )
    pooling: Pooling = param(
        "max",
        "how the image network shrinks its views: max, or avg (smoother)",
        detail="max as in Keras; avg is Gatys' choice",
        graph=True,
    )
    seed: int = param(
        0,
        "random seed: the same seed gives the same picture on a CPU",
        detail="noise init and random features are seeded",
        check=SEED,
    )

    def __post_init__(self) -> None:
        if self.strength is not None and 0 <= self.strength <= 1:
            object.__setattr__(self, "style_weight", style_weight_at_strength(self.strength))
        if self.style_layer_weights == JCJOHNSON_LAYER_WEIGHTS and self.style_layers != STYLE_LAYERS:
            # The default weights were measured for Gatys' layers; other layers start equal.
            weights = GATYS_JCJOHNSON_WEIGHTS if self.style_layers == VGG_STYLE_LAYERS else None
            object.__setattr__(self, "style_layer_weights", weights)
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(problems))

    def problems(self) -> list[str]:
        """Human-readable list of what is wrong with these values (empty when valid)."""
        out = [problem for spec in self.specs() if (problem := spec.problem(getattr(self, spec.name)))]
        for layers, weights in (("content_layers", "content_layer_weights"), ("style_layers", "style_layer_weights")):
            values = getattr(self, weights)
            if values is not None and len(values) != len(getattr(self, layers)):
                out.append(f"{weights} needs one weight per layer in {layers}")
        if any(s < 16 or s >= self.size for s in self.scales):
            out.append(f"scales must be between 16 and size ({self.size}), got {self.scales}")
        return out

    def sides(self) -> tuple[int, ...]:
        """Every side optimised, coarse to fine, ending at `size`: `scales` when given, else
        crowsonkb's schedule, size / sqrt(2)^k down to min_scale, but none within `last_jump` of `size`."""
        if self.scales or not self.min_scale:
            return (*self.scales, self.size)
        count = int(math.floor(2 * math.log2(self.size / self.min_scale) + 1e-9))
        ladder = (k for k in range(count, 0, -1) if 2 ** (k / 2) >= self.last_jump)
        return tuple(round(self.size / 2 ** (k / 2)) for k in ladder) + (self.size,)

    def content_weight_at(self, side: int) -> float:
        """content_weight at the scale of longest side `side`: coarse_content_weight times it at the
        coarsest scale, easing geometrically to 1x at `size`."""
        coarsest = self.sides()[0]
        if coarsest >= self.size or self.coarse_content_weight == 1:
            return self.content_weight
        return self.content_weight * self.coarse_content_weight ** (
            math.log(self.size / side) / math.log(self.size / coarsest)
        )

    def steps(self) -> int:
        """The optimiser's step budget over every scale (early stopping may use fewer); 0 for method=fast."""
        if self.method == "fast":
            return 0
        return self.iterations + self.coarse_iterations * (len(self.sides()) - 1)

    def replace(self, **changes) -> "StyleParams":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """Short stable hash of every field: names outputs and keys resume.

        A field newer than the first results tables counts only away from its neutral value, so a
        pair recorded before it existed keeps its id and is not redone.
        """
        specs = {spec.name: spec for spec in self.specs()}
        fields = {name: value for name, value in self.to_dict().items() if not specs[name].is_neutral(value)}
        blob = json.dumps(fields, sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]

    def compile_key(self) -> "StyleParams":
        """These params with the fields that do not change the compiled graph at their defaults:
        params with equal keys share one compiled objective."""
        return type(self)(**{spec.name: getattr(self, spec.name) for spec in self.specs() if spec.graph})

    @classmethod
    def specs(cls) -> tuple[ParamSpec, ...]:
        return _specs(cls)

    def earlier(self, explicit=frozenset()) -> list["StyleParams"]:
        """These parameters as each earlier set of defaults made them: every changed field that was
        not set explicitly (`explicit`: names from the manifest, flags or a sweep) at its old value."""
        out = []
        for old in EARLIER_DEFAULTS:
            changes = {
                name: value
                for name, value in old.items()
                if name not in explicit and getattr(self, name) == getattr(StyleParams, name)
            }
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


def parameter_table() -> str:
    """The parameters as a Markdown table (manifests/README.md): name, what a cell holds, default, help, detail."""
    return markdown.table(
        ("parameter", "type", "default", "meaning", "notes"),
        (
            (
                f"`{s.name}`",
                _kind(s),
                "(empty)" if s.default in (None, ()) else f"`{as_text(s.default)}`",
                s.help,
                s.detail,
            )
            for s in StyleParams.specs()
        ),
    )


_KINDS = {int: "integer", float: "number", str: "name"}


def _kind(spec: ParamSpec) -> str:
    """What a cell may hold, in words: "integer >= 16", "`max` or `avg`", "list of numbers or empty"."""
    optional = type(None) in get_args(spec.hint)
    hint = get_args(spec.hint)[0] if optional else spec.hint
    if spec.choices:
        kind = ", ".join(f"`{choice}`" for choice in spec.choices[:-1]) + f" or `{spec.choices[-1]}`"
    elif get_origin(hint) is tuple:
        kind = f"list of {_KINDS[get_args(hint)[0]]}s"
    else:
        kind = _KINDS[hint]
    if spec.check is not None:
        kind += " " + _range(spec.check.schema.get("items", spec.check.schema))  # a list's: each item's
    return kind + (" or empty" if optional else "")


def _range(schema: dict) -> str:
    """A Check's JSON Schema range in words: ">= 16", "> 0", "in [0, 1)", "in (0, 8]"."""
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    if high is not None:
        return f"in {'[' if 'minimum' in schema else '('}{low}, {high}{']' if 'maximum' in schema else ')'}"
    return f">= {low}" if "minimum" in schema else f"> {low}"


def style_weight_at_strength(strength: float) -> float:
    """The style weight at `strength`: geometric between STRENGTH_POINTS' measured weights, linear
    from 0 (the photo) to the first."""
    points = STRENGTH_POINTS
    for (low, low_weight), (high, high_weight) in zip(points, points[1:]):
        if strength <= high:
            share = (strength - low) / (high - low)
            if low_weight == 0:
                return high_weight * share
            return float(low_weight * (high_weight / low_weight) ** share)
    return points[-1][1]


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
            return _integer(text)
        if hint is float:
            return float(text)
    except ValueError:
        raise ValueError(f"{name} must be a{'n integer' if hint is int else ' number'}, got {text!r}") from None
    return text


def _integer(text: str) -> int:
    """An integer as typed ("512", exactly however long), or as a spreadsheet writes one ("5e2", "64.0");
    ValueError for fractions, "inf" and "nan"."""
    try:
        return int(text)
    except ValueError:
        value = float(text)
    if not value.is_integer():
        raise ValueError(text)
    return int(value)


# Contact sheets (`nst sheet`): cells at 256 px keep the fast network's detail, at seconds a sheet.
SHEET_PARAMS = StyleParams(size=256, method="fast")
