"""Feature extraction on a GPU: is decoding or the forward pass the bottleneck?

Three throughputs over the same N images, in one run, images per second:

1. **decode alone**: the extraction's DataLoader (same transform, workers, batch size,
   pinned memory on CUDA) iterated without a model;
2. **forward alone**: the default backbone's forward pass on one decoded batch already on
   the device, repeated (in half precision under autocast on CUDA, as the extraction runs);
3. **end to end**: ``extract_features`` without the cache (decode, copy, the pre-trained
   forward (a BatchNorm-folded copy beyond the twin's images), the random-init twin on its
   subset, BatchNorm statistics, copies back).

Target (issue 15): end to end >= 80 % of the forward pass alone. The images are JPEG files
made from the bundled sample, upscaled to ``--size`` pixels with a little seeded noise (so
that each decodes like a photo of that size), written once to a temporary folder: the script
needs nothing from the network. Run from the repository root::

    python benchmarks/bench_gpu.py --device cuda --images 5000 --batch-size 128
    python benchmarks/bench_gpu.py --device cpu --images 64     # smoke run on a CPU
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_images(n: int, size: int) -> list[Path]:
    from PIL import Image

    folder = Path(tempfile.gettempdir()) / f"nbtl-bench-gpu-{n}-{size}"
    sources = sorted((ROOT / "data" / "fashion-mnist-sample").glob("*/*.png"))
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"c{i % 10}" / f"img{i:06d}.jpg"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            base = Image.open(sources[i % len(sources)]).convert("RGB").resize((size, size))
            noisy = np.asarray(base, dtype=np.int16) + rng.integers(-8, 9, (size, size, 3))
            Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--size", type=int, default=320, help="pixels of the JPEG files")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=20, help="forward passes timed")
    args = parser.parse_args(argv)

    import torch
    from timm.data import create_transform
    from torch.utils.data import DataLoader

    from recommender.models.backbones import load_backbone
    from recommender.models.features import (
        _collate,
        _ImageFiles,
        _precision,
        default_workers,
        extract_features,
        resolve_device,
    )

    device = resolve_device(args.device)
    cuda = device.startswith("cuda")
    workers = default_workers(device) if args.workers is None else args.workers
    paths = make_images(args.images, args.size)
    backbone = load_backbone()
    transform = create_transform(**backbone.data_config, is_training=False)
    name = torch.cuda.get_device_name(device) if cuda else f"CPU ({os.cpu_count()} cores)"
    print(f"# bench_gpu: {name}, {args.images} JPEG images of {args.size} px, batch "
          f"{args.batch_size}, {workers} decoding workers, {_precision(device)}")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    loader = DataLoader(_ImageFiles(paths, transform), batch_size=args.batch_size,
                        num_workers=workers, pin_memory=cuda, collate_fn=_collate)
    start = time.perf_counter()
    first = None
    for batch, _ in loader:
        first = batch if first is None else first
    decode = args.images / (time.perf_counter() - start)

    model = backbone.model.eval().to(device, memory_format=torch.channels_last)
    x = first.to(device, memory_format=torch.channels_last)
    half = (torch.autocast("cuda", dtype=torch.float16) if cuda
            else torch.autocast("cpu", enabled=False))
    with torch.inference_mode(), half:
        for _ in range(3):  # warm-up: cuDNN autotuning, allocator
            model(x)
        sync()
        start = time.perf_counter()
        for _ in range(args.repeats):
            model(x)
        sync()
    forward = args.repeats * x.shape[0] / (time.perf_counter() - start)
    model.to("cpu")
    if cuda:
        torch.cuda.empty_cache()

    start = time.perf_counter()
    extract_features(paths, backbone, batch_size=args.batch_size, workers=workers,
                     device=device, use_cache=False)
    sync()
    end_to_end = args.images / (time.perf_counter() - start)

    print("\n| stage | images/s | / forward alone |")
    print("|---|---|---|")
    print(f"| decode alone ({workers} workers) | {decode:.0f} | {decode / forward:.2f} |")
    print(f"| forward alone (pre-trained model) | {forward:.0f} | 1.00 |")
    print(f"| end to end (extract_features, twin included) | {end_to_end:.0f} | "
          f"{end_to_end / forward:.2f} |")
    print("\nbottleneck: " + ("decoding" if decode < forward else "the forward pass"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
