"""The cache never goes stale, never breaks a run and never writes where it must not."""

from __future__ import annotations

import errno
import os
import shutil
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import recommender
from heuristics import binary_default
from recommender import cache
from recommender.data.splits import DataSplit
from recommender.errors import NbtlWarning, UsageError
from recommender.finetune import runs as runs_mod
from recommender.finetune import search as search_mod
from recommender.models import features as features_mod

HP = binary_default(head_modules=("classifier",))
BACKBONE = SimpleNamespace(name="tiny", weights_id="test:tiny")
BUDGET = runs_mod.Budget(epochs=2, image_size=32)


@pytest.fixture
def cache_root(tmp_path, monkeypatch) -> Path:
    """A fresh, not yet created cache folder for this test only."""
    root = tmp_path / "cache"
    monkeypatch.setenv("NBTL_CACHE_DIR", str(root))
    return root


@pytest.fixture
def images(tmp_path) -> list[Path]:
    folder = tmp_path / "images"
    folder.mkdir()
    paths = [folder / f"{i}.png" for i in range(6)]
    for i, path in enumerate(paths):
        path.write_bytes(bytes([i]) * 10)
    return paths


@pytest.fixture
def split(images) -> DataSplit:
    return DataSplit(tuple((p, i % 2) for i, p in enumerate(images)), ("a", "b"),
                     np.array([0, 1]), np.array([2, 3]), np.array([4, 5]), "stratified")


@pytest.fixture
def trainings(monkeypatch) -> list[int]:
    """Fine-tuning replaced by a stand-in that notes each seed it trains."""
    trained: list[int] = []

    def fake_run_setting(hp, backbone, data, split, budget, *, seed, **_kwargs):
        trained.append(seed)
        return runs_mod.Run(seed=seed, val_accuracy=0.5, test_accuracy=0.25, lp_epochs=0)

    monkeypatch.setattr(runs_mod, "run_setting", fake_run_setting)
    return trained


def _run(split, seeds=(0,), cache_=None):
    return runs_mod.run_seeds("recommended", HP, BACKBONE, None, split, BUDGET, seeds,
                              device="cpu", cache=cache_)


def _rewrite(path: Path) -> None:
    """New contents at the same path and size (only the modification time tells)."""
    stat = path.stat()
    path.write_bytes(bytes([255]) * stat.st_size)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))


def _nbtl_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, NbtlWarning)]


def _features(rows=3, names=("b1", "b2")) -> features_mod.Features:
    rng = np.random.default_rng(0)
    return features_mod.Features(
        names, tuple(rng.random((rows, 4), dtype=np.float32) for _ in names),
        tuple(rng.random((rows, 4), dtype=np.float32) for _ in names),
        rng.random((rows, 10)).astype(np.float32), (rng.random((4, 4)), None))


# --- 1. keys cover the image files' contents ------------------------------------------------------

def test_files_identity_changes_when_a_file_is_rewritten_in_place(images):
    before = cache.files_identity(images)
    _rewrite(images[1])
    after = cache.files_identity(images)
    assert after[0] == before[0] and after[1] != before[1]


def test_a_rewritten_image_is_fine_tuned_again_not_read_from_the_run_cache(
        split, cache_root, trainings):
    first = _run(split, cache_=runs_mod.RunCache())
    again = _run(split, cache_=runs_mod.RunCache())
    assert trainings == [0] and not first.runs[0].cached and again.runs[0].cached
    _rewrite(split.samples[3][0])
    rerun = _run(split, cache_=runs_mod.RunCache())
    assert trainings == [0, 0] and not rerun.runs[0].cached


def _search_storage(split, monkeypatch, *, use_cache=True, storage=None):
    """The journal ``search_near`` hands to the search (the search itself stubbed out)."""
    seen = {}

    def fake_run_search(n_trials, *, storage, **_kwargs):
        seen["storage"] = storage
        return [{"number": 0, "params": {}, "overrides": {}, "val_accuracy": 0.5,
                 "test_accuracy": 0.25}]

    monkeypatch.setattr(search_mod, "run_search", fake_run_search)
    runner = SimpleNamespace(split=split, budget=BUDGET, seeds=(0,), backbone=BACKBONE,
                             device="cpu", use_cache=use_cache, say=lambda _t: None,
                             progress=None, timings={})
    recommended = runs_mod.SettingResult("recommended", HP, (runs_mod.Run(0, 0.5, 0.25, 0),))
    recommendation = SimpleNamespace(hyperparameters=HP, details={})
    _best, info = search_mod.search_near(recommendation, lambda _extra: recommendation, runner,
                                         recommended, trials=1, storage=storage, fixed=(),
                                         seed=0)
    return seen["storage"], info


def test_a_rewritten_image_names_a_new_search_journal(split, cache_root, monkeypatch):
    journal, _ = _search_storage(split, monkeypatch)
    _rewrite(split.samples[0][0])
    assert _search_storage(split, monkeypatch)[0] != journal
    assert journal.parent == cache_root / "search"


# --- 2. a cache that cannot be written costs a warning, not the run -------------------------------

def _write_hello(tmp: Path) -> None:
    tmp.write_text("hello", encoding="utf-8")


def test_a_cache_folder_that_is_a_file_is_one_warning(tmp_path, monkeypatch):
    blocker = tmp_path / "cache"
    blocker.write_text("not a folder", encoding="utf-8")
    monkeypatch.setenv("NBTL_CACHE_DIR", str(blocker))
    with pytest.warns(NbtlWarning, match="cache cannot be written") as record:
        assert not cache.try_write(cache.cache_dir() / "features" / "x.npz", _write_hello,
                                   "extracted features")
    assert len(_nbtl_warnings(record)) == 1 and "\n" not in _nbtl_warnings(record)[0]
    assert blocker.read_text(encoding="utf-8") == "not a folder"


def test_a_full_disk_is_one_warning_and_leaves_no_temporary_file(cache_root, monkeypatch):
    def full(*_args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    target = cache_root / "runs" / "x.json"
    with pytest.warns(NbtlWarning, match="No space left on device"):
        assert not cache.try_write(target, _write_hello, "fine-tuning runs")
    assert list((cache_root / "runs").iterdir()) == []


def test_a_home_that_does_not_exist_is_not_created(tmp_path, monkeypatch):
    monkeypatch.delenv("NBTL_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "nowhere"))
    with pytest.warns(NbtlWarning, match="home directory does not exist"):
        assert not cache.try_write(cache.cache_dir() / "runs" / "x.json", _write_hello,
                                   "fine-tuning runs")
    assert not (tmp_path / "nowhere").exists()


def test_extracted_features_survive_an_unwritable_cache(sample_dir, backbone, tmp_path,
                                                        monkeypatch):
    blocker = tmp_path / "cache"
    blocker.write_text("", encoding="utf-8")
    monkeypatch.setenv("NBTL_CACHE_DIR", str(blocker / "below-a-file"))
    paths = sorted(sample_dir.glob("*/*.png"))[:2]
    with pytest.warns(NbtlWarning, match="extracted features"):
        features = features_mod.extract_features(paths, backbone, workers=0)
    assert features.pretrained[0].shape[0] == 2 and not features.from_cache


def test_an_unwritable_run_cache_warns_once_and_keeps_every_run(tmp_path, monkeypatch, split,
                                                                 trainings):
    blocker = tmp_path / "cache"
    blocker.write_text("", encoding="utf-8")
    monkeypatch.setenv("NBTL_CACHE_DIR", str(blocker))
    run_cache = runs_mod.RunCache()
    with pytest.warns(NbtlWarning) as record:
        first = _run(split, seeds=(0, 1), cache_=run_cache)
        second = _run(split, seeds=(0, 1), cache_=run_cache)
    assert len(_nbtl_warnings(record)) == 1
    assert [r.seed for r in first.runs + second.runs] == [0, 1, 0, 1] == trainings[:2] * 2


def test_an_unwritable_cache_keeps_the_search_in_memory(tmp_path, monkeypatch, split):
    blocker = tmp_path / "cache"
    blocker.write_text("", encoding="utf-8")
    monkeypatch.setenv("NBTL_CACHE_DIR", str(blocker))
    with pytest.warns(NbtlWarning, match="search trials"):
        storage, info = _search_storage(split, monkeypatch)
    assert storage is None and info["storage"] is None


def test_a_search_without_storage_runs_in_memory():
    space = {"base_lr": ("log", (1e-3, 1e-1))}
    trials = search_mod.run_search(2, space_=space, start={"base_lr": 0.01},
                                   evaluate=lambda o: (o["base_lr"], 0.5), storage=None,
                                   study_name="memory", seed=0)
    assert [t["number"] for t in trials] == [0, 1] and trials[0]["params"] == {"base_lr": 0.01}


def test_no_cache_writes_nothing_anywhere(cache_root, sample_dir, backbone, split, trainings,
                                          monkeypatch):
    features_mod.extract_features(sorted(sample_dir.glob("*/*.png"))[:2], backbone,
                                  workers=0, use_cache=False)
    runner = runs_mod.SettingRunner(BACKBONE, None, split, BUDGET, seeds=(0,), device="cpu",
                                    use_cache=False)
    runner.train("recommended", HP)
    storage, _ = _search_storage(split, monkeypatch, use_cache=False)
    assert storage is None and not cache_root.exists()


# --- 3. a damaged entry is discarded and made again ----------------------------------------------

def _damage(path: Path, kind: str) -> None:
    data = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "wrong keys":
        np.savez(path, other=np.zeros(3))
    elif kind == "wrong rows":
        features_mod._save(path, _features(rows=5))
    elif kind == "wrong width":
        f = _features()
        features_mod._save(path, features_mod.Features(
            f.blocks, f.pretrained, (f.random_features[0][:, :2], f.random_features[1]),
            f.source_probs, f.bn_stats))


@pytest.mark.parametrize("kind", ["truncated", "empty", "wrong keys", "wrong rows",
                                  "wrong width"])
def test_a_damaged_features_file_is_discarded_with_a_warning(tmp_path, kind):
    path = tmp_path / "features.npz"
    features_mod._save(path, _features())
    assert features_mod._load(path, ("b1", "b2"), 3).from_cache
    _damage(path, kind)
    with pytest.warns(NbtlWarning, match="damaged features file") as record:
        assert features_mod._load(path, ("b1", "b2"), 3) is None
    assert len(_nbtl_warnings(record)) == 1 and not path.exists()


def test_a_truncated_features_file_is_extracted_again(sample_dir, backbone, cache_root):
    paths = sorted(sample_dir.glob("*/*.png"))[:2]
    features_mod.extract_features(paths, backbone, workers=0)
    target = cache_root / "features" / f"{features_mod.cache_key(paths, backbone)}.npz"
    _damage(target, "truncated")
    with pytest.warns(NbtlWarning, match="damaged features file"):
        again = features_mod.extract_features(paths, backbone, workers=0)
    assert not again.from_cache
    assert features_mod.extract_features(paths, backbone, workers=0).from_cache


@pytest.mark.parametrize("text", ['{"seed": 0, "val_acc', "", '{"seed": 0}', "[1, 2]",
                                  '{"seed": 7, "val_accuracy": 0.5, "test_accuracy": 0.5, '
                                  '"lp_epochs": 0}'])
def test_a_damaged_run_record_is_trained_again_with_a_warning(split, cache_root, trainings,
                                                              text):
    _run(split, cache_=runs_mod.RunCache())
    (record,) = (cache_root / "runs").iterdir()
    record.write_text(text, encoding="utf-8")
    with pytest.warns(NbtlWarning, match="damaged fine-tuning run record"):
        again = _run(split, cache_=runs_mod.RunCache())
    assert trainings == [0, 0] and not again.runs[0].cached
    assert _run(split, cache_=runs_mod.RunCache()).runs[0].cached


def test_a_damaged_default_journal_is_discarded(split, cache_root, monkeypatch):
    journal, _ = _search_storage(split, monkeypatch)
    journal.write_text("not a journal\n", encoding="utf-8")
    with pytest.warns(NbtlWarning, match="damaged search journal"):
        assert _search_storage(split, monkeypatch)[0] == journal
    assert journal.read_text(encoding="utf-8") == ""


# --- 4. never inside the dataset -----------------------------------------------------------------

def test_a_cache_inside_the_dataset_is_refused_before_any_work(tmp_path, monkeypatch):
    dataset = tmp_path / "data"
    shutil.copytree(Path(__file__).resolve().parents[1] / "data" / "fashion-mnist-sample",
                    dataset)
    monkeypatch.setenv("NBTL_CACHE_DIR", str(dataset / "cache"))
    with pytest.raises(UsageError, match="inside the dataset folder") as info:
        recommender.recommend(dataset, max_per_class=4, workers=0)
    assert info.value.exit_code == 2 and not (dataset / "cache").exists()


def test_without_a_cache_a_cache_folder_inside_the_dataset_is_allowed(tmp_path, monkeypatch):
    from recommender import pipeline

    def scanned(*_args):
        raise LookupError("got past the check")

    dataset = tmp_path / "data"
    dataset.mkdir()
    monkeypatch.setenv("NBTL_CACHE_DIR", str(dataset / "cache"))
    monkeypatch.setattr(pipeline, "_scan", scanned)
    with pytest.raises(LookupError):
        recommender.recommend(dataset, use_cache=False)


# --- 5. modes and leftovers ----------------------------------------------------------------------

def test_cache_files_honour_the_umask_not_mkstemps_private_mode(cache_root):
    old = os.umask(0o022)
    try:
        cache.atomic_write(cache_root / "runs" / "x.json", _write_hello)
    finally:
        os.umask(old)
    assert (cache_root / "runs" / "x.json").stat().st_mode & 0o777 == 0o644


def test_old_leftovers_of_interrupted_writes_are_cleaned_up(cache_root):
    folder = cache_root / "runs"
    folder.mkdir(parents=True)
    old, recent = folder / ".a.json.abc123.tmp", folder / ".b.json.def456.tmp"
    for path in (old, recent):
        path.write_text("half", encoding="utf-8")
    an_hour_ago = time.time() - cache.LEFTOVER_SECONDS - 60
    os.utime(old, (an_hour_ago, an_hour_ago))
    cache.atomic_write(folder / "c.json", _write_hello)
    assert sorted(p.name for p in folder.iterdir()) == [recent.name, "c.json"]


def test_nothing_here_warns_on_a_healthy_cache(split, cache_root, trainings):
    with warnings.catch_warnings():
        warnings.simplefilter("error", NbtlWarning)
        _run(split, cache_=runs_mod.RunCache())
        assert _run(split, cache_=runs_mod.RunCache()).runs[0].cached

