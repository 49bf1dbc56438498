"""Several processes on one search study (--storage, --role worker): through a journal file and
through a real PostgreSQL server. Trial 0 is the recommended point, once; the study ends with
exactly N complete trials, none trained twice; a worker killed mid-trial loses nothing: its
trial is queued again (heartbeats) and finished by another."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

WORKER = Path(__file__).resolve().parent / "_search_worker.py"
sys.path.insert(0, str(WORKER.parent))
from _search_worker import START  # noqa: E402

N = 8


@pytest.fixture(params=["journal", "postgresql"])
def storage(request, tmp_path):
    if request.param == "journal":
        return str(tmp_path / "study.journal")
    server = request.getfixturevalue("pg_server")
    return server.createdb(f"t{time.monotonic_ns()}")


def _start(storage: str, study: str, log: Path, go: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), storage, study, str(N), str(log),
                             str(go), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _lines(log: Path) -> list[tuple[str, int, dict]]:
    if not log.exists():
        return []
    out = []
    for line in log.read_text(encoding="utf-8").splitlines():
        kind, pid, params = line.split(" ", 2)
        out.append((kind, int(pid), json.loads(params)))
    return out


def _study(storage: str, study: str):
    import optuna

    from recommender.finetune.storage import open_storage

    return optuna.load_study(study_name=study, storage=open_storage(storage))


def _finish(proc: subprocess.Popen, timeout: float = 120) -> None:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    assert json.loads(out.splitlines()[-1])["trials"] == N


def _assert_exactly_n_complete(storage: str, log: Path):
    from optuna.trial import TrialState

    study = _study(storage, "shared")
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == N
    assert min(complete, key=lambda t: t.number).number == 0
    assert study.trials[0].params == START  # the recommended point is trial 0 ...
    assert sum(t.params == START for t in study.trials) == 1  # ... and only trial 0
    done = [params for kind, _pid, params in _lines(log) if kind == "done"]
    assert len(done) == N  # every complete trial was trained once, no trial twice
    assert sorted(map(json.dumps, done)) == sorted(
        json.dumps(t.user_attrs["overrides"], sort_keys=True) for t in complete)
    return study


def test_two_workers_share_one_study(storage, tmp_path):
    log, go = tmp_path / "trials.log", tmp_path / "go"
    workers = [_start(storage, "shared", log, go) for _ in range(2)]
    go.touch()
    for proc in workers:
        _finish(proc)
    _assert_exactly_n_complete(storage, log)
    pids = {pid for kind, pid, _ in _lines(log) if kind == "done"}
    assert pids == {p.pid for p in workers}  # both took trials


def test_a_worker_killed_mid_trial_loses_nothing(storage, tmp_path):
    from optuna.trial import TrialState

    log, go = tmp_path / "trials.log", tmp_path / "go"
    victim = _start(storage, "shared", log, go, "--hang")
    other = _start(storage, "shared", log, go)
    go.touch()
    deadline = time.monotonic() + 90
    while not any(kind == "start" and pid == victim.pid and params != START
                  for kind, pid, params in _lines(log)):
        assert time.monotonic() < deadline, "the victim never started a trial"
        assert victim.poll() is None, victim.stderr.read()
        time.sleep(0.1)
    hung = next(params for kind, pid, params in _lines(log)
                if kind == "start" and pid == victim.pid and params != START)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    _finish(other)
    study = _assert_exactly_n_complete(storage, log)
    killed = [t for t in study.trials
              if t.state == TrialState.FAIL and not t.user_attrs.get("nbtl:surplus")]
    assert len(killed) == 1 and killed[0].user_attrs.get("overrides") is None
    retried = [t for t in study.get_trials(states=(TrialState.COMPLETE,))
               if t.system_attrs.get("failed_trial") == killed[0].number]
    assert len(retried) == 1 and retried[0].user_attrs["overrides"] == hung
    assert [p for kind, pid, p in _lines(log) if kind == "done" and p == hung] == [hung]
