"""The layering of DEVELOPERS.md, held by ruff's banned-api rule (see pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _ruff(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    ruff = shutil.which("ruff") or pytest.skip("ruff is not installed (pip install -e .[test])")
    return subprocess.run([ruff, *args], cwd=REPO, capture_output=True, text=True, input=stdin)


def test_ruff_finds_nothing_in_the_tree():
    result = _ruff("check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("package,module", [("probes", "torch"), ("heuristics", "rich"),
                                            ("probes", "typer"), ("heuristics", "PIL")])
def test_importing_a_banned_module_in_a_pure_package_is_flagged(package, module):
    result = _ruff("check", "--no-cache", "--stdin-filename", f"{package}/offender.py", "-",
                   stdin=f"import {module}\n")
    assert result.returncode != 0 and "TID251" in result.stdout


def test_the_recommender_may_import_torch():
    result = _ruff("check", "--no-cache", "--stdin-filename", "recommender/ok.py", "-",
                   stdin="import torch\n\nprint(torch)\n")
    assert result.returncode == 0, result.stdout


def test_pure_packages_import_without_torch():
    code = ("import sys, probes, heuristics; "
            "bad = [m for m in ('torch', 'rich', 'typer', 'PIL') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
