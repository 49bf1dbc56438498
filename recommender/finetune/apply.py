"""Put a recommendation into any PyTorch training loop.

:func:`apply_recommendation` takes a model with pre-trained weights and a recommendation (the
:class:`~recommender.pipeline.Result` of :func:`recommender.recommend`, a
``heuristics.Recommendation`` or its ``heuristics.Hyperparameters``; a JSON document is read
with ``Hyperparameters.from_dict(document["recommendation"]["hyperparameters"])``) and
returns what a plain loop needs::

    applied = apply_recommendation(model, result, num_classes=10)
    optimizer = applied.optimizer()          # one parameter group per learning-rate group
    for images, labels in loader:
        loss = F.cross_entropy(model(images), labels) + applied.regulariser()
        optimizer.zero_grad(); loss.backward(); optimizer.step()

It re-initialises the recommended top blocks and the head, builds the optimiser's parameter
groups (every trainable parameter in exactly one), and makes the L2-SP + L2 penalty
``alpha/2 ||w - w0||^2`` toward a frozen snapshot ``w0`` of the pre-trained weights on the
groups marked ``l2sp`` and ``beta/2 ||w||^2`` on the groups marked ``l2``. The penalty is a
loss term, so the optimiser itself has no weight decay (for SGD the two are the same update).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from heuristics import Hyperparameters, LrGroup, Recommendation
from heuristics.types import inside
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


def hyperparameters_of(recommendation: Any) -> Hyperparameters:
    """The hyperparameters of a pipeline ``Result``, a ``heuristics.Recommendation``, or the
    ``Hyperparameters`` themselves."""
    if isinstance(recommendation, Hyperparameters):
        return recommendation
    if isinstance(recommendation, Recommendation):
        return recommendation.hyperparameters
    if isinstance(getattr(recommendation, "recommendation", None), Recommendation):
        return recommendation.recommendation.hyperparameters  # a pipeline Result
    if isinstance(recommendation, Mapping):
        raise ApplyError("A JSON recommendation must be read into Hyperparameters first: "
                         "heuristics.Hyperparameters.from_dict(document['recommendation']"
                         "['hyperparameters']).")
    raise ApplyError(f"Not a recommendation: {type(recommendation).__name__}; pass the Result "
                     "of recommender.recommend, a heuristics.Recommendation or its "
                     "Hyperparameters.")


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
        A pipeline ``Result``, a ``heuristics.Recommendation`` or ``heuristics.Hyperparameters``
        (from a JSON document: ``Hyperparameters.from_dict``).
    num_classes : int, optional
        Give the head this many outputs (``reset_classifier`` on timm models, else each
        ``nn.Linear`` of the head group is replaced). Without it the head keeps its shape and
        is re-initialised.
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
