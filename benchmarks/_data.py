"""Inputs for the benchmarks: backbone-like synthetic features and real Fashion-MNIST images.

Nothing here is imported by the package; the benchmark scripts put this folder on
``sys.path`` by being run from it (``python benchmarks/bench_*.py``).
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

FASHION_MNIST_CLASSES = ("t-shirt_top", "trouser", "pullover", "dress", "coat",
                         "sandal", "shirt", "sneaker", "bag", "ankle_boot")
# Where Debian's dataset-fashion-mnist package puts the files once unpacked under /tmp/fm/x.
FASHION_MNIST_DIR = Path("/tmp/fm/x/usr/share/datasets/fashion-mnist")


def backbone_like_features(
    n: int, d: int, n_classes: int, *, sep: float = 0.5, latent: int = 128, seed: int = 0,
    view: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Features shaped like a CNN's globally pooled activations, float32 (N, D), and labels.

    A class-structured latent code (``latent`` dims, class centres ``sep`` apart relative
    to the within-class noise) is mixed into D channels with a decaying spectrum, passed
    through a ReLU at 4 "spatial positions" that differ by noise, and averaged: the result
    is non-negative, strongly correlated across channels, mostly non-zero, and of full
    rank, like real pooled features. Classes are balanced.

    ``seed`` draws the samples (labels, latent codes); ``view`` draws how they are mixed
    into channels, so different views of one seed are different layers or networks
    looking at the same images.
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % n_classes
    rng.shuffle(labels)
    code = sep * rng.normal(size=(n_classes, latent))[labels] + rng.normal(size=(n, latent))
    rng = np.random.default_rng([seed, view + 1])
    mixing = rng.normal(size=(latent, d)) * np.exp(-np.arange(latent) / (latent / 4))[:, None]
    bias = (rng.normal(size=d) * 0.5).astype(np.float32)
    pooled = np.zeros((n, d), dtype=np.float32)
    positions = 4
    for _ in range(positions):
        local = code + 0.5 * rng.normal(size=(n, latent))
        pre = (local @ mixing).astype(np.float32) + bias
        pre += 0.3 * rng.standard_normal(size=(n, d), dtype=np.float32)
        pooled += np.maximum(pre, 0.0)
    return pooled / positions, labels


def fashion_mnist_source() -> Path:
    """The unpacked Debian dataset-fashion-mnist files; downloaded with apt-get if missing."""
    if not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        work = Path(tempfile.mkdtemp(prefix="fm-deb-"))
        subprocess.run(["apt-get", "download", "dataset-fashion-mnist"], cwd=work, check=True)
        deb = next(work.glob("dataset-fashion-mnist*.deb"))
        FASHION_MNIST_DIR.parents[3].mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(FASHION_MNIST_DIR.parents[3])], check=True)
        shutil.rmtree(work)
    return FASHION_MNIST_DIR


def _read_idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        return np.frombuffer(fh.read(), dtype=np.uint8, offset=offset)


def fashion_mnist_images(n: int, root: Path, seed: int = 0) -> tuple[list[Path], np.ndarray]:
    """Write ``n`` Fashion-MNIST training images (balanced over the 10 classes) as PNG files
    under ``root/<class>/`` once, and return their paths and integer labels."""
    from PIL import Image

    source = fashion_mnist_source()
    images = _read_idx(source / "train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    labels = _read_idx(source / "train-labels-idx1-ubyte.gz", 8)
    rng = np.random.default_rng(seed)
    per_class = np.full(10, n // 10) + (np.arange(10) < n % 10)
    picked = np.sort(np.concatenate([
        rng.choice(np.flatnonzero(labels == c), k, replace=False) for c, k in enumerate(per_class)
    ]))
    paths = []
    for index in picked:
        path = root / FASHION_MNIST_CLASSES[labels[index]] / f"train_{index:05d}.png"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[index], mode="L").save(path)
        paths.append(path)
    return paths, labels[picked].astype(np.int64)


def extract_real_features(paths: list[Path]):
    """Features of ``paths`` from the default backbone (real ImageNet weights), no cache,
    and the seconds the extraction took (model loading not included)."""
    import time

    from recommender.models.backbones import load_backbone
    from recommender.models.features import extract_features

    backbone = load_backbone(None, None)
    start = time.perf_counter()
    features = extract_features(paths, backbone, use_cache=False)
    return features, time.perf_counter() - start


def cached_real_features(n: int, work: Path, seed: int = 0):
    """Real features of ``n`` Fashion-MNIST images, extracted once and kept in ``work``.

    Returns ``(features, labels, seconds)``: seconds is the time the one extraction took
    (when it was cached, the time of that earlier run).
    """
    import dataclasses
    import json

    from recommender.models.features import Features

    paths, labels = fashion_mnist_images(n, work / f"fashion-mnist-{n}", seed=seed)
    store = work / f"features-{n}-seed{seed}.npz"
    if store.is_file():
        with np.load(store) as data:
            meta = json.loads(str(data["meta"]))
            blocks = tuple(meta["blocks"])
            features = Features(
                blocks,
                tuple(data[f"pretrained/{b}"] for b in blocks),
                tuple(data[f"random_init/{b}"] for b in blocks),
                data["source_probs"],
                **({"bn_stats": tuple(data[f"bn_stats/{b}"] if f"bn_stats/{b}" in data.files
                                      else None for b in blocks)}
                   if "bn_stats" in {f.name for f in dataclasses.fields(Features)} else {}),
            )
        return features, labels, float(meta["seconds"])
    features, seconds = extract_real_features(paths)
    arrays = {"source_probs": features.source_probs,
              "meta": np.array(json.dumps({"blocks": features.blocks, "seconds": seconds}))}
    for i, b in enumerate(features.blocks):
        arrays[f"pretrained/{b}"] = features.pretrained[i]
        arrays[f"random_init/{b}"] = features.random_features[i]
        stats = getattr(features, "bn_stats", ())
        if stats and stats[i] is not None:
            arrays[f"bn_stats/{b}"] = stats[i]
    np.savez(store, **arrays)
    return features, labels, seconds
