"""The linear probe's own logistic regression against scikit-learn's, which it replaces."""

from __future__ import annotations

import numpy as np
import pytest

from probes import _logreg

sklearn_linear = pytest.importorskip("sklearn.linear_model")


def _data(n: int, d: int, k: int, seed: int, noise: float = 1.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d))
    y = np.arange(n) % k
    x = centres[y] + noise * rng.normal(size=(n, d))
    return x, y


def _probabilities(scores: np.ndarray) -> np.ndarray:
    if scores.shape[1] == 1:  # binary: the score of the second class
        p = 1.0 / (1.0 + np.exp(-scores[:, 0]))
        return np.column_stack([1 - p, p])
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("solver", ["lbfgs", "newton-cholesky"])
@pytest.mark.parametrize("k", [2, 3, 7])
@pytest.mark.parametrize("c", [1e-3, 1.0, 100.0])
def test_the_optimum_is_scikit_learns(solver, k, c):
    """Both solved to a tight tolerance: the same probabilities on new rows (the
    multinomial intercepts are defined up to a shared constant, so coefficients are not
    compared directly) and the same predictions."""
    x, y = _data(120, 6, k, seed=k)
    x_new, _ = _data(60, 6, k, seed=99)
    ours = _logreg.fit(x, y, c, solver=solver, max_iter=2000, tol=1e-10)
    theirs = sklearn_linear.LogisticRegression(C=c, solver=solver, max_iter=2000,
                                               tol=1e-10).fit(x, y)
    np.testing.assert_allclose(_probabilities(ours.decision(x_new)),
                               theirs.predict_proba(x_new), atol=1e-5)
    np.testing.assert_array_equal(ours.predict(x_new), theirs.predict(x_new))


@pytest.mark.parametrize("solver", ["lbfgs", "newton-cholesky"])
def test_the_probes_settings_agree_with_scikit_learn(solver):
    """At the probe's own loose settings (100 iterations, tol 1e-3) the two stop at
    slightly different points: predictions still agree on nearly every row."""
    x, y = _data(400, 30, 10, seed=1, noise=3.0)
    x_new, _ = _data(400, 30, 10, seed=2, noise=3.0)
    ours = _logreg.fit(x.astype(np.float32) if solver == "lbfgs" else x, y, 10.0,
                       solver=solver, max_iter=100, tol=1e-3)
    theirs = sklearn_linear.LogisticRegression(C=10.0, solver=solver, max_iter=100,
                                               tol=1e-3).fit(x, y)
    agree = np.mean(ours.predict(x_new) == theirs.predict(x_new))
    assert agree >= 0.98


def test_labels_keep_their_values_and_a_single_class_predicts_itself():
    x, y = _data(60, 4, 3, seed=3)
    labels = np.array([10, 20, 40])[y]
    model = _logreg.fit(x, labels, 1.0, solver="newton-cholesky")
    assert set(model.predict(x)) <= {10, 20, 40}
    assert np.mean(model.predict(x) == labels) > 0.8
    one = _logreg.fit(x, np.full(60, 7), 1.0, solver="lbfgs")
    np.testing.assert_array_equal(one.predict(x[:5]), [7] * 5)


def test_a_warm_start_over_other_classes_is_ignored():
    x, y = _data(90, 5, 3, seed=4)
    two = _logreg.fit(x[y < 2], y[y < 2], 1.0, solver="lbfgs", tol=1e-10, max_iter=1000)
    cold = _logreg.fit(x, y, 1.0, solver="lbfgs", tol=1e-10, max_iter=1000)
    warm = _logreg.fit(x, y, 1.0, solver="lbfgs", start=two, tol=1e-10, max_iter=1000)
    np.testing.assert_allclose(_probabilities(warm.decision(x)),
                               _probabilities(cold.decision(x)), atol=1e-5)


def test_a_warm_start_reaches_the_cold_starts_optimum():
    x, y = _data(200, 8, 4, seed=5)
    near = _logreg.fit(x, y, 0.5, solver="lbfgs", tol=1e-10, max_iter=1000)
    warm = _logreg.fit(x, y, 0.6, solver="lbfgs", start=near, tol=1e-10, max_iter=1000)
    cold = _logreg.fit(x, y, 0.6, solver="lbfgs", tol=1e-10, max_iter=1000)
    np.testing.assert_allclose(_probabilities(warm.decision(x)),
                               _probabilities(cold.decision(x)), atol=1e-5)


def test_an_unknown_solver_is_refused():
    x, y = _data(20, 2, 2, seed=6)
    with pytest.raises(ValueError, match="solver"):
        _logreg.fit(x, y, 1.0, solver="saga")
