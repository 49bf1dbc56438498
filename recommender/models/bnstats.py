"""Target activation statistics at every BatchNorm layer, next to the stored source ones.

Each BatchNorm layer keeps the per-channel running mean and variance of its input on the
source data (ImageNet). Feeding target images in eval mode and measuring the same moments
of each layer's input shows, layer by layer, how far the target's activations are from the
source's (the statistics AdaBN, Li et al. 2016, re-estimates). The distance itself is a
probe (``probes.bn_shift``); this module only gathers the moments.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from heuristics import Block


class _Moments:
    """Per-channel count, mean and sum of squared deviations, merged batch by batch
    (Chan et al.'s parallel update) in float64, so that large N loses no precision. The
    sums stay on the layer's device (on a GPU, no copy to the host per layer and batch)."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def add(self, x: torch.Tensor) -> None:
        dims = [d for d in range(x.ndim) if d != 1]  # every axis but the channels
        n = x.numel() // x.shape[1]
        var, mean = torch.var_mean(x.float(), dim=dims, correction=0)
        mean = mean.double()
        m2 = var.double() * n
        if self.mean is None:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta * delta * (self.count * n / total)
        self.count = total

    def means(self) -> np.ndarray:
        return self.mean.cpu().numpy()

    def variance(self) -> np.ndarray:
        return (self.m2 / self.count).cpu().numpy()


class BatchNormRecorder:
    """Forward pre-hooks on every BatchNorm layer of ``model`` gathering its input's moments.

    Use as a context manager around the forward passes; :meth:`per_block` then gives, for
    each block, the stacked statistics of its layers (see ``Features.bn_stats``).
    """

    def __init__(self, model: nn.Module, blocks: Sequence[Block]) -> None:
        self.model = model
        self.blocks = tuple(blocks)
        self.layers = [(name, module) for name, module in model.named_modules()
                       if isinstance(module, nn.modules.batchnorm._BatchNorm)
                       and module.running_mean is not None]
        self.moments = {name: _Moments() for name, _ in self.layers}
        self._handles: list = []

    def __enter__(self) -> BatchNormRecorder:
        for name, module in self.layers:
            moments = self.moments[name]
            self._handles.append(module.register_forward_pre_hook(
                lambda _module, args, moments=moments: moments.add(args[0])))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def per_block(self) -> tuple[np.ndarray | None, ...]:
        columns: list[list[np.ndarray]] = [[] for _ in self.blocks]
        for name, module in self.layers:
            moments = self.moments[name]
            if moments.mean is None:
                continue  # a layer the forward pass did not reach
            index = _block_of(name, self.blocks)
            if index is None:
                continue  # e.g. a BatchNorm in the classifier: not a transferable block
            eps = float(module.eps)
            columns[index].append(np.stack([
                moments.means(),
                moments.variance() + eps,
                module.running_mean.double().cpu().numpy(),
                module.running_var.double().cpu().numpy() + eps,
            ]))
        return tuple(np.concatenate(c, axis=1) if c else None for c in columns)


def _block_of(name: str, blocks: Sequence[Block]) -> int | None:
    for index, block in enumerate(blocks):
        if block.contains(name):
            return index
    return None
