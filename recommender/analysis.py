"""The layer-wise analysis: every registered probe at every block, and what the rules read.

:func:`run_probes` computes each probe of the registry on the features of every block (or once
for the whole model); :func:`block_profile` and :func:`summary_measures` turn the results into
the per-block profile and the summary values that :func:`heuristics.advise` takes;
:func:`consecutive_cka` compares each block's features with the block's below it.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

import probes
from probes import Measurement, ProbeError
from recommender.signals import ctrl_c_deferred

if TYPE_CHECKING:
    from recommender.finetune.scratch import ScratchResult
    from recommender.models.features import Features

# Inputs that exist once per block: a probe that needs one of them is computed per block.
BLOCK_INPUTS = ("features", "random_features", "bn_stats")
# Where a block's inputs hold the inputs of the probes that compare with the random-init
# twin, when the twin saw a subset of the images (see recommender.models.features).
TWIN = "_twin"
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


def consecutive_cka(pretrained: tuple[np.ndarray, ...] | list[np.ndarray]
                    ) -> tuple[float | None, ...]:
    """Debiased linear CKA between each block's features and the block's below it (None for
    the first block, or where it cannot be computed): where the network's representation of
    the target's images changes most from one block to the next (Kornblith et al. 2019)."""
    out: list[float | None] = [None] if len(pretrained) else []
    for below, above in zip(pretrained, pretrained[1:]):
        try:
            out.append(probes.linear_cka(below, above, debiased=True))
        except ProbeError:  # fewer than 4 images: the probes say why
            out.append(None)
    return tuple(out)


def run_probes(
    features: Features, labels: np.ndarray, jobs: int | None = None,
    on_block: Callable[[int], None] | None = None,
) -> list[ProbeResult]:
    """Every registered probe: per block when it needs features, else once.

    Blocks and probes are independent, so they run in ``jobs`` workers (default: one per
    CPU core; forked processes on Linux, threads elsewhere: :func:`_in_workers`), one task
    per probe or group of probes that share work (:func:`_tasks`), BLAS on one thread
    each, so that a value never depends on the number of jobs or cores. A probe that
    cannot be computed on some input (``ProbeError``) is recorded as unavailable with its
    message, never as a made-up number. ``on_block(1)`` is called as each block's
    probes finish, so that a progress bar can move during what is otherwise seconds of
    silence.
    """
    tick = on_block or (lambda _count: None)
    registered = probes.list_probes()
    per_block = [p.name for p in registered if set(BLOCK_INPUTS) & set(p.needs)]
    bn_stats = features.bn_stats or (None,) * len(features.blocks)
    inputs = [{"features": f, "random_features": r, "bn_stats": b, "labels": labels}
              for f, r, b in zip(features.pretrained, features.random_features, bn_stats)]
    twin = features.twin_rows()
    if not np.array_equal(twin, np.arange(labels.shape[0])):
        # The twin saw a subset: what compares with it sees the same images.
        for block in inputs:
            block[TWIN] = {**block, "features": block["features"][twin],
                           "labels": labels[twin]}
    # One task per probe (or group of probes that re-use each other's work: _tasks), the
    # costliest blocks first and, within a block, its fits first: a worker that frees up
    # takes the next task, so that both finish together (by block, one block's fits made
    # the other worker wait), while the blocks still finish one after the other.
    classes = np.unique(labels).size
    blocks = sorted(range(len(inputs)), key=lambda i: -_block_cost(
        labels.shape[0], features.pretrained[i].shape[1], classes))
    groups = _tasks(per_block, subset=bool(inputs) and TWIN in inputs[0])
    tasks = [(i, group) for i in blocks for group in groups]
    jobs = min(len(tasks), jobs or os.cpu_count() or 1)
    columns: list[dict[str, tuple[Measurement | None, str | None]]] = [{} for _ in inputs]
    left = [len(groups)] * len(inputs)
    with _one_blas_thread():
        for t, cells in _in_workers(lambda t: _measure(list(tasks[t][1]), inputs[tasks[t][0]]),
                                    range(len(tasks)), jobs):
            i = tasks[t][0]
            columns[i].update(cells)
            left[i] -= 1
            if not left[i]:
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


# The work of the forked workers: set before the fork, so that a child inherits it (and
# the features) without pickling; None outside _in_processes.
_FORKED_WORK: Callable[[int], Any] | None = None


def _in_workers(work: Callable[[int], Any], order: Sequence[int], jobs: int
                ) -> Iterator[tuple[int, Any]]:
    """:func:`_in_processes` where ``fork`` is available (Linux), else :func:`_in_threads`."""
    import multiprocessing

    if jobs > 1 and sys.platform.startswith("linux") \
            and "fork" in multiprocessing.get_all_start_methods():
        return _in_processes(work, order, jobs)
    return _in_threads(work, order, jobs)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_forked(i: int) -> tuple[int, Any]:
    assert _FORKED_WORK is not None
    return i, _FORKED_WORK(i)


def _in_processes(work: Callable[[int], Any], order: Sequence[int], jobs: int
                  ) -> Iterator[tuple[int, Any]]:
    """``(i, work(i))`` for each ``i`` of ``order``, as they finish, from ``jobs`` forked
    worker processes taking the next ``i`` as they free up.

    Processes, because the fits spend much of their time in Python between small BLAS
    calls, where threads wait for each other's lock. Forked: nothing to import or pickle
    but the results. The workers ignore SIGINT, so a Ctrl-C reaches this process alone
    (no worker prints a traceback) and the pool is terminated on the way out. An exception
    in ``work`` is raised here, and a Ctrl-C while the pool forks just after it
    (:func:`recommender.signals.ctrl_c_deferred`)."""
    import multiprocessing

    global _FORKED_WORK
    _FORKED_WORK = work
    try:
        with ctrl_c_deferred():
            pool = multiprocessing.get_context("fork").Pool(jobs, initializer=_ignore_sigint)
    finally:
        _FORKED_WORK = None  # the children have their copy
    try:
        yield from pool.imap_unordered(_run_forked, order, chunksize=1)
        pool.close()
    finally:
        pool.terminate()
        pool.join()


def _in_threads(work: Callable[[int], Any], order: Sequence[int], jobs: int
                ) -> Iterator[tuple[int, Any]]:
    """``(i, work(i))`` for each ``i`` of ``order``, as they finish, from ``jobs`` daemon
    threads taking the next ``i`` as they free up (in this thread when ``jobs`` is 1).

    Threads, not processes: nothing to start, import or pickle (a second of a 3 s stage),
    and a Ctrl-C reaches this thread alone (a worker process of the terminal's process
    group would print its own traceback). Daemon threads: an interrupted run exits without
    waiting for the block in progress. An exception in ``work`` is raised here.
    """
    if jobs <= 1:
        for i in order:
            yield i, work(i)
        return
    import queue
    import threading

    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for i in order:
        todo.put(i)
    done: queue.SimpleQueue[tuple[int, Any, BaseException | None]] = queue.SimpleQueue()

    def worker() -> None:
        while True:
            try:
                i = todo.get_nowait()
            except queue.Empty:
                return
            try:
                done.put((i, work(i), None))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                done.put((i, None, exc))
                return

    for _ in range(jobs):
        threading.Thread(target=worker, name="nbtl-probes", daemon=True).start()
    for _ in order:
        i, value, error = done.get()
        if error is not None:
            while not todo.empty():  # the other threads stop after their block
                todo.get_nowait()
            raise error
        yield i, value


@contextmanager
def _one_blas_thread() -> Iterator[None]:
    """BLAS on one thread for the whole probe stage (its threads would compete with the
    probe threads, and a different reduction order changes a value's last bits). Set once
    here, not per block: the setting is process-wide, and a thread leaving its own limit
    would lift it under the others."""
    # threadpool_limits reaches only BLAS libraries already loaded: scipy brings its own
    # OpenBLAS.
    import scipy.linalg  # noqa: F401
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


# Probes that re-use each other's memoised work on the same inputs, so run in one task: the
# pre-training gain's probe on the pre-trained features is the linear probe's (when the twin
# saw every image), the shrinkage H-score's eigendecomposition the H-score's.
_SHARE_WORK = (("linear_probe_accuracy", "pretraining_gain"), ("h_score", "shrinkage_h_score"))
# The probes whose cross-validated fits make most of a block's cost: their tasks go first.
_FITS = ("linear_probe_accuracy", "pretraining_gain")


def _tasks(names: list[str], subset: bool) -> list[tuple[str, ...]]:
    """The per-block probes ``names`` in the groups that run as one task each: a probe
    alone, or with those of :data:`_SHARE_WORK` it shares work with on the same inputs (a
    probe that compares with the random-init twin sees other rows when the twin saw a
    ``subset`` of the images). Registration order within a group (the one that fills a
    memo first); the groups with a fit first."""
    def rows(name: str) -> bool:
        return subset and "random_features" in probes.get_probe(name).needs

    groups: list[list[str]] = []
    for name in names:
        partners = {other for pair in _SHARE_WORK if name in pair for other in pair
                    if other != name and rows(other) == rows(name)}
        group = next((g for g in groups if partners & set(g)), None)
        if group is None:
            groups.append([name])
        else:
            group.append(name)
    if not groups:
        groups = [[]]  # no per-block probe: one empty task per block (its tick)
    groups.sort(key=lambda g: not set(g) & set(_FITS))
    return [tuple(g) for g in groups]


def _block_cost(n: int, d: int, classes: int) -> float:
    """A rough cost of a block's probes, dominated by the linear probe's fits (on the
    pre-trained and the random-init features): a Newton step, while Newton's method is used
    (see probes.linear_probe), builds an N x W^2 Hessian and factors it in W^3 for W weights;
    lbfgs takes about 100 steps of N x W."""
    from probes.linear_probe import NEWTON_MAX_PARAMS

    weights = (min(d, n) + 1) * (1 if classes == 2 else classes)
    if weights <= NEWTON_MAX_PARAMS:
        return n * weights**2 + weights**3
    return n * weights * 100.0


def _measure(names: list[str], inputs: dict[str, np.ndarray]
             ) -> dict[str, tuple[Measurement | None, str | None]]:
    """Each named probe on one set of inputs, in order (so memoised fits are re-used)."""
    out: dict[str, tuple[Measurement | None, str | None]] = {}
    inputs = dict(inputs)
    twin = inputs.pop(TWIN, None)
    for name in names:
        if twin is not None and "random_features" in probes.get_probe(name).needs:
            out[name] = _measure([name], twin)[name]
            continue
        missing = probes.get_probe(name).missing(inputs)
        if missing and missing[0] in MISSING_INPUT:
            out[name] = (None, f"unavailable: {MISSING_INPUT[missing[0]]}.")
            continue
        try:
            out[name] = (probes.compute(name, **inputs), None)
        except ProbeError as exc:
            out[name] = (None, str(exc))
    return out


# --- the analysis cache: a re-run with the same images, labels, model and code ------------
# Bump when what is stored changes shape; the code's own bytes are part of the key anyway.
ANALYSIS_VERSION = 1
# The code whose change can change a cached analysis: the probes, this runner, the features.
_ANALYSIS_CODE = ("recommender/analysis.py", "recommender/models/features.py",
                  "recommender/models/bnstats.py", "recommender/models/backbones.py")


@dataclass(frozen=True)
class Analysis:
    """What the probe stage found, without the features: enough for the rules and the
    report, so that a re-run with the same inputs loads neither the model nor the features."""

    model: Mapping[str, Any]  # Backbone.describe()
    blocks: tuple[str, ...]
    dims: tuple[int, ...]
    probes: tuple[ProbeResult, ...]
    random_init_images: int  # how many images the random-init twin saw (see features)
    consecutive_cka: tuple[float | None, ...] = ()  # see consecutive_cka
    from_cache: bool = False

    def heuristics_blocks(self) -> tuple[Any, ...]:
        """The backbone's blocks as :class:`heuristics.Block` (for the rules)."""
        from heuristics import Block

        return tuple(Block(b["name"], tuple(b["modules"])) for b in self.model["blocks"])

    def to_json(self) -> dict[str, Any]:
        return {
            "version": ANALYSIS_VERSION,
            "model": dict(self.model),
            "blocks": list(self.blocks),
            "dims": list(self.dims),
            "random_init_images": self.random_init_images,
            "consecutive_cka": list(self.consecutive_cka),
            "probes": [{"name": p.name, "per_block": p.per_block, "errors": list(p.errors),
                        "values": [m.to_dict() if m is not None else None for m in p.values],
                        "n_samples": p.n_samples}
                       for p in self.probes],
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Analysis:
        results = tuple(
            ProbeResult(p["name"], bool(p["per_block"]),
                        tuple(Measurement(**m) if m is not None else None for m in p["values"]),
                        tuple(p["errors"]), p["n_samples"])
            for p in doc["probes"])
        return cls(doc["model"], tuple(doc["blocks"]), tuple(int(d) for d in doc["dims"]),
                   results, int(doc["random_init_images"]),
                   tuple(doc["consecutive_cka"]), from_cache=True)


def code_version() -> str:
    """A digest of the source of every probe and of the code that feeds them: a cached
    analysis is reused only by the code that made it."""
    import hashlib
    from pathlib import Path

    root = Path(probes.__file__).resolve().parent.parent
    sha = hashlib.sha256()
    files = sorted(Path(probes.__file__).resolve().parent.glob("*.py"))
    files += [root / name for name in _ANALYSIS_CODE]
    for path in files:
        sha.update(path.name.encode())
        sha.update(path.read_bytes())
    return sha.hexdigest()[:32]


def analysis_key(request: Mapping[str, Any], samples: Sequence[tuple[Any, int]],
                 classes: Sequence[str]) -> str:
    """The cache key of an analysis: what was asked (model, weights, image size, package
    versions), every image file's identity with its class, and the code's version. The
    order of the samples does not matter (the probes do not depend on it)."""
    from recommender.cache import digest, files_identity

    identity = files_identity(path for path, _ in samples)
    labelled = sorted([*ident, classes[label]] for ident, (_, label) in zip(identity, samples))
    return digest({"version": ANALYSIS_VERSION, "request": dict(request), "files": labelled,
                   "code": code_version()})


def load_analysis(key: str) -> Analysis | None:
    """The cached analysis under ``key``, or None (a damaged entry is discarded with a
    warning, and one made by other probes than those registered now is not used)."""
    import json

    from recommender.cache import cache_dir, discard

    path = cache_dir() / "analysis" / f"{key}.json"
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        analysis = Analysis.from_json(doc)
        if doc.get("version") != ANALYSIS_VERSION:
            raise ValueError(f"version {doc.get('version')!r}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        discard(path, "analysis file", f"{type(exc).__name__}: {exc}")
        return None
    registered = [p.name for p in probes.list_probes()]
    if [p.name for p in analysis.probes] != registered:
        return None
    return analysis


def save_analysis(key: str, analysis: Analysis) -> None:
    """Keep ``analysis`` under ``key`` (a warning, not an error, when the cache cannot be
    written)."""
    import json

    from recommender.cache import cache_dir, try_write

    text = json.dumps(analysis.to_json())  # key order kept: the document keeps it too
    try_write(cache_dir() / "analysis" / f"{key}.json",
              lambda tmp: tmp.write_text(text, encoding="utf-8"), "probe results")
