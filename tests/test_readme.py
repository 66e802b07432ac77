"""The README's guarantees: each names the tests that hold it, and those tests exist."""

from __future__ import annotations

import ast
import re

from conftest import REPO


def _test_names(path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


def test_every_guarantee_names_tests_that_exist():
    section = REPO.joinpath("README.md").read_text().split("## Guarantees", 1)[1].split("\n## ", 1)[0]
    guarantees = re.findall(r"^- \*\*(.+?)\*\*(.*?)(?=^- |\Z)", section, re.M | re.S)
    assert len(guarantees) >= 5
    for title, text in guarantees:
        named = re.findall(r"`(tests/\w+\.py)::(\w+)`", text)
        assert named, f"{title!r} names no test"
        for file, name in named:
            assert name in _test_names(REPO / file), f"{title!r}: {file}::{name} does not exist"
