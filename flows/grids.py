"""Comparison grids from a results table: any two columns as the axes, outputs in the cells.

Which rows: `run=None` means the latest run (the one that finished last); a pair it
skipped shows the earlier success it repeats. `run="all"` means every pair in the
table, each at its latest succeeded or failed row. Any other value is one run id.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from PIL import Image

from nst_core.errors import ImageError
from nst_core.grid import Cell, GridOptions, cell_origin, draw_grid, thumbnail, to_pil
from nst_core.image_io import encode_picture, load_image
from nst_core.params import StyleParams
from nst_core.storage import Storage

from .manifest import display_name
from .results import DECISIVE, params_columns, read_results
from .runs import RUNS, pairs_of, read_runs
from .sweeps import parse_sweep

IMAGE_AXES = {"content": "content_uri", "style": "style_uri"}  # axes whose values are images (headers)
LARGE_GRID_PIXELS = 16_000_000  # above this a PNG grid runs to tens of MB; JPEG is the better choice


def run_pairs(results: str, run: str | None, storage: Storage) -> tuple[pd.DataFrame, str]:
    """select_pairs of the results table and its run table."""
    return select_pairs(read_results(results, storage=storage), run, read_runs(results, storage))


def select_pairs(
    table: pd.DataFrame, run: str | None = None, runs: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, str]:
    """(one row per pair, in manifest order; the run id shown, or "all"). `runs`, the run table, says
    which pairs each run skipped; tables written before it have a `skipped` row per pair instead."""
    runs = runs if runs is not None else RUNS.schema.empty_table().to_pandas()
    if table.empty:
        raise ValueError("the results table has no rows yet")
    if run == "all":
        return _in_order(_latest_per_pair(table)), "all"
    ended = pd.concat([table[["run_id", "finished_at"]], runs[["run_id", "finished_at"]]])
    run = run or ended.sort_values("finished_at")["run_id"].iloc[-1]
    if run not in set(ended["run_id"]):
        known = ", ".join(sorted(set(ended["run_id"]))[-5:])
        raise ValueError(f"no run {run!r} in the results table (latest runs: {known}; or 'all')")
    in_run = _latest_per_pair(table[table["run_id"] == run])
    skipped = in_run["status"] == "skipped"
    repeats = (pairs_of(runs, run) - set(in_run.loc[~skipped, "pair_id"])) | set(in_run.loc[skipped, "pair_id"])
    earlier = _latest_per_pair(table[table["pair_id"].isin(repeats) & table["status"].isin(DECISIVE)])
    repeated = in_run[skipped & ~in_run["pair_id"].isin(earlier["pair_id"])]  # no earlier row left: keep as is
    return _in_order(pd.concat([in_run[~skipped], earlier, repeated])), run


def _latest_per_pair(rows: pd.DataFrame) -> pd.DataFrame:
    """Each pair's latest decisive row, or its latest row when it has none."""
    rank = rows["status"].isin(DECISIVE).astype(int)
    return (
        rows.assign(_rank=rank).sort_values(["_rank", "finished_at"]).groupby("pair_id").tail(1).drop(columns="_rank")
    )


def _in_order(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.sort_values(["row", "started_at"], kind="stable").reset_index(drop=True)


# ---- axes ---------------------------------------------------------------------------------------


def axis_column(name: str, table: pd.DataFrame) -> str:
    """The table column an axis name means: content, style, or any column (a parameter, say)."""
    column = IMAGE_AXES.get(name, name)
    if column not in table.columns:
        raise ValueError(
            f"cannot lay out {name!r}: use content, style or a column such as "
            f"{', '.join(StyleParams.field_names()[:8])}, ..."
        )
    return column


def axis_label(name: str, value) -> str:
    """Images by their own names, without extension (' + ' between blended styles), NAME=VALUE for parameters."""
    if name in IMAGE_AXES:
        return " + ".join(display_name(part) for part in str(value).split(" + "))
    return f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}"


def axis_values(pairs: pd.DataFrame, name: str) -> list:
    """The axis' distinct values in display order.

    Images in manifest order; a swept parameter in the order its sweep gave; other
    values sorted (numbers by value).
    """
    column = axis_column(name, pairs)
    values = list(dict.fromkeys(pairs[column]))
    if name in IMAGE_AXES:
        first_row = pairs.groupby(column)["row"].min()
        return sorted(values, key=lambda v: (first_row[v], str(v)))
    order = _sweep_order(name, pairs["sweep"].dropna().unique())
    return sorted(values, key=lambda v: (order.get(_cell_text(name, v), len(order)), _sort_key(v)))


def _sweep_order(name: str, sweeps) -> dict[str, int]:
    """Position of each value in the sweeps that name this parameter, as table text."""
    order: dict[str, int] = {}
    for text in sweeps:
        for swept, values in parse_sweep(text):
            if swept == name:
                for value in values:
                    order.setdefault(_cell_text(name, value), len(order))
    return order


def _cell_text(name: str, value) -> str:
    """A value as the results table stores it, as text: tuples as "a,b", numbers as floats or ints."""
    if name in StyleParams.field_names():
        try:
            value = params_columns(StyleParams().replace(**{name: _typed(name, value)}))[name]
        except ValueError:  # valid only beside other non-default fields (scales above the default size, say)
            pass
    return str(value)


def _typed(name: str, value):
    return StyleParams.parse(name, value) if isinstance(value, str) else value


def _sort_key(value):
    return (0, float(value), "") if isinstance(value, (int, float, np.number)) else (1, 0.0, str(value))


# ---- grid ---------------------------------------------------------------------------------------


@dataclass
class Grid:
    image: Image.Image
    notes: list[str] = field(default_factory=list)  # what the picture does not show
    # Where each pair's cell lies in the image, (left, top, right, bottom) in pixels: the report
    # lays clickable areas over the picture with them.
    areas: list[tuple[tuple[int, int, int, int], dict]] = field(default_factory=list)


def build_grid(
    pairs: pd.DataFrame,
    rows: str = "content",
    cols: str = "style",
    *,
    options: GridOptions = GridOptions(),
    storage: Storage,
    max_rows: int | None = None,
    load=None,
) -> Grid:
    """The grid of output thumbnails: one row per value of `rows`, one column per value of `cols`.

    A failed pair's cell says why; a cell no pair was asked for stays quiet (a faint outline).
    Image axes get their source images as headers. `load` (a `thumbnail_loader`) may be shared
    with the caller, so an image read for the grid is not read again.
    """
    row_values, col_values = axis_values(pairs, rows), axis_values(pairs, cols)
    notes = []
    if max_rows is not None and len(row_values) > max_rows:
        notes.append(f"first {max_rows} of {len(row_values)} rows shown")
        row_values = row_values[:max_rows]
    by_cell, hidden = _cells(pairs, axis_column(rows, pairs), axis_column(cols, pairs))
    if hidden:
        notes.append(
            f"{hidden} pair(s) share a cell with a later one (they differ in another parameter); "
            f"lay that parameter out on an axis to see them"
        )
    load = load or thumbnail_loader(options.cell, storage)
    cells = [[_cell(by_cell.get((r, c)), load) for c in col_values] for r in row_values]
    headers = (rows in IMAGE_AXES, cols in IMAGE_AXES)
    image = draw_grid(
        cells,
        row_labels=[axis_label(rows, v) for v in row_values],
        col_labels=[axis_label(cols, v) for v in col_values],
        row_headers=[load(v) for v in row_values] if headers[0] else None,
        col_headers=[load(v) for v in col_values] if headers[1] else None,
        options=options,
    )
    areas = []
    for r, row_value in enumerate(row_values):
        for c, col_value in enumerate(col_values):
            if (row_value, col_value) in by_cell:
                x, y = cell_origin(r, c, row_headers=headers[0], col_headers=headers[1], options=options)
                areas.append(((x, y, x + options.cell, y + options.cell), by_cell[(row_value, col_value)]))
    return Grid(image, notes, areas)


def _cells(pairs: pd.DataFrame, row_column: str, col_column: str) -> tuple[dict, int]:
    """{(row value, col value): the cell's pair}, the latest winning; and how many were hidden."""
    by_cell = {}
    for pair in pairs.sort_values("finished_at").to_dict("records"):
        by_cell[(pair[row_column], pair[col_column])] = pair
    return by_cell, len(pairs) - len(by_cell)


def thumbnail_loader(side: int, storage: Storage):
    """load(uri) -> a thumbnail of the image (blended styles side by side), or why it cannot be shown."""
    cache: dict[str, Cell] = {}

    def load(uri: str) -> Cell:
        if uri not in cache:
            try:
                parts = [load_image(p, storage, max_side=side) for p in uri.split(" + ")]
                cache[uri] = parts[0] if len(parts) == 1 else _side_by_side(parts)
            except ImageError as error:
                cache[uri] = str(error)
        return cache[uri]

    return load


def _side_by_side(images: list[np.ndarray]) -> np.ndarray:
    height = min(image.shape[0] for image in images)
    widths = [max(1, round(i.shape[1] * height / i.shape[0])) for i in images]
    return np.concatenate(
        [np.asarray(to_pil(i).resize((w, height)), np.float32) / 255.0 for i, w in zip(images, widths)], axis=1
    )


def _cell(pair: dict | None, load) -> Cell:
    if pair is None:  # nothing was asked for here: not a failure
        return None
    if pair["status"] == "failed":
        return f"failed: {pair['error']}"
    return load(pair["output_uri"])


def write_picture(picture: Image.Image, uri: str, storage: Storage, quality: int = 90) -> None:
    """PNG, JPEG or WebP by extension, local or S3, written atomically."""
    storage.write_atomic(uri, encode_picture(picture, uri, quality=quality))


def grid_from_results(
    results: str,
    output: str,
    *,
    rows: str = "content",
    cols: str = "style",
    run: str | None = None,
    options: GridOptions = GridOptions(),
    storage: Storage,
) -> Grid:
    """`nst grid`: read the table, draw the grid, write it to `output`."""
    pairs, _ = run_pairs(results, run, storage)
    grid = build_grid(pairs, rows, cols, options=options, storage=storage)
    if output.lower().endswith(".png") and grid.image.width * grid.image.height > LARGE_GRID_PIXELS:
        grid.notes.append("a grid this large is several times smaller as .jpg")
    write_picture(grid.image, output, storage)
    return grid


def data_uri(picture: Image.Image, max_side: int, *, kind: str = "jpeg") -> str:
    """A downscaled copy of the picture as a data: URI, for a page or a markdown artifact."""
    if max(picture.size) > max_side:
        picture = thumbnail(picture, max_side)
    return f"data:image/{kind};base64," + base64.b64encode(encode_picture(picture, f"x.{kind}", quality=80)).decode()
