"""The layer-wise analysis: every registered probe at every block, and what the rules read.

:func:`run_probes` computes each probe of the registry on the features of every block (or once
for the whole model); :func:`block_profile` and :func:`summary_measures` turn the results into
the per-block profile and the summary values that :func:`heuristics.advise` takes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

import probes
from probes import Measurement, ProbeError

if TYPE_CHECKING:
    from recommender.finetune.scratch import ScratchResult
    from recommender.models.features import Features

# Inputs that exist once per block: a probe that needs one of them is computed per block.
BLOCK_INPUTS = ("features", "random_features", "bn_stats")
# Why an input can be missing, in words for the report (instead of "was not given").
MISSING_INPUT = {
    "bn_stats": "this block has no BatchNorm layer (e.g. a LayerNorm model), so there are no "
                "stored source statistics to compare with",
    "source_probs": "the model has no source classifier head",
}


@dataclass(frozen=True)
class ProbeResult:
    """One probe's values: at every block (bottom-up) or once for the whole model."""

    name: str
    per_block: bool
    values: tuple[Measurement | None, ...]  # one per block, or a single entry
    errors: tuple[str | None, ...]
    n_samples: int | None = None  # the images the probes saw; a capped probe used fewer

    @property
    def n_used(self) -> tuple[int | None, ...]:
        """Samples each value was computed on where that is a subset, else None."""
        return tuple(m.n_used if m else None for m in self.values)

    @property
    def summary(self) -> Measurement | None:
        """The value at the penultimate features (the top block), or the single value."""
        return self.values[-1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "per_block": self.per_block,
            "values": [m.value if m else None for m in self.values],
            "spread": [m.spread if m else None for m in self.values],
            "errors": list(self.errors),
            "n_used": list(self.n_used),
        }


def block_profile(results: list[ProbeResult] | tuple[ProbeResult, ...]
                  ) -> dict[str, list[float]]:
    """Per-block values of every probe measured on all blocks (and ``NAME_spread``, the fold
    noise, where every block has one): the profile the heuristics' rules read."""
    profile = {}
    for p in results:
        if p.per_block and all(m is not None for m in p.values):
            profile[p.name] = [m.value for m in p.values]
            if all(m.spread is not None for m in p.values):  # fold noise, for the rules
                profile[f"{p.name}_spread"] = [m.spread for m in p.values]
    return profile


def summary_measures(results: list[ProbeResult] | tuple[ProbeResult, ...],
                     scratch: ScratchResult | None = None) -> dict[str, float]:
    """Each probe's value at the penultimate features (or its single value), and the
    measured scratch accuracy when there is one: what the rules read."""
    measures = {p.name: p.summary.value for p in results if p.summary is not None}
    if scratch is not None:
        measures["scratch_accuracy"] = scratch.accuracy
    return measures


def run_probes(
    features: Features, labels: np.ndarray, jobs: int | None = None,
    on_block: Callable[[int], None] | None = None,
) -> list[ProbeResult]:
    """Every registered probe: per block when it needs features, else once.

    Blocks are independent, so their probes run in ``jobs`` worker processes (default: one
    per CPU core; the probes' fits are single-threaded). A probe that cannot be computed on
    some input (``ProbeError``) is recorded as unavailable with its message, never as a
    made-up number. ``on_block(1)`` is called as each block's probes finish, so that a
    progress bar can move during what is otherwise tens of seconds of silence.
    """
    tick = on_block or (lambda _count: None)
    registered = probes.list_probes()
    per_block = [p.name for p in registered if set(BLOCK_INPUTS) & set(p.needs)]
    bn_stats = features.bn_stats or (None,) * len(features.blocks)
    inputs = [{"features": f, "random_features": r, "bn_stats": b, "labels": labels}
              for f, r, b in zip(features.pretrained, features.random_features, bn_stats)]
    jobs = min(len(inputs), jobs or os.cpu_count() or 1)
    if jobs > 1:
        from joblib import Parallel, delayed

        # Widest blocks first, one per task: the costliest probes grow with the width, and a
        # worker that frees up takes the next block (without this, 5 equal blocks went 3 + 2).
        order = sorted(range(len(inputs)), key=lambda i: -features.pretrained[i].shape[1])
        # A generator yields each block as it is done (in submission order), so the
        # progress moves while the other workers are still busy.
        done = Parallel(n_jobs=jobs, backend="loky", batch_size=1, return_as="generator")(
            delayed(_measure)(per_block, inputs[i]) for i in order)
        by_block = {}
        for i, column in zip(order, done):
            by_block[i] = column
            tick(1)
        columns = [by_block[i] for i in range(len(inputs))]
    else:
        columns = []
        for block in inputs:
            columns.append(_measure(per_block, block))
            tick(1)
    once = _measure([p.name for p in registered if p.name not in per_block],
                    {"source_probs": features.source_probs, "labels": labels})
    results = []
    n_samples = len(labels)
    for probe in registered:
        if probe.name in per_block:
            cells = [column[probe.name] for column in columns]
            results.append(ProbeResult(probe.name, True, tuple(c[0] for c in cells),
                                       tuple(c[1] for c in cells), n_samples))
        else:
            value, error = once[probe.name]
            results.append(ProbeResult(probe.name, False, (value,), (error,), n_samples))
    return results


def _measure(names: list[str], inputs: dict[str, np.ndarray]
             ) -> dict[str, tuple[Measurement | None, str | None]]:
    """Each named probe on one set of inputs, in order (so memoised fits are re-used).

    BLAS runs on one thread whatever the process, so that a value does not depend on the
    number of jobs or cores (a different reduction order changes the last bits).
    """
    # threadpool_limits only reaches BLAS libraries already loaded: scipy and scikit-learn
    # bring their own OpenBLAS, which would otherwise start one thread per core per worker.
    import scipy.linalg  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    from threadpoolctl import threadpool_limits

    out: dict[str, tuple[Measurement | None, str | None]] = {}
    with threadpool_limits(limits=1):
        for name in names:
            missing = probes.get_probe(name).missing(inputs)
            if missing and missing[0] in MISSING_INPUT:
                out[name] = (None, f"unavailable: {MISSING_INPUT[missing[0]]}.")
                continue
            try:
                out[name] = (probes.compute(name, **inputs), None)
            except ProbeError as exc:
                out[name] = (None, str(exc))
    return out
