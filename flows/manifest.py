"""Manifests: which content x style pairs to stylize, with which parameters.

A manifest is a CSV or Parquet table (local or S3) with columns `content` and
`style`, optional `output`, and any StyleParams field as a per-row override.
A cell may name one image, a folder or S3 prefix, or a glob; it expands to every
image it matches, crossed with the other side. Every row is checked before any
work starts, and every bad row is reported at once.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
from dataclasses import dataclass

import fsspec
import pandas as pd

from nst_core.params import StyleParams

REQUIRED = ("content", "style")
OPTIONAL = ("output",)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
OUTPUT_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff")
BLEND_SEPARATOR = " + "  # several style images blended into one style: "a.jpg + b.jpg"


class ManifestError(ValueError):
    """The manifest cannot run; `problems` lists (row number or None, reason)."""

    def __init__(self, uri: str, problems: list[tuple[int | None, str]]):
        self.problems = problems
        rows = {row for row, _ in problems if row is not None}
        head = f"{uri}: {len(rows)} bad row{'s' if len(rows) != 1 else ''}" if rows else f"{uri}: cannot use this manifest"
        lines = [f"  {'row ' + str(row) if row is not None else 'manifest'}: {reason}" for row, reason in problems]
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


def read_manifest(uri: str, storage_options: dict | None = None) -> pd.DataFrame:
    """The manifest as a table of strings (empty cells are "")."""
    try:
        with fsspec.open(uri, "rb", **(storage_options or {})) as handle:
            if uri.lower().endswith((".parquet", ".pq")):
                table = pd.read_parquet(handle).astype(str).replace({"None": "", "nan": ""})
            else:
                table = pd.read_csv(handle, dtype=str, keep_default_na=False, skipinitialspace=True)
    except FileNotFoundError:
        raise ManifestError(uri, [(None, "file not found")]) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as error:
        raise ManifestError(uri, [(None, f"cannot read it as CSV or Parquet ({error})")]) from None
    table.columns = [str(c).strip() for c in table.columns]
    return table


def _check_columns(table: pd.DataFrame) -> list[tuple[None, str]]:
    problems = [(None, f"missing required column {name!r}") for name in REQUIRED if name not in table.columns]
    allowed = REQUIRED + OPTIONAL + StyleParams.field_names()
    unknown = [c for c in table.columns if c not in allowed]
    if unknown:
        problems.append((None, f"unknown column(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}"))
    if not problems and table.empty:
        problems.append((None, "the manifest has no rows"))
    return problems


def _row_params(cells: dict, base: StyleParams) -> tuple[StyleParams | None, list[str]]:
    """The row's parameters (base overridden by its non-empty cells), or the reasons it has none."""
    values, reasons = {}, []
    for name in StyleParams.field_names():
        text = cells.get(name, "").strip()
        if text:
            try:
                values[name] = StyleParams.parse(name, text)
            except ValueError as error:
                reasons.append(str(error))
    if reasons:
        return None, reasons
    try:
        return base.replace(**values), []
    except ValueError as error:
        return None, str(error).split("; ")


def _output_problem(output: str) -> str | None:
    normalized = posixpath.normpath(output.replace("\\", "/"))
    if output.startswith(("/", "\\")) or "://" in output or normalized.startswith(".."):
        return f"output {output!r} must be a relative path inside the output root"
    if not normalized.lower().endswith(OUTPUT_EXTENSIONS):
        return f"output {output!r} needs an image extension ({', '.join(OUTPUT_EXTENSIONS)})"
    return None


def _resolve(cell: str, base_dir: str) -> str:
    """A cell's path as a URI: URLs and absolute paths as they are, others relative to the manifest."""
    if "://" in cell or os.path.isabs(cell):
        return cell
    if "://" in base_dir:
        return f"{base_dir.rstrip('/')}/{cell}"
    return os.path.abspath(os.path.join(base_dir, cell))


def _is_image(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


def expand_images(uri: str, storage_options: dict | None = None) -> list[str]:
    """Every image a cell names: itself, everything under a folder or prefix, or a glob's matches.

    A path that does not exist stays as it is: its pair fails alone, later, with "file not found".
    """
    fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    if re.search(r"[*?\[]", path):
        matches = fs.glob(path)
    elif fs.isdir(path):
        matches = fs.find(path)
    else:
        return [uri]
    protocol = uri.split("://")[0] + "://" if "://" in uri else ""
    return sorted(protocol + m if protocol and not m.startswith(protocol) else m for m in matches if _is_image(m))


def _stem(uri: str) -> str:
    name = posixpath.basename(uri.rstrip("/"))
    return re.sub(r"[^A-Za-z0-9._-]", "_", os.path.splitext(name)[0]) or "image"


def _join(root: str, name: str) -> str:
    return f"{root.rstrip('/')}/{name}" if "://" in root else os.path.join(os.path.abspath(root), name)


def make_pair(row: int, content: str, styles: tuple[str, ...], params: StyleParams, out_root: str,
              output: str | None = None) -> Pair:
    """A pair with its id (content, styles, parameters) and deterministic output URI."""
    digest = hashlib.sha256("\n".join([content, *styles, params.hash()]).encode()).hexdigest()[:16]
    name = output or f"{_stem(content)}--{'+'.join(_stem(s) for s in styles)}--{digest[:8]}.png"
    return Pair(row, content, styles, params, digest, _join(out_root, name))


def validate_manifest(uri: str, *, defaults: StyleParams = StyleParams(), overrides: dict | None = None,
                      storage_options: dict | None = None) -> list[tuple[int, dict, StyleParams, str | None]]:
    """(row number, cells, parameters, output) per row, or ManifestError listing every bad row.

    Parameters: defaults < `overrides` (e.g. CLI flags) < the row's own cells.
    """
    table = read_manifest(uri, storage_options)
    problems = _check_columns(table)
    if problems:
        raise ManifestError(uri, problems)
    base = defaults.replace(**(overrides or {}))
    rows = []
    for number, cells in enumerate(table.to_dict("records"), start=1):
        reasons = [f"missing {name}" for name in REQUIRED if not cells.get(name, "").strip()]
        params, param_reasons = _row_params(cells, base)
        reasons += param_reasons
        output = cells.get("output", "").strip() or None
        if output and _output_problem(output):
            reasons.append(_output_problem(output))
        problems += [(number, reason) for reason in reasons]
        if not reasons:
            rows.append((number, cells, params, output))
    if problems:
        raise ManifestError(uri, problems)
    return rows


def expand_manifest(uri: str, out_root: str, *, defaults: StyleParams = StyleParams(),
                    overrides: dict | None = None, storage_options: dict | None = None
                    ) -> tuple[list[Pair], list[str]]:
    """(pairs in row order, duplicates removed; warnings), or ManifestError listing every bad row."""
    rows = validate_manifest(uri, defaults=defaults, overrides=overrides, storage_options=storage_options)
    base_dir = uri.rsplit("/", 1)[0] if "://" in uri else os.path.dirname(os.path.abspath(uri))
    pairs, warnings, seen, problems = [], [], set(), []
    for number, cells, params, output in rows:
        contents = expand_images(_resolve(cells["content"].strip(), base_dir), storage_options)
        style_sets = [expand_images(_resolve(s.strip(), base_dir), storage_options)
                      for s in cells["style"].split(BLEND_SEPARATOR)]
        if not contents or not all(style_sets):
            warnings.append(f"{uri}: row {number} matches no images; nothing to do for it")
            continue
        # One style set is crossed with the contents; several ` + `-joined ones blend into one style.
        styles_list = [(s,) for s in style_sets[0]] if len(style_sets) == 1 else [tuple(s[0] for s in style_sets)]
        if output and len(contents) * len(styles_list) > 1:
            problems.append((number, f"output {output!r} names one file, but the row expands to "
                                     f"{len(contents) * len(styles_list)} pairs"))
            continue
        for content in contents:
            for styles in styles_list:
                pair = make_pair(number, content, styles, params, out_root, output)
                if pair.pair_id not in seen:
                    seen.add(pair.pair_id)
                    pairs.append(pair)
    if problems:
        raise ManifestError(uri, problems)
    return pairs, warnings
