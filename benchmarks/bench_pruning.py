"""Does pruning make a search cheaper without making it worse? Same N trials, same seeds, with and
without successive halving, on real datasets.

    python benchmarks/datasets.py --out /tmp/nbtl-bench --per-class 40 --test-per-class 50 \\
        --only textures
    python benchmarks/bench_pruning.py --trials 12 --epochs 9 --size 64 \\
        --data data/fashion-mnist-sample /tmp/nbtl-bench/textures

For each dataset: the recommendation (the analysis of ``nbtl-recommend``; its measures are
cached), then the search of ``--search N`` twice, each in a fresh in-memory study with the
same sampler seed: without a pruner, and with :func:`recommender.finetune.search.make_pruner`.
Each trial is one fine-tuning run on seed 0 (``--epochs`` at ``--size`` px), scored on the
validation split; the test split only reports. Printed: the wall time of each search, the
trials pruned, and the best trial by validation accuracy with its test accuracy. One thread
(``--threads``), so that the two searches see the same machine. A dataset folder with
``train/`` and ``test/`` uses them (as ``--validate`` does); otherwise the stratified split.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))


def prepare(root: Path, epochs: int, size: int, seed: int):
    """The recommendation, its remake(overrides), and a runner for the search's trials."""
    import recommender
    from recommender.data.dataset import load_dataset
    from recommender.data.splits import find_split_folders, split_dataset, split_from_folders
    from recommender.data.tensors import load_image_tensors
    from recommender.finetune.runs import Budget, SettingRunner
    from recommender.models.backbones import load_backbone

    folders = find_split_folders(root)
    result = recommender.recommend(root, seed=seed)  # with train/ and test/: train/ only
    if folders:
        parts = {name: load_dataset(path) for name, path in folders.items()}
        split = split_from_folders(parts, seed)
    else:
        split = split_dataset(result.dataset.samples, result.dataset.classes, seed)
    backbone = load_backbone(None, None)
    from benchmarks.transfer import recommend_from
    from recommender.analysis import block_profile

    analysis = {"measures": result.summary_measures(), "profile": block_profile(result.probes),
                "blocks": [{"name": b.name, "modules": list(b.modules)}
                           for b in backbone.blocks],
                "head_modules": list(backbone.head_modules),
                "num_images": len(result.dataset.samples),
                "num_classes": len(result.dataset.classes)}
    recommendation = recommend_from(analysis)
    budget = Budget.for_recommendation(recommendation.hyperparameters, epochs, size)
    data = load_image_tensors([p for p, _ in split.samples], [c for _, c in split.samples],
                              size)
    runner = SettingRunner(backbone, data, split, budget, seeds=(seed,), device="cpu",
                           use_cache=False)
    return recommendation, (lambda extra: recommend_from(analysis, extra)), runner, split


def search(recommendation, remake, runner, *, trials: int, prune: bool, seed: int) -> dict:
    from recommender.finetune import search as s
    from recommender.finetune.training import TrainingDiverged

    hp = recommendation.hyperparameters
    space = s.space(recommendation.details, hp)
    start = s.recommended_params(space, hp)

    def evaluate(overrides, report=None):
        trial_hp = hp if overrides == s.to_overrides(start) else remake(overrides).hyperparameters
        try:
            run = runner.trial(trial_hp, report=report)
        except TrainingDiverged:
            return 0.0, 0.0
        return run.val_accuracy, run.test_accuracy

    mark = time.perf_counter()
    found = s.run_search(trials, space_=space, start=start, evaluate=evaluate, storage=None,
                         study_name="bench", seed=seed, prune=prune)
    seconds = time.perf_counter() - mark
    best = s.best_trial(found)
    return {"prune": prune, "seconds": round(seconds, 1), "trials": len(found),
            "pruned": sum(t["state"] == "pruned" for t in found),
            "epochs_trained": sum(t["epochs"] or runner.budget.epochs for t in found),
            "best_trial": best["number"], "best_val": best["val_accuracy"],
            "best_test": best["test_accuracy"], "best_overrides": best["overrides"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, nargs="+", required=True)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=9)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="JSON lines, one per search")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    rows = []
    for root in args.data:
        recommendation, remake, runner, split = prepare(root, args.epochs, args.size, args.seed)
        for prune in (False, True):
            row = {"dataset": root.name, "n_train": int(split.train.size),
                   "n_val": int(split.val.size), "n_test": int(split.test.size),
                   "epochs": args.epochs, "size": args.size, "threads": args.threads,
                   **search(recommendation, remake, runner, trials=args.trials, prune=prune,
                            seed=args.seed)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.out:
                with args.out.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(row) + "\n")
    print("\n| dataset | pruning | wall time | trials pruned | epochs trained | best trial | "
          "best val | best test |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['dataset']} ({r['n_train']} train / {r['n_val']} val / {r['n_test']} test) "
              f"| {'successive halving' if r['prune'] else 'none'} | {r['seconds'] / 60:.1f} min "
              f"| {r['pruned']}/{r['trials']} | {r['epochs_trained']} | {r['best_trial']} | "
              f"{100 * r['best_val']:.1f}% | {100 * r['best_test']:.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
