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

# On the CPU the moments are taken chunk by chunk, each chunk of about this many values
# merged into the running moments: a chunk and its deviations stay in the core's cache, where
# the deviations of a whole batch would go out to memory and back. About 8x faster than
# torch.var_mean over the (N, H, W) axes on Lite0's channels-last inputs at 224 px, batch 32
# (benchmarks/bench_bnstats.py). None: one fused torch.var_mean per batch, as on a GPU (one
# kernel instead of a few per chunk; not measured against the chunks there).
CPU_CHUNK: int | None = 1 << 18


class _Moments:
    """Per-channel count, mean and sum of squared deviations, merged chunk by chunk (Chan et
    al.'s parallel update) in float64, so that large N loses no precision. The sums stay on
    the layer's device (on a GPU, no copy to the host per layer and batch)."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def add(self, x: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        """Merge the moments of ``x`` (N, C, ...), any memory layout, over every axis but the
        channels (axis 1); ``rows``: the indices of the images (along axis 0) to include,
        None for all of them."""
        channels = x.shape[1]
        values = x.movedim(1, -1)  # (N, ..., C): a view, contiguous for a channels-last map
        if rows is not None:
            values = values[rows]  # a contiguous copy of those images
        values = values.reshape(-1, channels)  # a view when contiguous, else a copy
        if values.shape[0] == 0:
            return
        if values.device.type != "cpu" or CPU_CHUNK is None:
            var, mean = torch.var_mean(values.float(), dim=0, correction=0)
            self._merge(values.shape[0], mean, var.double() * values.shape[0])
            return
        for chunk in values.split(max(1, CPU_CHUNK // channels)):
            # Two passes over the chunk while it is in the cache: its mean, then the squared
            # deviations from it (no cancellation, as there would be in E[x^2] - E[x]^2).
            chunk = chunk.float()
            mean = chunk.sum(0) / chunk.shape[0]
            self._merge(chunk.shape[0], mean, (chunk - mean).pow_(2).sum(0))

    def _merge(self, n: int, mean: torch.Tensor, m2: torch.Tensor) -> None:
        """Chan's update, in float64, with the count, per-channel mean and sum of squared
        deviations of ``n`` more values per channel."""
        mean, m2 = mean.double(), m2.double()
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
    :meth:`select` before a forward pass restricts the moments to some of its images.
    """

    def __init__(self, model: nn.Module, blocks: Sequence[Block]) -> None:
        self.model = model
        self.blocks = tuple(blocks)
        self.layers = [(name, module) for name, module in model.named_modules()
                       if isinstance(module, nn.modules.batchnorm._BatchNorm)
                       and module.running_mean is not None]
        self.moments = {name: _Moments() for name, _ in self.layers}
        self._handles: list = []
        self._rows: torch.Tensor | None = None

    def select(self, rows: torch.Tensor | None) -> None:
        """The images of the next forward passes' batches that the moments include: None for
        all of them, else a 1-D boolean mask or index tensor over the batch (best on the
        model's device); with none selected, the layers' inputs are not read at all."""
        if rows is not None and rows.dtype == torch.bool:
            rows = torch.nonzero(rows).flatten()
        self._rows = rows

    def _add(self, moments: _Moments, x: torch.Tensor) -> None:
        rows = self._rows
        if rows is None:
            moments.add(x)
        elif rows.numel():
            moments.add(x, rows.to(x.device))

    def __enter__(self) -> BatchNormRecorder:
        for name, module in self.layers:
            moments = self.moments[name]
            self._handles.append(module.register_forward_pre_hook(
                lambda _module, args, moments=moments: self._add(moments, args[0])))
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
