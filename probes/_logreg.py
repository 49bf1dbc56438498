"""L2-regularised logistic regression, binary and multinomial, for the linear probe.

The same objective, parametrisation and stopping rules as scikit-learn's
``LogisticRegression`` (``solver="lbfgs"`` and ``"newton-cholesky"``), without its per-fit
overhead: the probe makes hundreds of small fits (5 outer folds x 3 inner splits x up to 7
values of C per block), where input validation, label encoding and the array-API layer cost
more than the arithmetic, and importing scikit-learn costs a second in every worker process.

Objective, over N samples with the intercept not penalised::

    mean_i loss_i(W, b) + ||W||^2 / (2 C N)

where ``loss_i`` is the binomial log-loss of one weight vector for two classes (scikit-learn's
binary case: ``log(1 + exp(z)) - y z``) and the multinomial log-loss of one weight vector per
class otherwise (``logsumexp(z) - z_y``). Both solvers stop as scikit-learn's do: L-BFGS-B with
``gtol=tol``, ``ftol=64 eps``, ``maxls=50`` and ``max_iter`` iterations; Newton's method when the
largest gradient entry is at most ``tol`` and half the Newton decrement too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# scikit-learn's L-BFGS-B settings for LogisticRegression.
_FTOL = 64 * np.finfo(float).eps
_MAXLS = 50


@dataclass
class LogReg:
    """A fitted probe over the sorted ``classes`` it saw: ``coef`` is (K, D) and
    ``intercept`` (K,), with K = 1 for two classes (the score of the second) and K = the
    number of classes otherwise; a single class predicts itself."""

    classes: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray

    def decision(self, x: np.ndarray) -> np.ndarray:
        return x @ self.coef.T.astype(x.dtype, copy=False) + self.intercept.astype(x.dtype)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Classes: argmax of the scores (the first on a tie), or score > 0 for two."""
        if self.classes.size == 1:
            return np.full(x.shape[0], self.classes[0])
        scores = self.decision(x)
        if self.coef.shape[0] == 1:
            return self.classes[(scores[:, 0] > 0).astype(np.int64)]
        return self.classes[np.argmax(scores, axis=1)]


def fit(
    x: np.ndarray,
    y: np.ndarray,
    c: float,
    *,
    solver: str,
    start: LogReg | None = None,
    max_iter: int = 100,
    tol: float = 1e-3,
) -> LogReg:
    """Fit on rows ``x`` (N, D) with integer labels ``y``: the classes are those present.

    ``start`` warm-starts the solver from an earlier fit over the same classes (as
    scikit-learn's ``warm_start=True``); over other classes it is ignored.
    """
    classes, y = np.unique(y, return_inverse=True)
    n, d = x.shape
    if classes.size == 1:
        return LogReg(classes, np.zeros((1, d)), np.zeros(1))
    k = 1 if classes.size == 2 else classes.size
    if start is not None and not np.array_equal(start.classes, classes):
        start = None
    if start is not None:
        w0 = np.hstack([start.coef, start.intercept[:, None]]).astype(np.float64)
    else:
        w0 = np.zeros((k, d + 1))
    l2 = 1.0 / (c * n)
    if k == 1:
        target = (y == 1).astype(x.dtype)
    else:
        target = np.zeros((n, k), dtype=x.dtype)
        target[np.arange(n), y] = 1.0
    if solver == "newton-cholesky":
        w = _newton(x, target, w0, l2, max_iter, tol)
    elif solver == "lbfgs":
        w = _lbfgs(x, target, w0, l2, max_iter, tol)
    else:
        raise ValueError(f"solver: expected 'lbfgs' or 'newton-cholesky', got {solver!r}")
    return LogReg(classes=classes, coef=w[:, :d].copy(), intercept=w[:, d].copy())


def _probabilities(raw: np.ndarray, binary: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample log-normaliser and probabilities of the raw scores (float64)."""
    if binary:
        z = raw[:, 0]
        lse = np.logaddexp(0.0, z)  # log(1 + e^z)
        return lse, np.exp(z - lse)[:, None]
    top = raw.max(axis=1, keepdims=True)
    e = np.exp(raw - top)
    total = e.sum(axis=1, keepdims=True)
    return (np.log(total) + top)[:, 0], e / total


def _loss_grad(w_flat: np.ndarray, x: np.ndarray, target: np.ndarray, l2: float,
               shape: tuple[int, int]) -> tuple[float, np.ndarray]:
    k, d1 = shape
    w = w_flat.reshape(shape)
    n = x.shape[0]
    raw = (x @ w[:, :-1].T.astype(x.dtype)).astype(np.float64) + w[:, -1]
    lse, prob = _probabilities(raw, k == 1)
    if k == 1:
        loss = float(np.sum(lse - target * raw[:, 0])) / n
    else:
        loss = float(np.sum(lse) - np.sum(raw * target)) / n
    residual = (prob - (target[:, None] if k == 1 else target)) / n
    grad = np.empty(shape)
    grad[:, :-1] = (residual.T.astype(x.dtype) @ x) + l2 * w[:, :-1]
    grad[:, -1] = residual.sum(axis=0)
    loss += 0.5 * l2 * float(np.sum(w[:, :-1] ** 2))
    return loss, grad.ravel()


def _lbfgs(x, target, w0, l2, max_iter, tol) -> np.ndarray:
    from scipy.optimize import minimize

    shape = w0.shape
    result = minimize(
        _loss_grad, w0.ravel(), args=(x, target, l2, shape), method="L-BFGS-B", jac=True,
        options={"maxiter": max_iter, "maxls": _MAXLS, "gtol": tol, "ftol": _FTOL},
    )
    return result.x.reshape(shape)


def _newton(x, target, w0, l2, max_iter, tol) -> np.ndarray:
    """Damped Newton with the exact Hessian, solved by Cholesky, and a backtracking line
    search.

    In the multinomial case the scores are unchanged when one constant is added to every
    intercept, a flat direction of the objective (the intercepts are not penalised): the
    last class's intercept is held at its value, which removes it without changing the
    optimum's predictions.
    """
    import scipy.linalg

    x = x.astype(np.float64, copy=False)
    target = target.astype(np.float64, copy=False)
    n, d = x.shape
    k = w0.shape[0]
    binary = k == 1
    xb = np.hstack([x, np.ones((n, 1))])
    w = w0.copy()
    # Free variables: every weight, and every intercept but the last class's (multinomial).
    free = np.ones(w.shape, dtype=bool)
    if not binary:
        free[-1, -1] = False
    penalty = np.ones(w.shape)
    penalty[:, -1] = 0.0
    penalty = (l2 * penalty)[free]

    def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
        raw = xb @ w.T
        lse, prob = _probabilities(raw, binary)
        if binary:
            loss = float(np.sum(lse - target * raw[:, 0])) / n
        else:
            loss = float(np.sum(lse) - np.sum(raw * target)) / n
        loss += 0.5 * l2 * float(np.sum(w[:, :-1] ** 2))
        return loss, prob

    loss, prob = objective(w)
    for _ in range(max_iter):
        residual = prob - (target[:, None] if binary else target)
        grad = ((residual.T @ xb) / n)
        grad[:, :-1] += l2 * w[:, :-1]
        g = grad[free]
        if binary:
            weight = (prob[:, 0] * (1.0 - prob[:, 0])) / n
            hess = (xb * weight[:, None]).T @ xb
        else:
            # H[(a, i), (b, j)] = sum_n x_ni x_nj p_na (delta_ab - p_nb) / N: the block
            # diagonal of sum_n p_na x_n x_n', minus the Gram matrix of the rows p_na x_n;
            # the held intercept's row and column (the last) are left out.
            scaled = (prob[:, :, None] * xb[:, None, :]).reshape(n, k * (d + 1))[:, :-1]
            hess = -(scaled.T @ scaled)
            for a in range(k):
                rows = slice(a * (d + 1), min((a + 1) * (d + 1), k * (d + 1) - 1))
                hess[rows, rows] += scaled[:, rows].T @ xb[:, : rows.stop - rows.start]
            hess /= n
        hess[np.diag_indices_from(hess)] += penalty
        try:
            step = -scipy.linalg.cho_solve(
                scipy.linalg.cho_factor(hess, overwrite_a=True, check_finite=False), g,
                check_finite=False)
        except (np.linalg.LinAlgError, ValueError):  # singular at machine precision
            step = -np.linalg.lstsq(hess, g, rcond=None)[0]
        decrement = float(-g @ step)
        if np.max(np.abs(g)) <= tol and 0.5 * decrement <= tol:
            break
        # Backtracking (Armijo) line search along the Newton direction.
        t, new = 1.0, None
        for _ in range(30):
            trial = w.copy()
            trial[free] += t * step
            trial_loss, trial_prob = objective(trial)
            if trial_loss <= loss - 1e-4 * t * decrement:
                new = trial
                break
            t *= 0.5
        if new is None:  # no decrease left at machine precision: at the optimum
            break
        w, loss, prob = new, trial_loss, trial_prob
    return w

