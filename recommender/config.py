"""What a run is asked to do: one frozen :class:`Options`, built once at the edge and passed down.

The command line (:mod:`recommender.cli`) and :func:`recommender.recommend` build it; every
default of a user-facing option lives here and nowhere else. :meth:`Options.check` refuses a
value that cannot work before any work starts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from heuristics.types import FrozenMap
from recommender.errors import UsageError

# Epochs of the short training from scratch (--scratch): the paper's own measure of fit. At 96
# px the default backbone trains at about 50 images/s on 2 CPU cores, so 30 epochs of the
# 200-image sample take about 2 minutes (recommender.finetune.scratch).
SCRATCH_EPOCHS = 30
# The default --validate budget. 20 epochs at 128 px: on 2 CPU cores the default backbone
# fine-tunes at about 35 images/s at 128 px (batch 16), so a 10-class dataset of 50 images per
# class (300 training images) takes about 3 minutes per run.
VALIDATE_EPOCHS = 20
VALIDATE_IMAGE_SIZE = 128
VALIDATE_SEEDS = 2
# 2 seeds x 2 settings plus the analysis took 12.5 minutes on real Fashion-MNIST, 10 classes x 50
# images, on 2 CPU cores (the README's "Validating a recommendation" section): quoted by the
# command's help and the report.
VALIDATE_MEASURED = "12.5 min measured on 2 CPU cores for 10 classes x 50 images"


@dataclass(frozen=True)
class ValidationOptions:
    """``--validate``: fine-tune the recommendation against the binary default."""

    seeds: int = VALIDATE_SEEDS  # paired seeds per setting
    epochs: int = VALIDATE_EPOCHS
    image_size: int = VALIDATE_IMAGE_SIZE

    def check(self) -> None:
        if self.seeds < 1:
            raise UsageError(f"--validate-seeds {self.seeds} must be at least 1 (2 or more "
                             "give a spread).")
        if self.epochs < 2:
            raise UsageError(f"--validate-epochs {self.epochs} must be at least 2.")
        if self.image_size < 32:
            raise UsageError(f"--validate-size {self.image_size} must be at least 32 pixels.")


ROLES = ("main", "worker")
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device(device: str) -> None:
    """``--device``: auto, cpu, cuda or cuda:K (``UsageError`` otherwise)."""
    if not DEVICE_PATTERN.fullmatch(device):
        raise UsageError(f"--device {device} is not one of auto, cpu, cuda, cuda:K.",
                         "E.g. --device cuda:1 for the second GPU.")


@dataclass(frozen=True)
class SearchOptions:
    """``--search N``: N settings within the recommendation's ranges, stored in ``storage``
    (``--search-db FILE`` or ``--storage URL``; default: a journal in the cache folder, keyed
    by the inputs) as the study ``study`` (default: a name made from the inputs' contents).
    ``role`` ``"worker"``: only run trials (``"main"`` also trains the default and the
    recommendation and confirms the best). ``prune``: stop weak trials early."""

    trials: int
    storage: Path | str | None = None
    study: str | None = None
    role: str = "main"
    prune: bool = False

    def check(self) -> None:
        if self.trials < 1:
            raise UsageError(f"--search {self.trials} must be at least 1 (or left out).")
        if self.role not in ROLES:
            raise UsageError(f"--role {self.role!r} is not one of {', '.join(ROLES)}.")
        if self.storage is not None:
            from recommender.finetune.storage import kind_of

            kind_of(self.storage)  # an unknown URL scheme: refused before any work
        if self.study is not None and not self.study.strip():
            raise UsageError("--study is given an empty name.", "Give a name, or leave it out.")


@dataclass(frozen=True)
class Options:
    """Every option of ``nbtl-recommend`` (the README's table), typed, with its default.

    ``validation`` is ``None`` unless the run fine-tunes (``--validate``, or a search, which
    implies it); ``search`` is ``None`` without ``--search``; ``scratch_epochs`` is ``None``
    without ``--scratch``. ``overrides`` maps hyperparameter names to the values the user set.
    """

    labels_csv: Path | None = None
    model: str | None = None
    weights: Path | None = None
    image_size: int | None = None
    max_per_class: int | None = None
    seed: int = 0
    batch_size: int | None = None  # None: 8 on the CPU, 32 on a GPU (feature extraction)
    workers: int | None = None
    device: str = "auto"
    use_cache: bool = True
    offline: bool = False
    scratch_epochs: int | None = None
    overrides: Mapping[str, Any] = field(default_factory=FrozenMap)
    validation: ValidationOptions | None = None
    search: SearchOptions | None = None
    # The training the user plans (--train-epochs, --train-size): the fitted ladder follows
    # the meta-benchmark at the nearest benchmark budget (recommender.pipeline.plan_budget).
    train_epochs: int | None = None
    train_size: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "overrides", FrozenMap(self.overrides))
        if self.search is not None and self.validation is None:  # a search fine-tunes
            object.__setattr__(self, "validation", ValidationOptions())

    @classmethod
    def from_kwargs(
        cls,
        *,
        scratch: bool = False,
        scratch_epochs: int = SCRATCH_EPOCHS,
        validate: bool = False,
        validate_seeds: int = VALIDATE_SEEDS,
        validate_epochs: int = VALIDATE_EPOCHS,
        validate_size: int = VALIDATE_IMAGE_SIZE,
        search: int = 0,
        search_db: str | Path | None = None,
        storage: str | None = None,
        study: str | None = None,
        role: str = "main",
        prune: bool = False,
        labels_csv: str | Path | None = None,
        weights: str | Path | None = None,
        overrides: Mapping[str, Any] | None = None,
        **plain: Any,
    ) -> Options:
        """Options from the flat keyword arguments of :func:`recommender.recommend` (the
        command's option names, ``validate_seeds`` for ``--validate-seeds`` and so on)."""
        known = {f.name for f in fields(cls)} - {"validation", "search", "scratch_epochs"}
        unknown = sorted(set(plain) - known)
        if unknown:
            raise TypeError(f"recommend() got unexpected keyword arguments: {', '.join(unknown)}")
        validation = ValidationOptions(validate_seeds, validate_epochs, validate_size) \
            if validate or search else None
        if search_db is not None and storage is not None:
            raise UsageError("--search-db and --storage both name the search's storage.",
                             "Give one: --search-db FILE is --storage FILE.")
        if role != "main" and not search:
            raise UsageError(f"--role {role} needs --search N (a worker runs search trials).")
        where = Path(search_db) if search_db else storage
        return cls(
            **plain,
            labels_csv=Path(labels_csv) if labels_csv is not None else None,
            weights=Path(weights) if weights is not None else None,
            overrides=overrides or {},
            scratch_epochs=scratch_epochs if scratch else None,
            validation=validation,
            search=SearchOptions(search, where, study, role, prune) if search else None,
        )

    def check(self) -> None:
        """Refuse, before any work, a value that cannot work (``UsageError``)."""
        check_device(self.device)
        if self.batch_size is not None and self.batch_size < 1:
            raise UsageError(f"--batch-size {self.batch_size} must be at least 1 (or left out: "
                             "8 on the CPU, 32 on a GPU).")
        if self.scratch_epochs is not None and self.scratch_epochs < 1:
            raise UsageError(f"--scratch-epochs {self.scratch_epochs} must be at least 1.")
        if self.train_epochs is not None and self.train_epochs < 1:
            raise UsageError(f"--train-epochs {self.train_epochs} must be at least 1 (or left "
                             "out).")
        if self.train_size is not None and self.train_size < 32:
            raise UsageError(f"--train-size {self.train_size} must be at least 32 pixels (or "
                             "left out).")
        planned = self.overrides.get("epochs")
        if self.train_epochs is not None and planned is not None and planned != self.train_epochs:
            raise UsageError(f"--train-epochs {self.train_epochs} and --set epochs={planned} "
                             "disagree: both say how long you will train; give one.")
        if self.search is not None:
            self.search.check()
        if self.validation is not None:
            self.validation.check()

    def to_dict(self, analysed: str) -> dict[str, Any]:
        """The JSON document's ``settings``: what shaped the result (``analysed``: whether
        the probes saw ``"all"`` images or the ``"train"`` split)."""
        return {"seed": self.seed, "max_per_class": self.max_per_class,
                "image_size": self.image_size,
                "labels_csv": str(self.labels_csv) if self.labels_csv else None,
                "scratch_epochs": self.scratch_epochs,
                "overrides": {k: self.overrides[k] for k in sorted(self.overrides)},
                "validate": self.validation is not None,
                "validate_seeds": self.validation.seeds if self.validation else None,
                "search": self.search.trials if self.search else None,
                "train_epochs": self.train_epochs,
                "train_size": self.train_size,
                "analysed": analysed}
