"""StyleParams: parsing from text, validation, the hash that names outputs."""

import re

import pytest

from conftest import extremes, first, numeric_fields
from nst_core.params import JCJOHNSON_LAYER_WEIGHTS, VGG_STYLE_LAYERS, StyleParams


def test_params_parse_lists_with_spaces_and_reject_bad_blends():
    assert StyleParams.parse("style_layers", "block1_conv1, block2_conv1") == ("block1_conv1", "block2_conv1")
    assert StyleParams.parse("style_blend", "0.7, 0.3") == (0.7, 0.3)
    with pytest.raises(ValueError, match="style_blend weights must be non-negative"):
        StyleParams(style_blend=(1.0, -0.5))


def test_every_problem_is_reported_at_once():
    with pytest.raises(ValueError) as error:
        StyleParams(size=8, optimizer="sgd", style_weight=-1, content_layer_weights=(1.0, 2.0, 3.0))
    for fragment in (
        "size must be at least 16",
        "optimizer must be one of lbfgs, adam",
        "style_weight must be a non-negative number",
        "content_layer_weights needs one weight per layer",
    ):
        assert fragment in str(error.value)


def test_hash_changes_with_any_field_and_is_stable():
    base = StyleParams()
    assert base.hash() == StyleParams().hash()
    assert len({base.hash(), base.replace(seed=1).hash(), base.replace(style_layers=("block1_conv1",)).hash()}) == 3


def test_numbers_parse_from_manifest_text():
    assert StyleParams.parse("size", "512") == 512 and StyleParams.parse("size", "5e2") == 500
    assert StyleParams.parse("style_weight", "1e3") == 1000.0
    assert StyleParams.parse("content_layer_weights", "none") is None
    with pytest.raises(ValueError, match="size must be an integer, got '12.5'"):
        StyleParams.parse("size", "12.5")


def test_pair_ids_of_earlier_tables_are_pinned():
    # Computed before the fields carried metadata: results tables written since keep their pair ids.
    assert first().hash() == "484c699a88"
    # Each earlier set of defaults (EARLIER_DEFAULTS, newest first) is found by the ledger, not redone.
    # 0.4.0, 0.3.0 (up to 100 steps at the output size), 0.2.0 (up to 300), W2 at 300 from noise (the last
    # of 0.1.0), from the photo, Gram at 500 with the short fit, Gram at 100, then the first defaults:
    earlier = [
        "29293ad14d",
        "f36b0f4775",
        "b549f282e6",
        "7c10f0d07c",
        "b8e4e428a7",
        "d4eb9f638f",
        "2a9c70ba84",
        first(min_scale=512).hash(),
        "484c699a88",
    ]
    assert [old.hash() for old in StyleParams().earlier()] == earlier
    # 0.4.0 was 0.3.0 at style_weight 100 (strength 0.25) and at most 40 steps at the output size;
    # 0.5.0: no block5_conv1 style layer, and no size between half the output size and the output size
    assert StyleParams().hash() == "4f4a377596"
    changed = {
        "style_layers",
        "last_jump",
        "iterations",
        "min_scale",
        "style_weight",
        "style_layer_weights",
        "coarse_iterations",
        "style_fit",
        "style_stat",
        "init",
        "content_layers",
        "coarse_content_weight",
        "self_similarity_weight",
    }
    assert StyleParams().earlier(explicit=changed) == []  # asked for: the new values' pair
    assert first(size=256, style_weight=100.0, style_layers=("block1_conv1", "block2_conv1"), scales=(128,)).hash() == (
        "a6070bbe78"
    )
    assert first(method="fast", style_strength=0.5).hash() == "31d2e95d41"
    assert first(average_decay=0.99, style_layer_weights=(1.0, 2.0, 3.0, 4.0, 5.0)).hash() == "e37bd5b71e"
    assert first(init="noise", optimizer="adam", seed=3, style_blend=(0.7, 0.3)).hash() == "65b0444a08"


def test_the_default_layer_weights_belong_to_the_default_layers():
    assert StyleParams().style_layer_weights == JCJOHNSON_LAYER_WEIGHTS
    assert StyleParams(style_layers=VGG_STYLE_LAYERS).style_layer_weights == (0.002, 0.49, 0.49, 0.012, 0.0001)
    assert StyleParams(style_layers=("block1_conv1", "block2_conv1")).style_layer_weights is None  # equal
    assert StyleParams().replace(style_layers=("block3_conv1",)).style_layer_weights is None
    assert StyleParams(style_layer_weights=None).style_layer_weights is None  # asked for: equal
    with pytest.raises(ValueError, match="style_layer_weights needs one weight per layer"):
        StyleParams(style_layers=("block1_conv1",), style_layer_weights=(1.0, 2.0))


def test_a_field_declared_once_is_everywhere():
    """A new parameter is one `param(...)` line: hash, compile key, validation, parsing, CLI flag and column follow."""
    import argparse

    import pyarrow as pa

    from flows.cli import add_param_flags
    from flows.results import param_fields
    from nst_core.params import NON_NEGATIVE, param, params_dataclass

    @params_dataclass
    class WithGlow(StyleParams):
        glow: float = param(
            0.0, "how much the output glows", graph=True, check=NON_NEGATIVE, added_in="9.9.9", neutral=0.0
        )

    assert WithGlow().hash() == StyleParams().hash()  # at its neutral value: earlier pair ids are kept
    assert WithGlow(glow=0.5).hash() != StyleParams().hash()
    assert WithGlow(glow=0.5, seed=4).compile_key() == WithGlow(glow=0.5)  # a graph field; seed is not
    with pytest.raises(ValueError, match="glow must be a non-negative number, got -1.0"):
        WithGlow(glow=-1.0)
    assert WithGlow.parse("glow", "2") == 2.0
    parser = argparse.ArgumentParser()
    add_param_flags(parser, WithGlow())
    assert parser.parse_args(["--glow", "3"]).glow == "3" and "how much the output glows" in parser.format_help()
    assert pa.field("glow", pa.float64()) in param_fields(WithGlow)


def test_only_graph_fields_are_in_the_compile_key():
    params = StyleParams(size=256, style_weight=3.0, seed=2, style_stat="w2", style_layers=("block1_conv1",))
    assert params.compile_key() == StyleParams(style_stat="w2", style_layers=("block1_conv1",))


@pytest.mark.parametrize("declared", [{}, {"added_in": "9.9.9"}, {"neutral": 0.0}])
def test_a_later_field_without_its_version_and_neutral_value_is_refused_where_it_is_declared(declared):
    from nst_core.params import param, params_dataclass

    with pytest.raises(TypeError) as error:

        @params_dataclass
        class Unsafe(StyleParams):
            glow: float = param(0.0, "a field newer than the first tables", **declared)

    message = str(error.value)  # names the field and says what to write
    assert message.startswith("Unsafe.glow is not in the first results tables (FIRST_FIELDS)")
    assert (
        'added_in="<the version adding it, e.g. 0.2.0>", neutral=<the value at which it behaves as before glow'
        in message
    )


def test_a_results_row_has_a_column_for_every_result_cell():
    import numpy as np

    from flows.results import SCHEMA
    from nst_core.stylize import StylizeResult

    result = StylizeResult(np.zeros((4, 6, 3), np.float32), 1.0, 2.0, 3.0, 6.0, [6.0], 1)
    assert set(result.to_row()) <= set(SCHEMA.names) and result.to_row()["width"] == 6


def test_min_scale_gives_crowsonkbs_sqrt2_schedule_and_scales_win():
    assert StyleParams(size=512, min_scale=128, last_jump=1.41).sides() == (128, 181, 256, 362, 512)
    assert StyleParams(size=512, min_scale=128).sides() == (128, 181, 256, 512)  # the last jump is 2x
    assert StyleParams(size=1024, min_scale=128, last_jump=4).sides() == (128, 181, 256, 1024)
    assert StyleParams(size=256, min_scale=128).sides() == (128, 256)
    assert StyleParams(size=300, min_scale=256).sides() == (300,)  # 212 would be under min_scale
    assert StyleParams(size=512, min_scale=0).sides() == (512,)
    assert StyleParams(size=512, min_scale=128, scales=(300,)).sides() == (300, 512)
    with pytest.raises(ValueError, match="min_scale must be 0"):
        StyleParams(min_scale=8)


def test_integers_parse_exactly_and_inf_nan_and_fractions_do_not():
    assert StyleParams.parse("seed", str(2**70)) == 2**70  # exactly, for the range check to judge
    assert StyleParams.parse("size", "64.0") == 64 and StyleParams.parse("scales", "256, 3.62e2") == (256, 362)
    for text in ("inf", "-inf", "nan", "1e400", "12.5", "1e-3"):
        with pytest.raises(ValueError, match=f"^size must be an integer, got '{re.escape(text)}'$"):
            StyleParams.parse("size", text)


def test_lists_of_weights_refuse_negative_nan_and_inf():
    for name, text in (
        ("content_layer_weights", "-1,1"),
        ("content_layer_weights", "nan,1"),
        ("style_layer_weights", "1,1,1,1,inf"),
        ("style_blend", "nan"),
        ("style_blend", "1,inf"),
        ("style_blend", "0,0"),
    ):
        with pytest.raises(ValueError, match=f"^{name} (weights )?must be non-negative numbers"):
            StyleParams(**{name: StyleParams.parse(name, text)})


@pytest.mark.parametrize("spec", numeric_fields(), ids=lambda spec: spec.name)
def test_every_numeric_flag_at_its_extremes_is_taken_or_refused_naming_the_flag(spec):
    """Each end of the field's range is a valid run; past it (2^63, 1e20, inf, nan, 1e400) the message
    names the flag as typed and the field's range, before anything runs."""
    from flows.cli import build_parser, param_overrides

    flag = f"--{spec.name.replace('_', '-')}"
    accepted, refused = extremes(spec)
    parse = build_parser().parse_args
    for text in accepted:
        value = param_overrides(parse(["run", "m.csv", "-o", "out", f"{flag}={text}"]))[spec.name]
        assert getattr(StyleParams().replace(**{spec.name: value}), spec.name) == float(text)
    for text in refused:
        with pytest.raises(ValueError, match=f"^{flag} {re.escape(text)}: {spec.name} must be "):
            param_overrides(parse(["run", "m.csv", "-o", "out", f"{flag}={text}"]))


def test_nst_run_refuses_a_bad_parameter_flag_in_one_line_before_anything_starts(tmp_path, capsys):
    from flows.cli import main

    (tmp_path / "m.csv").write_text("content,style\na.png,x.png\n")
    assert main(["run", str(tmp_path / "m.csv"), "-o", str(tmp_path / "out"), "--seed", "1e20", "--size=inf"]) == 2
    assert capsys.readouterr().err == (
        "nst: --size inf: size must be an integer, got 'inf'; "
        "--seed 1e20: seed must be at least 0 and at most 4294967295, got 100000000000000000000\n"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "flag, text, reason",
    [
        ("--batch-size", "-1", "must be greater than or equal to 1"),
        ("--batch-size", "0", "must be greater than or equal to 1"),
        ("--batch-size", str(2**63), "must be less than or equal to 1024"),
        ("--batch-size", "1e400", "must be a valid integer, unable to parse string as an integer"),
        ("--memory-limit-gb", "nan", "must be a finite number"),
        ("--memory-limit-gb", "inf", "must be a finite number"),
        ("--memory-limit-gb", "-1", "must be greater than 0"),
        ("--memory-limit-gb", "0", "must be greater than 0"),
        ("--concurrency", "0", "must be greater than or equal to 1"),
        ("--dask-workers", "-2", "must be greater than or equal to 1"),
    ],
)
def test_a_bad_run_flag_is_refused_naming_it(flag, text, reason, capsys):
    from flows.cli import build_parser

    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["run", "m.csv", "-o", "out", f"{flag}={text}"])
    assert exited.value.code == 2
    assert f"nst run: error: argument {flag}: {reason}, got {text!r}" in capsys.readouterr().err


def test_run_flags_in_range_are_taken_and_the_flow_refuses_the_same_values():
    from prefect.exceptions import ParameterTypeError

    from flows.cli import build_parser
    from flows.pipeline import stylize_manifest

    args = build_parser().parse_args(["run", "m.csv", "-o", "out", "--batch-size", "1", "--memory-limit-gb", "1.2"])
    assert (args.batch_size, args.memory_limit_gb) == (1, 1.2)
    for bad in ({"batch_size": -1}, {"batch_size": 0}, {"memory_limit_gb": float("nan")}, {"memory_limit_gb": -1}):
        with pytest.raises(ParameterTypeError, match=next(iter(bad))):  # a deployment's or the UI's parameters
            stylize_manifest.validate_parameters({"manifest": "m.csv", "out": "out", **bad})
