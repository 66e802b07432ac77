"""Markdown tables made from the code's declarations and kept verbatim in the docs: the settings in
docs/running.md, the parameters in manifests/README.md. Tests check that the docs hold them;
`python -m nst_core.markdown` rewrites them there after a declaration changed."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def table(header: tuple[str, ...], rows) -> str:
    """A Markdown table of `header` and `rows` (tuples of cells, Markdown kept)."""
    lines = ["| " + " | ".join(cells) + " |" for cells in (header, *rows)]
    lines.insert(1, "|" + "---|" * len(header))
    return "\n".join(lines)


def with_table(text: str, new: str) -> str:
    """`text` with the table under `new`'s header line replaced by `new`."""
    lines = text.split("\n")
    start = end = lines.index(new.split("\n")[0])
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return "\n".join(lines[:start] + new.split("\n") + lines[end:])


def generated() -> dict[Path, str]:
    """Each doc holding a generated table, with that table as the code makes it now."""
    from nst_core.params import parameter_table
    from nst_core.settings import settings_table

    return {REPO / "docs" / "running.md": settings_table(), REPO / "manifests" / "README.md": parameter_table()}


if __name__ == "__main__":
    for doc, new in generated().items():
        doc.write_text(with_table(doc.read_text(), new))
