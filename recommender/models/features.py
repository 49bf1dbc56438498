"""Layer-wise features in one pass: pooled stage outputs, penultimate features, source head.

One batched ``inference_mode`` pass over the images feeds both the pre-trained backbone and
its random-init twin (for the pre-training gain), so each image is decoded once. The twin's
images (a seeded subset beyond ``TWIN_FLOOR``) come first, in batches of their own; on them
the pass also measures, at every BatchNorm layer of the pre-trained model, the per-channel
mean and variance of the target's activations next to the layer's stored (source) running
statistics. The other images run through a copy of the pre-trained model with its BatchNorm
layers folded into the convolutions (``recommender.models.fusion``: the same features up to
float rounding, in less time). Results are cached in the user cache directory, keyed by the
image files (paths, sizes, mtimes), the model, its weights and the preprocessing.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from recommender.cache import cache_dir, digest, discard, files_identity, try_write
from recommender.data.images import UnreadableImage, changed_during_run, open_rgb
from recommender.errors import UsageError
from recommender.models.backbones import RANDOM_INIT_SEED, Backbone
from recommender.models.bnstats import BatchNormRecorder
from recommender.models.fusion import fold_batchnorm
from recommender.signals import ctrl_c_deferred

# Bump when what is stored changes, so old cache entries are not reused.
# 4: the BatchNorm moments are taken on the twin's subset beyond TWIN_FLOOR images.
# 5: the twin's images first, in batches of their own; BatchNorm folded elsewhere.
FEATURES_VERSION = 5
# The random-init twin (for the pre-training gain) sees every image up to TWIN_FLOOR images,
# then a seeded subset of max(TWIN_FLOOR, N / TWIN_SHARE): its pass costs an eighth of the
# pre-trained one from N = 2,000 on. The BatchNorm moments (for BN shift) are taken on the
# same images: per-channel moments over 250 images times every spatial position are plenty.
# 250 rather than 500 (before): at N = 2,000 the twin's pass is an eighth of the pre-trained
# one instead of a quarter, and the moments are taken on half the images, for a pre-training
# gain whose spread over seeded subsets rose from 0.018-0.032 to 0.020-0.046 per block
# (benchmarks/bench_analysis.py --part twin).
TWIN_FLOOR = 250
TWIN_SHARE = 8


@dataclass(frozen=True)
class Features:
    """Features of N images at each block's output (bottom-up), float32 arrays (N, D_block)."""

    blocks: tuple[str, ...]
    pretrained: tuple[np.ndarray, ...]
    random_features: tuple[np.ndarray, ...]  # the same blocks of the untrained twin, (M, D)
    source_probs: np.ndarray  # (N, Cs) softmax of the pre-trained source head
    # Per block: (4, K) float64 rows target mean, target variance, running mean, running
    # variance over the K channels of the block's BatchNorm layers (variances + the layer's
    # eps: what the layer divides by); None for a block without BatchNorm. The target's
    # moments are over the images of twin_rows().
    bn_stats: tuple[np.ndarray | None, ...] = ()
    from_cache: bool = False
    # The rows (into ``pretrained``) the twin saw, increasing, one per row of
    # ``random_features``; None: all N, in the same order (see twin_rows).
    random_rows: np.ndarray | None = None

    def dims(self) -> tuple[int, ...]:
        return tuple(f.shape[1] for f in self.pretrained)

    def twin_rows(self) -> np.ndarray:
        """The rows of the images the random-init twin saw (all of them up to TWIN_FLOOR),
        which are also those the BatchNorm moments were taken on."""
        if self.random_rows is None:
            return np.arange(self.pretrained[0].shape[0] if self.pretrained else 0)
        return self.random_rows


def twin_subset(n: int) -> np.ndarray:
    """Which of ``n`` images (in the canonical order) the random-init twin and the
    BatchNorm moments see: all of them up to ``TWIN_FLOOR``, else ``max(TWIN_FLOOR,
    n // TWIN_SHARE)`` drawn without regard to labels (the features are keyed by images, not
    labels) from a fixed seed; sorted."""
    size = n if n <= TWIN_FLOOR else max(TWIN_FLOOR, n // TWIN_SHARE)
    if size >= n:
        return np.arange(n)
    rng = np.random.default_rng(RANDOM_INIT_SEED)
    return np.sort(rng.permutation(n)[:size])


class _ImageFiles(TorchDataset):
    """Images as tensors; a file that fails to decode yields its error, not an exception.

    An exception raised in a DataLoader worker comes back re-wrapped with the worker's
    traceback in its message, so failures travel as data and are raised in the main process.
    """

    def __init__(self, paths: Sequence[Path], transform: Callable) -> None:
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        try:
            return self.transform(open_rgb(self.paths[index])), ""
        except UnreadableImage as exc:
            return torch.zeros(0), exc.reason


def _collate(items: list[tuple[torch.Tensor, str]]) -> tuple[torch.Tensor, list[str]]:
    errors = [error for _, error in items]
    if any(errors):
        return torch.zeros(0), errors
    return torch.stack([tensor for tensor, _ in items]), errors


def _raise_unreadable(paths: Sequence[Path], errors: Sequence[str]) -> None:
    """The first of a batch's images (``paths``) that failed to decode, as an error."""
    for path, reason in zip(paths, errors):
        if reason:
            raise changed_during_run(path, reason, "feature extraction")


def cache_key(paths: Sequence[Path], backbone: Backbone, precision: str = "float32") -> str:
    import timm

    return digest({
        "version": FEATURES_VERSION,
        "precision": precision,
        "files": files_identity(paths),
        "model": backbone.name,
        "weights": backbone.weights_id,
        "data_config": backbone.data_config,
        "timm": timm.__version__,
    })


def extract_features(
    paths: Sequence[Path],
    backbone: Backbone,
    *,
    batch_size: int | None = None,
    workers: int | None = None,
    device: str = "auto",
    use_cache: bool = True,
    on_batch: Callable[[int], None] | None = None,
) -> Features:
    """Features of ``paths`` at every block of ``backbone`` and of its random-init twin.

    ``on_batch(n)`` is called after each batch with the number of images it held (for a
    progress bar). With ``use_cache``, a previous identical extraction is loaded instead, and
    a new one is kept when the cache can be written (else a warning); without it, nothing is
    read or written.
    """
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"--batch-size {batch_size} must be at least 1.")
    names = tuple(b.name for b in backbone.blocks)
    # Extracted and cached in one canonical order (by path), handed back in the caller's:
    # the same images give the same cache entry whatever their labels or order.
    order = sorted(range(len(paths)), key=lambda i: str(paths[i]))
    canonical = [paths[i] for i in order]
    device = resolve_device(device)
    if batch_size is None:
        batch_size = default_batch_size(device)
    precision = _precision(device)
    cached_file = (cache_dir() / "features" / f"{cache_key(canonical, backbone, precision)}.npz"
                   if use_cache else None)
    features = None
    if cached_file is not None and cached_file.is_file():
        features = _load(cached_file, names, len(paths))
        if features is not None and on_batch is not None:
            on_batch(len(paths))
    if features is None:
        features = _extract(canonical, backbone, batch_size, workers, device, on_batch)
        if cached_file is not None:
            _save(cached_file, features)
    return _reordered(features, np.argsort(order))


def _reordered(features: Features, rows: np.ndarray) -> Features:
    """``features`` (in the canonical order) with its per-image rows taken in the order
    ``rows``; the twin's rows follow, so that ``random_features[i]`` is always the image of
    ``pretrained[twin_rows()[i]]``, in increasing order (all rows: the same order)."""
    if np.array_equal(rows, np.arange(rows.size)):
        return features
    where = np.argsort(rows)  # canonical row -> caller row
    seen = where[features.twin_rows()]
    order = np.argsort(seen)
    return replace(
        features,
        pretrained=tuple(f[rows] for f in features.pretrained),
        random_features=tuple(f[order] for f in features.random_features),
        source_probs=features.source_probs[rows],
        random_rows=None if seen.size == rows.size else seen[order],
    )


def resolve_device(device: str) -> str:
    """``"auto"``: CUDA when a GPU is present, else the CPU; ``"cuda"`` without one: UsageError."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device} was asked for, but no CUDA GPU is available.",
                         "Use --device cpu (or auto).")
    return device


def _precision(device: str) -> str:
    """The forward passes run in half precision on a GPU (autocast: convolutions and matrix
    products in float16, reductions in float32), in float32 on the CPU."""
    return "float16" if device.startswith("cuda") else "float32"


def default_batch_size(device: str) -> int:
    """Images per forward pass when none is asked for: 8 on the CPU, 32 on a GPU.

    On the CPU a small batch keeps the activations in cache: one bare forward pass of Lite0
    at 224 px over 512 and 1,024 images ran 1.53x and 1.32x faster at 8 than at 32 on 2 cores
    (``benchmarks/bench_analysis.py --part batch``). The features do not depend on the batch
    (eval mode; the same bits at 8 and 32 there, within float rounding in
    tests/test_features.py), so this changes only the time.
    """
    return 32 if device.startswith("cuda") else 8


def default_workers(device: str) -> int:
    """Image-decoding processes: a GPU consumes images faster than 4 processes decode them."""
    return min(8 if device.startswith("cuda") else 4, os.cpu_count() or 1)


def _extract(paths, backbone, batch_size, workers, device, on_batch) -> Features:
    import contextlib

    from timm.data import create_transform

    transform = create_transform(**backbone.data_config, is_training=False)
    if workers is None:
        workers = default_workers(device)
    # The twin's images come first, in batches of their own: the twin runs on the same
    # batches as the pre-trained model, and the BatchNorm moments are taken on whole batches
    # (gathering a few rows out of every layer's input cost almost as much as taking the
    # moments of all of them). The rest follow, pre-trained model only. In eval mode an
    # image's features do not depend on its batch; the rows are put back in order below.
    twin = twin_subset(len(paths))
    rest = np.setdiff1d(np.arange(len(paths)), twin)
    batches = [part[i:i + batch_size].tolist() for part in (twin, rest)
               for i in range(0, len(part), batch_size)]
    twin_batches = -(-len(twin) // batch_size)
    cuda = device.startswith("cuda")
    # Pinned host memory lets the copy to the GPU run asynchronously (non_blocking below),
    # overlapping the next batch's decoding.
    loader = DataLoader(
        _ImageFiles(paths, transform), batch_sampler=batches,
        num_workers=workers, pin_memory=cuda, collate_fn=_collate,
    )
    half = (torch.autocast("cuda", dtype=torch.float16) if _precision(device) == "float16"
            else contextlib.nullcontext())
    models = [backbone.model, backbone.untrained_model()]
    modes = [m.training for m in models]
    # channels_last is about 1.4x faster for these convolutions on CPU (and on GPU).
    for model in models:
        model.eval().to(device, memory_format=torch.channels_last)
    # Beyond the twin's images, a copy of the pre-trained model with its BatchNorm layers
    # folded into the convolutions (see models.fusion) runs the pass. The twin's batches run
    # the models as loaded: the BatchNorm moments are taken there (the recorder's hooks are
    # on the original), and the random-init twin's features, to which the linear probe's
    # argmax is sensitive, stay the bits they were (up to TWIN_FLOOR images, every feature).
    example = torch.randn((2, *backbone.data_config["input_size"]),
                          generator=torch.Generator().manual_seed(0))
    example = example.to(device, memory_format=torch.channels_last)
    folded = fold_batchnorm(models[0], example) if len(twin) < len(paths) else None
    fast = folded or models[0]
    outputs: list[list[list[np.ndarray]]] = [[[] for _ in backbone.blocks] for _ in models]
    probs: list[np.ndarray] = []
    recorder = BatchNormRecorder(backbone.model, backbone.blocks)
    none = torch.zeros(0, dtype=torch.long, device=device)
    try:
        with torch.inference_mode(), recorder, half:
            with ctrl_c_deferred():  # the DataLoader forks its workers here
                loaded = iter(loader)
            for number, (indices, (images, errors)) in enumerate(zip(batches, loaded)):
                _raise_unreadable([paths[i] for i in indices], errors)
                batch = images.to(device, non_blocking=True,
                                  memory_format=torch.channels_last)
                in_twin = number < twin_batches
                # The moments: the twin's images only (the hooks are on the original, which
                # runs every batch when it could not be folded).
                recorder.select(None if in_twin else none)
                runs = models if in_twin else (fast,)
                for model, store in zip(runs, outputs):
                    points, logits = _forward(model, batch, len(backbone.blocks))
                    for column, point in zip(store, points):
                        column.append(point)
                    if store is outputs[0]:
                        probs.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
                if on_batch is not None:
                    on_batch(len(errors))
    finally:
        for model, mode in zip(models, modes):
            model.train(mode)
        backbone.model.to("cpu", memory_format=torch.contiguous_format)
    back = np.argsort(np.concatenate([twin, rest]))  # loader position of each canonical row
    pretrained = tuple(np.concatenate(column)[back] for column in outputs[0])
    random_features = tuple(np.concatenate(column) for column in outputs[1])
    return Features(tuple(b.name for b in backbone.blocks), pretrained, random_features,
                    np.concatenate(probs)[back], recorder.per_block(),
                    random_rows=None if twin.size == len(paths) else twin)


def block_outputs(model: nn.Module, batches: Iterable[torch.Tensor], num_blocks: int,
                  device: str = "cpu") -> tuple[np.ndarray, ...]:
    """Pooled features of ``model`` at each of its ``num_blocks`` feature points (bottom-up)
    over preprocessed image ``batches``, as :func:`extract_features` takes them; the model's
    mode and device are restored."""
    mode = model.training
    was = next(model.parameters()).device
    model.eval().to(device)
    store: list[list[np.ndarray]] = [[] for _ in range(num_blocks)]
    try:
        with torch.inference_mode():
            for batch in batches:
                points, _ = _forward(model, batch.to(device), num_blocks)
                for column, point in zip(store, points):
                    column.append(point)
    finally:
        model.train(mode).to(was)
    return tuple(np.concatenate(column) for column in store)


def _forward(model: nn.Module, batch: torch.Tensor, num_blocks: int):
    """Pooled features at every block's output (bottom-up) and the source logits."""
    final, intermediates = model.forward_intermediates(batch)
    pooled = [_pool(t) for t in intermediates]
    pre_logits = model.forward_head(final, pre_logits=True)
    logits = model.forward_head(final)
    if num_blocks == len(pooled) + 1:  # a neck (e.g. conv_head) before the classifier
        pooled.append(pre_logits.flatten(1))
    elif num_blocks != len(pooled):
        raise RuntimeError(f"expected {num_blocks} feature points, got {len(pooled)}")
    return [p.float().cpu().numpy() for p in pooled], logits


def _pool(tensor: torch.Tensor) -> torch.Tensor:
    """Global average over the spatial dimensions of an NCHW map (or tokens of NLC)."""
    if tensor.ndim == 4:
        return tensor.mean(dim=(2, 3))
    if tensor.ndim == 3:
        return tensor.mean(dim=1)
    return tensor.flatten(1)


def _save(path: Path, features: Features) -> None:
    arrays = {"source_probs": features.source_probs}
    for name, pre, rnd in zip(features.blocks, features.pretrained, features.random_features):
        arrays[f"pretrained/{name}"] = pre
        arrays[f"random_init/{name}"] = rnd
    for name, stats in zip(features.blocks, features.bn_stats):
        if stats is not None:
            arrays[f"bn_stats/{name}"] = stats
    if features.random_rows is not None:
        arrays["random_rows"] = features.random_rows

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    try_write(path, write, "extracted features")


def _load(path: Path, names: tuple[str, ...], rows: int) -> Features | None:
    """The features cached at ``path``, or None (the file discarded, with a warning) when it
    cannot be read or does not hold what its key implies: ``rows`` images at every block."""
    try:
        with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as data:
            features = Features(
                names,
                tuple(data[f"pretrained/{n}"] for n in names),
                tuple(data[f"random_init/{n}"] for n in names),
                data["source_probs"],
                tuple(data[f"bn_stats/{n}"] if f"bn_stats/{n}" in data.files else None
                      for n in names),
                from_cache=True,
                random_rows=data["random_rows"] if "random_rows" in data.files else None,
            )
    # A truncated file is a BadZipFile (not an OSError) or an EOFError inside an array.
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        discard(path, "features file", f"{type(exc).__name__}: {exc}")
        return None
    problem = _shape_problem(features, rows)
    if problem:
        discard(path, "features file", problem)
        return None
    return features


def _shape_problem(features: Features, rows: int) -> str:
    """What is wrong with the shapes of cached ``features`` of ``rows`` images ("" if
    nothing): trusted as they are, a wrong shape would make every probe unavailable."""
    twin = features.twin_rows()
    if twin.ndim != 1 or twin.size == 0 or twin.min() < 0 or twin.max() >= rows:
        return f"random_rows holds {twin.shape} rows outside 0..{rows - 1}"
    for name, pre, rnd in zip(features.blocks, features.pretrained, features.random_features):
        if (pre.ndim != 2 or pre.shape[0] != rows or rnd.ndim != 2
                or rnd.shape != (twin.size, pre.shape[1])):
            return (f"block {name} holds {pre.shape} and {rnd.shape} arrays, expected "
                    f"({rows}, D) and ({twin.size}, D)")
    probs = features.source_probs
    if probs.ndim != 2 or probs.shape[0] != rows:
        return f"source_probs holds a {probs.shape} array, expected ({rows}, classes)"
    for name, stats in zip(features.blocks, features.bn_stats):
        if stats is not None and (stats.ndim != 2 or stats.shape[0] != 4):
            return f"bn_stats of block {name} holds a {stats.shape} array, expected (4, K)"
    return ""
