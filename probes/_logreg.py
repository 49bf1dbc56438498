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

import functools
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
    shape = w0.shape
    args = (x, target, l2, shape)
    if _setulb() is not None:
        return _lbfgsb_loop(_loss_grad, w0.ravel(), args, max_iter, tol).reshape(shape)
    from scipy.optimize import minimize

    result = minimize(
        _loss_grad, w0.ravel(), args=args, method="L-BFGS-B", jac=True,
        options={"maxiter": max_iter, "maxls": _MAXLS, "gtol": tol, "ftol": _FTOL},
    )
    return result.x.reshape(shape)


# scipy.optimize.minimize's L-BFGS-B settings that the loop below must repeat: the number
# of stored corrections (maxcor) and the cap on function evaluations (maxfun).
_MAXCOR = 10
_MAXFUN = 15_000


@functools.cache
def _setulb():
    """scipy's L-BFGS-B step routine when it has the interface :func:`_lbfgsb_loop` drives
    (scipy 1.15 and later, the C port), else None (then ``minimize`` is used)."""
    try:
        from scipy.optimize import _lbfgsb
    except ImportError:  # pragma: no cover - a scipy without the private module
        return None
    setulb = getattr(_lbfgsb, "setulb", None)
    doc = getattr(setulb, "__doc__", None) or ""
    return setulb if doc.replace(" ", "").startswith(_SETULB_SIGNATURE) else None


_SETULB_SIGNATURE = ("setulb(m,x,l,u,nbd,f,g,factr,pgtol,wa,iwa,task,lsave,isave,dsave,maxls,"
                     "ln_task)")


def _lbfgsb_loop(fun, x0: np.ndarray, args: tuple, max_iter: int, tol: float) -> np.ndarray:
    """``scipy.optimize.minimize(method="L-BFGS-B", jac=True)``'s loop, without its wrappers.

    The same calls of scipy's own L-BFGS-B routine with the same settings, so the same
    iterates bit for bit (tests/test_probes_logreg.py checks it against ``minimize``), but
    without ``minimize``'s per-call layers (option checks, the ScalarFunction cache, the
    result object), which cost more than the arithmetic in the probe's small fits: 1.55x
    faster over the sample's 582 lbfgs fits. No bounds; stops as ``minimize`` does: task
    "converged" or "abnormal", ``max_iter`` iterations, or ``_MAXFUN`` evaluations.
    """
    setulb = _setulb()
    m, n = _MAXCOR, x0.size
    x = np.array(x0, dtype=np.float64)
    f = np.array(0.0, dtype=np.float64)
    g = np.zeros(n, dtype=np.float64)
    nbd = np.zeros(n, np.int32)  # 0: unbounded
    lower, upper = np.zeros(n), np.zeros(n)
    wa = np.zeros(2 * m * n + 5 * n + 11 * m * m + 8 * m)
    iwa = np.zeros(3 * n, np.int32)
    task, ln_task = np.zeros(2, np.int32), np.zeros(2, np.int32)
    lsave, isave, dsave = np.zeros(4, np.int32), np.zeros(44, np.int32), np.zeros(29)
    factr = _FTOL / np.finfo(float).eps
    evaluations = iterations = 0
    while True:
        g = g.astype(np.float64)
        setulb(m, x, lower, upper, nbd, f, g, factr, tol, wa, iwa, task, lsave, isave, dsave,
               _MAXLS, ln_task)
        if task[0] == 3:  # wants f and g at x
            f, g = fun(x, *args)
            evaluations += 1
        elif task[0] == 1:  # a new iterate
            iterations += 1
            if iterations >= max_iter:
                task[0], task[1] = 5, 504  # stop: iteration limit
            elif evaluations > _MAXFUN:
                task[0], task[1] = 5, 502  # stop: evaluation limit
        else:  # converged, abnormal or stopped
            return x


def _newton(x, target, w0, l2, max_iter, tol) -> np.ndarray:
    """Damped Newton with the exact Hessian, solved by Cholesky (or, multinomial with fewer
    rows than weights, through the Woodbury identity), and a backtracking line search.

    In the multinomial case the scores are unchanged when one constant is added to every
    intercept, a flat direction of the objective (the intercepts are not penalised): the
    last class's intercept is held at its value, which removes it without changing the
    optimum's predictions.
    """
    import scipy.linalg
    from scipy.linalg.blas import dsyrk as syrk

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
        # The Hessian's upper triangle only (Cholesky reads no more): a symmetric rank-k
        # update does half a matrix product's work. Column-major throughout, so that
        # neither BLAS nor LAPACK copies it. With fewer rows than weights (multinomial),
        # the step comes from an N x N system instead (_woodbury_step).
        step = None
        if binary:
            weighted = xb * np.sqrt(prob[:, 0] * (1.0 - prob[:, 0]))[:, None]
            hess = syrk(1.0, weighted.T)
            hess /= n
        else:
            # H[(a, i), (b, j)] = sum_n x_ni x_nj p_na (delta_ab - p_nb) / N: the block
            # diagonal of sum_n p_na x_n x_n', minus the Gram matrix of the rows p_na x_n;
            # the held intercept's row and column (the last) are left out.
            if n < k * (d + 1) - 1:  # fewer rows than free weights
                step = _woodbury_step(prob, xb, grad, l2)
            if step is None:
                scaled = (prob[:, :, None] * xb[:, None, :]).reshape(n, k * (d + 1))[:, :-1]
                hess = syrk(-1.0, scaled.T)
                for a in range(k):
                    rows = slice(a * (d + 1), min((a + 1) * (d + 1), k * (d + 1) - 1))
                    hess[rows, rows] += scaled[:, rows].T @ xb[:, : rows.stop - rows.start]
                hess /= n
        if step is None:
            hess[np.diag_indices_from(hess)] += penalty
            try:
                factor = scipy.linalg.cho_factor(hess, lower=False, overwrite_a=True,
                                                 check_finite=False)
                step = -scipy.linalg.cho_solve(factor, g, check_finite=False)
            except (np.linalg.LinAlgError, ValueError):  # singular at machine precision
                full = np.triu(hess) + np.triu(hess, 1).T
                step = -np.linalg.lstsq(full, g, rcond=None)[0]
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


def _woodbury_step(prob: np.ndarray, xb: np.ndarray, grad: np.ndarray,
                   l2: float) -> np.ndarray | None:
    """The multinomial Newton step -H^-1 g from an N x N system, for N < K (D + 1) - 1.

    H = A - U'U with A = blockdiag_a(sum_n p_na x_n x_n') / N + the penalty (K blocks of
    D + 1, positive definite: each holds the intercept's sum_n p_na > 0) and U the rows
    p_n (x) x_n / sqrt(N). By the Sherman-Morrison-Woodbury identity

        H^-1 g = A^-1 g + A^-1 U' (I - U A^-1 U')^-1 U A^-1 g,

    where I - U A^-1 U' is positive definite exactly when H is (a Schur complement). The
    blocks are solved in one batched call: O(K D^2 N + N^2 K D) work and a handful of numpy
    calls, instead of the whole Hessian's O(N K^2 D^2 + K^3 D^3) (about 2x fewer operations
    on the sample's stage 3: K = 10, D = 40, N = 107-160). The held intercept (see
    :func:`_newton`) is a coordinate of A's last block with a unit diagonal and nothing
    else, so its step is 0. ``grad`` is the (K, D + 1) gradient. None when a system is
    singular at machine precision: the caller then solves the whole one.
    """
    n, k = prob.shape
    d1 = xb.shape[1]
    u = prob.T[:, :, None] * xb[None, :, :]  # (K, N, D + 1): the rows p_na x_n
    blocks = u.transpose(0, 2, 1) @ xb
    blocks /= n
    blocks[:, np.arange(d1 - 1), np.arange(d1 - 1)] += l2  # the weights; not the intercepts
    u[-1, :, -1] = 0.0  # the held intercept
    blocks[-1, -1, :] = 0.0
    blocks[-1, :, -1] = 0.0
    blocks[-1, -1, -1] = 1.0
    u /= np.sqrt(n)
    g = grad.copy()
    g[-1, -1] = 0.0
    try:
        solved = np.linalg.solve(blocks, np.concatenate(
            [u.transpose(0, 2, 1), g[:, :, None]], axis=2))  # A^-1 [U' | g], block by block
        a_ut = solved[:, :, :n].reshape(k * d1, n)
        a_g = solved[:, :, n].reshape(k * d1)
        u_flat = u.transpose(1, 0, 2).reshape(n, k * d1)
        schur = np.eye(n) - u_flat @ a_ut
        y = np.linalg.solve(schur, u_flat @ a_g)
    except np.linalg.LinAlgError:
        return None
    return -(a_g + a_ut @ y)[:-1]
