"""Comparison grids: thumbnails in rows and columns, labelled, with the source images as headers.

Pure image composition (Pillow and NumPy): the caller decides what goes in each
cell and where the picture is written. Layout, left to right and top to bottom:

    [     ] [      ] [col label] [col label] ...
    [     ] [      ] [col head ] [col head ] ...   (only with col_headers)
    [label] [ head ] [  cell   ] [  cell   ] ...   (head only with row_headers)

Every slot is `cell` pixels square with `padding` between slots and at the
edges; the row-label band is `label_width` wide and the column-label band holds
LABEL_LINES lines of text (see `grid_size`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .image_io import resized_picture, to_uint8

Cell = Union[np.ndarray, Image.Image, str, None]  # an image, the reason there is none, or None: nothing asked

LABEL_LINES = 2  # lines of text above each column: room for "style_weight=1000" or a wrapped file name
LINE_SPACING = 1.3  # line height as a multiple of the font size
FAILED_FILL = (246, 226, 226)  # pale red: clearly not a picture
FAILED_INK = (160, 20, 20)  # border and reason text of a failed cell
EMPTY_INK = (225, 225, 225)  # faint outline of a cell nothing was asked for: quiet, unlike a failure


@dataclass(frozen=True)
class GridOptions:
    """How a grid looks; the defaults read well on screen and in a report."""

    cell: int = 256  # longest side of every thumbnail (cells are square, thumbnails letterboxed)
    padding: int = 8  # pixels between cells and at the edges
    font_size: int = 16  # label text height in pixels
    background: tuple[int, int, int] = (255, 255, 255)  # also the letterbox colour
    label_width: int | None = None  # row-label band; None: half a cell, at least 96 px

    def __post_init__(self) -> None:
        if self.cell < 8 or self.padding < 0 or self.font_size < 4:
            raise ValueError(f"grid options out of range: cell >= 8, padding >= 0, font_size >= 4 ({self})")

    @property
    def row_label_width(self) -> int:
        return self.label_width if self.label_width is not None else max(96, self.cell // 2)

    @property
    def line_height(self) -> int:
        return math.ceil(self.font_size * LINE_SPACING)

    @property
    def col_label_height(self) -> int:
        return LABEL_LINES * self.line_height


def grid_size(
    rows: int, cols: int, *, row_headers: bool, col_headers: bool, options: GridOptions = GridOptions()
) -> tuple[int, int]:
    """(width, height) in pixels of a grid with this many rows and columns of cells."""
    step = options.cell + options.padding
    width = options.padding + options.row_label_width + options.padding + (cols + row_headers) * step
    height = options.padding + options.col_label_height + options.padding + (rows + col_headers) * step
    return width, height


def cell_origin(
    row: int, col: int, *, row_headers: bool, col_headers: bool, options: GridOptions = GridOptions()
) -> tuple[int, int]:
    """(x, y) of the top-left corner of output cell (row, col); -1 addresses a header slot."""
    step = options.cell + options.padding
    x = 2 * options.padding + options.row_label_width + (col + row_headers) * step
    y = 2 * options.padding + options.col_label_height + (row + col_headers) * step
    return x, y


def draw_grid(
    cells: Sequence[Sequence[Cell]],
    *,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    row_headers: Sequence[Cell] | None = None,
    col_headers: Sequence[Cell] | None = None,
    options: GridOptions = GridOptions(),
) -> Image.Image:
    """The grid as an RGB image.

    `cells[r][c]` is an (H, W, 3) float array in [0, 1], a PIL image, or a string: the
    reason the cell has no image, drawn as a marked empty cell, or None: no pair was asked for
    there (a manifest need not fill every combination), drawn as a faint outline only. `row_headers[r]` and
    `col_headers[c]` (the content and style images, say) take the same kinds of values.
    """
    _check_shape(cells, row_labels, col_labels, row_headers, col_headers)
    has_rows, has_cols = row_headers is not None, col_headers is not None
    canvas = Image.new(
        "RGB",
        grid_size(len(row_labels), len(col_labels), row_headers=has_rows, col_headers=has_cols, options=options),
        options.background,
    )
    draw = ImageDraw.Draw(canvas)
    font = label_font(options.font_size)
    ink = _text_colour(options.background)

    def origin(row: int, col: int) -> tuple[int, int]:
        return cell_origin(row, col, row_headers=has_rows, col_headers=has_cols, options=options)

    for c, label in enumerate(col_labels):
        x, _ = origin(0, c)
        box = (x, options.padding, x + options.cell, options.padding + options.col_label_height)
        _draw_text(draw, label, box, font, options.line_height, ink, valign="bottom")
    for r, label in enumerate(row_labels):
        _, y = origin(r, 0)
        box = (options.padding, y, options.padding + options.row_label_width, y + options.cell)
        _draw_text(draw, label, box, font, options.line_height, ink, valign="middle")
    for c, header in enumerate(col_headers or []):
        _paste_cell(canvas, draw, header, origin(-1, c), options, font)
    for r, header in enumerate(row_headers or []):
        _paste_cell(canvas, draw, header, origin(r, -1), options, font)
    for r, row in enumerate(cells):
        for c, cell in enumerate(row):
            _paste_cell(canvas, draw, cell, origin(r, c), options, font)
    return canvas


def _check_shape(cells, row_labels, col_labels, row_headers, col_headers) -> None:
    if len(cells) != len(row_labels):
        raise ValueError(f"{len(cells)} rows of cells for {len(row_labels)} row labels")
    for r, row in enumerate(cells):
        if len(row) != len(col_labels):
            raise ValueError(f"row {r} has {len(row)} cells for {len(col_labels)} column labels")
    if row_headers is not None and len(row_headers) != len(row_labels):
        raise ValueError(f"{len(row_headers)} row headers for {len(row_labels)} rows")
    if col_headers is not None and len(col_headers) != len(col_labels):
        raise ValueError(f"{len(col_headers)} column headers for {len(col_labels)} columns")


def label_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """A scalable TrueType font: DejaVu Sans where installed, else the one Pillow bundles."""
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 scales its bundled font


def _text_colour(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Dark text on a light background, light text on a dark one."""
    luminance = 0.299 * background[0] + 0.587 * background[1] + 0.114 * background[2]
    return (30, 30, 30) if luminance > 128 else (235, 235, 235)


def to_pil(image: np.ndarray | Image.Image) -> Image.Image:
    """An RGB PIL image from a float [0, 1] (H, W, 3) array or any PIL image."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {array.shape}")
    return Image.fromarray(to_uint8(array), "RGB")


def thumbnail(image: np.ndarray | Image.Image, side: int) -> Image.Image:
    """The image with its longest side exactly `side` pixels, aspect kept."""
    return resized_picture(to_pil(image), side)


def _paste_cell(canvas, draw, cell: Cell, origin: tuple[int, int], options: GridOptions, font) -> None:
    x, y = origin
    if cell is None:
        draw.rectangle((x, y, x + options.cell - 1, y + options.cell - 1), outline=EMPTY_INK, width=1)
        return
    if isinstance(cell, str):
        _draw_failed(draw, cell, (x, y, x + options.cell, y + options.cell), font, options)
        return
    picture = thumbnail(cell, options.cell)
    canvas.paste(picture, (x + (options.cell - picture.width) // 2, y + (options.cell - picture.height) // 2))


def _draw_failed(draw, reason: str, box, font, options: GridOptions) -> None:
    """A pale red square with a red border and the reason written inside."""
    border = max(2, options.cell // 64)
    draw.rectangle(box, fill=FAILED_FILL, outline=FAILED_INK, width=border)
    inset = border + max(4, options.cell // 32)
    inner = (box[0] + inset, box[1] + inset, box[2] - inset, box[3] - inset)
    _draw_text(draw, reason, inner, font, options.line_height, FAILED_INK)


def _draw_text(draw, text: str, box, font, line_height: int, ink, valign: str = "top") -> None:
    """`text` wrapped to the box's width, as many lines as fit (the last one cut with '...')."""
    left, top, right, bottom = box
    width = right - left
    lines = wrap_text(text, font, width)
    fit = max(1, (bottom - top) // line_height)
    if len(lines) > fit:
        lines = lines[: fit - 1] + [_ellipsized(" ".join(lines[fit - 1 :]), font, width)]
    spare = (bottom - top) - len(lines) * line_height
    top += {"top": 0, "middle": spare // 2, "bottom": spare}[valign]  # column labels sit just above their column
    for index, line in enumerate(lines):
        draw.text((left, top + index * line_height), line, font=font, fill=ink)


_BREAK_AFTER = re.compile(r"(?<=[\s,|/_\-=+])")  # places a file name or parameter list may break


def wrap_text(text: str, font, width: int) -> list[str]:
    """Greedy line breaking at spaces and after , | / _ - = + ; words wider than a line are cut."""
    lines, line = [], ""
    for token in _BREAK_AFTER.split(" ".join(str(text).split())):
        if _width(font, line + token) <= width:
            line += token
            continue
        if line:
            lines.append(line.rstrip())
        line = ""
        for char in token:  # a token that alone is wider than the line
            if line and _width(font, line + char) > width:
                lines.append(line)
                line = ""
            line += char
    if line.strip():
        lines.append(line.rstrip())
    return lines or [""]


def _ellipsized(text: str, font, width: int) -> str:
    while text and _width(font, text + "...") > width:
        text = text[:-1]
    return text + "..."


def _width(font, text: str) -> float:
    return font.getlength(text)
