"""StyleParams: parsing from text, validation, the hash that names outputs."""

import pytest

from nst_core.params import ADDED_LATER, MIN_COARSE_SIDE, StyleParams


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


def test_a_pair_recorded_before_the_new_fields_keeps_its_id():
    import hashlib
    import json

    earlier = StyleParams(size=256, scales=(128,), coarse_iterations=200, iterations=300)
    before = {name: value for name, value in earlier.to_dict().items() if name not in ADDED_LATER}
    blob = json.dumps(before, sort_keys=True, default=list)  # how the hash was taken before coarse_scale
    assert earlier.hash() == hashlib.sha256(blob.encode()).hexdigest()[:10]
    assert earlier.replace(coarse_scale=0).hash() != earlier.hash()


def test_the_default_schedule_is_valid_at_every_size():
    for size in range(16, 1100):
        sides = StyleParams(size=size).coarse_sides()
        assert all(MIN_COARSE_SIDE <= side < size for side in sides), size
        assert bool(sides) == (size >= 2 * MIN_COARSE_SIDE), size  # 64-128 px tests stay single-scale
    assert StyleParams(size=512).coarse_sides() == (256,)
    assert StyleParams(size=512, scales=(128, 256)).coarse_sides() == (128, 256)  # explicit scales win
    assert StyleParams(size=512, coarse_scale=0).coarse_sides() == ()
    for bad in (1.0, -0.5):
        with pytest.raises(ValueError, match="coarse_scale must be at least 0 and below 1"):
            StyleParams(coarse_scale=bad)


def test_numbers_parse_from_manifest_text():
    assert StyleParams.parse("size", "512") == 512 and StyleParams.parse("size", "5e2") == 500
    assert StyleParams.parse("style_weight", "1e3") == 1000.0
    assert StyleParams.parse("content_layer_weights", "none") is None
    with pytest.raises(ValueError, match="size must be an integer, got '12.5'"):
        StyleParams.parse("size", "12.5")
