"""--validate and --search: splits, the paired fine-tuning runs, the resumable search."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

import heuristics
import recommender
from recommender.data.tensors import ImageTensors
from recommender.errors import UsageError
from recommender.finetune import runs as runs_mod
from recommender.finetune import search as search_mod
from recommender.finetune.training import TrainConfig, TrainingDiverged, _lr_at, train

TINY = {"max_per_class": 5, "workers": 0, "validate_epochs": 2, "validate_size": 32}


def without_timings(document: dict) -> dict:
    return {k: v for k, v in document.items() if k != "timings"}


# --- the training loop's new parts ---------------------------------------------------------------

def test_schedules_warm_up_then_cosine_step_or_constant():
    step = [_lr_at(s, 1.0, 2, 20, "step") for s in range(20)]
    assert step[:2] == [0.5, 1.0] and step[5] == 1.0 and step[12] == pytest.approx(0.1)
    assert step[19] == pytest.approx(0.01)
    assert [_lr_at(s, 1.0, 2, 20, "constant") for s in range(2, 20)] == [1.0] * 18


def _tiny_data(n=16, size=8):
    g = torch.Generator().manual_seed(0)
    return ImageTensors(torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g),
                        torch.arange(n) % 2)


def _tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


def test_a_head_only_phase_moves_neither_the_frozen_weights_nor_their_statistics():
    model = _tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    head = [model[5].weight, model[5].bias]
    for p in model.parameters():
        p.requires_grad_(any(p is h for h in head))
    config = TrainConfig(epochs=2, lr=0.1, weight_decay=0.0, batch_size=4)
    train(model, _tiny_data(), config, mean=(0.5,) * 3, std=(0.5,) * 3, seed=0,
          groups=[{"params": head, "lr": 0.1}], frozen=["0", "1"])
    after = model.state_dict()
    for key in before:
        moved = not torch.equal(before[key], after[key])
        assert moved == key.startswith("5."), key


def test_a_diverging_run_stops_with_a_clear_error():
    config = TrainConfig(epochs=3, lr=1e30, weight_decay=0.0, batch_size=4)
    with pytest.raises(TrainingDiverged, match="NaN or infinite"):
        train(_tiny_model(), _tiny_data(), config, mean=(0.5,) * 3, std=(0.5,) * 3, seed=0)


# --- the whole validation ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def validated(sample_dir):
    return recommender.recommend(sample_dir, validate=True, validate_seeds=2, **TINY)


@pytest.mark.slow
def test_validation_compares_default_and_recommendation_over_paired_seeds(validated):
    v = validated.validation
    assert [s.name for s in v.settings] == ["default", "recommended"]
    assert v.seeds == (0, 1)
    for setting in v.settings:
        assert [r.seed for r in setting.runs] == [0, 1]
        assert all(0.0 <= r.test_accuracy <= 1.0 for r in setting.runs)
    doc = validated.to_dict()["validation"]
    diff = (np.array([r["test_accuracy"] for r in doc["settings"]["recommended"]["runs"]])
            - np.array([r["test_accuracy"] for r in doc["settings"]["default"]["runs"]]))
    assert doc["difference"]["recommended_minus_default"] == pytest.approx(diff.mean())
    assert doc["difference"]["spread"] == pytest.approx(np.std(diff, ddof=1))
    assert doc["split"] == {"source": "stratified", "n_train": 30, "n_val": 10, "n_test": 10,
                            "fractions": [0.6, 0.2, 0.2]}
    assert doc["budget"]["epochs"] == 2 and doc["budget"]["image_size"] == 32
    default = doc["settings"]["default"]["hyperparameters"]
    assert default["l2sp_weight"] == 0 and {g["lr"] for g in default["lr_groups"]} == {0.01}


@pytest.mark.slow
def test_validation_measures_how_far_each_run_moved_each_block(validated):
    doc = validated.to_dict()["validation"]
    assert doc["blocks"] == list(validated.blocks)
    assert len(doc["recommended_treatment"]) == len(doc["blocks"])
    for setting in doc["settings"].values():
        per_run = np.array([r["block_cka"] for r in setting["runs"]], dtype=float)
        assert per_run.shape == (2, len(doc["blocks"]))
        assert np.all((per_run >= -1.0) & (per_run <= 1.0))
        assert setting["block_cka"] == pytest.approx(per_run.mean(axis=0).tolist())


@pytest.mark.slow
def test_the_probes_see_only_the_training_split(validated):
    assert len(validated.dataset.samples) == 30 and validated.analysed == "train"
    train = {p for p, _ in validated.dataset.samples}
    split = validated.validation.split
    held_out = {split.samples[i][0] for i in np.concatenate([split.val, split.test])}
    assert not train & held_out


@pytest.mark.slow
def test_validation_is_deterministic(sample_dir, validated):
    # Trained again from scratch (no run cache): the same numbers.
    again = recommender.recommend(sample_dir, validate=True, validate_seeds=2, use_cache=False,
                                  **TINY)
    assert not any(r.cached for s in again.validation.settings for r in s.runs)
    assert json.dumps(without_timings(again.to_dict())) == json.dumps(
        without_timings(validated.to_dict()))
    timings = validated.to_dict()["timings"]
    assert {"default_s", "recommended_s", "validation_s"} <= set(timings)


@pytest.mark.slow
def test_a_rerun_with_more_seeds_trains_only_the_new_seed(sample_dir, validated, monkeypatch):
    calls = []
    real = runs_mod.run_setting
    monkeypatch.setattr(runs_mod, "run_setting",
                        lambda *a, **k: calls.append(k["label"]) or real(*a, **k))
    more = recommender.recommend(sample_dir, validate=True, validate_seeds=3, **TINY)
    assert sorted(calls) == ["default seed 2", "recommended seed 2"]
    for name in ("default", "recommended"):
        old, new = validated.validation.setting(name), more.validation.setting(name)
        assert new.runs[:2] == old.runs and [r.cached for r in new.runs] == [True, True, False]


@pytest.mark.slow
def test_lp_ft_and_reinitialised_blocks_train(sample_dir):
    result = recommender.recommend(sample_dir, validate=True, validate_seeds=1,
                                   overrides={"lp_ft": True, "reinit_top_blocks": 1}, **TINY)
    run = result.validation.setting("recommended").runs[0]
    assert run.lp_epochs == 1  # at least one head-only epoch, never the whole budget
    assert result.validation.setting("default").runs[0].lp_epochs == 0


@pytest.mark.parametrize("kwargs, message", [
    ({"validate_seeds": 0}, "--validate-seeds 0"),
    ({"validate_epochs": 1}, "--validate-epochs 1"),
    ({"validate_size": 8}, "--validate-size 8"),
])
def test_bad_validation_options_are_usage_errors_before_any_work(sample_dir, kwargs, message):
    with pytest.raises(UsageError, match=message):
        recommender.recommend(sample_dir, validate=True, **{**TINY, **kwargs})


# --- the search --------------------------------------------------------------------------------

SPACE = {"reinit_top_blocks": ("int", (0, 2)), "base_lr": ("log", (1e-3, 1e-1)),
         "l2sp_on": ("choice", [True, False]), "l2sp_weight": ("log", (1e-3, 1e-1))}
START = {"reinit_top_blocks": 0, "base_lr": 0.01, "l2sp_on": True, "l2sp_weight": 0.02}


def _score(overrides):
    return (round(overrides["base_lr"], 6) + overrides["reinit_top_blocks"] / 10, 0.5)


def test_search_starts_at_the_recommendation_and_resumes_without_redoing_trials(tmp_path):
    calls = []

    def evaluate(overrides):
        calls.append(overrides)
        return _score(overrides)

    db = tmp_path / "s.journal"
    kw = {"space_": SPACE, "start": START, "evaluate": evaluate, "storage": db,
          "study_name": "x", "seed": 0}
    first = search_mod.run_search(3, known=[(START, 0.7, 0.6)], **kw)
    assert len(first) == 3 and len(calls) == 2
    assert first[0]["params"] == START and first[0]["val_accuracy"] == 0.7
    assert all(1e-3 <= t["params"]["base_lr"] <= 1e-1 for t in first)
    again = search_mod.run_search(3, known=[(START, 0.7, 0.6)], **kw)
    assert again == first and len(calls) == 2  # nothing trained again
    more = search_mod.run_search(5, known=[(START, 0.7, 0.6)], **kw)
    assert more[:3] == first and len(more) == 5 and len(calls) == 4
    assert search_mod.best_trial(more)["val_accuracy"] == max(t["val_accuracy"] for t in more)


def test_search_reruns_a_trial_cut_short(tmp_path):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    db = tmp_path / "s.journal"
    calls = []

    def evaluate(overrides):
        calls.append(overrides)
        return _score(overrides)

    kw = {"space_": SPACE, "start": START, "evaluate": evaluate, "storage": db,
          "study_name": "x", "seed": 0, "heartbeat": (1, 2)}
    search_mod.run_search(1, **kw)
    study = optuna.load_study(study_name="x",
                              storage=JournalStorage(JournalFileBackend(str(db))))
    cut = study.ask({"base_lr": optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True),
                     "reinit_top_blocks": optuna.distributions.IntDistribution(0, 2),
                     "l2sp_on": optuna.distributions.CategoricalDistribution([True, False]),
                     "l2sp_weight": optuna.distributions.FloatDistribution(1e-3, 1e-1,
                                                                          log=True)})
    trials = search_mod.run_search(2, **kw)  # the process "died" inside trial 1 ...
    assert len(trials) == 2 and len(calls) == 2
    assert calls[1]["base_lr"] == cut.params["base_lr"]  # ... which, silent 2 s, is run again
    assert trials[1]["retried"] == cut.number


def _detail(value, span):
    return heuristics.Detail(value, tuple(span), "medium", "", "", "rule", (), {})


def test_search_space_follows_the_recommendation_ranges():
    hp = replace(heuristics.binary_default(), reinit_top_blocks=0, split_block="stage4",
                 base_lr=0.003, l2sp_weight=0.0, lp_ft=False)
    details = {"reinit_top_blocks": _detail(0, [0, 2]),
               "split_block": _detail("stage4", ["stage4"]),
               "base_lr": _detail(0.003, [0.001, 0.1]),
               "l2sp_weight": _detail(0.0, [0.0, 0.02]),
               "lp_ft": _detail(False, [False, True])}
    space = search_mod.space(details, hp)
    assert space == {"reinit_top_blocks": ("int", (0, 2)), "base_lr": ("log", (0.001, 0.1)),
                     "l2sp_on": ("choice", [True, False]),
                     "l2sp_weight": ("log", (0.0002, 0.02)),
                     "lp_ft": ("choice", [False, True])}
    start = search_mod.recommended_params(space, hp)
    assert search_mod.to_overrides(start) == {"reinit_top_blocks": 0, "base_lr": 0.003,
                                              "l2sp_weight": 0.0, "lp_ft": False}


@pytest.mark.slow
def test_search_through_the_pipeline_reports_best_found_and_resumes(sample_dir, tmp_path,
                                                                    monkeypatch):
    db = tmp_path / "search.journal"
    result = recommender.recommend(sample_dir, search=2, search_db=db, validate_seeds=2, **TINY)
    v = result.validation
    assert [s.name for s in v.settings] == ["default", "recommended", "best_found"]
    assert len(v.search["trials"]) == 2 and db.exists()
    hp = result.recommendation.to_dict()["hyperparameters"]
    start = v.search["trials"][0]["overrides"]
    assert start and all(hp[k] == value for k, value in start.items())  # the recommended point
    calls = []
    real = runs_mod.run_setting
    monkeypatch.setattr(runs_mod, "run_setting",
                        lambda *a, **k: calls.append(k.get("label")) or real(*a, **k))
    again = recommender.recommend(sample_dir, search=2, search_db=db, validate_seeds=2, **TINY)
    assert again.validation.search["trials"] == v.search["trials"]
    # Nothing is trained again: the trials from the journal, the paired runs from the cache.
    assert calls == []
    doc = result.to_dict()["validation"]
    assert "best_found_minus_recommended" in doc["difference"]


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_validation_on_the_gpu_uses_mixed_precision(sample_dir):
    result = recommender.recommend(sample_dir, validate=True, validate_seeds=1, device="cuda",
                                   **TINY)
    assert result.to_dict()["validation"]["mixed_precision"] is True
    assert 0.0 <= result.validation.setting("recommended").runs[0].test_accuracy <= 1.0


def test_a_file_that_is_not_a_journal_is_a_usage_error(tmp_path):
    bad = tmp_path / "notes.journal"
    bad.write_text("these are my notes, not trials\n")
    with pytest.raises(UsageError, match="cannot be used as a search journal"):
        search_mod.run_search(1, space_=SPACE, start=START, evaluate=_score, storage=bad,
                              study_name="x", seed=0)
    assert bad.read_text() == "these are my notes, not trials\n"


@pytest.mark.slow
def test_a_search_trial_that_diverges_scores_zero_and_the_search_goes_on(sample_dir, tmp_path,
                                                                         monkeypatch):
    real = runs_mod.run_setting

    def diverge_in_trials(*args, **kwargs):
        if kwargs.get("label") == "search trial":
            raise TrainingDiverged(1, 1)
        return real(*args, **kwargs)

    monkeypatch.setattr(runs_mod, "run_setting", diverge_in_trials)
    result = recommender.recommend(sample_dir, search=2, search_db=tmp_path / "s.journal",
                                   validate_seeds=1, **TINY)
    trials = result.validation.search["trials"]
    assert len(trials) == 2 and trials[1]["val_accuracy"] == trials[1]["test_accuracy"] == 0.0
    assert result.validation.search["best_trial"] == trials[0]["number"]


@pytest.mark.slow
def test_a_pruned_search_reports_its_pruned_trials(sample_dir, tmp_path):
    result = recommender.recommend(sample_dir, search=4, prune=True, validate_seeds=1,
                                   search_db=tmp_path / "s.journal", **{**TINY,
                                                                        "validate_epochs": 4})
    search = result.validation.search
    assert search["pruner"].startswith("optuna SuccessiveHalvingPruner")
    states = [t["state"] for t in search["trials"]]
    assert len(states) == 4 and states[0] == "complete" and set(states) <= {"complete",
                                                                             "pruned"}
    for trial in search["trials"]:
        pruned = trial["state"] == "pruned"
        assert (trial["test_accuracy"] is None) == pruned
        assert (trial["epochs"] is not None and 1 <= trial["epochs"] < 4) == pruned
    best = next(t for t in search["trials"] if t["number"] == search["best_trial"])
    assert best["state"] == "complete"


def test_the_pruner_stops_a_trial_behind_the_others_at_a_rung(tmp_path):
    def evaluate(overrides, report):
        good = overrides["base_lr"] == START["base_lr"]
        for epoch in range(1, 10):
            report(epoch, 0.9 if good else 0.1)  # raises TrialPruned when told to stop
        return (0.9 if good else 0.1), 0.5

    trials = search_mod.run_search(4, space_=SPACE, start=START, evaluate=evaluate,
                                   storage=None, study_name="x", seed=0, prune=True)
    assert trials[0]["state"] == "complete"
    assert all(t["state"] == "pruned" and t["epochs"] < 9 for t in trials[1:])
    assert search_mod.best_trial(trials)["number"] == 0
