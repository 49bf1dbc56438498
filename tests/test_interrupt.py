"""Ctrl-C at any stage of a real run: exit 130, one 'interrupted' line, no traceback, no
worker process left behind, and caches that a rerun can use.

Each test starts ``python -m recommender`` in its own session (its own process group), waits
for the stage's line on stderr and sends SIGINT to the whole group, as a terminal's Ctrl-C
does (the DataLoader and probe workers receive it too).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SMALL = ["--max-per-class", "4", "--workers", "0"]
VALIDATE = ["--max-per-class", "5", "--workers", "0", "--validate-epochs", "2",
            "--validate-size", "32", "--validate-seeds", "1"]
LIMIT_S = 300  # a run that hangs is killed and fails the test, not the session


def start(path: Path, args: list[str], cache: Path) -> subprocess.Popen:
    env = {**os.environ, "NBTL_CACHE_DIR": str(cache), "COLUMNS": "100"}
    return subprocess.Popen(
        [sys.executable, "-m", "recommender", str(path), *args], env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        preexec_fn=_default_sigint)


def _default_sigint() -> None:
    """SIGINT as a terminal's foreground program has it: a test suite started in the
    background by a non-interactive shell (``bash .ci/run &``) inherits it ignored, and so
    would the run under test, which then never sees the Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def ctrl_c_at(stage: str, path: Path, args: list[str], cache: Path,
              delay_s: float = 1.0) -> tuple[int, str]:
    """Run until ``stage``'s line appears, press Ctrl-C ``delay_s`` later; the exit status
    and the whole of stderr, once the process and every process of its group have ended."""
    proc = start(path, args, cache)
    watchdog = threading.Timer(LIMIT_S, os.killpg, (proc.pid, signal.SIGKILL))
    watchdog.start()
    try:
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if f"· {stage}" in line:
                time.sleep(delay_s)
                os.killpg(proc.pid, signal.SIGINT)
                break
        _, rest = proc.communicate()
    finally:
        watchdog.cancel()
    err = "".join(seen) + rest
    stages = [line for line in err.splitlines() if line.startswith("· ")]
    assert stages and stage in stages[-1], err  # interrupted in that stage, not later
    assert_group_ends(proc.pid)
    return proc.returncode, err


def assert_group_ends(group: int, within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.killpg(group, signal.SIGKILL)
    raise AssertionError("worker processes outlived the interrupted run")


def assert_interrupted(code: int, err: str) -> None:
    assert code == 130, err
    assert [line for line in err.splitlines() if "interrupted" in line] == [
        "nbtl-recommend: interrupted."], err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err


def assert_rerun_succeeds(path: Path, args: list[str], cache: Path) -> None:
    proc = start(path, [*args, "-q"], cache)
    _, err = proc.communicate(timeout=LIMIT_S)
    assert proc.returncode == 0 and "Traceback" not in err, err


@pytest.fixture
def big_dataset(sample_dir, tmp_path):
    """The sample linked 20 times over (4000 files): a scan long enough to interrupt."""
    root = tmp_path / "big"
    for image in sorted(sample_dir.rglob("*.png")):
        folder = root / image.parent.name
        folder.mkdir(parents=True, exist_ok=True)
        for copy in range(20):
            os.link(image, folder / f"{copy}-{image.name}")
    return root


def test_ctrl_c_while_scanning(big_dataset, tmp_path):
    cache = tmp_path / "cache"
    # Every file checked (no --max-per-class): a second or more. The scan writes no cache,
    # so the rerun may sample a few images per class.
    everything = ["--workers", "0"]
    assert_interrupted(*ctrl_c_at("Scanning the dataset", big_dataset, everything, cache, 0.2))
    assert_rerun_succeeds(big_dataset, SMALL, cache)


def test_ctrl_c_while_extracting_features(sample_dir, tmp_path):
    cache = tmp_path / "cache"
    assert_interrupted(*ctrl_c_at("Extracting features", sample_dir, SMALL, cache))
    assert_rerun_succeeds(sample_dir, SMALL, cache)


def test_ctrl_c_while_computing_probes_leaves_no_worker(sample_dir, tmp_path):
    cache = tmp_path / "cache"
    # 0.3 s in: the stage on 40 images ends in about 1 s on a quiet machine (a Ctrl-C after
    # that reaches a process already exiting), and the pool's fork comes first (a Ctrl-C
    # there was once swallowed: test_pipeline's fork test)
    assert_interrupted(*ctrl_c_at("Computing probes", sample_dir, SMALL, cache, 0.3))
    assert_rerun_succeeds(sample_dir, SMALL, cache)


def test_ctrl_c_while_fine_tuning(sample_dir, tmp_path):
    cache = tmp_path / "cache"
    args = [*VALIDATE, "--validate", "--validate-epochs", "6"]  # seconds, not one
    assert_interrupted(*ctrl_c_at("Fine-tuning the", sample_dir, args, cache, 0.3))
    assert_rerun_succeeds(sample_dir, args, cache)


def test_ctrl_c_while_searching(sample_dir, tmp_path):
    cache = tmp_path / "cache"
    args = [*VALIDATE, "--search", "30"]  # trials of well under a second each
    assert_interrupted(*ctrl_c_at("Searching", sample_dir, args, cache, 0.5))
    assert_rerun_succeeds(sample_dir, [*VALIDATE, "--search", "3"], cache)


class _FailsWhileInterrupted:
    """A command whose clean-up fails while a Ctrl-C unwinds it, as Optuna's journal lock
    did: the FileNotFoundError replaces the KeyboardInterrupt (its __context__)."""

    def __init__(self, inner: BaseException) -> None:
        self.inner = inner

    def main(self, **_kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise self.inner  # noqa: B904 -- the implicit context is the point


@pytest.mark.parametrize("inner", [FileNotFoundError(2, "No such file", "x.lock.rename"),
                                   RuntimeError("clean-up failed")])
def test_an_error_raised_while_a_ctrl_c_unwinds_still_exits_130(monkeypatch, capsys, inner):
    from recommender import cli

    monkeypatch.setattr(cli.typer.main, "get_command", lambda app: _FailsWhileInterrupted(inner))
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "internal error" not in err


def test_an_error_without_a_ctrl_c_is_still_an_internal_error(monkeypatch, capsys):
    from recommender import cli

    class Fails:
        def main(self, **_kwargs):
            raise RuntimeError("a bug")

    monkeypatch.setattr(cli.typer.main, "get_command", lambda app: Fails())
    monkeypatch.delenv("NBTL_DEBUG", raising=False)
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 1
    assert "internal error: RuntimeError: a bug" in capsys.readouterr().err
