"""benchmarks/ranking.py: the table of each backbone's measures against its fine-tuned
accuracy, weighted Kendall tau, ties within seed noise, and the backbone key of transfer.py."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks import ranking as r  # noqa: E402
from benchmarks import transfer as t  # noqa: E402


def rows(tests: dict[str, list[float]], logme: dict[str, float]) -> list[dict]:
    out = []
    for model in tests:
        tag = {} if model == t.DEFAULT_BACKBONE else {"backbone": model}
        out.append({"kind": "analysis", "dataset": "d", **tag, "analysis": {
            "measures": {"logme": logme[model], "linear_probe_accuracy": 0.5,
                         "knn_accuracy": 0.4, "h_score": 1.0},
            "num_images": 30, "num_classes": 3, "num_params": 5e6}})
        for seed, acc in zip(t.CONFIRM_SEEDS, tests[model]):
            out.append({"kind": "run", "dataset": "d", **tag, "setting": "default",
                        "seed": seed, "test": acc, "diverged": False, "n_test": 100})
    return out


MODELS = ["tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"]


def test_rows_of_another_backbone_have_their_own_key():
    row = {"dataset": "d", "setting": "default", "seed": 1, "budget": {}, "device": "cpu",
           "threads": 1}
    assert t.run_key(row) != t.run_key({**row, "backbone": "tf_efficientnet_lite1"})
    assert t.run_key(row) == t.run_key({**row, "backbone": t.DEFAULT_BACKBONE})


def test_a_measure_in_the_order_of_the_accuracies_has_tau_one(tmp_path):
    tests = {MODELS[0]: [0.5, 0.52, 0.51], MODELS[1]: [0.7, 0.71, 0.72],
             MODELS[2]: [0.9, 0.91, 0.9]}
    data = r.collect(rows(tests, {MODELS[0]: 0.1, MODELS[1]: 0.2, MODELS[2]: 0.3}))
    lines, taus = r.dataset_table("d", data["d"])
    assert abs(taus["logme"] - 1.0) < 1e-9
    assert "linear_probe" not in taus  # equal for every model: no ranking, said so
    text = "\n".join(lines)
    assert "linear probe n/a (equal for every model)" in text
    assert "No two models tie within seed noise" in text
    reversed_ = r.collect(rows(tests, {MODELS[0]: 0.3, MODELS[1]: 0.2, MODELS[2]: 0.1}))
    assert abs(r.dataset_table("d", reversed_["d"])[1]["logme"] + 1.0) < 1e-9


def test_models_within_seed_noise_are_said_to_tie():
    assert r.tie_within_noise({1: 0.90, 2: 0.80, 3: 0.85}, {1: 0.85, 2: 0.86, 3: 0.84})
    assert not r.tie_within_noise({1: 0.90, 2: 0.91, 3: 0.92}, {1: 0.80, 2: 0.80, 3: 0.81})


def test_incomplete_models_are_left_out_and_the_section_replaces_its_markers(tmp_path):
    tests = {MODELS[0]: [0.5, 0.5, 0.5], MODELS[1]: [0.6, 0.6, 0.6], MODELS[2]: [0.7, 0.7]}
    data = r.collect(rows(tests, dict.fromkeys(MODELS, 0.1)))
    assert set(data["d"]) == set(MODELS[:2])  # lite2 misses seed 3
    results = tmp_path / "r.jsonl"
    full = {m: [0.5, 0.6, 0.7] for m in MODELS}
    t.append(results, rows(full, {MODELS[0]: 1.0, MODELS[1]: 2.0, MODELS[2]: 3.0})[0])
    for row in rows(full, {MODELS[0]: 1.0, MODELS[1]: 2.0, MODELS[2]: 3.0})[1:]:
        t.append(results, row)
    doc = tmp_path / "b.md"
    doc.write_text(f"before\n{r.BEGIN}\nold\n{r.END}\nafter\n")
    assert r.main(["--results", str(results), "--out", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "old" not in text
    assert "**d**" in text and "Over the 1 datasets" in text
