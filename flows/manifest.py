"""Manifests: which content x style pairs to stylize, with which parameters.

A manifest is a CSV or Parquet table (local or S3) with columns `content` and
`style`, optional `output`, and any StyleParams field as a per-row override.
A cell may name one image, a folder or S3 prefix, or a glob; it expands to every
image it matches, crossed with the other side. Every row is checked before any
work starts, and every bad row is reported at once.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import posixpath
import re
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pandas as pd

from nst_core.errors import ImageError
from nst_core.image_io import HEIF_EXTENSIONS, check_header, default_extension, encoding_problem
from nst_core.params import StyleParams, as_text
from nst_core.storage import Storage, absolute, join_uri

from .sweeps import parse_sweep, swept_params

REQUIRED = ("content", "style")
OPTIONAL = ("output", "sweep")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", *HEIF_EXTENSIONS)
OUTPUT_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff")  # what nst_core's save_image writes
WILDCARD = re.compile(r"[*?\[]")  # a glob's special characters
BLEND_SEPARATOR = re.compile(r"\s+\+\s+")  # "a.jpg + b.jpg": one style blended from both; "a+b.jpg" is a name
# What a file or folder name cannot hold on Linux, macOS, Windows or as part of an S3 key's path.
UNSAFE_IN_NAMES = re.compile(r'[/\\:*?"<>|\x00-\x1f\x7f]')
NAME_BYTES = 100  # longest part of an output name, in UTF-8 bytes: photo + style + id stay under 255


class ManifestError(ValueError):
    """The manifest cannot run; `problems` lists (row number or None, reason)."""

    def __init__(self, uri: str, problems: list[tuple[int | None, str]]):
        self.problems = problems
        rows = {row for row, _ in problems if row is not None}
        head = (
            f"{uri}: {len(rows)} bad row{'s' if len(rows) != 1 else ''}" if rows else f"{uri}: cannot use this manifest"
        )
        by_row: dict[int | None, list[str]] = {}
        for row, reason in sorted(problems, key=lambda p: -1 if p[0] is None else p[0]):  # stable: keeps reasons' order
            by_row.setdefault(row, []).append(reason)
        lines = [
            f"  {'manifest' if row is None else f'row {row}'}: {'; '.join(reasons)}" for row, reasons in by_row.items()
        ]
        super().__init__("\n".join([head + ":", *lines]))


@dataclass(frozen=True)
class Pair:
    """One stylization: a content image, its style image(s), parameters, where the output goes."""

    row: int
    content: str
    styles: tuple[str, ...]
    params: StyleParams
    pair_id: str
    output: str
    sweep: str = ""  # the sweep this pair is one value of (its row's, or `--sweep`); "" for none
    # Which version of the files this pair saw (size + mtime, or S3 ETag): a file replaced
    # under the same name is redone. Not part of pair_id, so the output keeps its name.
    content_fingerprint: str | None = None
    style_fingerprint: str | None = None
    # (pair_id, params) as earlier defaults made this pair: found done in the ledger, it is not redone.
    earlier: tuple[tuple[str, StyleParams], ...] = ()
    # Where earlier versions wrote this pair (flat, ASCII letters only): found done there, it is not redone.
    former_output: str | None = None

    @property
    def files(self) -> tuple[str, ...]:
        """The photo and its painting(s)."""
        return (self.content, *self.styles)


def read_manifest(uri: str, storage: Storage) -> pd.DataFrame:
    """The manifest as a table of strings (empty cells are "")."""
    kind = "parquet" if uri.lower().endswith((".parquet", ".pq")) else "csv" if uri.lower().endswith(".csv") else None
    if kind is None:
        raise ManifestError(uri, [(None, "unknown manifest type; use .csv, .parquet or .pq")])
    try:
        with storage.open(uri) as handle:
            if kind == "parquet":
                table = pd.read_parquet(handle)
                # Typed Parquet columns become text, so both formats go through StyleParams.parse.
                table = table.astype(object).where(table.notna(), "").astype(str)
            else:
                table = _csv_table(uri, handle.read())
    except FileNotFoundError:
        raise ManifestError(uri, [(None, "file not found")]) from None
    except ManifestError:
        raise
    except (ValueError, UnicodeDecodeError, OSError, csv.Error) as error:  # pyarrow's parse errors are ValueErrors
        raise ManifestError(uri, [(None, f"cannot read it as {kind} ({error})")]) from None
    table.columns = [str(c).strip() for c in table.columns]
    return table


def _csv_table(uri: str, data: bytes | str) -> pd.DataFrame:
    """A CSV manifest's cells as a table of strings, a missing cell "". A row with more cells than the
    header is refused, naming it: pandas would shift such rows a column (a pair on the wrong photo) or
    drop the cells. Empty cells past the header, as a trailing comma leaves, are no cells."""
    text = data.decode("utf-8-sig") if isinstance(data, bytes) else data
    rows = [row for row in csv.reader(io.StringIO(text, newline=""), skipinitialspace=True) if row not in ([], [""])]
    if not rows:
        raise ManifestError(uri, [(None, "the manifest is empty (no header, no rows)")])
    header = [name.strip() for name in rows[0]]
    while header and not header[-1]:
        header.pop()
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise ManifestError(uri, [(None, f"column(s) {', '.join(map(repr, repeated))} given more than once")])
    problems = [
        (
            number,
            f"{len(row)} cells for the header's {len(header)} columns ({', '.join(header)}); a cell holding "
            "a comma needs quotes",
        )
        for number, row in enumerate(rows[1:], start=1)
        if any(cell.strip() for cell in row[len(header) :])
    ]
    if problems:
        raise ManifestError(uri, problems)
    return pd.DataFrame([(row + [""] * len(header))[: len(header)] for row in rows[1:]], columns=header, dtype=str)


def _check_columns(table: pd.DataFrame) -> list[tuple[None, str]]:
    problems = [(None, f"missing required column {name!r}") for name in REQUIRED if name not in table.columns]
    allowed = REQUIRED + OPTIONAL + StyleParams.field_names()
    unknown = [c for c in table.columns if c not in allowed]
    if unknown:
        problems.append((None, f"unknown column(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}"))
    if not problems and table.empty:
        problems.append((None, "the manifest has no rows"))
    return problems


def _row_params(cells: dict, base: StyleParams, overrides: dict) -> tuple[StyleParams | None, list[str]]:
    """The row's parameters (base, then its non-empty cells, then `overrides`), or the reasons it has none."""
    values, reasons = {}, []
    for name in StyleParams.field_names():
        text = cells.get(name, "").strip()
        if text and name not in overrides:  # an overridden cell is not used: overridden_cells warns if it is bad
            try:
                values[name] = StyleParams.parse(name, text)
            except ValueError as error:
                reasons.append(str(error))
    try:  # the cells that did parse are range-checked too, so one pass reports everything
        params = base.replace(**values, **overrides)
    except ValueError as error:
        return None, reasons + str(error).split("; ")
    return (None, reasons) if reasons else (params, [])


def overridden_cells(uri: str, rows: list[tuple[int, dict, StyleParams, str | None]], overrides: dict) -> list[str]:
    """One line per flag that replaced manifest cells of another value (the command line is what the
    user typed last), and one per replaced cell that is not valid itself, naming its row: the run uses
    the flag's value, and the manifest would fail on that cell without the flag."""
    lines = []
    for name, value in overrides.items():
        replaced = [(n, cell) for n, cells, _, _ in rows if _differs(name, cell := cells.get(name, "").strip(), value)]
        if not replaced:
            continue
        flag = f"--{name.replace('_', '-')} {as_text(value)}"
        lines.append(f"{flag} replaced the manifest's {name} on {len(replaced)} row{'s' if len(replaced) > 1 else ''}")
        lines += [
            f"{uri}: row {number}: {problem}; {flag} is used instead"
            for number, cell in replaced
            if (problem := _cell_problem(name, cell))
        ]
    return lines


def _cell_problem(name: str, cell: str) -> str | None:
    """What is wrong with one parameter cell on its own (its type, its range), or None."""
    try:
        value = StyleParams.parse(name, cell)
    except ValueError as error:
        return str(error)
    return next(spec for spec in StyleParams.specs() if spec.name == name).problem(value)


def _differs(name: str, cell: str, value) -> bool:
    """Whether a non-empty cell says something other than `value` (a cell that does not parse does)."""
    if not cell:
        return False
    try:
        return StyleParams.parse(name, cell) != value
    except ValueError:
        return True


def _output_problem(output: str, output_format: str | None = None) -> str | None:
    normalized = posixpath.normpath(output.replace("\\", "/"))
    if (
        output.startswith(("/", "\\"))
        or re.match(r"^[A-Za-z]:", output)
        or "://" in output
        or normalized == ".."
        or normalized.startswith("../")
    ):
        return f"output {output!r} must be a relative path inside the output root"
    if not normalized.lower().endswith(OUTPUT_EXTENSIONS):
        return f"output {output!r} needs an image extension ({', '.join(OUTPUT_EXTENSIONS)})"
    problem = encoding_problem(output, output_format)
    return f"output {output!r}: {problem}" if problem else None


def _sweep_text(cells: dict, sweep: str | None) -> str:
    """The row's own sweep cell, else the run's `--sweep`."""
    return cells.get("sweep", "").strip() or (sweep or "")


def blend_problem(params: StyleParams, styles: int) -> str | None:
    """Why `params.style_blend` does not fit `styles` style images (one weight each), or None."""
    if params.style_blend is not None and len(params.style_blend) != styles:
        return f"style_blend has {len(params.style_blend)} weights for {styles} style image(s)"
    return None


def _check_row(
    cells: dict, base: StyleParams, overrides: dict, sweep: str | None = None, output_format: str | None = None
) -> tuple[StyleParams | None, list[str]]:
    """The row's parameters, and every reason the row cannot run."""
    reasons = [f"missing {name}" for name in REQUIRED if not cells.get(name, "").strip()]
    params, param_reasons = _row_params(cells, base, overrides)
    reasons += param_reasons
    variants = []
    if params:
        try:
            variants = swept_params(params, _sweep_text(cells, sweep))
        except ValueError as error:
            reasons.append(str(error))
    blended = len(BLEND_SEPARATOR.split(cells.get("style", "").strip()))
    reasons += sorted({problem for problem in (blend_problem(v, blended) for v in variants) if problem})
    output = cells.get("output", "").strip()
    if output and _output_problem(output, output_format):
        reasons.append(_output_problem(output, output_format))
    return params, reasons


def validate_manifest(
    uri: str,
    *,
    defaults: StyleParams = StyleParams(),
    overrides: dict | None = None,
    storage: Storage,
    sweep: str | None = None,
    output_format: str | None = None,
) -> list[tuple[int, dict, StyleParams, str | None]]:
    """(row number, cells, parameters, output) per row, or ManifestError listing every bad row.

    Parameters: defaults < the row's own cells < `overrides` (CLI flags: typed last). `sweep`
    applies to rows without a `sweep` cell; an `output` cell must fit `output_format` (png16: .png). Touches no image, so it is cheap enough to
    run before anything starts.
    """
    table = read_manifest(uri, storage)
    problems = _check_columns(table)
    if problems:
        raise ManifestError(uri, problems)
    overrides = overrides or {}
    try:
        defaults.replace(**overrides)
    except TypeError as error:  # an unknown field name; bad values raise ValueError themselves
        raise ValueError(f"overrides: {error}") from None
    if sweep:
        parse_sweep(sweep)  # a bad --sweep is one error, not one per row
    rows = []
    for number, cells in enumerate(table.to_dict("records"), start=1):
        params, reasons = _check_row(cells, defaults, overrides, sweep, output_format)
        problems += [(number, reason) for reason in reasons]
        if not reasons:
            rows.append((number, cells, params, cells.get("output", "").strip() or None))
    if problems:
        raise ManifestError(uri, problems)
    return rows


def _resolve(cell: str, base_dir: str) -> str:
    """A cell's path as a URI: URLs and absolute paths as they are, others relative to the manifest."""
    cell = os.path.expanduser(cell)
    if "://" in cell or os.path.isabs(cell):
        return cell
    if "://" in base_dir:  # "./" and "../" are resolved here: S3 keys would keep them literally
        scheme, path = base_dir.split("://", 1)
        return f"{scheme}://{posixpath.normpath(posixpath.join(path, cell))}"
    return os.path.abspath(os.path.join(base_dir, cell))


def fingerprint(info: dict) -> str:
    """Which version of a file a listing saw: its S3 ETag, else its size and modification time."""
    etag = info.get("ETag") or info.get("etag")
    if etag:
        return "etag:" + etag.strip('"')
    modified = info.get("mtime") or info.get("LastModified") or info.get("last_modified")
    return f"size:{info.get('size')} mtime:{modified}"


def list_images(uri: str, storage: Storage, exclude: str | None = None) -> tuple[dict[str, str | None], list[str]]:
    """(every image a cell names, with its fingerprint; warnings): itself, everything under a
    folder or prefix, or a glob's matches. One listing per cell; the listing's details give the fingerprints.

    A path that does not exist stays as it is, without a fingerprint: its pair fails alone,
    later, with "file not found". Hidden files and anything under `exclude` (the output root)
    are skipped, so outputs written inside a content folder are not stylized again on the next run.
    A folder's or glob's entries that are not regular files (a FIFO, a socket, a broken or looping
    link) are skipped with a warning: opening a FIFO would block the run.
    """
    fs, path = storage.fs(uri)
    try:
        if is_pattern(uri, storage):
            matches = fs.glob(path, detail=True)
        else:
            info = fs.info(path)
            if info["type"] != "directory":
                return {uri: fingerprint(info)}, []
            matches = fs.find(path, detail=True)
    except OSError:  # missing, or listing denied: kept as one path, whose pair then fails with the real reason
        return {uri: None}, []
    protocol = uri.split("://")[0] + "://" if "://" in uri else ""
    found = {(protocol + m if protocol and not m.startswith(protocol) else m): info for m, info in matches.items()}
    images = [
        u
        for u in sorted(found)
        if u.lower().endswith(IMAGE_EXTENSIONS)
        and found[u].get("type") != "directory"
        and not posixpath.basename(u).startswith(".")
        and not (exclude and u.startswith(exclude))
    ]
    odd = [u for u in images if found[u].get("type") != "file"]
    warnings = [f"{u}: skipped, not a regular file (a FIFO, socket, device, or broken or looping link)" for u in odd]
    return {u: fingerprint(found[u]) for u in images if u not in odd}, warnings


def safe_name(text: str) -> str:
    """`text` as a file or folder name that works on Linux, macOS, Windows and in S3: letters of every
    script and spaces kept (NFC: one spelling of "é" whichever system listed it), only / \\ : * ? " < > |
    and control characters replaced by "_", trailing dots and spaces dropped (Windows drops them), cut to
    NAME_BYTES."""
    return _clipped(UNSAFE_IN_NAMES.sub("_", unicodedata.normalize("NFC", text)).strip(" ").rstrip(". "))


def _clipped(text: str) -> str:
    """At most NAME_BYTES of UTF-8, cut between characters."""
    return text.encode()[:NAME_BYTES].decode(errors="ignore")


def display_name(uri: str) -> str:
    """The file's own name without its extension: "Été à Paris.jpg" -> "Été à Paris" (labels, titles)."""
    return os.path.splitext(posixpath.basename(uri.replace("\\", "/").rstrip("/")))[0]


def file_stem(uri: str) -> str:
    """The file's name without its extension, safe in an output name (safe_name)."""
    return safe_name(display_name(uri)) or "image"


def _former_stem(uri: str) -> str:
    """file_stem as earlier versions made it, ASCII letters, digits and -_. only: "Été.jpg" -> "_t_"."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", display_name(uri)) or "image"


def is_pattern(uri: str, storage: Storage) -> bool:
    """Whether a cell is a glob: it holds `*`, `?` or `[` and names no file or folder that exists, so
    a photo named "IMG [1].jpg" is that photo, not a pattern matching "IMG 1.jpg"."""
    return bool(WILDCARD.search(uri)) and not storage.exists(uri)


def listing_root(uri: str, storage: Storage) -> str:
    """Where a cell's listing starts: the folder or prefix it names, a glob's folder above its first
    wildcard, or a single file itself."""
    if is_pattern(uri, storage):
        return uri[: WILDCARD.search(uri).start()].rsplit("/", 1)[0]
    return uri.rstrip("/")


def album(image: str, root: str) -> str:
    """The image's folders below `root` (listing_root), each a safe_name: "trips/Été" for
    ROOT/trips/Été/a.jpg, "" for an image directly in root."""
    image, root = image.replace("\\", "/"), root.replace("\\", "/")
    if not image.startswith(root + "/"):
        return ""
    return "/".join(safe_name(folder) or "_" for folder in image[len(root) + 1 :].split("/")[:-1])


def pair_id(content: str, styles: tuple[str, ...], params: StyleParams) -> str:
    return hashlib.sha256("\n".join([content, *styles, params.hash()]).encode()).hexdigest()[:16]


def make_pair(
    row: int,
    content: str,
    styles: tuple[str, ...],
    params: StyleParams,
    out_root: str,
    output: str | None = None,
    sweep: str = "",
    fingerprints: dict[str, str | None] | None = None,
    explicit=frozenset(),
    extension: str = ".png",
    folder: str = "",
) -> Pair:
    """A pair with its id (content, styles, parameters), deterministic output URI (in `folder`, the
    photo's album, below `out_root`), the fingerprints of its files (`fingerprints`: URI -> fingerprint,
    from list_images), and its ids under earlier defaults (`explicit`: the fields the user set, which
    kept their value)."""
    digest = pair_id(content, styles, params)
    root = absolute(out_root)
    former = None
    if output is None:
        styles_stem = _clipped("+".join(file_stem(s) for s in styles))
        output = posixpath.join(folder, f"{file_stem(content)}--{styles_stem}--{digest[:8]}{extension}")
        former_name = f"{_former_stem(content)}--{'+'.join(_former_stem(s) for s in styles)}--{digest[:8]}{extension}"
        former = join_uri(root, former_name)
    seen = fingerprints or {}
    style_fingerprint = " + ".join(str(seen.get(s)) for s in styles) if any(seen.get(s) for s in styles) else None
    earlier = tuple((pair_id(content, styles, old), old) for old in params.earlier(explicit))
    uri = join_uri(root, output)
    return Pair(
        row,
        content,
        styles,
        params,
        digest,
        uri,
        sweep,
        seen.get(content),
        style_fingerprint,
        earlier,
        former if former != uri else None,
    )


def _row_images(number: int, cells: dict, base_dir: str, storage: Storage, exclude: str, warnings: list[str]):
    """(contents with their albums, style tuples, fingerprints, problems) of one row: a plain style is
    crossed, a blend is one style; each content's album is its folder below the cell's listing_root;
    fingerprints maps every image URI to its fingerprint. Skipped files are added to `warnings`."""
    content = _resolve(cells["content"].strip(), base_dir)
    parts = [_resolve(s, base_dir) for s in BLEND_SEPARATOR.split(cells["style"].strip())]
    listed = [list_images(p, storage, exclude) for p in [content, *parts]]
    warnings += [warning for _, skipped in listed for warning in skipped]
    contents, *expanded = [images for images, _ in listed]
    fingerprints = {k: v for images in [contents, *expanded] for k, v in images.items()}
    albums = {c: album(c, listing_root(content, storage)) for c in contents}
    if len(parts) == 1:
        return albums, [(s,) for s in expanded[0]], fingerprints, []
    problems = [
        (number, f"a blended style must name single images; {p!r} matches {len(e)}")
        for p, e in zip(parts, expanded)
        if len(e) != 1
    ]
    return albums, [] if problems else [tuple(next(iter(e)) for e in expanded)], fingerprints, problems


def _row_pairs(
    number: int,
    cells: dict,
    params: StyleParams,
    output: str | None,
    base_dir: str,
    out_root: str,
    storage: Storage,
    sweep: str | None,
    warnings: list[str],
    flags=frozenset(),
    extension: str = ".png",
) -> tuple[list[Pair], list[tuple[int, str]]]:
    """One row's pairs (contents crossed with styles crossed with swept values), or the reasons it has none."""
    exclude = f"{out_root.rstrip('/')}/" if "://" in out_root else os.path.join(os.path.abspath(out_root), "")
    contents, style_sets, fingerprints, problems = _row_images(number, cells, base_dir, storage, exclude, warnings)
    sweep = _sweep_text(cells, sweep)
    variants = swept_params(params, sweep)  # already checked by validate_manifest
    explicit = {
        *flags,
        *(name for name, _ in parse_sweep(sweep)),
        *(name for name in StyleParams.field_names() if cells.get(name, "").strip()),
    }
    count = len(contents) * len(style_sets) * len(variants)
    if output and count > 1:
        problems.append((number, f"output {output!r} names one file, but the row expands to {count} pairs"))
    if problems:
        return [], problems
    return [
        make_pair(number, c, s, v, out_root, output, sweep, fingerprints, explicit, extension, folder)
        for c, folder in contents.items()
        for s in style_sets
        for v in variants
    ], []


def _drop_duplicates(uri: str, pairs: list[Pair]) -> tuple[list[Pair], list[str], list[tuple[int, str]]]:
    """The first of each pair_id (the same work twice would only overwrite itself); two pairs
    writing one file are a problem, since the second would silently replace the first."""
    kept, repeats, problems, writers = {}, {}, [], {}
    for pair in pairs:
        if pair.pair_id in kept:
            repeats[pair.row] = repeats.get(pair.row, 0) + 1
            continue
        kept[pair.pair_id] = pair
        if writers.setdefault(pair.output, pair.row) != pair.row:
            problems.append((pair.row, f"output {pair.output} is also written by row {writers[pair.output]}"))
    warnings = [f"{uri}: row {row} repeats {n} pair(s) of earlier rows; each runs once" for row, n in repeats.items()]
    return list(kept.values()), warnings, problems


def _linked_outside(pairs: list[Pair], out_root: str) -> list[tuple[int, str]]:
    """A problem for each pair whose local output folder leads outside the output root through a
    symbolic link (OUT/shared -> /etc): the text of a path stays inside, where it resolves may not.
    Object storage has no links."""
    if "://" in out_root:
        return []
    root = os.path.realpath(out_root)
    folders = {folder: os.path.realpath(folder) for folder in {os.path.dirname(p.output) for p in pairs}}
    return [
        (p.row, f"output {p.output} is outside the output root: its folder leads to {real} through a link")
        for p in pairs
        if os.path.commonpath([root, real := folders[os.path.dirname(p.output)]]) != root
    ]


def expand_manifest(
    uri: str,
    out_root: str,
    *,
    defaults: StyleParams = StyleParams(),
    overrides: dict | None = None,
    storage: Storage,
    sweep: str | None = None,
    allow_empty: bool = True,
    output_format: str | None = None,
) -> tuple[list[Pair], list[str]]:
    """(pairs in row order, duplicates removed; warnings), or ManifestError listing every bad row.

    Outputs named here are `.png`, or `.tif` for `output_format` tiff16 (nst_core.image_io).

    A row matching no images is a warning; with `allow_empty` False, a manifest matching none
    at all is a ManifestError naming every row's patterns (a typo should not pass as "0 succeeded").
    """
    rows = validate_manifest(
        uri, defaults=defaults, overrides=overrides, storage=storage, sweep=sweep, output_format=output_format
    )
    base_dir = uri.rsplit("/", 1)[0] if "://" in uri else os.path.dirname(os.path.abspath(uri))
    pairs, warnings, problems, unmatched = [], [], [], []
    for number, cells, params, output in rows:
        row_pairs, row_problems = _row_pairs(
            number,
            cells,
            params,
            output,
            base_dir,
            out_root,
            storage,
            sweep,
            warnings,
            frozenset(overrides or {}),
            default_extension(output_format),
        )
        if not row_pairs and not row_problems:
            unmatched.append((number, f"{cells['content'].strip()!r} x {cells['style'].strip()!r} matches no images"))
        pairs += row_pairs
        problems += row_problems
    if not pairs and not problems and not allow_empty:
        raise ManifestError(uri, unmatched + [(None, "no images match any row; --allow-empty accepts that")])
    warnings += [f"{uri}: row {number}: {reason}; nothing to do for it" for number, reason in unmatched]
    pairs, repeat_warnings, collisions = _drop_duplicates(uri, pairs)
    problems += collisions + _linked_outside(pairs, out_root)
    if problems:
        raise ManifestError(uri, problems)
    return pairs, overridden_cells(uri, rows, overrides or {}) + warnings + repeat_warnings


def unreadable_files(pairs: list[Pair], storage: Storage) -> dict[str, str]:
    """The photos and paintings of `pairs` that cannot be stylized, as their headers tell (nothing
    decoded): URI -> the reason, naming the file. Read a few at a time (a GET each on S3). A network
    error is not the file's fault: that file is left to its pair's own load, which retries."""

    def problem(uri: str) -> str | None:
        try:
            check_header(uri, storage)
        except ImageError as error:
            return str(error)
        except Exception:  # noqa: BLE001 - the network, or a header only decoding can judge
            return None
        return None

    uris = {uri for pair in pairs for uri in pair.files}
    with ThreadPoolExecutor(max_workers=8) as pool:
        found = dict(zip(uris, pool.map(problem, uris)))
    return {uri: reason for uri, reason in found.items() if reason}
