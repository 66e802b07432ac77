"""Manifest reading, validation and expansion (no Prefect, no network model)."""

from __future__ import annotations

import pandas as pd
import pytest
from PIL import Image

from flows.manifest import ManifestError, expand_manifest, validate_manifest
from nst_core.params import StyleParams


@pytest.fixture
def tree(tmp_path):
    """photos/{a,b,c}.png, styles/{x,y}.png as real tiny images, and a notes.txt that is skipped."""
    for folder, names in (("photos", "abc"), ("styles", "xy")):
        (tmp_path / folder).mkdir()
        for name in names:
            Image.new("RGB", (8, 6), "red").save(tmp_path / folder / f"{name}.png")
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    return tmp_path


def _csv(path, text):
    path.write_text(text)
    return str(path)


def test_folder_crossed_with_folder(tree):
    pairs, warnings = expand_manifest(_csv(tree / "m.csv", "content,style\nphotos,styles\n"), str(tree / "out"))
    assert len(pairs) == 6 and not warnings
    assert {p.content.rsplit("/", 1)[1] for p in pairs} == {"a.png", "b.png", "c.png"}
    assert all(p.content.startswith(str(tree)) for p in pairs)  # relative to the manifest's folder


def test_glob_and_single_file(tree):
    text = "content,style\nphotos/[ab].png,styles/x.png\n"
    pairs, _ = expand_manifest(_csv(tree / "m.csv", text), str(tree / "out"))
    assert [(p.content.rsplit("/", 1)[1], p.styles[0].rsplit("/", 1)[1]) for p in pairs] == [
        ("a.png", "x.png"), ("b.png", "x.png")]


def test_blended_styles_are_one_pair(tree):
    text = "content,style,style_blend\nphotos/a.png,styles/x.png + styles/y.png,\"0.7,0.3\"\n"
    (pair,), _ = expand_manifest(_csv(tree / "m.csv", text), str(tree / "out"))
    assert len(pair.styles) == 2 and pair.params.style_blend == (0.7, 0.3)
    assert "x+y" in pair.output


def test_per_row_overrides_are_typed_and_win_over_cli_overrides(tree):
    text = "content,style,size,style_weight,style_layers,init\nphotos/a.png,styles/x.png,64,1e3,\"block1_conv1,block2_conv1\",\nphotos/b.png,styles/x.png,,,,noise\n"
    pairs, _ = expand_manifest(_csv(tree / "m.csv", text), str(tree / "out"), overrides={"size": 96, "iterations": 7})
    first, second = pairs
    assert (first.params.size, first.params.style_weight, first.params.iterations) == (64, 1000.0, 7)
    assert first.params.style_layers == ("block1_conv1", "block2_conv1") and first.params.init == "content"
    assert (second.params.size, second.params.init) == (96, "noise")


def test_parquet_manifest(tree):
    path = tree / "m.parquet"
    pd.DataFrame({"content": ["photos/a.png"], "style": ["styles/y.png"], "size": ["48"]}).to_parquet(path)
    (pair,), _ = expand_manifest(str(path), str(tree / "out"))
    assert pair.params.size == 48 and pair.styles[0].endswith("y.png")


def test_duplicates_run_once_and_missing_files_stay_as_pairs(tree):
    text = "content,style\nphotos/a.png,styles/x.png\nphotos/a.png,styles/x.png\nphotos/gone.png,styles/x.png\n"
    pairs, _ = expand_manifest(_csv(tree / "m.csv", text), str(tree / "out"))
    assert [p.row for p in pairs] == [1, 3] and pairs[1].content.endswith("gone.png")


def test_a_glob_matching_nothing_is_a_warning(tree):
    pairs, warnings = expand_manifest(_csv(tree / "m.csv", "content,style\nphotos/*.jpg,styles\n"), str(tree / "o"))
    assert pairs == [] and "row 1 matches no images" in warnings[0]


def test_output_names_are_deterministic_and_follow_the_parameters(tree):
    manifest = _csv(tree / "m.csv", "content,style\nphotos/a.png,styles/x.png\n")
    (one,), _ = expand_manifest(manifest, str(tree / "out"))
    (again,), _ = expand_manifest(manifest, str(tree / "out"))
    (other,), _ = expand_manifest(manifest, str(tree / "out"), overrides={"style_weight": 99.0})
    assert one.output == again.output and one.pair_id == again.pair_id
    assert other.pair_id != one.pair_id and other.output != one.output
    assert one.output.startswith(str(tree / "out" / "a--x--"))


def test_explicit_output_inside_the_root(tree):
    text = "content,style,output\nphotos/a.png,styles/x.png,nice/cat.jpg\n"
    (pair,), _ = expand_manifest(_csv(tree / "m.csv", text), str(tree / "out"))
    assert pair.output == str(tree / "out" / "nice" / "cat.jpg")


def test_every_bad_row_is_reported_at_once(tree):
    text = ("content,style,size,style_weight,output\n"
            "photos/a.png,styles/x.png,64,1,\n"          # row 1: fine
            "photos/a.png,styles/x.png,-3,1,\n"          # row 2: negative size
            "photos/a.png,styles/x.png,64,abc,\n"        # row 3: not a number
            ",styles/x.png,64,1,\n"                      # row 4: missing content
            "photos/a.png,styles/x.png,64,1,../../etc/x.png\n")  # row 5: escapes the root
    with pytest.raises(ManifestError) as caught:
        validate_manifest(_csv(tree / "m.csv", text))
    message = str(caught.value)
    assert "4 bad rows" in message and "row 1:" not in message
    assert "row 2: size must be at least 16, got -3" in message
    assert "row 3: style_weight must be a number, got 'abc'" in message
    assert "row 4: missing content" in message
    assert "row 5: output '../../etc/x.png' must be a relative path inside the output root" in message
    assert sorted({row for row, _ in caught.value.problems}) == [2, 3, 4, 5]


@pytest.mark.parametrize("text, expected", [
    ("content\nphotos/a.png\n", "missing required column 'style'"),
    ("content,style,colour\nphotos/a.png,styles/x.png,red\n", "unknown column(s) 'colour'"),
    ("content,style\n", "no rows"),
    ("content,style,init\nphotos/a.png,styles/x.png,sideways\n", "row 1: init must be one of noise, content, style"),
])
def test_file_level_and_value_problems(tree, text, expected):
    with pytest.raises(ManifestError, match="m.csv") as caught:
        validate_manifest(_csv(tree / "m.csv", text))
    assert expected in str(caught.value)


def test_a_missing_manifest_is_named(tree):
    with pytest.raises(ManifestError, match="nope.csv: cannot use this manifest:\n  manifest: file not found"):
        validate_manifest(str(tree / "nope.csv"))


def test_an_output_for_a_row_that_expands_to_several_pairs_is_rejected(tree):
    text = "content,style,output\nphotos,styles/x.png,one.png\n"
    with pytest.raises(ManifestError, match="expands to 3 pairs"):
        expand_manifest(_csv(tree / "m.csv", text), str(tree / "out"))


def test_s3_prefix_and_relative_paths(s3):
    fs, options = s3
    for key in ("in/photos/a.png", "in/photos/sub/b.jpg", "in/styles/x.png"):
        fs.pipe(f"nst-test/{key}", b"image bytes are not read while expanding")
    fs.pipe("nst-test/in/m.csv", b"content,style\nphotos/,styles/x.png\n")
    pairs, _ = expand_manifest("s3://nst-test/in/m.csv", "s3://nst-test/out", storage_options=options)
    assert [p.content for p in pairs] == ["s3://nst-test/in/photos/a.png", "s3://nst-test/in/photos/sub/b.jpg"]
    assert all(p.styles == ("s3://nst-test/in/styles/x.png",) for p in pairs)
    assert all(p.output.startswith("s3://nst-test/out/") for p in pairs)


def test_defaults_are_the_dataclass_defaults(tree):
    (pair,), _ = expand_manifest(_csv(tree / "m.csv", "content,style\nphotos/a.png,styles/x.png\n"), str(tree / "o"))
    assert pair.params == StyleParams()
