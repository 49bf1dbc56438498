"""Fit the recommender to the meta-benchmark, and judge the fit leave-one-source-out (issue 19).

    python benchmarks/meta.py fit            # writes heuristics/rules/fitted.py (exact, seeded)
    python benchmarks/meta.py loso           # held-out recommendations and the runs they need
    python benchmarks/meta.py report         # docs/benchmark.md, with the held-out tables

**The model**: a *ladder* of settings, each one step on one axis from the one below, climbed
by a *fit gap* (:mod:`heuristics.gaps`: a measure of how far the frozen features are from
fitting the target, 0 perfect, about 1 at chance) at the budget the user plans.

1. **The ladder**: from the binary default (rung 0), paths of at most :data:`LADDER_STEPS`
   one-axis moves on the benchmark's grid (re-initialise one block more or less; another
   learning-rate recipe -- one rate, or per group with the new layers 10x and the lower blocks
   0.1x, at base 0.003 / 0.01 / 0.03; L2 <-> L2-SP on the lower blocks). The path chosen is
   the one whose staircases (2.) score best: the sum over budgets of each budget's best summed
   lower bound (ties: the shorter path, then the first in a fixed order). The ladder is judged
   by the objective it is used with. (The first fit took the path whose last rung had the
   largest mean seed-0 gain over all fit tasks, both budgets pooled; held out by source, that
   choice flipped between near-equal last rungs from one fold to the next, and the staircase
   then had a worse ladder to climb: :func:`alternatives` keeps it as ``mean-gain ladder``.)
2. **The staircase**, per budget: rung k is taken from a threshold gap on (rungs rise with the
   gap: the farther the features from fitting, the more the new layers and the faster rates
   pay, Yosinski et al. 2014 and the paper). The thresholds maximise, over the fit tasks of
   that budget (both backbones), the sum over rungs of the lower bound (sum of gains over the
   default less :data:`Z` standard errors) of each rung's gain on the tasks it is given; a
   rung needs :data:`MIN_TASKS` tasks. Where no rung's bound is above zero: the default.
3. **No cliffs**: the rung profile (on a grid of gaps, :data:`STEP`) is lowered to the largest
   one that moves at most one rung per :data:`MIN_SPACING` of gap, and pieces narrower than
   that take the lower neighbour's rung, so a small change of a measure moves the advice by
   one step on one axis at most, and only ever toward the default. Then **safety**
   (:func:`within_evidence`): lowering can move a step off the tasks that carried it (at the
   long budget, the climb at gap 0.173 carried by one task's two backbones became one at
   0.212 whose 15 tasks gained +1.7 +/- 1.1: within noise), so a piece holding
   :data:`MIN_TASKS` or more fit tasks on which its rung does not gain beyond noise is lowered
   a rung, and so on until every such piece clears.
4. **The gap**: the linear-probe gap, the paper's central measure, chosen before the held-out
   numbers; :func:`alternatives` reports the held-out numbers of the k-NN and LEEP gaps, of
   a nearest-tasks window model, of the mean-gain ladder and of one staircase for both
   budgets instead (``meta.py loso --alternatives``), for the record.

Scores for the fit are the seed-0 grid's (validation and test together, as the grid ranks);
the held-out judgement uses the fresh seeds 1-3 (test), paired with the default.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import pprint
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

try:
    from benchmarks import meta
    from benchmarks import transfer as t
except ImportError:  # run from inside benchmarks/
    import meta  # type: ignore[no-redef]
    import transfer as t  # type: ignore[no-redef]

from heuristics.gaps import GAPS, fit_gap

ROOT = Path(__file__).resolve().parent.parent
FITTED = ROOT / "heuristics" / "rules" / "fitted.py"
LADDER_STEPS = 3
Z = 2.0
MIN_SPACING = 0.02
STEP = 0.001  # the grid of gaps the rung profile is evaluated on
MIN_TASKS = 5  # a rung needs at least this many tasks' evidence
LR_RECIPES = tuple((mode, base) for mode in meta.GRID.lr_modes for base in meta.GRID.base_lrs)


@dataclass(frozen=True)
class Example:
    """One task in one condition (backbone, budget) with a complete seed-0 grid."""

    task: str
    source: str
    backbone: str
    budget: str
    gaps: Mapping[str, float]  # heuristics.gaps, by name
    scores: Mapping[str, float]  # grid cell -> seed-0 accuracy (validation and test), %
    gap: float = math.nan  # the gap the current model reads
    lpft_on_minus_off: float | None = None  # fresh seeds, at the earlier recommendation, %

    def gain(self, cell: str) -> float:
        return self.scores[cell] - self.scores[t.DEFAULT_CELL]

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.task, self.backbone, self.budget)


def examples(cells: Mapping[tuple[str, str, str], Any]) -> list[Example]:
    out = []
    for (task, backbone, budget), cell in sorted(cells.items()):
        if not cell.grid_done:
            continue
        a = cell.analysis
        scores = {row["setting"]: 100.0 * cell.score(row) for row in cell.grid_rows()}
        gaps = {name: fit_gap(name, a["measures"], a["num_classes"]) for name in GAPS}
        out.append(Example(task, meta.origin(meta.BY_ID[task]), backbone, budget,
                           {k: v for k, v in gaps.items() if v is not None}, scores,
                           lpft_on_minus_off=_lpft(cell)))
    return out


def _lpft(cell: Any) -> float | None:
    twin = cell.twin()
    recs = [s for s in cell.paired if s.startswith("rec@") and cell.has_seeds(s)]
    if twin is None or len(recs) != 1:
        return None
    rec = recs[0]
    seeds = cell.seeds
    on, off = (twin, rec) if twin.startswith("lpft-on@") else (rec, twin)
    return 100.0 * float(np.mean(cell.paired[on].values(seeds) - cell.paired[off].values(seeds)))


def reading(exs: Iterable[Example], gap: str) -> list[Example]:
    """The examples with ``gap`` as the one the model reads."""
    return [dataclasses.replace(e, gap=e.gaps[gap]) for e in exs]


# --- the ladder --------------------------------------------------------------------------------

def moves(cell: str) -> list[str]:
    """The grid cells one step on one axis from ``cell``."""
    c = t.parse_cell(cell)
    out = []
    for k in (c["reinit"] - 1, c["reinit"] + 1):
        if k in meta.GRID.reinit:
            out.append(t.cell_id(k, c["reg"], c["lr_mode"], c["base_lr"]))
    for mode, base in LR_RECIPES:
        if (mode, base) != (c["lr_mode"], c["base_lr"]):
            out.append(t.cell_id(c["reinit"], c["reg"], mode, base))
    for reg in meta.GRID.regularisers:
        if reg != c["reg"]:
            out.append(t.cell_id(c["reinit"], reg, c["lr_mode"], c["base_lr"]))
    return out


def ladder_paths() -> list[list[str]]:
    """Every path of 0 to LADDER_STEPS one-axis moves from the default, no cell twice, in a
    fixed order (shorter first, then the order of :func:`moves`)."""
    out, frontier = [[t.DEFAULT_CELL]], [[t.DEFAULT_CELL]]
    for _ in range(LADDER_STEPS):
        frontier = [[*path, nxt] for path in frontier for nxt in moves(path[-1])
                    if nxt not in path]
        out += frontier
    return out


def fit_ladder(fit: Sequence[Example], pool_budgets: bool = False) -> list[str]:
    """The path whose staircases, one per budget (or one for all: ``pool_budgets``), have
    the largest summed lower bounds."""
    by_budget = [list(fit)] if pool_budgets else [[e for e in fit if e.budget == b]
                                                  for b in meta.BUDGETS]
    best, chosen = 0.0, [t.DEFAULT_CELL]
    for path in ladder_paths()[1:]:
        value = sum(staircase_value(part, path) for part in by_budget if part)
        if value > best + 1e-9:
            best, chosen = value, path
    return chosen


def mean_gain_ladder(fit: Sequence[Example]) -> list[str]:
    """The first fit's ladder (an alternative now): the path whose last rung has the largest
    mean seed-0 gain over the default on all fit tasks (ties: the larger sum over its rungs,
    then the shorter)."""
    if not fit:
        return [t.DEFAULT_CELL]
    mean = {cell: float(np.mean([e.gain(cell) for e in fit])) for cell in meta.GRID.cells()}
    best: tuple[tuple[float, float, int], list[str]] = ((0.0, 0.0, 0), [t.DEFAULT_CELL])
    for path in ladder_paths()[1:]:
        key = (round(mean[path[-1]], 9), round(sum(mean[c] for c in path), 9), -len(path))
        if key > best[0]:
            best = (key, path)
    return best[1]


def window(part: Sequence[Example], gap: float, size: int) -> list[Example]:
    """The ``size`` fit tasks nearest ``gap`` (ties: the smaller gap, then by name)."""
    return sorted(part, key=lambda e: (abs(e.gap - gap), e.gap, e.task, e.backbone))[:size]


def window_rungs(part: Sequence[Example], ladder: Sequence[str], size: int) -> list[int]:
    """The alternative model: at each gap of the grid, the rung whose gain over the default
    has the highest lower bound (mean - Z standard errors) on the ``size`` nearest tasks, if
    above zero."""
    if len(part) < size or len(ladder) < 2:
        return [0]
    out = []
    for i in range(int(math.ceil(max(e.gap for e in part) / STEP)) + 2):
        near = window(part, i * STEP, size)
        d = np.array([[e.gain(cell) for e in near] for cell in ladder])
        bounds = d.mean(axis=1) - Z * d.std(axis=1, ddof=1) / math.sqrt(size)
        k = int(np.argmax(bounds[1:])) + 1
        out.append(k if bounds[k] > 0 else 0)
    return out


def lower_bound(gains: np.ndarray) -> float:
    """Sum of the gains less Z standard errors of that sum; 0 for no task, and minus infinity
    for fewer than MIN_TASKS (too few to say anything)."""
    n = len(gains)
    if n == 0:
        return 0.0
    if n < MIN_TASKS:
        return -math.inf
    return float(gains.sum() - Z * gains.std(ddof=1) * math.sqrt(n))


def staircase(part: Sequence[Example], ladder: Sequence[str]) -> list[float | None]:
    """Monotone: rung k from threshold k on (None: never). The thresholds (at midpoints
    between tasks' gaps) maximise the summed lower bounds of every rung's gain over the
    default on the tasks it is given; ties keep the lower rungs."""
    order = sorted(part, key=lambda e: (e.gap, e.task, e.backbone))
    n, m = len(order), len(ladder) - 1
    gains = np.array([[e.gain(cell) for e in order] for cell in ladder])
    best, cuts = 0.0, (n,) * m
    for cand in itertools.combinations_with_replacement(range(n + 1), m):
        bounds = [*cand, n]
        total = sum(lower_bound(gains[k + 1][bounds[k]:bounds[k + 1]]) for k in range(m))
        if total > best + 1e-9:
            best, cuts = total, cand
    gaps = [e.gap for e in order]
    return [None if c == n else 0.0 if c == 0 else round((gaps[c - 1] + gaps[c]) / 2, 4)
            for c in cuts]


def bound_table(gains: np.ndarray) -> np.ndarray:
    """``lower_bound(gains[a:b])`` for every 0 <= a <= b <= n at once (minus infinity for
    b < a): the staircase's pieces, from cumulative sums."""
    n = len(gains)
    total = np.concatenate([[0.0], np.cumsum(gains)])
    squares = np.concatenate([[0.0], np.cumsum(np.square(gains))])
    a, b = np.arange(n + 1)[:, None], np.arange(n + 1)[None, :]
    size = (b - a).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        s, q = total[b] - total[a], squares[b] - squares[a]
        var = np.maximum((q - s * s / size) / (size - 1), 0.0)
        table = s - Z * np.sqrt(var * size)
    table[size < MIN_TASKS] = -math.inf
    table[size == 0] = 0.0
    return table


def staircase_value(part: Sequence[Example], ladder: Sequence[str]) -> float:
    """The summed lower bounds of :func:`staircase`'s best thresholds (0: the default
    everywhere), by dynamic programming over the cut points instead of trying them all."""
    if len(ladder) < 2 or not part:
        return 0.0
    order = sorted(part, key=lambda e: (e.gap, e.task, e.backbone))
    n = len(order)
    tables = [bound_table(np.array([e.gain(cell) for e in order])) for cell in ladder[1:]]
    value = tables[-1][:, n]  # best from cut a of the top rung to the end
    for table in reversed(tables[:-1]):
        value = np.max(table + value[None, :], axis=1)
    return max(0.0, float(np.max(value)))


def raw_rungs(part: Sequence[Example], ladder: Sequence[str]) -> list[int]:
    """The staircase's rung on the grid of gaps 0, STEP, 2 STEP, ... (past the largest)."""
    thresholds = staircase(part, ladder) if len(ladder) > 1 else []
    hi = max([e.gap for e in part] + [x for x in thresholds if x is not None] + [0.0])
    return [sum(1 for x in thresholds if x is not None and i * STEP >= x)
            for i in range(int(math.ceil(hi / STEP)) + 2)]


def no_cliffs(rungs: Sequence[int]) -> list[int]:
    """The largest rung profile below ``rungs`` that climbs or descends at most one rung per
    MIN_SPACING of gap (the lower Lipschitz envelope, floored): it only ever lowers a rung.
    Then a piece narrower than MIN_SPACING takes its lower neighbour's rung."""
    n = len(rungs)
    r = np.asarray(rungs, float)
    idx = np.arange(n)
    per = STEP / MIN_SPACING
    env = [int(math.floor(float(np.min(r + np.abs(idx - i) * per)) + 1e-9)) for i in range(n)]
    width = int(round(MIN_SPACING / STEP))
    while True:
        narrow = [(a, b) for a, b in _runs(env) if b - a < width and b < n
                  and any(env[j] < env[a] for j in (a - 1, b) if 0 <= j < n)]
        if not narrow:
            return env
        a, b = narrow[0]
        env[a:b] = [min(env[j] for j in (a - 1, b) if 0 <= j < n)] * (b - a)


def within_evidence(part: Sequence[Example], ladder: Sequence[str],
                    rungs: Sequence[int]) -> list[int]:
    """The rung profile lowered until every piece (a run of one rung on the grid of gaps)
    that holds MIN_TASKS or more fit tasks gains beyond noise there: its rung's summed gain
    over the default less Z standard errors (:func:`lower_bound`) above zero; else the piece
    drops a rung, :func:`no_cliffs` runs again, and the pieces are checked again. Pieces with
    fewer tasks are no_cliffs' steps between rungs (the raw staircase gives none). Only ever
    lowers, so it ends."""
    rungs = list(rungs)
    while True:
        lowered = False
        for a, b in _runs(rungs):
            rung = rungs[a]
            hi = b * STEP if b < len(rungs) else math.inf
            sel = [e for e in part if a * STEP <= e.gap < hi]
            if rung and len(sel) >= MIN_TASKS and lower_bound(
                    np.array([e.gain(ladder[rung]) for e in sel])) <= 0:
                rungs[a:b] = [rung - 1] * (b - a)
                lowered = True
        if not lowered:
            return rungs
        rungs = no_cliffs(rungs)


def _runs(values: Sequence[int]) -> list[tuple[int, int]]:
    out, start = [], 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[start]:
            out.append((start, i))
            start = i
    return out


def evidence(part: Sequence[Example], ladder: Sequence[str], lo: float,
             hi: float) -> dict[str, Any]:
    """Every rung's mean gain over the default (and its standard error) on the fit tasks with
    a gap in [lo, hi)."""
    sel = [e for e in part if lo <= e.gap < hi]
    out: dict[str, Any] = {"tasks": len(sel), "sources": sorted({e.source for e in sel})}
    if sel:
        out["gap"] = [round(min(e.gap for e in sel), 3), round(max(e.gap for e in sel), 3)]
        d = np.array([[e.gain(cell) for e in sel] for cell in ladder])
        out["gain"] = [round(float(x), 2) for x in d.mean(axis=1)]
        out["se"] = [round(float(x), 2) for x in d.std(axis=1, ddof=1) / math.sqrt(len(sel))] \
            if len(sel) > 1 else None
    return out


def fit_model(fit: Sequence[Example], gap: str = "linear_probe",
              window_size: int | None = None,
              choose_ladder: Callable[[Sequence[Example]], list[str]] | None = None,
              pool_budgets: bool = False) -> dict[str, Any]:
    """The fitted model as plain data (what ``heuristics/rules/fitted.py`` holds);
    ``window_size``: the alternative nearest-tasks model instead of the staircase;
    ``choose_ladder``: another way to pick the ladder than :func:`fit_ladder`;
    ``pool_budgets``: the alternative with one staircase for every budget, fitted on all."""
    fit = reading([e for e in fit if gap in e.gaps], gap)
    ladder = (choose_ladder(fit) if choose_ladder
              else fit_ladder(fit, pool_budgets=pool_budgets))
    budgets: dict[str, Any] = {}
    for budget, (epochs, image_size) in meta.BUDGETS.items():
        part = list(fit) if pool_budgets else [e for e in fit if e.budget == budget]
        raw = (window_rungs(part, ladder, window_size) if window_size
               else raw_rungs(part, ladder))
        rungs = within_evidence(part, ladder, no_cliffs(raw)) if part else [0]
        runs = _runs(rungs)
        pieces = []
        for i, (a, _) in enumerate(runs):
            lo = a * STEP
            hi = runs[i + 1][0] * STEP if i + 1 < len(runs) else math.inf
            pieces.append({"from": round(lo, 4), "rung": rungs[a],
                           "evidence": evidence(part, ladder, lo, hi)})
        budgets[budget] = {
            "epochs": epochs, "image_size": image_size, "pieces": pieces, "tasks": len(part),
            "sources": sorted({e.source for e in part}),
            "backbones": sorted({e.backbone for e in part}),
            "gap_range": [round(min(e.gap for e in part), 3), round(max(e.gap for e in part), 3)]
            if part else None,
            "below_first": evidence(part, ladder, 0.0, pieces[1]["from"]
                                    if len(pieces) > 1 else math.inf),
        }
    return {"gap": gap, "z": Z, "min_spacing": MIN_SPACING, "min_tasks": MIN_TASKS,
            "ladder": [t.parse_cell(c) | {"cell": c} for c in ladder], "budgets": budgets,
            "grid": {"group_ratio": t.GROUP_RATIO, "head_cap": meta.GRID.head_cap,
                     "l2sp_weight": t.L2SP_WEIGHT, "l2_weight": t.L2_WEIGHT},
            "lpft": lpft_evidence(fit)}


def lpft_evidence(fit: Sequence[Example]) -> dict[str, Any]:
    """LP-FT on minus off at the earlier recommendation (its twin), fresh seeds, over the fit
    tasks where both ran."""
    diffs = [e.lpft_on_minus_off for e in fit if e.lpft_on_minus_off is not None]
    if len(diffs) < 2:
        return {"tasks": len(diffs)}
    d = np.array(diffs)
    return {"tasks": len(d), "gain": round(float(d.mean()), 2),
            "se": round(float(d.std(ddof=1) / math.sqrt(len(d))), 2)}


# --- leave one source out ----------------------------------------------------------------------

def held_out(exs: Sequence[Example], gap: str = "linear_probe",
             window_size: int | None = None,
             choose_ladder: Callable[[Sequence[Example]], list[str]] | None = None,
             pool_budgets: bool = False) -> dict[tuple, dict[str, Any]]:
    """For every example: the rung and cell of the model fitted without its source."""
    # imported here: heuristics.rules.ladder reads fitted.py, which `fit` must be able to rewrite
    from heuristics.rules.ladder import ladder_confidence, rung_for

    exs = [e for e in exs if gap in e.gaps]
    out = {}
    for source in sorted({e.source for e in exs}):
        model = fit_model([e for e in exs if e.source != source], gap, window_size,
                          choose_ladder, pool_budgets)
        for e in exs:
            if e.source == source:
                g = e.gaps[gap]
                rung = rung_for(g, e.budget, model)
                out[e.key] = {"cell": model["ladder"][rung]["cell"], "rung": rung, "gap": g,
                              "confidence": ladder_confidence(model, g, e.budget)}
    return out


def needed_runs(cells: Mapping[tuple[str, str, str], Any],
                settings: Mapping[tuple[str, str, str], Iterable[str]]) -> dict[str, list[str]]:
    """Per ``task|backbone|budget``: the grid cells still lacking a fresh seed."""
    out: dict[str, list[str]] = {}
    for key, wanted in settings.items():
        cell = cells[key]
        missing = sorted({c for c in wanted
                          if c != t.DEFAULT_CELL and not cell.has_seeds(c)})
        if missing:
            out["|".join(key)] = missing
    return out


def write_fitted(model: Mapping[str, Any], path: Path = FITTED) -> None:
    body = pprint.pformat(json.loads(json.dumps(model)), width=96, sort_dicts=True)
    path.write_text(
        '"""The recommender\'s fit to the meta-benchmark (issue 19).\n\nWritten by ``python '
        'benchmarks/meta.py fit`` (benchmarks/meta_fit.py) from\n'
        'benchmarks/results/meta.jsonl; do not edit by hand. Read by '
        ':mod:`heuristics.rules.ladder`.\n"""\n\n'
        "from __future__ import annotations\n\n# fmt: off\nMODEL = " + body + "\n",
        encoding="utf-8")


def condition_effect(exs: Sequence[Example], ladder: Sequence[str],
                     factor: str) -> list[dict[str, Any]]:
    """Per rung: the paired difference of its seed-0 gain over the default between the two
    values of ``factor`` ("backbone": Lite1 - Lite0 at the short budget; "budget": long -
    short with Lite0) on the tasks run both ways; mean and standard error over tasks."""
    a_of = {e.task: e for e in exs if e.budget == "short" and e.backbone == t.DEFAULT_BACKBONE}
    if factor == "backbone":
        b_of = {e.task: e for e in exs if e.budget == "short" and e.backbone != t.DEFAULT_BACKBONE}
    else:
        b_of = {e.task: e for e in exs if e.budget == "long" and e.backbone == t.DEFAULT_BACKBONE}
    both = sorted(set(a_of) & set(b_of))
    out = []
    for k, cell in enumerate(ladder[1:], start=1):
        d = np.array([b_of[x].gain(cell) - a_of[x].gain(cell) for x in both])
        out.append({"rung": k, "cell": cell, "tasks": len(both),
                    "diff": float(d.mean()) if len(d) else math.nan,
                    "se": float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.nan})
    return out


def alternatives(exs: Sequence[Example]) -> list[dict[str, Any]]:
    """Held-out (leave-one-source-out) seed-0 gain over the default of the shipped model and
    of the alternatives tried: other gaps, the nearest-tasks window model, the first fit's
    mean-gain ladder, one staircase for both budgets."""
    out = []
    variants: list[tuple[str, str, int | None, Any, bool]] = [
        (gap, "staircase", None, None, False) for gap in GAPS]
    variants[1:1] = [("linear_probe", f"window of {size}", size, None, False)
                     for size in (8, 12, 16)]
    variants += [("linear_probe", "mean-gain ladder", None, mean_gain_ladder, False),
                 ("linear_probe", "budgets pooled", None, None, True)]
    for gap, name, size, choose, pool in variants:
        usable = [e for e in exs if gap in e.gaps]
        if len({e.source for e in usable}) < 2:
            continue
        cells = held_out(usable, gap, size, choose, pool)
        d = np.array([e.gain(cells[e.key]["cell"]) for e in usable])
        by_source: dict[str, list[float]] = {}
        for e in usable:
            by_source.setdefault(e.source, []).append(e.gain(cells[e.key]["cell"]))
        worst = min(by_source, key=lambda k: float(np.mean(by_source[k])))
        out.append({"gap": gap, "model": name, "gain": float(d.mean()),
                    "se": float(d.std(ddof=1) / math.sqrt(len(d))),
                    "worst": worst, "worst_gain": float(np.mean(by_source[worst])),
                    "default": sum(cells[e.key]["rung"] == 0 for e in usable),
                    "tasks": len(usable)})
    return out


def fit_main(args) -> int:
    from benchmarks import meta_report

    exs = examples(meta_report.load(t.read_results(args.results)))
    model = fit_model(exs)
    write_fitted(model, args.out)
    print(f"fitted on {len(exs)} task-conditions from {len({e.source for e in exs})} sources:"
          f" gap {model['gap']}; ladder " + " -> ".join(r["cell"] for r in model["ladder"]))
    for budget, b in model["budgets"].items():
        print(f"  {budget} ({b['tasks']} tasks): "
              + ", ".join(f"rung {p['rung']} from {p['from']:g}" for p in b["pieces"]))
    print(f"wrote {args.out}")
    return 0


def loso_main(args) -> int:
    """The held-out recommendations, and the fresh-seed runs their scoring lacks."""
    from benchmarks import meta_report
    from heuristics.rules.fitted import MODEL
    from heuristics.rules.ladder import rung_for

    cells = meta_report.load(t.read_results(args.results))
    exs = examples(cells)
    if args.alternatives:
        for row in alternatives(exs):
            print(f"{row['gap']:13s} {row['model']:12s} held-out seed-0 gain {row['gain']:+.2f}"
                  f" ± {row['se']:.2f} (worst source {row['worst']} {row['worst_gain']:+.2f}; "
                  f"default kept on {row['default']}/{row['tasks']})")
        return 0
    held = held_out(exs, MODEL["gap"])
    wanted = {}
    for e in exs:
        shipped = MODEL["ladder"][rung_for(e.gaps[MODEL["gap"]], e.budget, MODEL)]["cell"]
        wanted[e.key] = {held[e.key]["cell"], shipped}
    need = needed_runs(cells, wanted)
    for key, h in sorted(held.items()):
        print(f"{'|'.join(key):55s} gap {h['gap']:.3f} rung {h['rung']} {h['cell']} "
              f"({h['confidence']})")
    print(f"{sum(map(len, need.values()))} setting(s) x {len(t.CONFIRM_SEEDS)} fresh seeds "
          f"still to run on {len(need)} task-condition(s)")
    if args.need:
        args.need.write_text(json.dumps(need, indent=1, sort_keys=True) + "\n")
        print(f"wrote {args.need}")
    return 0
