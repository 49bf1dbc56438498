"""The registry, and the contract every registered probe must keep.

The contract tests loop over ``PROBES``: a new probe is held to them by registering it.
Inputs are built from ``probe.needs`` on seeded synthetic data.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import probes
from probes import INPUTS, PROBES, Measurement, Probe, ProbeError, compute, get_probe, registry

REPO = Path(__file__).resolve().parents[1]
ARRAY_INPUTS = ("features", "random_features", "source_probs", "bn_stats")
# Inputs with one row per sample: the ones a sample permutation reorders.
PER_SAMPLE = ("features", "random_features", "source_probs", "labels")
# The report's columns, in order.
COLUMN_ORDER = (
    "linear_probe_accuracy",
    "knn_accuracy",
    "logme",
    "h_score",
    "shrinkage_h_score",
    "transrate",
    "gbc",
    "pretraining_gain",
    "cka_random_init",
    "bn_shift",
    "leep",
    "nce",
    "source_confidence",
    "source_entropy",
)

# A probe that leaks a RuntimeWarning (divide by zero, log of 0) fails its contract.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _bn_stats(rng: np.random.Generator, n_channels: int) -> np.ndarray:
    """Target and stored BatchNorm statistics (4, K) that differ by a moderate shift."""
    source_mean = rng.normal(size=n_channels)
    source_var = rng.lognormal(size=n_channels) + 1e-5
    target_mean = source_mean + 0.3 * rng.normal(size=n_channels)
    target_var = source_var * rng.lognormal(sigma=0.3, size=n_channels)
    return np.stack([target_mean, target_var, source_mean, source_var])


def make_inputs(
    needs: tuple[str, ...], labels: np.ndarray, seed: int = 0, dim: int = 6
) -> dict[str, np.ndarray]:
    """Inputs for a probe: class-structured features, unrelated random features, a
    source head with some affinity to the target classes, and BatchNorm statistics."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    first_seen: dict = {}
    codes = np.array([first_seen.setdefault(y, len(first_seen)) for y in labels])
    centres = rng.normal(size=(codes.max() + 1, dim))
    logits = rng.normal(size=(n, 5))
    logits[np.arange(n), codes % 5] += 1.5
    available = {
        "features": 1.5 * centres[codes] + rng.normal(size=(n, dim)),
        "random_features": rng.normal(size=(n, dim - 1)),
        "source_probs": _softmax(logits),
        "labels": labels,
        "bn_stats": _bn_stats(rng, 3 * dim),
    }
    return {need: available[need] for need in needs}


def _labels(n: int = 36, n_classes: int = 3, seed: int = 0) -> np.ndarray:
    labels = np.arange(n) % n_classes
    np.random.default_rng(seed).shuffle(labels)
    return labels


every_probe = pytest.mark.parametrize("probe", list(PROBES.values()), ids=list(PROBES))
_LABELLED = [p for p in PROBES.values() if "labels" in p.needs]
labelled_probe = pytest.mark.parametrize("probe", _LABELLED, ids=[p.name for p in _LABELLED])
_FEATURED = [p for p in PROBES.values() if "features" in p.needs]
featured_probe = pytest.mark.parametrize("probe", _FEATURED, ids=[p.name for p in _FEATURED])


@dataclass(frozen=True)
class Case:
    """A probe, seeded inputs for it, and its value on them (computed once per module)."""

    probe: Probe
    inputs: dict[str, np.ndarray]
    value: float


@pytest.fixture(scope="module", params=list(PROBES.values()), ids=list(PROBES))
def case(request) -> Case:
    probe = request.param
    inputs = make_inputs(probe.needs, _labels(seed=1), seed=1)
    return Case(probe, inputs, probe.func(**inputs))


def _object_array(values: list) -> np.ndarray:
    return np.fromiter(values, dtype=object, count=len(values))


# Names that sort in another order than the integers, so the class codes change too.
RENAMINGS = {
    "strings": np.array(["zebra", "apple", "mango"]),
    "tuples": _object_array([("z", 1), ("a", 2), ("m", 0)]),
    "mixed-types": _object_array(["b", 7, ("a", 0)]),
    "skipped-negative-ints": np.array([100, -5, 3]),
}


# --- the contract ---------------------------------------------------------------------


def test_probe_returns_a_finite_float(case):
    assert isinstance(case.value, float) and np.isfinite(case.value)


def test_probe_is_invariant_to_sample_order(case):
    per_sample = [name for name in case.inputs if name in PER_SAMPLE]
    if not per_sample:
        pytest.skip(f"{case.probe.name} takes no per-sample input")
    order = np.random.default_rng(2).permutation(case.inputs[per_sample[0]].shape[0])
    shuffled = {
        name: value[order] if name in PER_SAMPLE else value for name, value in case.inputs.items()
    }
    assert case.probe.func(**shuffled) == pytest.approx(case.value, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("names", RENAMINGS.values(), ids=RENAMINGS.keys())
def test_probe_is_invariant_to_label_renaming(case, names):
    if "labels" not in case.probe.needs:
        pytest.skip(f"{case.probe.name} takes no labels")
    renamed = {**case.inputs, "labels": names[case.inputs["labels"]]}
    assert case.probe.func(**renamed) == pytest.approx(case.value, rel=1e-9, abs=1e-12)


def test_probe_accepts_labels_as_a_list_of_tuples(case):
    if "labels" not in case.probe.needs:
        pytest.skip(f"{case.probe.name} takes no labels")
    as_tuples = [("class", int(y)) for y in case.inputs["labels"]]
    value = case.probe.func(**{**case.inputs, "labels": as_tuples})
    assert value == pytest.approx(case.value, rel=1e-9, abs=1e-12)


def test_probe_gives_the_same_value_on_float32_as_on_the_same_numbers_in_float64(case):
    as_float32 = {
        name: value.astype(np.float32) if name in ARRAY_INPUTS else value
        for name, value in case.inputs.items()
    }
    widened = {
        name: value.astype(np.float64) if name in ARRAY_INPUTS else value
        for name, value in as_float32.items()
    }
    value = case.probe.func(**as_float32)
    assert isinstance(value, float) and np.isfinite(value)
    assert value == pytest.approx(case.probe.func(**widened), rel=1e-12, abs=1e-15)


@labelled_probe
def test_probe_rejects_a_single_class(probe):
    inputs = make_inputs(probe.needs, np.zeros(20, dtype=int), seed=4)
    with pytest.raises(ProbeError, match="labels: found 1 class"):
        probe.func(**inputs)


@every_probe
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_probe_rejects_non_finite_values_naming_the_input(probe, bad):
    for name in (n for n in probe.needs if n in ARRAY_INPUTS):
        inputs = make_inputs(probe.needs, _labels(seed=5), seed=5)
        inputs[name] = inputs[name].copy()
        inputs[name][3, 0] = bad
        with pytest.raises(ProbeError, match=f"^{name}: .*NaN or inf"):
            probe.func(**inputs)


@labelled_probe
def test_probe_rejects_labels_of_another_length(probe):
    inputs = make_inputs(probe.needs, _labels(seed=6), seed=6)
    inputs["labels"] = inputs["labels"][:-1]
    with pytest.raises(ProbeError, match="labels: got 35 labels for 36 samples"):
        probe.func(**inputs)


@labelled_probe
def test_probe_rejects_one_hot_labels_with_a_hint(probe):
    inputs = make_inputs(probe.needs, _labels(seed=10), seed=10)
    inputs["labels"] = np.eye(3)[inputs["labels"]]
    with pytest.raises(ProbeError, match=r"labels: expected a 1-D .*argmax"):
        probe.func(**inputs)


@labelled_probe
def test_probe_rejects_unlabelled_samples(probe):
    inputs = make_inputs(probe.needs, _labels(seed=12), seed=12)
    inputs["labels"] = inputs["labels"].astype(object)
    inputs["labels"][4] = None
    with pytest.raises(ProbeError, match=r"labels: 1 label\(s\) are NaN or None"):
        probe.func(**inputs)


@every_probe
def test_probe_rejects_array_inputs_that_are_not_2d_naming_the_input(probe):
    for name in (n for n in probe.needs if n in ARRAY_INPUTS):
        inputs = make_inputs(probe.needs, _labels(seed=11), seed=11)
        inputs[name] = inputs[name][:, 0]
        with pytest.raises(ProbeError, match=f"^{name}: expected a 2-D array"):
            probe.func(**inputs)


def _constant(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.full_like(features, 0.1)


def _duplicated_columns(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.hstack([features, features, np.zeros_like(features)])


def _duplicated_rows(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return features[np.arange(len(labels)) // 2 * 2]  # pairs of identical samples


def _wider_than_long(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.hstack([features, np.random.default_rng(0).normal(size=(len(labels), 60))])


def _large_offset(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return 1e6 + 1e-3 * features


DEGENERATE_FEATURES = {
    "constant": _constant,
    "duplicated-columns": _duplicated_columns,
    "duplicated-rows": _duplicated_rows,
    "N<D": _wider_than_long,
    "large-offset": _large_offset,
}


@featured_probe
@pytest.mark.parametrize("degrade", DEGENERATE_FEATURES.values(), ids=DEGENERATE_FEATURES.keys())
def test_probe_gives_a_finite_value_on_degenerate_features(probe, degrade):
    labels = _labels(seed=13)
    inputs = make_inputs(probe.needs, labels, seed=13)
    inputs["features"] = degrade(inputs["features"], labels)  # a probe may take no labels
    assert np.isfinite(probe.func(**inputs))


@labelled_probe
def test_probe_gives_a_finite_value_with_a_class_of_one_sample(probe):
    labels = np.r_[_labels(n=30, seed=14), 3]
    assert np.isfinite(probe.func(**make_inputs(probe.needs, labels, seed=14)))


@every_probe
def test_probe_entry_is_complete(probe):
    assert probe.needs and set(probe.needs) <= set(INPUTS)
    assert 0 < len(probe.label) <= registry.MAX_LABEL_CHARS
    assert probe.meaning and "\n" not in probe.meaning
    assert re.search(r"\b(better|best)\b", probe.meaning), "say which direction is good"
    assert probe.reference and probe.unit
    assert get_probe(probe.name) is probe


def test_compute_gives_the_probe_value_and_its_spread(case):
    measurement = compute(case.probe, **case.inputs)
    assert measurement.value == pytest.approx(case.value)
    if case.probe.spread is None:
        assert measurement.spread is None
    else:
        assert np.isfinite(measurement.spread) and measurement.spread >= 0


@every_probe
def test_compute_passes_exactly_what_the_probe_needs(probe):
    received = []

    def value(**kwargs):
        received.append(sorted(kwargs))
        return 0.0

    def value_and_spread(**kwargs):
        return value(**kwargs), 0.0

    spy = dataclasses.replace(probe, func=value, spread=value_and_spread if probe.spread else None)
    compute(spy, **make_inputs(INPUTS, _labels()))
    assert received == [sorted(probe.needs)]


@every_probe
def test_compute_names_a_missing_input(probe):
    inputs = make_inputs(probe.needs, _labels(seed=9), seed=9)
    missing = probe.needs[0]
    del inputs[missing]
    with pytest.raises(ProbeError, match=f"needs {missing}, which was not given"):
        compute(probe, **inputs)


# --- properties over random shapes and labels ----------------------------------------


_NAME_SETS = [
    np.arange(4),
    np.array([-7, 0, 3, 100]),
    np.array(["b", "a", "d", "c"]),
    _object_array([("x", 2), ("x", 1), ("a", 9), ("b", 0)]),
    _object_array([3, "three", (3,), 3.5]),
]


@st.composite
def labelled_problems(draw):
    """Labels of 2-4 classes with 2-8 samples each (any hashable values), a seed, a width."""
    counts = draw(st.lists(st.integers(2, 8), min_size=2, max_size=4))
    names = draw(st.sampled_from(_NAME_SETS))
    labels = np.repeat(names[: len(counts)], counts)
    seed = draw(st.integers(0, 2**16))
    np.random.default_rng(seed).shuffle(labels)
    return labels, seed, draw(st.integers(1, 12))


@every_probe
@settings(max_examples=6, deadline=None, derandomize=True)
@given(problem=labelled_problems())
def test_probe_is_finite_on_any_labelled_problem(probe, problem):
    labels, seed, dim = problem
    value = probe.func(**make_inputs(probe.needs, labels, seed=seed, dim=dim + 1))
    assert np.isfinite(value)
    if probe.unit == "fraction":
        assert -1.0 <= value <= 1.0


@every_probe
@settings(max_examples=3, deadline=None, derandomize=True)
@given(problem=labelled_problems())
def test_probe_is_invariant_to_sample_order_on_any_labelled_problem(probe, problem):
    labels, seed, dim = problem
    inputs = make_inputs(probe.needs, labels, seed=seed, dim=dim + 1)
    order = np.random.default_rng(seed + 1).permutation(len(labels))
    shuffled = {
        name: value[order] if name in PER_SAMPLE else value for name, value in inputs.items()
    }
    expected = probe.func(**inputs)
    assert probe.func(**shuffled) == pytest.approx(expected, rel=1e-9, abs=1e-12)


@settings(max_examples=20, deadline=None, derandomize=True)
@given(problem=labelled_problems())
def test_leep_is_never_positive(problem):
    labels, seed, _ = problem
    assert probes.leep(**make_inputs(("source_probs", "labels"), labels, seed=seed)) <= 1e-12


@settings(max_examples=20, deadline=None, derandomize=True)
@given(problem=labelled_problems(), scale=st.sampled_from([1e-4, 1e-2, 1e2, 1e4]))
def test_logme_is_scale_invariant_on_any_labelled_problem(problem, scale):
    labels, seed, dim = problem
    inputs = make_inputs(("features", "labels"), labels, seed=seed, dim=dim + 1)
    scaled = {**inputs, "features": scale * inputs["features"]}
    assert probes.logme(**scaled) == pytest.approx(probes.logme(**inputs), rel=1e-7, abs=1e-9)


# --- the registry itself -------------------------------------------------------------


def _toy_probe(name: str = "toy", **changes) -> Probe:
    fields = dict(
        name=name,
        func=lambda features, labels: 0.0,
        needs=("features", "labels"),
        higher_is_better=True,
        meaning="a toy",
        reference="none",
        label="toy",
        unit="score",
    )
    return Probe(**{**fields, **changes})


@pytest.fixture
def empty_registry(monkeypatch):
    monkeypatch.setattr(registry, "PROBES", {})
    return registry


def test_every_required_probe_is_registered_in_the_report_column_order():
    assert [name for name in PROBES if name in COLUMN_ORDER] == list(COLUMN_ORDER)


def test_bn_stats_is_an_input():
    assert "bn_stats" in INPUTS


def test_list_probes_gives_the_probes_in_registration_order(empty_registry):
    first, second = (
        empty_registry.register(_toy_probe("b")),
        empty_registry.register(_toy_probe("a")),
    )
    assert empty_registry.list_probes() == [first, second]


def test_register_refuses_a_taken_name(empty_registry):
    empty_registry.register(_toy_probe())
    with pytest.raises(ProbeError, match="'toy' is already registered"):
        empty_registry.register(_toy_probe())


def test_register_refuses_an_unknown_input(empty_registry):
    with pytest.raises(ProbeError, match="unknown: \\['images'\\]"):
        empty_registry.register(_toy_probe(needs=("images", "labels")))


def test_register_refuses_a_label_too_long_for_a_column(empty_registry):
    with pytest.raises(ProbeError, match="at most 10"):
        empty_registry.register(_toy_probe(label="much too long"))


def test_get_probe_lists_the_known_names_when_the_name_is_unknown():
    with pytest.raises(ProbeError, match="unknown probe 'logmee'; known probes: .*logme"):
        get_probe("logmee")


def test_compute_accepts_a_probe_name():
    inputs = make_inputs(("source_probs", "labels"), _labels())
    assert compute("leep", **inputs) == Measurement(value=probes.leep(**inputs))


def test_compute_treats_none_as_a_missing_input():
    inputs = make_inputs(("labels",), _labels())
    with pytest.raises(ProbeError, match="'leep' needs source_probs"):
        compute("leep", source_probs=None, **inputs)


def test_measurement_to_dict_holds_value_spread_and_samples_used():
    assert Measurement(0.5, 0.1).to_dict() == {"value": 0.5, "spread": 0.1, "n_used": None}


def test_importing_probes_does_no_heavy_work():
    # scikit-learn takes seconds to import; it is loaded when a probe first needs it.
    code = "import sys, probes; print(sorted(m for m in ('sklearn', 'torch') if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
