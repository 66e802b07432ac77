"""Manifest reading, validation and expansion (no Prefect, no network model)."""

from __future__ import annotations

import hashlib
import re
import unicodedata

import pandas as pd
import pytest
from PIL import Image

from conftest import SAMPLES, extremes, numeric_fields
from flows.manifest import ManifestError, expand_manifest, read_manifest, validate_manifest
from nst_core.params import StyleParams
from nst_core.storage import LOCAL, Storage


def _csv(path, text):
    path.write_text(text)
    return str(path)


def _names(uris):
    return [u.rsplit("/", 1)[1] for u in uris]


def _expand(tree, text, **kwargs):
    return expand_manifest(_csv(tree / "m.csv", text), str(tree / "out"), storage=LOCAL, **kwargs)


def test_folder_crossed_with_folder_relative_to_the_manifest_not_the_cwd(tree, tmp_path_factory, monkeypatch):
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    pairs, warnings = _expand(tree, "content,style\nphotos,styles\n")
    assert not warnings
    assert [(_names([p.content])[0], _names(p.styles)[0]) for p in pairs] == [
        ("a.png", "x.png"),
        ("a.png", "y.png"),
        ("b.png", "x.png"),
        ("b.png", "y.png"),
        ("c.png", "x.png"),
        ("c.png", "y.png"),
    ]
    assert all(p.content.startswith(str(tree / "photos")) and p.row == 1 for p in pairs)


def test_a_relative_manifest_path_still_gives_absolute_uris(tree, monkeypatch):
    monkeypatch.chdir(tree)
    (tree / "m.csv").write_text("content,style\nphotos/a.png,styles/x.png\n")
    (pair,), _ = expand_manifest("m.csv", "out", storage=LOCAL)
    assert pair.content == str(tree / "photos" / "a.png") and pair.styles == (str(tree / "styles" / "x.png"),)
    assert pair.output.startswith(str(tree / "out") + "/")


def test_glob_and_single_file(tree):
    pairs, _ = _expand(tree, "content,style\nphotos/[ab].png,styles/x.png\nphotos/*.png,styles/y.png\n")
    assert [(_names([p.content])[0], _names(p.styles)[0], p.row) for p in pairs] == [
        ("a.png", "x.png", 1),
        ("b.png", "x.png", 1),
        ("a.png", "y.png", 2),
        ("b.png", "y.png", 2),
        ("c.png", "y.png", 2),
    ]


def test_blended_styles_are_one_pair(tree):
    text = 'content,style,style_blend\nphotos/a.png,styles/x.png + styles/y.png,"0.7,0.3"\n'
    (pair,), _ = _expand(tree, text)
    assert _names(pair.styles) == ["x.png", "y.png"] and pair.params.style_blend == (0.7, 0.3)
    assert _names([pair.output])[0].startswith("a--x+y--")


def test_a_blend_needs_single_images_and_one_weight_each(tree):
    with pytest.raises(ManifestError, match=r"row 1: a blended style must name single images; '.*styles' matches 2"):
        _expand(tree, "content,style\nphotos/a.png,styles + styles/x.png\n")
    with pytest.raises(ManifestError, match=r"row 1: style_blend has 3 weights for 2 style image\(s\)"):
        _expand(tree, 'content,style,style_blend\nphotos/a.png,styles/x.png + styles/y.png,"1,2,3"\n')


def test_precedence_defaults_then_cells_then_flags_typed(tree):
    text = (
        "content,style,size,style_weight,style_layers,init,seed,iterations\n"
        'photos/a.png,styles/x.png,64,1e3,"block1_conv1, block2_conv1",,7,not-a-number\n'
        "photos/b.png,styles/x.png,,,,noise,,\n"
    )
    defaults = StyleParams(size=300, tv_weight=5.0, iterations=11, init="content")
    (first, second), warnings = _expand(tree, text, defaults=defaults, overrides={"size": 96, "iterations": 7})
    # The flag wins over the cell (and a replaced cell is not judged), and the run says so once per flag.
    assert (first.params.size, first.params.style_weight, first.params.iterations, first.params.seed) == (
        96,
        1000.0,
        7,
        7,
    )
    assert warnings[:2] == [
        "--size 96 replaced the manifest's size on 1 row",
        "--iterations 7 replaced the manifest's iterations on 1 row",
    ]
    assert type(first.params.size) is int and type(first.params.style_weight) is float
    assert first.params.style_layers == ("block1_conv1", "block2_conv1") and first.params.init == "content"
    assert (second.params.size, second.params.init, second.params.tv_weight) == (96, "noise", 5.0)


def test_a_flag_equal_to_the_cell_says_nothing(tree):
    """--size 64 over a manifest that says 64 (as typed, or as 64.0 from a spreadsheet) replaced nothing."""
    text = "content,style,size,style_weight\nphotos/a.png,styles/x.png,64,1e3\nphotos/b.png,styles/x.png,64.0,\n"
    _, warnings = _expand(tree, text, overrides={"size": 64, "style_weight": 1000.0})
    assert not [w for w in warnings if "replaced" in w], warnings
    _, warnings = _expand(tree, text, overrides={"size": 32, "style_weight": 1000.0})
    assert [w for w in warnings if "replaced" in w] == ["--size 32 replaced the manifest's size on 2 rows"]


def test_parquet_manifest_with_typed_and_missing_values(tree):
    path = tree / "m.pq"
    pd.DataFrame(
        {
            "content": ["photos/a.png", "photos/b.png"],
            "style": ["styles/y.png", "styles/x.png"],
            "size": [48, None],
            "style_weight": [2.5, None],
        }
    ).to_parquet(path)  # size becomes float64
    first, second = expand_manifest(str(path), str(tree / "out"), storage=LOCAL)[0]
    assert (first.params.size, first.params.style_weight) == (48, 2.5) and first.styles[0].endswith("y.png")
    assert second.params.size == StyleParams().size
    assert read_manifest(str(path), LOCAL).to_dict("records")[1] == {
        "content": "photos/b.png",
        "style": "styles/x.png",
        "size": "",
        "style_weight": "",
    }


def test_duplicates_run_once_and_missing_files_stay_as_pairs(tree):
    text = "content,style\nphotos/a.png,styles/x.png\nphotos,styles/x.png\nphotos/gone.png,styles/x.png\n"
    pairs, warnings = _expand(tree, text)
    assert [(p.row, _names([p.content])[0]) for p in pairs] == [
        (1, "a.png"),
        (2, "b.png"),
        (2, "c.png"),
        (3, "gone.png"),
    ]
    assert pairs[3].content == str(tree / "photos" / "gone.png")
    assert warnings == [f"{tree / 'm.csv'}: row 2 repeats 1 pair(s) of earlier rows; each runs once"]


def test_a_glob_or_folder_matching_nothing_is_a_warning(tree):
    (tree / "empty").mkdir()
    text = "content,style\nphotos/*.jpg,styles\nphotos/a.png,empty\nphotos/a.png,styles/x.png\n"
    pairs, warnings = _expand(tree, text)
    assert len(pairs) == 1 and len(warnings) == 2
    assert "row 1: 'photos/*.jpg' x 'styles' matches no images" in warnings[0]
    assert "row 2: 'photos/a.png' x 'empty' matches no images" in warnings[1]


def test_a_manifest_matching_no_images_at_all_is_an_error_unless_allowed(tree):
    text = "content,style\nphotos/*.jpg,styles\nphotos/a.png,styles/*.gif\n"
    with pytest.raises(ManifestError) as error:
        _expand(tree, text, allow_empty=False)
    message = str(error.value)
    assert "'photos/*.jpg' x 'styles' matches no images" in message and "'styles/*.gif'" in message
    assert "--allow-empty" in message
    assert _expand(tree, text, allow_empty=True)[0] == []


def test_fifos_and_broken_links_in_a_folder_or_glob_are_skipped_with_a_warning(tree):
    import os

    os.mkfifo(tree / "photos" / "pipe.png")
    (tree / "photos" / "loop.png").symlink_to("loop.png")
    for cell in ("photos", "photos/*.png"):
        pairs, warnings = _expand(tree, f"content,style\n{cell},styles/x.png\n")
        assert _names(p.content for p in pairs) == ["a.png", "b.png", "c.png"]
        assert sorted(warnings) == [
            f"{tree / 'photos' / name}: skipped, not a regular file (a FIFO, socket, device, or broken or looping link)"
            for name in ("loop.png", "pipe.png")
        ]


def test_outputs_under_a_content_folder_are_not_stylized_again(tree):
    Image.new("RGB", (8, 6)).save(tree / "photos" / "old-output.png")
    (tree / "photos" / "out").mkdir()
    Image.new("RGB", (8, 6)).save(tree / "photos" / "out" / "a--x--12345678.png")
    pairs, _ = expand_manifest(
        _csv(tree / "m.csv", "content,style\nphotos,styles/x.png\n"), str(tree / "photos" / "out"), storage=LOCAL
    )
    assert _names(p.content for p in pairs) == ["a.png", "b.png", "c.png", "old-output.png"]


def test_output_names_and_ids_are_deterministic_and_follow_the_parameters(tree):
    manifest = _csv(tree / "m.csv", "content,style\nphotos/a.png,styles/x.png\n")
    (one,), _ = expand_manifest(manifest, str(tree / "out"), storage=LOCAL)
    (again,), _ = expand_manifest(manifest, str(tree / "out"), storage=LOCAL)
    (other,), _ = expand_manifest(manifest, str(tree / "out"), overrides={"style_weight": 99.0}, storage=LOCAL)
    (row_cell,), _ = _expand(tree, "content,style,seed\nphotos/a.png,styles/x.png,1\n")
    assert one == again
    assert len({one.pair_id, other.pair_id, row_cell.pair_id}) == 3 and len({one.output, other.output}) == 2
    blob = "\n".join([one.content, *one.styles, one.params.hash()])
    assert one.pair_id == hashlib.sha256(blob.encode()).hexdigest()[:16]
    assert one.output == str(tree / "out" / f"a--x--{one.pair_id[:8]}.png")


def test_output_names_keep_letters_and_spaces_and_mirror_the_photos_folders(tree):
    """Letters of every script stay (as NFC, though the folder is named in NFD, as macOS lists it); only
    characters a file name cannot hold somewhere become _; each album gets its folder under OUT."""
    album = tree / "photos" / "trips" / unicodedata.normalize("NFD", "Été")
    album.mkdir(parents=True)
    for name in ("Été à Paris — café 01", 'a:b*c?"d<e>f|g'):
        Image.new("RGB", (8, 6)).save(album / f"{name}.png")
    for cell in ("photos", "photos/trips/*/*.png", "photos/trips/"):
        pairs, _ = _expand(tree, f"content,style\n{cell},styles/x.png\n")
        named = {p.content.rsplit("/", 1)[1]: p for p in pairs}
        paris, odd = named["Été à Paris — café 01.png"], named['a:b*c?"d<e>f|g.png']
        folder = {"photos": "trips/Été", "photos/trips/*/*.png": "Été", "photos/trips/": "Été"}[cell]
        assert paris.output == str(tree / "out" / folder / f"Été à Paris — café 01--x--{paris.pair_id[:8]}.png")
        assert odd.output == str(tree / "out" / folder / f"a_b_c__d_e_f_g--x--{odd.pair_id[:8]}.png")
        assert paris.former_output == str(tree / "out" / f"_t____Paris___caf__01--x--{paris.pair_id[:8]}.png")
    (plain,), _ = _expand(tree, "content,style\nphotos/a.png,styles/x.png\n")
    assert plain.output.endswith(f"/out/a--x--{plain.pair_id[:8]}.png") and plain.former_output is None


def test_long_names_are_cut_to_fit_a_file_system(tree):
    long = "é" * 200  # 400 bytes of UTF-8: no file system takes a name of 255 or more
    Image.new("RGB", (8, 6)).save(tree / "styles" / f"{long[:120]}.png")
    (pair,), _ = _expand(tree, f"content,style\nphotos/a.png,styles/{long[:120]}.png\n")
    name = _names([pair.output])[0]
    assert name == f"a--{long[:50]}--{pair.pair_id[:8]}.png" and len(name.encode()) < 255


def test_explicit_output_inside_the_root(tree):
    (pair,), _ = _expand(tree, "content,style,output\nphotos/a.png,styles/x.png,nice/./cat.jpg\n")
    assert pair.output == str(tree / "out" / "nice" / "cat.jpg")


def test_two_pairs_cannot_share_an_output(tree):
    text = (
        "content,style,output\nphotos/a.png,styles/x.png,same.png\nphotos/b.png,styles/x.png,same.png\n"
        "photos,styles/y.png,one.png\n"
    )
    with pytest.raises(ManifestError) as caught:
        _expand(tree, text)
    assert str(caught.value).splitlines()[1:] == [  # in row order, though found in different passes
        f"  row 2: output {tree / 'out' / 'same.png'} is also written by row 1",
        "  row 3: output 'one.png' names one file, but the row expands to 3 pairs",
    ]


@pytest.mark.parametrize(
    "output", ["../x.png", "a/../../x.png", "./../x.png", "a\\..\\..\\x.png", "/etc/x.png", "C:/x.png", "s3://b/x.png"]
)
def test_no_output_cell_leads_out_of_the_root(tree, output):
    with pytest.raises(ManifestError, match="must be a relative path inside the output root"):
        _expand(tree, f"content,style,output\nphotos/a.png,styles/x.png,{output}\n")


def test_a_content_cell_through_dot_dot_names_no_folder_outside_the_root(tree):
    """The other cell that names an output: its folders become the output's album. `..` in it is
    resolved before anything is listed, so no album climbs."""
    (tree / "photos" / "trip").mkdir()
    Image.new("RGB", (8, 6)).save(tree / "photos" / "trip" / "d.png")
    pairs, _ = _expand(
        tree, "content,style\nphotos/*/../trip/*.png,styles/x.png\nphotos/trip/../../photos/,styles/x.png\n"
    )
    assert {p.output.removesuffix(f"--x--{p.pair_id[:8]}.png") for p in pairs} == {
        str(tree / "out" / name)
        for name in ("d", "a", "b", "c")  # trip/d.png: the pair of row 1, once
    }


def test_an_output_folder_linked_outside_the_root_is_refused(tree):
    """The confinement follows symbolic links: a folder inside OUT that leads elsewhere is outside."""
    (tree / "out" / "kept").mkdir(parents=True)
    (tree / "elsewhere").mkdir()
    (tree / "out" / "shared").symlink_to(tree / "elsewhere")  # through the output cell
    (tree / "out" / "photos").symlink_to(tree / "elsewhere")  # through an album of a folder cell
    (tree / "out" / "alias").symlink_to(tree / "out" / "kept")  # a link that stays inside: fine
    with pytest.raises(ManifestError) as caught:
        _expand(
            tree,
            "content,style,output\nphotos/a.png,styles/x.png,shared/deep/x.png\n"
            "photos/b.png,styles/x.png,alias/b.png\n.,styles/y.png,\n",
        )
    lines = str(caught.value).splitlines()
    outside = f"is outside the output root: its folder leads to {tree / 'elsewhere'}"
    assert lines[1] == f"  row 1: output {tree / 'out' / 'shared' / 'deep' / 'x.png'} {outside}/deep through a link"
    assert len(lines) == 3 and lines[2].startswith("  row 3: output ") and f"{outside} through a link" in lines[2]
    assert not list((tree / "elsewhere").iterdir())
    (tree / "linked-out").symlink_to(tree / "out")  # the root itself may be a link
    pairs, _ = expand_manifest(
        _csv(tree / "m.csv", "content,style,output\nphotos/a.png,styles/x.png,alias/a.png\n"),
        str(tree / "linked-out"),
        storage=LOCAL,
    )
    assert pairs[0].output == str(tree / "linked-out" / "alias" / "a.png")


def test_every_bad_row_is_reported_at_once(tree):
    text = (
        "content,style,size,style_weight,output\n"
        "photos/a.png,styles/x.png,64,1,\n"  # row 1: fine
        "photos/a.png,styles/x.png,-3,1,\n"  # row 2: negative size
        "photos/a.png,styles/x.png,64,abc,\n"  # row 3: not a number
        ",styles/x.png,64,1,\n"  # row 4: missing content
        "photos/a.png,styles/x.png,64,1,../../etc/x.png\n"  # row 5: escapes the root
        "photos/a.png,styles/x.png,64,1,/etc/x.png\n"  # row 6: absolute
        "photos/a.png,styles/x.png,64,1,out/notes.txt\n"  # row 7: not an image
        "photos/a.png,,1.5,-1,\n"
    )  # row 8: three problems in one row
    with pytest.raises(ManifestError) as caught:
        validate_manifest(_csv(tree / "m.csv", text), storage=LOCAL)
    lines = str(caught.value).splitlines()
    assert lines[0] == f"{tree / 'm.csv'}: 7 bad rows:"
    assert lines[1:] == [
        "  row 2: size must be at least 16 and at most 16384, got -3",
        "  row 3: style_weight must be a number, got 'abc'",
        "  row 4: missing content",
        "  row 5: output '../../etc/x.png' must be a relative path inside the output root",
        "  row 6: output '/etc/x.png' must be a relative path inside the output root",
        "  row 7: output 'out/notes.txt' needs an image extension (.png, .jpg, .jpeg, .webp, .tif, .tiff)",
        "  row 8: missing style; size must be an integer, got '1.5'; "
        "style_weight must be a non-negative number, got -1.0",
    ]
    assert sorted({row for row, _ in caught.value.problems}) == [2, 3, 4, 5, 6, 7, 8]
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    "name, text, expected",
    [
        ("m.csv", "content\nphotos/a.png\n", "manifest: missing required column 'style'"),
        (
            "m.csv",
            "content,style,colour,Size\nphotos/a.png,styles/x.png,red,5\n",
            "manifest: unknown column(s) 'colour', 'Size'; allowed: content, style, output, sweep, size, iterations,",
        ),
        ("m.csv", "content,style\n", "manifest: the manifest has no rows"),
        ("m.csv", "", "manifest: the manifest is empty"),
        ("m.txt", "content,style\nphotos/a.png,styles/x.png\n", "manifest: unknown manifest type"),
        ("m.parquet", "content,style\nphotos/a.png,styles/x.png\n", "manifest: cannot read it as parquet"),
        (
            "m.csv",
            "content,style,init\nphotos/a.png,styles/x.png,sideways\n",
            "row 1: init must be one of noise, content, style",
        ),
    ],
)
def test_file_level_and_value_problems(tree, name, text, expected):
    with pytest.raises(ManifestError, match=re.escape(name)) as caught:
        validate_manifest(_csv(tree / name, text), storage=LOCAL)
    assert expected in str(caught.value)


def test_a_missing_manifest_is_named(tree):
    with pytest.raises(ManifestError, match="nope.csv: cannot use this manifest:\n  manifest: file not found"):
        validate_manifest(str(tree / "nope.csv"), storage=LOCAL)


def test_an_output_for_a_row_that_expands_to_several_pairs_is_rejected(tree):
    with pytest.raises(ManifestError, match="row 1: output 'one.png' names one file, but the row expands to 3 pairs"):
        _expand(tree, "content,style,output\nphotos,styles/x.png,one.png\n")


def test_s3_prefix_glob_and_relative_paths(s3):
    fs, options = s3
    for key in ("in/photos/a.png", "in/photos/sub/b.jpg", "in/photos/readme.md", "shared/x.png", "shared/y.JPG"):
        fs.pipe(f"nst-test/{key}", b"image bytes are not read while expanding")
    fs.pipe("nst-test/in/m.csv", b"content,style\nphotos/,../shared/x.png\nphotos/a.png,s3://nst-test/shared/*\n")
    pairs, warnings = expand_manifest("s3://nst-test/in/m.csv", "s3://nst-test/out/", storage=Storage(options))
    assert [(p.row, p.content, p.styles) for p in pairs] == [
        (1, "s3://nst-test/in/photos/a.png", ("s3://nst-test/shared/x.png",)),
        (1, "s3://nst-test/in/photos/sub/b.jpg", ("s3://nst-test/shared/x.png",)),
        (2, "s3://nst-test/in/photos/a.png", ("s3://nst-test/shared/y.JPG",)),
    ]  # row 2's a x x.png is row 1's pair again
    assert pairs[0].output == f"s3://nst-test/out/a--x--{pairs[0].pair_id[:8]}.png"
    assert warnings == ["s3://nst-test/in/m.csv: row 2 repeats 1 pair(s) of earlier rows; each runs once"]


def test_a_file_named_like_a_pattern_is_that_file(tree):
    """`[` in a name ("IMG [1].png") is the name when that file exists; a glob otherwise."""
    Image.new("RGB", (8, 6)).save(tree / "photos" / "IMG [1].png")
    Image.new("RGB", (8, 6)).save(tree / "photos" / "IMG 1.png")
    pairs, warnings = _expand(
        tree, "content,style\nphotos/IMG [1].png,styles/x.png\nphotos/IMG [12].png,styles/y.png\n"
    )
    assert [(p.row, _names([p.content])[0]) for p in pairs] == [(1, "IMG [1].png"), (2, "IMG 1.png")] and not warnings


def test_an_s3_key_named_like_a_pattern_is_that_key(s3):
    fs, options = s3
    for key in ("in/IMG [1].jpg", "in/IMG 1.jpg", "in/x.png"):
        fs.pipe(f"nst-test/{key}", b"image bytes are not read while expanding")
    fs.pipe("nst-test/in/m.csv", b"content,style\nIMG [1].jpg,x.png\nIMG [12].jpg,x.png\n")
    pairs, warnings = expand_manifest("s3://nst-test/in/m.csv", "s3://nst-test/out", storage=Storage(options))
    assert [p.content for p in pairs] == ["s3://nst-test/in/IMG [1].jpg", "s3://nst-test/in/IMG 1.jpg"] and not warnings


def test_s3_outputs_keep_unicode_names_and_albums(s3):
    fs, options = s3
    for key in ("in/photos/Été/café 01.jpg", "in/photos/Été/Noël/déjà vu.png", "in/photos/top.png", "in/x.png"):
        fs.pipe(f"nst-test/{key}", b"image bytes are not read while expanding")
    fs.pipe("nst-test/in/m.csv", "content,style\nphotos,x.png\n".encode())
    pairs, _ = expand_manifest("s3://nst-test/in/m.csv", "s3://nst-test/out", storage=Storage(options))
    assert [p.output.removesuffix(f"--x--{p.pair_id[:8]}.png") for p in pairs] == [
        "s3://nst-test/out/top",
        "s3://nst-test/out/Été/Noël/déjà vu",
        "s3://nst-test/out/Été/café 01",
    ]


def test_s3_missing_manifest_and_missing_images(s3):
    fs, options = s3
    with pytest.raises(ManifestError, match="s3://nst-test/none.csv: cannot use this manifest"):
        expand_manifest("s3://nst-test/none.csv", "s3://nst-test/out", storage=Storage(options))
    fs.pipe("nst-test/m.csv", b"content,style\nphotos/gone.jpg,styles/\n")
    fs.pipe("nst-test/styles/s.png", b"x")
    (pair,), _ = expand_manifest("s3://nst-test/m.csv", "s3://nst-test/out", storage=Storage(options))
    assert (pair.content, pair.styles) == ("s3://nst-test/photos/gone.jpg", ("s3://nst-test/styles/s.png",))


def test_defaults_are_the_dataclass_defaults(tree):
    (pair,), _ = _expand(tree, "content,style\nphotos/a.png,styles/x.png\n")
    assert pair.params == StyleParams()


def test_a_folder_that_cannot_be_listed_stays_one_path(tree, monkeypatch):
    from fsspec.implementations.local import LocalFileSystem

    def denied(self, path, **kwargs):
        raise PermissionError(path)

    monkeypatch.setattr(LocalFileSystem, "find", denied)  # listing denied: its pair fails later, with this reason
    (pair,), warnings = _expand(tree, "content,style\nphotos,styles/x.png\n")
    assert pair.content == str(tree / "photos") and not warnings


def test_the_readme_parameter_table_is_the_generated_one():
    from nst_core.params import as_text, parameter_table

    assert parameter_table() in (SAMPLES.parent / "README.md").read_text(), (
        "manifests/README.md's parameter table is out of date: `python -m nst_core.markdown` rewrites it"
    )
    for spec in StyleParams.specs():  # a default as the table writes it reads back as that default
        if spec.default not in (None, ()):
            assert StyleParams.parse(spec.name, str(as_text(spec.default))) == spec.default


def test_the_example_manifest_is_small_and_expands_as_its_readme_says(tmp_path):
    pairs, warnings = expand_manifest(str(SAMPLES.parent / "example.csv"), str(tmp_path), storage=LOCAL)
    assert not warnings and [(_names([p.content])[0], tuple(_names(p.styles))) for p in pairs] == [
        ("chelsea.jpg", ("starry_night.jpg",)),
        ("chelsea.jpg", ("the_scream.jpg",)),
        ("coffee.jpg", ("the_scream.jpg",)),
        ("rocket.jpg", ("shipwreck.jpg", "starry_night.jpg")),
    ]
    assert {(p.params.size, p.params.iterations) for p in pairs} == {(128, 100)}
    assert pairs[3].params.style_blend == (0.6, 0.4)


def test_every_numeric_cell_at_its_extremes_is_refused_with_its_row_or_stored(tree):
    """The ends of each field's range run and go into the results table as they were typed; past them
    (2^63, 1e20, inf, nan, 1e400) each row is refused, naming the field, before anything runs."""
    from flows.results import params_columns, read_results, write_rows

    fields = numeric_fields()
    cases = [
        (spec.name, text, ok) for spec in fields for ok, texts in zip((True, False), extremes(spec)) for text in texts
    ]
    header = "content,style," + ",".join(spec.name for spec in fields)
    lines = [
        "photos/a.png,styles/x.png," + ",".join(text if spec.name == name else "" for spec in fields)
        for name, text, _ in cases
    ]
    with pytest.raises(ManifestError) as caught:
        validate_manifest(_csv(tree / "m.csv", "\n".join([header, *lines])), storage=LOCAL)
    refused = dict(caught.value.problems)
    assert sorted(refused) == [row for row, (_, _, ok) in enumerate(cases, start=1) if not ok]
    for row, reason in refused.items():
        assert reason.startswith(f"{cases[row - 1][0]} must be "), (cases[row - 1], reason)

    taken = [case for case in cases if case[2]]
    kept = [line for line, case in zip(lines, cases) if case[2]]
    rows = validate_manifest(_csv(tree / "ok.csv", "\n".join([header, *kept])), storage=LOCAL)
    write_rows(
        str(tree / "results"),
        [{"run_id": "r", "pair_id": str(row), **params_columns(params)} for row, _, params, _ in rows],
        storage=LOCAL,
    )
    stored = read_results(str(tree / "results"), storage=LOCAL).set_index("pair_id")
    for (row, _, params, _), (name, text, _) in zip(rows, taken):
        assert stored.loc[str(row), name] == getattr(params, name) == float(text), (name, text)


def test_a_row_with_more_cells_than_the_header_is_refused_naming_it(tree):
    """Never shifted onto other columns (a pair on the wrong photo) nor cut short."""
    for text, rows in (
        ("content,style\nphotos/a.png,styles/x.png,styles/y.png\n", [1]),  # every row: pandas shifted them
        ("content,style\nphotos/a.png,styles/x.png\nphotos/b.png,styles/x.png,64\nphotos/c.png,x,y\n", [2, 3]),
    ):
        with pytest.raises(ManifestError) as caught:
            validate_manifest(_csv(tree / "m.csv", text), storage=LOCAL)
        assert caught.value.problems == [
            (row, "3 cells for the header's 2 columns (content, style); a cell holding a comma needs quotes")
            for row in rows
        ]


def test_a_trailing_comma_is_no_cell(tree):
    for text in ("content,style\nphotos/a.png,styles/x.png,\n", "content,style,\nphotos/a.png,styles/x.png, \n"):
        (pair,), warnings = _expand(tree, text)
        assert _names([pair.content, *pair.styles]) == ["a.png", "x.png"] and not warnings
    with pytest.raises(ManifestError, match="column\\(s\\) 'size' given more than once"):
        validate_manifest(_csv(tree / "m.csv", "content,style,size,size\na,b,1,2\n"), storage=LOCAL)


def test_a_bad_cell_a_flag_replaces_is_reported_with_its_row(tree):
    """The flag's value runs (the command line is what the user typed last), and the run says which
    cells were wrong: without the flag, the manifest would fail on them."""
    text = (
        "content,style,size,iterations\n"
        "photos/a.png,styles/x.png,-3,not-a-number\n"
        "photos/b.png,styles/x.png,64,1e400\n"
        "photos/c.png,styles/x.png,,3\n"
    )
    pairs, warnings = _expand(tree, text, overrides={"size": 96, "iterations": 7})
    assert {(p.params.size, p.params.iterations) for p in pairs} == {(96, 7)}
    manifest = tree / "m.csv"
    assert warnings == [
        "--size 96 replaced the manifest's size on 2 rows",
        f"{manifest}: row 1: size must be at least 16 and at most 16384, got -3; --size 96 is used instead",
        "--iterations 7 replaced the manifest's iterations on 3 rows",
        f"{manifest}: row 1: iterations must be an integer, got 'not-a-number'; --iterations 7 is used instead",
        f"{manifest}: row 2: iterations must be an integer, got '1e400'; --iterations 7 is used instead",
    ]
