"""Sweeps: one manifest row or `--sweep` asks for several values of one or two parameters."""

from __future__ import annotations

import pytest

from flows.manifest import ManifestError, expand_manifest
from flows.sweeps import parse_sweep
from nst_core.params import StyleParams
from nst_core.storage import LOCAL


def _expand(tree, text, **kwargs):
    (tree / "m.csv").write_text(text)
    return expand_manifest(str(tree / "m.csv"), str(tree / "out"), storage=LOCAL, **kwargs)


def test_one_parameter_gives_one_pair_per_value_in_the_given_order(tree):
    pairs, _ = _expand(tree, 'content,style,sweep\nphotos/a.png,styles/x.png,"style_weight=1e4,1e2,1e3"\n')
    assert [p.params.style_weight for p in pairs] == [1e4, 1e2, 1e3]
    assert len({p.pair_id for p in pairs}) == 3 and len({p.output for p in pairs}) == 3
    assert all(p.sweep == "style_weight=1e4,1e2,1e3" for p in pairs)
    default = StyleParams()
    assert all(p.params.replace(style_weight=default.style_weight) == default for p in pairs)  # nothing else changed


def test_two_parameters_give_every_combination_crossed_with_the_images(tree):
    sweep = "style_weight=1,10;style_stat=gram,mmd-poly,bn"
    pairs, _ = _expand(tree, f'content,style,sweep,size\nphotos,styles/x.png,"{sweep}",64\n')
    assert len(pairs) == 3 * 2 * 3  # three photos x one style x 2 x 3 values
    first = [(p.params.style_weight, p.params.style_stat) for p in pairs if p.content.endswith("a.png")]
    assert first == [(1, "gram"), (1, "mmd-poly"), (1, "bn"), (10, "gram"), (10, "mmd-poly"), (10, "bn")]
    assert {p.params.size for p in pairs} == {64}  # the row's other cells still apply


def test_values_holding_commas_are_separated_by_bars(tree):
    sweep = "content_layers=block4_conv2|block2_conv2,block4_conv2"
    pairs, _ = _expand(tree, f'content,style,sweep\nphotos/a.png,styles/x.png,"{sweep}"\n')
    assert [p.params.content_layers for p in pairs] == [("block4_conv2",), ("block2_conv2", "block4_conv2")]
    assert parse_sweep("style_blend=0.5,0.5|0.9,0.1") == [("style_blend", [(0.5, 0.5), (0.9, 0.1)])]


def test_the_command_line_sweep_applies_to_rows_without_their_own(tree):
    text = 'content,style,sweep\nphotos/a.png,styles/x.png,\nphotos/b.png,styles/x.png,"init=content,style"\n'
    pairs, _ = _expand(tree, text, sweep="style_weight=1,2")
    assert [(p.content[-5:], p.params.style_weight, p.params.init) for p in pairs] == [
        ("a.png", 1, StyleParams().init),
        ("a.png", 2, StyleParams().init),
        ("b.png", StyleParams().style_weight, "content"),
        ("b.png", StyleParams().style_weight, "style"),
    ]


def test_bad_sweeps_are_manifest_errors_naming_their_rows(tree):
    text = (
        "content,style,sweep\n"
        'photos/a.png,styles/x.png,"style_weight=1e2,abc"\n'
        'photos/a.png,styles/x.png,"colour=red,blue"\n'
        "photos/a.png,styles/x.png,size=64;size=32\n"
        'photos/a.png,styles/x.png,"style_weight=-1,2"\n'
        'photos/a.png,styles/x.png,"style_stat=gram,fancy"\n'
        "photos/a.png,styles/x.png,iterations=1;seed=1;size=64\n"
        "photos/a.png,styles/x.png,style_weight\n"
        'photos/b.png,styles/x.png,"style_weight=1,2"\n'
    )
    with pytest.raises(ManifestError) as caught:
        _expand(tree, text)
    message = str(caught.value)
    assert "7 bad rows" in message and "row 8" not in message
    for row, reason in [
        (1, "style_weight must be a number, got 'abc'"),
        (2, "'colour' is not a parameter"),
        (3, "size is given twice"),
        (4, "style_weight must be a non-negative number, got -1.0"),
        (5, "style_stat must be one of gram, mmd-poly, mmd-gauss, bn, w2, swd, got 'fancy'"),
        (6, "at most 2 parameters, got 3"),
        (7, "must look like NAME=V1,V2"),
    ]:
        line = next(line for line in message.splitlines() if line.strip().startswith(f"row {row}:"))
        assert "sweep" in line and reason in line, line


def test_a_sweep_with_an_output_cell_is_refused(tree):
    with pytest.raises(ManifestError, match="row 1: output 'one.png' names one file, but the row expands to 2 pairs"):
        _expand(tree, 'content,style,output,sweep\nphotos/a.png,styles/x.png,one.png,"seed=1,2"\n')


def test_a_bad_command_line_sweep_is_one_error(tree):
    with pytest.raises(ValueError, match="^sweep: 'nope' is not a parameter$"):
        _expand(tree, "content,style\nphotos/a.png,styles/x.png\nphotos/b.png,styles/x.png\n", sweep="nope=1,2")
