"""The whole job as one function: dataset -> backbone -> layer-wise probes -> recommendation.

:func:`recommend` returns a :class:`Result`, the one object that both the terminal report
and the JSON document are made from.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

import heuristics
import probes
from probes import Measurement, ProbeError
from recommender.backbones import load_backbone
from recommender.dataset import Dataset, load_dataset
from recommender.errors import UsageError
from recommender.features import Features, extract_features, resolve_device
from recommender.scratch import SCRATCH_EPOCHS, SCRATCH_IMAGE_SIZE, ScratchResult, scratch_accuracy
from recommender.validate import (
    VALIDATE_EPOCHS,
    VALIDATE_IMAGE_SIZE,
    VALIDATE_SEEDS,
    Split,
    Validation,
    split_layout,
)

SCHEMA_VERSION = "1.1"
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
        }


@dataclass(frozen=True)
class Result:
    """Everything one run found; the report and the JSON are two views of it."""

    dataset: Dataset
    model: Mapping[str, Any]
    blocks: tuple[str, ...]
    dims: tuple[int, ...]
    probes: tuple[ProbeResult, ...]
    recommendation: heuristics.Recommendation
    settings: Mapping[str, Any]
    scratch: ScratchResult | None = None
    validation: Validation | None = None
    # Wall times and cache hits differ between identical runs: shown in the report,
    # kept out of the JSON so that the same inputs and seed give the same document.
    timings: Mapping[str, float] = field(default_factory=dict, compare=False)
    analysed: str = "all"  # "all", or which split the probes saw: "train"
    features_from_cache: bool = field(default=False, compare=False)

    def summary_measures(self) -> dict[str, float]:
        return summary_measures(self.probes, self.scratch)

    def to_dict(self) -> dict[str, Any]:
        registry = {p.name: p for p in probes.list_probes()}
        return {
            "schema_version": SCHEMA_VERSION,
            "dataset": self.dataset.to_dict(),
            "model": dict(self.model),
            "settings": dict(self.settings),
            "measures": {
                "blocks": list(self.blocks),
                "dims": list(self.dims),
                "summary": self.summary_measures(),
                "probes": {p.name: p.to_dict() for p in self.probes},
                "scratch": self.scratch.to_dict() if self.scratch else None,
                "definitions": {
                    name: {
                        "label": registry[name].label,
                        "meaning": registry[name].meaning,
                        "higher_is_better": registry[name].higher_is_better,
                        "unit": registry[name].unit,
                        "reference": registry[name].reference,
                    }
                    for name in (p.name for p in self.probes)
                },
            },
            "recommendation": self.recommendation.to_dict(),
            "validation": self.validation.to_dict() if self.validation else None,
            # The one part that differs between identical runs.
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }


def recommend(
    path: str | Path,
    *,
    labels_csv: str | Path | None = None,
    model: str | None = None,
    weights: str | Path | None = None,
    image_size: int | None = None,
    max_per_class: int | None = None,
    seed: int = 0,
    batch_size: int = 32,
    workers: int | None = None,
    device: str = "auto",
    use_cache: bool = True,
    offline: bool = False,
    scratch: bool = False,
    scratch_epochs: int = SCRATCH_EPOCHS,
    overrides: Mapping[str, Any] | None = None,
    validate: bool = False,
    validate_seeds: int = VALIDATE_SEEDS,
    validate_epochs: int = VALIDATE_EPOCHS,
    validate_size: int = VALIDATE_IMAGE_SIZE,
    search: int = 0,
    search_db: str | Path | None = None,
    on_stage: Callable[[str], None] | None = None,
    progress: Callable[[str, int, str], Callable[[int], None]] | None = None,
) -> Result:
    """Analyse the image dataset at ``path`` and recommend non-binary fine-tuning settings.

    Parameters mirror the ``nbtl-recommend`` options: ``scratch`` also trains the network
    from random initialisation for ``scratch_epochs`` (the paper's own measure of fit),
    ``overrides`` maps hyperparameter names to values that win over every rule.
    ``validate`` fine-tunes the recommendation and the binary default on a train/validation/
    test split (``validate_seeds`` seeds each, ``validate_epochs`` at ``validate_size`` px);
    ``search`` > 0 also tries that many settings within the recommendation's ranges (stored
    in ``search_db``, default in the cache folder, so an interrupted search resumes). With
    either, the probes see only the training split. A folder with ``train/`` and ``test/``
    (and optionally ``val/``) sub-folders is taken as the user's own split.
    ``on_stage(text)`` is told when each step starts, and ``progress(label, total, unit)``
    may return a callback ``advance(n)`` (progress bars); both default to silence.

    Raises
    ------
    recommender.errors.NbtlError
        ``DatasetError``, ``ModelUnavailableError`` or ``UsageError`` with a message that says
        what to do.
    """
    if scratch and scratch_epochs < 1:  # before minutes of work, not after
        raise UsageError(f"--scratch-epochs {scratch_epochs} must be at least 1.")
    if search < 0:
        raise UsageError(f"--search {search} must be at least 1 (or left out).")
    validate = validate or search > 0
    if validate:
        from recommender import validate as v

        v.check_seeds(validate_seeds)
        v.budget_for({}, validate_epochs, validate_size)
    say = on_stage or (lambda _text: None)
    timings: dict[str, float] = {}
    start = time.perf_counter()

    say("Scanning the dataset")
    split: Split | None = None
    layout = split_layout(Path(path)) if labels_csv is None else None
    if layout:  # the user's own split: analyse train/, validate on val/ and test/
        parts = {role: load_dataset(folder, max_per_class=max_per_class, seed=seed)
                 for role, folder in layout.items() if validate or role == "train"}
        dataset = parts["train"]
        if validate:
            from recommender.validate import folder_split

            split = folder_split(parts, seed)
    else:
        dataset = load_dataset(path, labels_csv=labels_csv, max_per_class=max_per_class,
                               seed=seed)
        if validate:
            from recommender.validate import make_split

            split = make_split(dataset.samples, dataset.classes, seed)
            # The probes see the training split only: the held-out images stay unseen.
            dataset = replace(dataset, samples=tuple(split.samples[i] for i in split.train))
    timings["scan_s"] = time.perf_counter() - start

    say("Loading the backbone")
    mark = time.perf_counter()
    backbone = load_backbone(model, weights, image_size=image_size, offline=offline)
    timings["model_s"] = time.perf_counter() - mark

    say("Extracting features")
    mark = time.perf_counter()
    paths = [p for p, _ in dataset.samples]
    on_batch = progress("features", len(paths), "images") if progress else None
    features = extract_features(
        paths, backbone, batch_size=batch_size, workers=workers, device=device,
        use_cache=use_cache, on_batch=on_batch,
    )
    timings["features_s"] = time.perf_counter() - mark

    say("Computing probes")
    mark = time.perf_counter()
    labels = np.array([label for _, label in dataset.samples])
    results = run_probes(features, labels)
    timings["probes_s"] = time.perf_counter() - mark

    scratch_result = None
    if scratch:
        say(f"Training from scratch ({scratch_epochs} epochs at {SCRATCH_IMAGE_SIZE} px)")
        mark = time.perf_counter()
        on_image = progress("decoding", len(paths), "images") if progress else None
        on_step = progress("scratch", scratch_epochs, "epochs") if progress else None
        scratch_result = scratch_accuracy(
            dataset, backbone, epochs=scratch_epochs, seed=seed,
            device=resolve_device(device), on_image=on_image,
            on_epoch=(lambda _epoch, _loss: on_step(1)) if on_step else None)
        timings["scratch_s"] = time.perf_counter() - mark

    profile = block_profile(results)

    def remake(extra: Mapping[str, Any]) -> heuristics.Recommendation:
        return heuristics.recommend(
            summary_measures(results, scratch_result),
            profile=profile,
            blocks=backbone.blocks,
            head_modules=backbone.head_modules,
            num_images=len(dataset.samples),
            num_classes=len(dataset.classes),
            overrides={**dict(overrides or {}), **dict(extra)},
        )

    recommendation = remake({})
    validation = None
    if split is not None:
        from recommender.validate import validate_recommendation

        mark = time.perf_counter()
        validation = validate_recommendation(
            recommendation, remake, backbone, split, seeds=validate_seeds,
            epochs=validate_epochs, image_size=validate_size, seed=seed,
            device=resolve_device(device), search=search, search_db=search_db,
            fixed=tuple(overrides or {}), use_cache=use_cache, say=say, progress=progress,
            timings=timings)
        timings["validation_s"] = time.perf_counter() - mark
    timings["total_s"] = time.perf_counter() - start
    return Result(
        dataset=dataset,
        model=backbone.describe(),
        blocks=features.blocks,
        dims=features.dims(),
        probes=tuple(results),
        recommendation=recommendation,
        scratch=scratch_result,
        validation=validation,
        analysed="train" if (split is not None or layout) else "all",
        settings={"seed": seed, "max_per_class": max_per_class, "image_size": image_size,
                  "labels_csv": str(labels_csv) if labels_csv else None,
                  "scratch_epochs": scratch_epochs if scratch else None,
                  "overrides": {k: overrides[k] for k in sorted(overrides or {})},
                  "validate": validate,
                  "validate_seeds": validate_seeds if validate else None,
                  "search": search if search else None,
                  "analysed": "train" if (split is not None or layout) else "all"},
        timings=timings,
        features_from_cache=features.from_cache,
    )


def block_profile(results) -> dict[str, list[float]]:
    """Per-block values of every probe measured on all blocks (and ``NAME_spread``, the fold
    noise, where every block has one): the profile the heuristics' rules read."""
    profile = {}
    for p in results:
        if p.per_block and all(m is not None for m in p.values):
            profile[p.name] = [m.value for m in p.values]
            if all(m.spread is not None for m in p.values):  # fold noise, for the rules
                profile[f"{p.name}_spread"] = [m.spread for m in p.values]
    return profile


def summary_measures(results, scratch: ScratchResult | None = None) -> dict[str, float]:
    """Each probe's value at the penultimate features (or its single value), and the
    measured scratch accuracy when there is one: what the rules read."""
    measures = {p.name: p.summary.value for p in results if p.summary is not None}
    if scratch is not None:
        measures["scratch_accuracy"] = scratch.accuracy
    return measures


def run_probes(
    features: Features, labels: np.ndarray, jobs: int | None = None
) -> list[ProbeResult]:
    """Every registered probe: per block when it needs features, else once.

    Blocks are independent, so their probes run in ``jobs`` worker processes (default: one
    per CPU core; the probes' fits are single-threaded). A probe that cannot be computed on
    some input (``ProbeError``) is recorded as unavailable with its message, never as a
    made-up number.
    """
    registered = probes.list_probes()
    per_block = [p.name for p in registered if set(BLOCK_INPUTS) & set(p.needs)]
    bn_stats = features.bn_stats or (None,) * len(features.blocks)
    inputs = [{"features": f, "random_features": r, "bn_stats": b, "labels": labels}
              for f, r, b in zip(features.pretrained, features.random_init, bn_stats)]
    jobs = min(len(inputs), jobs or os.cpu_count() or 1)
    if jobs > 1:
        from joblib import Parallel, delayed

        # Widest blocks first, one per task: the costliest probes grow with the width, and a
        # worker that frees up takes the next block (without this, 5 equal blocks went 3 + 2).
        order = sorted(range(len(inputs)), key=lambda i: -features.pretrained[i].shape[1])
        done = Parallel(n_jobs=jobs, backend="loky", batch_size=1)(
            delayed(_measure)(per_block, inputs[i]) for i in order)
        columns = [done[order.index(i)] for i in range(len(inputs))]
    else:
        columns = [_measure(per_block, block) for block in inputs]
    once = _measure([p.name for p in registered if p.name not in per_block],
                    {"source_probs": features.source_probs, "labels": labels})
    results = []
    for probe in registered:
        if probe.name in per_block:
            cells = [column[probe.name] for column in columns]
            results.append(ProbeResult(probe.name, True, tuple(c[0] for c in cells),
                                       tuple(c[1] for c in cells)))
        else:
            value, error = once[probe.name]
            results.append(ProbeResult(probe.name, False, (value,), (error,)))
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
