"""benchmarks/transfer.py (the accuracy benchmark of issue 6) and its report: the grid's
settings, the noise rule, the resumable results file, and one tiny real run end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks import transfer as t  # noqa: E402
from benchmarks import transfer_report as rep  # noqa: E402

LITE0_BLOCKS = [("stage1", ["conv_stem", "bn1", "blocks.0"]), ("stage2", ["blocks.1"]),
                ("stage3", ["blocks.2"]), ("stage4", ["blocks.3", "blocks.4"]),
                ("stage5", ["blocks.5", "blocks.6"]), ("neck", ["conv_head", "bn2"])]
ANALYSIS = {"measures": {}, "profile": {}, "head_modules": ["classifier"], "num_images": 400,
            "num_classes": 10, "blocks": [{"name": n, "modules": m} for n, m in LITE0_BLOCKS]}


def test_grid_covers_the_papers_axes_and_holds_the_default():
    cells = t.grid_cells()
    assert len(cells) == len(t.REINIT) * 3 * 2 * len(t.BASE_LRS) >= 48
    assert t.DEFAULT_CELL in cells and len(set(cells)) == len(cells)
    assert max(t.REINIT) >= 3 and len(t.BASE_LRS) >= 2
    assert t.parse_cell("r2-l2sp_all-groups-0.03") == {"reinit": 2, "reg": "l2sp_all",
                                                       "lr_mode": "groups", "base_lr": 0.03}
    assert t.parse_cell("default") is None and t.parse_cell("rec@abc") is None


@pytest.mark.parametrize("setting", ["r0-l2-one-0.01", "r1-l2sp_lower-groups-0.03",
                                     "r3-l2sp_all-groups-0.01", "r2-l2sp_all-one-0.03"])
def test_cell_hyperparameters(setting):
    c = t.parse_cell(setting)
    hp = t.cell_hyperparameters(ANALYSIS, setting).to_dict()
    groups = {g["name"]: g for g in hp["lr_groups"]}
    reinit = [m for _, mods in LITE0_BLOCKS[len(LITE0_BLOCKS) - c["reinit"]:] for m in mods]
    assert hp["reinit_top_blocks"] == c["reinit"]
    assert sorted(hp["reinit_modules"]) == sorted(reinit)
    assert set(reinit) <= set(groups["head"]["modules"])  # new blocks train with the head
    ratio = t.GROUP_RATIO if c["lr_mode"] == "groups" else 1.0
    assert groups["upper"]["lr"] == pytest.approx(c["base_lr"])
    assert groups["head"]["lr"] == pytest.approx(c["base_lr"] * ratio)
    assert groups["lower"]["lr"] == pytest.approx(c["base_lr"] / ratio)
    penalties = (groups["head"]["penalty"], groups["upper"]["penalty"], groups["lower"]["penalty"])
    assert penalties == {"l2": ("l2", "l2", "l2"), "l2sp_lower": ("l2", "l2", "l2sp"),
                         "l2sp_all": ("l2", "l2sp", "l2sp")}[c["reg"]]
    assert hp["l2sp_weight"] == (0.0 if c["reg"] == "l2" else t.L2SP_WEIGHT)
    assert hp["l2_weight"] == t.L2_WEIGHT and hp["lp_ft"] is False
    assert rep.axes_of(setting) == c
    # the report reads the same axes back from the hyperparameters alone
    assert rep.axes_of("rec@x", hp) == {**c, "base_lr": pytest.approx(c["base_lr"])}


def test_scratch_reinitialises_every_block():
    hp = t.scratch_hyperparameters(ANALYSIS).to_dict()
    assert hp["reinit_modules"] == [m for _, mods in LITE0_BLOCKS for m in mods]
    assert [g["name"] for g in hp["lr_groups"]] == ["head", "rest"]


def test_rank_uses_val_and_test_and_breaks_ties_in_grid_order():
    cells = t.grid_cells()
    rows = [{"setting": c, "val": 0.5, "test": 0.5} for c in cells]
    rows[5] = {**rows[5], "val": 0.9}
    rows[9] = {**rows[9], "test": 0.6}  # 0.1 more on 1000 test images beats 0.4 on 100 val
    assert t.rank(rows, 100, 1000)[:3] == [cells[9], cells[5], cells[0]]


def test_within_noise():
    top = np.array([0.80, 0.82, 0.84])
    assert rep.within_noise(top, top)
    assert rep.within_noise(top, top + 0.01)  # better than the top is within
    assert not rep.within_noise(top, top - 0.05)  # constant gap, zero spread
    assert rep.within_noise(top, np.array([0.70, 0.85, 0.88]))  # mean gap 0.01, sd 0.08
    assert not rep.within_noise(top, np.array([0.70, 0.72, 0.77]))
    assert rep.diff_stats(np.array([1.0, 2.0]), np.array([0.0, 0.0])) == (1.5, pytest.approx(
        np.std([1, 2], ddof=1)))


def test_results_file_is_append_only_and_survives_a_cut_line(tmp_path):
    path = tmp_path / "r.jsonl"
    t.append(path, {"kind": "run", "a": 1})
    with path.open("a") as fh:
        fh.write('{"kind": "run", "a"')  # a kill in the middle of a write
    t.append(path, {"kind": "run", "a": 2})
    assert [r["a"] for r in t.read_results(path)] == [1]  # the cut line swallows the next
    path.write_text('{"a": 1}\n{"a": 2\n{"a": 3}\n')
    assert [r["a"] for r in t.read_results(path)] == [1, 3]
    assert t.read_results(tmp_path / "missing.jsonl") == []


def _rows(rec_id: str, rec_hp: dict, accuracy) -> list[dict]:
    base = {"kind": "run", "dataset": "toy", "budget": {"epochs": 2, "image_size": 32},
            "device": "cpu", "threads": 1, "n_train": 30, "n_val": 10, "n_test": 20}
    rows = [{"kind": "analysis", "dataset": "toy", "analysis": ANALYSIS}]
    settings = [s for s in t.grid_cells() if s != t.DEFAULT_CELL] + ["default", rec_id,
                                                                     "scratch"]
    for s in settings:
        for seed in (t.GRID_SEED, *t.CONFIRM_SEEDS):
            hp = rec_hp if s == rec_id else (t.cell_hyperparameters(ANALYSIS, s).to_dict()
                                             if t.parse_cell(s) else {})
            rows.append({**base, "setting": s, "seed": seed, "val": accuracy(s, seed),
                         "test": accuracy(s, seed), "hyperparameters": hp})
    return rows


def test_report_end_to_end_on_synthetic_results(tmp_path):
    hp = t.recommend_from(ANALYSIS).hyperparameters
    rec_hp, rec_id = t.plain_hp(hp), t.recommended_id(hp)
    best_cell = "r1-l2sp_lower-groups-0.01"

    def accuracy(setting, seed):
        base = {best_cell: 0.90, "default": 0.80, rec_id: 0.85}.get(setting, 0.5)
        return base + 0.01 * seed

    datasets = rep.load(_rows(rec_id, rec_hp, accuracy))
    d = datasets["toy"]
    assert d.complete and d.top_cells[0] == best_cell and d.top() == best_cell
    assert d.best_set() == [best_cell]
    s = rep.summary(d)
    assert s["gain"] == (pytest.approx(0.05), pytest.approx(0.0))
    assert s["regret"] == (pytest.approx(0.05), pytest.approx(0.0))
    assert not s["rec_within"] and not s["default_within"]
    assert s["reinit_best"] == [1] and s["reg_best"] == ["l2sp_lower"]
    text = rep.render(datasets, fit_on=())
    assert "| toy | 10, 30/10/20 | 82.0 | 87.0 | 92.0 | +5.0 ± 0.0 | +5.0 ± 0.0 | no |" in text
    agg = rep.aggregate([s])
    assert agg == {"n": 1, "mean_gain": pytest.approx(0.05), "mean_regret": pytest.approx(0.05),
                   "share_within": 0.0}
    out = tmp_path / "bench.md"
    out.write_text("# Title\n\nhand-written\n")
    rep.write(text, out)
    rep.write(text, out)  # replaced between the markers, not appended twice
    page = out.read_text()
    assert page.startswith("# Title\n\nhand-written\n") and page.count(rep.START) == 1
    assert rep.figure(datasets, tmp_path / "fig.png")  # matplotlib is a test extra
    assert (tmp_path / "fig.png").read_bytes()[:4] == b"\x89PNG"


def test_incomplete_dataset_is_reported_as_pending():
    hp = t.recommend_from(ANALYSIS).hyperparameters
    rows = [r for r in _rows(t.recommended_id(hp), t.plain_hp(hp), lambda s, k: 0.5)
            if r.get("seed") in (None, t.GRID_SEED)]
    datasets = rep.load(rows)
    assert not datasets["toy"].complete
    assert "Grid not complete yet" in rep.render(datasets, fit_on=())


@pytest.mark.slow
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_tiny_real_run_is_resumable(tmp_path, monkeypatch, jobs):
    """digits8x8, 4 per class, a 1-cell grid, 2 epochs at 32 px on the real backbone: every
    setting is trained once per seed (by this process and, with --jobs 2, a local worker on
    the same queue), and a rerun trains nothing."""
    pytest.importorskip("sklearn")
    pytest.importorskip("skimage")
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_datasets_t",
                                                  ROOT / "benchmarks" / "datasets.py")
    builder = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = builder
    spec.loader.exec_module(builder)
    assert builder.main(["--out", str(tmp_path / "d"), "--per-class", "4", "--test-per-class",
                         "2", "--only", "digits8x8", "--sources", str(tmp_path / "s")]) == 0
    monkeypatch.setenv("NBTL_CACHE_DIR", str(tmp_path / "cache"))
    for name, value in (("REINIT", (0,)), ("REGULARISERS", ("l2",)), ("LR_MODES", ("one",)),
                        ("BASE_LRS", (0.01,)), ("CONFIRM_SEEDS", (1, 2)), ("TOP", 1)):
        monkeypatch.setattr(t, name, value)
    results = tmp_path / "results.jsonl"
    args = ["run", "--data", str(tmp_path / "d"), "--results", str(results), "--only",
            "digits8x8", "--epochs", "2", "--size", "32", "--device", "cpu", "--jobs", jobs]
    assert t.main(args) == 0
    rows = t.read_results(results)
    runs = [(r["setting"], r["seed"]) for r in rows if r["kind"] == "run"]
    rec = next(s for s, _ in runs if s.startswith("rec@"))
    assert sorted(runs) == sorted([("default", 0), (rec, 0), ("scratch", 0), ("default", 1),
                                   (rec, 1), ("default", 2), (rec, 2)])
    assert all(0.0 <= r["test"] <= 1.0 for r in rows if r["kind"] == "run")

    def refuse(*_a, **_k):
        raise AssertionError("a finished run was trained again")

    import recommender.finetune.runs

    monkeypatch.setattr(recommender.finetune.runs, "run_setting", refuse)
    assert t.main(args) == 0
    assert len(t.read_results(results)) == len(rows)
    page = tmp_path / "bench.md"
    assert t.main(["report", "--results", str(results), "--out", str(page), "--figure",
                   str(tmp_path / "fig.png")]) == 0
    assert "| digits8x8 | 10, " in page.read_text()
    assert json.loads(results.read_text().splitlines()[0])["kind"] == "analysis"


def test_a_dataset_without_its_grid_still_reports_the_gain():
    hp = t.recommend_from(ANALYSIS).hyperparameters
    rec_hp, rec_id = t.plain_hp(hp), t.recommended_id(hp)
    rows = [r for r in _rows(rec_id, rec_hp, lambda s, k: {"default": 0.6, rec_id: 0.7}
                             .get(s, 0.5) + 0.01 * k)
            if r["kind"] == "analysis" or r["setting"] in ("default", rec_id)]
    datasets = rep.load(rows)
    assert not datasets["toy"].complete and datasets["toy"].paired_pair()
    text = rep.render(datasets, fit_on=())
    assert "| toy | 10, 30/10/20 | 62.0 | 72.0 | +10.0 ± 0.0 | – | – |" in text


# --- the queue (runs as trials of an Optuna study) ----------------------------------------------

UNITS = [("default", 0, {}), ("scratch", 0, {}), ("r1-l2-one-0.01", 0, {}), ("default", 1, {})]


def test_the_queue_hands_each_run_to_one_worker_and_queues_it_once(tmp_path):
    journal = str(tmp_path / "q.journal")
    main = t.Queue.open(journal, "transfer-x", create=True)
    main.enqueue(UNITS)
    main.enqueue(UNITS)  # a rerun of the main process queues nothing twice
    other = t.Queue.open(journal, "transfer-x", create=False)
    claimed = []
    for queue in [main, other] * 3:
        trial = queue.claim()
        if trial is not None:
            claimed.append(t.Queue._unit(trial))
            queue.complete(trial, {"setting": trial.user_attrs["setting"], "test": 0.5})
    assert sorted(claimed) == sorted((s, seed) for s, seed, _ in UNITS)
    assert main.finished([(s, seed) for s, seed, _ in UNITS]) and main.pending() == 0


def test_a_run_lost_with_its_worker_is_queued_again(tmp_path):
    import time

    journal = str(tmp_path / "q.journal")
    main = t.Queue.open(journal, "transfer-x", create=True, heartbeat=(1, 2))
    main.enqueue(UNITS[:1])
    lost = main.claim()  # claimed, then its process "dies": no heartbeat, never completed
    assert lost is not None and main.claim() is None
    time.sleep(2.5)
    again = t.Queue.open(journal, "transfer-x", create=False, heartbeat=(1, 2)).claim()
    assert again is not None and t.Queue._unit(again) == ("default", 0)
    assert again.user_attrs["hyperparameters"] == {}
