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


@pytest.mark.parametrize("k", [2, 5])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("max_iter", [3, 100])
def test_the_lean_lbfgs_loop_is_scipys_minimize_bit_for_bit(monkeypatch, k, dtype, max_iter):
    """_lbfgsb_loop drives scipy's own L-BFGS-B routine without minimize's wrappers: the
    same coefficients to the last bit, cold and warm-started, stopped by the iteration
    cap (3) or by convergence (100), as minimize (the fallback for another scipy) gives."""
    if _logreg._setulb() is None:
        pytest.skip("this scipy's L-BFGS-B routine has another interface: minimize is used")
    x, y = _data(150, 12, k, seed=7, noise=2.0)
    x = x.astype(dtype)
    lean_cold = _logreg.fit(x, y, 3.0, solver="lbfgs", max_iter=max_iter, tol=1e-3)
    lean_warm = _logreg.fit(x, y, 10.0, solver="lbfgs", start=lean_cold, max_iter=max_iter,
                            tol=1e-3)
    monkeypatch.setattr(_logreg, "_setulb", lambda: None)
    cold = _logreg.fit(x, y, 3.0, solver="lbfgs", max_iter=max_iter, tol=1e-3)
    warm = _logreg.fit(x, y, 10.0, solver="lbfgs", start=cold, max_iter=max_iter, tol=1e-3)
    for ours, theirs in ((lean_cold, cold), (lean_warm, warm)):
        np.testing.assert_array_equal(ours.coef, theirs.coef)
        np.testing.assert_array_equal(ours.intercept, theirs.intercept)


@pytest.mark.parametrize("k", [2, 4])
def test_newton_falls_back_to_least_squares_on_the_whole_hessian(monkeypatch, k):
    """When Cholesky fails (the Hessian's factor overwrites it), the least-squares step must
    see the whole symmetric matrix, built again, and reach the same optimum."""
    x, y = _data(120, 6, k, seed=8)
    expected = _logreg.fit(x, y, 1.0, solver="newton-cholesky", max_iter=100, tol=1e-10)
    real = _logreg._cholesky_solve

    def fail(hess, g):
        real(hess, g)  # overwrites hess with its factor, as a failing one may
        return None

    monkeypatch.setattr(_logreg, "_cholesky_solve", fail)
    fallback = _logreg.fit(x, y, 1.0, solver="newton-cholesky", max_iter=100, tol=1e-10)
    np.testing.assert_allclose(_probabilities(fallback.decision(x)),
                               _probabilities(expected.decision(x)), atol=1e-8)


def _dense_hessian(prob: np.ndarray, xb: np.ndarray, l2: float) -> np.ndarray:
    """The multinomial Hessian written out entry by entry's formula, the held (last)
    intercept removed: sum_n x_ni x_nj p_na (delta_ab - p_nb) / N + l2 on the weights."""
    n, k = prob.shape
    d1 = xb.shape[1]
    hess = np.zeros((k * d1, k * d1))
    for i in range(n):
        outer = np.diag(prob[i]) - np.outer(prob[i], prob[i])
        hess += np.kron(outer, np.outer(xb[i], xb[i])) / n
    penalty = np.tile(np.r_[np.full(d1 - 1, l2), 0.0], k)
    return (hess + np.diag(penalty))[:-1, :-1]


@pytest.mark.parametrize(("n", "d", "k"), [(12, 10, 3), (30, 8, 6), (50, 20, 4)])
def test_the_woodbury_step_solves_the_whole_hessian(n, d, k):
    """With fewer rows than weights the step comes from an N x N system: the same step
    as the whole Hessian's solve, to rounding."""
    rng = np.random.default_rng(n)
    xb = np.hstack([rng.normal(size=(n, d)), np.ones((n, 1))])
    raw = rng.normal(size=(n, k))
    prob = np.exp(raw) / np.exp(raw).sum(axis=1, keepdims=True)
    grad = rng.normal(size=(k, d + 1))
    l2 = 0.01
    step = _logreg._woodbury_step(prob, xb, grad, l2)
    expected = -np.linalg.solve(_dense_hessian(prob, xb, l2), grad.ravel()[:-1])
    np.testing.assert_allclose(step, expected, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize(("n", "d", "k"), [(12, 10, 3), (30, 8, 6), (200, 40, 10)])
def test_the_multinomial_hessian_is_the_whole_one(n, d, k):
    """The Hessian gathered from one product over the distinct (class pair, feature pair)
    entries is the dense formula's, to rounding."""
    rng = np.random.default_rng(d)
    xb = np.hstack([rng.normal(size=(n, d)), np.ones((n, 1))])
    raw = rng.normal(size=(n, k))
    prob = np.exp(raw) / np.exp(raw).sum(axis=1, keepdims=True)
    hess = _logreg._multinomial_hessian(prob, _logreg._outer_products(xb), d + 1)
    np.testing.assert_allclose(hess, _dense_hessian(prob, xb, 0.0), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(("n", "d", "k"), [(133, 24, 10), (133, 40, 10), (200, 40, 10)])
def test_the_woodbury_step_is_the_cholesky_newton_step(n, d, k):
    """On the sizes where the probe takes it (the random-init twin's 250 rows: inner and
    outer training parts, 10 classes), the Woodbury step equals the plain Cholesky solve of
    the whole Hessian to rounding, and it is the cheaper one there."""
    rng = np.random.default_rng(n + d)
    xb = np.hstack([rng.normal(size=(n, d)), np.ones((n, 1))])
    raw = 2 * rng.normal(size=(n, k))
    prob = np.exp(raw) / np.exp(raw).sum(axis=1, keepdims=True)
    grad = rng.normal(size=(k, d + 1))
    l2 = 1.0 / (0.1 * n)
    assert _logreg._woodbury_is_cheaper(n, d + 1, k)
    hess = _logreg._multinomial_hessian(prob, _logreg._outer_products(xb), d + 1).T
    hess.reshape(-1, order="F")[:: hess.shape[0] + 1] += np.tile(np.r_[np.full(d, l2), 0.0],
                                                                 k)[:-1]
    plain = -_logreg._cholesky_solve(hess, grad.ravel()[:-1])
    np.testing.assert_allclose(_logreg._woodbury_step(prob, xb, grad, l2), plain,
                               rtol=1e-9, atol=1e-12 * np.abs(plain).max())


@pytest.mark.parametrize("c", [1e-2, 1.0, 100.0])
@pytest.mark.parametrize("woodbury", [True, False])
def test_fewer_rows_than_weights_reach_scikit_learns_optimum(monkeypatch, c, woodbury):
    """N = 40 rows, 5 classes x 11 weights: the Woodbury path, the whole-Hessian path it
    falls back to, and the whole-Hessian path alone all reach scikit-learn's optimum."""
    x, y = _data(40, 10, 5, seed=9, noise=2.0)
    x_new, _ = _data(60, 10, 5, seed=10, noise=2.0)
    theirs = sklearn_linear.LogisticRegression(C=c, solver="newton-cholesky", max_iter=2000,
                                               tol=1e-10).fit(x, y)
    monkeypatch.setattr(_logreg, "_woodbury_is_cheaper", lambda *args: woodbury)
    ours = _logreg.fit(x, y, c, solver="newton-cholesky", max_iter=2000, tol=1e-10)
    monkeypatch.setattr(_logreg, "_woodbury_step", lambda *args: None)
    whole = _logreg.fit(x, y, c, solver="newton-cholesky", max_iter=2000, tol=1e-10)
    for model in (ours, whole):
        np.testing.assert_allclose(_probabilities(model.decision(x_new)),
                                   theirs.predict_proba(x_new), atol=1e-5)


@pytest.mark.parametrize("k", [3, 7])
def test_the_rank_update_hessian_reaches_the_same_optimum(monkeypatch, k):
    """Where the packed products would be large (few classes and wide features, or many
    classes and narrow ones) the Hessian is a symmetric rank-N update instead: the same
    optimum."""
    x, y = _data(150, 12, k, seed=11)
    packed = _logreg.fit(x, y, 1.0, solver="newton-cholesky", max_iter=100, tol=1e-10)
    monkeypatch.setattr(_logreg, "_packed_is_small", lambda *args: False)
    update = _logreg.fit(x, y, 1.0, solver="newton-cholesky", max_iter=100, tol=1e-10)
    np.testing.assert_allclose(_probabilities(update.decision(x)),
                               _probabilities(packed.decision(x)), atol=1e-8)
