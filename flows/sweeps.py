"""Parameter sweeps: one manifest row (or `nst run --sweep`) asks for several values of one or two parameters.

    style_weight=1e2,1e3,1e4,1e5                      four values
    content_layers=block4_conv2|block2_conv2,block4_conv2   values holding commas: separated by |
    style_weight=1,10;style_stat=gram,bn              two parameters: every combination (4 pairs)

Each value goes through StyleParams.parse and StyleParams' own checks, so a bad
value is reported like any other bad cell.
"""

from __future__ import annotations

import itertools

from nst_core.params import StyleParams

MAX_SWEPT = 2  # a grid has two axes


def parse_sweep(text: str) -> list[tuple[str, list]]:
    """[(parameter, values in the given order)]; ValueError says what is wrong."""
    swept = []
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        name, equals, values = (s.strip() for s in part.partition("="))
        if not equals or not name:
            raise ValueError(f"sweep {part!r} must look like NAME=V1,V2,...")
        if name not in StyleParams.field_names():
            raise ValueError(f"sweep: {name!r} is not a parameter")
        if name in (n for n, _ in swept):
            raise ValueError(f"sweep: {name} is given twice")
        texts = [v for v in values.split("|" if "|" in values else ",") if v.strip()]
        if not texts:
            raise ValueError(f"sweep: {name} has no values")
        try:
            swept.append((name, [StyleParams.parse(name, v) for v in texts]))
        except ValueError as error:
            raise ValueError(f"sweep: {error}") from None
    if len(swept) > MAX_SWEPT:
        raise ValueError(f"sweep: at most {MAX_SWEPT} parameters, got {len(swept)} ({', '.join(n for n, _ in swept)})")
    return swept


def swept_params(base: StyleParams, text: str) -> list[StyleParams]:
    """`base` with every combination of the sweep's values (the first parameter varies slowest).

    An empty sweep gives [base]; a value StyleParams refuses raises its ValueError.
    """
    swept = parse_sweep(text)
    names = [name for name, _ in swept]
    try:
        return [base.replace(**dict(zip(names, combo))) for combo in itertools.product(*(v for _, v in swept))]
    except ValueError as error:
        raise ValueError(f"sweep: {error}") from None
