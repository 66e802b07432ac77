"""Grids and reports from real results tables: real image files, real Parquet, headless Chromium, Prefect.

Most tables here are written with flows.results.write_rows over real output files (each a
distinct picture), so the pixels of every cell can be traced to its pair; the flow tests
stylize for real.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
import requests
from PIL import Image

from conftest import REPO, artifacts, link_lifetime, nst
from flows.grids import build_grid, grid_from_results, select_pairs
from flows.manifest import expand_manifest
from flows.pairs import base_row
from flows.report import report_from_results
from flows.results import read_results, write_rows
from nst_core.grid import FAILED_FILL, GridOptions, cell_origin, grid_size
from nst_core.image_io import load_image, save_image
from nst_core.storage import LOCAL, Storage

OPTIONS = GridOptions(cell=48, padding=4, font_size=10)
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
BROKEN = "coffee.jpg: truncated or corrupt image data <i>x</i>"  # markup in a reason must stay text


@pytest.fixture
def photos(samples):
    samples("photos", "chelsea", "coffee", "rocket")
    return samples("styles", "starry_night", "the_scream")


def _pairs(root: Path, manifest: str):
    (root / "m.csv").write_text(manifest)
    return expand_manifest(str(root / "m.csv"), str(root / "out"), storage=LOCAL)[0]


def _record(pairs, results: str, run_id: str, start: int, failed=(), skipped=(), storage=LOCAL):
    """Rows for a run as the flow writes them; each succeeded pair gets its own real output picture."""
    rows = []
    for index, pair in enumerate(pairs):
        at = T0 + timedelta(seconds=start + index)
        row = {**base_row(pair, run_id), "started_at": at, "finished_at": at + timedelta(milliseconds=500)}
        if pair.pair_id in skipped:
            row["status"] = "skipped"
        elif pair.pair_id in failed:
            row.update(status="failed", error=BROKEN, total_seconds=0.1)
        else:
            tint = np.array([(index * 67) % 256, (index * 139) % 256, (index * 29 + 80) % 256]) / 255.0
            save_image(load_image(pair.content, LOCAL, max_side=40) * 0.5 + tint * 0.5, pair.output, storage)
            history = list(np.geomspace(10.0, 1.0 + index, 12))
            row.update(
                status="succeeded",
                total_loss=history[-1],
                content_loss=0.5,
                style_loss=0.05 * (index + 1),
                loss_history=history,
                content_loss_history=list(np.linspace(0.0, 0.5, 12)),
                style_loss_history=list(np.geomspace(1.0, 0.05, 12)),
                iterations_run=12,
                total_seconds=1.0 + index,
            )
        rows.append(row)
    write_rows(results, rows, storage=storage)


def _cell(grid: Image.Image, row: int, col: int, headers=(True, True)) -> np.ndarray:
    x, y = cell_origin(row, col, row_headers=headers[0], col_headers=headers[1], options=OPTIONS)
    return np.asarray(grid.crop((x, y, x + OPTIONS.cell, y + OPTIONS.cell)), np.float32) / 255.0


def _thumbnail_cell(uri: str) -> np.ndarray:
    """What a cell showing this image must hold: the image letterboxed on white, computed here."""
    image = load_image(uri, LOCAL, max_side=OPTIONS.cell)
    canvas = np.ones((OPTIONS.cell, OPTIONS.cell, 3), np.float32)
    top, left = (OPTIONS.cell - image.shape[0]) // 2, (OPTIONS.cell - image.shape[1]) // 2
    canvas[top : top + image.shape[0], left : left + image.shape[1]] = image
    return canvas


def _shows(cell: np.ndarray, uri: str) -> bool:
    return float(np.abs(cell - _thumbnail_cell(uri)).mean()) < 0.02


def _is_failed(cell: np.ndarray) -> bool:
    return ((cell * 255).round() == FAILED_FILL).all(axis=-1).mean() > 0.5


def test_content_by_style_grid_from_a_results_table(photos):
    pairs = _pairs(photos, "content,style\nphotos,styles\n")  # 3 x 2
    broken = next(p for p in pairs if "coffee" in p.content and "scream" in p.styles[0])
    results = str(photos / "out" / "results")
    _record(pairs, results, "r1", 0, failed={broken.pair_id})
    grid = grid_from_results(results, str(photos / "grid.png"), options=OPTIONS, storage=LOCAL)
    picture = Image.open(photos / "grid.png")
    assert picture.size == grid.image.size == grid_size(3, 2, row_headers=True, col_headers=True, options=OPTIONS)
    picture = picture.convert("RGB")
    for r, name in enumerate(("chelsea", "coffee", "rocket")):
        assert _shows(_cell(picture, r, -1), str(photos / "photos" / f"{name}.jpg"))  # content down the left
        for c, style in enumerate(("starry_night", "the_scream")):
            assert _shows(_cell(picture, -1, c), str(photos / "styles" / f"{style}.jpg"))  # styles across the top
            pair = next(p for p in pairs if name in p.content and style in p.styles[0])
            cell = _cell(picture, r, c)
            assert _is_failed(cell) if pair is broken else _shows(cell, pair.output), (name, style)
    assert not grid.notes


def test_cells_nothing_asked_for_are_quiet_and_failures_red(photos):
    """3 photos x 2 paintings with 3 of the 6 combinations asked for, one of them failed."""
    pairs = _pairs(
        photos,
        "content,style\nphotos/chelsea.jpg,styles/starry_night.jpg\n"
        "photos/coffee.jpg,styles/the_scream.jpg\nphotos/rocket.jpg,styles/the_scream.jpg\n",
    )
    results = str(photos / "out" / "results")
    _record(pairs, results, "r1", 0, failed={pairs[1].pair_id})
    grid = build_grid(select_pairs(read_results(results, storage=LOCAL))[0], options=OPTIONS, storage=LOCAL)
    asked = {(0, 0): pairs[0], (1, 1): pairs[1], (2, 1): pairs[2]}
    for r in range(3):
        for c in range(2):
            cell = _cell(grid.image, r, c)
            if (r, c) not in asked:  # not requested: the background, no fill, no text
                assert not _is_failed(cell) and (cell[2:-2, 2:-2] == 1.0).all(), (r, c)
            elif asked[(r, c)] is pairs[1]:
                assert _is_failed(cell)
            else:
                assert _shows(cell, asked[(r, c)].output)
    assert len(grid.areas) == 3  # the page's clickable cells: only the pairs asked for


def test_the_report_header_card_and_loss_curves(photos):
    from flows.report import loss_curves_figure

    pairs = _pairs(photos, "content,style,size\nphotos,styles,64\n")  # 6 pairs
    _record(pairs, str(photos / "out" / "results"), "r1", 0)
    report = report_from_results(str(photos / "out" / "results"), str(photos / "report.html"), storage=LOCAL)
    card = re.search(r'<dl class="card">(.*?)</dl>', report.html, re.S).group(1)
    text = re.sub(r"<[^>]+>", " ", card)
    # Rows of _record: one a second, each finished 0.5 s after it started: 5.5 s for 6 pairs.
    assert "wall time  0 min 6 s" in text and f"{6 / 5.5 * 3600:.0f} pairs per hour" in text
    assert "size=64" in text and "style_weight" not in text  # only what differs from the defaults
    assert "Prefect 3.8.8" in text and "Python 3." in text
    assert "Failures (0)" in report.html.split("Loss curves")[1]  # no failures: the section comes last

    pair = read_results(str(photos / "out" / "results"), storage=LOCAL).iloc[0].to_dict()
    axes = loss_curves_figure(pair).axes
    assert [a.get_ylabel() for a in axes] == ["total (weighted)", "style", "content"]
    assert [a.get_yscale() for a in axes] == ["log", "log", "linear"]
    low, high = axes[2].get_ylim()  # the content curve (0 to 0.5) fills its own axis
    assert (0.5 - 0.0) / (high - low) > 0.8


def _swept_grid(photos, manifest: str, rows: str, cols: str):
    """The manifest's pairs, recorded as one run, and their grid."""
    pairs = _pairs(photos, manifest)
    results = str(photos / "out" / "results")
    _record(pairs, results, "r1", 0)
    return pairs, build_grid(
        select_pairs(read_results(results, storage=LOCAL))[0], rows, cols, options=OPTIONS, storage=LOCAL
    ).image


def test_a_sweep_lays_its_values_out_along_an_axis_in_the_given_order(photos):
    pairs, grid = _swept_grid(
        photos,
        "content,style,sweep\n"
        'photos/rocket.jpg,styles/the_scream.jpg,"style_weight=1e4,1e2,1e3"\n'
        'photos/chelsea.jpg,styles/the_scream.jpg,"style_weight=1e4,1e2,1e3"\n',
        "content",
        "style_weight",
    )
    assert grid.size == grid_size(2, 3, row_headers=True, col_headers=False, options=OPTIONS)
    for r, name in enumerate(("rocket", "chelsea")):  # manifest order
        for c, weight in enumerate((1e4, 1e2, 1e3)):  # the sweep's order, not sorted
            pair = next(p for p in pairs if name in p.content and p.params.style_weight == weight)
            assert _shows(_cell(grid, r, c, headers=(True, False)), pair.output), (name, weight)


def test_a_two_parameter_sweep_fills_both_axes(photos):
    pairs, grid = _swept_grid(
        photos,
        "content,style,sweep\nphotos/chelsea.jpg,styles/the_scream.jpg,"
        '"style_stat=mmd-poly,gram;content_layers=block4_conv2|block2_conv2,block4_conv2"\n',
        "style_stat",
        "content_layers",
    )
    for r, stat in enumerate(("mmd-poly", "gram")):
        for c, layers in enumerate((("block4_conv2",), ("block2_conv2", "block4_conv2"))):
            pair = next(p for p in pairs if p.params.style_stat == stat and p.params.content_layers == layers)
            assert _shows(_cell(grid, r, c, headers=(False, False)), pair.output), (stat, layers)


def test_the_report_lays_a_sweep_out_by_itself(photos):
    from flows.report import report_grids

    pairs = _pairs(
        photos,
        'content,style,sweep\nphotos,styles,"style_weight=1e3,10"\n'
        'photos/chelsea.jpg,styles/the_scream.jpg,"init=noise,style;seed=1,2"\n',
    )
    _record(pairs, str(photos / "out" / "results"), "r1", 0)
    table = select_pairs(read_results(str(photos / "out" / "results"), storage=LOCAL))[0]
    one = report_grids(table[table.sweep.str.startswith("style_weight")])
    assert [(title, len(group), rows, cols) for title, group, rows, cols in one] == [
        ("starry_night", 6, "content", "style_weight"),
        ("the_scream", 6, "content", "style_weight"),
    ]
    (two,) = report_grids(table[table.sweep.str.startswith("init")])
    assert (two[0], len(two[1]), two[2], two[3]) == ("chelsea x the_scream", 4, "init", "seed")
    assert [(t, r, c) for t, _, r, c in report_grids(table, cols="seed")] == [("", "content", "seed")]
    assert [(t, r, c) for t, _, r, c in report_grids(table)] == [("", "content", "style")]  # 3 swept: no common axes


def test_which_pairs_a_grid_or_report_shows(photos):
    pairs = _pairs(photos, "content,style\nphotos,styles/the_scream.jpg\n")  # 3 pairs
    results = str(photos / "out" / "results")
    _record(pairs, results, "r1", 0, failed={pairs[2].pair_id})
    _record(pairs, results, "r2", 100, skipped={pairs[0].pair_id, pairs[1].pair_id})  # the rerun redid the failure
    table = read_results(results, storage=LOCAL)
    latest, run = select_pairs(table)
    assert run == "r2" and list(latest.pair_id) == [p.pair_id for p in pairs]
    assert list(latest.status) == ["succeeded"] * 3
    assert list(latest.run_id) == ["r1", "r1", "r2"]  # a skipped pair shows the success it repeats
    first, _ = select_pairs(table, "r1")
    assert list(first.status) == ["succeeded", "succeeded", "failed"]
    assert len(select_pairs(table, "all")[0]) == 3
    with pytest.raises(ValueError, match="no run 'r3'.*r1, r2"):
        select_pairs(table, "r3")


PROBE = """<script>
window.addEventListener("load", async () => {
  const wait = ms => new Promise(resolve => setTimeout(resolve, ms));
  const images = Array.from(document.querySelectorAll("img.grid, img.thumb, img.curve"));
  const heading = Array.from(document.querySelectorAll("#pairs th")).find(h => h.textContent === "total loss");
  sortBy(heading);
  const sorted = Array.from(document.querySelectorAll("#pairs tbody tr"))
    .map(row => row.cells[heading.cellIndex].dataset.sort ?? null);
  const visible = () => document.querySelectorAll("#pairs tbody tr:not([hidden])").length;
  const filter = (name, value) => { document.getElementById("filter-" + name).value = value; filterRows(); };
  filter("status", "failed"); const onlyFailed = visible();
  filter("status", ""); filter("content", "chelsea"); const onlyChelsea = visible();
  filter("content", ""); filter("text", "the_scream"); const textScream = visible();
  filter("text", "");
  const box = document.getElementById("lightbox"), cell = document.querySelector(".gridbox a.zoom");
  const boxBefore = box.hidden;
  cell.click(); await wait(500);
  const opened = !box.hidden, shown = ["box-output", "box-content"].map(id => document.getElementById(id))
    .concat(Array.from(document.querySelectorAll("#box-styles img")));
  const boxImages = shown.map(i => [decodeURIComponent(i.src).split("/").pop(), i.naturalWidth > 0]);
  document.dispatchEvent(new KeyboardEvent("keydown", {key: "Escape"}));
  const closedByEscape = box.hidden;
  document.querySelector("#pairs a.zoom").click(); const reopened = !box.hidden;
  box.click(); const closedByClick = box.hidden;
  const probe = document.createElement("pre");
  probe.id = "probe";
  probe.textContent = JSON.stringify({
    images: images.length, loaded: images.filter(i => i.complete && i.naturalWidth > 0).length,
    rows: document.querySelectorAll("#pairs tbody tr").length, sorted, onlyFailed, onlyChelsea, textScream,
    boxBefore, opened, boxImages, cellHref: decodeURIComponent(cell.href).split("/").pop(), closedByEscape,
    reopened, closedByClick, zoomAreas: document.querySelectorAll(".gridbox a.area").length,
    failedAreas: Array.from(document.querySelectorAll(".gridbox span.area")).map(a => a.title),
    firstSection: document.querySelector("h2").textContent, card: document.querySelector(".card").textContent,
    injected: document.querySelectorAll(".failures i").length,
    failures: document.querySelector(".failures").textContent});
  document.body.appendChild(probe);
});
</script>"""


def _chromium(*arguments: str) -> subprocess.CompletedProcess:
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("chromium is not installed and could not be (make test installs Debian's chromium package)")
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [
                executable,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                *arguments,
            ],
            capture_output=True,
            text=True,
            timeout=90,
        )


def test_the_report_page_in_headless_chromium(photos):
    pairs = _pairs(photos, "content,style\nphotos,styles\n")  # 6 pairs, one failed
    broken = next(p for p in pairs if "coffee" in p.content and "scream" in p.styles[0])
    _record(pairs, str(photos / "out" / "results"), "r1", 0, failed={broken.pair_id})
    page = photos / "out" / "report.html"
    report = report_from_results(str(photos / "out" / "results"), str(page), storage=LOCAL)
    assert (report.pairs, report.failed) == (6, 1) and page.stat().st_size < 1_000_000
    assert "://" not in re.sub(r'src="data:[^"]*"', "", page.read_text())  # self-contained: nothing fetched

    probed = page.with_name("probed.html")
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = _chromium("--virtual-time-budget=5000", "--dump-dom", probed.as_uri())
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout, re.S)
    assert found, dom.stderr[-2000:]
    facts = json.loads(found.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
    assert facts["images"] == 1 + 5 + 5  # the grid, a thumbnail and a loss-curve plot per succeeded pair
    assert facts["loaded"] == facts["images"]  # every image decoded: naturalWidth > 0
    assert facts["rows"] == len(pairs)
    losses = [float(v) for v in facts["sorted"] if v is not None]
    assert len(losses) == 5 and losses == sorted(losses)  # the heading click sorted by value
    assert (facts["onlyFailed"], facts["onlyChelsea"], facts["textScream"]) == (1, 2, 3)  # the filters
    # The grid's cells open the output large beside its content and style; Escape or a click closes it.
    assert facts["zoomAreas"] == 5 and facts["failedAreas"] == [BROKEN]
    assert facts["boxBefore"] and facts["opened"] and facts["closedByEscape"]
    assert facts["reopened"] and facts["closedByClick"]
    first = pairs[0]  # the first cell: chelsea x starry_night
    assert facts["cellHref"] == Path(first.output).name
    assert facts["boxImages"] == [[Path(first.output).name, True], ["chelsea.jpg", True], ["starry_night.jpg", True]]
    assert facts["firstSection"] == "Failures (1)"  # failures first when there are any
    assert "wall time" in facts["card"] and "pairs per hour" in facts["card"]
    assert facts["injected"] == 0 and BROKEN in facts["failures"]  # the reason shown as text, not markup

    shot = photos / "report.png"
    _chromium("--window-size=1200,1600", f"--screenshot={shot}", page.as_uri())
    screenshot = np.asarray(Image.open(shot).convert("RGB"), np.float32)
    assert screenshot.shape == (1600, 1200, 3) and screenshot.std() > 20  # a page with pictures, not a blank


HOSTILE = {"chelsea": "<script>alert(1)<script>.jpg", "coffee": '"><img src=x onerror=alert(2)>.jpg'}


class _Page(HTMLParser):
    """Every element of a page with its attributes, and its text, as a browser's parser reads them."""

    def __init__(self, page: str):
        super().__init__()
        self.elements, self.text = [], []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def test_text_from_file_names_and_outputs_cannot_inject_markup_or_links(samples):
    """Photos named like markup, and an output named like a javascript: URL next to the page (the
    flow's page is OUT/reports/RUN.html): the page a parser reads holds only its own script and
    event handlers, and every link is relative, file:// or https (the names stay text)."""
    root = samples("photos", **HOSTILE)
    samples("styles", "the_scream")
    pairs = _pairs(root, "content,style\nphotos,styles\n")
    # Whatever a manifest allows, the table can hold such a name: the page must be safe for any.
    hostile_output = str(root / "out" / "reports" / "javascript:alert(document.domain).png")
    pairs = [dataclasses.replace(pairs[0], output=hostile_output), pairs[1]]
    _record(pairs, str(root / "out" / "results"), "r1", 0, failed={pairs[1].pair_id})
    page = root / "out" / "reports" / "r1.html"
    report_from_results(str(root / "out" / "results"), str(page), storage=LOCAL)

    parsed = _Page(page.read_text())
    assert [tag for tag, _ in parsed.elements].count("script") == 1  # the page's own, at the end
    handlers = {(tag, name) for tag, attrs in parsed.elements for name in attrs if name.startswith("on")}
    assert handlers == {("th", "onclick"), ("select", "onchange"), ("input", "oninput"), ("div", "onclick")}
    links = [attrs["href"] for _, attrs in parsed.elements if "href" in attrs]
    zoomed = [json.loads(attrs["data-pair"]) for _, attrs in parsed.elements if "data-pair" in attrs]
    links += [link for data in zoomed for link in (data["output"], data["content"], *data["styles"])]
    assert links and {urlsplit(link).scheme for link in links} == {""}  # all relative: the files are local
    assert {src.split(":")[0] for _, attrs in parsed.elements for src in [attrs.get("src")] if src} == {"data"}
    # The output's link is its file, named as it is.
    assert unquote(zoomed[0]["output"]) == "javascript:alert(document.domain).png"
    assert (page.parent / unquote(zoomed[0]["output"])).exists()
    assert all((page.parent / unquote(link)).exists() for link in zoomed[0]["styles"] + [zoomed[0]["content"]])
    text = "".join(parsed.text)
    assert "<script>alert(1)<script>" in text and '"><img src=x onerror=alert(2)>' in text  # shown as text


def _on_s3(pairs):
    """The pairs with their outputs under s3://nst-test/out (photos and paintings stay local)."""
    return [dataclasses.replace(p, output=f"s3://nst-test/out/{Path(p.output).name}") for p in pairs]


def test_grid_and_report_read_and_write_s3(photos, s3):
    fs, options = s3
    pairs = _on_s3(_pairs(photos, "content,style\nphotos/chelsea.jpg,styles\n"))
    _record(pairs, "s3://nst-test/results", "r1", 0, storage=Storage(options))
    grid = grid_from_results(
        "s3://nst-test/results", "s3://nst-test/grids/grid.jpg", options=OPTIONS, storage=Storage(options)
    )
    assert Image.open(io.BytesIO(fs.cat("nst-test/grids/grid.jpg"))).size == grid.image.size
    report_from_results("s3://nst-test/results", "s3://nst-test/grids/report.html", storage=Storage(options))
    page = fs.cat("nst-test/grids/report.html").decode()
    assert page.count("<tr") == 1 + 2  # heading and two pairs
    # Links a browser can open: presigned http(s) URLs that fetch the outputs, not s3:// ones.
    links = set(re.findall(r'href="([^"]+)"', page))
    assert links and not any(link.startswith("s3://") for link in links)
    assert all(3590 < link_lifetime(html.unescape(link)) <= 3600 for link in links)  # NST_LINK_SECONDS' default
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in page
    for pair in pairs:
        signed = html.unescape(next(link for link in links if Path(pair.output).name + "?" in link))
        assert signed.startswith(options["endpoint_url"]) and "Signature" in signed
        assert requests.get(signed, timeout=10).content == fs.cat(pair.output)


def test_the_report_artifact_links_a_presigned_page_on_s3(prefect_api, photos, s3):
    """The Prefect UI opens the report from its link: on S3 a presigned https link, not s3://."""
    import logging

    from flows.report import publish_report

    fs, options = s3
    pairs = _on_s3(_pairs(photos, "content,style\nphotos/chelsea.jpg,styles\n"))
    _record(pairs, "s3://nst-test/results", "r-s3", 0, storage=Storage(options))
    page = publish_report(
        "r-s3", "s3://nst-test/results", "s3://nst-test/styled", Storage(options), logging.getLogger()
    )
    assert page == "s3://nst-test/styled/reports/r-s3.html"
    link = artifacts("stylize-report")[0].data
    signed = re.search(r"\((http[^)]+)\)", link).group(1)
    assert "Signature" in signed and requests.get(signed, timeout=10).content == fs.cat(page)
    table = artifacts("stylize-pairs")[0].data
    outputs = [row["output"] for row in (json.loads(table) if isinstance(table, str) else table)]
    assert all(requests.get(url, timeout=10).ok for url in outputs)


def test_the_cli_writes_grids_and_names_bad_axes(photos):
    pairs = _pairs(photos, "content,style\nphotos,styles/the_scream.jpg\n")
    _record(pairs, str(photos / "out" / "results"), "r1", 0)
    command = nst(
        "grid", str(photos / "out" / "results"), "-o", str(photos / "g.png"), "--cell", "40", "--background", "#202020"
    )
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    grid = Image.open(photos / "g.png").convert("RGB")
    assert grid.size == grid_size(3, 1, row_headers=True, col_headers=True, options=GridOptions(cell=40))
    assert grid.getpixel((1, 1)) == (32, 32, 32)
    bad = subprocess.run(command + ["--cols", "colour"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "cannot lay out 'colour'" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.backends
def test_the_flow_attaches_its_grid_report_and_pairs(prefect_api, photos, weights_path):
    from flows.pipeline import PairsFailedError, run_manifest

    (photos / "m.csv").write_text(
        'content,style,sweep\nphotos/chelsea.jpg,styles/the_scream.jpg,"style_weight=1,100"\n'
        "photos/missing.jpg,styles/the_scream.jpg,\n"
    )
    with pytest.raises(PairsFailedError):
        run_manifest(
            str(photos / "m.csv"),
            str(photos / "out"),
            weights=weights_path,
            overrides={"size": 32, "iterations": 4, "tolerance": 0.0},
        )
    table = read_results(str(photos / "out" / "results"), storage=LOCAL)
    run_id = table.run_id.iloc[0]
    grid = artifacts("stylize-grid")[0]
    assert run_id in grid.description and run_id in grid.data
    encoded = re.search(r"\(data:image/jpeg;base64,([A-Za-z0-9+/=]+)\)", grid.data).group(1)
    thumbnail = Image.open(io.BytesIO(base64.b64decode(encoded)))
    full = Image.open(photos / "out" / "reports" / f"{run_id}-grid.jpg")
    assert (
        max(thumbnail.size) == min(640, max(full.size))
        and abs(thumbnail.width / thumbnail.height - full.width / full.height) < 0.02
    )
    link = artifacts("stylize-report")[0]
    page = photos / "out" / "reports" / f"{run_id}.html"
    assert link.type == "markdown" and f"({page.as_uri()})" in link.data and page.exists()  # a link artifact
    rows = artifacts("stylize-pairs")[0].data
    rows = json.loads(rows) if isinstance(rows, str) else rows
    assert sorted(r["status"] for r in rows) == ["failed", "succeeded", "succeeded"]
    assert {r["swept"] for r in rows if r["status"] == "succeeded"} == {"style_weight=1", "style_weight=100"}
    assert len(table) == 3 and set(table[table.status == "succeeded"].content_loss_history.map(len)) == {4}
    assert table.flow_run_url.iloc[0] in page.read_text()  # the report links its Prefect flow run
    # One batch of the two readable pairs (same size and structure; the missing file fails in planning),
    # named by its first pair's photo and painting.
    assert _batch_task_names(table.flow_run_id.iloc[0]) == ["chelsea x the_scream +1"]


def _batch_task_names(flow_run_id: str) -> list[str]:
    """The names of a flow run's stylize-batch task runs, as the Prefect UI lists them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [flow_run_id]}))
    return sorted(run.name for run in runs if not run.name.startswith("load-network"))


def test_a_report_that_cannot_be_written_does_not_fail_the_run(prefect_api, photos, weights_path, caplog):
    from flows.pipeline import run_manifest

    (photos / "out").mkdir()
    (photos / "out" / "reports").write_text("a file where the reports folder would go")
    (photos / "m.csv").write_text("content,style\nphotos/chelsea.jpg,styles/the_scream.jpg\n")
    outcome = run_manifest(
        str(photos / "m.csv"), str(photos / "out"), weights=weights_path, overrides={"size": 32, "iterations": 2}
    )
    assert outcome["succeeded"] == 1
    assert "run report not written" in caplog.text


class _Browser:
    """A tab of headless Chromium driven over the DevTools protocol, with a laptop's or a phone's
    viewport (a phone's, `mobile`, is laid out as the page's viewport meta says, as on a phone):
    a `--headless` window alone is never narrower than 500 px."""

    def __init__(self, profile: Path):
        import time

        from websockets.sync.client import connect

        executable = shutil.which("chromium") or shutil.which("chromium-browser")
        if executable is None:
            pytest.skip("chromium is not installed and could not be (make test installs Debian's chromium package)")
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
        flags += ["--disable-background-networking", "--disable-component-update", "--remote-debugging-port=0"]
        self.process = subprocess.Popen(
            [executable, *flags, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file, deadline = profile / "DevToolsActivePort", time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):  # Chromium writes its port there
            assert time.monotonic() < deadline and self.process.poll() is None, "chromium did not start"
            time.sleep(0.1)
        targets = requests.get(f"http://127.0.0.1:{port_file.read_text().split()[0]}/json/list", timeout=10).json()
        page = next(target for target in targets if target["type"] == "page")
        self.socket = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
        self.calls = 0

    def call(self, method: str, wait_for: str | None = None, **params) -> dict:
        """The command's result; with `wait_for`, once that event has come too."""
        self.calls += 1
        self.socket.send(json.dumps({"id": self.calls, "method": method, "params": params}))
        result, waited = None, wait_for is None
        while result is None or not waited:
            message = json.loads(self.socket.recv(timeout=60))
            if message.get("id") == self.calls:
                assert "error" not in message, message
                result = message["result"]
            waited = waited or message.get("method") == wait_for
        return result

    def open(self, url: str, width: int, mobile: bool) -> None:
        self.width = width
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=900, deviceScaleFactor=1, mobile=mobile)
        self.call("Page.enable")
        self.call("Page.navigate", wait_for="Page.loadEventFired", url=url)

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"]["value"]

    def screenshot(self, height: int) -> bytes:
        """The window's width of the page's top `height` pixels (or all of it, when shorter), as PNG."""
        tall = self.call("Page.getLayoutMetrics")["cssContentSize"]["height"]
        clip = {"x": 0, "y": 0, "width": self.width, "height": min(tall, height), "scale": 1}
        return base64.b64decode(self.call("Page.captureScreenshot", captureBeyondViewport=True, clip=clip)["data"])

    def close(self) -> None:
        self.socket.close()
        self.process.terminate()
        self.process.wait(timeout=30)


def _report_of_twelve_pairs(samples) -> tuple[Path, object]:
    """(the page, its Report) of a run of 4 photos, one with a long name, x 3 paintings, one pair failed."""
    root = samples("photos", "chelsea", "coffee", "rocket", astronaut="Été à Paris — café 01.jpg")
    samples("styles", "starry_night", "the_scream", "shipwreck")
    pairs = _pairs(root, "content,style\nphotos,styles\n")
    _record(pairs, str(root / "out" / "results"), "20261205T020000-1a2b3c", 0, failed={pairs[5].pair_id})
    page = root / "out" / "reports" / "20261205T020000-1a2b3c.html"
    return page, report_from_results(str(root / "out" / "results"), str(page), storage=LOCAL)


# What the page measures of itself: its width against the window's, and the grid's shown width.
MEASURE = """JSON.stringify({window: innerWidth, page: document.documentElement.scrollWidth,
  grid: document.querySelector("img.grid").getBoundingClientRect().width,
  file: document.querySelector("#pairs tbody tr td:last-child").getBoundingClientRect().right})"""


def test_the_report_fits_a_laptop_and_a_phone_in_headless_chromium(samples, tmp_path):
    """At 1400 px (a laptop) and 400 px (a phone) the page is no wider than the window, so nothing is
    cut off (the file column included), and the grid's labels, drawn into its picture, show at 11 px
    or more; the phone lays the page out at its own width (the viewport meta), not a shrunk desktop's."""
    from flows.report import REPORT_FONT

    page, report = _report_of_twelve_pairs(samples)
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page.read_text()
    browser = _Browser(tmp_path / "profile")
    try:
        for width, mobile in ((1400, False), (400, True)):
            browser.open(page.as_uri(), width, mobile)
            facts = json.loads(browser.evaluate(MEASURE))
            assert facts["window"] == width, facts  # without the viewport meta a phone lays out 980 px and shrinks it
            assert facts["page"] <= width and facts["file"] <= width, facts  # no sideways scrolling
            label = REPORT_FONT * facts["grid"] / report.grids[0].width  # the labels' height as shown
            assert label >= 11, f"{width} px: grid labels {label:.1f} px high"
    finally:
        browser.close()
