"""The whole probe suite against feature extraction for the same images, timed in one run.

The issue's budget: every registered probe on 5 stages for N=5,000 images, D=1,280, C=10
costs at most 15 % of extracting those images' features. This script

1. builds the features the probes run on:
   - ``synthetic``: 5 stages of N x 1280 backbone-like float32 features (the issue's
     shape), pre-trained stages increasingly class-separated, random-init ones barely,
     and a 1000-class source softmax (no BatchNorm statistics: that probe reports
     "unavailable" and costs nothing);
   - ``real``: the default backbone's features of N real Fashion-MNIST images (its 6
     feature points at their real widths 16 ... 1280, random-init twin, source head and
     BatchNorm statistics), extracted once and kept in ``--work``;
2. times ``recommender.analysis.run_probes`` on them as the CLI calls it (worker
   processes over the blocks, first call in the process), and each probe on each block
   alone in this process (in registration order, as a worker runs them, so the
   pre-training gain re-uses the probe's memoised fit);
3. times ``recommender.models.features.extract_features`` (default backbone, real ImageNet
   weights, no cache) on M real images after a small warm-up and scales it linearly to N
   (``--extract-images N`` times all of them).

Run from the repository root::

    python benchmarks/bench_suite.py                       # synthetic + real, M = 500
    python benchmarks/bench_suite.py --extract-images 5000 # no extrapolation (~10 min more)
    python benchmarks/bench_suite.py --quick               # smoke run, a minute
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from _data import backbone_like_features, cached_real_features, fashion_mnist_images

TARGET_SHARE = 0.15  # the budget: probes <= 15 % of the extraction time
STAGES = 5
STAGE_DIM = 1280
N_CLASSES = 10
SOURCE_CLASSES = 1000


def synthetic_features(n: int, d: int):
    """5 stages of backbone-like features of the same samples: class separation rising with
    depth, the random-init twin's weak; a source softmax whose top class follows the label."""
    from recommender.models.features import Features

    labels = backbone_like_features(n, 8, N_CLASSES, seed=0)[1]
    pretrained = tuple(backbone_like_features(n, d, N_CLASSES, sep=0.15 + 0.1 * s, view=s)[0]
                       for s in range(STAGES))
    random_init = tuple(backbone_like_features(n, d, N_CLASSES, sep=0.1, view=100 + s)[0]
                        for s in range(STAGES))
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(n, SOURCE_CLASSES)) * 2.0
    logits[np.arange(n), labels * 37] += 4.0
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)
    blocks = tuple(f"stage{i + 1}" for i in range(STAGES))
    return Features(blocks, pretrained, random_init, probs), labels


def time_suite(features, labels) -> tuple[float, list]:
    """Wall seconds of run_probes as the CLI runs it (first call in this process)."""
    from recommender.analysis import run_probes

    start = time.perf_counter()
    results = run_probes(features, labels)
    return time.perf_counter() - start, results


def time_each_probe(features, labels) -> dict[str, list[float]]:
    """Seconds of each probe on each block (and of once-per-model probes), one process,
    one BLAS thread, in registration order as a worker runs them."""
    from threadpoolctl import threadpool_limits

    import probes
    from recommender import analysis

    # The inputs that exist once per block, as the pipeline splits the work.
    block_inputs = getattr(analysis, "BLOCK_INPUTS", ("features", "random_features"))
    registered = probes.list_probes()
    per_block = [p for p in registered if set(block_inputs) & set(p.needs)]
    once = [p for p in registered if p not in per_block]
    bn_stats = getattr(features, "bn_stats", ()) or (None,) * len(features.blocks)
    seconds: dict[str, list[float]] = {p.name: [] for p in registered}
    with threadpool_limits(limits=1):
        for f, r, b in zip(features.pretrained, features.random_features, bn_stats):
            inputs = {"features": f, "random_features": r, "bn_stats": b, "labels": labels}
            for probe in per_block:
                seconds[probe.name].append(_timed(probe, inputs))
        inputs = {"source_probs": features.source_probs, "labels": labels}
        for probe in once:
            seconds[probe.name].append(_timed(probe, inputs))
    return seconds


def _timed(probe, inputs) -> float:
    """CPU seconds of one probe call (this process, one BLAS/OpenMP thread): unlike wall
    time, it does not grow when other work shares the machine."""
    import probes

    start = time.process_time()
    try:
        probes.compute(probe, **inputs)
    except probes.ProbeError:
        pass  # unavailable on these inputs (e.g. no BatchNorm statistics): costs ~nothing
    return time.process_time() - start


def time_extraction(m: int, n: int, work: Path) -> tuple[float, float, float]:
    """Extraction of m images with the default backbone, no cache, after a 32-image
    warm-up (model load and first-call costs excluded; the timed call's own start-up,
    e.g. DataLoader workers, is included and scaled). Returns (wall seconds for m, wall
    and CPU seconds scaled linearly to n); CPU counts this process and its DataLoader
    workers."""
    from recommender.models.backbones import load_backbone
    from recommender.models.features import extract_features

    paths, _ = fashion_mnist_images(max(m, 32), work / f"fashion-mnist-{max(m, 32)}")
    backbone = load_backbone(None, None)
    extract_features(paths[:32], backbone, use_cache=False)
    wall, cpu = time.perf_counter(), _cpu_with_children()
    extract_features(paths[:m], backbone, use_cache=False)
    wall, cpu = time.perf_counter() - wall, _cpu_with_children() - cpu
    return wall, wall * n / m, cpu * n / m


def _cpu_with_children() -> float:
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # finished DataLoader workers
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def report(title: str, features, labels, per_probe, suite_s, extraction, extrapolated) -> None:
    extraction_s, extraction_cpu = extraction
    dims = features.dims()
    print(f"\n== {title}: N={labels.size}, C={np.unique(labels).size}, blocks "
          + ", ".join(f"{b} ({d})" for b, d in zip(features.blocks, dims)))
    header = f"{'probe (CPU s)':<24}" + "".join(f"{b:>9}" for b in features.blocks) \
        + f"{'total':>9}"
    print(header)
    print("-" * len(header))
    for name, times in per_probe.items():
        cells = times if len(times) == len(dims) else [None] * (len(dims) - 1) + times
        print(f"{name:<24}" + "".join(f"{t:>9.2f}" if t is not None else f"{'':>9}"
                                      for t in cells) + f"{sum(times):>9.2f}")
    serial = sum(sum(t) for t in per_probe.values())
    print(f"{'all probes, one process':<24}{'':>{9 * len(dims)}}{serial:>9.2f}")
    print(f"run_probes (the CLI's call, worker processes): {suite_s:.1f} s wall")
    how = "extrapolated linearly from fewer images" if extrapolated else "measured on all"
    print(f"feature extraction of {labels.size} images: {extraction_s:.1f} s wall, "
          f"{extraction_cpu:.1f} s CPU ({how})")
    for name, share in (("wall", suite_s / extraction_s), ("CPU", serial / extraction_cpu)):
        verdict = "meets" if share <= TARGET_SHARE else "MISSES"
        print(f"suite / extraction by {name} time = {share:.3f} ({verdict} the target "
              f"<= {TARGET_SHARE})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: N=500, D=256 synthetic only, 32 images extracted")
    parser.add_argument("--n", type=int, default=5000, help="images / samples (default 5000)")
    parser.add_argument("--features", choices=["synthetic", "real", "both"], default="both")
    parser.add_argument("--extract-images", type=int, default=500, metavar="M",
                        help="time extraction on M images and scale to N (M = N: no scaling)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/nbtl-bench"),
                        help="where images and the real features are kept between runs")
    args = parser.parse_args()
    dim = STAGE_DIM
    if args.quick:
        args.n, args.features, args.extract_images, dim = 500, "synthetic", 32, 256
    args.work.mkdir(parents=True, exist_ok=True)

    sets = []
    if args.features in ("synthetic", "both"):
        sets.append((f"synthetic, {STAGES} stages x D={dim}", *synthetic_features(args.n, dim)))
    if args.features in ("real", "both"):
        features, labels, seconds = cached_real_features(args.n, args.work)
        print(f"real features of {args.n} Fashion-MNIST images: extracted once in {seconds:.0f} s"
              " (that run's time; possibly an earlier run, not used for the ratio)")
        sets.append(("real features, tf_efficientnet_lite0", features, labels))

    timings = []
    for title, features, labels in sets:
        suite_s, _ = time_suite(features, labels)
        timings.append((title, features, labels, suite_s, time_each_probe(features, labels)))
    m = min(args.extract_images, args.n)
    measured, extraction_s, extraction_cpu = time_extraction(m, args.n, args.work)
    print(f"extraction of {m} images: {measured:.1f} s wall, {m / measured:.1f} images/s")
    for title, features, labels, suite_s, per_probe in timings:
        report(title, features, labels, per_probe, suite_s, (extraction_s, extraction_cpu),
               m < args.n)


if __name__ == "__main__":
    main()
