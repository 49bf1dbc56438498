"""Images decoded once into memory, for training: a uint8 tensor at one resolution.

The images of a small target set are decoded once, resized so that the shorter side is the
training resolution and centre-cropped to a square; each epoch then draws augmented crops from
memory (:mod:`recommender.finetune.training`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from recommender.data.images import (
    MAX_RESIZED_PIXELS,
    UnreadableImage,
    changed_during_run,
    open_rgb,
)


@dataclass(frozen=True)
class ImageTensors:
    """Images (N, 3, S, S) uint8, centre-cropped to S, and their class codes (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def subset(self, index: np.ndarray) -> ImageTensors:
        index = torch.as_tensor(index, dtype=torch.long)
        return ImageTensors(self.images[index], self.labels[index])


def load_image_tensors(paths: Sequence[Path], codes: Sequence[int], size: int,
                       on_image: Callable[[int], None] | None = None) -> ImageTensors:
    """Decode every image, resize its shorter side to ``size`` and centre-crop a square."""
    images = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    for i, path in enumerate(paths):
        try:
            image = open_rgb(path)
        except UnreadableImage as exc:
            raise changed_during_run(path, exc.reason, "training") from None
        image = _resize_and_crop(image, size)
        images[i] = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
        if on_image is not None:
            on_image(1)
    return ImageTensors(images, torch.as_tensor(np.asarray(codes), dtype=torch.long))


def _resize_and_crop(image: Image.Image, size: int) -> Image.Image:
    """Resize ``image`` so that its shorter side is ``size``, then centre-crop a square."""
    scale = size / min(image.size)
    w, h = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    if w * h > MAX_RESIZED_PIXELS:
        # A long thin image would grow huge before the crop (8000x1 at 256 px: 2 GB), so its
        # centre square is cut first; other images keep the exact pixels of resize-then-crop.
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        square = image.crop((left, top, left + side, top + side))
        return square.resize((size, size), Image.BICUBIC)
    image = image.resize((w, h), Image.BICUBIC)
    left, top = (w - size) // 2, (h - size) // 2
    return image.crop((left, top, left + size, top + size))
