"""Probes with ``max_samples``: the seeded, stratified subset above the cap, and none below.

The rule is :mod:`probes._subsample`'s; the registry applies it in :func:`probes.compute`,
records the subset's size in ``Measurement.n_used``, and the analysis, the JSON and the
report carry it. The last tests run every registered probe at N = 30,000 and hold its
memory to a bound that an N x N matrix (3.6 GB in float32) would break.
"""

from __future__ import annotations

import dataclasses
import tracemalloc

import numpy as np
import pytest

import probes
from probes import PROBES, Measurement, ProbeError, compute, get_probe
from probes._subsample import allocate, sample_inputs, subsample_rows
from recommender.analysis import ProbeResult, run_probes
from recommender.models.features import Features
from recommender.report import subset_note


def _problem(n: int, n_classes: int = 4, dim: int = 5, seed: int = 0):
    """Class-structured features, labels of unequal class sizes, a 6-class source softmax."""
    rng = np.random.default_rng(seed)
    sizes = rng.multinomial(n - 2 * n_classes, np.linspace(1, 3, n_classes) / (2 * n_classes))
    labels = np.repeat(np.arange(n_classes), sizes + 2)
    rng.shuffle(labels)
    features = 2.0 * rng.normal(size=(n_classes, dim))[labels] + rng.normal(size=(n, dim))
    logits = rng.normal(size=(n, 6))
    logits[np.arange(n), labels % 6] += 2.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return {"features": features.astype(np.float32), "labels": labels,
            "random_features": rng.normal(size=(n, dim - 1)).astype(np.float32),
            "source_probs": probs.astype(np.float32)}


def _capped(name: str, cap: int):
    return dataclasses.replace(get_probe(name), max_samples=cap)


# --- the allocation ------------------------------------------------------------------


def test_allocation_is_proportional_and_sums_to_the_cap():
    take = allocate(np.array([500, 300, 200]), 100)
    assert take.tolist() == [50, 30, 20]


def test_allocation_keeps_two_of_every_class_even_a_tiny_one():
    take = allocate(np.array([990, 5, 5]), 100)
    assert take.sum() == 100 and take[1] == 2 and take[2] == 2


def test_allocation_keeps_one_of_every_class_when_two_each_do_not_fit():
    take = allocate(np.full(60, 10), 100)
    assert take.min() >= 1 and take.sum() == 100


def test_allocation_keeps_every_class_even_beyond_the_cap():
    assert allocate(np.full(150, 3), 100).tolist() == [1] * 150


def test_allocation_never_takes_more_than_a_class_has():
    counts = np.array([1, 1, 2, 3, 400])
    take = allocate(counts, 50)
    assert (take <= counts).all() and take.sum() == 50 and (take >= np.minimum(counts, 2)).all()


# --- the subset ----------------------------------------------------------------------


def test_subset_is_stratified():
    inputs = _problem(5000, n_classes=7)
    keep = subsample_rows(inputs["features"], inputs["labels"], 700)
    counts = np.bincount(inputs["labels"])
    kept = np.bincount(inputs["labels"][keep], minlength=counts.size)
    assert keep.size == 700 == np.unique(keep).size
    assert np.all(np.abs(kept - 700 * counts / counts.sum()) <= 1)


def test_subset_is_the_same_rows_whatever_the_input_order():
    inputs = _problem(3000)
    perm = np.random.default_rng(5).permutation(3000)
    one = sample_inputs(("features", "labels"), inputs, 400)[0]
    other = sample_inputs(("features", "labels"),
                          {k: v[perm] for k, v in inputs.items()}, 400)[0]
    rows = np.column_stack([one["features"], one["labels"]])
    rows_other = np.column_stack([other["features"], other["labels"]])
    assert np.array_equal(np.unique(rows, axis=0), np.unique(rows_other, axis=0))


def test_identical_rows_with_different_labels_are_ordered_by_label():
    features = np.zeros((6, 2), dtype=np.float32)
    labels = np.array([1, 0, 1, 0, 1, 0])
    order = subsample_rows(features, labels, 10)
    assert labels[order].tolist() == [0, 0, 0, 1, 1, 1]


def test_subset_is_deterministic():
    inputs = _problem(3000)
    assert np.array_equal(subsample_rows(inputs["features"], inputs["labels"], 300),
                          subsample_rows(inputs["features"], inputs["labels"], 300))


def test_subset_changes_with_the_seed():
    inputs = _problem(3000)
    assert not np.array_equal(subsample_rows(inputs["features"], inputs["labels"], 300, seed=0),
                              subsample_rows(inputs["features"], inputs["labels"], 300, seed=1))


def test_labels_given_as_a_list_stay_one_label_per_sample():
    inputs = _problem(500)
    as_tuples = [("class", int(y)) for y in inputs["labels"]]
    subset, n_used = sample_inputs(("features", "labels"),
                                   {**inputs, "labels": as_tuples}, 100)
    assert n_used == 100 and len(subset["labels"]) == 100
    assert all(isinstance(y, tuple) for y in subset["labels"])


# --- compute -------------------------------------------------------------------------


@pytest.mark.parametrize("name", [p.name for p in PROBES.values() if p.max_samples])
def test_a_capped_probe_at_or_below_its_cap_is_computed_on_every_sample(name):
    inputs = _problem(150)
    probe = get_probe(name)
    uncapped = compute(dataclasses.replace(probe, max_samples=None), **inputs)
    assert compute(_capped(name, 150), **inputs) == uncapped  # bit-identical, n_used None
    assert uncapped.n_used is None


@pytest.mark.parametrize("name", [p.name for p in PROBES.values() if p.max_samples])
def test_a_capped_probe_above_its_cap_is_its_value_on_the_subset(name):
    inputs = _problem(600)
    probe = _capped(name, 250)
    measured = compute(probe, **inputs)
    needs = {k: inputs[k] for k in probe.needs}
    subset, n_used = sample_inputs(probe.needs, needs, 250)
    expected = (probe.spread or probe.func)(**subset)
    expected = expected[0] if probe.spread else expected
    assert measured.n_used == n_used == 250
    assert measured.value == float(expected)


def test_the_gain_uses_the_linear_probes_cap_and_rows():
    linear, gain = get_probe("linear_probe_accuracy"), get_probe("pretraining_gain")
    assert gain.max_samples == linear.max_samples
    inputs = _problem(800)
    for_probe = sample_inputs(linear.needs, inputs, 300)[0]
    for_gain = sample_inputs(gain.needs, inputs, 300)[0]
    assert np.array_equal(for_probe["features"], for_gain["features"])
    assert np.array_equal(for_probe["labels"], for_gain["labels"])


def test_a_bad_row_outside_the_subset_is_still_reported_with_its_row_number():
    inputs = _problem(600)
    kept = set(subsample_rows(inputs["features"], inputs["labels"], 100).tolist())
    bad = next(i for i in range(600) if i not in kept)
    inputs["features"][bad, 0] = np.nan
    with pytest.raises(ProbeError, match=f"first: row {bad}"):
        compute(_capped("knn_accuracy", 100), **inputs)


def test_labels_of_another_length_are_refused_as_without_a_cap():
    inputs = _problem(600)
    inputs["labels"] = inputs["labels"][:-1]
    with pytest.raises(ProbeError, match="got 599 labels for 600 samples"):
        compute(_capped("knn_accuracy", 100), **inputs)


def test_ragged_features_above_the_cap_get_the_message_they_get_without_one():
    ragged = [[0.0, 1.0]] * 300 + [[1.0]]
    with pytest.raises(ProbeError, match="features: could not be read as an array"):
        compute(_capped("knn_accuracy", 100), features=ragged, labels=np.arange(301) % 2)


def test_register_refuses_a_cap_below_two():
    with pytest.raises(ProbeError, match="max_samples 1 must be an integer >= 2"):
        probes.register(dataclasses.replace(_capped("knn_accuracy", 1), name="knn_one"))


def test_measurement_to_dict_has_n_used():
    assert Measurement(0.5, None, 300).to_dict() == {"value": 0.5, "spread": None, "n_used": 300}


# --- the analysis, the JSON and the report ---------------------------------------------


def test_run_probes_records_the_subset_in_the_json(monkeypatch):
    inputs = _problem(400)
    monkeypatch.setitem(PROBES, "knn_accuracy", _capped("knn_accuracy", 150))
    features = Features(("a", "b"), (inputs["features"], inputs["features"][:, :3]),
                        (inputs["random_features"],) * 2, inputs["source_probs"])
    results = {p.name: p.to_dict() for p in run_probes(features, inputs["labels"], jobs=1)}
    assert results["knn_accuracy"]["n_used"] == [150, 150]
    assert results["logme"]["n_used"] == [None, None]
    assert results["leep"]["n_used"] == [None]


def test_report_names_the_subsampled_probes_in_one_line():
    registry = {p.name: p for p in probes.list_probes()}
    used = ProbeResult("knn_accuracy", True, (Measurement(0.5, None, 20_000),) * 2,
                       (None, None), 100_000)
    whole = ProbeResult("logme", True, (Measurement(0.1),) * 2, (None, None), 100_000)
    probe = ProbeResult("linear_probe_accuracy", True, (Measurement(0.5, 0.1, 20_000),) * 2,
                        (None, None), 100_000)
    assert subset_note([used, whole, probe], registry) == (
        "kNN acc and probe acc computed on a stratified subset of 20,000 of 100,000 images "
        "(seed 0)")
    assert subset_note([whole], registry) == ""


# --- every probe at N = 30,000 ----------------------------------------------------------

LARGE_N = 30_000
# An N x N float32 matrix alone is 3.6 GB at N = 30,000; the capped kNN's similarity
# chunks are 1024 x 20,000.
MEMORY_BOUND_MB = 400


@pytest.fixture(scope="module")
def large():
    inputs = _problem(LARGE_N, n_classes=5, dim=4, seed=3)
    inputs["bn_stats"] = np.abs(np.random.default_rng(0).normal(size=(4, 8))) + 0.1
    return inputs


def _bounded_run(name: str, inputs: dict) -> Measurement:
    tracemalloc.start()
    try:
        measured = compute(name, **inputs)
        peak = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    assert np.isfinite(measured.value)
    assert peak < MEMORY_BOUND_MB, f"{name} peaked at {peak:.0f} MB"
    return measured


# The fast lane: every probe at N = 30,000, the capped ones at a lower cap (their cost is
# the cap's, not N's); the next test runs them at their registered caps.
SMALL_CAP = 500


@pytest.mark.parametrize("name", list(PROBES))
def test_every_probe_finishes_at_30000_samples_without_an_n_by_n_matrix(large, name,
                                                                       monkeypatch):
    probe = get_probe(name)
    if probe.max_samples:
        monkeypatch.setitem(PROBES, name, dataclasses.replace(probe, max_samples=SMALL_CAP))
    measured = _bounded_run(name, large)
    assert measured.n_used == (SMALL_CAP if probe.max_samples else None)


@pytest.mark.slow
@pytest.mark.parametrize("name", [p.name for p in PROBES.values() if p.max_samples])
def test_capped_probes_at_their_registered_caps_stay_within_the_memory_bound(large, name):
    cap = get_probe(name).max_samples
    assert _bounded_run(name, large).n_used == (cap if cap < LARGE_N else None)
