"""Every code block of README.md runs as written, offline, on the bundled sample.

- ```python blocks are executed, each in a fresh interpreter whose working folder holds
  ``data/`` (a link to the repository's, never written) and, for a block that reads
  ``rec.json``, the JSON document of ``nbtl-recommend`` made first. Blocks that analyse the
  sample or fine-tune are marked slow.
- ```bash blocks: each ``nbtl-recommend`` command line is parsed by the CLI's own parser (its
  options and values must be accepted; running them is the job of tests/test_cli.py), each
  ``python SCRIPT.py`` line's options must appear in that script's ``--help``. Installing
  packages (``pip``) and running the test suite itself (``pytest``) are skipped, and say so.
- Blocks without a language or marked ```text are output samples and synopses: not run.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
RUN = ("python", "bash")
NOT_RUN = ("", "text")  # output samples and synopses
# A block that calls one of these analyses the sample or fine-tunes: seconds to a minute.
SLOW_CALLS = ("recommend(", "rec.json", "load_backbone(", "--validate")
FENCE = re.compile(r"^```(\S*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def _blocks(language: str | None = None) -> list[tuple[str, int, str]]:
    """``(language, line, body)`` of each fenced block, in README order."""
    text = README.read_text(encoding="utf-8")
    found = [(m.group(1), text.count("\n", 0, m.start()) + 1, m.group(2))
             for m in FENCE.finditer(text)]
    return [b for b in found if language is None or b[0] == language]


def _python_params() -> list:
    return [pytest.param(body, id=f"README.md:{line}",
                         marks=[pytest.mark.slow] if any(c in body for c in SLOW_CALLS) else [])
            for _, line, body in _blocks("python")]


def _commands() -> list:
    """Each command of the bash blocks (``&&``-chained commands apart, comments dropped)."""
    params = []
    for _, line, body in _blocks("bash"):
        for text in body.replace("\\\n", " ").splitlines():
            words = shlex.split(text, comments=True)
            while words:
                end = words.index("&&") if "&&" in words else len(words)
                params.append(pytest.param(words[:end], id=f"README.md:{line}:{words[0]}"
                                           f" {words[1]}"))
                words = words[end + 1:]
    return params


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder where the README's relative paths resolve: ``data/`` links to the
    repository's (the sample is read, never written)."""
    folder = tmp_path_factory.mktemp("readme")
    (folder / "data").symlink_to(REPO / "data", target_is_directory=True)
    return folder


@pytest.fixture(scope="module")
def rec_json(workdir) -> Path:
    """What ``nbtl-recommend data/fashion-mnist-sample --json rec.json`` writes, on 10 images
    per class (the Python API block's subset, so the two share the cached features)."""
    path = workdir / "rec.json"
    subprocess.run([sys.executable, "-m", "recommender", "data/fashion-mnist-sample",
                    "--max-per-class", "10", "--workers", "0", "--json", "rec.json", "-q"],
                   cwd=workdir, check=True, timeout=600)
    return path


def test_every_code_block_is_run_or_is_an_output_sample():
    languages = [language for language, _, _ in _blocks()]
    assert set(languages) <= set(RUN + NOT_RUN), languages
    assert languages.count("python") >= 4 and "bash" in languages


@pytest.mark.parametrize("body", _python_params())
def test_readme_python_block_runs_as_written(body, workdir, request):
    if "rec.json" in body:
        request.getfixturevalue("rec_json")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", body], cwd=workdir, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("words", _commands())
def test_readme_shell_command_is_accepted(words, workdir, monkeypatch):
    if words[0] == "pip" or words[1:3] == ["-m", "pip"]:
        pytest.skip("installing packages would change the environment the tests run in")
    if words[1:3] == ["-m", "pytest"]:
        pytest.skip("the test suite itself, which is running now")
    if words[0] == "nbtl-recommend":
        from recommender import cli

        monkeypatch.chdir(workdir)
        command = cli.typer.main.get_command(cli.app)  # tests do not import typer
        command.make_context("nbtl-recommend", words[1:])  # parses; raises on a bad option
        return
    assert words[0] == "python" and words[1].endswith(".py"), \
        f"no check for this kind of command: {shlex.join(words)}"
    sub = [words[2]] if len(words) > 2 and not words[2].startswith("-") else []
    usage = subprocess.run([sys.executable, str(REPO / words[1]), *sub, "--help"],
                           capture_output=True, text=True, check=True, timeout=60).stdout
    options = [w.split("=")[0] for w in words[2:] if w.startswith("--")]
    assert [o for o in options if o not in usage] == []
