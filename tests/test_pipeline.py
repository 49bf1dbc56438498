"""The Python API: one call from a folder to the result that the report and JSON are made of."""

from __future__ import annotations

import json
import sys

import pytest

import probes
import recommender


@pytest.fixture(scope="module")
def result(sample_dir):
    return recommender.recommend(sample_dir, max_per_class=4, workers=0)


@pytest.mark.slow
def test_api_result_carries_dataset_model_measures_and_recommendation(result):
    assert len(result.dataset.samples) == 40
    assert result.model["name"] == "tf_efficientnet_lite0"
    assert result.blocks == ("stage1", "stage2", "stage3", "stage4", "stage5", "neck")
    hp = result.recommendation.to_dict()["hyperparameters"]
    assert 0 <= hp["reinit_top_blocks"] < len(result.blocks)


@pytest.mark.slow
def test_every_registered_probe_is_measured(result):
    assert [p.name for p in result.probes] == [p.name for p in probes.list_probes()]


@pytest.mark.slow
def test_feature_probes_are_per_block_and_source_head_probes_are_once(result):
    by_name = {p.name: p for p in result.probes}
    assert by_name["logme"].per_block and len(by_name["logme"].values) == 6
    assert not by_name["leep"].per_block and len(by_name["leep"].values) == 1


@pytest.mark.slow
def test_the_json_holds_consecutive_block_cka_and_cka_with_random_init(result):
    measures = result.to_dict()["measures"]
    between = measures["consecutive_cka"]
    assert len(between) == 6 and between[0] is None
    assert all(-1.0 <= v <= 1.0 for v in between[1:])
    random_init = measures["probes"]["cka_random_init"]["values"]
    assert len(random_init) == 6 and all(-1.0 <= v <= 1.0 for v in random_init)


@pytest.mark.slow
def test_linear_probe_on_pretrained_features_beats_chance(result):
    probe = {p.name: p for p in result.probes}["linear_probe_accuracy"]
    assert probe.summary.value > 0.3  # 10 classes: chance is 0.1
    assert probe.summary.spread is not None


@pytest.mark.slow
def test_json_document_is_strict_json_with_the_schema_fields(result):
    document = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert {"schema_version", "dataset", "model", "measures", "recommendation"} <= set(document)
    assert {"hyperparameters", "reasons"} <= set(document["recommendation"])


def without_timings(document: dict) -> dict:
    return {k: v for k, v in document.items() if k != "timings"}


@pytest.mark.slow
def test_same_inputs_and_seed_give_the_same_json(sample_dir, result):
    again = recommender.recommend(sample_dir, max_per_class=4, workers=0, use_cache=False)
    assert json.dumps(without_timings(again.to_dict())) == json.dumps(
        without_timings(result.to_dict()))
    # Wall times are the one part that differs between identical runs, all in one place.
    assert set(result.to_dict()["timings"]) >= {"features_s", "probes_s", "total_s"}


@pytest.mark.slow
def test_another_seed_samples_other_images(sample_dir, result):
    other = recommender.recommend(sample_dir, max_per_class=4, seed=1, workers=0)
    assert other.dataset.samples != result.dataset.samples


@pytest.mark.slow
def test_stage_callback_hears_each_step(sample_dir):
    heard = []
    recommender.recommend(sample_dir, max_per_class=2, workers=0, on_stage=heard.append)
    assert heard == ["Scanning the dataset", "Loading the backbone", "Extracting features",
                     "Computing probes"]


def test_probe_values_do_not_depend_on_the_number_of_jobs():
    import numpy as np

    from recommender.analysis import run_probes
    from recommender.models.features import Features

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 15)
    blocks = tuple(rng.normal(size=(60, d)).astype(np.float32) + labels[:, None] * 0.3
                   for d in (8, 64))
    probs = rng.dirichlet(np.ones(20), size=60)
    features = Features(("a", "b"), blocks, tuple(b[::-1].copy() for b in blocks), probs)
    one = [p.to_dict() for p in run_probes(features, labels, jobs=1)]
    two = [p.to_dict() for p in run_probes(features, labels, jobs=2)]
    assert json.dumps(one) == json.dumps(two)


def _four_blocks():
    import numpy as np

    from recommender.models.features import Features

    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), 12)
    blocks = tuple(rng.normal(size=(36, d)).astype(np.float32) + labels[:, None] * 0.5
                   for d in (4, 8, 16, 32))
    features = Features(("a", "b", "c", "d"), blocks, tuple(b[::-1].copy() for b in blocks),
                        rng.dirichlet(np.ones(9), size=36))
    return features, labels


def test_the_probes_run_in_forked_workers_that_ignore_ctrl_c(monkeypatch):
    """On Linux the blocks' probes run in forked worker processes (real parallelism: the
    fits spend much of their time in Python), which ignore SIGINT, so that a Ctrl-C reaches
    the main process alone and no worker prints a traceback; one tick per block."""
    import os
    import signal

    import recommender.analysis as analysis

    real = analysis._measure

    def measure(names, inputs):
        return os.getpid(), signal.getsignal(signal.SIGINT), real(names, inputs)

    monkeypatch.setattr(analysis, "_measure", measure)
    features, labels = _four_blocks()
    seen = []
    for _i, (pid, handler, _) in analysis._in_workers(
            lambda i: analysis._measure(["knn_accuracy"], {"features": features.pretrained[i],
                                                           "labels": labels}), range(4), 2):
        seen.append((pid, handler))
    assert len(seen) == 4
    if sys.platform.startswith("linux"):
        assert all(pid != os.getpid() for pid, _ in seen)
        assert all(handler == signal.SIG_IGN for _, handler in seen)
    monkeypatch.setattr(analysis, "_measure", real)
    ticks = []
    analysis.run_probes(features, labels, jobs=2, on_block=ticks.append)
    assert ticks == [1, 1, 1, 1]
    assert analysis._FORKED_WORK is None  # nothing left behind in this process


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forked workers: Linux")
def test_a_ctrl_c_during_the_workers_fork_is_not_lost():
    """A Ctrl-C that arrives while the pool forks (here: from an after-fork hook in this
    process, where Python would print "Exception ignored" and go on) still interrupts."""
    from _sigint import sigint_in_the_next_fork

    import recommender.analysis as analysis

    with sigint_in_the_next_fork(), pytest.raises(KeyboardInterrupt):
        list(analysis._in_processes(lambda i: i, range(4), 2))
    assert analysis._FORKED_WORK is None


def test_a_failing_probe_thread_raises_in_the_caller(monkeypatch):
    import recommender.analysis as analysis

    def measure(names, inputs):
        raise RuntimeError("a bug in a probe")

    monkeypatch.setattr(analysis, "_measure", measure)
    features, labels = _four_blocks()
    with pytest.raises(RuntimeError, match="a bug in a probe"):
        analysis.run_probes(features, labels, jobs=2)


def test_the_random_init_twin_on_a_subset_is_compared_on_the_same_images(monkeypatch):
    """When the twin saw a subset of the images, the probes that compare with it get the
    pre-trained features and labels of exactly those rows; the others get every row."""
    from dataclasses import replace

    import numpy as np

    import probes as probes_pkg
    import recommender.analysis as analysis

    features, labels = _four_blocks()
    rows = np.array([0, 5, 7, 12, 13, 20, 21, 30, 33, 35])
    twin = replace(features, random_features=tuple(r[rows] for r in features.random_features),
                   random_rows=rows)
    shapes = {}
    real = probes_pkg.compute

    def compute(name, **inputs):
        shapes.setdefault(name, set()).add((inputs["features"].shape[0]
                                            if inputs.get("features") is not None else None,
                                            inputs["labels"].shape[0]))
        return real(name, **inputs)

    monkeypatch.setattr(analysis.probes, "compute", compute)
    results = {p.name: p for p in analysis.run_probes(twin, labels, jobs=1)}
    assert shapes["pretraining_gain"] == {(rows.size, rows.size)}
    assert shapes["linear_probe_accuracy"] == {(36, 36)}
    assert all(m is not None for m in results["pretraining_gain"].values)


def test_a_block_without_batchnorm_reports_the_bn_shift_as_unavailable_not_zero():
    import numpy as np

    from recommender.analysis import run_probes
    from recommender.models.features import Features

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 10)
    blocks = tuple(rng.normal(size=(30, 6)) + labels[:, None] for _ in range(2))
    stats = np.abs(rng.normal(size=(4, 5))) + 0.5
    features = Features(("a", "b"), blocks, blocks, rng.dirichlet(np.ones(7), size=30),
                        bn_stats=(stats, None))
    shift = next(p for p in run_probes(features, labels, jobs=1) if p.name == "bn_shift")
    assert shift.values[0] is not None and shift.errors[0] is None
    assert shift.values[1] is None
    assert "no BatchNorm layer" in shift.errors[1]


@pytest.mark.slow
def test_every_block_of_the_default_backbone_has_a_bn_shift(result):
    shift = next(p for p in result.probes if p.name == "bn_shift")
    assert all(m is not None and m.value >= 0 for m in shift.values)


@pytest.mark.slow
def test_overrides_win_and_are_recorded_in_the_settings(sample_dir):
    result = recommender.recommend(sample_dir, max_per_class=2, workers=0,
                                   overrides={"base_lr": 0.003, "reinit_top_blocks": 1})
    doc = result.to_dict()
    assert doc["settings"]["overrides"] == {"base_lr": 0.003, "reinit_top_blocks": 1}
    hp = doc["recommendation"]["hyperparameters"]
    assert hp["base_lr"] == 0.003 and hp["reinit_top_blocks"] == 1
    assert doc["recommendation"]["details"]["base_lr"]["set_by"] == "override"


@pytest.mark.slow
def test_scratch_accuracy_is_measured_on_request_and_reaches_the_rules(sample_dir):
    result = recommender.recommend(sample_dir, max_per_class=4, workers=0, scratch=True,
                                   scratch_epochs=1)
    doc = result.to_dict()
    scratch = doc["measures"]["scratch"]
    assert 0.0 <= scratch["value"] <= 1.0
    assert scratch["n_train"] + scratch["n_test"] == 40 and scratch["epochs"] == 1
    assert doc["measures"]["summary"]["scratch_accuracy"] == scratch["value"]
    fired = {r["rule"] for r in doc["recommendation"]["reasons"]}
    assert any(rule.startswith("fit.") and "scratch" in rule for rule in fired), fired
