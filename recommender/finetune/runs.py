"""One fine-tuning run of one setting with one seed, and a setting's runs over seeds.

A *setting* is one named set of hyperparameters that is trained and scored: the binary
default, the recommendation, the best one a search found, or a benchmark grid cell. Every
setting of a comparison shares one :class:`Budget` (epochs, resolution, batch, augmentation,
label smoothing, warm-up and schedule), so that they differ only on the paper's axes.
Finished runs are kept in the cache folder, keyed by everything that decides their numbers, so
that a rerun (a larger ``--search``, more ``--validate-seeds``, an interrupted validation)
trains only what it has not seen.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from heuristics import Hyperparameters
from heuristics.types import plain
from recommender.cache import cache_dir, digest, discard, files_identity, try_write
from recommender.config import ValidationOptions
from recommender.errors import UsageError
from recommender.finetune.apply import apply_recommendation
from recommender.finetune.similarity import cka_per_block
from recommender.finetune.training import (
    TrainConfig,
    TrainingDiverged,
    accuracy,
    normalised_batches,
    train,
)
from recommender.models.features import block_outputs

if TYPE_CHECKING:
    from recommender.data.splits import DataSplit
    from recommender.data.tensors import ImageTensors
    from recommender.models.backbones import Backbone

Progress = Callable[[str, int, str], Callable[[int], None]]


@dataclass(frozen=True)
class Budget:
    """What every setting of a comparison shares."""

    epochs: int = ValidationOptions.epochs
    image_size: int = ValidationOptions.image_size
    batch_size: int = 16
    label_smoothing: float = 0.1
    warmup_fraction: float = 0.1
    schedule: str = "cosine"

    @classmethod
    def for_recommendation(cls, hp: Hyperparameters, epochs: int, image_size: int) -> Budget:
        """``epochs`` at ``image_size`` px with the recommendation's batch size and label
        smoothing."""
        return cls(epochs=epochs, image_size=image_size, batch_size=hp.batch_size,
                   label_smoothing=hp.label_smoothing)

    def to_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "image_size": self.image_size,
                "batch_size": self.batch_size, "label_smoothing": self.label_smoothing,
                "warmup_fraction": self.warmup_fraction, "schedule": self.schedule,
                "augmentation": "random-resized crop (area 0.35-1) and horizontal flip"}


@dataclass(frozen=True)
class EpochRecord:
    """One epoch of a run: its phase (``"head"`` for an LP-FT head-only epoch, ``"all"``),
    the mean training loss (regulariser included) and the validation accuracy after it."""

    epoch: int  # 1-based over the whole run, the head-only phase first
    phase: str
    train_loss: float
    val_accuracy: float

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "phase": self.phase, "train_loss": self.train_loss,
                "val_accuracy": self.val_accuracy}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> EpochRecord:
        return cls(int(record["epoch"]), str(record["phase"]), float(record["train_loss"]),
                   float(record["val_accuracy"]))


@dataclass(frozen=True)
class Run:
    """One training of one setting with one seed; ``curve`` its epochs (empty for a search
    trial's re-used first run)."""

    seed: int
    val_accuracy: float
    test_accuracy: float
    lp_epochs: int
    # Per block (bottom-up): CKA between the pre-trained and this run's fine-tuned features of
    # the test images; empty when not measured (a search trial).
    block_cka: tuple[float | None, ...] = ()
    seconds: float = field(default=0.0, compare=False)
    cached: bool = field(default=False, compare=False)  # read back from the run cache
    curve: tuple[EpochRecord, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "val_accuracy": self.val_accuracy,
                "test_accuracy": self.test_accuracy, "lp_epochs": self.lp_epochs,
                "block_cka": list(self.block_cka),
                "curve": [e.to_dict() for e in self.curve]}


@dataclass(frozen=True)
class SettingResult:
    """A setting's runs over the seeds."""

    name: str
    hyperparameters: Hyperparameters
    runs: tuple[Run, ...]
    overrides: Mapping[str, Any] | None = None  # for a searched setting: its values

    @property
    def test(self) -> np.ndarray:
        return np.array([r.test_accuracy for r in self.runs])

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.runs)

    @property
    def block_cka(self) -> tuple[float | None, ...] | None:
        """Mean over the seeds of each block's CKA (pre-trained vs fine-tuned), or None when
        a run did not measure it."""
        if not self.runs or any(not r.block_cka for r in self.runs):
            return None
        columns = zip(*(r.block_cka for r in self.runs))
        return tuple(None if any(v is None for v in c) else float(np.mean(c)) for c in columns)

    def to_dict(self) -> dict[str, Any]:
        val = np.array([r.val_accuracy for r in self.runs])
        return {"name": self.name, "test_mean": float(self.test.mean()),
                "test_spread": spread(self.test), "val_mean": float(val.mean()),
                "val_spread": spread(val), "runs": [r.to_dict() for r in self.runs],
                "block_cka": list(self.block_cka) if self.block_cka is not None else None,
                "overrides": dict(self.overrides) if self.overrides is not None else None,
                "hyperparameters": plain(self.hyperparameters)}


def spread(values: np.ndarray) -> float | None:
    """Sample standard deviation over seeds (None with one seed)."""
    return float(np.std(values, ddof=1)) if values.size > 1 else None


def lp_epochs_for(hp: Hyperparameters, budget: Budget) -> int:
    """The head-only epochs within the budget: the recommendation's share of its own epochs."""
    if not hp.lp_ft:
        return 0
    share = hp.lp_epochs / max(1, hp.epochs)
    return min(budget.epochs - 1, max(1, round(share * budget.epochs)))


def run_setting(
    hp: Hyperparameters,
    backbone: Backbone,
    data: ImageTensors,
    split: DataSplit,
    budget: Budget,
    *,
    seed: int,
    device: str = "cpu",
    progress: Progress | None = None,
    label: str = "",
    reference: Callable[[], tuple[np.ndarray, ...]] | None = None,
    report: Callable[[int, float], None] | None = None,
) -> Run:
    """Fine-tune a copy of the pre-trained model with hyperparameters ``hp`` on the training
    part of ``split``; accuracy on its validation and test parts, and its curve (mean loss
    and validation accuracy after each epoch). ``report(epoch, val_accuracy)`` after every
    epoch (counted over both phases of LP-FT), for a pruner: it may raise to stop the run.
    Evaluating does not change the training (no random draws, BatchNorm statistics frozen).
    With ``reference()`` giving the pre-trained model's block features of the test images
    (:func:`held_out_features`), the CKA of each block against the fine-tuned model's is
    measured too, before the model is dropped."""
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
        init_model = backbone.untrained_model() if hp.reinit_modules else None
        applied = apply_recommendation(model, hp, num_classes=len(split.classes), seed=seed,
                                       init_model=init_model)
        applied.regulariser.to(device)
        val_data = data.subset(split.val)
        curve: list[EpochRecord] = []
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
                epochs=epochs, lr=hp.base_lr, weight_decay=0.0, batch_size=batch,
                optimizer=hp.optimizer, momentum=hp.momentum,
                warmup_fraction=budget.warmup_fraction, label_smoothing=budget.label_smoothing,
                schedule=budget.schedule)
            on_batch = progress(f"{label} batches", epochs * steps_per_epoch, "batches") \
                if progress else None
            phase = "head" if frozen else "all"

            def on_epoch(_epoch: int, loss: float, phase: str = phase) -> None:
                # Evaluation draws no random numbers and moves no BatchNorm statistics: the
                # run trains exactly as it would without its curve.
                curve.append(EpochRecord(len(curve) + 1, phase, loss, accuracy(
                    model, val_data, mean=cfg["mean"], std=cfg["std"], device=device)))
                if on_epoch_bar:
                    on_epoch_bar(1)
                if report is not None:
                    report(len(curve), curve[-1].val_accuracy)

            train(model, train_data, config, mean=cfg["mean"], std=cfg["std"],
                  seed=seed * 1000 + i, device=device, groups=groups,
                  regulariser=applied.regulariser, frozen=frozen, on_epoch=on_epoch,
                  on_batch=on_batch)
        for p in model.parameters():
            p.requires_grad_(True)
        val = curve[-1].val_accuracy  # the model after its last epoch
        test = accuracy(model, data.subset(split.test), mean=cfg["mean"], std=cfg["std"],
                        device=device)
        moved = ()
        if reference is not None:
            before = reference()
            moved = cka_per_block(before, held_out_features(model, data, split, cfg, device,
                                                            len(before)))
    return Run(seed=seed, val_accuracy=val, test_accuracy=test, lp_epochs=lp, block_cka=moved,
               seconds=time.perf_counter() - start, curve=tuple(curve))


def held_out_features(model: nn.Module, data: ImageTensors, split: DataSplit,
                      cfg: Mapping[str, Any], device: str, num_blocks: int
                      ) -> tuple[np.ndarray, ...]:
    """``model``'s pooled features at every block of the test part of ``split``."""
    batches = normalised_batches(data.subset(split.test), mean=cfg["mean"], std=cfg["std"],
                                 device=device)
    return block_outputs(model, batches, num_blocks, device)


def run_seeds(name: str, hp: Hyperparameters, backbone: Backbone, data: ImageTensors,
              split: DataSplit, budget: Budget, seeds: Sequence[int], *, device: str,
              progress: Progress | None = None, done: Mapping[int, Run] | None = None,
              overrides: Mapping[str, Any] | None = None,
              cache: RunCache | None = None,
              reference: Callable[[], tuple[np.ndarray, ...]] | None = None) -> SettingResult:
    """``hp`` trained once per seed. A run already in ``done``, or finished by an earlier
    call with the same inputs (in ``cache``; None: no run cache), is re-used. ``reference``:
    as :func:`run_setting`."""
    runs = []
    for seed in seeds:
        if done and seed in done:
            runs.append(done[seed])
            continue
        path = _run_path(hp, backbone, split, budget, seed, device)
        cached = cache.read(path, seed) if cache is not None else None
        if cached is not None:
            runs.append(cached)
            continue
        try:
            run = run_setting(hp, backbone, data, split, budget, seed=seed, device=device,
                              progress=progress, label=f"{name} seed {seed}",
                              reference=reference)
        except TrainingDiverged as exc:
            raise UsageError(f"Fine-tuning the {name} setting diverged: {exc}.",
                             "Lower its learning rate with --set base_lr=... (or the "
                             "head_lr/upper_lr/lower_lr of one group).") from None
        if cache is not None:
            cache.write(path, run)
        runs.append(run)
    return SettingResult(name, hp, tuple(runs),
                         dict(overrides) if overrides is not None else None)


@dataclass
class SettingRunner:
    """What every setting of one comparison shares: the backbone, the decoded images, the
    data split, the budget, the seeds and the device; it trains settings and notes their
    wall time in ``timings`` (``NAME_s``)."""

    backbone: Backbone
    data: ImageTensors
    split: DataSplit
    budget: Budget
    seeds: tuple[int, ...]
    device: str
    use_cache: bool = True
    say: Callable[[str], None] = lambda _text: None
    progress: Progress | None = None
    timings: dict[str, float] = field(default_factory=dict)
    run_cache: RunCache | None = field(init=False, repr=False)
    _reference: tuple[np.ndarray, ...] | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        # One per comparison, so an unwritable cache is warned about once, not once per run.
        self.run_cache = RunCache() if self.use_cache else None

    def reference(self) -> tuple[np.ndarray, ...]:
        """The pre-trained model's block features of the test images (computed once)."""
        if self._reference is None:
            self._reference = held_out_features(self.backbone.model, self.data, self.split,
                                            self.backbone.data_config, self.device,
                                            len(self.backbone.blocks))
        return self._reference

    def train(self, name: str, hp: Hyperparameters, *, done: Mapping[int, Run] | None = None,
              overrides: Mapping[str, Any] | None = None) -> SettingResult:
        """``hp`` on every seed (cached runs and those in ``done`` are re-used)."""
        self.say(f"Fine-tuning the {name.replace('_', ' ')} setting: {len(self.seeds)} "
                 f"seed(s), {self.budget.epochs} epochs at {self.budget.image_size} px")
        mark = time.perf_counter()
        result = run_seeds(name, hp, self.backbone, self.data, self.split, self.budget,
                           self.seeds, device=self.device, progress=self.progress,
                           cache=self.run_cache, done=done, overrides=overrides,
                           reference=self.reference)
        self.timings[f"{name}_s"] = time.perf_counter() - mark
        return result

    def trial(self, hp: Hyperparameters,
              report: Callable[[int, float], None] | None = None) -> Run:
        """``hp`` once, on the first seed, uncached (a search trial); ``report(epoch, val)``
        after each epoch (see :func:`run_setting`)."""
        return run_setting(hp, self.backbone, self.data, self.split, self.budget,
                           seed=self.seeds[0], device=self.device, progress=self.progress,
                           label="search trial", report=report)



# --- the run cache ---------------------------------------------------------------------------

RUN_CACHE_VERSION = 2  # 2: each run also holds its per-block CKA and its curve


def _run_path(hp: Hyperparameters, backbone: Backbone, split: DataSplit, budget: Budget,
              seed: int, device: str) -> Path:
    key = digest({"version": RUN_CACHE_VERSION, "hp": plain(hp), "model": backbone.name,
                  "weights": backbone.weights_id, "budget": budget.to_dict(), "seed": seed,
                  "device": device.split(":")[0], "torch": torch.__version__,
                  "samples": [[str(p), c] for p, c in split.samples],
                  "files": files_identity(p for p, _ in split.samples),
                  "split": [split.train.tolist(), split.val.tolist(), split.test.tolist()],
                  "classes": list(split.classes)})
    return cache_dir() / "runs" / f"{key}.json"


@dataclass
class RunCache:
    """Finished runs in the cache folder, one JSON record each. A damaged record is discarded
    and trained again; a folder that cannot be written is warned about once, then left alone
    (the comparison goes on, its runs kept in memory)."""

    writable: bool = True

    def read(self, path: Path, seed: int) -> Run | None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            return None  # not run yet (or unreadable: train again)
        try:
            record = json.loads(text)
            run = Run(seed=int(record["seed"]), val_accuracy=float(record["val_accuracy"]),
                      test_accuracy=float(record["test_accuracy"]),
                      lp_epochs=int(record["lp_epochs"]),
                      block_cka=tuple(None if v is None else float(v)
                                      for v in record["block_cka"]),
                      seconds=0.0, cached=True,
                      curve=tuple(EpochRecord.from_dict(e) for e in record["curve"]))
        except (ValueError, KeyError, TypeError) as exc:
            discard(path, "fine-tuning run record", f"{type(exc).__name__}: {exc}")
            return None
        if run.seed != seed:
            discard(path, "fine-tuning run record", f"it holds seed {run.seed}, not {seed}")
            return None
        return run

    def write(self, path: Path, run: Run) -> None:
        if self.writable:
            text = json.dumps({**run.to_dict(), "seconds": run.seconds})
            self.writable = try_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"),
                                      "fine-tuning runs")
