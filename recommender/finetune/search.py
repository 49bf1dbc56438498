"""A search seeded by the recommendation (the paper's "non-traditional hyperparameter search").

Optuna's TPE sampler tries settings inside the recommendation's own search ranges, on the
paper's axes (blocks re-initialised, where the lower/upper split is, the base learning rate
with the groups' ratios kept, the L2-SP weight, a head-only phase first), starting from the
recommended point itself. Each trial is a heuristics run with the trial's values as
overrides, so a change of one axis moves what depends on it (re-initialising a block moves
it into the head group). Trials are scored on the validation split; the test split only
reports. Trials are stored in an Optuna storage as they finish (a journal file, or a database
for workers on several machines: :mod:`.storage`): a rerun with the same inputs skips them and
goes on (resumable), other processes may join the study (``--role worker``), and a trial whose
process died is run again. With ``--prune`` a successive-halving pruner stops weak trials
after an early epoch. Without a cache (``--no-cache``, or a cache folder that cannot be
written) and without ``--search-db``/``--storage``, the study is kept in memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from heuristics import Detail, Hyperparameters, Recommendation
from heuristics.types import plain
from recommender.cache import (
    cache_dir,
    digest,
    discard,
    file_digest,
    make_folder,
    warn_unwritable,
)
from recommender.errors import UsageError
from recommender.finetune.runs import Run, SettingResult, SettingRunner, lp_epochs_for
from recommender.finetune.storage import GRACE_S, HEARTBEAT_S, describe, kind_of, open_storage
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
    recommended: SettingResult | None,
    *,
    trials: int,
    storage: Path | str | None,
    fixed: Sequence[str],
    seed: int,
    study: str | None = None,
    prune: bool = False,
    heartbeat: tuple[int, int] = (HEARTBEAT_S, GRACE_S),
) -> tuple[SettingResult | None, dict[str, Any]]:
    """Search ``trials`` settings within ``recommendation``'s ranges, starting from it (its
    ``recommended`` runs are the first trial); the best by validation accuracy is trained on
    every seed of ``runner``. Returns that setting and the search's record for the JSON.

    The study ``study`` (default: a name made from the inputs' contents) lives in ``storage``
    (a journal file or a database URL; default: a journal in the cache folder, or memory when
    ``runner`` has no cache), so an interrupted search resumes and other processes may join
    it. ``recommended`` None: a worker (``--role worker``), which only runs trials and returns
    ``(None, record)`` once the study has ``trials`` finished ones. ``fixed`` names
    hyperparameters the user set, which are not searched; ``prune`` stops weak trials early.
    """
    hp = recommendation.hyperparameters
    budget, first_seed = runner.budget, runner.seeds[0]
    space_ = {k: v for k, v in space(recommendation.details, hp).items()
              if k not in fixed and not (k == "l2sp_on" and "l2sp_weight" in fixed)}
    start = recommended_params(space_, hp)
    name = study or study_name(runner, hp, space_, fixed, prune)
    if storage:
        storage = Path(storage) if kind_of(storage) == "journal" else str(storage)
    elif runner.use_cache:
        storage = _cache_journal(cache_dir() / "search" / f"{name}.journal")

    def evaluate(extra: dict[str, Any], report=None) -> tuple[float, float]:
        # Trial 0 is the recommendation itself, not a re-derivation of it from overrides.
        trial_hp = hp if extra == to_overrides(start) else remake(extra).hyperparameters
        try:
            run = runner.trial(trial_hp, report=report)
        except TrainingDiverged:  # a learning rate too high: the worst score, not an end
            return 0.0, 0.0
        return run.val_accuracy, run.test_accuracy

    where = f"study {name} in {describe(storage)}" if storage else "kept in memory: no cache"
    runner.say(f"Searching {trials} settings within the recommended ranges ({where})")
    mark = time.perf_counter()
    progress = runner.progress
    on_trial_bar = progress("search", trials, "trials") if progress else None
    known = [] if recommended is None else \
        [(start, recommended.runs[0].val_accuracy, recommended.runs[0].test_accuracy)]
    found = run_search(
        trials, space_=space_, start=start, evaluate=evaluate, storage=storage,
        study_name=name, seed=seed, known=known, prune=prune, heartbeat=heartbeat,
        say=runner.say, on_trial=(lambda _d, _t: on_trial_bar(1)) if on_trial_bar else None)
    runner.timings["search_s"] = time.perf_counter() - mark
    best = best_trial(found)
    info = {"trials": found, "space": {k: [kind, list(b) if isinstance(b, tuple) else b]
                                       for k, (kind, b) in space_.items()},
            "best_trial": best["number"], "storage": describe(storage) if storage else None,
            "study": name, "sampler": "optuna TPESampler",
            "pruner": "optuna SuccessiveHalvingPruner (rungs at epochs 1, 3, 9; top third "
                      "goes on)" if prune else None,
            "objective": f"validation accuracy, seed {first_seed}"}
    if recommended is None:
        return None, info
    if best["number"] == found[0]["number"]:  # the recommended point itself
        best_result = SettingResult("best_found", hp, recommended.runs, dict(best["overrides"]))
    else:
        best_hp = remake(best["overrides"]).hyperparameters
        done = {first_seed: Run(first_seed, best["val_accuracy"], best["test_accuracy"],
                                lp_epochs_for(best_hp, budget))}
        best_result = runner.train("best_found", best_hp, done=done,
                                   overrides=best["overrides"])
    return best_result, info


def study_name(runner: SettingRunner, hp: Hyperparameters, space_: Mapping[str, Any],
               fixed: Sequence[str], prune: bool) -> str:
    """``nbtl-<key>``: everything a trial's scores depend on, the same on every machine that
    holds the same images: their contents and paths relative to the dataset (never where it
    is mounted), the split, the recommended point (the user's --set values included), the
    model, the budget, the seed, the space and whether trials are pruned. The device and the
    torch version are left out, so that workers on different GPUs join one study."""
    split = runner.split
    paths = [p for p, _ in split.samples]
    key = digest({"files": content_identity(paths), "codes": [c for _, c in split.samples],
                  "train": split.train.tolist(), "val": split.val.tolist(),
                  "test": split.test.tolist(), "classes": list(split.classes),
                  "model": runner.backbone.name, "weights": runner.backbone.weights_id,
                  "hp": plain(hp), "budget": runner.budget.to_dict(), "seed": runner.seeds[0],
                  "space": space_, "fixed": sorted(fixed), "prune": prune})
    return f"nbtl-{key}"


def content_identity(paths: Sequence[Path]) -> list[list[str]]:
    """``[relative path, sha256]`` per file, relative to the files' common folder: the same
    on every machine that holds the same files, wherever they are mounted."""
    import os

    if not paths:
        return []
    root = os.path.commonpath([str(p) for p in paths]) if len(paths) > 1 \
        else str(Path(paths[0]).parent)
    return [[Path(os.path.relpath(p, root)).as_posix(), file_digest(Path(p))] for p in paths]


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
    evaluate: Callable[..., tuple[float, float]],
    storage: Path | str | None,
    study_name: str,
    seed: int,
    known: Sequence[tuple[Mapping[str, Any], float, float]] = (),
    on_trial: Callable[[int, int], None] | None = None,
    prune: bool = False,
    heartbeat: tuple[int, int] = (HEARTBEAT_S, GRACE_S),
    say: Callable[[str], None] = lambda _text: None,
) -> list[dict[str, Any]]:
    """Work on the study ``study_name`` in ``storage`` until it has ``n_trials`` finished
    trials (complete or pruned); return them in order as ``{"number", "state", "params",
    "overrides", "val_accuracy", "test_accuracy"}``.

    ``evaluate(overrides) -> (val, test)`` (with ``prune``: ``evaluate(overrides,
    report=report)``, where ``report(epoch, val)`` may raise ``optuna.TrialPruned``); the
    study maximises ``val``. Any number of processes may call this on one study at once (a
    journal file on one machine, a database for several): the process that creates the study
    makes ``start`` (the recommended point) trial 0, recorded from ``known`` without training
    when given; a trial is started only while fewer than ``n_trials`` are finished, running or
    queued, so none is trained twice; a trial whose process died (no heartbeat for
    ``heartbeat[1]`` seconds) is queued again (:mod:`.storage`). ``on_trial(done, total)``
    after each trial of this process. ``storage`` None keeps the study in memory.
    """
    import optuna
    from optuna.trial import TrialState

    if n_trials < 1:
        raise UsageError(f"--search {n_trials} must be at least 1.")
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a trial cut by Ctrl-C: no traceback
    if storage is not None and kind_of(storage) == "journal":
        _check_journal(Path(storage))  # before Optuna appends to a file that is not its own
    try:
        backend = open_storage(storage, heartbeat_s=heartbeat[0], grace_s=heartbeat[1])
        study, created = _create_or_load(optuna, backend, study_name)
    except (OSError, ValueError, KeyError, TypeError) as exc:  # unreadable or not a journal
        raise UsageError(f"--search-db {storage} cannot be used as a search journal: {exc}",
                         "Point --search-db at a new file (or one an earlier --search "
                         "wrote).") from None
    distributions = _distributions(space_)
    if created:  # trial 0, exactly once: only the process that created the study adds it
        for params, val, test in known[:1]:
            study.add_trial(optuna.trial.create_trial(
                params=dict(params), distributions=distributions, value=val,
                user_attrs={"test_accuracy": test, "overrides": to_overrides(params)}))
        if not known:
            study.enqueue_trial(dict(start))
        study.set_user_attr("nbtl:ready", True)
    else:
        _wait_for_trial_zero(study, study_name, say)
    study.sampler = make_sampler(seed)
    if prune:
        study.pruner = make_pruner()

    def objective(trial) -> float:
        if _surplus(study, trial, n_trials):
            raise _Surplus
        params = _suggest(trial, space_)
        overrides = to_overrides(params)
        if not prune:
            val, test = evaluate(overrides)
        else:
            def report(epoch: int, value: float) -> None:
                trial.report(value, epoch)
                if trial.should_prune():
                    trial.set_user_attr("overrides", overrides)
                    raise optuna.TrialPruned(f"pruned after epoch {epoch}")
            val, test = evaluate(overrides, report=report)
        trial.set_user_attr("test_accuracy", test)
        trial.set_user_attr("overrides", overrides)
        return val

    done = (TrialState.COMPLETE, TrialState.PRUNED)
    planned = (*done, TrialState.RUNNING, TrialState.WAITING)
    count = lambda states: len(study.get_trials(deepcopy=False, states=states))  # noqa: E731
    waited = False
    while count(done) < n_trials:
        _fail_stale(study)
        if count((TrialState.WAITING,)) == 0 and count(planned) >= n_trials:
            if not waited:  # the last trials run elsewhere: wait for them (or their heartbeat)
                say(f"Waiting for {count((TrialState.RUNNING,))} trial(s) running in other "
                    "processes")
                waited = True
            time.sleep(min(2.0, heartbeat[0]))
            continue
        waited = False
        study.optimize(objective, n_trials=1, catch=(_Surplus,))
        if on_trial is not None:
            on_trial(count(done), n_trials)
    trials = sorted(study.get_trials(deepcopy=False, states=done), key=lambda t: t.number)
    return [_trial_record(t) for t in trials[:n_trials]]


def make_sampler(seed: int):
    """Optuna's TPE sampler, its random state seeded with ``seed`` + the trial's number before
    each trial: the same history gives the same next draws (a resumed search goes on as an
    uninterrupted one would), and two workers drawing at the same moment draw different
    points. ``constant_liar``: trials still running count as bad, so concurrent workers do not
    all sample near the same promising point (Optuna's advice for parallel TPE)."""
    from optuna.samplers import TPESampler

    class NumberedTPESampler(TPESampler):
        def before_trial(self, study, trial) -> None:
            self._rng.rng.seed(seed + trial.number)
            self._random_sampler._rng.rng.seed(seed + trial.number)
            super().before_trial(study, trial)

    return NumberedTPESampler(seed=seed, constant_liar=True)


def make_pruner():
    """Successive halving (ASHA, Li et al. 2020, "A System for Massively Parallel
    Hyperparameter Tuning"): rungs at epoch 1, 3, 9, ...; a trial goes on past a rung only if
    its validation accuracy there is in the top third of the trials that reached it. Chosen over
    Hyperband because a search here has tens of trials, which Hyperband's brackets would split
    into groups too small to compare; ASHA never waits for other trials, so workers stay busy."""
    import optuna

    return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3,
                                                  min_early_stopping_rate=0)


def _create_or_load(optuna, backend, study_name: str):
    """The study and whether this call created it (a race between processes has one winner:
    the storage refuses a second study of one name)."""
    try:
        return optuna.create_study(study_name=study_name, storage=backend,
                                   direction="maximize"), True
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(study_name=study_name, storage=backend), False


def _wait_for_trial_zero(study, study_name: str, say, timeout_s: float = 120.0) -> None:
    """A process that joined a study another one is creating waits until trial 0 is in."""
    deadline = time.monotonic() + timeout_s
    said = False
    while not study.get_trials(deepcopy=False):
        if time.monotonic() > deadline:
            raise UsageError(f"The search study {study_name} has no trial {timeout_s:.0f} s "
                             "after it was created (its creator died before adding the "
                             "recommended point).",
                             "Delete the study (optuna delete-study) and start again.")
        if not said:
            say(f"Waiting for the process that created the study {study_name}")
            said = True
        time.sleep(0.5)


def _fail_stale(study) -> None:
    """Trials whose process stopped beating: failed and queued again (Optuna does this at the
    start of each trial too; here also while waiting for the last ones)."""
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


class _Surplus(Exception):
    """A trial started by two processes at once beyond the N asked for: failed, never run."""


def _surplus(study, trial, n_trials: int) -> bool:
    """Whether ``trial``, freshly sampled, is one too many: ``n_trials`` finished, running or
    queued trials came before it (another process started one in the same instant). A queued
    trial (trial 0, a retried one) is never surplus. The trial is marked and left failed."""
    from optuna.trial import TrialState

    attrs = study._storage.get_trial_system_attrs(trial._trial_id)
    if "fixed_params" in attrs or "failed_trial" in attrs:
        return False
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    before = [t for t in study.get_trials(deepcopy=False, states=states)
              if t.number < trial.number]
    if len(before) < n_trials:
        return False
    trial.set_user_attr("nbtl:surplus", True)
    return True


def _trial_record(t) -> dict[str, Any]:
    from optuna.trial import TrialState

    pruned = t.state == TrialState.PRUNED
    last = max(t.intermediate_values) if t.intermediate_values else None
    val = t.intermediate_values[last] if pruned and last is not None else t.value
    return {"number": t.number, "state": "pruned" if pruned else "complete",
            "params": dict(t.params), "overrides": dict(t.user_attrs.get("overrides", {})),
            "val_accuracy": float(val) if val is not None else 0.0,
            "test_accuracy": None if pruned else float(t.user_attrs["test_accuracy"]),
            "epochs": last if pruned else None,
            "retried": t.system_attrs.get("failed_trial")}


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
    """The complete trial with the highest validation accuracy; on a tie, the earliest (the
    recommended point first). Pruned trials never count: their accuracy is an early epoch's."""
    complete = [t for t in trials if t.get("state", "complete") == "complete"]
    return max(complete, key=lambda t: (t["val_accuracy"], -t["number"]))
