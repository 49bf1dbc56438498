"""Do nbtl's recommendations beat the binary default? Ground truth by brute force, on real data.

    python benchmarks/datasets.py --out DATA --per-class 40 --test-per-class 50
    python benchmarks/transfer.py run --data DATA [--jobs 2] [--epochs 10] [--size 64]
    python benchmarks/transfer.py report [--out docs/benchmark.md]

For every dataset under DATA (``train/`` and ``test/`` class folders, as ``datasets.py``
writes them), ``run``:

1. analyses the training folder as ``nbtl-recommend`` does (features, probes) and stores the
   measures, so the recommendation can be re-derived from them when the heuristics change;
2. fine-tunes, with the budget of ``--validate`` (``--epochs`` at ``--size`` px, the
   recommendation's batch size, the same split, augmentation and schedule), the grid over the
   paper's axes on seed 0: top blocks re-initialised (0..3) x regularisation (L2 everywhere /
   L2-SP on the lower blocks + L2 above / L2-SP on every transferred block) x learning rates
   (one for all / per group: head and re-initialised blocks 10x, lower blocks 1/10 of the base)
   x base learning rate; plus the binary default, training from scratch and the recommendation;
3. re-runs the top settings of that grid, the default and the recommendation on fresh seeds
   (paired: seed s is the same data order and head initialisation for every setting).

Every finished run is one line appended to ``--results`` (JSON lines), keyed by dataset,
setting, seed, budget, device and thread count: a rerun skips what is there, so the grid can be
completed over several runs, and an interrupted one loses at most the run in flight. The thread
count is pinned (``--threads``, default 1 per job) so that reruns give identical numbers; a GPU
is used when present (``--device auto``). ``report`` reads the results and writes the tables
and the figure of ``docs/benchmark.md``.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results" / "transfer.jsonl"
DATASETS = ("fashion-mnist", "mnist", "silhouettes", "digits8x8", "textures", "faces", "photos")

# The grid (the paper's axes).
REINIT = (0, 1, 2, 3)
REGULARISERS = ("l2", "l2sp_lower", "l2sp_all")
LR_MODES = ("one", "groups")
BASE_LRS = (0.01, 0.03)
GROUP_RATIO = 10.0  # per-group mode: head and re-initialised blocks x10, lower blocks /10
L2SP_WEIGHT = 0.02  # the paper code's alpha (heuristics.rules.regularisation)
L2_WEIGHT = 1e-4  # the binary default's weight decay, for every cell
SCRATCH = {"optimizer": "adamw", "lr": 1e-3}  # as recommender.finetune.scratch: SGD diverged
GRID_SEED = 0
CONFIRM_SEEDS = (1, 2, 3)
TOP = 2
NOISE_SE = 2.0  # "within noise": a paired difference within 2 standard errors of zero


# --- settings ------------------------------------------------------------------------------

def cell_id(k: int, reg: str, lr_mode: str, base: float) -> str:
    return f"r{k}-{reg}-{lr_mode}-{base:g}"


def parse_cell(setting: str) -> dict[str, Any] | None:
    parts = setting.split("-")
    if len(parts) != 4 or not parts[0].startswith("r"):
        return None
    return {"reinit": int(parts[0][1:]), "reg": parts[1], "lr_mode": parts[2],
            "base_lr": float(parts[3])}


def grid_cells() -> list[str]:
    return [cell_id(k, reg, mode, base) for k in REINIT for reg in REGULARISERS
            for mode in LR_MODES for base in BASE_LRS]


def recommend_from(analysis: Mapping[str, Any], overrides: Mapping[str, Any] | None = None):
    """The heuristics' recommendation from stored measures (no features, no torch)."""
    import heuristics
    from heuristics.types import Block

    return heuristics.advise(
        analysis["measures"], profile=analysis["profile"],
        blocks=[Block(b["name"], tuple(b["modules"])) for b in analysis["blocks"]],
        head_modules=tuple(analysis["head_modules"]), num_images=analysis["num_images"],
        num_classes=analysis["num_classes"], overrides=dict(overrides or {}))


def cell_hyperparameters(analysis: Mapping[str, Any], setting: str):
    """The hyperparameters of one grid cell: the heuristics' own group structure (lower half of
    the transferred blocks below the split) with every axis set by override."""
    c = parse_cell(setting)
    assert c is not None, setting
    ratio = GROUP_RATIO if c["lr_mode"] == "groups" else 1.0
    base = c["base_lr"]
    overrides = {"reinit_top_blocks": c["reinit"], "base_lr": base, "upper_lr": base,
                 "head_lr": base * ratio, "lower_lr": base / ratio,
                 "l2sp_weight": 0.0 if c["reg"] == "l2" else L2SP_WEIGHT,
                 "l2_weight": L2_WEIGHT, "lp_ft": False, "optimizer": "sgd_nesterov",
                 "momentum": 0.9}
    hp = recommend_from(analysis, overrides).hyperparameters
    if c["reg"] == "l2sp_all":  # every transferred group under L2-SP (re-initialised: L2)
        groups = tuple(g if g.name == "head" else replace(g, penalty="l2sp")
                       for g in hp.lr_groups)
        hp = replace(hp, lr_groups=groups,
                     l2sp_modules=tuple(m for g in groups if g.penalty == "l2sp"
                                        for m in g.modules),
                     l2_modules=tuple(m for g in groups if g.penalty == "l2" for m in g.modules))
    assert hp.split_block is not None, (setting, "needs a lower group")
    return hp


def scratch_hyperparameters(analysis: Mapping[str, Any], budget_from=None):
    """Every block re-initialised, AdamW at one learning rate, L2 on everything but the
    BatchNorm parameters: training from scratch, with ``budget_from``'s batch and epochs
    (``Hyperparameters``; default: the rule table's defaults)."""
    from heuristics import LrGroup, binary_default

    lr = SCRATCH["lr"]
    head = tuple(analysis["head_modules"])
    return replace(
        binary_default(head_modules=head, lr=lr, weight_decay=L2_WEIGHT, budget=budget_from),
        reinit_top_blocks=len(analysis["blocks"]),
        reinit_modules=tuple(m for b in analysis["blocks"] for m in b["modules"]),
        optimizer=SCRATCH["optimizer"], effective_lr=None, exclude_from_decay=("batchnorm",),
        lr_groups=(LrGroup("head", lr, (), head, "l2"),
                   LrGroup("rest", lr, (), (), "l2", rest=True)))


def recommended_id(hp) -> str:
    from recommender.cache import digest

    return "rec@" + digest(plain_hp(hp))[:10]


def plain_hp(hp) -> dict[str, Any]:
    """A setting's ``Hyperparameters`` as stored in the results (JSON)."""
    return hp.to_dict()


# --- the results file ------------------------------------------------------------------------

def read_results(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a line cut by a kill: that run is simply redone
    return rows


def append(path: Path, row: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.write(json.dumps(row, sort_keys=True) + "\n")
        fh.flush()
        fcntl.flock(fh, fcntl.LOCK_UN)


def run_key(row: Mapping[str, Any]) -> tuple:
    return (row["dataset"], row.get("backbone", DEFAULT_BACKBONE), row["setting"], row["seed"],
            json.dumps(row["budget"], sort_keys=True), row["device"], row["threads"])


# --- one dataset -----------------------------------------------------------------------------

def analyse(root: Path, device: str, backbone) -> dict[str, Any]:
    """What ``nbtl-recommend`` measures on the training folder (the probes never see test);
    ``backbone`` gives the model, the blocks and the weights' identity."""
    import recommender
    from recommender.analysis import block_profile

    model = None if backbone.name == DEFAULT_BACKBONE else backbone.name
    result = recommender.recommend(root, device=device, model=model)
    return {"measures": result.summary_measures(), "profile": block_profile(result.probes),
            "blocks": [{"name": b.name, "modules": list(b.modules)} for b in backbone.blocks],
            "head_modules": list(backbone.head_modules),
            "num_images": len(result.dataset.samples),
            "num_classes": len(result.dataset.classes), "weights": backbone.weights_id,
            "seconds": round(sum(v for k, v in result.timings.items() if k != "total_s"), 1),
            "num_params": result.model["num_params"]}


def rank(rows: Sequence[Mapping[str, Any]], n_val: int, n_test: int) -> list[str]:
    """Grid cells by seed-0 accuracy on validation and test together (best first; ties in
    grid order)."""
    order = {c: i for i, c in enumerate(grid_cells())}
    scored = [((r["val"] * n_val + r["test"] * n_test) / (n_val + n_test), -order[r["setting"]],
               r["setting"]) for r in rows if r["setting"] in order]
    return [s for *_, s in sorted(scored, reverse=True)]


def run_dataset(name: str, root: Path, results: Path, *, epochs: int, size: int, threads: int,
                device: str, top: int, grid: bool, confirm: bool,
                extra: Sequence[Mapping[str, Any]] = (), stage: str = "all",
                shard: tuple[int, int] = (0, 1), backbone_name: str | None = None) -> None:
    import torch

    torch.set_num_threads(threads)
    from heuristics import Hyperparameters
    from recommender.data.dataset import load_dataset
    from recommender.data.splits import split_from_folders
    from recommender.data.tensors import load_image_tensors
    from recommender.finetune.compare import default_hyperparameters
    from recommender.finetune.runs import Budget, run_setting
    from recommender.finetune.training import TrainingDiverged
    from recommender.models.backbones import load_backbone
    from recommender.models.features import resolve_device

    device = resolve_device(device)
    bname = backbone_name or DEFAULT_BACKBONE
    backbone = load_backbone(None if bname == DEFAULT_BACKBONE else bname, None)
    tag = {} if bname == DEFAULT_BACKBONE else {"backbone": bname}  # old rows: the default
    rows = read_results(results)
    analysis = next((r["analysis"] for r in rows if r.get("kind") == "analysis"
                     and r["dataset"] == name
                     and r.get("backbone", DEFAULT_BACKBONE) == bname), None)
    if analysis is None:
        print(f"{name}: analysing {root / 'train'} with {bname}", flush=True)
        analysis = analyse(root, device, backbone)
        append(results, {"kind": "analysis", "dataset": name, **tag, "analysis": analysis})
    rec_hp = recommend_from(analysis).hyperparameters
    budget = Budget.for_recommendation(rec_hp, epochs, size)
    parts = {r: load_dataset(root / r) for r in ("train", "test")}
    split = split_from_folders(parts, GRID_SEED)
    data = None
    base_row = {"kind": "run", "dataset": name, **tag, "budget": budget.to_dict(), "device": device,
                "threads": threads, "n_train": int(split.train.size),
                "n_val": int(split.val.size), "n_test": int(split.test.size)}
    settings = {"default": default_hyperparameters(rec_hp),
                "scratch": scratch_hyperparameters(analysis, rec_hp),
                recommended_id(rec_hp): rec_hp}
    extra_ids = []
    for item in extra:  # the recommendation of the heuristics before a change, or candidates
        named = "hyperparameters" in item
        hp = Hyperparameters.from_dict(item["hyperparameters"] if named else item)
        extra_ids.append(f"{item['name']}@{recommended_id(hp)[4:]}" if named
                         else recommended_id(hp))
        settings[extra_ids[-1]] = hp

    def hp_of(setting: str) -> Hyperparameters:
        return settings[setting] if setting in settings else \
            cell_hyperparameters(analysis, setting)

    def ensure(setting: str, seed: int) -> dict[str, Any]:
        nonlocal data
        key = run_key({**base_row, "setting": setting, "seed": seed})
        for r in read_results(results):
            if r.get("kind") == "run" and run_key(r) == key:
                return r
        if data is None:
            data = load_image_tensors([p for p, _ in split.samples],
                                      [c for _, c in split.samples], budget.image_size)
        hp = hp_of(setting)
        start = time.perf_counter()
        try:
            run = run_setting(hp, backbone, data, split, budget, seed=seed, device=device)
            val, test, diverged = run.val_accuracy, run.test_accuracy, False
        except TrainingDiverged:
            val, test, diverged = 0.0, 0.0, True
        row = {**base_row, "setting": setting, "seed": seed, "val": val, "test": test,
               "diverged": diverged, "seconds": round(time.perf_counter() - start, 1),
               "hyperparameters": plain_hp(hp)}
        append(results, row)
        print(f"{name}: {bname} {setting} seed {seed}: test {test:.3f} (val {val:.3f}) "
              f"{row['seconds']:.0f} s", flush=True)
        return row

    rec = recommended_id(rec_hp)
    if stage == "default":  # the binary default on the fresh seeds only (ranking backbones)
        for seed in CONFIRM_SEEDS:
            ensure("default", seed)
        return
    if not grid and not confirm:  # --stage extra / pair: no grid, these settings on every seed
        for seed in (GRID_SEED, *CONFIRM_SEEDS):
            for setting in (extra_ids if stage == "extra" else ["default", rec, *extra_ids]):
                ensure(setting, seed)
        return
    first = ["default", rec, "scratch"]
    if grid:
        cells = [c for c in grid_cells() if c != DEFAULT_CELL]
        index, count = shard
        for setting in (first + extra_ids + cells)[index::count]:
            ensure(setting, GRID_SEED)
    if confirm:
        seed0 = [ensure(c, GRID_SEED) for c in grid_cells() if c != DEFAULT_CELL]
        seed0.append({**ensure("default", GRID_SEED), "setting": DEFAULT_CELL})
        best = rank(seed0, int(split.val.size), int(split.test.size))[:top]
        chosen = ["default", rec] + [("default" if c == DEFAULT_CELL else c) for c in best] \
            + extra_ids
        for seed in CONFIRM_SEEDS:
            for setting in dict.fromkeys(chosen):
                ensure(setting, seed)


# The binary default is a grid cell: all transferred, L2 1e-4 everywhere, one lr 0.01. It is
# run once, as "default" (recommender.finetune.compare.default_hyperparameters), and stands for it.
DEFAULT_CELL = cell_id(0, "l2", "one", 0.01)
DEFAULT_BACKBONE = "tf_efficientnet_lite0"  # recommender.models.backbones.DEFAULT_MODEL


# --- the command line ------------------------------------------------------------------------

def run_main(args: argparse.Namespace) -> int:
    names = [n for n in (args.only.split(",") if args.only else DATASETS) if n]
    present = []
    for n in names:
        root = args.data / n
        if (root / "train").is_dir() and (root / "test").is_dir():
            present.append(n)
        else:
            print(f"skipping {n}: no {root}/train and test folders (build them with "
                  f"benchmarks/datasets.py --out {args.data} --per-class 40 "
                  "--test-per-class 100)", flush=True)
    if not present:
        return 1
    extra = json.loads(args.extra.read_text(encoding="utf-8")) if args.extra else {}
    common = ["--data", str(args.data), "--results", str(args.results), "--epochs",
              str(args.epochs), "--size", str(args.size), "--threads", str(args.threads),
              "--device", args.device, "--top", str(args.top), "--stage", args.stage,
              "--shard", f"{args.shard[0]}/{args.shard[1]}", "--backbone", args.backbone]
    if args.extra:
        common += ["--extra", str(args.extra)]
    if args.jobs > 1 and len(present) > 1:  # one child process per dataset, args.jobs at once
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        queue = list(present)
        running: list[subprocess.Popen] = []
        failed = 0
        while queue or running:
            while queue and len(running) < args.jobs:
                running.append(subprocess.Popen(
                    [sys.executable, __file__, "run", "--only", queue.pop(0), "--jobs", "1",
                     *common], env=env))
            time.sleep(1)
            for p in [p for p in running if p.poll() is not None]:
                failed += p.returncode != 0
                running.remove(p)
        return 1 if failed else 0
    for n in present:
        run_dataset(n, args.data / n, args.results, epochs=args.epochs, size=args.size,
                    threads=args.threads, device=args.device, top=args.top,
                    grid=args.stage in ("grid", "all"), confirm=args.stage in ("confirm", "all"),
                    extra=extra.get(n, ()), stage=args.stage, shard=args.shard,
                    backbone_name=args.backbone)
    return 0


def recommendations_main(args: argparse.Namespace) -> int:
    """The recommendation of the heuristics importable here, for every analysed dataset."""
    out = {r["dataset"]: [plain_hp(recommend_from(r["analysis"]).hyperparameters)]
           for r in read_results(args.results) if r.get("kind") == "analysis"}
    args.out.write_text(json.dumps(out, indent=1, sort_keys=True), encoding="utf-8")
    print(f"{len(out)} recommendation(s) -> {args.out}")
    return 0


def _shard(text: str) -> tuple[int, int]:
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise argparse.ArgumentTypeError(f"{text!r} is not I/N with 0 <= I < N")
    return int(index), int(count)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="fine-tune the grid, the default and the recommendation")
    run.add_argument("--data", type=Path, default=Path("/tmp/nbtl-bench"),
                     help="folder of datasets built by benchmarks/datasets.py")
    run.add_argument("--results", type=Path, default=RESULTS, help="JSON-lines results file")
    run.add_argument("--only", default="", help=f"comma-separated from {', '.join(DATASETS)}")
    run.add_argument("--epochs", type=int, default=6)
    run.add_argument("--size", type=int, default=64)
    run.add_argument("--threads", type=int, default=1, help="torch threads per job (pinned)")
    run.add_argument("--jobs", type=int, default=1, help="datasets fine-tuned at once")
    run.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    run.add_argument("--top", type=int, default=TOP, help="grid cells re-run on fresh seeds")
    run.add_argument("--stage", default="all",
                     choices=("grid", "confirm", "all", "extra", "pair", "default"),
                     help="extra: only the --extra settings, on every seed; pair: the default "
                          "and the recommendation (and --extra) on every seed, no grid; "
                          "default: only the binary default on the fresh seeds 1-3 (for "
                          "ranking backbones, benchmarks/ranking.py)")
    run.add_argument("--backbone", default=DEFAULT_BACKBONE,
                     help="timm name of the pre-trained backbone (tf_efficientnet_lite0/1/2 "
                          "load offline from their packages); rows of another backbone than "
                          "the default carry its name")
    run.add_argument("--extra", type=Path, default=None,
                     help="JSON {dataset: [hyperparameters or {name, hyperparameters}, ...]} "
                          "of more settings to run on every seed (e.g. written by "
                          "`recommendations` from another version)")
    run.add_argument("--shard", type=_shard, default=(0, 1), metavar="I/N",
                     help="with --stage grid: only every N-th setting from the I-th (0-based), "
                          "so N processes can share one dataset's grid")
    recs = sub.add_parser("recommendations", help="write the recommendation of these "
                          "heuristics for every analysed dataset (for run --extra)")
    recs.add_argument("--results", type=Path, default=RESULTS)
    recs.add_argument("--out", type=Path, required=True)
    rep = sub.add_parser("report", help="tables and figure from the results")
    rep.add_argument("--results", type=Path, default=RESULTS)
    rep.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmark.md")
    rep.add_argument("--figure", type=Path, default=ROOT / "docs" / "benchmark.png")
    args = parser.parse_args(argv)
    if args.command == "run":
        return run_main(args)
    if args.command == "recommendations":
        return recommendations_main(args)
    from benchmarks import transfer_report

    return transfer_report.main(args)


if __name__ == "__main__":
    sys.exit(main())
