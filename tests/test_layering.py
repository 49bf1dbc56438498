"""The layering of the packages, and the checks that hold it.

- ``probes/`` is numpy only: no torch, torchvision, timm, PIL, rich, typer or recommender
  (``probes/ruff.toml``).
- ``heuristics/`` is plain Python: the same, and no numpy or probes either
  (``heuristics/ruff.toml``).
- ``recommender/`` owns torch, timm and image files. Within it (and in ``benchmarks/``, ``tests/``
  and ``data/``) only ``recommender/report.py`` imports rich and only ``recommender/cli.py``
  imports typer (``pyproject.toml``).

ruff's banned-api rule (TID251) holds all of this but one corner: it is a single rule code, so the
per-file ignore that lets the report import rich also lets it import typer, and the CLI rich. An
``ast`` scan of the tree closes that corner.

ruff runs as ``python -m ruff`` from the interpreter running the tests (it is in the test extras),
so a missing ruff fails these tests instead of skipping them.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OWNERS = {"rich": "recommender/report.py", "typer": "recommender/cli.py"}
SCANNED = ("recommender", "probes", "heuristics", "benchmarks", "tests", "data")


def _ruff(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    if importlib.util.find_spec("ruff") is None:
        pytest.fail(f"ruff is not installed for {sys.executable}: pip install -e .[test]",
                    pytrace=False)
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=REPO, capture_output=True,
                          text=True, input=stdin)


def _banned(filename: str, source: str) -> list[str]:
    """The banned-api (TID251) messages ruff gives ``source`` as if it lived at ``filename``."""
    result = _ruff("check", "--no-cache", "--force-exclude", "--output-format", "json",
                   "--stdin-filename", filename, "-", stdin=source)
    if result.returncode not in (0, 1):
        pytest.fail(f"ruff failed ({result.returncode}): {result.stderr}", pytrace=False)
    return [f["message"] for f in json.loads(result.stdout or "[]") if f["code"] == "TID251"]


def _imported(source: str) -> set[str]:
    """Top-level names of the modules ``source`` imports, at any depth in the file."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and getattr(node.func, "id", getattr(node.func, "attr", None))
              in ("import_module", "__import__")):
            names.add(node.args[0].value.split(".")[0])
    return names


def _misplaced(path: str, source: str) -> list[str]:
    """rich imported outside recommender/report.py, typer outside recommender/cli.py."""
    return [f"{path} imports {module}, which belongs in {owner} only"
            for module, owner in OWNERS.items()
            if module in _imported(source) and path != owner]


def test_ruff_finds_nothing_in_the_tree():
    result = _ruff("check", "--output-format", "concise", ".")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("package,module", [
    ("probes", "torch"), ("probes", "torchvision"), ("probes", "timm"), ("probes", "typer"),
    ("probes", "recommender"), ("heuristics", "rich"), ("heuristics", "PIL"),
    ("heuristics", "numpy"), ("heuristics", "probes"), ("heuristics", "torch"),
])
def test_importing_a_banned_module_in_a_pure_package_is_flagged(package, module):
    assert _banned(f"{package}/rules/offender.py", f"import {module}\n")


def test_probes_may_import_numpy():
    assert not _banned("probes/ok.py", "import numpy as np\n\nprint(np)\n")


def test_the_recommender_may_import_torch():
    assert not _banned("recommender/models/ok.py", "import torch\n\nprint(torch)\n")


def test_rich_outside_the_report_is_flagged():
    assert _banned("recommender/data/offender.py", "from rich.console import Console\n")


def test_a_function_level_import_of_rich_is_flagged():
    assert _banned("recommender/models/offender.py", "def f():\n    import rich\n    return rich\n")


def test_the_report_may_import_rich():
    assert not _banned("recommender/report.py", "from rich.table import Table\n\nprint(Table)\n")


def test_typer_outside_the_cli_is_flagged():
    assert _banned("recommender/finetune/x.py", "import typer\n")


def test_the_cli_may_import_typer():
    assert not _banned("recommender/cli.py", "import typer\n\nprint(typer)\n")


def test_typer_in_a_benchmark_is_flagged():
    assert _banned("benchmarks/x.py", "import typer\n")


@pytest.mark.parametrize("filename", ["tests/test_x.py", "data/x.py"])
def test_rich_in_tests_and_data_scripts_is_flagged(filename):
    assert _banned(filename, "import rich\n")


def test_rich_in_the_cli_is_caught():
    assert _misplaced("recommender/cli.py", "import typer\nfrom rich.console import Console\n")


def test_typer_in_the_report_is_caught():
    assert _misplaced("recommender/report.py", "def f():\n    import typer\n    return typer\n")


def test_only_the_report_imports_rich_and_only_the_cli_imports_typer():
    offences = [message
                for top in SCANNED if (REPO / top).is_dir()
                for path in sorted((REPO / top).rglob("*.py"))
                for message in _misplaced(path.relative_to(REPO).as_posix(),
                                          path.read_text(encoding="utf-8"))]
    assert not offences, "\n".join(offences)


def test_pure_packages_import_without_torch():
    code = ("import sys, probes, heuristics; "
            "bad = [m for m in ('torch', 'rich', 'typer', 'PIL') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_heuristics_imports_without_numpy():
    code = ("import sys, heuristics; "
            "bad = [m for m in ('numpy', 'probes', 'torch') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


class _Imports(ast.NodeVisitor):
    """The modules a file imports, at any depth (lazily too), except under ``TYPE_CHECKING``
    (annotations only)."""

    def __init__(self) -> None:
        self.found: set[str] = set()

    def visit_If(self, node: ast.If) -> None:
        if isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.found.update(alias.name for alias in node.names)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module:
            self.found.add(node.module)
            self.found.update(f"{node.module}.{alias.name}" for alias in node.names)


def _recommender_imports() -> dict[str, set[str]]:
    """Which modules of ``recommender`` each one imports."""
    root = REPO / "recommender"
    names = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for module, path in names.items():
        visitor = _Imports()
        visitor.visit(ast.parse(path.read_text(encoding="utf-8")))
        # The top package's lazy attributes are strings, not imports: leave it out.
        graph[module] = {m for m in visitor.found
                         if m in names and m not in (module, "recommender")}
    return graph


def test_the_recommender_modules_import_each_other_without_a_cycle():
    from graphlib import CycleError, TopologicalSorter

    graph = _recommender_imports()
    assert "recommender.finetune.runs" in graph and "recommender.data.splits" in graph
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


def test_the_sub_packages_do_not_import_the_pipeline_the_report_or_the_cli():
    top = {"recommender.pipeline", "recommender.report", "recommender.cli"}
    graph = _recommender_imports()
    offenders = {m: sorted(deps & top) for m, deps in graph.items()
                 if m.count(".") >= 2 and deps & top}
    assert not offenders, offenders
