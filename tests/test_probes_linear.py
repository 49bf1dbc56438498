"""Linear-probe accuracy and the pre-training gain built on it."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from probes import (
    LinearProbeResult,
    ProbeError,
    linear_probe_accuracy,
    linear_probe_cv,
    pretraining_gain,
)
from probes.linear_probe import (
    C_GRID,
    PATIENCE,
    _standardise,
    content_order,
    cross_validate,
    default_repeats,
    plan_folds,
)


def _blobs(n: int, d: int, n_classes: int, sep: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % n_classes
    rng.shuffle(labels)
    return sep * rng.normal(size=(n_classes, d))[labels] + rng.normal(size=(n, d)), labels


def test_linear_probe_is_perfect_on_well_separated_classes():
    features, labels = _blobs(60, 5, n_classes=3, sep=10.0, seed=0)
    assert linear_probe_accuracy(features, labels) == 1.0


def test_linear_probe_is_near_chance_on_noise():
    features, labels = _blobs(120, 10, n_classes=4, sep=0.0, seed=1)
    assert linear_probe_accuracy(features, labels) < 0.45


def test_linear_probe_is_deterministic_for_a_seed():
    features, labels = _blobs(80, 6, n_classes=3, sep=0.8, seed=2)
    assert linear_probe_cv(features, labels, seed=3) == linear_probe_cv(features, labels, seed=3)


def test_linear_probe_result_holds_one_score_and_one_c_per_fold():
    features, labels = _blobs(80, 6, n_classes=3, sep=0.8, seed=4)
    result = linear_probe_cv(features, labels, folds=4)
    assert isinstance(result, LinearProbeResult)
    # 80 samples: 5 draws of the 4 folds (MIN_TEST_PREDICTIONS 400).
    assert default_repeats(80) == 5
    assert len(result.fold_scores) == len(result.chosen_C) == 4 * 5
    assert result.mean == pytest.approx(np.mean(result.fold_scores))
    assert result.std == pytest.approx(np.std(result.fold_scores))
    assert set(result.chosen_C) <= set(C_GRID)


def test_linear_probe_accuracy_is_the_mean_of_the_cv_result():
    features, labels = _blobs(60, 4, n_classes=2, sep=1.0, seed=5)
    assert linear_probe_accuracy(features, labels) == linear_probe_cv(features, labels).mean


def test_linear_probe_uses_no_more_folds_than_the_smallest_class_has_samples():
    features, labels = _blobs(40, 4, n_classes=2, sep=1.0, seed=6)
    features, labels = np.vstack([features, features[:3] + 5]), np.r_[labels, [7, 7, 7]]
    assert len(linear_probe_cv(features, labels, folds=5, repeats=1).fold_scores) == 3


def test_small_sets_average_several_fold_draws_and_large_ones_take_one():
    assert [default_repeats(n) for n in (2, 36, 80, 100, 120, 200, 399, 400, 10_000)] == \
        [5, 5, 5, 4, 4, 2, 2, 1, 1]
    codes = np.repeat(np.arange(3), 10)
    one = plan_folds(codes, folds=5, seed=3)
    three = plan_folds(codes, folds=5, seed=3, repeats=3)
    assert len(three) == 3 * len(one)
    for a, b in zip(one, three[:len(one)], strict=True):  # the first draw is the single draw
        np.testing.assert_array_equal(a.test, b.test)
    for r in range(3):  # each draw's test folds cover every sample once
        tests = np.concatenate([f.test for f in three[r * 5:(r + 1) * 5]])
        np.testing.assert_array_equal(np.sort(tests), np.arange(30))
    assert not np.array_equal(three[0].test, three[5].test)  # fresh folds, not the same again
    features, labels = _blobs(30, 4, n_classes=3, sep=0.7, seed=8)
    result = linear_probe_cv(features, labels)
    assert len(result.fold_scores) == 5 * default_repeats(30)
    parts = [linear_probe_cv(features, labels, repeats=r) for r in (1, 5)]
    assert parts[1].fold_scores[:5] == parts[0].fold_scores and parts[1] == result
    with pytest.raises(ProbeError, match="repeats: expected an integer >= 1"):
        linear_probe_cv(features, labels, repeats=0)


def test_a_class_with_a_single_sample_is_always_in_training():
    codes = np.r_[np.repeat([0, 1], 10), 2]
    for fold in plan_folds(codes, folds=5, seed=0):
        assert 20 in fold.train and 20 not in fold.test
        for inner_train, _ in fold.inner:
            assert np.flatnonzero(fold.train == 20)[0] in inner_train


def test_linear_probe_counts_a_single_sample_class_only_as_a_wrong_answer():
    features, labels = _blobs(40, 4, n_classes=2, sep=10.0, seed=7)
    features, labels = np.vstack([features, features[:1]]), np.r_[labels, 9]
    assert linear_probe_accuracy(features, labels) == 1.0


def test_linear_probe_folds_are_stratified_and_balanced():
    codes = np.repeat([0, 1, 2], [10, 15, 23])
    plan = plan_folds(codes, folds=5, seed=1)
    for cls, count in zip([0, 1, 2], [10, 15, 23], strict=True):
        per_fold = [np.count_nonzero(codes[fold.test] == cls) for fold in plan]
        assert max(per_fold) - min(per_fold) <= 1 and sum(per_fold) == count
    sizes = [fold.test.size for fold in plan]
    assert max(sizes) - min(sizes) <= 1


def test_linear_probe_on_the_same_folds_is_invariant_to_per_dimension_affine_scaling():
    # The features are standardised per fold, so units and offsets do not matter. (The
    # public functions order samples by feature bytes, so rescaled features get other folds.)
    features, labels = _blobs(60, 5, n_classes=3, sep=0.7, seed=8)
    rng = np.random.default_rng(9)
    scaled = features * rng.uniform(0.01, 100, size=5) + rng.normal(size=5) * 50
    plan = plan_folds(labels, folds=5, seed=0)
    assert cross_validate(scaled, labels, plan) == cross_validate(features, labels, plan)


def test_linear_probe_survives_constant_features():
    features, labels = _blobs(40, 4, n_classes=2, sep=5.0, seed=10)
    with_constant = np.hstack([features, np.full((40, 3), 7.0)])
    assert linear_probe_accuracy(with_constant, labels) == linear_probe_accuracy(features, labels)


def test_linear_probe_on_all_constant_features_is_at_most_majority_rate():
    labels = np.repeat([0, 1], [12, 8])
    assert linear_probe_accuracy(np.ones((20, 6)), labels) <= 12 / 20


def test_projecting_onto_the_training_rows_keeps_the_predictions_when_d_exceeds_n():
    features, labels = _blobs(40, 200, n_classes=3, sep=0.3, seed=11)
    train, test = features[:30], features[30:]
    mean, std = train.mean(axis=0), train.std(axis=0)
    full = LogisticRegression(C=0.1, tol=1e-10, max_iter=10_000)
    full.fit((train - mean) / std, labels[:30])
    train_p, test_p = _standardise(train, test)
    assert train_p.shape[1] <= 30
    projected = LogisticRegression(C=0.1, tol=1e-10, max_iter=10_000).fit(train_p, labels[:30])
    # Same decision values, to the fits' tolerance (the projection itself is float64).
    np.testing.assert_allclose(
        projected.decision_function(test_p), full.decision_function((test - mean) / std), atol=1e-9
    )


def _converged_probe(features: np.ndarray, labels: np.ndarray) -> list[float]:
    """The probe's procedure with every fit run to convergence: the probe's own folds; C
    by inner held-out accuracy along the grid from strong to weak regularisation (ties to
    the stronger, stopping after PATIENCE drops); refit on the training part; accuracy on
    the test part."""
    order = content_order(features)
    x, y = features[order], labels[order]
    scores = []
    for fold in plan_folds(y, folds=5, seed=0):
        x_train, x_test = _standardise(x[fold.train], x[fold.test])
        y_train = y[fold.train]

        def fit(c, rows, x_train=x_train, y_train=y_train):
            model = LogisticRegression(C=c, tol=1e-10, max_iter=100_000)
            return model.fit(x_train[rows], y_train[rows])

        def held_out(c, x_train=x_train, y_train=y_train, fold=fold):
            return sum(np.sum(fit(c, tr).predict(x_train[val]) == y_train[val])
                       for tr, val in fold.inner)

        best, best_c, below = -1, None, 0
        for c in C_GRID:
            accuracy = held_out(c)
            best, best_c = (accuracy, c) if accuracy > best else (best, best_c)
            below = below + 1 if accuracy < best else 0
            if below >= PATIENCE:
                break
        everything = np.arange(len(y_train))
        scores.append(float(np.mean(fit(best_c, everything).predict(x_test) == y[fold.test])))
    return scores


def test_linear_probe_reports_the_converged_fit_on_narrow_collinear_features():
    # 12 columns driven by 4 latent ones, so nearly collinear, and weak regularisation
    # chosen: 100 lbfgs steps stopped short of the optimum here (0.925 instead of 0.958
    # in the first fold).
    rng = np.random.default_rng(1)
    labels = np.arange(600) % 3
    rng.shuffle(labels)
    latent = 2.0 * rng.normal(size=(3, 4))[labels] + rng.normal(size=(600, 4))
    features = np.tanh(latent @ rng.normal(size=(4, 12))) + 1e-3 * rng.normal(size=(600, 12))
    result = linear_probe_cv(features, labels)
    # At most one test sample per fold may land on the other side of a decision boundary.
    np.testing.assert_allclose(result.fold_scores, _converged_probe(features, labels),
                               atol=1 / 120 + 1e-12)


def test_linear_probe_leaks_no_convergence_warning_and_leaves_the_filters_alone():
    features, labels = _blobs(60, 30, n_classes=3, sep=2.0, seed=12)
    filters_before = list(warnings.filters)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        linear_probe_accuracy(features, labels)
    assert warnings.filters == filters_before


@pytest.mark.parametrize("folds", [1, 0, 2.5, True])
def test_linear_probe_rejects_folds_that_are_not_an_integer_of_at_least_two(folds):
    features, labels = _blobs(20, 3, n_classes=2, sep=1.0, seed=13)
    with pytest.raises(ProbeError, match="folds"):
        linear_probe_cv(features, labels, folds=folds)


def test_linear_probe_needs_two_classes_with_two_samples():
    features = np.random.default_rng(14).normal(size=(6, 3))
    with pytest.raises(ProbeError, match="at least 2 classes with 2 or more samples"):
        linear_probe_accuracy(features, np.array([0, 0, 0, 0, 1, 2]))


def test_pretraining_gain_is_large_when_only_pretrained_features_separate_the_classes():
    features, labels = _blobs(90, 8, n_classes=3, sep=10.0, seed=15)
    random_features = np.random.default_rng(16).normal(size=(90, 8))
    assert pretraining_gain(features, random_features, labels) > 0.5


def test_pretraining_gain_is_zero_for_identical_features_because_the_folds_are_shared():
    features, labels = _blobs(60, 6, n_classes=3, sep=0.5, seed=17)
    assert pretraining_gain(features, features.copy(), labels) == 0.0


def test_pretraining_gain_is_the_probe_accuracy_minus_the_random_probe_on_the_same_folds():
    features, labels = _blobs(60, 6, n_classes=3, sep=1.0, seed=18)
    random_features = np.random.default_rng(19).normal(size=(60, 4))
    order = content_order(features)  # the folds follow the pre-trained features
    plan = plan_folds(labels[order], folds=5, seed=0, repeats=default_repeats(60))
    random_probe = cross_validate(random_features[order], labels[order], plan)
    expected = linear_probe_accuracy(features, labels) - random_probe.mean
    assert pretraining_gain(features, random_features, labels) == pytest.approx(expected)


def test_pretraining_gain_rejects_random_features_of_other_images():
    features, labels = _blobs(30, 4, n_classes=2, sep=1.0, seed=20)
    with pytest.raises(ProbeError, match="random_features: got 29 rows for 30 samples"):
        pretraining_gain(features, features[:29], labels)


def test_gain_reuses_the_probe_already_fitted_on_the_same_features(monkeypatch):
    import probes.linear_probe as lp

    rng = np.random.default_rng(7)
    labels = np.repeat(np.arange(3), 20)
    features = rng.normal(size=(60, 12))
    features[:, 0] += labels
    random_features = rng.normal(size=(60, 12))
    calls = []
    real = lp._cross_validate
    monkeypatch.setattr(lp, "_cross_validate", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(lp, "_MEMO", lp.OrderedDict())
    linear_probe_accuracy(features, labels)
    memoised = pretraining_gain(features, random_features, labels)
    assert len(calls) == 2  # the probe on `features` once, on `random_features` once
    monkeypatch.setattr(lp, "_MEMO", lp.OrderedDict())
    assert pretraining_gain(features, random_features, labels) == memoised
