"""nst_core.grid: geometry, headers, labels and failed cells, checked on the pixels."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import SAMPLES
from nst_core.grid import EMPTY_INK, FAILED_FILL, FAILED_INK, GridOptions, draw_grid
from nst_core.image_io import load_image
from nst_core.storage import LOCAL

OPTIONS = GridOptions(cell=64, padding=6, font_size=12)


def _pixels(image: Image.Image, box) -> np.ndarray:
    return np.asarray(image.crop(box), dtype=np.float32) / 255.0


def _letterboxed(source: np.ndarray, cell: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The source resized to fit a cell, and its offset inside the cell, computed independently."""
    height, width = source.shape[:2]
    scale = cell / max(height, width)
    size = (round(width * scale), round(height * scale))
    resized = Image.fromarray((source * 255 + 0.5).astype(np.uint8)).resize(size, Image.Resampling.LANCZOS)
    return np.asarray(resized, np.float32) / 255.0, ((cell - size[0]) // 2, (cell - size[1]) // 2)


@pytest.fixture(scope="module")
def sources():
    contents = [load_image(str(SAMPLES / "content" / f"{n}.jpg"), LOCAL, max_side=80) for n in ("chelsea", "rocket")]
    styles = [
        load_image(str(SAMPLES / "styles" / f"{n}.jpg"), LOCAL, max_side=80)
        for n in ("starry_night", "the_scream", "shipwreck")
    ]
    return contents, styles


def _grid(sources, failed_reason="failed: chelsea.jpg: file not found"):
    contents, styles = sources
    cells = [
        [np.flipud(styles[c]) * (0.5 + 0.25 * r) if (r, c) != (0, 1) else failed_reason for c in range(3)]
        for r in range(2)
    ]  # stand-in outputs: each cell a different picture
    return draw_grid(
        cells,
        row_labels=["chelsea", "rocket"],
        col_labels=["starry_night", "the_scream", "shipwreck"],
        row_headers=contents,
        col_headers=styles,
        options=OPTIONS,
    ), cells


def _origin(row: int, col: int, headers: bool = True) -> tuple[int, int]:
    """Top-left of cell (row, col), from the documented layout: edge padding, label band, header slot."""
    step = OPTIONS.cell + OPTIONS.padding
    label_width = max(96, OPTIONS.cell // 2)
    label_height = 2 * int(np.ceil(OPTIONS.font_size * 1.3))
    x = OPTIONS.padding + label_width + OPTIONS.padding + (col + headers) * step
    y = OPTIONS.padding + label_height + OPTIONS.padding + (row + headers) * step
    return x, y


def test_size_follows_rows_columns_cell_and_padding(sources):
    grid, _ = _grid(sources)
    step = OPTIONS.cell + OPTIONS.padding
    assert grid.size == (6 + 96 + 6 + 4 * step, 6 + 32 + 6 + 3 * step)  # 3 styles + header, 2 contents + header
    bare = draw_grid([["x"] * 5] * 4, row_labels=list("abcd"), col_labels=list("abcde"), options=OPTIONS)
    assert bare.size == (6 + 96 + 6 + 5 * step, 6 + 32 + 6 + 4 * step)  # no header slots


def test_header_and_output_cells_hold_their_images_letterboxed(sources):
    contents, styles = sources
    grid, cells = _grid(sources)
    checks = [((-1, 2), styles[2]), ((1, -1), contents[1]), ((1, 2), cells[1][2])]
    for (row, col), source in checks:
        expected, (dx, dy) = _letterboxed(source, OPTIONS.cell)
        x, y = _origin(row, col)
        found = _pixels(grid, (x + dx, y + dy, x + dx + expected.shape[1], y + dy + expected.shape[0]))
        assert np.abs(found - expected).mean() < 0.01, (row, col)
        if dy:  # a landscape picture: the letterbox above it is background
            assert (_pixels(grid, (x, y, x + OPTIONS.cell, y + dy)) == 1.0).all()
    other, _ = _letterboxed(styles[0], OPTIONS.cell)
    x, y = _origin(-1, 2)
    wrong = _pixels(grid, (x, y, x + other.shape[1], y + other.shape[0]))
    assert np.abs(wrong - other).mean() > 0.05  # the check above can tell images apart


def test_a_failed_cell_is_a_marked_empty_cell_with_its_reason(sources):
    grid, _ = _grid(sources)
    x, y = _origin(0, 1)
    cell = np.asarray(grid.crop((x, y, x + OPTIONS.cell, y + OPTIONS.cell)))
    assert tuple(cell[0, 0]) == FAILED_INK and tuple(cell[-1, -1]) == FAILED_INK  # red border
    fill = (cell == FAILED_FILL).all(axis=-1).mean()
    ink = (np.abs(cell.astype(int) - FAILED_INK).sum(axis=-1) < 60).mean()
    assert fill > 0.6 and ink > 0.08  # mostly pale red, with border and reason text
    quiet = draw_grid([[""]], row_labels=["a"], col_labels=["b"], options=OPTIONS)
    qx, qy = _origin(0, 0, headers=False)
    blank = np.asarray(quiet.crop((qx, qy, qx + OPTIONS.cell, qy + OPTIONS.cell)))
    assert (blank[8:-8, 8:-8] == FAILED_FILL).all()  # no reason, no text: the ink above was the reason


def test_a_cell_nothing_was_asked_for_is_quiet_not_failed():
    grid = draw_grid([[None, "failed: x"]], row_labels=["a"], col_labels=["b", "c"], options=OPTIONS)
    cells = [
        np.asarray(grid.crop((x, y, x + OPTIONS.cell, y + OPTIONS.cell)))
        for x, y in (_origin(0, c, headers=False) for c in (0, 1))
    ]
    assert (cells[0][1:-1, 1:-1] == 255).all()  # the background inside: no fill, no text
    assert tuple(cells[0][0, 0]) == EMPTY_INK and tuple(cells[1][0, 0]) == FAILED_INK


def test_labels_are_drawn_in_their_bands_and_wrapped(sources):
    grid, _ = _grid(sources)
    x, y = _origin(1, -1)
    row_label = np.asarray(grid.crop((OPTIONS.padding, y, OPTIONS.padding + 96, y + OPTIONS.cell)).convert("L"))
    assert (row_label < 128).mean() > 0.01  # "rocket" is written left of its row
    x, y = _origin(-1, 1)
    col_label = np.asarray(grid.crop((x, OPTIONS.padding, x + OPTIONS.cell, y - OPTIONS.padding)).convert("L"))
    assert (col_label < 128).mean() > 0.01
    unlabelled = draw_grid([[np.zeros((8, 8, 3))]], row_labels=[""], col_labels=[""], options=OPTIONS)
    x, y = _origin(0, 0, headers=False)
    assert (np.asarray(unlabelled.crop((0, 0, x, y)).convert("L")) == 255).all()  # no label, no ink
    long = draw_grid(
        [[np.zeros((8, 8, 3))]],
        row_labels=["x"],
        col_labels=["block4_conv2|block2_conv2,block4_conv2"],
        options=OPTIONS,
    )
    line = int(np.ceil(OPTIONS.font_size * 1.3))
    first, second = (
        np.asarray(
            long.crop((x, OPTIONS.padding + i * line, x + OPTIONS.cell, OPTIONS.padding + (i + 1) * line)).convert("L")
        )
        for i in (0, 1)
    )
    assert (first < 128).any() and (second < 128).any()  # too wide for one line: wrapped onto two


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="row 0 has 1 cells for 2 column labels"):
        draw_grid([["x"]], row_labels=["a"], col_labels=["b", "c"])
    with pytest.raises(ValueError, match="1 column headers for 2 columns"):
        draw_grid([["x", "y"]], row_labels=["a"], col_labels=["b", "c"], col_headers=["h"])
