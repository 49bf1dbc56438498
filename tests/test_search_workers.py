"""Several processes on one search study (--storage, --role worker): through a journal file and
through a real PostgreSQL server. Trial 0 is the recommended point, once; the study ends with
exactly N complete trials, none trained twice; a worker killed mid-trial loses nothing: its
trial is queued again (heartbeats) and finished by another."""

from __future__ import annotations

import json
import os
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


# --- the options ---------------------------------------------------------------------------------

def _cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    from recommender.cli import main

    monkeypatch.setattr(sys, "argv", ["nbtl-recommend", *args])
    with pytest.raises(SystemExit) as info:
        main()
        raise SystemExit(0)
    return info.value.code or 0, capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--role", "worker"], "--role worker needs --search N"),
    (["--search", "2", "--storage", "ftp://host/x"], "unknown kind of storage 'ftp'"),
    (["--search", "2", "--storage", "a.journal", "--search-db", "b.journal"],
     "--search-db and --storage both"),
    (["--device", "gpu1"], "--device gpu1 is not one of"),
    (["--search", "2", "--study", " "], "--study is given an empty name"),
])
def test_a_bad_search_option_is_refused_before_any_work(monkeypatch, capsys, sample_dir, args,
                                                        message):
    from recommender.errors import EXIT_USAGE

    code, err = _cli(monkeypatch, capsys, str(sample_dir), *args)
    assert code == EXIT_USAGE and message in err and "Traceback" not in err


def test_a_database_that_cannot_be_reached_is_one_clear_line():
    from recommender.errors import UsageError
    from recommender.finetune.storage import open_storage

    pytest.importorskip("psycopg2")
    with pytest.raises(UsageError, match=r"cannot be opened.*\n?.*") as info:
        open_storage("postgresql://me:secret@127.0.0.1:1/nbtl")
    assert "secret" not in str(info.value) and "me:***@127.0.0.1:1" in str(info.value)


def test_a_storage_url_is_shown_without_its_password():
    from recommender.finetune.storage import describe, kind_of

    assert describe("postgresql://nbtl:pw@db.lan:5432/s") == "postgresql://nbtl:***@db.lan:5432/s"
    assert describe("/tmp/s.journal") == "/tmp/s.journal"
    assert [kind_of(u) for u in ("s.journal", "postgresql+psycopg2://h/d", "mysql://h/d",
                                 "redis://h:6379")] == ["journal", "rdb", "rdb", "redis"]


def _study_name(root: Path) -> str:
    from types import SimpleNamespace

    import heuristics
    from recommender.data.dataset import load_dataset
    from recommender.data.splits import split_dataset
    from recommender.finetune.runs import Budget
    from recommender.finetune.search import study_name

    dataset = load_dataset(root)
    split = split_dataset(dataset.samples, dataset.classes, 0)
    runner = SimpleNamespace(split=split, budget=Budget(epochs=2, image_size=32), seeds=(0,),
                             backbone=SimpleNamespace(name="m", weights_id="w"))
    return study_name(runner, heuristics.binary_default(), {}, (), False)


def test_the_default_study_name_is_the_same_wherever_the_images_are(sample_dir, tmp_path):
    import shutil

    copies = [shutil.copytree(sample_dir, tmp_path / where / "data") for where in ("a", "b/c")]
    assert _study_name(copies[0]) == _study_name(copies[1]) == _study_name(sample_dir)
    image = sorted(copies[1].rglob("*.png"))[0]
    image.write_bytes(image.read_bytes() + b"\0")  # new contents, same path
    assert _study_name(copies[1]) != _study_name(copies[0])


# --- the command line: a main process and a worker -----------------------------------------------

@pytest.mark.slow
def test_a_worker_and_the_main_process_share_one_search(sample_dir, tmp_path):
    journal = tmp_path / "search.journal"
    common = [str(sample_dir), "--max-per-class", "5", "--workers", "0", "--validate-epochs",
              "2", "--validate-size", "32", "--validate-seeds", "1", "--search", "4",
              "--storage", str(journal), "-q"]
    script = Path(sys.executable).parent / "nbtl-recommend"
    # A cache of their own: a run another test cached in this session, trained in a process
    # with other torch thread counts, may differ from a fresh one in its last bits.
    env = {**os.environ, "NBTL_CACHE_DIR": str(tmp_path / "cache")}
    procs = {role: subprocess.Popen([str(script), *common, "--role", role, "--json",
                                     str(tmp_path / f"{role}.json")],
                                    stderr=subprocess.PIPE, text=True, env=env)
             for role in ("worker", "main")}
    for proc in procs.values():
        _out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    main = json.loads((tmp_path / "main.json").read_text())["validation"]
    worker = json.loads((tmp_path / "worker.json").read_text())["validation"]
    assert list(main["settings"]) == ["default", "recommended", "best_found"]
    assert worker["settings"] == {} and worker["difference"] is None
    # Both read every trial from the storage: the same 4, trial 0 the recommended point.
    assert [t["number"] for t in main["search"]["trials"]] == [0, 1, 2, 3]
    assert main["search"]["trials"] == worker["search"]["trials"]
    assert main["search"]["study"] == worker["search"]["study"]
    assert main["settings"]["recommended"]["runs"][0]["val_accuracy"] == \
        main["search"]["trials"][0]["val_accuracy"]


@pytest.mark.parametrize("ci, outcome", [("", pytest.skip.Exception),
                                         ("1", pytest.fail.Exception)])
def test_no_postgres_server_skips_locally_and_fails_under_ci(monkeypatch, ci, outcome):
    import _pg

    monkeypatch.setattr(_pg, "server_binaries", lambda: None)
    monkeypatch.setenv("NBTL_CI", ci)
    with pytest.raises(outcome, match="apt-get install postgresql"):
        _pg.start()


def test_a_workers_report_lists_the_trials_and_shows_pruned_ones(sample_dir):
    import io

    from recommender import report
    from recommender.data.dataset import load_dataset
    from recommender.data.splits import split_dataset
    from recommender.finetune.compare import Validation
    from recommender.finetune.runs import Budget

    dataset = load_dataset(sample_dir)
    trial = {"number": 0, "state": "complete", "params": {}, "overrides": {"base_lr": 0.01},
             "val_accuracy": 0.5, "test_accuracy": 0.4, "epochs": None, "retried": None}
    search = {"trials": [trial, {**trial, "number": 1, "state": "pruned", "test_accuracy": None,
                                 "epochs": 1, "overrides": {"base_lr": 0.1}}],
              "space": {}, "best_trial": 0, "storage": "postgresql://nbtl:***@db/s",
              "study": "nbtl-abc", "sampler": "optuna TPESampler", "pruner": "optuna SHA",
              "objective": "validation accuracy, seed 0"}
    validation = Validation(split=split_dataset(dataset.samples, dataset.classes, 0),
                            budget=Budget(epochs=2, image_size=32), seeds=(0,), device="cpu",
                            settings=(), search=search)
    doc = validation.to_dict()
    assert doc["settings"] == {} and doc["difference"] is None
    out = io.StringIO()
    report._print_validation(doc, validation, {}, report.Console(file=out, width=160))
    text = out.getvalue()
    assert "Search worker: the study nbtl-abc has 2 finished trials" in text
    assert "pruned at epoch 1" in text and "1 pruned by successive halving" in text
