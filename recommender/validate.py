"""Does the recommendation pay off? Fine-tune it against the binary default, same budget.

Both settings train on the same training split, with the same budget (epochs, resolution,
batch size, augmentation, label smoothing, warm-up and schedule) and the same seeds; they
differ only on the paper's axes: which layers are re-initialised, the learning rate of each
layer group, the L2-SP/L2 mix, and a head-only phase first (LP-FT). Each seed is one paired
run of both; the report gives held-out test accuracy, mean and spread over the seeds.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from heuristics.types import plain
from recommender.errors import DatasetError, UsageError

if TYPE_CHECKING:
    from recommender.backbones import Backbone
    from recommender.training import ImageTensors

# The default budget. 20 epochs at 128 px: on 2 CPU cores the default backbone fine-tunes at
# about 35 images/s at 128 px (batch 16), so a 10-class dataset of 50 images per class (300
# training images) takes about 3 minutes per run; 2 seeds x 2 settings plus the analysis took 12.5
# minutes on real Fashion-MNIST (the README's "Validating a recommendation" section).
VALIDATE_EPOCHS = 20
VALIDATE_IMAGE_SIZE = 128
VALIDATE_SEEDS = 2
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)  # train, validation, test, per class
VAL_FRACTION_OF_TRAIN = 0.25  # with split folders but no validation folder
MIN_PER_CLASS = 3  # one image per class in each split
# The binary default (rules.md): every layer transferred, new head, one lr, L2 toward zero.
DEFAULT_LR = 0.01
DEFAULT_WEIGHT_DECAY = 1e-4
SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}


@dataclass(frozen=True)
class Budget:
    """What both settings share."""

    epochs: int = VALIDATE_EPOCHS
    image_size: int = VALIDATE_IMAGE_SIZE
    batch_size: int = 16
    label_smoothing: float = 0.1
    warmup_fraction: float = 0.1
    schedule: str = "cosine"

    def to_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "image_size": self.image_size,
                "batch_size": self.batch_size, "label_smoothing": self.label_smoothing,
                "warmup_fraction": self.warmup_fraction, "schedule": self.schedule,
                "augmentation": "random-resized crop (area 0.35-1) and horizontal flip"}


@dataclass(frozen=True)
class Split:
    """Indices into one list of samples: train, validation and test."""

    samples: tuple[tuple[Path, int], ...]
    classes: tuple[str, ...]
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    source: str  # "stratified" or "folders"

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "n_train": int(self.train.size),
                "n_val": int(self.val.size), "n_test": int(self.test.size),
                "fractions": list(SPLIT_FRACTIONS) if self.source == "stratified" else None}


@dataclass(frozen=True)
class Run:
    """One training of one setting with one seed."""

    seed: int
    val_accuracy: float
    test_accuracy: float
    lp_epochs: int
    seconds: float = field(default=0.0, compare=False)
    cached: bool = field(default=False, compare=False)  # read back from the run cache

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "val_accuracy": self.val_accuracy,
                "test_accuracy": self.test_accuracy, "lp_epochs": self.lp_epochs}


@dataclass(frozen=True)
class SettingResult:
    """A setting's runs over the seeds."""

    name: str
    hyperparameters: Mapping[str, Any]
    runs: tuple[Run, ...]
    overrides: Mapping[str, Any] | None = None  # for a searched setting: its values

    @property
    def test(self) -> np.ndarray:
        return np.array([r.test_accuracy for r in self.runs])

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.runs)

    def to_dict(self) -> dict[str, Any]:
        val = np.array([r.val_accuracy for r in self.runs])
        return {"name": self.name, "test_mean": float(self.test.mean()),
                "test_spread": _spread(self.test), "val_mean": float(val.mean()),
                "val_spread": _spread(val), "runs": [r.to_dict() for r in self.runs],
                "overrides": dict(self.overrides) if self.overrides is not None else None,
                "hyperparameters": plain(self.hyperparameters)}


@dataclass(frozen=True)
class Validation:
    """The binary default and the recommendation (and the search's best), side by side."""

    split: Split
    budget: Budget
    seeds: tuple[int, ...]
    device: str
    settings: tuple[SettingResult, ...]  # default, recommended, then best_found if searched
    search: Mapping[str, Any] | None = None

    def setting(self, name: str) -> SettingResult | None:
        return next((s for s in self.settings if s.name == name), None)

    def difference(self, name: str = "recommended", base: str = "default") -> tuple[float, float]:
        """Mean and spread of the paired (same seed) test-accuracy difference."""
        a, b = self.setting(name), self.setting(base)
        diff = a.test - b.test
        return float(diff.mean()), _spread(diff)

    def to_dict(self) -> dict[str, Any]:
        mean, spread = self.difference()
        out = {"split": self.split.to_dict(), "budget": self.budget.to_dict(),
               "seeds": list(self.seeds), "mixed_precision": self.device.startswith("cuda"),
               "settings": {s.name: s.to_dict() for s in self.settings},
               "difference": {"recommended_minus_default": mean, "spread": spread}}
        if self.setting("best_found") is not None:
            m, s = self.difference("best_found", "recommended")
            out["difference"]["best_found_minus_recommended"] = m
            out["difference"]["best_found_spread"] = s
        out["search"] = dict(self.search) if self.search is not None else None
        return out


def _spread(values: np.ndarray) -> float | None:
    """Sample standard deviation over seeds (None with one seed)."""
    return float(np.std(values, ddof=1)) if values.size > 1 else None


# --- splits ----------------------------------------------------------------------------------

def split_layout(path: Path) -> dict[str, Path] | None:
    """``{"train": ..., "test": ..., ["val": ...]}`` when ``path`` holds split folders
    (``train/`` and ``test/``, optionally ``val/``, each with one sub-folder per class)."""
    path = Path(path)
    if not path.is_dir():
        return None
    found = {}
    for role, names in SPLIT_FOLDERS.items():
        for name in names:
            if (path / name).is_dir():
                found[role] = path / name
                break
    if "train" not in found or "test" not in found:
        return None
    if not any(p.is_dir() and not p.name.startswith(".") for p in found["train"].iterdir()):
        return None
    return found


def stratified_three_way(codes: np.ndarray, seed: int
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per class, ``SPLIT_FRACTIONS`` of the images (at least one each for validation and
    test) drawn with ``seed``; indices sorted."""
    rng = np.random.default_rng(seed)
    parts: tuple[list, list, list] = ([], [], [])
    for cls in np.unique(codes):
        members = rng.permutation(np.flatnonzero(codes == cls))
        n = members.size
        n_val = max(1, round(SPLIT_FRACTIONS[1] * n))
        n_test = max(1, round(SPLIT_FRACTIONS[2] * n))
        parts[2].extend(members[:n_test])
        parts[1].extend(members[n_test:n_test + n_val])
        parts[0].extend(members[n_test + n_val:])
    return tuple(np.sort(np.asarray(p, dtype=np.int64)) for p in parts)  # type: ignore[return-value]


def make_split(samples: Sequence[tuple[Path, int]], classes: Sequence[str], seed: int) -> Split:
    codes = np.array([c for _, c in samples])
    counts = np.bincount(codes, minlength=len(classes))
    short = [classes[i] for i in np.flatnonzero(counts < MIN_PER_CLASS)]
    if short:
        raise DatasetError(
            f"--validate needs at least {MIN_PER_CLASS} images per class (train, validation, "
            f"test); too few in: {', '.join(short[:5])}.",
            "Add images to those classes, or give your own split as train/, val/ and test/ "
            "folders.")
    train, val, test = stratified_three_way(codes, seed)
    return Split(tuple(samples), tuple(classes), train, val, test, "stratified")


def folder_split(parts: Mapping[str, Any], seed: int) -> Split:
    """A split from loaded ``train``/``test`` (and optional ``val``) datasets; without a
    validation folder, a stratified ``VAL_FRACTION_OF_TRAIN`` of train is held out."""
    classes = parts["train"].classes
    for role in ("val", "test"):
        if role in parts and parts[role].classes != classes:
            missing = sorted(set(classes) ^ set(parts[role].classes))
            raise DatasetError(
                f"The class folders of {parts[role].root} differ from those of "
                f"{parts['train'].root} (not in both: {', '.join(missing[:5])}).",
                "Give train/, val/ and test/ the same class sub-folders.")
    samples = list(parts["train"].samples)
    n_train = len(samples)
    if "val" in parts:
        samples += parts["val"].samples
        train, val = np.arange(n_train), np.arange(n_train, len(samples))
    else:
        codes = np.array([c for _, c in samples])
        from recommender.scratch import stratified_split

        train, val = stratified_split(codes, VAL_FRACTION_OF_TRAIN, seed)
    start = len(samples)
    samples += parts["test"].samples
    test = np.arange(start, len(samples))
    return Split(tuple(samples), tuple(classes), train, val, test, "folders")


# --- training one setting ----------------------------------------------------------------------

def lp_epochs_for(hp: Mapping[str, Any], budget: Budget) -> int:
    """The head-only epochs within the budget: the recommendation's share of its own epochs."""
    if not hp.get("lp_ft"):
        return 0
    share = hp.get("lp_epochs", 0) / max(1, hp.get("epochs", 1))
    return min(budget.epochs - 1, max(1, round(share * budget.epochs)))


def run_setting(
    hp: Mapping[str, Any],
    backbone: Backbone,
    data: ImageTensors,
    split: Split,
    budget: Budget,
    *,
    seed: int,
    device: str = "cpu",
    progress: Callable[[str, int, str], Callable[[int], None]] | None = None,
    label: str = "",
) -> Run:
    """Fine-tune a copy of the pre-trained model with hyperparameters ``hp`` on the training
    split; accuracy on the validation and test splits."""
    import torch

    from recommender.apply import apply_recommendation
    from recommender.training import TrainConfig, accuracy, train

    start = time.perf_counter()
    cfg = backbone.data_config
    train_data = data.subset(split.train)
    batch = min(budget.batch_size, int(split.train.size))
    steps_per_epoch = max(1, int(split.train.size) // batch)
    lp = lp_epochs_for(hp, budget)
    on_epoch_bar = progress(f"{label} epochs", budget.epochs, "epochs") if progress else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = copy.deepcopy(backbone.model)
        init_model = backbone.random_init() if hp.get("reinit_modules") else None
        applied = apply_recommendation(model, hp, num_classes=len(split.classes), seed=seed,
                                       init_model=init_model)
        applied.regulariser.to(device)
        phases = []
        if lp:
            head = set(applied.head_names())
            frozen = sorted({n.rpartition(".")[0] for n, _ in model.named_parameters()
                             if n not in head})
            groups = [g for g in applied.param_groups() if g["name"] == "head"]
            phases.append((lp, groups, frozen))
        phases.append((budget.epochs - lp, applied.param_groups(), []))
        for i, (epochs, groups, frozen) in enumerate(phases):
            trainable = {id(p) for g in groups for p in g["params"]}
            for p in model.parameters():
                p.requires_grad_(id(p) in trainable)
            config = TrainConfig(
                epochs=epochs, lr=hp["base_lr"], weight_decay=0.0, batch_size=batch,
                optimizer=hp.get("optimizer", "sgd_nesterov"), momentum=hp.get("momentum", 0.9),
                warmup_fraction=budget.warmup_fraction, label_smoothing=budget.label_smoothing,
                schedule=budget.schedule)
            on_batch = progress(f"{label} batches", epochs * steps_per_epoch, "batches") \
                if progress else None
            train(model, train_data, config, mean=cfg["mean"], std=cfg["std"],
                  seed=seed * 1000 + i, device=device, groups=groups,
                  regulariser=applied.regulariser, frozen=frozen,
                  on_epoch=(lambda _e, _l: on_epoch_bar(1)) if on_epoch_bar else None,
                  on_batch=on_batch)
        for p in model.parameters():
            p.requires_grad_(True)
        val = accuracy(model, data.subset(split.val), mean=cfg["mean"], std=cfg["std"],
                       device=device)
        test = accuracy(model, data.subset(split.test), mean=cfg["mean"], std=cfg["std"],
                        device=device)
    return Run(seed=seed, val_accuracy=val, test_accuracy=test, lp_epochs=lp,
               seconds=time.perf_counter() - start)


def run_seeds(name: str, hp: Mapping[str, Any], backbone: Backbone, data: ImageTensors,
              split: Split, budget: Budget, seeds: Sequence[int], *, device: str,
              progress=None, done: Mapping[int, Run] | None = None,
              overrides: Mapping[str, Any] | None = None,
              use_cache: bool = True) -> SettingResult:
    """``hp`` trained once per seed. A run already in ``done``, or finished by an earlier
    call with the same inputs (the run cache; off with ``use_cache=False``), is re-used."""
    from recommender.training import TrainingDiverged

    runs = []
    for seed in seeds:
        if done and seed in done:
            runs.append(done[seed])
            continue
        path = _run_path(hp, backbone, split, budget, seed, device)
        cached = _read_run(path) if use_cache else None
        if cached is not None:
            runs.append(cached)
            continue
        try:
            run = run_setting(hp, backbone, data, split, budget, seed=seed, device=device,
                              progress=progress, label=f"{name} seed {seed}")
        except TrainingDiverged as exc:
            raise UsageError(f"Fine-tuning the {name} setting diverged: {exc}.",
                             "Lower its learning rate with --set base_lr=... (or the "
                             "head_lr/upper_lr/lower_lr of one group).") from None
        if use_cache:
            _write_run(path, run)
        runs.append(run)
    return SettingResult(name, dict(hp), tuple(runs),
                         dict(overrides) if overrides is not None else None)


# A finished run is kept in the cache folder, keyed by everything that decides its numbers, so
# a rerun (a larger --search, more --validate-seeds, an interrupted validation) skips it.
RUN_CACHE_VERSION = 1


def _run_path(hp: Mapping[str, Any], backbone: Backbone, split: Split, budget: Budget,
              seed: int, device: str) -> Path:
    import torch

    from recommender.cache import cache_dir, digest

    key = digest({"version": RUN_CACHE_VERSION, "hp": plain(hp), "model": backbone.name,
                  "weights": backbone.weights_id, "budget": budget.to_dict(), "seed": seed,
                  "device": device.split(":")[0], "torch": torch.__version__,
                  "samples": [[str(p), c] for p, c in split.samples],
                  "split": [split.train.tolist(), split.val.tolist(), split.test.tolist()],
                  "classes": list(split.classes)})
    return cache_dir() / "runs" / f"{key}.json"


def _read_run(path: Path) -> Run | None:
    import json

    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return Run(seed=int(record["seed"]), val_accuracy=float(record["val_accuracy"]),
                   test_accuracy=float(record["test_accuracy"]),
                   lp_epochs=int(record["lp_epochs"]), seconds=0.0, cached=True)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or damaged: train again


def _write_run(path: Path, run: Run) -> None:
    import json

    from recommender.cache import atomic_write

    text = json.dumps({**run.to_dict(), "seconds": run.seconds})
    try:
        atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    except OSError:
        pass  # a read-only cache costs a rerun later, never this run


def default_hyperparameters(hp: Mapping[str, Any]) -> dict[str, Any]:
    """The binary default with the recommendation's head modules and optimiser budget."""
    from recommender.apply import binary_default

    head = next((g["modules"] for g in hp["lr_groups"] if g["name"] == "head"), [])
    # Only the classifier is new in the binary practice, whatever the recommendation's head.
    head = [m for m in head if m not in hp.get("reinit_modules", ())]
    return binary_default(DEFAULT_LR, DEFAULT_WEIGHT_DECAY, head_modules=head)


def budget_for(hp: Mapping[str, Any], epochs: int, image_size: int) -> Budget:
    if epochs < 2:
        raise UsageError(f"--validate-epochs {epochs} must be at least 2.")
    if image_size < 32:
        raise UsageError(f"--validate-size {image_size} must be at least 32 pixels.")
    return Budget(epochs=epochs, image_size=image_size,
                  batch_size=int(hp.get("batch_size", 16)),
                  label_smoothing=float(hp.get("label_smoothing", 0.1)))


def check_seeds(seeds: int) -> None:
    if seeds < 1:
        raise UsageError(f"--validate-seeds {seeds} must be at least 1 (2 or more give a spread).")


# --- the whole validation ----------------------------------------------------------------------

def validate_recommendation(
    recommendation: Any,
    remake: Callable[[Mapping[str, Any]], Any],
    backbone: Backbone,
    split: Split,
    *,
    seeds: int = VALIDATE_SEEDS,
    epochs: int = VALIDATE_EPOCHS,
    image_size: int = VALIDATE_IMAGE_SIZE,
    seed: int = 0,
    device: str = "cpu",
    search: int = 0,
    search_db: str | Path | None = None,
    fixed: Sequence[str] = (),
    use_cache: bool = True,
    say: Callable[[str], None] = lambda _text: None,
    progress: Callable[[str, int, str], Callable[[int], None]] | None = None,
    timings: dict[str, float] | None = None,
) -> Validation:
    """Fine-tune the binary default and ``recommendation`` (and, with ``search`` > 0, the best
    of a search seeded by it) on ``split``; ``remake(overrides)`` re-runs the heuristics with
    extra overrides (for the search). ``fixed`` names settings the user set (not searched).
    Finished runs are cached (``use_cache``): a rerun trains only what it has not seen."""
    from recommender.training import load_image_tensors

    timings = timings if timings is not None else {}
    rec = recommendation.to_dict() if hasattr(recommendation, "to_dict") else recommendation
    hp = rec["hyperparameters"]
    budget = budget_for(hp, epochs, image_size)
    run_seeds_ = tuple(seed + i for i in range(seeds))
    say(f"Decoding {len(split.samples)} images at {budget.image_size} px for fine-tuning")
    mark = time.perf_counter()
    codes = [c for _, c in split.samples]
    on_image = progress("decoding", len(codes), "images") if progress else None
    data = load_image_tensors([p for p, _ in split.samples], codes, budget.image_size,
                              on_image=on_image)
    timings["decode_s"] = time.perf_counter() - mark

    def trained(name: str, hyper: Mapping[str, Any], **kw: Any) -> SettingResult:
        say(f"Fine-tuning the {name.replace('_', ' ')} setting: {len(run_seeds_)} seed(s), "
            f"{budget.epochs} epochs at {budget.image_size} px")
        mark = time.perf_counter()
        result = run_seeds(name, hyper, backbone, data, split, budget, run_seeds_,
                           device=device, progress=progress, use_cache=use_cache, **kw)
        timings[f"{name}_s"] = time.perf_counter() - mark
        return result

    default = trained("default", default_hyperparameters(hp))
    recommended = trained("recommended", hp)
    settings = [default, recommended]
    search_info = None
    if search > 0:
        from recommender import search as s
        from recommender.cache import cache_dir, digest

        space_ = {k: v for k, v in s.space(rec["details"], hp).items()
                  if k not in fixed and not (k == "l2sp_on" and "l2sp_weight" in fixed)}
        start = s.recommended_params(space_, hp)
        key = digest({"samples": [[str(p), c] for p, c in split.samples],
                      "train": split.train.tolist(), "val": split.val.tolist(),
                      "model": backbone.weights_id, "budget": budget.to_dict(),
                      "seed": run_seeds_[0], "space": space_, "fixed": sorted(fixed),
                      "device": device})
        storage = Path(search_db) if search_db else cache_dir() / "search" / f"{key}.journal"

        def evaluate(extra: dict[str, Any]) -> tuple[float, float]:
            from recommender.training import TrainingDiverged

            trial_hp = remake(extra).to_dict()["hyperparameters"]
            try:
                run = run_setting(trial_hp, backbone, data, split, budget, seed=run_seeds_[0],
                                  device=device, progress=progress, label="search trial")
            except TrainingDiverged:  # a learning rate too high: the worst score, not an end
                return 0.0, 0.0
            return run.val_accuracy, run.test_accuracy

        say(f"Searching {search} settings within the recommended ranges "
            f"(resumable: {storage})")
        mark = time.perf_counter()
        first = recommended.runs[0]
        on_trial_bar = progress("search", search, "trials") if progress else None
        trials = s.run_search(
            search, space_=space_, start=start, evaluate=evaluate, storage=storage,
            study_name=key, seed=seed, known=[(start, first.val_accuracy, first.test_accuracy)],
            on_trial=(lambda _d, _t: on_trial_bar(1)) if on_trial_bar else None)
        timings["search_s"] = time.perf_counter() - mark
        best = s.best_trial(trials)
        if best["number"] == trials[0]["number"]:  # the recommended point itself
            best_result = SettingResult("best_found", dict(hp), recommended.runs,
                                        dict(best["overrides"]))
        else:
            best_hp = remake(best["overrides"]).to_dict()["hyperparameters"]
            done = {run_seeds_[0]: Run(run_seeds_[0], best["val_accuracy"],
                                       best["test_accuracy"], lp_epochs_for(best_hp, budget))}
            best_result = trained("best_found", best_hp, done=done,
                                  overrides=best["overrides"])
        settings.append(best_result)
        search_info = {"trials": trials, "space": {k: [kind, list(b) if isinstance(b, tuple)
                                                       else b] for k, (kind, b) in space_.items()},
                       "best_trial": best["number"], "storage": str(storage),
                       "sampler": "optuna TPESampler", "objective": "validation accuracy, "
                       f"seed {run_seeds_[0]}"}
    return Validation(split=split, budget=budget, seeds=run_seeds_, device=device,
                      settings=tuple(settings), search=search_info)
