"""The probe stage at N = 1,000, 10,000 and 100,000 images: time and peak memory.

The issue's requirement for large sets: at N = 100,000 every probe finishes, peak memory
grows at most linearly in N with a small constant, and no O(N^2) step is unbounded. This
script

1. writes, once per N, synthetic inputs of the default backbone's real dimensions to
   ``--work`` as ``.npy`` files: pre-trained and random-init features of 6 blocks of widths
   16, 24, 40, 112, 320, 1280 (float32, ``_data.backbone_like_features``: class-dependent
   Gaussian codes mixed into channels, ReLU, pooled; the pre-trained blocks more class-
   separated with depth, the random-init ones barely; the same recipe as
   ``_data.backbone_like_features``, generated in chunks), a 1000-class source softmax whose
   top class follows the label (float32), and BatchNorm statistics (4, 2 x width) per block;
   C classes, balanced;
2. runs, for each N, a fresh Python process that loads them (so its resident memory before
   the stage is the inputs, and nothing else has raised its high-water mark), then times
   ``recommender.analysis.run_probes(features, labels, jobs=1)`` with every probe call
   timed and its tracemalloc peak (numpy's allocations) recorded;
3. prints one table: per N the stage's wall and CPU seconds, the inputs' size, the peak
   resident memory above the inputs (``ru_maxrss``, all allocations, BLAS included) and the
   tracemalloc peak, MB per 1,000 images of each; then each probe's seconds (summed over
   blocks) and peak MB, and the samples the capped probes used.

Run from the repository root (1 BLAS thread; the 100k run takes several minutes)::

    OMP_NUM_THREADS=1 python benchmarks/bench_large_n.py                  # 1k, 10k, 100k
    OMP_NUM_THREADS=1 python benchmarks/bench_large_n.py --sizes 1000,5000  # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DIMS = (16, 24, 40, 112, 320, 1280)  # tf_efficientnet_lite0's blocks
SOURCE_CLASSES = 1000
ROWS = 20_000  # samples generated at once: keeps the generator's temporaries small


def write_inputs(n: int, n_classes: int, folder: Path) -> None:
    """The synthetic inputs of ``n`` samples as .npy files in ``folder`` (skipped if there)."""
    if (folder / "done").is_file():
        return
    folder.mkdir(parents=True, exist_ok=True)
    labels = np.arange(n) % n_classes
    np.random.default_rng(0).shuffle(labels)
    np.save(folder / "labels.npy", labels)
    for b, d in enumerate(DIMS):
        for kind, sep, view in (("pretrained", 0.1 + 0.06 * b, b), ("random", 0.05, 100 + b)):
            out = np.lib.format.open_memmap(folder / f"{kind}{b}.npy", "w+", np.float32, (n, d))
            for start in range(0, n, ROWS):
                rows = labels[start:start + ROWS]
                out[start:start + rows.size] = _block_rows(rows, d, n_classes, sep, view, start)
            out.flush()
            del out
        # BN statistics of 2 layers per block: target vs stored, a small shift.
        rng = np.random.default_rng(200 + b)
        var = rng.uniform(0.5, 2.0, size=(2, 2 * d))
        mean = rng.normal(size=(2, 2 * d))
        np.save(folder / f"bn{b}.npy", np.stack([mean[0], var[0], mean[1], var[1]]))
    probs = np.lib.format.open_memmap(folder / "source_probs.npy", "w+", np.float32,
                                      (n, SOURCE_CLASSES))
    for start in range(0, n, ROWS):
        rows = labels[start:start + ROWS]
        rng = np.random.default_rng([7, start])
        logits = rng.normal(size=(rows.size, SOURCE_CLASSES)) * 2.0
        logits[np.arange(rows.size), (rows * 37) % SOURCE_CLASSES] += 4.0
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs[start:start + rows.size] = p / p.sum(axis=1, keepdims=True)
    probs.flush()
    del probs
    (folder / "done").write_text("")


def _block_rows(labels: np.ndarray, d: int, n_classes: int, sep: float, view: int,
                start: int) -> np.ndarray:
    """Backbone-like features of the given labels: class centres shared by all chunks (the
    mixing is drawn from ``view`` only), the noise from the chunk's position."""
    rng = np.random.default_rng([view, start])
    centres = np.random.default_rng([1, n_classes]).normal(size=(n_classes, 128))
    code = sep * centres[labels] + rng.normal(size=(labels.size, 128))
    mix_rng = np.random.default_rng([0, view + 1])
    mixing = mix_rng.normal(size=(128, d)) * np.exp(-np.arange(128) / 32.0)[:, None]
    bias = (mix_rng.normal(size=d) * 0.5).astype(np.float32)
    pooled = np.zeros((labels.size, d), dtype=np.float32)
    for _ in range(4):
        local = code + 0.5 * rng.normal(size=code.shape)
        pre = (local @ mixing).astype(np.float32) + bias
        pre += 0.3 * rng.standard_normal(size=pre.shape, dtype=np.float32)
        pooled += np.maximum(pre, 0.0)
    return pooled / 4


def measure(folder: Path, jobs: int) -> dict:
    """In this (fresh) process: load the inputs, run the probe stage, return the numbers."""
    import tracemalloc

    import probes
    from recommender import analysis
    from recommender.models.features import Features

    labels = np.load(folder / "labels.npy")
    features = Features(
        tuple(f"block{b}" for b in range(len(DIMS))),
        tuple(np.load(folder / f"pretrained{b}.npy") for b in range(len(DIMS))),
        tuple(np.load(folder / f"random{b}.npy") for b in range(len(DIMS))),
        np.load(folder / "source_probs.npy"),
        bn_stats=tuple(np.load(folder / f"bn{b}.npy") for b in range(len(DIMS))),
    )
    # The libraries the probes load on first use, so that their code is not counted.
    import scipy.linalg  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    import threadpoolctl  # noqa: F401

    input_mb = (sum(a.nbytes for a in (*features.pretrained, *features.random_features,
                                       features.source_probs)) + labels.nbytes) / 2**20
    rss_before = _rss_mb()
    per_probe: dict[str, dict] = {}
    compute = probes.compute

    stage_peak = [0]  # tracemalloc's peak is reset for each call: keep the stage's here

    def timed(name, **inputs):
        stage_peak[0] = max(stage_peak[0], tracemalloc.get_traced_memory()[1])
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        t = time.perf_counter()
        try:
            return compute(name, **inputs)
        finally:
            entry = per_probe.setdefault(name, {"seconds": 0.0, "peak_mb": 0.0})
            entry["seconds"] += time.perf_counter() - t
            peak = (tracemalloc.get_traced_memory()[1] - base) / 2**20
            entry["peak_mb"] = max(entry["peak_mb"], peak)

    tracemalloc.start()
    analysis.probes.compute = timed  # run_probes calls probes.compute per probe and block
    wall, cpu = time.perf_counter(), time.process_time()
    results = analysis.run_probes(features, labels, jobs=jobs)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    traced_peak = max(stage_peak[0], tracemalloc.get_traced_memory()[1]) / 2**20
    tracemalloc.stop()
    analysis.probes.compute = compute
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "n": int(labels.size),
        "classes": int(np.unique(labels).size),
        "wall_s": wall,
        "cpu_s": cpu,
        "input_mb": input_mb,
        "rss_above_inputs_mb": peak_rss - rss_before,
        "traced_peak_mb": traced_peak,
        "per_probe": per_probe,
        "n_used": {p.name: sorted({n for n in p.n_used if n is not None}) for p in results},
        "errors": {p.name: sorted({e for e in p.errors if e}) for p in results
                   if any(p.errors)},
    }


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def report(rows: list[dict]) -> None:
    print("\n| N | classes | stage wall s | stage CPU s | inputs MB | peak RSS above inputs MB "
          "(per 1k) | tracemalloc peak MB (per 1k) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        k = r["n"] / 1000
        print(f"| {r['n']:,} | {r['classes']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
              f"{r['input_mb']:.0f} | {r['rss_above_inputs_mb']:.0f} "
              f"({r['rss_above_inputs_mb'] / k:.1f}) | {r['traced_peak_mb']:.0f} "
              f"({r['traced_peak_mb'] / k:.1f}) |")
    for a, b in zip(rows, rows[1:]):
        k = (b["n"] - a["n"]) / 1000
        print(f"From N={a['n']:,} to {b['n']:,}: peak RSS above inputs grows "
              f"{(b['rss_above_inputs_mb'] - a['rss_above_inputs_mb']) / k:.1f} MB per 1k images, "
              f"tracemalloc peak {(b['traced_peak_mb'] - a['traced_peak_mb']) / k:.1f} MB per 1k, "
              f"inputs {(b['input_mb'] - a['input_mb']) / k:.1f} MB per 1k")
    names = list(rows[0]["per_probe"])
    print("\nPer probe (seconds summed over blocks / tracemalloc peak MB; samples used if capped):")
    print("| probe | " + " | ".join(f"N={r['n']:,}" for r in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for name in names:
        cells = []
        for r in rows:
            p = r["per_probe"].get(name, {"seconds": float("nan"), "peak_mb": float("nan")})
            used = r["n_used"].get(name) or []
            cap = f", n={'/'.join(f'{u:,}' for u in used)}" if used else ""
            cells.append(f"{p['seconds']:.1f} s / {p['peak_mb']:.0f} MB{cap}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    for r in rows:
        for name, errors in r["errors"].items():
            if any(not e.startswith("unavailable") for e in errors):
                print(f"N={r['n']}: {name} failed: {errors}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("/tmp/nbtl-bench-large"))
    parser.add_argument("--table", action="store_true",
                        help="print the table of the sizes' last results in --work, run nothing")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.jobs)))
        return
    if args.table:
        report([json.loads((args.work / f"n{n}-c{args.classes}" / "result.json").read_text())
                for n in (int(s) for s in args.sizes.split(","))])
        return
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        folder = args.work / f"n{n}-c{args.classes}"
        start = time.perf_counter()
        write_inputs(n, args.classes, folder)
        print(f"N={n:,}: inputs ready in {time.perf_counter() - start:.0f} s", flush=True)
        child = subprocess.run(
            [sys.executable, __file__, "--one", str(folder), "--jobs", str(args.jobs)],
            check=True, capture_output=True, text=True)
        rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
        (folder / "result.json").write_text(json.dumps(rows[-1]))
        r = rows[-1]
        print(f"N={n:,}: stage {r['wall_s']:.1f} s wall, peak RSS "
              f"{r['rss_above_inputs_mb']:.0f} MB above {r['input_mb']:.0f} MB of inputs",
              flush=True)
        report(rows)
    (args.work / f"results-c{args.classes}.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
