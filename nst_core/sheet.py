"""Contact sheets: every photo in every style, made by the fast network, in one picture.

Photos run down the left, styles across the top; an input that could not be read
or stylized is a marked cell with its reason, and the rest of the sheet is drawn.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import numpy as np
from PIL import Image

from .grid import GridOptions, draw_grid
from .params import SHEET_PARAMS, StyleParams
from .stylize import fast_preview

Input = tuple[str, Union[np.ndarray, str]]  # (label, the image or the reason it could not be read)


def _cell(content, style, params: StyleParams):
    if isinstance(content, str) or isinstance(style, str):
        return "input not readable"
    try:
        return fast_preview(content, [style], params)
    except ValueError as error:  # an image the network refuses: this cell only
        return str(error)


def contact_sheet(
    contents: Sequence[Input],
    styles: Sequence[Input],
    params: StyleParams = SHEET_PARAMS,
    options: GridOptions = GridOptions(),
    on_cell: Optional[Callable[[], None]] = None,
) -> Image.Image:
    """The sheet as an RGB image; `params` (method aside) decide size, strength and colours."""
    rows = []
    for _, content in contents:
        row = []
        for _, style in styles:
            row.append(_cell(content, style, params))
            if on_cell:
                on_cell()
        rows.append(row)
    return draw_grid(
        rows,
        row_labels=[label for label, _ in contents],
        col_labels=[label for label, _ in styles],
        row_headers=[image for _, image in contents],
        col_headers=[image for _, image in styles],
        options=options,
    )
