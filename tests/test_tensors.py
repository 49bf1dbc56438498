"""Specification of recommender.data.tensors.load_image_tensors: training images in memory."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from recommender.data.images import MAX_ASPECT_RATIO
from recommender.data.tensors import load_image_tensors


def _noise(path, size: tuple[int, int]):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("size", [(40, 30), (30, 97), (28, 28)])
def test_image_is_resized_on_its_shorter_side_then_centre_cropped(tmp_path, size):
    path = _noise(tmp_path / "x.png", size)
    scale = 64 / min(size)
    w, h = max(64, round(size[0] * scale)), max(64, round(size[1] * scale))
    left, top = (w - 64) // 2, (h - 64) // 2
    expected = Image.open(path).convert("RGB").resize((w, h), Image.BICUBIC).crop(
        (left, top, left + 64, top + 64))

    tensors = load_image_tensors([path], [3], size=64)

    np.testing.assert_array_equal(tensors.images[0].permute(1, 2, 0).numpy(), np.asarray(expected))
    assert tensors.labels.tolist() == [3]


def test_long_thin_image_becomes_its_centre_square_resized(tmp_path):
    width = int(MAX_ASPECT_RATIO) * 10  # as long as open_rgb lets through
    path = _noise(tmp_path / "long.png", (width, 10))
    left = (width - 10) // 2
    expected = Image.open(path).convert("RGB").crop((left, 0, left + 10, 10)).resize(
        (1024, 1024), Image.BICUBIC)

    tensors = load_image_tensors([path], [0], size=1024)

    np.testing.assert_array_equal(tensors.images[0].permute(1, 2, 0).numpy(), np.asarray(expected))
