"""Does the recommendation pay off? Fine-tune it against the binary default, same budget.

Both settings train on the same training part of the data split, with the same budget (epochs,
resolution, batch size, augmentation, label smoothing, warm-up and schedule) and the same
seeds; they differ only on the paper's axes: which layers are re-initialised, the learning
rate of each layer group, the L2-SP/L2 mix, and a head-only phase first (LP-FT). Each seed is
one paired run of both; the report gives held-out test accuracy, mean and spread over the
seeds, and per block how far each setting moved the features of the test images from the
pre-trained ones (CKA, :mod:`.similarity`). With a search, the best setting it finds joins
them (:mod:`.search`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from heuristics import Block, Hyperparameters, Recommendation, binary_default
from heuristics.types import inside
from recommender.config import ValidationOptions
from recommender.data.tensors import load_image_tensors
from recommender.finetune.runs import Budget, Progress, SettingResult, SettingRunner, spread
from recommender.finetune.search import search_near

if TYPE_CHECKING:
    import numpy as np

    from recommender.config import SearchOptions
    from recommender.data.splits import DataSplit
    from recommender.models.backbones import Backbone


@dataclass(frozen=True)
class Validation:
    """The binary default and the recommendation (and the search's best), side by side."""

    split: DataSplit
    budget: Budget
    seeds: tuple[int, ...]
    device: str
    # default, recommended, then best_found if searched; none for a search worker
    settings: tuple[SettingResult, ...]
    search: Mapping[str, Any] | None = None
    blocks: tuple[str, ...] = ()  # the backbone's blocks, bottom-up (of each block_cka)
    # Per block, what the recommendation does with it: "re-init", or "lr X" (its group's rate).
    treatment: tuple[str, ...] = ()

    def setting(self, name: str) -> SettingResult | None:
        return next((s for s in self.settings if s.name == name), None)

    def difference(self, name: str = "recommended", base: str = "default") -> tuple[float, float]:
        """Mean and spread of the paired (same seed) test-accuracy difference."""
        a, b = self.setting(name), self.setting(base)
        diff: np.ndarray = a.test - b.test
        return float(diff.mean()), spread(diff)

    @property
    def worker(self) -> bool:
        """A search worker's validation: trials only, no reference runs (``--role worker``)."""
        return not self.settings

    def to_dict(self) -> dict[str, Any]:
        if self.worker:
            return {"split": self.split.to_dict(), "budget": self.budget.to_dict(),
                    "seeds": list(self.seeds), "mixed_precision": self.device.startswith("cuda"),
                    "settings": {}, "difference": None,
                    "search": dict(self.search) if self.search is not None else None}
        mean, spread_ = self.difference()
        out = {"split": self.split.to_dict(), "budget": self.budget.to_dict(),
               "blocks": list(self.blocks), "recommended_treatment": list(self.treatment),
               "seeds": list(self.seeds), "mixed_precision": self.device.startswith("cuda"),
               "settings": {s.name: s.to_dict() for s in self.settings},
               "difference": {"recommended_minus_default": mean, "spread": spread_}}
        if self.setting("best_found") is not None:
            m, s = self.difference("best_found", "recommended")
            out["difference"]["best_found_minus_recommended"] = m
            out["difference"]["best_found_spread"] = s
        out["search"] = dict(self.search) if self.search is not None else None
        return out


def default_hyperparameters(hp: Hyperparameters) -> Hyperparameters:
    """The binary default with the recommendation's classifier and training budget."""
    head = next((g.modules for g in hp.lr_groups if g.name == "head"), ())
    # Only the classifier is new in the binary practice, whatever the recommendation's head.
    head = tuple(m for m in head if m not in hp.reinit_modules)
    return binary_default(head_modules=head, budget=hp)


def validate_recommendation(
    recommendation: Recommendation,
    remake: Callable[[Mapping[str, Any]], Recommendation],
    backbone: Backbone,
    split: DataSplit,
    *,
    validation: ValidationOptions,
    search: SearchOptions | None = None,
    seed: int = 0,
    device: str = "cpu",
    fixed: Sequence[str] = (),
    use_cache: bool = True,
    say: Callable[[str], None] = lambda _text: None,
    progress: Progress | None = None,
    timings: dict[str, float] | None = None,
) -> Validation:
    """Fine-tune the binary default and ``recommendation`` (and, with ``search``, the best of a
    search seeded by it) on ``split``; ``remake(overrides)`` re-runs the heuristics with extra
    overrides (for the search). ``fixed`` names hyperparameters the user set (not searched).
    Finished runs are cached (``use_cache``): a rerun trains only what it has not seen."""
    timings = timings if timings is not None else {}
    hp = recommendation.hyperparameters
    budget = Budget.for_recommendation(hp, validation.epochs, validation.image_size)
    say(f"Decoding {len(split.samples)} images at {budget.image_size} px for fine-tuning")
    mark = time.perf_counter()
    codes = [c for _, c in split.samples]
    on_image = progress("decoding", len(codes), "images") if progress else None
    data = load_image_tensors([p for p, _ in split.samples], codes, budget.image_size,
                              on_image=on_image)
    timings["decode_s"] = time.perf_counter() - mark
    runner = SettingRunner(backbone, data, split, budget,
                           seeds=tuple(seed + i for i in range(validation.seeds)),
                           device=device, use_cache=use_cache, say=say, progress=progress,
                           timings=timings)
    if search is not None and search.role == "worker":
        _best, search_info = search_near(
            recommendation, remake, runner, None, trials=search.trials,
            storage=search.storage, fixed=fixed, seed=seed, study=search.study,
            prune=search.prune)
        return Validation(split=split, budget=budget, seeds=runner.seeds, device=device,
                          settings=(), search=search_info)
    default = runner.train("default", default_hyperparameters(hp))
    recommended = runner.train("recommended", hp)
    settings = [default, recommended]
    search_info = None
    if search is not None:
        best, search_info = search_near(recommendation, remake, runner, recommended,
                                        trials=search.trials, storage=search.storage,
                                        fixed=fixed, seed=seed, study=search.study,
                                        prune=search.prune)
        settings.append(best)
    return Validation(split=split, budget=budget, seeds=runner.seeds, device=device,
                      settings=tuple(settings), search=search_info,
                      blocks=tuple(b.name for b in backbone.blocks),
                      treatment=block_treatment(hp, backbone.blocks))


def block_treatment(hp: Hyperparameters, blocks: Sequence[Block]) -> tuple[str, ...]:
    """Per block: ``"re-init"`` when ``hp`` re-initialises it, else ``"lr X"``, the peak rate
    of the group that trains it (the group of the rest where none names it)."""
    rest = next((g for g in hp.lr_groups if g.rest), None)
    out = []
    for block in blocks:
        if any(block.contains(m) or inside(m, block.modules) for m in hp.reinit_modules):
            out.append("re-init")
            continue
        group = next((g for g in hp.lr_groups if block.name in g.blocks
                      or any(inside(m, g.modules) for m in block.modules)), rest)
        out.append(f"lr {group.lr:.3g}" if group is not None else "")
    return tuple(out)
