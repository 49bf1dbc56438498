"""Which blocks did fine-tuning move? CKA per block between a pre-trained and a fine-tuned net.

Both networks see the same held-out images; at each block's output the pooled features are
compared with debiased linear CKA (:func:`probes.linear_cka`): near 1, fine-tuning left the
block's representation as it was; lower, it moved it (Neyshabur et al., "What is being
transferred in transfer learning?", NeurIPS 2020, used CKA this way).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

import probes
from recommender.errors import UsageError
from recommender.models.backbones import feature_blocks
from recommender.models.features import block_outputs


@dataclass(frozen=True)
class BlockSimilarity:
    """CKA per block (bottom-up) between two networks' features of the same images."""

    blocks: tuple[str, ...]
    cka: tuple[float | None, ...]
    num_images: int

    def to_dict(self) -> dict[str, Any]:
        return {"blocks": list(self.blocks), "cka": list(self.cka),
                "num_images": self.num_images}


def cka_per_block(reference: Iterable[np.ndarray], other: Iterable[np.ndarray]
                  ) -> tuple[float | None, ...]:
    """Debiased linear CKA of each pair of block features (None where it cannot be computed:
    fewer than 4 images)."""
    out: list[float | None] = []
    for a, b in zip(reference, other):
        try:
            out.append(probes.linear_cka(a, b, debiased=True))
        except probes.ProbeError:
            out.append(None)
    return tuple(out)


def block_similarity(
    pretrained: nn.Module,
    finetuned: nn.Module,
    images: torch.Tensor | Iterable[Any],
    *,
    device: str = "cpu",
    batch_size: int = 64,
) -> BlockSimilarity:
    """CKA per block between ``pretrained`` and ``finetuned`` on the same ``images``.

    Parameters
    ----------
    pretrained, finetuned : nn.Module
        Two timm models of the same architecture (the heads may differ: the features are
        taken at each block's output and before the classifier). Their modes and devices are
        restored.
    images : tensor (N, 3, H, W) or iterable of batches
        Preprocessed (normalised) images, e.g. the held-out test set; an iterable may yield
        tensors or ``(images, labels)`` pairs, as a ``DataLoader`` does. At least 4 images.
    device : str
        Where the forward passes run.

    Returns
    -------
    BlockSimilarity
        Block names (nbtl's blocks of the architecture) and the CKA of each, in [-1, 1]:
        1 = unchanged, lower = moved more by fine-tuning.

    Raises
    ------
    UsageError
        If a model has no ``forward_intermediates`` (not a timm model), the two differ in
        their blocks, or fewer than 4 images are given.
    """
    blocks = _blocks(pretrained, "pretrained")
    if _blocks(finetuned, "finetuned") != blocks:
        raise UsageError("block_similarity: the pre-trained and fine-tuned models have "
                         "different blocks.", "Pass two models of the same architecture.")
    batches = _batches(images, batch_size)
    reference = block_outputs(pretrained, batches, len(blocks), device)
    tuned = block_outputs(finetuned, batches, len(blocks), device)
    n = reference[0].shape[0]
    if n < probes.cka.MIN_SAMPLES_DEBIASED:
        raise UsageError(f"block_similarity: got {n} images, CKA needs at least "
                         f"{probes.cka.MIN_SAMPLES_DEBIASED}.", "Pass more held-out images.")
    return BlockSimilarity(blocks, cka_per_block(reference, tuned), n)


def _blocks(model: nn.Module, name: str) -> tuple[str, ...]:
    if not hasattr(model, "forward_intermediates"):
        raise UsageError(f"block_similarity: the {name} model ({type(model).__name__}) has no "
                         "forward_intermediates(), so its blocks' features cannot be taken.",
                         "Pass timm models (timm.create_model).")
    return tuple(b.name for b in feature_blocks(model))


def _batches(images: torch.Tensor | Iterable[Any], batch_size: int) -> list[torch.Tensor]:
    """The images as a list of batches (read once, used for both models)."""
    if isinstance(images, torch.Tensor):
        if images.ndim != 4:
            raise UsageError(f"block_similarity: images of shape {tuple(images.shape)}; "
                             "expected (N, 3, H, W).", "Pass a batch of preprocessed images.")
        return list(images.split(batch_size))
    return [b[0] if isinstance(b, (tuple, list)) else b for b in images]
