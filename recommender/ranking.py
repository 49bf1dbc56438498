"""Ranking candidate backbones on one dataset: which pre-trained model to fine-tune.

:func:`rank` scans the dataset once, then for every model extracts its features (cached per
model), runs the probes and makes its recommendation, exactly as :func:`recommender.recommend`
does for one. The models are ordered by one measure at the penultimate block (the
*criterion*): LogME by default, the score that ranked fine-tuned accuracy best among the
cheap measures in the literature's model-selection benchmarks (You et al. 2021, LogME;
Pándy et al. 2022; Huang et al. 2022, SFDA). A model that cannot be loaded gets a row with
its error and does not stop the others.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from recommender.config import Options
from recommender.errors import ModelUnavailableError, UsageError
from recommender.pipeline import SCHEMA_VERSION, Progress, Result, analyse_scanned, scan

# --rank-by NAME -> the probe whose value at the penultimate block ranks the models.
CRITERIA = {"logme": "logme", "linear_probe": "linear_probe_accuracy",
            "knn": "knn_accuracy", "h_score": "h_score"}
DEFAULT_CRITERION = "logme"
WHY = {
    "logme": "LogME (the evidence of a Bayesian linear model on the features) is the default: "
             "among the cheap scores it ranked fine-tuned accuracy best in the literature's "
             "model-selection benchmarks (You et al. 2021; Pandy et al. 2022; Huang et al. "
             "2022), needs no hyperparameter and has no fold noise.",
    "linear_probe": "linear-probe accuracy (cross-validated logistic regression): what a "
                    "frozen backbone reaches with a trained head; its fold spread is the noise.",
    "knn": "k-nearest-neighbour accuracy (leave-one-out): how well the classes cluster "
           "in the feature space; no noise estimate.",
    "h_score": "H-score (Bao et al. 2019): the ratio of between-class to total feature "
               "covariance, a fast score with no noise estimate.",
}


@dataclass(frozen=True)
class Candidate:
    """One model of a ranking: its measures, cost and recommendation, or why it failed."""

    model: str
    weights: str | None = None  # the --weights file given for it, if any
    result: Result | None = None
    error: str | None = None
    images_per_s: float | None = None  # forward cost measured this run (None: cached)
    rank: int | None = None
    tie_with_previous: bool = False

    def measure(self, criterion: str) -> tuple[float | None, float | None]:
        """The criterion's value at the penultimate block and its fold spread (or None)."""
        if self.result is None:
            return None, None
        probe = next((p for p in self.result.probes if p.name == CRITERIA[criterion]), None)
        summary = probe.summary if probe is not None else None
        if summary is None or not math.isfinite(summary.value):
            return None, None
        return float(summary.value), summary.spread

    def to_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {"model": self.model, "rank": self.rank,
                               "weights": str(self.weights) if self.weights else None}
        for key in CRITERIA:
            value, spread = self.measure(key)
            row[key] = value
            row[f"{key}_spread"] = spread
        model = self.result.model if self.result is not None else {}
        row["params_m"] = round(model["num_params"] / 1e6, 3) if model else None
        row["input_size"] = model["input_size"][-1] if model else None
        row["images_per_s"] = self.images_per_s
        row["forward_cost"] = ("measured" if self.images_per_s is not None
                               else "cached" if self.result is not None else None)
        row["tie_with_previous"] = self.tie_with_previous
        row["error"] = self.error
        return row


@dataclass(frozen=True)
class Ranking:
    """Every candidate in rank order (failed ones last), and what ranked them."""

    criterion: str
    candidates: tuple[Candidate, ...]
    recommend_all: bool = False
    timings: Mapping[str, float] = field(default_factory=dict, compare=False)

    @property
    def ranked(self) -> tuple[Candidate, ...]:
        return tuple(c for c in self.candidates if c.rank is not None)

    @property
    def top(self) -> Candidate:
        return self.ranked[0]

    @property
    def recommended(self) -> tuple[Candidate, ...]:
        """The candidates whose recommendation is shown: the top one, or every loaded one."""
        return self.ranked if self.recommend_all else self.ranked[:1]

    def ties(self) -> list[tuple[str, str]]:
        """Neighbours in the order whose criterion values are within the measure's noise."""
        ranked = self.ranked
        return [(ranked[i - 1].model, ranked[i].model) for i in range(1, len(ranked))
                if ranked[i].tie_with_previous]

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of ``nbtl-recommend --model A --model B``: the top model's whole
        document (as for one model), plus ``ranking`` (one row per model, rank order) and
        ``ranking_criterion``; with ``--recommend-all``, ``recommendations`` holds every loaded
        model's recommendation by name."""
        document = self.top.result.to_dict()
        document["schema_version"] = SCHEMA_VERSION
        document["ranking"] = [c.to_dict() for c in self.candidates]
        document["ranking_criterion"] = {
            "name": self.criterion, "probe": CRITERIA[self.criterion],
            "block": "penultimate (the top block's output)", "higher_is_better": True,
            "why": WHY[self.criterion], "ties": [list(t) for t in self.ties()],
            "tie_rule": TIE_RULE}
        if self.recommend_all:
            document["recommendations"] = {
                c.model: c.result.recommendation.to_dict() for c in self.recommended}
        document["timings"] = {**document["timings"],
                               **{k: round(v, 3) for k, v in self.timings.items()}}
        return document


TIE_RULE = ("neighbours tie when their values differ by no more than the larger of their "
            "fold spreads (the linear probe has one); LogME, kNN and H-score have no noise "
            "estimate, so only equal values tie")


def parse_models(models: Sequence[str] | str | None) -> list[str | None]:
    """``--model`` values (repeatable, or comma lists) -> model names in order, without
    repeats; none given: the embedded default (``[None]``)."""
    if models is None:
        return [None]
    texts = [models] if isinstance(models, str) else list(models)
    names = [n.strip() for t in texts for n in t.split(",")]
    if any(not n for n in names):
        raise UsageError(f"--model {','.join(texts)!r} has an empty model name.",
                         "Give timm names, e.g. --model tf_efficientnet_lite0 "
                         "--model tf_efficientnet_lite1 (or a comma list).")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UsageError(f"--model {repeated[0]} is given twice.", "Give each model once.")
    return names or [None]


def pair_weights(models: Sequence[str | None], weights: Sequence[str | Path] | str | Path | None
                 ) -> dict[str | None, Path]:
    """``--weights`` values -> the file of each model. With one model, ``--weights PATH``
    (today's form); with several, ``--weights NAME=PATH`` for each model that needs one."""
    if weights is None:
        return {}
    texts = [weights] if isinstance(weights, (str, Path)) else list(weights)
    if len(models) == 1:
        if len(texts) > 1:
            raise UsageError("--weights is given twice for one model.", "Give one file.")
        text = str(texts[0])
        name, sep, rest = text.partition("=")
        if sep and name == (models[0] or "") and not Path(text).exists():
            return {models[0]: Path(rest)}
        return {models[0]: Path(text)}
    pairs: dict[str | None, Path] = {}
    for text in map(str, texts):
        name, sep, rest = text.partition("=")
        if not sep or name not in models:
            raise UsageError(
                f"--weights {text}: with several models, say which model the file is for.",
                f"Write --weights NAME=PATH with NAME one of {', '.join(map(str, models))}.")
        if name in pairs:
            raise UsageError(f"--weights {name}= is given twice.", "Give one file per model.")
        pairs[name] = Path(rest)
    return pairs


def rank(
    path: str | Path,
    models: Sequence[str] | str | None = None,
    *,
    weights: Sequence[str | Path] | str | Path | Mapping[str, str | Path] | None = None,
    rank_by: str = DEFAULT_CRITERION,
    recommend_all: bool = False,
    on_stage: Callable[[str], None] | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> Ranking:
    """Rank pre-trained ``models`` (timm names; ``tf_efficientnet_lite0/1/2`` load offline
    from their packages) on the image dataset at ``path`` by ``rank_by`` (``logme``,
    ``linear_probe``, ``knn`` or ``h_score`` at the penultimate block).

    ``weights`` maps a model to a local weights file (a dict, or ``NAME=PATH`` strings); the
    other keyword arguments are :func:`recommender.recommend`'s (``max_per_class``, ``seed``,
    ``image_size``, ...), except ``model``, ``weights``, ``validate`` and ``search``: fine-tune
    the chosen model with a second run. The dataset is scanned once; every model is analysed
    on the same images.

    Raises
    ------
    recommender.errors.NbtlError
        ``UsageError`` for a bad option, ``DatasetError`` for the dataset, and
        ``ModelUnavailableError`` when no model could be loaded (one that fails while others
        load is a row with its error instead).
    """
    if rank_by not in CRITERIA:
        raise UsageError(f"--rank-by {rank_by!r} is not a ranking criterion.",
                         f"Use one of {', '.join(CRITERIA)}.")
    for name in ("model", "weights_file"):
        if name in options:
            raise TypeError(f"rank() takes models=[...], not {name}=")
    names = parse_models(models)
    if isinstance(weights, Mapping):
        files = {k: Path(v) for k, v in weights.items()}
        unknown = sorted(set(files) - set(names))
        if unknown:
            raise UsageError(f"weights for {unknown[0]}, which is not among the models.",
                             "Give weights only for models in models=[...].")
    else:
        files = pair_weights(names, weights)
    base = Options.from_kwargs(**options)
    if base.validation is not None:
        raise UsageError("--validate and --search fine-tune one model, not a ranking.",
                         "Rank first, then run nbtl-recommend --model TOP --validate.")
    base.check()
    from recommender.models.features import resolve_device

    device = resolve_device(base.device)
    say = on_stage or (lambda _text: None)
    start = time.perf_counter()
    say("Scanning the dataset")
    dataset, split, own_split = scan(Path(path), base)
    scan_s = time.perf_counter() - start
    candidates = []
    for name in names:
        label = name or _default_name()
        say(f"Model {label}")
        mark = time.perf_counter()
        options_k = replace(base, model=name, weights=files.get(name))
        timings: dict[str, float] = {"scan_s": scan_s}
        try:
            result = analyse_scanned(dataset, split, own_split, options_k, device, say=say,
                                     progress=progress, timings=timings, start=mark)
        except ModelUnavailableError as exc:
            error = " ".join(filter(None, (exc.message, exc.hint)))
            candidates.append(Candidate(label, files.get(name), error=error))
            continue
        speed = None
        if not result.features_from_cache and timings.get("features_s"):
            speed = round(len(dataset.samples) / timings["features_s"], 1)
        candidates.append(Candidate(label, files.get(name), result, images_per_s=speed))
    if not any(c.result is not None for c in candidates):
        raise ModelUnavailableError(
            "None of the models could be loaded: "
            + "; ".join(f"{c.model}: {c.error}" for c in candidates) + ".",
            "Fix one of the errors above, or rank models that load offline "
            "(tf_efficientnet_lite0/1/2).")
    return Ranking(rank_by, order(candidates, rank_by), recommend_all,
                   {"ranking_total_s": time.perf_counter() - start})


def order(candidates: Sequence[Candidate], criterion: str) -> tuple[Candidate, ...]:
    """Candidates by the criterion, best first (ties in the given order), each with its
    rank and whether it ties the one above; failed or unmeasured ones last, without a rank."""
    scored = [(c, *c.measure(criterion)) for c in candidates]
    good = sorted((s for s in scored if s[1] is not None), key=lambda s: -s[1])
    out = []
    for i, (c, value, spread) in enumerate(good):
        tie = False
        if i:
            _, above, above_spread = good[i - 1]
            noise = max(spread or 0.0, above_spread or 0.0)
            tie = above - value <= noise
        out.append(replace(c, rank=i + 1, tie_with_previous=tie))
    out += [replace(c, rank=None, error=c.error or f"no {criterion} value")
            for c, value, _ in scored if value is None]
    return tuple(out)


def _default_name() -> str:
    from recommender.models.backbones import DEFAULT_MODEL

    return DEFAULT_MODEL
