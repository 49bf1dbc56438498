"""A small, deterministic supervised training loop on images held in memory.

Used for fine-tuning runs and the measured scratch accuracy: each epoch draws augmented crops
from the decoded images (:class:`recommender.data.tensors.ImageTensors`) on the main process
with a seeded generator, so the same seed gives the same numbers on the CPU.
:func:`build_optimizer` is the one place an optimiser is made.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from heuristics.types import inside
from recommender.data.tensors import ImageTensors

OPTIMIZERS = ("sgd_nesterov", "sgd", "adamw")


@dataclass(frozen=True)
class TrainConfig:
    """How to train: SGD with Nesterov momentum or AdamW, cosine decay after a linear warm-up."""

    epochs: int
    lr: float
    weight_decay: float
    batch_size: int = 32
    optimizer: str = "sgd_nesterov"  # or "adamw"
    momentum: float = 0.9
    warmup_fraction: float = 0.1  # of all steps: a small set has few steps per epoch
    label_smoothing: float = 0.1
    min_crop_scale: float = 0.35  # random-resized-crop area range [min, 1]
    schedule: str = "cosine"  # after the warm-up: "cosine", "step" or "constant"


def train(model: nn.Module, data: ImageTensors, config: TrainConfig, *, mean: Sequence[float],
          std: Sequence[float], seed: int, device: str = "cpu",
          groups: list[dict] | None = None,
          regulariser: Callable[[], torch.Tensor] | None = None,
          frozen: Sequence[str] = (),
          on_epoch: Callable[[int, float], None] | None = None,
          on_batch: Callable[[int], None] | None = None) -> nn.Module:
    """Train ``model`` in place on ``data``; ``on_epoch(epoch, mean_loss)`` after each epoch
    and ``on_batch(1)`` after each step.

    ``groups`` are optimiser parameter groups, each with its own peak ``lr`` (default: all
    parameters at ``config.lr``, weight decay on weights of rank >= 2 only); the schedule
    scales every group's peak alike. ``regulariser()`` is added to the loss. Modules named in
    ``frozen`` stay in eval mode (their BatchNorm statistics do not move): pass them with
    groups that leave their parameters out, for a head-only phase.
    """
    generator = torch.Generator().manual_seed(seed)
    model.to(device, memory_format=torch.channels_last)
    _train_mode(model, frozen)
    if groups is None:
        groups = decay_groups(model, config.weight_decay)
    peaks = [group.get("lr", config.lr) for group in groups]
    optimizer = build_optimizer(groups, config.optimizer, config.lr, config.momentum)
    n = data.labels.numel()
    steps_per_epoch = max(1, n // config.batch_size)  # drop the last partial batch
    total = steps_per_epoch * config.epochs
    warmup = max(1, round(config.warmup_fraction * total))
    normalise = _normaliser(mean, std, device)
    step = 0
    for epoch in range(config.epochs):
        order = torch.randperm(n, generator=generator)
        losses = []
        for b in range(steps_per_epoch):
            index = order[b * config.batch_size:(b + 1) * config.batch_size]
            images = _augment(data.images[index], config.min_crop_scale, generator)
            images = normalise(images.to(device)).contiguous(memory_format=torch.channels_last)
            factor = _lr_at(step, 1.0, warmup, total, config.schedule)
            for group, peak in zip(optimizer.param_groups, peaks):
                group["lr"] = peak * factor
            with _autocast(device):
                logits = model(images)
            loss = F.cross_entropy(logits.float(), data.labels[index].to(device),
                                   label_smoothing=config.label_smoothing)
            if regulariser is not None:
                loss = loss + regulariser()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if not math.isfinite(losses[-1]):
                raise TrainingDiverged(epoch + 1, b + 1)
            step += 1
            if on_batch is not None:
                on_batch(1)
        if on_epoch is not None:
            on_epoch(epoch + 1, float(np.mean(losses)))
            _train_mode(model, frozen)  # the callback may have evaluated the model
    return model.eval()


def _train_mode(model: nn.Module, frozen: Sequence[str]) -> None:
    model.train()
    for name, module in model.named_modules():
        if name and inside(name, frozen):
            module.eval()


def build_optimizer(groups: list[dict], name: str, lr: float, momentum: float
                    ) -> torch.optim.Optimizer:
    """The optimiser ``name`` over parameter ``groups``: SGD (with Nesterov momentum for
    ``"sgd_nesterov"``) or AdamW. Each group carries its own ``weight_decay`` (0 where a
    regulariser in the loss is the penalty); ``lr`` is the default for groups without one.

    Raises
    ------
    ValueError
        An optimiser name other than those of :data:`OPTIMIZERS`.
    """
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=0.0)
    if name in ("sgd", "sgd_nesterov"):
        return torch.optim.SGD(groups, lr=lr, momentum=momentum,
                               nesterov=name == "sgd_nesterov" and momentum > 0)
    raise ValueError(f"Unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}.")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite (a learning rate too high for the setting)."""

    def __init__(self, epoch: int, batch: int) -> None:
        super().__init__(f"the loss became NaN or infinite at epoch {epoch}, batch {batch}")
        self.epoch, self.batch = epoch, batch


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Optimiser parameter groups: weight decay on weights of rank >= 2 (convolutions, linear
    layers), none on BatchNorm parameters and biases (rank 1)."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": rest, "weight_decay": 0.0}]


@torch.inference_mode()
def accuracy(model: nn.Module, data: ImageTensors, *, mean: Sequence[float],
             std: Sequence[float], device: str = "cpu", batch_size: int = 64) -> float:
    """Fraction of ``data`` that ``model`` (in eval mode) classifies correctly."""
    model.to(device, memory_format=torch.channels_last).eval()
    normalise = _normaliser(mean, std, device)
    correct = 0
    for start in range(0, data.labels.numel(), batch_size):
        images = normalise(data.images[start:start + batch_size].to(device))
        with _autocast(device):
            logits = model(images.contiguous(memory_format=torch.channels_last))
        labels = data.labels[start:start + batch_size].to(device)
        correct += int((logits.argmax(dim=1) == labels).sum())
    return correct / data.labels.numel()


def _lr_at(step: int, peak: float, warmup: int, total: int, schedule: str = "cosine") -> float:
    """Linear warm-up to ``peak``, then cosine decay to 0, a step decay (x0.1 at half and at
    three quarters of the steps after warm-up) or constant."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "step":
        return peak * (0.1 ** ((progress >= 0.5) + (progress >= 0.75)))
    if schedule == "constant":
        return peak
    return 0.5 * peak * (1.0 + math.cos(math.pi * progress))


def _augment(images: torch.Tensor, min_scale: float, generator: torch.Generator) -> torch.Tensor:
    """Random-resized crop (area in [min_scale, 1], aspect in [3/4, 4/3]) and horizontal flip,
    per image, drawn from ``generator``."""
    size = images.shape[-1]
    out = torch.empty(images.shape, dtype=torch.float32)
    draws = torch.rand((images.shape[0], 5), generator=generator).tolist()
    for i, (u_area, u_ratio, u_x, u_y, u_flip) in enumerate(draws):
        area = size * size * (min_scale + (1.0 - min_scale) * u_area)
        ratio = math.exp(math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * u_ratio)
        w = min(size, max(1, round(math.sqrt(area * ratio))))
        h = min(size, max(1, round(math.sqrt(area / ratio))))
        x, y = int(u_x * (size - w + 1)), int(u_y * (size - h + 1))
        crop = images[i:i + 1, :, y:y + h, x:x + w].float()
        crop = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False)
        out[i] = crop[0].flip(-1) if u_flip < 0.5 else crop[0]
    return out


def _normaliser(mean: Sequence[float], std: Sequence[float], device: str):
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255.0
    s = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255.0
    return lambda x: (x.float() - m) / s


def _autocast(device: str):
    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)
