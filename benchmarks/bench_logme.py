"""LogME: our probes.logme against the common public algorithm, timed in the same run.

Baseline (written here from the math, in the way of You et al.'s reference code): float64
features, ``np.linalg.svd(F^T F)``, then a Python loop over the classes, each projecting
its own indicator (F^T t, then F m once per step) and running at most 11 fixed-point
steps from alpha = beta = 1 (stopping early when lambda changes by < 1 %).

Exact reference: an SVD of F itself in float64 (no Gram matrix, so no squared condition
number) and, per class, the profile evidence maximised over log lambda by a grid and
bounded Brent, with the boundary limits (alpha -> inf; beta -> inf when rank F = N).
It shares neither the Gram matrix, the eigensolver nor the fixed point with ours.

Run from the repository root::

    python benchmarks/bench_logme.py            # N=10,000, D=2048, C=100 (about 2 minutes)
    python benchmarks/bench_logme.py --quick    # N=2,000, D=512, C=20 (seconds)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _data import backbone_like_features
from scipy import optimize
from threadpoolctl import threadpool_info, threadpool_limits

from probes import logme


def baseline_logme(features: np.ndarray, labels: np.ndarray) -> float:
    """The public algorithm's structure: SVD of F^T F, then one Python loop per class."""
    epsilon = 1e-5  # the reference code's guard in the alpha and beta denominators
    f = features.astype(np.float64)
    n, d = f.shape
    fh = f.T  # (D, N)
    v, s, vh = np.linalg.svd(fh @ f, full_matrices=True)
    evidences = []
    for c in np.unique(labels):
        t = (labels == c).astype(np.float64)
        alpha, beta = 1.0, 1.0
        lam = alpha / beta
        tmp = vh @ (fh @ t)
        for _ in range(11):
            gamma = (s / (s + lam)).sum()
            m = v @ (tmp * beta / (alpha + beta * s))
            alpha_de = (m * m).sum()
            alpha = gamma / (alpha_de + epsilon)
            beta_de = ((t - f @ m) ** 2).sum()
            beta = (n - gamma) / (beta_de + epsilon)
            new_lam = alpha / beta
            if np.abs(new_lam - lam) / lam < 0.01:
                break
            lam = new_lam
        evidence = (
            d / 2.0 * np.log(alpha) + n / 2.0 * np.log(beta)
            - 0.5 * np.sum(np.log(alpha + beta * s))
            - beta / 2.0 * (beta_de + epsilon) - alpha / 2.0 * (alpha_de + epsilon)
            - n / 2.0 * np.log(2 * np.pi)
        )
        evidences.append(evidence / n)
    return float(np.mean(evidences))


def exact_logme(features: np.ndarray, labels: np.ndarray) -> float:
    """Maximum evidence from an SVD of F in float64 and a scalar maximisation per class."""
    f = features.astype(np.float64)
    n, d = f.shape
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    keep = s > s[0] * max(n, d) * np.finfo(np.float64).eps
    u, sigma = u[:, keep], s[keep] ** 2
    k = sigma.size
    classes, codes = np.unique(labels, return_inverse=True)
    best = []
    for c in range(classes.size):
        t = (codes == c).astype(np.float64)
        z2 = (u.T @ t) ** 2
        residual = 0.0 if k == n else max(t @ t - z2.sum(), 0.0)

        def profile(log_lam, z2=z2, residual=residual):
            # max over beta of L(lam beta, beta): covariance (F F^T/lam + I)/beta.
            lam = np.exp(log_lam)
            quad = (lam * z2 / (lam + sigma)).sum() + residual
            log_det = np.log1p(sigma / lam).sum()
            return -0.5 * n * (np.log(2 * np.pi) + 1) + 0.5 * n * np.log(n / quad) - 0.5 * log_det

        grid = np.log(sigma[-1]) - 10 + np.arange(0.0, np.log(sigma[0] / sigma[-1]) + 20, 0.25)
        values = [profile(g) for g in grid]
        i = int(np.argmax(values))
        bracket = (grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)])
        polished = optimize.minimize_scalar(lambda g, p=profile: -p(g), bounds=bracket,
                                            method="bounded", options={"xatol": 1e-10})
        limits = [-0.5 * n * (np.log(2 * np.pi) + 1) + 0.5 * n * np.log(n / (t @ t))]  # alpha->inf
        if k == n:  # beta -> inf
            quad = (z2 / sigma).sum()
            limits.append(-0.5 * n * (np.log(2 * np.pi) + 1) + 0.5 * n * np.log(n / quad)
                          - 0.5 * np.log(sigma).sum())
        best.append(max(-polished.fun, values[i], *limits))
    return float(np.mean(best) / n)


def _best_time(func, repeats: int) -> tuple[float, float, float]:
    """(value, best wall seconds, best CPU seconds of this process) over ``repeats`` calls;
    the value must not change. CPU time (all BLAS threads) is the steadier figure when
    other work shares the machine."""
    walls, cpus, values = [], [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        values.append(func())
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    if len(set(values)) != 1:
        raise AssertionError(f"non-deterministic result over repeats: {values}")
    return values[0], min(walls), min(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--d", type=int, default=2048)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls of ours (best kept)")
    parser.add_argument("--threads", type=int, action="append",
                        help="BLAS threads for ours and the baseline; repeat for several runs "
                             "(default: 1, then all cores)")
    args = parser.parse_args()
    if args.quick:
        args.n, args.d, args.classes, args.repeats = 2000, 512, 20, 2
    thread_limits = args.threads or [1, None]

    blas = ", ".join(f"{i['internal_api']} {i['num_threads']} threads" for i in threadpool_info()
                     if i["user_api"] == "blas")
    print(f"LogME benchmark: N={args.n}, D={args.d}, C={args.classes}, float32 backbone-like "
          f"features; BLAS: {blas}")
    features, labels = backbone_like_features(args.n, args.d, args.classes, seed=0)
    logme(features[:50], labels[:50])  # first-use imports (scipy.sparse) out of the timing

    exact, t_exact, cpu_exact = _best_time(lambda: exact_logme(features, labels), 1)
    print(f"\n{'method':<54} {'threads':>7} {'wall s':>7} {'CPU s':>7} {'LogME':>13} "
          f"{'rel. diff to exact':>19}")
    rows = [("exact reference (SVD of F, scalar maximisation)", "all", t_exact, cpu_exact, exact)]
    speedups = []
    for limit in thread_limits:
        with threadpool_limits(limits=limit):
            ours, t_ours, cpu_ours = _best_time(lambda: logme(features, labels), args.repeats)
            base, t_base, cpu_base = _best_time(lambda: baseline_logme(features, labels), 1)
        threads = str(limit or "all")
        rows += [("ours (probes.logme)", threads, t_ours, cpu_ours, ours),
                 ("baseline (SVD of F^T F, loop over classes, 11 steps)", threads, t_base,
                  cpu_base, base)]
        speedups.append((threads, t_base / t_ours, cpu_base / cpu_ours))
    for name, threads, wall, cpu, value in rows:
        print(f"{name:<54} {threads:>7} {wall:>7.2f} {cpu:>7.2f} {value:>13.8f} "
              f"{abs(value - exact) / abs(exact):>19.2e}")
    print()
    for threads, wall, cpu in speedups:
        print(f"speed-up of ours over the baseline, {threads} thread(s): {wall:.1f}x wall, "
              f"{cpu:.1f}x CPU (target >= 3x)")

    def rel(a: float, b: float) -> str:
        return f"{abs(a - b) / abs(b):.2e}"

    half = args.d // 2
    print(f"ours vs exact, N={args.n} > D: rel. diff {rel(ours, exact)} (target <= 1e-6)")
    wide = features[:half], labels[:half]
    print(f"ours vs exact, N={half} < D={args.d}: rel. diff "
          f"{rel(logme(*wide), exact_logme(*wide))} (target <= 1e-6)")
    order = np.random.default_rng(1).permutation(args.n)
    print("ours, rel. diff to unscaled, same order, same names: features x 1e-3 "
          f"{rel(logme(features * np.float32(1e-3), labels), ours)}, x 1e3 "
          f"{rel(logme(features * np.float32(1e3), labels), ours)}; samples shuffled "
          f"{rel(logme(features[order], labels[order]), ours)}; labels renamed "
          f"{rel(logme(features, 7 * labels + 3), ours)} (target <= 1e-6)")


if __name__ == "__main__":
    main()
