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

The runs are queued as trials of an Optuna study, one per dataset and budget
(``transfer-<dataset>-e<epochs>-s<size>-<device>-t<threads>``), in ``--storage`` (default: a
journal file next to the results file, ``transfer.journal``; ``postgresql://...`` for several
machines). The main process (``run``) analyses, queues, trains and, once the grid is done, queues
the confirmations; any number of workers train queued runs too: ``--jobs N`` starts N-1 local
ones, and ``run --role worker --storage URL`` with the same ``--data``, ``--epochs``,
``--size``, ``--threads`` and ``--device`` joins from another machine (start it after the main
process has printed its first run). A worker that dies stops sending heartbeats, and its run is
queued again (``recommender.finetune.storage``).

Every finished run is one line appended to ``--results`` (JSON lines), keyed by dataset,
setting, seed, budget, device and thread count (runs from other machines are exported into it
by the main process from the study): a rerun skips what is there, so the grid can be completed
over several runs, and an interrupted one loses at most the run in flight. The thread
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
from dataclasses import dataclass, replace
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
DEFAULT_BACKBONE = "tf_efficientnet_lite0"  # recommender.models.backbones.DEFAULT_MODEL
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


def recommend_from(analysis: Mapping[str, Any], overrides: Mapping[str, Any] | None = None,
                   budget: tuple[int, int] | None = None, rules: str | None = None):
    """The heuristics' recommendation from stored measures (no features, no torch), for the
    planned ``budget`` (epochs, image size; default: the rule table's own); ``rules="paper"``:
    the paper's table from before the fit (``heuristics.rules.PAPER_RULES``)."""
    import heuristics
    from heuristics.rules import PAPER_RULES
    from heuristics.types import Block

    return heuristics.advise(
        analysis["measures"], profile=analysis["profile"],
        blocks=[Block(b["name"], tuple(b["modules"])) for b in analysis["blocks"]],
        head_modules=tuple(analysis["head_modules"]), num_images=analysis["num_images"],
        num_classes=analysis["num_classes"], overrides=dict(overrides or {}),
        budget={"epochs": budget[0], "image_size": budget[1]} if budget else None,
        **({"rules": PAPER_RULES} if rules == "paper" else {}))


@dataclass(frozen=True)
class Grid:
    """A grid over the paper's axes: its cells, their hyperparameters and how they rank.

    ``head_cap`` caps the per-group mode's head (and re-initialised blocks) rate: without it,
    base 0.03 gives the head 0.3, which collapses (``docs/benchmark.md``). ``scratch`` adds
    training from scratch; ``lpft_flip`` adds the recommendation with LP-FT turned the other
    way (the LP-FT axis "at the recommended point")."""

    name: str
    reinit: tuple[int, ...]
    regularisers: tuple[str, ...]
    lr_modes: tuple[str, ...]
    base_lrs: tuple[float, ...]
    head_cap: float | None = None
    scratch: bool = True
    lpft_flip: bool = False

    def cells(self) -> list[str]:
        return [cell_id(k, reg, mode, base) for k in self.reinit for reg in self.regularisers
                for mode in self.lr_modes for base in self.base_lrs]

    def hyperparameters(self, analysis: Mapping[str, Any], setting: str):
        """The hyperparameters of one grid cell: the heuristics' own group structure (lower
        half of the transferred blocks below the split) with every axis set by override."""
        c = parse_cell(setting)
        assert c is not None, setting
        ratio = GROUP_RATIO if c["lr_mode"] == "groups" else 1.0
        base = c["base_lr"]
        head = base * ratio if self.head_cap is None or ratio == 1.0 else \
            max(base, min(base * ratio, self.head_cap))
        overrides = {"reinit_top_blocks": c["reinit"], "base_lr": base, "upper_lr": base,
                     "head_lr": head, "lower_lr": base / ratio,
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
                         l2_modules=tuple(m for g in groups if g.penalty == "l2"
                                          for m in g.modules))
        assert hp.split_block is not None, (setting, "needs a lower group")
        return hp

    def rank(self, rows: Sequence[Mapping[str, Any]], n_val: int, n_test: int) -> list[str]:
        """Grid cells by seed-0 accuracy on validation and test together (best first; ties
        in grid order)."""
        order = {c: i for i, c in enumerate(self.cells())}
        scored = [((r["val"] * n_val + r["test"] * n_test) / (n_val + n_test),
                   -order[r["setting"]], r["setting"]) for r in rows if r["setting"] in order]
        return [s for *_, s in sorted(scored, reverse=True)]


def grid_v1() -> Grid:
    """The grid of docs/benchmark.md's first benchmark (transfer.jsonl), from the module's
    constants as they are now."""
    return Grid("v1", reinit=REINIT, regularisers=REGULARISERS, lr_modes=LR_MODES,
                base_lrs=BASE_LRS)


def grid_cells() -> list[str]:
    return grid_v1().cells()


def cell_hyperparameters(analysis: Mapping[str, Any], setting: str):
    """The hyperparameters of one cell of the first benchmark's grid (:func:`grid_v1`)."""
    return grid_v1().hyperparameters(analysis, setting)


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


def lpft_flip_id(hp) -> str:
    """The recommendation with LP-FT turned the other way (``lpft-on@...`` / ``lpft-off@``)."""
    return ("lpft-on@" if hp.lp_ft else "lpft-off@") + recommended_id(hp)[4:]


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

def analysis_rows(rows: Sequence[Mapping[str, Any]], name: str,
                  backbone: str) -> list[Mapping[str, Any]]:
    """The analysis rows of ``name`` with ``backbone``, oldest first: a re-analysis (by newer
    probe code, ``meta.py analyse``) is appended, and the fit and the report read the last."""
    return [r for r in rows if r.get("kind") == "analysis" and r["dataset"] == name
            and r.get("backbone", DEFAULT_BACKBONE) == backbone]


def analysis_row(name: str, backbone: str, analysis: Mapping[str, Any]) -> dict[str, Any]:
    """The results row of an analysis, with the probe code's version that made it."""
    from recommender.analysis import code_version

    tag = {} if backbone == DEFAULT_BACKBONE else {"backbone": backbone}
    return {"kind": "analysis", "dataset": name, **tag, "analysis": dict(analysis),
            "code": code_version()}


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
    """:meth:`Grid.rank` of the first benchmark's grid."""
    return grid_v1().rank(rows, n_val, n_test)


def run_dataset(name: str, root: Path, results: Path, *, epochs: int, size: int, threads: int,
                device: str, top: int, grid: bool, confirm: bool,
                extra: Sequence[Mapping[str, Any]] = (), stage: str = "all",
                storage: str | None = None, backbone_name: str | None = None,
                grid_spec: Grid | None = None, confirm_cells: Sequence[str] = (),
                rec_rules: str | None = None) -> None:
    """The main process for one dataset: analyse it (once), queue its runs as trials of the
    study ``study_name(...)`` in ``storage`` (default: a journal file next to ``results``),
    work on them with any workers (:func:`work_dataset`), then queue the confirmations on
    fresh seeds from the grid's ranking (and ``confirm_cells``, grid cells wanted there too:
    held-out recommendations to score), and export every finished run to ``results``.
    ``rec_rules``: whose recommendation is run beside the grid (``"paper"``: the paper's
    table, :func:`recommend_from`'s; default: the checkout's heuristics)."""
    import torch

    torch.set_num_threads(threads)
    from heuristics import Hyperparameters

    grid_spec = grid_spec or grid_v1()
    from recommender.data.dataset import load_dataset
    from recommender.data.splits import split_from_folders
    from recommender.finetune.compare import default_hyperparameters
    from recommender.finetune.runs import Budget
    from recommender.models.backbones import load_backbone
    from recommender.models.features import resolve_device

    device = resolve_device(device)
    bname = backbone_name or DEFAULT_BACKBONE
    backbone = load_backbone(None if bname == DEFAULT_BACKBONE else bname, None)
    tag = {} if bname == DEFAULT_BACKBONE else {"backbone": bname}  # old rows: the default
    rows = read_results(results)
    # The recommendation beside the grid comes from the task's *first* analysis, the one its
    # runs were queued with: a re-analysis by newer probe code (meta.py analyse) feeds the fit
    # and the report, but does not move the rec@ setting a resumed run queues.
    found = analysis_rows(rows, name, bname)
    analysis = found[0]["analysis"] if found else None
    if analysis is None:
        print(f"{name}: analysing {root / 'train'} with {bname}", flush=True)
        analysis = analyse(root, device, backbone)
        append(results, analysis_row(name, bname, analysis))
    rec_hp = recommend_from(analysis, budget=(epochs, size), rules=rec_rules).hyperparameters
    budget = Budget.for_recommendation(rec_hp, epochs, size)
    parts = {r: load_dataset(root / r) for r in ("train", "test")}
    split = split_from_folders(parts, GRID_SEED)
    base_row = {"kind": "run", "dataset": name, **tag, "budget": budget.to_dict(),
                "device": device,
                "threads": threads, "n_train": int(split.train.size),
                "n_val": int(split.val.size), "n_test": int(split.test.size)}
    settings = {"default": default_hyperparameters(rec_hp), recommended_id(rec_hp): rec_hp}
    if grid_spec.scratch:
        settings["scratch"] = scratch_hyperparameters(analysis, rec_hp)
    flip = []
    if grid_spec.lpft_flip:  # the LP-FT axis at the recommended point: the other way round
        flipped = recommend_from(analysis, {"lp_ft": not rec_hp.lp_ft},
                                 budget=(epochs, size), rules=rec_rules).hyperparameters
        flip = [lpft_flip_id(flipped)]
        settings[flip[0]] = flipped
    extra_ids = []
    for item in extra:  # the recommendation of the heuristics before a change, or candidates
        named = "hyperparameters" in item
        hp = Hyperparameters.from_dict(item["hyperparameters"] if named else item)
        extra_ids.append(f"{item['name']}@{recommended_id(hp)[4:]}" if named
                         else recommended_id(hp))
        settings[extra_ids[-1]] = hp

    def hp_of(setting: str) -> Hyperparameters:
        return settings[setting] if setting in settings else \
            grid_spec.hyperparameters(analysis, setting)

    queue = Queue.open(storage or default_storage(results),
                       study_name(name, epochs, size, device, threads, bname), create=True)
    queue.publish(base_row)
    worker = Worker(name, root, results, queue, backbone=backbone, split=split, budget=budget,
                    base_row=base_row, device=device)

    def run_all(units: Sequence[tuple[str, int]]) -> dict[tuple[str, int], dict[str, Any]]:
        """``units`` (setting, seed) done: from the results file, or queued and worked on."""
        done = {(r["setting"], r["seed"]): r for r in read_results(results)
                if r.get("kind") == "run"
                and run_key(r) == run_key({**base_row, "setting": r["setting"],
                                           "seed": r["seed"]})}
        todo = [u for u in dict.fromkeys(units) if u not in done]
        queue.enqueue([(setting, seed, plain_hp(hp_of(setting))) for setting, seed in todo])
        worker.work(until=lambda: queue.finished(todo))
        found = queue.rows()
        export(results, found.values())
        return {u: done.get(u) or found[u] for u in units}

    rec = recommended_id(rec_hp)
    if stage == "default":  # the binary default on the fresh seeds only (ranking backbones)
        run_all([("default", seed) for seed in CONFIRM_SEEDS])
        queue.close_round()
        return
    if not grid and not confirm:  # --stage extra / pair: no grid, these settings on every seed
        run_all([(setting, seed) for seed in (GRID_SEED, *CONFIRM_SEEDS)
                 for setting in (extra_ids if stage == "extra" else ["default", rec,
                                                                     *extra_ids])])
        queue.close_round()
        return
    first = ["default", rec, *flip, *(["scratch"] if grid_spec.scratch else [])]
    cells = [c for c in grid_spec.cells() if c != DEFAULT_CELL]
    if grid:
        run_all([(setting, GRID_SEED) for setting in first + extra_ids + cells])
    if confirm:
        got = run_all([(c, GRID_SEED) for c in [*cells, "default"]])
        seed0 = [got[(c, GRID_SEED)] for c in cells]
        seed0.append({**got[("default", GRID_SEED)], "setting": DEFAULT_CELL})
        best = grid_spec.rank(seed0, int(split.val.size), int(split.test.size))[:top]
        chosen = ["default", rec] + [("default" if c == DEFAULT_CELL else c) for c in best] \
            + flip + extra_ids + list(confirm_cells)
        run_all([(setting, seed) for seed in CONFIRM_SEEDS for setting in dict.fromkeys(chosen)])
    queue.close_round()


# --- the queue: runs as trials of an Optuna study ----------------------------------------------

def default_storage(results: Path) -> str:
    """A journal file next to the results file (one machine; several processes)."""
    return str(results.with_suffix(".journal"))


def study_name(dataset: str, epochs: int, size: int, device: str, threads: int,
               backbone: str = "") -> str:
    """One study per dataset, backbone and budget (the run key's budget part); the default
    backbone's name is left out (the studies made before backbones were a choice)."""
    model = "" if backbone in ("", DEFAULT_BACKBONE) else f"-{backbone}"
    return f"transfer-{dataset}{model}-e{epochs}-s{size}-{device.split(':')[0]}-t{threads}"


class Queue:
    """One dataset's runs as trials of one Optuna study: a queued run is a waiting trial whose
    user attributes hold the setting, the seed and the hyperparameters; a worker claims it
    (waiting -> running, which one process only can do), trains, and completes it with the
    result row as a user attribute. A worker that dies is found by its heartbeat, and its run
    queued again (recommender.finetune.storage)."""

    def __init__(self, study) -> None:
        self.study = study

    @classmethod
    def open(cls, storage: str, name: str, *, create: bool, heartbeat=None) -> Queue:
        import optuna

        from recommender.finetune.storage import GRACE_S, HEARTBEAT_S, open_storage

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        beat, grace = heartbeat or (HEARTBEAT_S, GRACE_S)
        backend = open_storage(storage, heartbeat_s=beat, grace_s=grace)
        if create:
            return cls(optuna.create_study(study_name=name, storage=backend,
                                           load_if_exists=True))
        return cls(optuna.load_study(study_name=name, storage=backend))

    def publish(self, base_row: Mapping[str, Any]) -> None:
        """What a worker needs besides the images: the budget and the row's fixed part."""
        self.study.set_user_attr("base_row", dict(base_row))
        self.study.set_user_attr("round_done", False)

    def close_round(self) -> None:
        self.study.set_user_attr("round_done", True)

    def enqueue(self, units: Sequence[tuple[str, int, Mapping[str, Any]]]) -> None:
        """Queue (setting, seed, hyperparameters) units not already queued, running or done.
        Only the main process queues, so a unit is queued once."""
        from optuna.trial import TrialState

        present = {self._unit(t) for t in self.study.get_trials(
            deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING,
                                    TrialState.COMPLETE))}
        for setting, seed, hp in units:
            if (setting, seed) not in present:
                self.study.enqueue_trial({}, user_attrs={"setting": setting, "seed": seed,
                                                         "hyperparameters": hp})

    def claim(self):
        """A waiting trial, now running in this process; None when none is waiting."""
        from optuna.trial import TrialState

        self.fail_stale()
        storage = self.study._storage
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            if storage.set_trial_state_values(trial._trial_id, state=TrialState.RUNNING):
                return trial
        return None

    def complete(self, trial, row: Mapping[str, Any]) -> None:
        from optuna.trial import TrialState

        storage = self.study._storage
        storage.set_trial_user_attr(trial._trial_id, "row", dict(row))
        storage.set_trial_state_values(trial._trial_id, state=TrialState.COMPLETE,
                                       values=[float(row["test"])])

    def fail_stale(self) -> None:
        import warnings

        import optuna

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(self.study)

    def rows(self) -> dict[tuple[str, int], dict[str, Any]]:
        from optuna.trial import TrialState

        return {self._unit(t): t.user_attrs["row"] for t in self.study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE,)) if "row" in t.user_attrs}

    def finished(self, units: Sequence[tuple[str, int]]) -> bool:
        return set(units) <= set(self.rows())

    def pending(self) -> int:
        from optuna.trial import TrialState

        return len(self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,
                                                                 TrialState.RUNNING)))

    @staticmethod
    def _unit(trial) -> tuple[str, int]:
        return trial.user_attrs.get("setting"), trial.user_attrs.get("seed")


class Worker:
    """Trains the runs of one dataset's queue: any number of these, on any machine that holds
    the dataset, next to the main process (which also works)."""

    def __init__(self, name: str, root: Path, results: Path, queue: Queue, *, backbone, split,
                 budget, base_row: Mapping[str, Any], device: str) -> None:
        self.name, self.root, self.results, self.queue = name, root, results, queue
        self.backbone, self.split, self.budget = backbone, split, budget
        self.base_row, self.device = dict(base_row), device
        self.data = None

    def work(self, until) -> None:
        """Claim and train runs until ``until()``; wait (for other processes' runs, or for
        a lost one to be queued again) when none is waiting."""
        from optuna.storages._heartbeat import get_heartbeat_thread

        while not until():
            trial = self.queue.claim()
            if trial is None:
                if self.queue.pending() == 0 and until():
                    return
                time.sleep(1.0)
                continue
            with get_heartbeat_thread(trial._trial_id, self.queue.study._storage):
                row = self.train(trial.user_attrs)
            self.queue.complete(trial, row)

    def train(self, unit: Mapping[str, Any]) -> dict[str, Any]:
        from heuristics import Hyperparameters
        from recommender.data.tensors import load_image_tensors
        from recommender.finetune.runs import run_setting
        from recommender.finetune.training import TrainingDiverged

        setting, seed = unit["setting"], unit["seed"]
        key = run_key({**self.base_row, "setting": setting, "seed": seed})
        for r in read_results(self.results):  # an earlier run of this machine
            if r.get("kind") == "run" and run_key(r) == key:
                return r
        if self.data is None:
            self.data = load_image_tensors([p for p, _ in self.split.samples],
                                           [c for _, c in self.split.samples],
                                           self.budget.image_size)
        hp = Hyperparameters.from_dict(unit["hyperparameters"])
        start = time.perf_counter()
        try:
            run = run_setting(hp, self.backbone, self.data, self.split, self.budget, seed=seed,
                              device=self.device)
            val, test, diverged = run.val_accuracy, run.test_accuracy, False
        except TrainingDiverged:
            val, test, diverged = 0.0, 0.0, True
        row = {**self.base_row, "setting": setting, "seed": seed, "val": val, "test": test,
               "diverged": diverged, "seconds": round(time.perf_counter() - start, 1),
               "hyperparameters": plain_hp(hp)}
        append(self.results, row)
        print(f"{self.name}: {setting} seed {seed}: test {test:.3f} (val {val:.3f}) "
              f"{row['seconds']:.0f} s", flush=True)
        return row


def export(results: Path, rows) -> None:
    """Rows finished elsewhere (workers on other machines) into the results file, once."""
    have = {run_key(r) for r in read_results(results) if r.get("kind") == "run"}
    for row in rows:
        if run_key(row) not in have:
            append(results, row)
            have.add(run_key(row))


def work_dataset(name: str, root: Path, results: Path, *, epochs: int, size: int,
                 threads: int, device: str, storage: str | None, wait_s: float = 3600.0,
                 backbone_name: str | None = None) -> None:
    """A worker (``run --role worker``) on one dataset: waits for the main process to queue
    its runs, then trains them until the main process closes the round."""
    import torch

    torch.set_num_threads(threads)
    from recommender.data.dataset import load_dataset
    from recommender.data.splits import split_from_folders
    from recommender.finetune.runs import Budget
    from recommender.models.backbones import load_backbone
    from recommender.models.features import resolve_device

    device = resolve_device(device)
    bname = backbone_name or DEFAULT_BACKBONE
    name_ = study_name(name, epochs, size, device, threads, bname)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            queue = Queue.open(storage or default_storage(results), name_, create=False)
            if "base_row" in queue.study.user_attrs:
                break
        except KeyError:  # no such study yet
            pass
        if time.monotonic() > deadline:
            print(f"{name}: no main process queued runs in {wait_s:.0f} s", flush=True)
            return
        time.sleep(2.0)
    base_row = queue.study.user_attrs["base_row"]
    fields = {k: v for k, v in base_row["budget"].items() if k != "augmentation"}
    parts = {r: load_dataset(root / r) for r in ("train", "test")}
    backbone = load_backbone(None if bname == DEFAULT_BACKBONE else bname, None)
    worker = Worker(name, root, results, queue, backbone=backbone,
                    split=split_from_folders(parts, GRID_SEED), budget=Budget(**fields),
                    base_row=base_row, device=device)
    worker.work(until=lambda: queue.study.user_attrs.get("round_done") is True
                and queue.pending() == 0)


# The binary default is a grid cell: all transferred, L2 1e-4 everywhere, one lr 0.01. It is
# run once, as "default" (recommender.finetune.compare.default_hyperparameters), and stands for it.
DEFAULT_CELL = cell_id(0, "l2", "one", 0.01)


# --- the command line ------------------------------------------------------------------------

def start_workers(count: int, *, data: Path, results: Path, names: Sequence[str], epochs: int,
                  size: int, threads: int, device: str, backbone: str,
                  storage: str | None) -> list[subprocess.Popen]:
    """``count`` local worker processes (``run --role worker``) on the queues of ``names``,
    in that order, each with ``threads`` torch and OpenMP threads."""
    command = [sys.executable, str(Path(__file__).resolve()), "run", "--role", "worker",
               "--data", str(data), "--results", str(results), "--only", ",".join(names),
               "--epochs", str(epochs), "--size", str(size), "--threads", str(threads),
               "--device", device, "--backbone", backbone]
    if storage:
        command += ["--storage", storage]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    return [subprocess.Popen(command, env=env) for _ in range(count)]


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
    if args.role == "worker":
        for n in present:
            work_dataset(n, args.data / n, args.results, epochs=args.epochs, size=args.size,
                         threads=args.threads, device=args.device, storage=args.storage,
                         backbone_name=args.backbone)
        return 0
    helpers = start_workers(args.jobs - 1, data=args.data, results=args.results, names=present,
                            epochs=args.epochs, size=args.size, threads=args.threads,
                            device=args.device, backbone=args.backbone, storage=args.storage)
    try:
        for n in present:
            run_dataset(n, args.data / n, args.results, epochs=args.epochs, size=args.size,
                        threads=args.threads, device=args.device, top=args.top,
                        grid=args.stage in ("grid", "all"),
                        confirm=args.stage in ("confirm", "all"), extra=extra.get(n, ()),
                        stage=args.stage, storage=args.storage, backbone_name=args.backbone)
    finally:
        failed = sum(p.wait() != 0 for p in helpers)
    return 1 if failed else 0


def recommendations_main(args: argparse.Namespace) -> int:
    """The recommendation of the heuristics importable here, for every analysed dataset."""
    out = {r["dataset"]: [plain_hp(recommend_from(r["analysis"]).hyperparameters)]
           for r in read_results(args.results) if r.get("kind") == "analysis"}
    args.out.write_text(json.dumps(out, indent=1, sort_keys=True), encoding="utf-8")
    print(f"{len(out)} recommendation(s) -> {args.out}")
    return 0


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
    run.add_argument("--jobs", type=int, default=1,
                     help="runs trained at once on this machine: this process and N-1 "
                          "local workers on the same queue")
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
    run.add_argument("--storage", default=None, metavar="URL",
                     help="where the queue of runs lives: a journal file (default: the "
                          "results file with .journal) or postgresql://... for workers on "
                          "several machines")
    run.add_argument("--role", default="main", choices=("main", "worker"),
                     help="main: analyse, queue the runs, work, confirm, export to "
                          "--results; worker: only train queued runs")
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
