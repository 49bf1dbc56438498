"""The BatchNorm recorder's per-batch moments: this checkout's ``_Moments.add`` against the
one it replaced (``torch.var_mean`` over every axis but the channels), on the real inputs of
every BatchNorm layer of the default backbone for one batch, in the same process.

One batch of ``--batch-size`` (32) images of the bundled sample at the model's input size
(224 px) goes through the model in channels-last memory, as in extraction, and the input of
each BatchNorm layer is kept. Then, ``--repeats`` times, interleaved: the model's forward
pass alone (the reference), the old moments over all those inputs, the new ones. Reported:
the best wall seconds of each, the ratios, and the largest relative difference between the
old and new means and variances (float rounding only).

With ``--extract N``, then: the whole extraction (``extract_features``, no cache, 1 thread, no
DataLoader workers) of N Fashion-MNIST images, with the old recorder (moments as before, on
every image) and with this checkout's (chunked, on the twin's images), against a bare forward
pass over the same images (the same decoding, ``model(x)`` only), interleaved, ``--repeats``
times, in this one process. ``TWIN_FLOOR`` is set to N / 4 so that the twin and the new
moments see a quarter of the images, as at N = 2,000 when the floor was 500 (it is 250 now).
The new extraction is this checkout's whole: since the recorder change it also runs the
twin's images first and the others through a BatchNorm-folded copy of the model; the old one
runs every batch through the model as loaded, with the old moments on every image. Also
printed: BN shift per block from both recorders' statistics.

    OMP_NUM_THREADS=1 python benchmarks/bench_bnstats.py          # ~1 min on a busy 2-core CPU
    OMP_NUM_THREADS=1 python benchmarks/bench_bnstats.py --extract 256 --repeats 2   # ~5 min
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "fashion-mnist-sample"


class _OldMoments:
    """``_Moments`` as it was before chunked moments (commit e09eb9e)."""

    def __init__(self) -> None:
        self.count = 0
        self.mean = None
        self.m2 = None

    def add(self, x) -> None:
        import torch

        from recommender.models.bnstats import _Moments

        dims = [d for d in range(x.ndim) if d != 1]
        n = x.numel() // x.shape[1]
        var, mean = torch.var_mean(x.float(), dim=dims, correction=0)
        _Moments._merge(self, n, mean, var.double() * n)  # the same Chan update as before


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--extract", type=int, default=0, metavar="N")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(Path(__file__).parent))
    import torch
    from timm.data import create_transform

    from recommender.data.images import open_rgb
    from recommender.models.backbones import load_backbone
    from recommender.models.bnstats import _Moments

    torch.set_num_threads(args.threads)
    backbone = load_backbone()
    transform = create_transform(**backbone.data_config, is_training=False)
    paths = sorted(SAMPLE.glob("*/*.png"))
    paths = paths[:: max(1, len(paths) // args.batch_size)][: args.batch_size]
    batch = torch.stack([transform(open_rgb(p)) for p in paths]).to(
        memory_format=torch.channels_last)
    model = backbone.model.eval().to(memory_format=torch.channels_last)
    inputs: list[torch.Tensor] = []
    layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    handles = [m.register_forward_pre_hook(
        lambda _m, a: inputs.append(a[0].clone(memory_format=torch.preserve_format)))
        for m in layers]
    with torch.inference_mode():
        model(batch)
    for handle in handles:
        handle.remove()
    values = sum(x.numel() for x in inputs)
    print(f"# bench_bnstats: {backbone.name}, {len(inputs)} BatchNorm inputs of a batch of "
          f"{len(paths)} at {tuple(batch.shape[2:])} ({values / 1e6:.0f} M values, channels-"
          f"last: {all(x.is_contiguous(memory_format=torch.channels_last) for x in inputs)}); "
          f"{args.threads} thread(s); load average {os.getloadavg()[0]:.1f}")

    def moments(kind):
        out = []
        for x in inputs:
            m = kind()
            m.add(x)
            out.append(m)
        return out

    def forward():
        model(batch)

    times: dict[str, list[float]] = {"forward": [], "old": [], "new": []}
    with torch.inference_mode():
        for _ in range(args.repeats):
            for name, work in (("forward", forward), ("old", lambda: moments(_OldMoments)),
                               ("new", lambda: moments(_Moments))):
                start = time.perf_counter()
                work()
                times[name].append(time.perf_counter() - start)
        worst = 0.0
        for old, new in zip(moments(_OldMoments), moments(_Moments)):
            var_old, var_new = old.m2 / old.count, new.m2 / new.count
            scale = var_old.sqrt() + old.mean.abs()
            worst = max(worst, float(((new.mean - old.mean).abs() / scale).max()),
                        float(((var_new - var_old).abs() / var_old.clamp_min(1e-30)).max()))
    best = {name: min(t) for name, t in times.items()}
    print("\n| what | best wall s | / forward |")
    print("|---|---|---|")
    for name, label in (("forward", "model(x) alone"),
                        ("old", "old moments (torch.var_mean over N, H, W)"),
                        ("new", "new moments (_Moments.add, chunked)")):
        print(f"| {label} | {best[name]:.3f} | {best[name] / best['forward']:.2f} |")
    print(f"\nold / new: {best['old'] / best['new']:.2f}x faster; largest relative difference "
          f"of a mean or variance: {worst:.1e}; load average {os.getloadavg()[0]:.1f}")
    inputs.clear()  # free the batch's activations (about 0.9 GB)
    if args.extract:
        _extraction(backbone, args.extract, args.batch_size, args.repeats)
    return 0


def _extraction(backbone, images: int, batch_size: int, repeats: int) -> None:
    """Bare forward pass vs the whole extraction with the old and the new recorder."""
    import tempfile
    from contextlib import contextmanager

    import torch
    from _data import fashion_mnist_images
    from timm.data import create_transform
    from torch.utils.data import DataLoader

    import probes
    import recommender.models.features as features_mod
    from recommender.models import bnstats

    root = Path(tempfile.gettempdir()) / "nbtl-bench-fm-2000"
    paths, _ = fashion_mnist_images(2000, root)  # the n2000 set's files, the first N of them
    paths = sorted(paths)[:images]
    transform = create_transform(**backbone.data_config, is_training=False)

    def forward():
        loader = DataLoader(features_mod._ImageFiles(paths, transform), batch_size=batch_size,
                            num_workers=0, collate_fn=features_mod._collate)
        model = backbone.model.eval().to(memory_format=torch.channels_last)
        with torch.inference_mode():
            for batch, _ in loader:
                model(batch.to(memory_format=torch.channels_last))
        model.to(memory_format=torch.contiguous_format)

    @contextmanager
    def old_recorder():
        """The recorder before this change: torch.var_mean over (N, H, W), every image."""
        def add(self, x, rows=None):
            n = x.numel() // x.shape[1]
            var, mean = torch.var_mean(x.float(), dim=[d for d in range(x.ndim) if d != 1],
                                       correction=0)
            self._merge(n, mean, var.double() * n)

        add_now, select_now = bnstats._Moments.add, bnstats.BatchNormRecorder.select
        fold_now = features_mod.fold_batchnorm
        bnstats._Moments.add = add
        bnstats.BatchNormRecorder.select = lambda self, rows: None
        # Every batch through the hooked model as loaded (no folded copy), as before.
        features_mod.fold_batchnorm = lambda model, example: None
        try:
            yield
        finally:
            bnstats._Moments.add, bnstats.BatchNormRecorder.select = add_now, select_now
            features_mod.fold_batchnorm = fold_now

    def extract():
        return features_mod.extract_features(paths, backbone, batch_size=batch_size,
                                             workers=0, use_cache=False)

    def extract_old():
        with old_recorder():
            return extract()

    floor = features_mod.TWIN_FLOOR
    features_mod.TWIN_FLOOR = images // 4
    times: dict[str, list[float]] = {"forward": [], "old": [], "new": []}
    got = {}
    try:
        for _ in range(repeats):
            for name, work in (("forward", forward), ("old", extract_old), ("new", extract)):
                start = time.perf_counter()
                got[name] = work()
                times[name].append(time.perf_counter() - start)
    finally:
        features_mod.TWIN_FLOOR = floor
    best = {name: min(t) for name, t in times.items()}
    twin = got["new"].twin_rows().size
    print(f"\n## extraction of {images} Fashion-MNIST images, batch {batch_size}, no workers; "
          f"the twin (and the new moments) on {twin} of them; best of {repeats}\n")
    print("| what | best wall s | / bare forward |")
    print("|---|---|---|")
    for name, label in (("forward", "bare forward pass (decode + model(x))"),
                        ("old", "extraction, old recorder (every image, torch.var_mean)"),
                        ("new", "extraction, new recorder (the twin's images, chunked)")):
        print(f"| {label} | {best[name]:.1f} | {best[name] / best['forward']:.2f} |")
    print(f"\nold / new extraction: {best['old'] / best['new']:.2f}x")
    print("\n| block | BN shift, every image | BN shift, the twin's images |")
    print("|---|---|---|")
    for name, a, b in zip(got["new"].blocks, got["old"].bn_stats, got["new"].bn_stats):
        if a is not None:
            print(f"| {name} | {probes.bn_shift(a):.4g} | {probes.bn_shift(b):.4g} |")
    print(f"\nload average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    raise SystemExit(main())
