"""StyleParams: parsing from text, validation, the hash that names outputs."""

import pytest

from nst_core.params import StyleParams


def test_params_parse_lists_with_spaces_and_reject_bad_blends():
    assert StyleParams.parse("style_layers", "block1_conv1, block2_conv1") == ("block1_conv1", "block2_conv1")
    assert StyleParams.parse("style_blend", "0.7, 0.3") == (0.7, 0.3)
    with pytest.raises(ValueError, match="style_blend weights must be non-negative"):
        StyleParams(style_blend=(1.0, -0.5))


def test_every_problem_is_reported_at_once():
    with pytest.raises(ValueError) as error:
        StyleParams(size=8, optimizer="sgd", style_weight=-1, content_layer_weights=(1.0, 2.0))
    for fragment in ("size must be at least 16", "optimizer must be one of lbfgs, adam",
                     "style_weight must be a non-negative number", "content_layer_weights needs one weight per layer"):
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


def test_min_scale_gives_crowsonkbs_sqrt2_schedule_and_scales_win():
    assert StyleParams(size=512, min_scale=128).sides() == (128, 181, 256, 362, 512)
    assert StyleParams(size=300, min_scale=256).sides() == (300,)  # 212 would be under min_scale
    assert StyleParams(size=512, min_scale=0).sides() == (512,)
    assert StyleParams(size=512, min_scale=128, scales=(300,)).sides() == (300, 512)
    with pytest.raises(ValueError, match="min_scale must be 0"):
        StyleParams(min_scale=8)
