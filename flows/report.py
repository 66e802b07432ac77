"""Loss curves and a one-page HTML report of a run, from its results table.

The page stands alone: the grid and the curves are embedded as data: URIs (downscaled,
so a large run stays a few MB at most), the outputs are linked (relatively when the
page and the outputs are both on local disk). All text from the table is escaped.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import posixpath
import urllib.parse
from dataclasses import dataclass, field

import pandas as pd
from matplotlib.figure import Figure
from PIL import Image
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from nst_core.grid import GridOptions, to_pil
from nst_core.params import StyleParams
from nst_core.storage import Storage, absolute, join_uri

from .grids import axis_label, build_grid, data_uri, run_pairs, thumbnail_loader, write_picture
from .results import params_columns
from .sweeps import parse_sweep

MAX_CURVES = 60  # loss-curve plots on one page: each is ~15 KB
MAX_GRIDS = 12  # grids of a sweep (one per style, or per content x style)
MAX_GRID_ROWS = 60  # grid rows on the page; the full grid is `nst grid`'s job
GRID_SIDE = 1600  # longest side of the embedded grid, in pixels
REPORT_CELL = 128  # grid cell size on the page
# Grid labels are drawn into the picture: a fifth of a cell's side high at most (20 px at 128 px cells), so
# that a grid of three columns, shrunk to a 400 px phone, still shows them at MIN_LABEL_PX or more.
REPORT_FONT = REPORT_CELL * 5 // 32
MIN_LABEL_PX = 11  # a wider grid shrinks no further than this and scrolls in its own box (the page never does)


CURVES = (
    ("loss_history", "total (weighted)", "log"),
    ("style_loss_history", "style", "log"),
    # Linear: the content loss starts at 0 (init=content) and stays within a decade, so on a log
    # axis shared with the others it was a flat line spread over five decades near zero.
    ("content_loss_history", "content", "linear"),
)


def loss_curves_figure(pair: dict) -> Figure:
    """Total, style and content loss against the step, each on its own axis (one scale each)."""
    figure = Figure(figsize=(4.2, 4.4), dpi=80, layout="constrained")  # no pyplot: thread-safe, no display
    axes = figure.subplots(len(CURVES), 1, sharex=True)
    for axis, (key, label, scale) in zip(axes, CURVES):
        values = _positive(pair.get(key)) if scale == "log" else _finite(pair.get(key))
        if values:
            axis.plot(range(1, len(values) + 1), values)
        axis.set_yscale(scale)
        axis.set_ylabel(label, fontsize=8)
        axis.tick_params(labelsize=7)
    axes[-1].set_xlabel("step", fontsize=8)
    axes[0].set_title(_pair_title(pair), fontsize=9)
    return figure


def loss_curves_png(pair: dict) -> bytes:
    buffer = io.BytesIO()
    loss_curves_figure(pair).savefig(buffer, format="png")
    return buffer.getvalue()


def _pair_title(pair: dict) -> str:
    """ "chelsea x starry_night", with the swept values when the pair is part of a sweep."""
    title = f"{axis_label('content', pair['content_uri'])} x {axis_label('style', pair['style_uri'])}"
    return ", ".join([title, *filter(None, [swept_values(pair)])])


def swept_values(pair: dict) -> str:
    """ "style_weight=100, style_stat=bn": the pair's values of the parameters its sweep varies."""
    sweep = pair.get("sweep")
    return ", ".join(axis_label(name, pair[name]) for name, _ in parse_sweep(sweep)) if isinstance(sweep, str) else ""


def _positive(values) -> list[float]:
    """Finite values, with zeros (a log scale cannot show them) left out as NaN gaps."""
    if not hasattr(values, "__len__"):  # None, or NaN in a table written before these columns existed
        return []
    return [v if v > 0 and math.isfinite(v) else math.nan for v in values]


def _finite(values) -> list[float]:
    if not hasattr(values, "__len__"):
        return []
    return [v if math.isfinite(v) else math.nan for v in values]


def _with_curves(pairs: pd.DataFrame) -> list[dict]:
    """The succeeded pairs that took optimisation steps (a method=fast pair has no curve)."""
    return pairs[(pairs["status"] == "succeeded") & (pairs["iterations_run"].fillna(0) > 0)].to_dict("records")


def write_loss_curves(pairs: pd.DataFrame, folder: str, storage: Storage) -> list[str]:
    """One `{output name}.loss.png` per optimised pair in `folder`; returns their URIs."""
    written = []
    for pair in _with_curves(pairs):
        name = posixpath.basename(pair["output_uri"].replace("\\", "/")).rsplit(".", 1)[0] + ".loss.png"
        uri = join_uri(folder, name)
        storage.write_atomic(uri, loss_curves_png(pair))
        written.append(uri)
    return written


@dataclass
class Report:
    html: str
    run: str
    pairs: int
    failed: int
    grids: list[Image.Image] = field(default_factory=list)  # the page's grids, full size


def report_grids(pairs: pd.DataFrame, rows: str | None = None, cols: str | None = None):
    """[(title, pairs, rows, cols)]: content x style; a swept parameter across, one grid per style;
    two swept parameters as the axes, one grid per content x style. Given axes: one grid."""
    if rows or cols:
        return [("", pairs, rows or "content", cols or "style")]
    swept = list(dict.fromkeys(name for text in pairs["sweep"].dropna().unique() for name, _ in parse_sweep(text)))
    if not swept or len(swept) > 2:  # rows sweeping different parameters: no common axes
        return [("", pairs, "content", "style")]
    if len(swept) == 1:
        return [
            (axis_label("style", style), group, "content", swept[0])
            for style, group in pairs.groupby("style_uri", sort=False)
        ]
    return [
        (f"{axis_label('content', content)} x {axis_label('style', style)}", group, swept[0], swept[1])
        for (content, style), group in pairs.groupby(["content_uri", "style_uri"], sort=False)
    ]


def _grids_html(
    pairs: pd.DataFrame, rows: str | None, cols: str | None, storage: Storage, load, links: "Links"
) -> tuple[str, list[Image.Image]]:
    grids, parts, images = report_grids(pairs, rows, cols), [], []
    for title, group, row_axis, col_axis in grids[:MAX_GRIDS]:
        grid = build_grid(
            group,
            row_axis,
            col_axis,
            options=GridOptions(cell=REPORT_CELL, font_size=REPORT_FONT),
            storage=storage,
            max_rows=MAX_GRID_ROWS,
            load=load,
        )
        images.append(grid.image)
        parts += [
            f"<h3>{_e(title)}</h3>" if title else "",
            f'<div class="gridscroll"><div class="gridbox" style="{_grid_width(grid.image)}">'
            f'<img class="grid" alt="grid of outputs" src="{data_uri(grid.image, GRID_SIDE)}">'
            f"{_grid_areas(grid, links)}</div></div>",
            *(f"<p class=note>{_e(note)}</p>" for note in grid.notes),
        ]
    if len(grids) > MAX_GRIDS:
        parts.append(f"<p class=note>first {MAX_GRIDS} of {len(grids)} grids shown</p>")
    return "\n".join(parts), images


def _grid_width(picture: Image.Image) -> str:
    """The grid's box: the picture's own width, or the page's when narrower, but never so narrow that
    its labels fall under MIN_LABEL_PX (the box then scrolls sideways within the page)."""
    least = math.ceil(picture.width * MIN_LABEL_PX / REPORT_FONT)
    return f"width:{picture.width}px;max-width:100%;min-width:{least}px"


def _grid_areas(grid, links: "Links") -> str:
    """A link over each cell of the picture, in percent so it follows the picture's displayed size:
    a succeeded cell opens the output in the lightbox, a failed one shows its reason on hover."""
    width, height = grid.image.size
    areas = []
    for (left, top, right, bottom), pair in grid.areas:
        place = (
            f"left:{100 * left / width:.3f}%;top:{100 * top / height:.3f}%;"
            f"width:{100 * (right - left) / width:.3f}%;height:{100 * (bottom - top) / height:.3f}%"
        )
        if pair["status"] == "failed":
            areas.append(f'<span class="area" style="{place}" title="{_e(pair["error"])}"></span>')
        else:
            areas.append(_zoom_link(pair, links, f'class="area zoom" style="{place}"', ""))
    return "".join(areas)


def _zoom_link(pair: dict, links: "Links", attributes: str, inner: str) -> str:
    """A link to the output that, with scripts on, opens it large beside its content and style."""
    data = {
        "title": _pair_title(pair),
        "output": links(pair["output_uri"]),
        "content": links(pair["content_uri"]),
        "styles": [links(uri) for uri in str(pair["style_uri"]).split(" + ")],
    }
    return (
        f'<a {attributes} href="{_e(data["output"])}" data-pair="{_e(json.dumps(data))}" '
        f'title="{_e(data["title"])}">{inner}</a>'
    )


def build_report(
    pairs: pd.DataFrame,
    run: str,
    *,
    page_uri: str = "report.html",
    rows: str | None = None,
    cols: str | None = None,
    storage: Storage,
) -> Report:
    """The page for these pairs (select_pairs' choice) of run `run`; axes as report_grids chooses."""
    failed = pairs[pairs["status"] == "failed"]
    links = Links(page_uri, storage)
    load = thumbnail_loader(REPORT_CELL, storage)  # one read per image, for the grid and the table
    grids_html, grids = _grids_html(pairs, rows, cols, storage, load, links)
    failures = [f"<h2>Failures ({len(failed)})</h2>", _failures(failed)]
    body = "\n".join(
        [
            f"<h1>Run {_e(run)}</h1>",
            _header_card(pairs, run, links),
            *(failures if len(failed) else []),  # failures first: they are what needs doing
            "<h2>Grid</h2>",
            grids_html,
            f"<h2>Pairs ({len(pairs)})</h2>",
            _pairs_table(pairs, links, load),
            "<h2>Loss curves</h2>",
            _curves(pairs),
            *([] if len(failed) else failures),
            LIGHTBOX,
        ]
    )
    head, tail = PAGE.split("%BODY%")
    head = head.replace("%TITLE%", _e(f"nst run {run}")).replace("%HEADINGS%", _card_headings())
    return Report(head + body + tail, run, len(pairs), len(failed), grids)


def report_from_results(
    results: str,
    output: str,
    *,
    run: str | None = None,
    rows: str | None = None,
    cols: str | None = None,
    storage: Storage,
) -> Report:
    """`nst report`: read the table, build the page, write it to `output` (local or S3)."""
    pairs, run = run_pairs(results, run, storage)
    report = build_report(pairs, run, page_uri=output, rows=rows, cols=cols, storage=storage)
    storage.write_atomic(output, report.html.encode())
    return report


ARTIFACT_GRID_SIDE = 640  # the grid thumbnail inside the Prefect artifact: ~50-100 KB of JPEG


def publish_report(run_id: str, results_uri: str, out: str, storage: Storage, logger) -> str | None:
    """Write OUT/reports/RUN_ID.html and RUN_ID-grid.jpg; attach the grid, a link to the page and the
    table of pairs to the Prefect run. Never raises: a report is not worth failing a night's run."""
    try:
        pairs, run = run_pairs(results_uri, run_id, storage)
        page = join_uri(absolute(out), f"reports/{run_id}.html")
        report = build_report(pairs, run, page_uri=page, storage=storage)
        storage.write_atomic(page, report.html.encode())
        grid_uri = join_uri(absolute(out), f"reports/{run_id}-grid.jpg")
        if report.grids:
            write_picture(report.grids[0], grid_uri, storage)
        _attach(run_id, pairs, report, page, grid_uri, storage)
    except Exception as error:  # noqa: BLE001 - whatever broke, the run's work is done and recorded
        logger.warning(f"run report not written: {type(error).__name__}: {error}")
        return None
    logger.info(f"report: {page}")
    return page


def _attach(run_id: str, pairs: pd.DataFrame, report: Report, page: str, grid_uri: str, storage: Storage) -> None:
    links = Links(None, storage)  # absolute: the Prefect UI opens them, not the page
    link = storage.sign(page)
    picture = f"![grid of run {run_id}]({data_uri(report.grids[0], ARTIFACT_GRID_SIDE)})" if report.grids else ""
    create_markdown_artifact(
        f"# Run {run_id}\n\n{picture}\n\nFull grid: `{grid_uri}`  \nReport: [{page}]({link})",
        key="stylize-grid",
        description=f"run {run_id}",
    )
    create_link_artifact(link, link_text=f"report of run {run_id}", key="stylize-report", description=f"run {run_id}")
    create_table_artifact(
        [_artifact_row(p, links) for p in pairs.to_dict("records")], key="stylize-pairs", description=f"run {run_id}"
    )


def _artifact_row(pair: dict, links: "Links") -> dict:
    numbers = {
        name: None if pd.isna(pair[name]) else round(float(pair[name]), 4)
        for name in ("total_loss", "content_loss", "style_loss", "total_seconds")
    }
    return {
        "content": axis_label("content", pair["content_uri"]),
        "style": axis_label("style", pair["style_uri"]),
        "swept": swept_values(pair),
        "status": pair["status"],
        **numbers,
        "error": "" if pd.isna(pair["error"]) else pair["error"],
        "output": links(pair["output_uri"]),
    }


class Links:
    """What a page or the Prefect UI can open: relative links between local files (the folder can be
    moved or served), file:// links to local files otherwise, presigned https links for S3 objects
    (a browser cannot open s3://).

    Every link is one of those, so no text in the table becomes a link a browser would run: a
    relative link is percent-encoded, so an output named "javascript:alert(1).png" is a file name
    ("javascript%3Aalert%281%29.png"), not a javascript: URL; any other scheme gets no link ("")."""

    def __init__(self, page_uri: str | None, storage: Storage):
        self.page_uri, self.storage = page_uri, storage

    def __call__(self, uri: str) -> str:
        if uri.startswith("s3://"):
            return self.storage.sign(uri)
        if "://" in uri:
            return uri if urllib.parse.urlsplit(uri).scheme in ("http", "https", "file") else ""
        if self.page_uri is None or "://" in self.page_uri:
            return self.storage.sign(uri)  # file://, percent-encoded
        relative = os.path.relpath(uri, os.path.dirname(os.path.abspath(self.page_uri)))
        return urllib.parse.quote(posixpath.join(*relative.split(os.sep)))


def _e(value) -> str:
    return html.escape("" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value))


def _counts(pairs: pd.DataFrame) -> str:
    counts = pairs["status"].value_counts()
    return ", ".join(f"{counts.get(s, 0)} {s}" for s in ("succeeded", "failed", "skipped"))


VERSIONS = (
    ("nst", "nst_version"),
    ("TensorFlow", "tensorflow_version"),
    ("Keras", "keras_version"),
    ("Prefect", "prefect_version"),
    ("Python", "python_version"),
)


def _header_card(pairs: pd.DataFrame, run: str, links: Links) -> str:
    """The run at a glance: counts, wall time and pace, where it ran, what was changed, its Prefect run."""
    own = pairs if run == "all" else pairs[pairs["run_id"] == run]  # skipped pairs show earlier runs' rows
    wall = (own["finished_at"].max() - own["started_at"].min()).total_seconds() if len(own) else math.nan
    done = int((own["status"] == "succeeded").sum())
    pace = f"{done / wall * 3600:.0f} pairs per hour" if wall and wall > 0 else "no pairs stylized"
    facts = [
        ("pairs", _counts(pairs)),
        ("wall time", _duration(wall)),
        ("pace", pace),
        ("device", _distinct(pairs["device"])),
        ("network", _distinct(pairs["network"])),
        ("versions", ", ".join(f"{name} {_distinct(pairs[column])}" for name, column in VERSIONS)),
        ("parameters changed", _non_defaults(pairs) or "none: the defaults"),
    ]
    urls = pairs["flow_run_url"].dropna().unique() if "flow_run_url" in pairs else []
    if len(urls):
        facts.append(
            ("Prefect", " ".join(f'<a href="{_e(links(u))}">flow run {_e(u.rsplit("/", 1)[-1][:8])}</a>' for u in urls))
        )
    rows = "".join(f"<dt>{_e(k)}</dt><dd>{v if k == 'Prefect' else _e(v)}</dd>" for k, v in facts)
    return f'<dl class="card">{rows}</dl>'


def _duration(seconds: float) -> str:
    if not seconds or math.isnan(seconds):
        return "-"
    minutes, second = divmod(round(seconds), 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min {second} s"


def _distinct(values: pd.Series) -> str:
    return ", ".join(str(v) for v in values.dropna().unique()) or "-"


def _non_defaults(pairs: pd.DataFrame) -> str:
    """ "size=512; style_weight: 100, 1000": the StyleParams fields whose values differ from the defaults."""
    defaults, parts = params_columns(StyleParams()), []
    for name in StyleParams.field_names():
        values = list(dict.fromkeys(pairs[name].dropna())) if name in pairs else []
        if values and values != [defaults[name]]:
            shown = ", ".join(str(v) for v in values[:6]) + (", ..." if len(values) > 6 else "")
            parts.append(f"{name}={shown}" if len(values) == 1 else f"{name}: {shown}")
    return "; ".join(parts)


COLUMNS = [  # (heading, table column, format)
    ("output", "output_uri", "thumb"),
    ("content", "content_uri", "stem"),
    ("style", "style_uri", "stem"),
    ("status", "status", "text"),
    ("total loss", "total_loss", "{:.4g}"),
    ("content loss", "content_loss", "{:.4g}"),
    ("style loss", "style_loss", "{:.4g}"),
    ("steps", "iterations_run", "{:.0f}"),
    ("seconds", "total_seconds", "{:.1f}"),
    ("load s", "load_seconds", "{:.2f}"),
    ("targets s", "targets_seconds", "{:.2f}"),
    ("optimize s", "optimize_seconds", "{:.1f}"),
    ("save s", "save_seconds", "{:.2f}"),
    ("size", "size", "{:.0f}"),
    ("style weight", "style_weight", "{:g}"),
    ("swept", "sweep", "swept"),
    ("run", "run_id", "text"),
    ("file", "output_uri", "link"),
]
THUMB_SIDE = 64  # pixels: the table's thumbnails, embedded


def _card_headings() -> str:
    """CSS writing each cell's column heading before it, for a phone, where every pair is a card."""
    return "".join(
        f"  #pairs td:nth-child({n})::before {{ content: {json.dumps(h)}; }}\n"
        for n, (h, _, _) in enumerate(COLUMNS, 1)
    )


def _pairs_table(pairs: pd.DataFrame, links: Links, load) -> str:
    head = "".join(f'<th onclick="sortBy(this)">{_e(h)}</th>' for h, _, _ in COLUMNS)
    rows = "\n".join(
        f'<tr data-status="{_e(pair["status"])}" data-content="{_e(axis_label("content", pair["content_uri"]))}" '
        f'data-style="{_e(axis_label("style", pair["style_uri"]))}">'
        + "".join(_td(pair, column, kind, links, load) for _, column, kind in COLUMNS)
        + "</tr>"
        for pair in pairs.to_dict("records")
    )
    return (
        _filters(pairs) + f'<table id="pairs"><thead><tr>{head}</tr></thead><tbody>\n{rows}\n</tbody></table>'
        '<p class=note id="shown"></p>'
    )


def _filters(pairs: pd.DataFrame) -> str:
    def choice(name: str, values) -> str:
        options = "".join(f'<option value="{_e(v)}">{_e(v)}</option>' for v in dict.fromkeys(values))
        return f'<label>{name} <select id="filter-{name}" onchange="filterRows()"><option value="">all</option>{options}</select></label>'

    return (
        '<div class="filters">'
        + choice("status", pairs["status"])
        + choice("content", (axis_label("content", v) for v in pairs["content_uri"]))
        + choice("style", (axis_label("style", v) for v in pairs["style_uri"]))
        + '<label>text <input id="filter-text" type="search" oninput="filterRows()" '
        'placeholder="file, error, parameter..."></label></div>'
    )


def _td(pair: dict, column: str, kind: str, links: Links, load) -> str:
    value = swept_values(pair) if kind == "swept" else pair.get(column)
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    if missing or (kind in ("link", "thumb") and pair["status"] == "failed"):  # a failed pair has no output
        return "<td></td>"
    if kind == "thumb":
        picture = load(value)
        if isinstance(picture, str):  # the output could not be read back: say why
            return f'<td class="failed" title="{_e(picture)}">unreadable</td>'
        inner = f'<img class="thumb" alt="output" src="{data_uri(to_pil(picture), THUMB_SIDE)}">'
        return f"<td>{_zoom_link(pair, links, 'class=zoom', inner)}</td>"
    if kind == "stem":
        return f'<td title="{_e(value)}">{_e(axis_label("content", value))}</td>'
    if kind == "link":
        return f'<td><a href="{_e(links(value))}">{_e(posixpath.basename(str(value)))}</a></td>'
    if kind in ("text", "swept"):
        return f'<td class="{_e(value) if column == "status" else ""}">{_e(value)}</td>'
    return f'<td data-sort="{float(value)!r}">{_e(kind.format(value))}</td>'


def _curves(pairs: pd.DataFrame) -> str:
    done = _with_curves(pairs)
    if not done:
        return "<p>No optimised pairs to plot.</p>"
    figures = [
        f'<img class="curve" alt="loss curves" src="data:image/png;base64,'
        f'{base64.b64encode(loss_curves_png(p)).decode()}">'
        for p in done[:MAX_CURVES]
    ]
    more = f"<p class=note>first {MAX_CURVES} of {len(done)} pairs shown</p>" if len(done) > MAX_CURVES else ""
    return f'<div class="curves">{"".join(figures)}</div>{more}'


def _failures(failed: pd.DataFrame) -> str:
    if failed.empty:
        return "<p>None.</p>"
    items = "".join(
        f"<li><b>{_e(_pair_title(f))}</b>: {_e(f['error'])}<br><small>{_e(f['content_uri'])} x "
        f"{_e(f['style_uri'])}</small></li>"
        for f in failed.to_dict("records")
    )
    return f"<ul class=failures>{items}</ul>"


# The lightbox's pictures are filled in when it opens: links, not embedded, so the page stays small.
LIGHTBOX = """<div id="lightbox" hidden onclick="closeBox()"><p id="box-title"></p><div class="box">
<figure class="out"><img id="box-output" alt="output"><figcaption>output</figcaption></figure>
<figure><img id="box-content" alt="content"><figcaption>content</figcaption></figure>
<figure id="box-styles"></figure></div><p class=note>Esc or click to close</p></div>"""

# Sorting: click a heading; numbers sort by value (data-sort), text alphabetically; again to reverse.
# Filtering: the selects match a row's data- attributes; the text box its text and full paths (titles).
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>%TITLE%</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; overflow-wrap: break-word; }
h1 { overflow-wrap: anywhere; }
.gridscroll { overflow-x: auto; }
.gridbox { position: relative; }
img.grid { width: 100%; border: 1px solid #ddd; display: block; box-sizing: border-box; }
.gridbox .area { position: absolute; } .gridbox a.area:hover { outline: 3px solid #2a6fdb; }
#pairs { border-collapse: collapse; width: 100%; font-size: 13px; }
#pairs th, #pairs td { padding: 3px 6px; border-bottom: 1px solid #eee; text-align: left; vertical-align: top; }
#pairs td a { overflow-wrap: anywhere; } /* a file name breaks anywhere; words, numbers and headings do not */
#pairs th { cursor: pointer; background: #f4f4f4; position: sticky; top: 0; vertical-align: bottom; }
td.failed { color: #a01414; font-weight: bold; } td.succeeded { color: #17692c; }
img.thumb { display: block; max-height: 64px; }
.filters { margin: 8px 0; display: flex; gap: 8px 16px; flex-wrap: wrap; }
.filters select, .filters input { max-width: 100%; }
.card { display: grid; grid-template-columns: max-content minmax(0, 1fr); gap: 2px 16px; padding: 12px 16px;
        background: #f7f7f9; border: 1px solid #e2e2e8; border-radius: 6px; max-width: 1100px; }
.card dt { color: #666; } .card dd { margin: 0; overflow-wrap: anywhere; }
.curves img { margin: 4px; border: 1px solid #eee; max-width: calc(100% - 10px); } .note { color: #777; }
/* A phone: each pair a card of "heading: value" lines, the headings a row of sort buttons above them. */
@media (max-width: 700px) {
  body { margin: 12px; }
  .card { grid-template-columns: minmax(0, 1fr); padding: 8px 12px; } .card dd { margin-bottom: 4px; }
  #pairs, #pairs tbody, #pairs tr { display: block; }
  #pairs thead tr { display: flex; flex-wrap: wrap; gap: 4px; align-items: center; }
  #pairs thead tr::before { content: "sort by"; color: #666; margin-right: 4px; }
  #pairs th { position: static; border-radius: 10px; padding: 1px 8px; }
  #pairs tbody tr { border: 1px solid #e2e2e8; border-radius: 6px; margin: 8px 0; padding: 4px 8px; }
  #pairs td { display: grid; grid-template-columns: 7em minmax(0, 1fr); gap: 8px; border: 0; padding: 1px 0; }
  #pairs td:empty { display: none; } #pairs td::before { color: #666; }
%HEADINGS%}
#lightbox { position: fixed; inset: 0; background: rgba(0, 0, 0, .85); color: #eee; padding: 16px;
            display: flex; flex-direction: column; align-items: center; z-index: 10; cursor: zoom-out; }
#lightbox[hidden] { display: none; }
#lightbox .box { display: flex; gap: 12px; align-items: flex-start; max-height: 85vh; }
#lightbox figure { margin: 0; display: flex; flex-direction: column; max-width: 22vw; }
#lightbox figure.out { max-width: 56vw; }
#lightbox img { max-width: 100%; max-height: 80vh; object-fit: contain; }
</style></head>
<body>
%BODY%
<script>
function sortBy(th) {
  const table = th.closest("table"), body = table.tBodies[0], index = th.cellIndex;
  const up = th.dataset.dir !== "up"; th.dataset.dir = up ? "up" : "down";
  const key = row => { const cell = row.cells[index]; return cell.dataset.sort !== undefined ? Number(cell.dataset.sort) : cell.textContent; };
  const rows = Array.from(body.rows).sort((a, b) => {
    const x = key(a), y = key(b);
    return (typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y))) * (up ? 1 : -1);
  });
  rows.forEach(row => body.appendChild(row));
}
function filterRows() {
  const want = name => document.getElementById("filter-" + name).value;
  const text = want("text").toLowerCase();
  let shown = 0;
  const rows = Array.from(document.querySelectorAll("#pairs tbody tr"));
  rows.forEach(row => {
    const titles = Array.from(row.querySelectorAll("[title]")).map(e => e.title).join(" ");
    const ok = ["status", "content", "style"].every(n => !want(n) || row.dataset[n] === want(n))
      && (!text || (row.textContent + " " + titles).toLowerCase().includes(text));
    row.hidden = !ok; shown += ok;
  });
  document.getElementById("shown").textContent = shown < rows.length ? `${shown} of ${rows.length} pairs shown` : "";
}
function openBox(pair) {
  document.getElementById("box-title").textContent = pair.title;
  document.getElementById("box-output").src = pair.output;
  document.getElementById("box-content").src = pair.content;
  const styles = document.getElementById("box-styles");
  styles.replaceChildren(...pair.styles.map(uri => Object.assign(document.createElement("img"), {src: uri, alt: "style"})));
  styles.append(Object.assign(document.createElement("figcaption"), {textContent: "style"}));
  document.getElementById("lightbox").hidden = false;
}
function closeBox() { document.getElementById("lightbox").hidden = true; }
document.addEventListener("click", event => {
  const link = event.target.closest("a.zoom");
  if (link) { event.preventDefault(); openBox(JSON.parse(link.dataset.pair)); }
});
document.addEventListener("keydown", event => { if (event.key === "Escape") closeBox(); });
</script>
</body></html>
"""
