"""Rebuild ``data/fashion-mnist-sample`` from the Fashion-MNIST test set.

The bundled sample is 20 images per class from the Fashion-MNIST t10k split
(Zalando SE, MIT licence), picked with a fixed seed and written as PNG files
in the ImageFolder layout. Run from the repository root::

    apt-get download dataset-fashion-mnist && dpkg-deb -x dataset-fashion-mnist_*.deb /tmp/fm
    python data/build_sample.py /tmp/fm/usr/share/datasets/fashion-mnist
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("t-shirt_top", "trouser", "pullover", "dress", "coat",
           "sandal", "shirt", "sneaker", "bag", "ankle_boot")
PER_CLASS = 20
SEED = 0


def read_idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        return np.frombuffer(fh.read(), dtype=np.uint8, offset=offset)


def main(source: Path, out: Path) -> None:
    images = read_idx(source / "t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    labels = read_idx(source / "t10k-labels-idx1-ubyte.gz", 8)
    rng = np.random.default_rng(SEED)
    for label, name in enumerate(CLASSES):
        picked = np.sort(rng.choice(np.flatnonzero(labels == label), PER_CLASS, replace=False))
        (out / name).mkdir(parents=True, exist_ok=True)
        for index in picked:
            Image.fromarray(images[index], mode="L").save(out / name / f"t10k_{index:05d}.png")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(__file__).parent / "fashion-mnist-sample")
