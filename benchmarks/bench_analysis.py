"""The analysis's own cost, each figure a ratio to a baseline measured in the same run.

Parts (``--part``, repeatable; the first five by default):

``help``
    ``python -m recommender --help`` against ``python -c pass``: the CLI's start-up.
``cache``
    ``nbtl-recommend`` on the bundled sample in a fresh cache folder (cold: the weights
    converted, the features extracted, the probes computed), then the same command again
    (cached), then with a ``--set`` (cached too: the measures do not change), each in its own
    process, wall seconds; the cached run's process is checked for torch, timm and
    torchvision in ``sys.modules``. Target: cold / cached >= 20.
``probes``
    The probe stage on the sample's features as the CLI runs it (``run_probes``, worker
    processes, first call in a fresh process), and the linear probe alone per block (pre-
    trained and random-init, one thread) with this checkout's solver and with the one of
    ``--baseline-rev`` (scikit-learn's ``LogisticRegression``, loaded from git), with their
    values side by side. Target: the probe stage <= 3 s on 2 cores.
``workers``
    The probe stage on the sample's features (each the first call in a fresh process) with
    the blocks in forked worker processes, as ``run_probes`` runs them on Linux, and in
    threads, as before and elsewhere; interleaved ``--repeats`` times, values compared.
``n2000``
    ``--images`` (2,000) Fashion-MNIST images: one bare forward pass of the default backbone
    over them (the same decoding, batch size and DataLoader workers, ``model(x)`` only, the
    model already loaded), then the whole cold ``nbtl-recommend`` (a fresh process and cache
    folder: imports, scan, weights, extraction with the random-init twin, probes, rules),
    the two back to back, ``--repeats`` times. Targets: analysis / forward <= 1.5; probes
    <= 15 % of the extraction.
``before`` (not in the default set)
    The probe stage (``run_probes`` as the CLI runs it, first call in a fresh process) with
    this checkout and with ``--before-rev`` (a temporary git worktree), interleaved
    ``--repeats`` times on the same cached features of ``--data`` (default: the bundled
    sample; ``--cache`` re-uses a cache folder that already holds its features), values
    compared.
``batch`` (not in the default set)
    One bare forward pass (decoding in the DataLoader's workers + ``model(x)``, as ``n2000``'s
    baseline) over ``--batch-images`` (512) Fashion-MNIST images at each of ``--batch-sizes``,
    interleaved ``--repeats`` times: images per second and the ratio to batch 32 (the CPU
    default before). Also checks that every batch size gives the same features to the bit.
``twin`` (not in the default set)
    ``--twin-images`` (2,000) Fashion-MNIST images: the pre-training gain per block (and its
    fold spread) with the random-init twin on every image, and on subsets of
    ``--twin-sizes`` (250, 500) images: the seeded one the analysis would use, and the
    spread over ``--twin-draws`` (8) other seeds, from one extraction.
``fold`` (not in the default set)
    One bare forward pass over ``--batch-images`` (512) images with the model as loaded and
    with its BatchNorm layers folded into the convolutions, interleaved ``--repeats`` times;
    the largest difference of their features.

Run from the repository root, on a quiet machine::

    python benchmarks/bench_analysis.py                  # all three, ~10 min on 2 cores
    python benchmarks/bench_analysis.py --part cache --part probes    # ~2 min
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "fashion-mnist-sample"
BASELINE_REV = "a991590"  # the last commit with scikit-learn's solver and no analysis cache


def _cli(args: list[str], cache: Path, *, code: str | None = None) -> tuple[float, dict, str]:
    """Run nbtl-recommend in a fresh process; its wall seconds, JSON document and stderr."""
    out = Path(tempfile.mkdtemp()) / "out.json"
    argv = ["nbtl-recommend", *args, "-q", "--json", str(out)]
    program = code or ("import sys, recommender.cli\nsys.argv = {argv!r}\n"
                       "recommender.cli.main()\n")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", program.format(argv=argv)],
                          capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "NBTL_CACHE_DIR": str(cache)})
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"nbtl-recommend {' '.join(args)} failed:\n{done.stderr}")
    return wall, json.loads(out.read_text()), done.stderr


def part_cache(repeats: int) -> None:
    cache = Path(tempfile.mkdtemp(prefix="nbtl-bench-cache-"))
    args = [str(SAMPLE)]
    cold, doc, _ = _cli(args, cache)
    spy = ("import sys, recommender.cli\nsys.argv = {argv!r}\n"
           "try:\n    recommender.cli.main()\nexcept SystemExit as exc:\n"
           "    assert not exc.code\n"
           "print('heavy modules:', sorted(m for m in ('torch', 'timm', 'torchvision')"
           " if m in sys.modules), file=sys.stderr)\n")
    cached = []
    for _ in range(repeats):
        wall, again, stderr = _cli(args, cache, code=spy)
        cached.append(wall)
    tweaked = [_cli([*args, "--set", "reinit_top_blocks=1"], cache)[0] for _ in range(repeats)]
    doc.pop("timings")
    again.pop("timings")
    print("\n## cache: the bundled sample (200 images), cold vs cached\n")
    print("| run | wall s | cold / run |")
    print("|---|---|---|")
    print(f"| cold (fresh cache folder) | {cold:.2f} | 1.0 |")
    median = statistics.median(cached)
    print(f"| cached, same options (median of {repeats}) | {median:.2f} | {cold / median:.1f} |")
    median_set = statistics.median(tweaked)
    print(f"| cached, `--set reinit_top_blocks=1` (median of {repeats}) | {median_set:.2f} | "
          f"{cold / median_set:.1f} |")
    print(f"\nsame document cold and cached: {doc == again}; "
          f"{stderr.strip().splitlines()[-1]} (in the cached run's process)")


def _old_linear_probe(rev: str):
    """The linear probe as it was at ``rev`` (scikit-learn's LogisticRegression), as a module
    of its own, unregistered."""
    source = subprocess.run(["git", "show", f"{rev}:probes/linear_probe.py"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    source = source[:source.index("register(\n    Probe(")]
    module = type(sys)("baseline_linear_probe")
    sys.modules[module.__name__] = module
    exec(compile(source, f"{rev}:probes/linear_probe.py", "exec"), module.__dict__)
    return module


def part_probes(baseline_rev: str) -> None:
    cache = Path(tempfile.mkdtemp(prefix="nbtl-bench-probes-"))
    _, doc, _ = _cli([str(SAMPLE)], cache)  # fills the features cache
    code = (
        "import json, time, numpy as np\n"
        "from recommender.data.dataset import load_dataset\n"
        "from recommender.models.backbones import load_backbone\n"
        "from recommender.models.features import extract_features\n"
        f"ds = load_dataset({str(SAMPLE)!r})\n"
        "features = extract_features([p for p, _ in ds.samples], load_backbone(), workers=0)\n"
        "assert features.from_cache\n"
        "labels = np.array([label for _, label in ds.samples])\n"
        "start = time.perf_counter(); cpu = time.process_time()\n"
        "from recommender.analysis import run_probes\n"
        "results = run_probes(features, labels)\n"
        "print(json.dumps({'wall': time.perf_counter() - start,\n"
        "                  'cpu_main': time.process_time() - cpu}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "NBTL_CACHE_DIR": str(cache)}, check=True)
    stage = json.loads(done.stdout.strip().splitlines()[-1])
    print("\n## probes: the probe stage on the bundled sample's features\n")
    print(f"run_probes, first call in a fresh process (worker processes start, import and "
          f"fit): {stage['wall']:.2f} s wall on {os.cpu_count()} cores; the cold CLI run's "
          f"probes_s: {doc['timings'].get('probes_s', float('nan')):.2f} s")

    import numpy as np
    from threadpoolctl import threadpool_limits

    import probes.linear_probe as ours
    from recommender.data.dataset import load_dataset
    from recommender.models.backbones import load_backbone
    from recommender.models.features import extract_features

    os.environ["NBTL_CACHE_DIR"] = str(cache)
    old = _old_linear_probe(baseline_rev)
    ds = load_dataset(SAMPLE)
    features = extract_features([p for p, _ in ds.samples], load_backbone(), workers=0)
    labels = np.array([label for _, label in ds.samples])
    # Warm both (imports, first-call costs) on a small slice.
    old.linear_probe_cv(features.pretrained[-1][:60], labels[:60])
    ours.linear_probe_cv(features.pretrained[-1][:60], labels[:60])
    print(f"\nThe linear probe alone, one thread, CPU seconds; baseline: {baseline_rev} "
          "(scikit-learn's LogisticRegression)\n")
    print("| block | twin | dim | baseline s | ours s | speed-up | baseline value | ours | "
          "same folds |")
    print("|---|---|---|---|---|---|---|---|---|")
    total_old = total_new = 0.0
    same = 0
    rows = [(b, "pre-trained", f) for b, f in zip(features.blocks, features.pretrained)]
    rows += [(b, "random-init", f) for b, f in zip(features.blocks, features.random_features)]
    with threadpool_limits(limits=1):
        for block, twin, x in rows:
            old._MEMO.clear()
            ours._MEMO.clear()
            mark = time.process_time()
            a = old.linear_probe_cv(x, labels)
            t_old = time.process_time() - mark
            mark = time.process_time()
            b = ours.linear_probe_cv(x, labels)
            t_new = time.process_time() - mark
            total_old += t_old
            total_new += t_new
            same += a.fold_scores == b.fold_scores
            print(f"| {block} | {twin} | {x.shape[1]} | {t_old:.2f} | {t_new:.2f} | "
                  f"{t_old / t_new:.1f} | {a.mean:.4f} | {b.mean:.4f} | "
                  f"{a.fold_scores == b.fold_scores} |")
    print(f"| all | | | {total_old:.2f} | {total_new:.2f} | {total_old / total_new:.1f} | | | "
          f"{same} of {len(rows)} |")


def _fashion_mnist_files(images: int):
    """``images`` Fashion-MNIST images (their folder, and a dataset decoding them as the
    extraction does) and the default backbone, its model in eval mode and channels-last."""
    sys.path.insert(0, str(Path(__file__).parent))
    import torch
    from _data import fashion_mnist_images
    from timm.data import create_transform

    from recommender.models.backbones import load_backbone
    from recommender.models.features import _ImageFiles

    root = Path(tempfile.gettempdir()) / f"nbtl-bench-fm-{images}"
    fashion_mnist_images(images, root)
    backbone = load_backbone()
    transform = create_transform(**backbone.data_config, is_training=False)
    files = _ImageFiles(sorted(root.glob("*/*.png")), transform)
    backbone.model.eval().to(memory_format=torch.channels_last)
    return root, backbone, files


def _bare_forward(net, files, batch_size: int) -> float:
    """Wall seconds of one bare forward pass: decoding in the DataLoader's workers (as the
    extraction has them on the CPU) + ``net(x)``, nothing kept."""
    import torch
    from torch.utils.data import DataLoader

    from recommender.models.features import _collate, default_workers

    loader = DataLoader(files, batch_size=batch_size, num_workers=default_workers("cpu"),
                        collate_fn=_collate)
    start = time.perf_counter()
    with torch.inference_mode():
        for batch, _ in loader:
            net(batch.to(memory_format=torch.channels_last))
    return time.perf_counter() - start


def part_n2000(images: int, batch_size: int, repeats: int) -> None:
    """One bare forward pass and the whole cold analysis, interleaved ``repeats`` times (the
    machine's speed drifts by 20 % between minutes: each ratio is of a pair run back to
    back)."""
    root, backbone, files = _fashion_mnist_files(images)
    model = backbone.model

    keys = ("scan_s", "model_s", "features_s", "probes_s")
    runs = []
    for _ in range(repeats):
        forward = _bare_forward(model, files, batch_size)
        cache = Path(tempfile.mkdtemp(prefix="nbtl-bench-n2000-"))
        wall, doc, _ = _cli([str(root), "--batch-size", str(batch_size)], cache)
        runs.append((forward, wall, doc["timings"]))
    print(f"\n## n2000: {images} Fashion-MNIST images at 224 px, batch {batch_size}, "
          f"{repeats} pairs run back to back\n")
    print("| pair | bare forward s (decode + model(x), model loaded) | whole cold nbtl-recommend "
          "s (fresh process and cache) | / bare forward | " +
          " | ".join(f"{k[:-2]} / bare" for k in keys) + " | probes / extraction |")
    print("|---|---|---|---|" + "---|" * len(keys) + "---|")
    for i, (forward, wall, t) in enumerate(runs, 1):
        print(f"| {i} | {forward:.1f} | {wall:.1f} | {wall / forward:.2f} | " +
              " | ".join(f"{t.get(k, 0) / forward:.2f}" for k in keys) +
              f" | {t['probes_s'] / t['features_s']:.3f} |")
    ratios = [wall / forward for forward, wall, _ in runs]
    shares = [t["probes_s"] / t["features_s"] for _, _, t in runs]
    print(f"\nmedian over the pairs: analysis / bare forward {statistics.median(ratios):.2f}, "
          f"probes / extraction {statistics.median(shares):.3f}; the random-init twin saw "
          f"{doc['measures']['random_init_images']} of {doc['measures']['images']} images")


def part_help(repeats: int) -> None:
    """``nbtl-recommend --help`` against a bare ``python -c pass``, best of ``repeats``."""
    def best(argv: list[str]) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run(argv, capture_output=True, check=True, cwd=ROOT)
            times.append(time.perf_counter() - start)
        return min(times)

    bare = best([sys.executable, "-c", "pass"])
    helped = best([sys.executable, "-m", "recommender", "--help"])
    print("\n## help: start-up\n")
    print(f"`python -m recommender --help` {helped:.2f} s, `python -c pass` {bare:.2f} s: "
          f"the CLI's own start-up {helped - bare:.2f} s (best of {repeats}; target < 1 s)")


def part_twin(images: int, sizes: list[int], draws: int) -> None:
    """The pre-training gain with the random-init twin on every image against the twin on
    subsets of ``sizes`` images: the seeded one the analysis would use at that size, and
    ``draws`` more drawn from other seeds, whose spread is the noise the subset adds. One
    extraction (in eval mode an image's features do not depend on its batch)."""
    sys.path.insert(0, str(Path(__file__).parent))
    import numpy as np
    from _data import fashion_mnist_images

    import recommender.models.features as features_mod
    from probes.gain import _gain_spread as pretraining_gain_spread
    from recommender.models.backbones import RANDOM_INIT_SEED, load_backbone

    root = Path(tempfile.gettempdir()) / f"nbtl-bench-fm-{images}"
    paths, labels = fashion_mnist_images(images, root)
    labels = np.asarray(labels)
    floor = features_mod.TWIN_FLOOR
    features_mod.TWIN_FLOOR = images  # the twin on every image, this once
    try:
        full = features_mod.extract_features(paths, load_backbone(), use_cache=False)
    finally:
        features_mod.TWIN_FLOOR = floor
    assert full.random_rows is None  # the twin on every image, rows aligned
    # Subsets are drawn in the canonical (path) order, as in extraction.
    canonical = np.asarray(sorted(range(len(paths)), key=lambda i: str(paths[i])))

    def subset(size: int, seed: int) -> np.ndarray:
        return np.sort(canonical[np.random.default_rng(seed).permutation(images)[:size]])

    print(f"\n## twin: the pre-training gain per block on {images} Fashion-MNIST images, the "
          f"twin on all of them vs on subsets ({', '.join(map(str, sizes))} images: the "
          f"analysis's seeded subset, and the spread over {draws} other seeds)\n")
    head = "| block | all: gain ± folds |"
    rule = "|---|---|"
    for size in sizes:
        head += f" {size}: analysis's subset | {size}: sd over seeds | {size}: max abs off |"
        rule += "---|---|---|"
    print(head)
    print(rule)
    worst: dict[int, float] = {size: 0.0 for size in sizes}
    for pre, rnd, name in zip(full.pretrained, full.random_features, full.blocks):
        gain, folds = pretraining_gain_spread(pre, rnd, labels)
        row = f"| {name} | {gain:+.3f} ± {folds:.3f} |"
        for size in sizes:
            values = []
            for seed in [RANDOM_INIT_SEED, *range(1, draws + 1)]:
                rows = subset(size, seed)
                values.append(pretraining_gain_spread(pre[rows], rnd[rows], labels[rows])[0])
            others = np.asarray(values[1:])
            off = float(np.max(np.abs(np.asarray(values) - gain)))
            worst[size] = max(worst[size], float(others.std(ddof=1)))
            row += f" {values[0]:+.3f} | {others.std(ddof=1):.3f} | {off:.3f} |"
        print(row)
    print("\nlargest sd over seeds: " + ", ".join(f"{size} images {sd:.3f}"
                                                  for size, sd in worst.items()))


def part_fold(images: int, repeats: int) -> None:
    """One bare forward pass (decoding in the DataLoader's workers + ``model(x)``) with the
    model as loaded and with its BatchNorm layers folded into the convolutions
    (``recommender.models.fusion``), interleaved ``repeats`` times, and the largest
    difference of their features."""
    import numpy as np
    import torch

    from recommender.models.features import _forward, default_batch_size, default_workers
    from recommender.models.fusion import fold_batchnorm

    _, backbone, files = _fashion_mnist_files(images)
    model = backbone.model
    example = torch.randn((2, *backbone.data_config["input_size"]),
                          generator=torch.Generator().manual_seed(0))
    folded = fold_batchnorm(model, example.to(memory_format=torch.channels_last))
    assert folded is not None
    size = default_batch_size("cpu")

    walls: dict[str, list[float]] = {"as loaded": [], "BatchNorm folded": []}
    for _ in range(repeats):
        walls["as loaded"].append(_bare_forward(model, files, size))
        walls["BatchNorm folded"].append(_bare_forward(folded, files, size))
    first = torch.stack([files[i][0] for i in range(32)]).to(memory_format=torch.channels_last)
    with torch.inference_mode():
        want, want_logits = _forward(model, first, len(backbone.blocks))
        got, got_logits = _forward(folded, first, len(backbone.blocks))
    rel = max(float(np.abs(g - w).max() / np.abs(w).max()) for g, w in zip(got, want))
    logits = float((got_logits - want_logits).abs().max() / want_logits.abs().max())
    print(f"\n## fold: the bare forward pass over {images} images, batch {size}, "
          f"{torch.get_num_threads()} torch threads, {default_workers('cpu')} decoding workers\n")
    print("| model | wall s (each run) | images/s (best) | / as loaded |")
    print("|---|---|---|---|")
    base = min(walls["as loaded"])
    for name, times in walls.items():
        print(f"| {name} | {', '.join(f'{t:.1f}' for t in times)} | {images / min(times):.1f} | "
              f"{min(times) / base:.2f} |")
    print(f"\nlargest difference on 32 images, relative to the largest value: block features "
          f"{rel:.1e}, source logits {logits:.1e}")


WORKERS_CODE = r"""
import json, sys, time
import numpy as np
from recommender.data.dataset import load_dataset
from recommender.models.backbones import load_backbone
from recommender.models.features import extract_features
import recommender.analysis as analysis
ds = load_dataset(sys.argv[2])
features = extract_features([p for p, _ in ds.samples], load_backbone(), workers=0)
assert features.from_cache
labels = np.array([label for _, label in ds.samples])
if sys.argv[1] == "threads":
    analysis._in_workers = analysis._in_threads
start = time.perf_counter()
results = analysis.run_probes(features, labels)
print(json.dumps({"wall": time.perf_counter() - start, "values": [
    [r.name, [None if m is None else m.value for m in r.values]] for r in results]}))
"""


def part_workers(repeats: int) -> None:
    """The probe stage on the sample's features with the blocks in forked worker processes
    (what run_probes does on Linux) and in threads (elsewhere), each the first call in a
    fresh process, interleaved ``repeats`` times."""
    cache = Path(tempfile.mkdtemp(prefix="nbtl-bench-workers-"))
    _cli([str(SAMPLE)], cache)  # fills the features cache
    env = {**os.environ, "NBTL_CACHE_DIR": str(cache)}
    walls: dict[str, list[float]] = {"processes": [], "threads": []}
    values: dict[str, list] = {}
    for _ in range(repeats):
        for mode in walls:
            done = subprocess.run([sys.executable, "-c", WORKERS_CODE, mode, str(SAMPLE)],
                                  capture_output=True, text=True, cwd=ROOT, env=env,
                                  check=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            walls[mode].append(result["wall"])
            values.setdefault(mode, result["values"])
    print("\n## workers: the probe stage on the sample, blocks in processes vs threads\n")
    print("| workers | wall s (each run) | best |")
    print("|---|---|---|")
    for mode, times in walls.items():
        print(f"| {mode} | {', '.join(f'{t:.2f}' for t in times)} | {min(times):.2f} |")
    print(f"\nthreads / processes (best): {min(walls['threads']) / min(walls['processes']):.2f}; "
          f"the same values: {values['processes'] == values['threads']}")


def part_batch(images: int, sizes: list[int], repeats: int) -> None:
    import numpy as np
    import torch

    from recommender.models.features import _forward, default_workers

    _, backbone, files = _fashion_mnist_files(images)
    model = backbone.model

    walls: dict[int, list[float]] = {size: [] for size in sizes}
    for _ in range(repeats):
        for size in sizes:
            walls[size].append(_bare_forward(model, files, size))
    # The same features whatever the batch: eval mode, and the kernels do not mix images.
    first = torch.stack([files[i][0] for i in range(32)]).to(memory_format=torch.channels_last)
    with torch.inference_mode():
        whole, _ = _forward(model, first, len(backbone.blocks))
        parts = [_forward(model, first[i:i + 8], len(backbone.blocks))[0] for i in (0, 8, 16, 24)]
    same = all(np.array_equal(w, np.concatenate([p[k] for p in parts]))
               for k, w in enumerate(whole))
    print(f"\n## batch: the bare forward pass over {images} images by batch size, "
          f"{torch.get_num_threads()} torch threads, {default_workers('cpu')} decoding workers\n")
    print("| batch size | wall s (each run) | images/s (best) | / batch 32 |")
    print("|---|---|---|---|")
    base = min(walls[32]) if 32 in walls else None
    for size, times in walls.items():
        ratio = f"{base / min(times):.2f}" if base else "-"
        print(f"| {size} | {', '.join(f'{t:.1f}' for t in times)} | {images / min(times):.1f} | "
              f"{ratio} |")
    print(f"\nfeatures of 32 images in one batch of 32 and in four of 8: the same bits: {same}")


def part_before(rev: str, repeats: int, data: Path, cache: Path | None) -> None:
    """The probe stage of this checkout against ``rev``'s, on the same features."""
    tree = Path(tempfile.mkdtemp(prefix="nbtl-bench-before-")) / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), rev], cwd=ROOT,
                   capture_output=True, check=True)
    try:
        if cache is None:
            cache = Path(tempfile.mkdtemp(prefix="nbtl-bench-before-cache-"))
            _cli([str(data)], cache)  # fills the features cache
        env = {**os.environ, "NBTL_CACHE_DIR": str(cache)}
        env.pop("PYTHONPATH", None)
        walls: dict[str, list[float]] = {rev: [], "this checkout": []}
        values: dict[str, list] = {}
        for _ in range(repeats):
            for name, where in ((rev, tree), ("this checkout", ROOT)):
                # cwd first on sys.path: each process imports its own tree's packages.
                done = subprocess.run([sys.executable, "-c", WORKERS_CODE, "processes",
                                       str(data)], capture_output=True, text=True, cwd=where,
                                      env=env, check=True)
                result = json.loads(done.stdout.strip().splitlines()[-1])
                walls[name].append(result["wall"])
                values.setdefault(name, result["values"])
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT,
                       capture_output=True)
    print(f"\n## before: the probe stage on {data.name}'s features, {rev} vs this checkout\n")
    print("| probes of | wall s (each run) | best | best / this checkout's |")
    print("|---|---|---|---|")
    best = min(walls["this checkout"])
    for name, times in walls.items():
        print(f"| {name} | {', '.join(f'{t:.2f}' for t in times)} | {min(times):.2f} | "
              f"{min(times) / best:.2f} |")
    print(f"\nthe same values: {values[rev] == values['this checkout']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", action="append",
                        choices=["help", "cache", "probes", "workers", "n2000", "before", "batch",
                                 "twin", "fold"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline-rev", default=BASELINE_REV)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="n2000: images per batch (default: the CLI's on the CPU, 8)")
    parser.add_argument("--twin-images", type=int, default=2000)
    parser.add_argument("--twin-sizes", default="250,500",
                        type=lambda text: [int(v) for v in text.split(",")])
    parser.add_argument("--twin-draws", type=int, default=8)
    parser.add_argument("--batch-images", type=int, default=512)
    parser.add_argument("--batch-sizes", default="4,8,16,32,64",
                        type=lambda text: [int(v) for v in text.split(",")])
    parser.add_argument("--before-rev", default="26db841",
                        help="before: the checkout to compare with (default: the last one with "
                             "scipy's minimize and the full Newton Hessian)")
    parser.add_argument("--data", type=Path, default=SAMPLE, help="before: the dataset")
    parser.add_argument("--cache", type=Path, default=None,
                        help="before: a cache folder that already holds --data's features")
    args = parser.parse_args(argv)
    parts = args.part or ["help", "cache", "probes", "workers", "n2000"]
    print(f"# bench_analysis: {', '.join(parts)}; {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f} at the start")
    if "help" in parts:
        part_help(args.repeats)
    if "cache" in parts:
        part_cache(args.repeats)
    if "probes" in parts:
        part_probes(args.baseline_rev)
    if "workers" in parts:
        part_workers(args.repeats)
    if "n2000" in parts:
        from recommender.models.features import default_batch_size

        part_n2000(args.images, args.batch_size or default_batch_size("cpu"), args.repeats)
    if "batch" in parts:
        part_batch(args.batch_images, args.batch_sizes, args.repeats)
    if "before" in parts:
        part_before(args.before_rev, args.repeats, args.data, args.cache)
    if "twin" in parts:
        part_twin(args.twin_images, args.twin_sizes, args.twin_draws)
    if "fold" in parts:
        part_fold(args.batch_images, args.repeats)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
