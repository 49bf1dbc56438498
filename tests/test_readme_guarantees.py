"""The README's "Guarantees" section names the tests that hold each promise: they must exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _section(title: str) -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end]


def _named_tests() -> list[tuple[str, str]]:
    """``(file, test)`` pairs in the order the table names them; a bare name is in the file
    named last in the same cell."""
    pairs = []
    for row in _section("Guarantees").splitlines():
        cells = row.split("|")
        if len(cells) < 4 or "`" not in cells[2]:
            continue
        current = None
        for name in re.findall(r"`([^`]+)`", cells[2]):
            if "::" in name:
                current, name = name.split("::")
            pairs.append((current, name))
    return pairs


def _tests_in(file: str) -> set[str]:
    tree = ast.parse((REPO / "tests" / file).read_text(encoding="utf-8"))
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}


def test_every_guarantee_names_tests():
    assert len(_named_tests()) >= 8


def test_every_test_the_guarantees_name_exists():
    missing = [f"{file}::{name}" for file, name in _named_tests()
               if file is None or name not in _tests_in(file)]
    assert not missing, missing
