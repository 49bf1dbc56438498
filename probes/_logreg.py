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
    # The row maxima: exact in any order, 5x faster over a transposed copy's columns.
    top = np.ascontiguousarray(raw.T).max(axis=0)[:, None]
    e = np.subtract(raw, top)
    np.exp(e, out=e)
    total = e.sum(axis=1, keepdims=True)
    e /= total
    lse = np.log(total, out=total)
    lse += top
    return lse[:, 0], e


def _loss_grad(w_flat: np.ndarray, x: np.ndarray, target: np.ndarray, l2: float,
               shape: tuple[int, int]) -> tuple[float, np.ndarray]:
    # The same operations, in the same order, as the plain formulas, in place where they
    # can be: the lbfgs fits make thousands of calls on small arrays.
    k, d1 = shape
    w = w_flat.reshape(shape)
    n = x.shape[0]
    raw = np.add(x @ w[:, :-1].T.astype(x.dtype), w[:, -1], dtype=np.float64)
    lse, prob = _probabilities(raw, k == 1)
    if k == 1:
        loss = float(np.sum(lse - target * raw[:, 0])) / n
        residual = prob
        residual[:, 0] -= target
    else:
        raw *= target
        loss = float(lse.sum() - raw.sum()) / n
        residual = prob
        residual -= target
    residual /= n
    grad = np.empty(shape)
    np.add(residual.T.astype(x.dtype) @ x, l2 * w[:, :-1], out=grad[:, :-1])
    grad[:, -1] = residual.sum(axis=0)
    loss += 0.5 * l2 * float(np.square(w[:, :-1]).sum())
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


@functools.cache
def _lapack():
    """scipy's BLAS and LAPACK routines for Newton's method: imported on first use (importing
    scipy.linalg costs tenths of a second, which the CLI's start does not pay) and once (an
    import statement in the solver costs its time again at every one of hundreds of fits)."""
    from scipy.linalg.blas import dsyrk
    from scipy.linalg.lapack import dpotrf, dpotrs, dtrtrs

    return dsyrk, dpotrf, dpotrs, dtrtrs


def _cholesky_solve(hess: np.ndarray, g: np.ndarray) -> np.ndarray | None:
    """H^-1 g for a symmetric positive definite ``hess`` whose upper triangle, read
    column-major, holds H (it is overwritten); None when H is not positive definite at
    machine precision. The calls of ``scipy.linalg.cho_factor`` and ``cho_solve``
    (``lower=False``) without their wrappers."""
    _, potrf, potrs, _ = _lapack()
    factor, info = potrf(hess, lower=0, overwrite_a=1, clean=0)
    if info != 0:
        return None
    solved, info = potrs(factor, g, lower=0)
    return solved if info == 0 else None


def _newton(x, target, w0, l2, max_iter, tol) -> np.ndarray:
    """Damped Newton with the exact Hessian, solved by Cholesky (or, multinomial with few
    rows, through the Woodbury identity), and a backtracking line search.

    In the multinomial case the scores are unchanged when one constant is added to every
    intercept, a flat direction of the objective (the intercepts are not penalised): the
    last class's intercept is held at its value, which removes it without changing the
    optimum's predictions.
    """
    syrk = _lapack()[0]
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
    # The products x_ni x_nj (i <= j) of every row: what the multinomial Hessian is made of
    # (see _multinomial_hessian), the same at every step.
    outer = _outer_products(xb) if not binary and _packed_is_small(d + 1, k) else None
    woodbury = not binary and _woodbury_is_cheaper(n, d + 1, k)

    def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
        raw = xb @ w.T
        lse, prob = _probabilities(raw, binary)
        if binary:
            loss = float(np.sum(lse - target * raw[:, 0])) / n
        else:
            loss = float(np.sum(lse) - np.sum(raw * target)) / n
        loss += 0.5 * l2 * float(np.sum(w[:, :-1] ** 2))
        return loss, prob

    def hessian(prob: np.ndarray) -> np.ndarray:
        """H with the penalty, the held intercept left out; the upper triangle, read
        column-major, is H (the whole matrix, multinomial)."""
        if binary:
            # A symmetric rank-k update does half a matrix product's work; column-major,
            # so that neither BLAS nor LAPACK copies it.
            hess = syrk(1.0, (xb * np.sqrt(prob[:, 0] * (1.0 - prob[:, 0]))[:, None]).T)
            hess /= n
        elif outer is not None:
            hess = _multinomial_hessian(prob, outer, d + 1).T  # symmetric: F-order view
        else:
            # H = blockdiag_a(sum_n p_na x_n x_n') - S'S / N, S the rows p_n (x) x_n (the
            # held intercept's column left out): a symmetric rank-N update.
            scaled = (prob[:, :, None] * xb[:, None, :]).reshape(n, k * (d + 1))[:, :-1]
            hess = syrk(-1.0, scaled.T)
            for a in range(k):
                rows = slice(a * (d + 1), min((a + 1) * (d + 1), k * (d + 1) - 1))
                hess[rows, rows] += scaled[:, rows].T @ xb[:, : rows.stop - rows.start]
            hess /= n
        hess.reshape(-1, order="F")[:: hess.shape[0] + 1] += penalty
        return hess

    loss, prob = objective(w)
    for _ in range(max_iter):
        residual = prob - (target[:, None] if binary else target)
        grad = ((residual.T @ xb) / n)
        grad[:, :-1] += l2 * w[:, :-1]
        g = grad[free]
        step = _woodbury_step(prob, xb, grad, l2, outer) if woodbury else None
        if step is None:
            solved = _cholesky_solve(hessian(prob), g)
            if solved is None:  # singular at machine precision
                hess = hessian(prob)
                full = np.triu(hess) + np.triu(hess, 1).T
                solved = np.linalg.lstsq(full, g, rcond=None)[0]
            step = -solved
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


def _outer_products(xb: np.ndarray) -> np.ndarray:
    """(D1 (D1 + 1) / 2, N): x_ni x_nj of each row n, for each i <= j (numpy's
    ``triu_indices`` order)."""
    rows, cols = _triangle(xb.shape[1])[:2]
    xt = np.ascontiguousarray(xb.T)
    return xt[rows] * xt[cols]


@functools.lru_cache(maxsize=8)
def _triangle(d1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The upper triangle's (row, column) pairs of a D1 x D1 matrix, and the (D1, D1) map
    from an entry to its pair's position (either triangle)."""
    rows, cols = np.triu_indices(d1)
    where = np.empty((d1, d1), dtype=np.intp)
    where[rows, cols] = where[cols, rows] = np.arange(rows.size)
    return _read_only(rows, cols, where)


@functools.lru_cache(maxsize=8)
def _hessian_plan(k: int, d1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The class pairs a <= b (two arrays), which of them have a = b, and the position in
    the flat (D1 (D1 + 1) / 2, K (K + 1) / 2) product of each entry of the Hessian over the
    free weights ((K D1 - 1) squared, the held intercept left out)."""
    first, second = np.triu_indices(k)
    pair = np.empty((k, k), dtype=np.intp)
    pair[first, second] = pair[second, first] = np.arange(first.size)
    where = _triangle(d1)[2]
    index = where[None, :, None, :] * first.size + pair[:, None, :, None]
    index = index.reshape(k * d1, k * d1)[:-1, :-1]
    return _read_only(first, second, first == second, np.ascontiguousarray(index))


def _read_only(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """The arrays, made read-only (they are cached and shared)."""
    for array in arrays:
        array.flags.writeable = False
    return arrays


def _multinomial_hessian(prob: np.ndarray, outer: np.ndarray, d1: int) -> np.ndarray:
    """The multinomial Hessian over the free weights (the held intercept left out), without
    the penalty: a C-ordered symmetric (K D1 - 1) square.

    H[(a, i), (b, j)] = sum_n p_na (delta_ab - p_nb) x_ni x_nj / N, where both factors are
    symmetric (in a, b and in i, j): every distinct entry is one of the (K (K + 1) / 2) x
    (D1 (D1 + 1) / 2) entries of one matrix product, ``outer`` (see
    :func:`_outer_products`) times the per-row class weights, about half the work of a
    symmetric rank-N update of the whole matrix (the sample's stage-3 blocks at N = 2000:
    1.8x fewer operations), and gathered from it.
    """
    n, k = prob.shape
    first, second, same, index = _hessian_plan(k, d1)
    weights = prob[:, first] * prob[:, second]
    np.negative(weights, out=weights)
    weights[:, same] += prob
    products = outer @ weights
    hess = products.ravel()[index]
    hess /= n
    return hess


def _packed_is_small(d1: int, k: int) -> bool:
    """Whether :func:`_multinomial_hessian`'s arrays, (D1 (D1 + 1) / 2, N) and (N, K (K + 1)
    / 2), are at most 3x the (N, K D1) one of the rank-N update: not with many more feature
    pairs than weights (few classes, wide features) nor many more class pairs (many
    classes, narrow features), where they would grow the probe's memory (the linear probe
    runs on up to 10,000 rows)."""
    return max(d1 * (d1 + 1), k * (k + 1)) // 2 <= 3 * k * d1


def _woodbury_is_cheaper(n: int, d1: int, k: int) -> bool:
    """Whether :func:`_woodbury_step` takes fewer operations than building and factoring
    the whole Hessian (:func:`_multinomial_hessian`): with few rows and wide blocks."""
    pairs, entries, weights = k * (k + 1) // 2, d1 * (d1 + 1) // 2, k * d1 - 1
    whole = 2 * n * pairs * entries + weights**3 / 3
    woodbury = 2 * n * k * entries + 2 * n * k * d1 * d1 + n * n * k * d1 + n**3 / 3
    return woodbury < whole


def _woodbury_step(prob: np.ndarray, xb: np.ndarray, grad: np.ndarray, l2: float,
                   outer: np.ndarray | None = None) -> np.ndarray | None:
    """The multinomial Newton step -H^-1 g from an N x N system, cheaper than the whole
    Hessian's when N is small next to K (D + 1) (see :func:`_woodbury_is_cheaper`).

    H = A - U'U with A = blockdiag_a(sum_n p_na x_n x_n') / N + the penalty (K blocks of
    D + 1, positive definite: each holds the intercept's sum_n p_na > 0) and U the rows
    p_n (x) x_n / sqrt(N). With A = L L' (Cholesky, block by block) and V = L^-1 U', the
    Sherman-Morrison-Woodbury identity gives

        H^-1 g = L'^-1 (h + V (I - V'V)^-1 V'h),  h = L^-1 g,

    where I - V'V is positive definite exactly when H is (a Schur complement): a symmetric
    rank-K(D + 1) update and a Cholesky factor of N x N, and per block a Cholesky factor
    and triangular solves: O(K D^2 N + N^2 K D / 2) work, half the time of the LU solves
    of A and of I - U A^-1 U' it replaces on the random-init twin's fits (N = 133-200,
    D = 24-40, K = 10). The held intercept (see :func:`_newton`) is a coordinate of A's
    last block with a unit diagonal and nothing else, so its step is 0. ``grad`` is the (K, D + 1)
    gradient, ``outer`` :func:`_outer_products` of ``xb`` or None (not computed). None
    when a system is not positive definite at machine precision: the caller then solves the
    whole one.
    """
    syrk, potrf, _, trtrs = _lapack()
    n, k = prob.shape
    d1 = xb.shape[1]
    if outer is None:  # (K, D + 1, D + 1): sum_n p_na x_n x_n'
        blocks = (prob.T[:, :, None] * xb[None, :, :]).transpose(0, 2, 1) @ xb
    else:
        blocks = (outer @ prob).T[:, _triangle(d1)[2]]
    blocks /= n
    blocks[:, np.arange(d1 - 1), np.arange(d1 - 1)] += l2  # the weights; not the intercepts
    blocks[-1, -1, :] = 0.0  # the held intercept
    blocks[-1, :, -1] = 0.0
    blocks[-1, -1, -1] = 1.0
    # Per block, the rows p_na x_n / sqrt(N) of U (the columns of U'), then g's block.
    rows = np.empty((k, n + 1, d1))
    np.multiply((prob.T / np.sqrt(n))[:, :, None], xb[None, :, :], out=rows[:, :n])
    rows[:, n] = grad
    rows[-1, :, -1] = 0.0  # the held intercept
    factors = []
    for a in range(k):  # L_a' (upper), then L_a^-1 [U_a' | g_a] in place
        factor, info = potrf(blocks[a].T, lower=0, overwrite_a=1, clean=0)
        if info != 0:
            return None
        columns = rows[a].T  # (D + 1, N + 1), column-major
        columns[...], info = trtrs(factor, columns, lower=0, trans=1, overwrite_b=1)
        if info != 0:
            return None
        factors.append(factor)
    v = np.ascontiguousarray(rows[:, :n].transpose(0, 2, 1)).reshape(k * d1, n)  # V
    h = rows[:, n].reshape(k * d1)
    schur = syrk(-1.0, v.T)  # the upper triangle of -V'V, column-major
    schur.reshape(-1, order="F")[:: n + 1] += 1.0
    y = _cholesky_solve(schur, v.T @ h)
    if y is None:
        return None
    z = (h + v @ y).reshape(k, d1)
    step = np.empty((k, d1))
    for a in range(k):  # L_a'^-1 z_a
        step[a], info = trtrs(factors[a], z[a], lower=0)
    return -step.reshape(k * d1)[:-1]
