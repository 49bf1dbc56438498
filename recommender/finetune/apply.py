"""Put a recommendation into any PyTorch training loop.

:func:`apply_recommendation` takes a model with pre-trained weights and a recommendation (the
:class:`~recommender.pipeline.Result` of :func:`recommender.recommend`, the JSON document of
``nbtl-recommend --json`` read by :func:`load_recommendation`, a
``heuristics.Recommendation`` or its ``heuristics.Hyperparameters``) and returns what a plain
loop needs::

    applied = apply_recommendation(model, load_recommendation("rec.json"))
    optimizer = applied.optimizer()          # one parameter group per learning-rate group
    scheduler = applied.scheduler(optimizer, steps_per_epoch=len(loader))
    loss_fn = applied.loss()                 # with the recommended label smoothing
    for images, labels in loader:
        loss = loss_fn(model(images), labels) + applied.regulariser()
        optimizer.zero_grad(); loss.backward(); optimizer.step(); scheduler.step()

(:meth:`Applied.phases` adds LP-FT's head-only phase; see :mod:`recommender.finetune.loop`.)

It re-initialises the recommended top blocks and the head, builds the optimiser's parameter
groups (every trainable parameter in exactly one), and makes the L2-SP + L2 penalty
``alpha/2 ||w - w0||^2`` toward a frozen snapshot ``w0`` of the pre-trained weights on the
groups marked ``l2sp`` and ``beta/2 ||w||^2`` on the groups marked ``l2``. The penalty is a
loss term, so the optimiser itself has no weight decay (for SGD the two are the same update).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from heuristics import Hyperparameters, LrGroup, Recommendation
from heuristics.types import inside
from recommender.finetune.loop import Phase, lr_scheduler, phases
from recommender.finetune.training import build_optimizer

# What ``exclude_from_decay`` may name, and the parameters each kind covers.
NORM_LAYERS = (_BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm1d, nn.InstanceNorm2d,
               nn.InstanceNorm3d, nn.LocalResponseNorm)


class ApplyError(ValueError):
    """The recommendation does not fit the model (e.g. it names modules the model lacks)."""


@dataclass(frozen=True)
class ParamGroup:
    """One learning-rate group: its name, peak learning rate, penalty and parameter names."""

    name: str
    lr: float
    penalty: str  # "l2sp" or "l2"
    names: tuple[str, ...]


class L2SPRegulariser(nn.Module):
    """``alpha/2 * sum ||w - w0||^2`` over the L2-SP parameters plus ``beta/2 * sum ||w||^2``
    over the L2 parameters; ``w0`` is a frozen copy taken when the object is made.

    Call it with no argument inside the loss: ``loss = task_loss + regulariser()``. Move it
    with the model (``regulariser.to(device)``): the snapshot is kept as buffers.
    """

    def __init__(self, model: nn.Module, l2sp_names: Sequence[str], l2_names: Sequence[str],
                 alpha: float, beta: float,
                 reference: Mapping[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        params = dict(model.named_parameters())
        overlap = set(l2sp_names) & set(l2_names)
        if overlap:
            raise ApplyError(f"Parameters under both L2-SP and L2: {sorted(overlap)[:5]}")
        self.alpha, self.beta = float(alpha), float(beta)
        self.l2sp_names = tuple(l2sp_names)
        self.l2_names = tuple(l2_names)
        # Parameters are held by reference (the model owns them); the snapshot is a buffer.
        self._l2sp = [params[n] for n in self.l2sp_names]
        self._l2 = [params[n] for n in self.l2_names]
        source = reference if reference is not None else {n: params[n] for n in l2sp_names}
        for i, name in enumerate(self.l2sp_names):
            self.register_buffer(f"w0_{i}", source[name].detach().clone(), persistent=False)

    def forward(self) -> torch.Tensor:
        device = (self._l2sp or self._l2 or [torch.zeros(())])[0].device
        if self._l2sp and self.w0_0.device != device:  # the model moved after we were made
            self.to(device)
        total = torch.zeros((), device=device)
        if self.alpha and self._l2sp:
            pulls = [(w - getattr(self, f"w0_{i}")).pow(2).sum() for i, w in enumerate(self._l2sp)]
            total = total + 0.5 * self.alpha * torch.stack(pulls).sum()
        if self.beta and self._l2:
            total = total + 0.5 * self.beta * torch.stack([w.pow(2).sum() for w in self._l2]).sum()
        return total

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha:g} on {len(self.l2sp_names)} tensors, "
                f"beta={self.beta:g} on {len(self.l2_names)} tensors")


@dataclass(frozen=True)
class Applied:
    """What :func:`apply_recommendation` made: the model (changed in place), the parameter
    groups, the regulariser, and which tensors were re-initialised."""

    model: nn.Module
    groups: tuple[ParamGroup, ...]
    regulariser: L2SPRegulariser
    reinitialised: tuple[str, ...]  # parameter and buffer names given fresh values
    hyperparameters: Hyperparameters

    def param_groups(self) -> list[dict[str, Any]]:
        """``torch.optim`` parameter groups: ``params``, ``lr``, ``name``, no weight decay (the
        regulariser is the penalty); each group's peak ``lr`` is also kept as ``initial_lr``
        for schedulers."""
        params = dict(self.model.named_parameters())
        return [{"params": [params[n] for n in g.names], "lr": g.lr, "initial_lr": g.lr,
                 "name": g.name, "weight_decay": 0.0} for g in self.groups if g.names]

    def optimizer(self) -> torch.optim.Optimizer:
        """The recommended optimiser over :meth:`param_groups`."""
        hp = self.hyperparameters
        try:
            return build_optimizer(self.param_groups(), hp.optimizer, hp.base_lr, hp.momentum)
        except ValueError as exc:
            raise ApplyError(str(exc)) from None

    def head_names(self) -> tuple[str, ...]:
        """Parameters of the new layers (the head group): what LP-FT trains first."""
        return next((g.names for g in self.groups if g.name == "head"), ())

    def scheduler(self, optimizer: torch.optim.Optimizer, steps_per_epoch: int
                  ) -> torch.optim.lr_scheduler.LambdaLR:
        """The recommended warm-up and schedule over all ``epochs``, stepped once per batch,
        for a loop without LP-FT's head-only phase (else use :meth:`phases`)."""
        hp = self.hyperparameters
        return lr_scheduler(optimizer, steps_per_epoch, epochs=hp.epochs,
                            warmup_epochs=hp.warmup_epochs, schedule=hp.schedule)

    def phases(self) -> tuple[Phase, ...]:
        """The training phases: with LP-FT the head alone for ``lp_epochs`` (the rest frozen
        and in eval mode), then everything; without, one phase of ``epochs``."""
        return phases(self.model, self.param_groups(), self.head_names(), self.hyperparameters)

    def loss(self) -> nn.CrossEntropyLoss:
        """Cross-entropy with the recommended label smoothing."""
        return nn.CrossEntropyLoss(label_smoothing=self.hyperparameters.label_smoothing)


@dataclass(frozen=True)
class SavedRecommendation:
    """A recommendation read back from the JSON document of ``nbtl-recommend --json``: its
    hyperparameters and the classes, in the order nbtl numbered them, of the dataset it was
    made for (so the new head gets their number)."""

    hyperparameters: Hyperparameters
    classes: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def load_recommendation(source: str | os.PathLike | Mapping[str, Any]) -> SavedRecommendation:
    """Read the JSON document that ``nbtl-recommend PATH --json FILE`` wrote (a path, or the
    document already parsed) for :func:`apply_recommendation`.

    Raises
    ------
    ApplyError
        Not JSON, or not a recommendation document (the message says which key is missing).
    """
    where = "the document"
    if not isinstance(source, Mapping):
        where = str(source)
        try:
            source = json.loads(Path(source).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ApplyError(f"{where} is not JSON ({exc}); pass the file that "
                             "nbtl-recommend --json wrote.") from None
    try:
        hp = Hyperparameters.from_dict(source["recommendation"]["hyperparameters"])
        classes = tuple(source["dataset"]["classes"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ApplyError(f"{where} is not a recommendation written by nbtl-recommend --json "
                         f"({type(exc).__name__}: {exc}).") from None
    return SavedRecommendation(hyperparameters=hp, classes=classes)


def hyperparameters_of(recommendation: Any) -> Hyperparameters:
    """The hyperparameters of a pipeline ``Result``, a :class:`SavedRecommendation`, a
    ``heuristics.Recommendation``, or the ``Hyperparameters`` themselves."""
    if isinstance(recommendation, Hyperparameters):
        return recommendation
    if isinstance(recommendation, (Recommendation, SavedRecommendation)):
        return recommendation.hyperparameters
    if isinstance(getattr(recommendation, "recommendation", None), Recommendation):
        return recommendation.recommendation.hyperparameters  # a pipeline Result
    if isinstance(recommendation, (Mapping, str, os.PathLike)):
        raise ApplyError("A JSON recommendation is read with recommender.load_recommendation"
                         "(path or document) first.")
    raise ApplyError(f"Not a recommendation: {type(recommendation).__name__}; pass the Result "
                     "of recommender.recommend, recommender.load_recommendation(json), a "
                     "heuristics.Recommendation or its Hyperparameters.")


def num_classes_of(recommendation: Any) -> int | None:
    """The number of target classes a recommendation was made for, where it knows it (a
    pipeline ``Result`` or a :class:`SavedRecommendation`; the advice alone does not)."""
    if isinstance(recommendation, SavedRecommendation):
        return recommendation.num_classes
    dataset = getattr(recommendation, "dataset", None)  # a pipeline Result
    classes = getattr(dataset, "classes", None)
    return len(classes) if classes else None


def apply_recommendation(
    model: nn.Module,
    recommendation: Any,
    *,
    num_classes: int | None = None,
    seed: int = 0,
    init_model: nn.Module | None = None,
) -> Applied:
    """Prepare ``model`` (pre-trained, changed in place) for fine-tuning as recommended.

    Parameters
    ----------
    model : nn.Module
        The pre-trained network, e.g. ``timm.create_model(..., pretrained=True)``.
    recommendation
        A pipeline ``Result``, a JSON document read by :func:`load_recommendation`, a
        ``heuristics.Recommendation`` or ``heuristics.Hyperparameters``.
    num_classes : int, optional
        Give the head this many outputs (``reset_classifier`` on timm models, else each
        ``nn.Linear`` of the head group is replaced). Default: the number of classes of the
        dataset the recommendation was made for (a ``Result`` or a saved document knows it);
        where it is not known, the head keeps its shape and is re-initialised.
    seed : int
        Seeds the new weights of the head and of the re-initialised blocks.
    init_model : nn.Module, optional
        A freshly initialised model of the same architecture to copy re-initialised blocks
        from (the architecture's own initialisation). Without it, each module's
        ``reset_parameters()`` is used.

    Raises
    ------
    ApplyError
        A group or re-initialised module the model does not have, a parameter in two groups,
        or a trainable parameter in none.
    """
    hp = hyperparameters_of(recommendation)
    if num_classes is None:
        num_classes = num_classes_of(recommendation)
    modules = dict(model.named_modules())
    for spec in hp.lr_groups:
        for name in spec.modules:
            if name not in modules:
                raise ApplyError(f"Group {spec.name!r} names module {name!r}, which the model "
                                 "does not have: was the recommendation made for another model?")
    reinit_modules = list(hp.reinit_modules)
    for name in reinit_modules:
        if name not in modules:
            raise ApplyError(f"Module {name!r} to re-initialise is not in the model.")
    head_spec = next((g for g in hp.lr_groups if g.name == "head"), None)
    head_modules = list(head_spec.modules) if head_spec else []

    # The values before anything changes; their parameters are the L2-SP reference.
    before = _tensors(model)
    pretrained = {n: before[n] for n, _ in model.named_parameters()}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _reinit(model, reinit_modules, init_model)
        _new_head(model, head_modules, num_classes)
    after = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    reinitialised = tuple(n for n, t in after.items()
                          if n not in before or before[n].shape != t.shape
                          or not torch.equal(before[n], t))
    fresh = set(reinitialised) | {n for n, _ in model.named_parameters() if n not in pretrained}
    fresh |= {n for n in pretrained if inside(n, reinit_modules + head_modules)}

    groups = _assign(model, hp.lr_groups)
    excluded = _excluded(model, hp.exclude_from_decay)
    l2sp, l2 = [], []
    for group in groups:
        for name in group.names:
            if name in excluded:
                continue
            # A new tensor has no pre-trained value to pull toward: plain L2, as in the paper.
            if group.penalty == "l2sp" and name not in fresh:
                l2sp.append(name)
            else:
                l2.append(name)
    regulariser = L2SPRegulariser(model, l2sp, l2, alpha=hp.l2sp_weight, beta=hp.l2_weight,
                                  reference=pretrained)
    return Applied(model=model, groups=tuple(groups), regulariser=regulariser,
                   reinitialised=reinitialised, hyperparameters=hp)


# --- helpers ---------------------------------------------------------------------------------

def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    out = {n: p.detach().clone() for n, p in model.named_parameters()}
    out.update({n: b.detach().clone() for n, b in model.named_buffers()})
    return out


def _reinit(model: nn.Module, names: Sequence[str], init_model: nn.Module | None) -> None:
    if not names:
        return
    if init_model is not None:
        fresh = init_model.state_dict()
        own = model.state_dict()
        with torch.no_grad():
            for key, value in own.items():
                if inside(key, names):
                    if key not in fresh or fresh[key].shape != value.shape:
                        raise ApplyError(f"init_model has no tensor {key!r} of shape "
                                         f"{tuple(value.shape)}: it is another architecture.")
                    value.copy_(fresh[key])
        return
    modules = dict(model.named_modules())
    for name in names:
        for sub in modules[name].modules():
            if hasattr(sub, "reset_parameters"):
                sub.reset_parameters()
            if isinstance(sub, _BatchNorm):
                sub.reset_running_stats()


def _new_head(model: nn.Module, head_modules: Sequence[str], num_classes: int | None) -> None:
    if num_classes is not None and hasattr(model, "reset_classifier"):
        model.reset_classifier(num_classes)  # timm: the architecture's own head init
        return
    for name in head_modules:
        module = model.get_submodule(name)
        if isinstance(module, nn.Linear) and num_classes is not None:
            parent, _, child = name.rpartition(".")
            owner = model.get_submodule(parent) if parent else model
            new = nn.Linear(module.in_features, num_classes, bias=module.bias is not None)
            setattr(owner, child, new.to(module.weight.device, module.weight.dtype))
        else:
            for sub in module.modules():
                if hasattr(sub, "reset_parameters"):
                    sub.reset_parameters()


def _assign(model: nn.Module, specs: Sequence[LrGroup]) -> list[ParamGroup]:
    """Each trainable parameter into the group whose modules contain it, else the ``rest``
    group; exactly one group per parameter."""
    rest = [s for s in specs if s.rest]
    if len(rest) > 1:
        raise ApplyError(f"More than one 'rest' group: {[s.name for s in rest]}")
    members: dict[str, list[str]] = {s.name: [] for s in specs}
    unplaced = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        owners = [s.name for s in specs if inside(name, s.modules)]
        if len(owners) > 1:
            raise ApplyError(f"Parameter {name!r} is in groups {owners}; a parameter must be in "
                             "exactly one.")
        if owners:
            members[owners[0]].append(name)
        elif rest:
            members[rest[0].name].append(name)
        else:
            unplaced.append(name)
    if unplaced:
        raise ApplyError(f"{len(unplaced)} trainable parameters are in no group (e.g. "
                         f"{unplaced[0]!r}): was the recommendation made for another model?")
    return [ParamGroup(s.name, float(s.lr), s.penalty, tuple(members[s.name])) for s in specs]


def _excluded(model: nn.Module, kinds: Iterable[str]) -> set[str]:
    kinds = set(kinds)
    out: set[str] = set()
    for module_name, module in model.named_modules():
        for pname, _ in module.named_parameters(recurse=False):
            full = f"{module_name}.{pname}" if module_name else pname
            if "batchnorm" in kinds and isinstance(module, NORM_LAYERS):
                out.add(full)
            elif "bias" in kinds and pname == "bias":
                out.add(full)
    return out
