"""A search seeded by the recommendation (the paper's "non-traditional hyperparameter search").

Optuna's TPE sampler tries settings inside the recommendation's own search ranges, on the
paper's axes (blocks re-initialised, where the lower/upper split is, the base learning rate
with the groups' ratios kept, the L2-SP weight, a head-only phase first), starting from the
recommended point itself. Each trial is a heuristics run with the trial's values as
overrides, so a change of one axis moves what depends on it (re-initialising a block moves
it into the head group). Trials are scored on the validation split; the test split only
reports. Trials are stored in an Optuna journal file as they finish: a rerun with the same
inputs skips them and goes on (resumable), and a trial cut short is run again. Without a
cache (``--no-cache``, or a cache folder that cannot be written) and without ``--search-db``,
the study is kept in memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from heuristics import Detail, Hyperparameters, Recommendation
from heuristics.types import plain
from recommender.cache import (
    cache_dir,
    digest,
    discard,
    files_identity,
    make_folder,
    warn_unwritable,
)
from recommender.errors import UsageError
from recommender.finetune.runs import Run, SettingResult, SettingRunner, lp_epochs_for
from recommender.finetune.training import TrainingDiverged

# The axes searched, and how each is drawn from the recommendation's range.
AXES = ("reinit_top_blocks", "split_block", "base_lr", "l2sp_weight", "lp_ft")


def space(details: Mapping[str, Detail], hp: Hyperparameters) -> dict[str, tuple[str, Any]]:
    """``{axis: (kind, bounds)}`` from the recommendation's ranges: ``int`` (lo, hi),
    ``log`` (lo, hi), ``choice`` (values). An axis whose range is one value is left out; a
    range always holds the recommended value itself (the search starts there)."""
    out: dict[str, tuple[str, Any]] = {}
    for axis in AXES:
        detail = details.get(axis)
        span = detail.range if detail is not None else None
        if span is None:
            continue
        value = getattr(hp, axis)
        if axis == "reinit_top_blocks":
            lo, hi = min(int(span[0]), value), max(int(span[-1]), value)
            if hi > lo:
                out[axis] = ("int", (lo, hi))
        elif axis in ("split_block", "lp_ft"):
            values = list(dict.fromkeys([*span, value]))
            if len(values) > 1:
                out[axis] = ("choice", values)
        else:
            lo, hi = float(span[0]), float(span[-1])
            if value:
                lo, hi = min(lo, value), max(hi, value)
            if axis == "l2sp_weight" and (lo <= 0.0 or not value):
                lo = lo if lo > 0.0 else hi / 100.0  # a log scale needs lo > 0 ...
                out["l2sp_on"] = ("choice", [True, False])  # ... and 0 is "off"
            if hi > lo > 0:
                out[axis] = ("log", (lo, hi))
    return out


def recommended_params(space_: Mapping[str, tuple[str, Any]], hp: Hyperparameters
                       ) -> dict[str, Any]:
    """The recommended point in the search's own parameters."""
    params: dict[str, Any] = {}
    for axis, (_kind, bounds) in space_.items():
        if axis == "l2sp_on":
            params[axis] = hp.l2sp_weight > 0
        elif axis == "l2sp_weight" and not hp.l2sp_weight:
            params[axis] = bounds[1]  # unused while l2sp_on is False
        else:
            params[axis] = getattr(hp, axis)
    return params


def to_overrides(params: Mapping[str, Any]) -> dict[str, Any]:
    """Search parameters -> heuristics overrides."""
    out = {k: v for k, v in params.items() if k != "l2sp_on"}
    if params.get("l2sp_on") is False:
        out["l2sp_weight"] = 0.0
    return out


def search_near(
    recommendation: Recommendation,
    remake: Callable[[Mapping[str, Any]], Recommendation],
    runner: SettingRunner,
    recommended: SettingResult,
    *,
    trials: int,
    storage: Path | None,
    fixed: Sequence[str],
    seed: int,
) -> tuple[SettingResult, dict[str, Any]]:
    """Search ``trials`` settings within ``recommendation``'s ranges, starting from it (its
    ``recommended`` runs are the first trial); the best by validation accuracy is trained on
    every seed of ``runner``. Returns that setting and the search's record for the JSON.

    The study lives in ``storage`` (default: a journal in the cache folder, keyed by the
    inputs, or memory when ``runner`` has no cache), so an interrupted search resumes;
    ``fixed`` names hyperparameters the user set, which are not searched.
    """
    hp = recommendation.hyperparameters
    split, budget, first_seed = runner.split, runner.budget, runner.seeds[0]
    space_ = {k: v for k, v in space(recommendation.details, hp).items()
              if k not in fixed and not (k == "l2sp_on" and "l2sp_weight" in fixed)}
    start = recommended_params(space_, hp)
    # Everything a trial's scores depend on: the images (and their contents), the split,
    # the recommended point (the user's --set values included), the model, the budget.
    key = digest({"samples": [[str(p), c] for p, c in split.samples],
                  "files": files_identity(p for p, _ in split.samples),
                  "train": split.train.tolist(), "val": split.val.tolist(),
                  "test": split.test.tolist(), "classes": list(split.classes),
                  "model": runner.backbone.name, "weights": runner.backbone.weights_id,
                  "hp": plain(hp), "budget": budget.to_dict(), "seed": first_seed,
                  "space": space_, "fixed": sorted(fixed), "device": runner.device,
                  "torch": torch.__version__})
    if storage:
        storage = Path(storage)
    elif runner.use_cache:
        storage = _cache_journal(cache_dir() / "search" / f"{key}.journal")

    def evaluate(extra: dict[str, Any]) -> tuple[float, float]:
        try:
            run = runner.trial(remake(extra).hyperparameters)
        except TrainingDiverged:  # a learning rate too high: the worst score, not an end
            return 0.0, 0.0
        return run.val_accuracy, run.test_accuracy

    where = f"resumable: {storage}" if storage else "kept in memory: no cache"
    runner.say(f"Searching {trials} settings within the recommended ranges ({where})")
    mark = time.perf_counter()
    first = recommended.runs[0]
    progress = runner.progress
    on_trial_bar = progress("search", trials, "trials") if progress else None
    found = run_search(
        trials, space_=space_, start=start, evaluate=evaluate, storage=storage,
        study_name=key, seed=seed, known=[(start, first.val_accuracy, first.test_accuracy)],
        on_trial=(lambda _d, _t: on_trial_bar(1)) if on_trial_bar else None)
    runner.timings["search_s"] = time.perf_counter() - mark
    best = best_trial(found)
    if best["number"] == found[0]["number"]:  # the recommended point itself
        best_result = SettingResult("best_found", hp, recommended.runs, dict(best["overrides"]))
    else:
        best_hp = remake(best["overrides"]).hyperparameters
        done = {first_seed: Run(first_seed, best["val_accuracy"], best["test_accuracy"],
                                lp_epochs_for(best_hp, budget))}
        best_result = runner.train("best_found", best_hp, done=done,
                                   overrides=best["overrides"])
    info = {"trials": found, "space": {k: [kind, list(b) if isinstance(b, tuple) else b]
                                       for k, (kind, b) in space_.items()},
            "best_trial": best["number"], "storage": str(storage) if storage else None,
            "sampler": "optuna TPESampler", "objective": f"validation accuracy, seed {first_seed}"}
    return best_result, info


def _cache_journal(path: Path) -> Path | None:
    """``path``, the default journal in the cache folder, made ready for Optuna: a damaged
    one is discarded (it is only a cache); None (a warning, the study in memory) when the
    folder cannot be written."""
    try:
        _check_journal(path)
    except UsageError:
        discard(path, "search journal", "its first line is not an Optuna journal entry")
    try:
        make_folder(path.parent)
        path.open("a").close()
    except OSError as exc:
        warn_unwritable(path, "search trials", exc)
        return None
    return path


def _suggest(trial, space_: Mapping[str, tuple[str, Any]]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for axis, (kind, bounds) in space_.items():
        if kind == "int":
            params[axis] = trial.suggest_int(axis, *bounds)
        elif kind == "log":
            params[axis] = trial.suggest_float(axis, *bounds, log=True)
        else:
            params[axis] = trial.suggest_categorical(axis, bounds)
    return params


def run_search(
    n_trials: int,
    *,
    space_: Mapping[str, tuple[str, Any]],
    start: Mapping[str, Any],
    evaluate: Callable[[dict[str, Any]], tuple[float, float]],
    storage: Path | None,
    study_name: str,
    seed: int,
    known: Sequence[tuple[Mapping[str, Any], float, float]] = (),
    on_trial: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Run trials until ``n_trials`` have finished; return every finished trial in order as
    ``{"number", "params", "overrides", "val_accuracy", "test_accuracy"}``.

    ``evaluate(overrides) -> (val, test)``; the study maximises ``val``. ``start`` (the
    recommended point) is the first trial; ``known`` results are recorded without training.
    ``on_trial(done, total)`` after each. ``storage`` None keeps the study in memory.
    """
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    if n_trials < 1:
        raise UsageError(f"--search {n_trials} must be at least 1.")
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a trial cut by Ctrl-C: no traceback
    try:
        if storage is None:
            journal = optuna.storages.InMemoryStorage()
        else:
            _check_journal(storage)  # before Optuna appends to a file that is not its own
            storage.parent.mkdir(parents=True, exist_ok=True)
            journal = JournalStorage(JournalFileBackend(str(storage)))
        study = optuna.create_study(study_name=study_name, storage=journal,
                                    direction="maximize", load_if_exists=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:  # unreadable or not a journal
        raise UsageError(f"--search-db {storage} cannot be used as a search journal: {exc}",
                         "Point --search-db at a new file (or one an earlier --search "
                         "wrote).") from None
    distributions = _distributions(space_)
    # A trial left running by an interrupted run is marked failed and queued again.
    waiting = [t.params for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))]
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        journal.set_trial_state_values(trial._trial_id, TrialState.FAIL)  # its storage id
        if trial.params not in waiting:
            study.enqueue_trial(trial.params)
            waiting.append(trial.params)
    finished = lambda: study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))  # noqa: E731
    if not study.get_trials(deepcopy=False):
        for params, val, test in known:
            study.add_trial(optuna.trial.create_trial(
                params=dict(params), distributions=distributions, value=val,
                user_attrs={"test_accuracy": test, "overrides": to_overrides(params)}))
        if not known:
            study.enqueue_trial(dict(start))
    # A fresh sampler seed per resume point: the same history gives the same next draws.
    sampler = optuna.samplers.TPESampler(seed=seed + len(study.get_trials(deepcopy=False)))
    study.sampler = sampler

    def objective(trial) -> float:
        params = _suggest(trial, space_)
        overrides = to_overrides(params)
        val, test = evaluate(overrides)
        trial.set_user_attr("test_accuracy", test)
        trial.set_user_attr("overrides", overrides)
        return val

    while len(finished()) < n_trials:
        study.optimize(objective, n_trials=1)
        if on_trial is not None:
            on_trial(len(finished()), n_trials)
    trials = sorted(finished(), key=lambda t: t.number)[:n_trials]
    return [{"number": t.number, "params": dict(t.params),
             "overrides": dict(t.user_attrs.get("overrides", {})),
             "val_accuracy": float(t.value), "test_accuracy": float(t.user_attrs["test_accuracy"])}
            for t in trials]


def _check_journal(path: Path) -> None:
    """An existing, non-empty file must be an Optuna journal (JSON lines with an op code)."""
    import json

    if not path.exists() or path.stat().st_size == 0:
        return
    try:
        with path.open(encoding="utf-8") as handle:
            first = json.loads(handle.readline())
        ok = isinstance(first, dict) and "op_code" in first
    except (OSError, UnicodeDecodeError, ValueError):
        ok = False
    if not ok:
        raise UsageError(f"--search-db {path} cannot be used as a search journal: it is not "
                         "one (its first line is not an Optuna journal entry).",
                         "Point --search-db at a new file (or one an earlier --search "
                         "wrote); nbtl leaves this one as it is.")


def _distributions(space_: Mapping[str, tuple[str, Any]]) -> dict[str, Any]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out = {}
    for axis, (kind, bounds) in space_.items():
        if kind == "int":
            out[axis] = IntDistribution(*bounds)
        elif kind == "log":
            out[axis] = FloatDistribution(*bounds, log=True)
        else:
            out[axis] = CategoricalDistribution(bounds)
    return out


def best_trial(trials: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The highest validation accuracy; on a tie, the earliest (the recommended point first)."""
    return max(trials, key=lambda t: (t["val_accuracy"], -t["number"]))
