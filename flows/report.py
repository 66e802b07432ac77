"""Loss curves and a one-page HTML report of a run, from its results table.

The page stands alone: the grid and the curves are embedded as data: URIs (downscaled,
so a large run stays a few MB at most), the outputs are linked (relatively when the
page and the outputs are both on local disk). All text from the table is escaped.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from PIL import Image
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from nst_core.grid import GridOptions
from nst_core.image_io import write_bytes_atomic

from .grids import axis_label, build_grid, data_uri, select_pairs, write_picture
from .manifest import join_uri
from .results import read_results
from .sweeps import parse_sweep

MAX_CURVES = 60  # loss-curve plots on one page: each is ~15 KB
MAX_GRIDS = 12  # grids of a sweep (one per style, or per content x style)
MAX_GRID_ROWS = 60  # grid rows on the page; the full grid is `nst grid`'s job
GRID_SIDE = 1600  # longest side of the embedded grid, in pixels
REPORT_CELL = 128  # grid cell size on the page


def loss_curves_png(pair: dict) -> bytes:
    """Total, content and style loss against the step, log scale, as a PNG."""
    figure = Figure(figsize=(4.2, 2.8), dpi=80, layout="constrained")  # no pyplot: thread-safe, no display
    axes = figure.add_subplot()
    for key, label in (("loss_history", "total"), ("content_loss_history", "content"),
                       ("style_loss_history", "style")):
        values = _positive(pair.get(key))
        if values:
            axes.plot(range(1, len(values) + 1), values, label=label)
    axes.set_yscale("log")
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title(_pair_title(pair), fontsize=9)
    axes.legend(fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _pair_title(pair: dict) -> str:
    """"chelsea x starry_night", with the swept values when the pair is part of a sweep."""
    title = f"{axis_label('content', pair['content_uri'])} x {axis_label('style', pair['style_uri'])}"
    return ", ".join([title, *filter(None, [swept_values(pair)])])


def swept_values(pair: dict) -> str:
    """"style_weight=100, style_stat=bn": the pair's values of the parameters its sweep varies."""
    sweep = pair.get("sweep")
    return ", ".join(axis_label(name, pair[name]) for name, _ in parse_sweep(sweep)) if isinstance(sweep, str) else ""


def _positive(values) -> list[float]:
    """Finite values, with zeros (a log scale cannot show them) left out as NaN gaps."""
    if not hasattr(values, "__len__"):  # None, or NaN in a table written before these columns existed
        return []
    return [v if v > 0 and math.isfinite(v) else math.nan for v in values]


def _with_curves(pairs: pd.DataFrame) -> list[dict]:
    """The succeeded pairs that took optimisation steps (a method=fast pair has no curve)."""
    return pairs[(pairs["status"] == "succeeded") & (pairs["iterations_run"].fillna(0) > 0)].to_dict("records")


def write_loss_curves(pairs: pd.DataFrame, folder: str, storage_options: dict | None = None) -> list[str]:
    """One `{output name}.loss.png` per optimised pair in `folder`; returns their URIs."""
    written = []
    for pair in _with_curves(pairs):
        name = posixpath.basename(pair["output_uri"].replace("\\", "/")).rsplit(".", 1)[0] + ".loss.png"
        uri = f"{folder.rstrip('/')}/{name}"
        write_bytes_atomic(uri, loss_curves_png(pair), storage_options=storage_options)
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
        return [(axis_label("style", style), group, "content", swept[0])
                for style, group in pairs.groupby("style_uri", sort=False)]
    return [(f"{axis_label('content', content)} x {axis_label('style', style)}", group, swept[0], swept[1])
            for (content, style), group in pairs.groupby(["content_uri", "style_uri"], sort=False)]


def _grids_html(pairs: pd.DataFrame, rows: str | None, cols: str | None,
                storage_options: dict | None) -> tuple[str, list[Image.Image]]:
    grids, parts, images = report_grids(pairs, rows, cols), [], []
    for title, group, row_axis, col_axis in grids[:MAX_GRIDS]:
        grid = build_grid(group, row_axis, col_axis, options=GridOptions(cell=REPORT_CELL),
                          storage_options=storage_options, max_rows=MAX_GRID_ROWS)
        images.append(grid.image)
        parts += [f"<h3>{_e(title)}</h3>" if title else "",
                  f'<img class="grid" alt="grid of outputs" src="{data_uri(grid.image, GRID_SIDE)}">',
                  *(f"<p class=note>{_e(note)}</p>" for note in grid.notes)]
    if len(grids) > MAX_GRIDS:
        parts.append(f"<p class=note>first {MAX_GRIDS} of {len(grids)} grids shown</p>")
    return "\n".join(parts), images


def build_report(pairs: pd.DataFrame, run: str, *, page_uri: str = "report.html", rows: str | None = None,
                 cols: str | None = None, storage_options: dict | None = None) -> Report:
    """The page for these pairs (select_pairs' choice) of run `run`; axes as report_grids chooses."""
    failed = pairs[pairs["status"] == "failed"]
    grids_html, grids = _grids_html(pairs, rows, cols, storage_options)
    body = "\n".join([
        f"<h1>Run {_e(run)}</h1>",
        f"<p>{_counts(pairs)}</p>",
        "<h2>Grid</h2>",
        grids_html,
        f"<h2>Pairs ({len(pairs)})</h2>",
        _pairs_table(pairs, page_uri),
        "<h2>Loss curves</h2>",
        _curves(pairs),
        f"<h2>Failures ({len(failed)})</h2>",
        _failures(failed),
    ])
    return Report(PAGE.format(title=_e(f"nst run {run}"), body=body), run, len(pairs), len(failed), grids)


def report_from_results(results: str, output: str, *, run: str | None = None, rows: str | None = None,
                        cols: str | None = None, storage_options: dict | None = None) -> Report:
    """`nst report`: read the table, build the page, write it to `output` (local or S3)."""
    pairs, run = select_pairs(read_results(results, storage_options=storage_options), run)
    report = build_report(pairs, run, page_uri=output, rows=rows, cols=cols, storage_options=storage_options)
    write_bytes_atomic(output, report.html.encode(), storage_options=storage_options)
    return report


ARTIFACT_GRID_SIDE = 640  # the grid thumbnail inside the Prefect artifact: ~50-100 KB of JPEG


def publish_report(run_id: str, results_uri: str, out: str, storage_options: dict | None, logger) -> str | None:
    """Write OUT/reports/RUN_ID.html and RUN_ID-grid.jpg; attach the grid, a link to the page and the
    table of pairs to the Prefect run. Never raises: a report is not worth failing a night's run."""
    try:
        pairs, run = select_pairs(read_results(results_uri, storage_options=storage_options), run_id)
        page = join_uri(out, f"reports/{run_id}.html")
        report = build_report(pairs, run, page_uri=page, storage_options=storage_options)
        write_bytes_atomic(page, report.html.encode(), storage_options=storage_options)
        grid_uri = join_uri(out, f"reports/{run_id}-grid.jpg")
        if report.grids:
            write_picture(report.grids[0], grid_uri, storage_options)
        _attach(run_id, pairs, report, page, grid_uri)
    except Exception as error:  # noqa: BLE001 - whatever broke, the run's work is done and recorded
        logger.warning(f"run report not written: {type(error).__name__}: {error}")
        return None
    logger.info(f"report: {page}")
    return page


def _attach(run_id: str, pairs: pd.DataFrame, report: Report, page: str, grid_uri: str) -> None:
    link = page if "://" in page else Path(page).as_uri()
    picture = f"![grid of run {run_id}]({data_uri(report.grids[0], ARTIFACT_GRID_SIDE)})" if report.grids else ""
    create_markdown_artifact(f"# Run {run_id}\n\n{picture}\n\nFull grid: `{grid_uri}`  \nReport: [{page}]({link})",
                             key="stylize-grid", description=f"run {run_id}")
    create_link_artifact(link, link_text=f"report of run {run_id}", key="stylize-report", description=f"run {run_id}")
    create_table_artifact([_artifact_row(p) for p in pairs.to_dict("records")], key="stylize-pairs",
                          description=f"run {run_id}")


def _artifact_row(pair: dict) -> dict:
    numbers = {name: None if pd.isna(pair[name]) else round(float(pair[name]), 4)
               for name in ("total_loss", "content_loss", "style_loss", "total_seconds")}
    return {"content": axis_label("content", pair["content_uri"]), "style": axis_label("style", pair["style_uri"]),
            "swept": swept_values(pair), "status": pair["status"], **numbers, "error": "" if pd.isna(pair["error"]) else pair["error"],
            "output": pair["output_uri"]}


def _e(value) -> str:
    return html.escape("" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value))


def _counts(pairs: pd.DataFrame) -> str:
    counts = pairs["status"].value_counts()
    return ", ".join(f"{counts.get(s, 0)} {s}" for s in ("succeeded", "failed", "skipped"))


COLUMNS = [  # (heading, table column, format)
    ("content", "content_uri", "stem"), ("style", "style_uri", "stem"), ("status", "status", "text"),
    ("total loss", "total_loss", "{:.4g}"), ("content loss", "content_loss", "{:.4g}"),
    ("style loss", "style_loss", "{:.4g}"), ("steps", "iterations_run", "{:.0f}"),
    ("seconds", "total_seconds", "{:.1f}"), ("size", "size", "{:.0f}"), ("style weight", "style_weight", "{:g}"),
    ("swept", "sweep", "swept"), ("run", "run_id", "text"), ("output", "output_uri", "link"),
]


def _pairs_table(pairs: pd.DataFrame, page_uri: str) -> str:
    head = "".join(f'<th onclick="sortBy(this)">{_e(h)}</th>' for h, _, _ in COLUMNS)
    rows = "\n".join("<tr>" + "".join(_td(pair, column, kind, page_uri) for _, column, kind in COLUMNS) + "</tr>"
                     for pair in pairs.to_dict("records"))
    return f'<table id="pairs"><thead><tr>{head}</tr></thead><tbody>\n{rows}\n</tbody></table>'


def _td(pair: dict, column: str, kind: str, page_uri: str) -> str:
    value = swept_values(pair) if kind == "swept" else pair.get(column)
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    if missing or (kind == "link" and pair["status"] == "failed"):  # a failed pair has no output to open
        return "<td></td>"
    if kind == "stem":
        return f'<td title="{_e(value)}">{_e(axis_label("content", value))}</td>'
    if kind == "link":
        return f'<td><a href="{_e(_link(value, page_uri))}">{_e(posixpath.basename(str(value)))}</a></td>'
    if kind in ("text", "swept"):
        return f'<td class="{_e(value) if column == "status" else ""}">{_e(value)}</td>'
    return f'<td data-sort="{float(value)!r}">{_e(kind.format(value))}</td>'


def _link(uri: str, page_uri: str) -> str:
    """Relative when the page and the file are both local, so the folder can be moved or served."""
    if "://" in uri or "://" in page_uri:
        return uri
    relative = os.path.relpath(uri, os.path.dirname(os.path.abspath(page_uri)))
    return posixpath.join(*relative.split(os.sep))


def _curves(pairs: pd.DataFrame) -> str:
    done = _with_curves(pairs)
    if not done:
        return "<p>No optimised pairs to plot.</p>"
    figures = [f'<img class="curve" alt="loss curves" src="data:image/png;base64,'
               f'{base64.b64encode(loss_curves_png(p)).decode()}">' for p in done[:MAX_CURVES]]
    more = f"<p class=note>first {MAX_CURVES} of {len(done)} pairs shown</p>" if len(done) > MAX_CURVES else ""
    return f'<div class="curves">{"".join(figures)}</div>{more}'


def _failures(failed: pd.DataFrame) -> str:
    if failed.empty:
        return "<p>None.</p>"
    items = "".join(f"<li><b>{_e(_pair_title(f))}</b>: {_e(f['error'])}<br><small>{_e(f['content_uri'])} x "
                    f"{_e(f['style_uri'])}</small></li>" for f in failed.to_dict("records"))
    return f"<ul class=failures>{items}</ul>"


# Sorting: click a heading; numbers sort by value (data-sort), text alphabetically; again to reverse.
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }}
img.grid {{ max-width: 100%; border: 1px solid #ddd; }}
table {{ border-collapse: collapse; }} th, td {{ padding: 3px 8px; border-bottom: 1px solid #eee; text-align: left; }}
th {{ cursor: pointer; background: #f4f4f4; position: sticky; top: 0; }}
td.failed {{ color: #a01414; font-weight: bold; }} td.succeeded {{ color: #17692c; }}
.curves img {{ margin: 4px; border: 1px solid #eee; }} .note {{ color: #777; }}
</style></head>
<body>
{body}
<script>
function sortBy(th) {{
  const table = th.closest("table"), body = table.tBodies[0], index = th.cellIndex;
  const up = th.dataset.dir !== "up"; th.dataset.dir = up ? "up" : "down";
  const key = row => {{ const cell = row.cells[index]; return cell.dataset.sort !== undefined ? Number(cell.dataset.sort) : cell.textContent; }};
  const rows = Array.from(body.rows).sort((a, b) => {{
    const x = key(a), y = key(b);
    return (typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y))) * (up ? 1 : -1);
  }});
  rows.forEach(row => body.appendChild(row));
}}
</script>
</body></html>
"""
