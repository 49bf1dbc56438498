"""The BatchNorm recorder's per-batch moments: this checkout's ``_Moments.add`` against the
one it replaced (``torch.var_mean`` over every axis but the channels), on the real inputs of
every BatchNorm layer of the default backbone for one batch, in the same process.

One batch of ``--batch-size`` (32) images of the bundled sample at the model's input size
(224 px) goes through the model in channels-last memory, as in extraction, and the input of
each BatchNorm layer is kept. Then, ``--repeats`` times, interleaved: the model's forward
pass alone (the reference), the old moments over all those inputs, the new ones. Reported:
the best wall seconds of each, the ratios, and the largest relative difference between the
old and new means and variances (float rounding only).

    OMP_NUM_THREADS=1 python benchmarks/bench_bnstats.py          # ~1 min on a busy 2-core CPU
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

        dims = [d for d in range(x.ndim) if d != 1]
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
