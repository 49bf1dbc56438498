"""What your own training loop needs besides the parameter groups, so that it follows the
whole recommendation: the learning-rate schedule, the LP-FT phases and the backbone's
preprocessing.

:meth:`~recommender.finetune.apply.Applied.phases` gives the phases; each makes its optimiser
and its schedule, and puts the model in the right mode::

    for phase in applied.phases():          # LP-FT: the head alone first, when recommended
        optimizer = phase.optimizer()
        scheduler = phase.scheduler(optimizer, steps_per_epoch=len(loader))
        for epoch in range(phase.epochs):
            phase.train()                   # frozen blocks stay in eval mode
            for images, labels in loader:
                ...; optimizer.step(); scheduler.step()

The schedule is nbtl's own (:func:`recommender.finetune.training._lr_at`), so a user's loop
and ``--validate`` decay the rate alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from heuristics import Hyperparameters
from heuristics.types import inside
from recommender.finetune.training import _lr_at, build_optimizer


def lr_scheduler(optimizer: torch.optim.Optimizer, steps_per_epoch: int, *, epochs: int,
                 warmup_epochs: int, schedule: str) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler that scales every group's peak ``lr`` (its ``initial_lr``) by a linear
    warm-up over ``warmup_epochs`` and then ``schedule`` (``"cosine"`` to 0, ``"step"`` x0.1 at
    half and three quarters, ``"constant"``) over the rest of ``epochs``; call ``step()`` after
    every batch.

    Steps past the end keep the last factor (a cosine does not climb back up).

    Raises
    ------
    ValueError
        ``steps_per_epoch`` or ``epochs`` below 1.
    """
    if steps_per_epoch < 1 or epochs < 1:
        raise ValueError(f"steps_per_epoch ({steps_per_epoch}) and epochs ({epochs}) must be "
                         "at least 1: is the loader empty?")
    total = epochs * steps_per_epoch
    warmup = min(warmup_epochs, epochs) * steps_per_epoch

    def factor(step: int) -> float:
        return _lr_at(min(step, total), 1.0, warmup, total, schedule)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass(frozen=True)
class Phase:
    """One stretch of training: which parameter groups learn for how many epochs, and which
    modules stay frozen in eval mode (their BatchNorm statistics do not move)."""

    name: str  # "head" (LP-FT's head-only phase) or "all"
    epochs: int
    warmup_epochs: int
    model: nn.Module
    groups: tuple[dict[str, Any], ...]  # torch.optim parameter groups, as Applied.param_groups
    frozen: tuple[str, ...]  # module names
    hyperparameters: Hyperparameters

    def train(self) -> None:
        """Train mode, with the frozen modules in eval mode and only this phase's parameters
        requiring gradients (as nbtl's own runs do); call it at the start of every epoch, since
        an evaluation in between leaves the model in eval mode."""
        trainable = {id(p) for g in self.groups for p in g["params"]}
        for p in self.model.parameters():
            p.requires_grad_(id(p) in trainable)
        self.model.train()
        for name, module in self.model.named_modules():
            if name and inside(name, self.frozen):
                module.eval()

    def optimizer(self) -> torch.optim.Optimizer:
        """The recommended optimiser over this phase's groups only."""
        hp = self.hyperparameters
        return build_optimizer([dict(g) for g in self.groups], hp.optimizer, hp.base_lr,
                               hp.momentum)

    def scheduler(self, optimizer: torch.optim.Optimizer, steps_per_epoch: int
                  ) -> torch.optim.lr_scheduler.LambdaLR:
        """This phase's warm-up and schedule (see :func:`lr_scheduler`)."""
        return lr_scheduler(optimizer, steps_per_epoch, epochs=self.epochs,
                            warmup_epochs=self.warmup_epochs,
                            schedule=self.hyperparameters.schedule)


def phases(model: nn.Module, groups: list[dict[str, Any]], head: tuple[str, ...],
           hp: Hyperparameters) -> tuple[Phase, ...]:
    """LP-FT (Kumar et al., ICLR 2022): ``lp_epochs`` of the head alone, the rest frozen and
    in eval mode, then every group for the remaining epochs; without LP-FT one phase.

    Only the phase that trains the pre-trained weights warms up: warm-up is there to keep the
    large early updates a random head causes from distorting those weights, and in the
    head-only phase they are frozen.
    """
    lp = max(0, min(hp.lp_epochs, hp.epochs - 1)) if hp.lp_ft else 0
    whole = Phase("all", hp.epochs - lp, hp.warmup_epochs, model, tuple(groups), (), hp)
    if not lp:
        return (whole,)
    frozen = sorted({n.rpartition(".")[0] for n, _ in model.named_parameters() if n not in head})
    head_groups = tuple(g for g in groups if g["name"] == "head")
    return (Phase("head", lp, 0, model, head_groups, tuple(frozen), hp), whole)


def transforms(model: Any, train: bool) -> Callable[[Any], torch.Tensor]:
    """The preprocessing the backbone was trained with, for a PIL image: timm's
    ``create_transform`` from ``resolve_data_config`` (the model's ``pretrained_cfg``), with
    timm's random-resized crop and flip when ``train``.

    ``model`` is a :class:`~recommender.models.backbones.Backbone` (its data config, so an
    ``image_size`` given to ``load_backbone`` holds) or a timm model.
    """
    from timm.data import create_transform, resolve_data_config

    config = getattr(model, "data_config", None)
    if config is None:
        config = resolve_data_config({}, model=model)
    return create_transform(**config, is_training=train)
