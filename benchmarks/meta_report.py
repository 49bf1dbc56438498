"""The meta-benchmark's tables in ``docs/benchmark.md`` from ``benchmarks/results/meta.jsonl``.

    python benchmarks/meta.py report [--results FILE] [--out docs/benchmark.md]

One *condition* is a backbone and a budget; a task is complete in a condition when its seed-0
grid and the fresh-seed confirmations are all there. For every complete task: the binary
default, nbtl's recommendation (re-derived from the stored measures with the checkout's
heuristics, as ``transfer_report`` does), the grid's top, the set within noise of the top,
the gain and regret, and the winner of each axis on the seed-0 grid; then how often each
axis's winner changes between tasks that differ only in source, size, budget or backbone, the
aggregate, and the compute spent. The tables go between ``<!-- meta:start -->`` and
``<!-- meta:end -->`` of ``--out``; the rest of the page is left as it is.
"""

from __future__ import annotations

import argparse
import itertools
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

try:
    from benchmarks import meta
    from benchmarks import transfer as t
    from benchmarks.transfer_report import REG_LABEL, Paired, describe, diff_stats, within_noise
except ImportError:  # run from inside benchmarks/
    import meta  # type: ignore[no-redef]
    import transfer as t  # type: ignore[no-redef]
    from transfer_report import (  # type: ignore[no-redef]
        REG_LABEL,
        Paired,
        describe,
        diff_stats,
        within_noise,
    )

START, END = "<!-- meta:start -->", "<!-- meta:end -->"
AXES = ("reinit", "base_lr", "lr_mode", "reg")
AXIS_LABEL = {"reinit": "blocks re-initialised", "base_lr": "base learning rate",
              "lr_mode": "one lr / per group", "reg": "regulariser"}
SHORT = {"tf_efficientnet_lite0": "Lite0", "tf_efficientnet_lite1": "Lite1",
         "tf_efficientnet_lite2": "Lite2"}


@dataclass
class Cell:
    """One task in one condition (backbone, budget)."""

    task: str
    backbone: str
    budget: str
    analysis: dict[str, Any] | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    seed0: dict[str, dict[str, Any]] = field(default_factory=dict)
    paired: dict[str, Paired] = field(default_factory=dict)
    hps: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(t.CONFIRM_SEEDS)

    @property
    def rec_id(self) -> str:
        """The recommendation that was run: the paper's rules before the fit (issue 19) --
        the ``rec@`` setting with the most fresh seeds (the checkout's heuristics now give
        the fitted ladder's advice, a grid cell, scored in :func:`render_held_out`)."""
        recs = sorted((s for s in self.paired if s.startswith("rec@")),
                      key=lambda s: (-len(self.paired[s].by_seed), s))
        if recs:
            return recs[0]
        seed0 = [s for s in self.seed0 if s.startswith("rec@")]
        return seed0[0] if seed0 else t.recommended_id(
            t.recommend_from(self.analysis, rules="paper").hyperparameters)

    def score(self, row: Mapping[str, Any]) -> float:
        """Seed-0 accuracy on validation and test together (the grid's ranking)."""
        nv, nt = row["n_val"], row["n_test"]
        return (row["val"] * nv + row["test"] * nt) / (nv + nt)

    def grid_rows(self) -> list[dict[str, Any]]:
        rows = [{**r, "setting": t.DEFAULT_CELL} if s == "default" else r
                for s, r in self.seed0.items() if s == "default" or t.parse_cell(s)]
        return [r for r in rows if r["setting"] in meta.GRID.cells()]

    @property
    def grid_done(self) -> bool:
        return self.analysis is not None and len(self.grid_rows()) == len(meta.GRID.cells())

    def top_cells(self) -> list[str]:
        if not self.grid_done:
            return []
        first = self.rows[0]
        ranked = meta.GRID.rank(self.grid_rows(), first["n_val"], first["n_test"])[:t.TOP]
        return ["default" if c == t.DEFAULT_CELL else c for c in ranked]

    def has_seeds(self, setting: str) -> bool:
        p = self.paired.get(setting)
        return p is not None and all(k in p.by_seed for k in self.seeds)

    @property
    def complete(self) -> bool:
        if not self.grid_done:
            return False
        return all(self.has_seeds(s) for s in ["default", self.rec_id, *self.top_cells()])

    def confirmed(self) -> list[str]:
        return list(dict.fromkeys(["default", *self.top_cells()]))

    def top(self) -> str:
        return max(self.confirmed(), key=lambda s: self.paired[s].mean(self.seeds))

    def best_set(self) -> list[str]:
        top = self.paired[self.top()].values(self.seeds)
        return [s for s in self.confirmed() if within_noise(top, self.paired[s].values(
            self.seeds))]

    def twin(self) -> str | None:
        """The recommendation with LP-FT the other way, when run on every fresh seed."""
        for s in self.paired:
            if s.startswith("lpft-") and self.has_seeds(s):
                return s
        return None

    def winners(self) -> dict[str, tuple[Any, bool]]:
        """Per axis: the value whose best seed-0 cell scores highest, and whether it wins by
        more than two binomial standard errors of the runner-up's best cell (else a tie)."""
        out = {}
        rows = self.grid_rows()
        n = rows[0]["n_val"] + rows[0]["n_test"]
        for axis in AXES:
            best: dict[Any, float] = {}
            for r in rows:
                v = t.parse_cell(r["setting"])[axis]
                best[v] = max(best.get(v, -1.0), self.score(r))
            ranked = sorted(best.items(), key=lambda kv: -kv[1])
            (win, a), (_, b) = ranked[0], ranked[1]
            se = math.sqrt(max(b * (1 - b), 1e-4) / n)
            out[axis] = (win, a - b > 2 * se)
        return out

    def marginal(self, axis: str) -> dict[Any, float]:
        best: dict[Any, float] = {}
        for r in self.grid_rows():
            v = t.parse_cell(r["setting"])[axis]
            best[v] = max(best.get(v, -1.0), r["test"])
        return dict(sorted(best.items()))


def budget_name(budget: Mapping[str, Any]) -> str | None:
    for name, (epochs, size) in meta.BUDGETS.items():
        if budget["epochs"] == epochs and budget["image_size"] == size:
            return name
    return None


def load(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str, str], Cell]:
    analyses = {(r["dataset"], r.get("backbone", t.DEFAULT_BACKBONE)): r["analysis"]
                for r in rows if r.get("kind") == "analysis"}
    cells: dict[tuple[str, str, str], Cell] = {}
    for r in rows:
        if r.get("kind") != "run" or r["dataset"] not in meta.BY_ID:
            continue
        backbone = r.get("backbone", t.DEFAULT_BACKBONE)
        budget = budget_name(r["budget"])
        if budget is None:
            continue
        key = (r["dataset"], backbone, budget)
        cell = cells.setdefault(key, Cell(*key, analysis=analyses.get(key[:2])))
        cell.rows.append(dict(r))
        cell.hps.setdefault(r["setting"], r.get("hyperparameters", {}))
        if r["seed"] == t.GRID_SEED:
            cell.seed0[r["setting"]] = dict(r)
        else:
            cell.paired.setdefault(r["setting"], Paired(r["setting"], {})).by_seed[
                r["seed"]] = r["test"]
    return cells


# --- text ------------------------------------------------------------------------------------

def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def pm(mean: float, sd: float) -> str:
    return f"{100 * mean:+.1f} ± {100 * sd:.1f}" if np.isfinite(sd) else f"{100 * mean:+.1f}"


def value_label(axis: str, value: Any) -> str:
    if axis == "reg":
        return REG_LABEL[value]
    if axis == "lr_mode":
        return "one lr" if value == "one" else "per group"
    return f"{value:g}"


def condition_label(backbone: str, budget: str) -> str:
    epochs, size = meta.BUDGETS[budget]
    return f"{SHORT.get(backbone, backbone)}, {budget} ({epochs} epochs at {size} px)"


def changes(cells: Mapping[tuple[str, str, str], Cell]) -> list[str]:
    """How often each axis's winner differs between two complete grids that differ in one
    factor only: source (same class count and size), size (same source and classes), budget
    or backbone (same task)."""
    grids = {k: c for k, c in cells.items() if c.grid_done}
    wins = {k: c.winners() for k, c in grids.items()}

    def factor_pairs(factor: str):
        for a, b in itertools.combinations(sorted(grids), 2):
            ta, tb = meta.BY_ID[a[0]], meta.BY_ID[b[0]]
            if factor == "source":
                ok = a[1:] == b[1:] and meta.origin(ta) != meta.origin(tb) \
                    and ta.per_class == tb.per_class and abs(len(ta.classes) -
                                                             len(tb.classes)) <= 1
            elif factor == "size":
                ok = a[1:] == b[1:] and ta.source == tb.source and ta.classes == tb.classes \
                    and ta.per_class != tb.per_class
            elif factor == "budget":
                ok = a[0] == b[0] and a[1] == b[1] and a[2] != b[2]
            else:  # backbone
                ok = a[0] == b[0] and a[2] == b[2] and a[1] != b[1]
            if ok:
                yield a, b

    lines = ["| factor that differs | pairs | " + " | ".join(AXIS_LABEL[x] for x in AXES)
             + " |", "|---|---|" + "---|" * len(AXES)]
    for factor in ("source", "size", "budget", "backbone"):
        pairs = list(factor_pairs(factor))
        if not pairs:
            lines.append(f"| {factor} | 0 | " + " | ".join("–" for _ in AXES) + " |")
            continue
        parts = []
        for axis in AXES:
            differ = sum(wins[a][axis][0] != wins[b][axis][0] for a, b in pairs)
            clear = [(a, b) for a, b in pairs if wins[a][axis][1] and wins[b][axis][1]]
            differ_clear = sum(wins[a][axis][0] != wins[b][axis][0] for a, b in clear)
            parts.append(f"{differ}/{len(pairs)} ({differ_clear}/{len(clear)} clear)")
        lines.append(f"| {factor} | {len(pairs)} | " + " | ".join(parts) + " |")
    return lines


def render(cells: Mapping[tuple[str, str, str], Cell]) -> str:
    lines: list[str] = []
    conditions = sorted({k[1:] for k in cells}, key=lambda c: (c[0], list(meta.BUDGETS).index(
        c[1])))
    # The planned conditions, started or not (the second backbone and the long budget run on
    # their repeat tasks only), then any other condition the results hold.
    planned = [(b, g) for b in (t.DEFAULT_BACKBONE, meta.SECOND_BACKBONE) for g in meta.BUDGETS]
    progress = planned + [c for c in conditions if c not in planned]
    need = meta.runs_per_task()
    lines += ["### Progress and compute", "",
              f"{len(meta.TASKS)} tasks from {len({meta.origin(x) for x in meta.TASKS})} "
              f"sources; up to {need} runs per task and condition (fewer when the default is "
              "among the top cells). Compute is the sum of the runs' own wall seconds (one "
              "torch thread each; inflated when other work shared the cores) plus the "
              "analyses.", "",
              "| condition | tasks complete | grids complete | runs | core-hours | still to run |",
              "|---|---|---|---|---|---|"]
    total = 0.0
    for backbone, budget in progress:
        group = [c for k, c in cells.items() if k[1:] == (backbone, budget)]
        seconds = sum(r.get("seconds", 0.0) for c in group for r in c.rows)
        seconds += sum((c.analysis or {}).get("seconds", 0.0) for c in group)
        total += seconds
        tasks = [x.id for x in meta.default_tasks(backbone, budget)]
        complete = {c.task for c in group if c.complete}
        missing = [x for x in tasks if x not in complete]
        lines.append(f"| {condition_label(backbone, budget)} | "
                     f"{len(complete & set(tasks))}/{len(tasks)} | "
                     f"{sum(c.grid_done for c in group)} | {sum(len(c.rows) for c in group)} | "
                     f"{seconds / 3600:.1f} | {', '.join(missing) or '–'} |")
    lines += ["", f"Total: {total / 3600:.1f} core-hours (2-core x86-64 CPU, two runs at a "
              "time).", ""]
    for backbone, budget in conditions:
        done = [c for k, c in sorted(cells.items(), key=lambda kv: meta.BY_ID[
            kv[0][0]].cost()) if k[1:] == (backbone, budget) and c.complete]
        if not done:
            continue
        lines += [f"### {condition_label(backbone, budget)}: per task", "",
                  "Test %, mean over fresh seeds 1-3; differences paired mean ± sd over those "
                  "seeds. *Best set*: the confirmed grid settings within noise (2 standard "
                  "errors of the paired differences) of the top.", "",
                  "*Paper rules*: the recommendation of the rule table before it was fitted to "
                  "these results (issue 19), as run.", "",
                  "| task | source | train/val/test | default | paper rules | top | gain (rules "
                  "− default) | regret | rules within noise | default within noise | LP-FT twin "
                  "− rules | best set |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        gains, regrets, rec_in, def_in, twins = [], [], [], [], []
        for c in done:
            r, s = c.rows[0], c.seeds
            default, rec = c.paired["default"].values(s), c.paired[c.rec_id].values(s)
            topv = c.paired[c.top()].values(s)
            best = c.best_set()
            gain, regret = diff_stats(rec, default), diff_stats(topv, rec)
            twin = c.twin()
            tw = diff_stats(c.paired[twin].values(s), rec) if twin else None
            gains.append(gain[0]), regrets.append(regret[0])
            rec_in.append(within_noise(topv, rec)), def_in.append("default" in best)
            if tw:
                twins.append(tw[0])
            task = meta.BY_ID[c.task]
            lines.append(
                f"| {c.task} | {meta.origin(task)} | {r['n_train']}/{r['n_val']}/{r['n_test']} "
                f"| {pct(default.mean())} | {pct(rec.mean())} | {pct(topv.mean())} "
                f"| {pm(*gain)} | {pm(*regret)} | {'yes' if rec_in[-1] else 'no'} "
                f"| {'yes' if def_in[-1] else 'no'} | {pm(*tw) if tw else '–'} "
                f"| {'; '.join(describe(x) for x in best)} |")
        lines += ["", f"Over these {len(done)} tasks: the paper rules' recommendation gains "
                  f"{100 * np.mean(gains):+.1f} points on the default on average (sd over "
                  f"tasks {100 * np.std(gains, ddof=1) if len(gains) > 1 else 0:.1f}), "
                  f"regret {100 * np.mean(regrets):+.1f}; it is within noise of the best on "
                  f"{sum(rec_in)} of {len(done)}, the default on {sum(def_in)} of {len(done)}."
                  + (f" LP-FT turned the other way changes the recommendation by "
                     f"{100 * np.mean(twins):+.1f} points on average." if twins else ""), ""]
        lines += [f"### {condition_label(backbone, budget)}: winners per axis (seed-0 grid)", "",
                  "Per axis, the value whose best cell scores highest on seed 0 (validation and "
                  "test together); * = it beats the runner-up by more than 2 binomial standard "
                  "errors, else a tie within noise. Then the best test % per value.", "",
                  "| task | " + " | ".join(AXIS_LABEL[a] for a in AXES)
                  + " | best by reinit 0/1/2/3 | best by base lr | paper rules |",
                  "|---|" + "---|" * (len(AXES) + 3)]
        for c in [c for k, c in sorted(cells.items(), key=lambda kv: meta.BY_ID[kv[0][0]]
                                       .cost()) if k[1:] == (backbone, budget) and c.grid_done]:
            w = c.winners()
            rec_hp = c.hps.get(c.rec_id, {})
            lines.append(
                f"| {c.task} | " + " | ".join(
                    f"{value_label(a, w[a][0])}{'*' if w[a][1] else ''}" for a in AXES)
                + f" | {'/'.join(pct(v) for v in c.marginal('reinit').values())} "
                f"| {'/'.join(pct(v) for v in c.marginal('base_lr').values())} "
                f"| {describe(c.rec_id, rec_hp)} |")
        lines.append("")
    lines += ["### Which values win", "",
              "Per condition and axis: how many complete seed-0 grids each value won (of "
              "them, clearly: by more than 2 binomial standard errors).", "",
              "| condition | axis | wins (clear) |", "|---|---|---|"]
    for backbone, budget in conditions:
        grids = [c for k, c in cells.items() if k[1:] == (backbone, budget) and c.grid_done]
        if not grids:
            continue
        wins = [c.winners() for c in grids]
        for axis in AXES:
            values = sorted({w[axis][0] for w in wins}, key=str)
            parts = [f"{value_label(axis, v)}: {sum(w[axis][0] == v for w in wins)} "
                     f"({sum(w[axis][0] == v and w[axis][1] for w in wins)})" for v in values]
            lines.append(f"| {condition_label(backbone, budget)} | {AXIS_LABEL[axis]} "
                         f"| {'; '.join(parts)} of {len(grids)} |")
    lines.append("")
    lines += ["### How often does an axis's winner change?", "",
              "Pairs of complete seed-0 grids that differ in one factor only: *source* (same "
              "size, class counts within one, different source), *size* (same source and "
              "classes, other images per class), *budget* (same task and backbone), *backbone* "
              "(same task and budget). A cell: pairs whose winners differ / pairs (the same "
              "among pairs where both winners are clear).", ""]
    lines += changes(cells)
    lines += ["", *render_held_out(cells)]
    return "\n".join(lines)


def _setting(cell: str) -> str:
    return "default" if cell == t.DEFAULT_CELL else cell


def held_out_rows(cells: Mapping[tuple[str, str, str], Cell],
                  exs: Sequence[Any]) -> list[dict[str, Any]]:
    """Per task-condition with a complete grid: the held-out advice (the model fitted without
    the task's source) and, when its fresh seeds are there, its paired gain, regret and
    whether it is within noise of the best confirmed setting."""
    from benchmarks import meta_fit
    from heuristics.rules.fitted import MODEL

    exs = [e for e in exs if MODEL["gap"] in e.gaps]
    if len({e.source for e in exs}) < 2:  # nothing to hold out
        return []
    held = meta_fit.held_out(exs, MODEL["gap"])
    out = []
    for e in exs:
        c, h = cells[e.key], held[e.key]
        row: dict[str, Any] = {"example": e, **h, "setting": _setting(h["cell"])}
        ready = c.has_seeds("default") and c.has_seeds(row["setting"]) and all(
            c.has_seeds(x) for x in c.top_cells())
        if ready:
            s = c.seeds
            default, rec = c.paired["default"].values(s), c.paired[row["setting"]].values(s)
            top = max([*c.confirmed(), row["setting"]], key=lambda x: c.paired[x].mean(s))
            topv = c.paired[top].values(s)
            row.update(default=default, rec=rec, top=topv, diffs=rec - default,
                       gain=diff_stats(rec, default), regret=diff_stats(topv, rec),
                       within=within_noise(topv, rec),
                       default_within=within_noise(topv, default))
            if c.has_seeds(c.rec_id):
                paper = c.paired[c.rec_id].values(s)
                row.update(paper_gain=float((paper - default).mean()),
                           paper_within=within_noise(topv, paper))
        out.append(row)
    return out


def render_held_out(cells: Mapping[tuple[str, str, str], Cell]) -> list[str]:
    from benchmarks import meta_fit
    from heuristics.rules.fitted import MODEL
    from heuristics.rules.ladder import describe

    examples = meta_fit.examples(cells)
    rows = held_out_rows(cells, examples)
    if not rows:
        return []
    lines = ["### The fitted recommender: the model", "",
             f"Fitted by `python benchmarks/meta.py fit` on every complete seed-0 grid "
             f"({len(rows)} task-conditions; `benchmarks/meta_fit.py` says how). The ladder, "
             "each rung one step on one axis from the one below:", ""]
    for k, rung in enumerate(MODEL["ladder"]):
        lines.append(f"{k}. {describe(rung)} (`{rung['cell']}`)")
    lines += ["", f"The rung by fit gap ({MODEL['gap']}: 1 − chance-normalised accuracy of a "
              "linear probe on the top block), per benchmark budget, with the evidence of the "
              "fit tasks in each piece (seed-0 gain of that piece's rung over the default, "
              "mean ± standard error over tasks):", "",
              "| budget | gap from | rung | fit tasks there | their gain from this rung |",
              "|---|---|---|---|---|"]
    for budget, spec in MODEL["budgets"].items():
        for piece in spec["pieces"]:
            ev = piece["evidence"]
            gain = (f"{ev['gain'][piece['rung']]:+.1f} ± {ev['se'][piece['rung']]:.1f}"
                    if ev.get("se") else "–")
            lines.append(f"| {budget} ({spec['epochs']} epochs at {spec['image_size']} px) | "
                         f"{piece['from']:.3f} | {piece['rung']} | {ev['tasks']} | {gain} |")
    lines += ["", "Does the evidence differ by budget or backbone? Per rung, its seed-0 gain over "
              "the default on the same tasks run both ways (paired over tasks, mean ± standard "
              "error): the model is fitted per budget, and pools the backbones unless they "
              "differ beyond 2 standard errors.", "",
              "| factor | rung | tasks | difference in gain |", "|---|---|---|---|"]
    exs = meta_fit.reading([e for e in examples if MODEL["gap"] in e.gaps], MODEL["gap"])
    ladder = [r["cell"] for r in MODEL["ladder"]]
    for factor, label in (("budget", "budget: long − short (Lite0)"),
                          ("backbone", "backbone: Lite1 − Lite0 (short)")):
        for row in meta_fit.condition_effect(exs, ladder, factor):
            if row["tasks"]:
                lines.append(f"| {label} | {row['rung']} | {row['tasks']} | "
                             f"{row['diff']:+.1f} ± {row['se']:.1f} |")
    lp = MODEL["lpft"]
    lines += ["", "LP-FT stays off: on the fit tasks, turning it on at the paper rules' "
              f"recommendation changed the fresh-seed accuracy by {lp.get('gain', 0):+.1f} ± "
              f"{lp.get('se', 0):.1f} points ({lp['tasks']} task-conditions).", ""]
    lines += ["### The fitted recommender, held out by source: per task", "",
              "For each source, the model is fitted on the other sources' tasks only and "
              "advises every task of the held-out source; test %, mean over fresh seeds 1-3, "
              "paired with the default. *Top*: the best of the default, the grid's top 2 "
              "(seed 0) and the held-out advice on those seeds.", "",
              "| task | condition | gap | rung | confidence | default | held-out advice | top "
              "| gain | regret | within noise | default within noise | paper rules − default |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["example"].source, r["example"].task,
                                         r["example"].backbone, r["example"].budget)):
        e = r["example"]
        head = (f"| {e.task} | {condition_label(e.backbone, e.budget)} | {r['gap']:.3f} | "
                f"{r['rung']} | {r['confidence']} |")
        if "gain" not in r:
            lines.append(head + f" – | {describe_cell(r['cell'])} (fresh seeds pending) |"
                         + " – |" * 6)
            continue
        lines.append(
            head + f" {pct(r['default'].mean())} | {describe_cell(r['cell'])} "
            f"{pct(r['rec'].mean())} | {pct(r['top'].mean())} | {pm(*r['gain'])} "
            f"| {pm(*r['regret'])} | {'yes' if r['within'] else 'no'} "
            f"| {'yes' if r['default_within'] else 'no'} "
            f"| {100 * r['paper_gain']:+.1f} |" if "paper_gain" in r else
            head + f" {pct(r['default'].mean())} | {describe_cell(r['cell'])} "
            f"{pct(r['rec'].mean())} | {pct(r['top'].mean())} | {pm(*r['gain'])} "
            f"| {pm(*r['regret'])} | {'yes' if r['within'] else 'no'} "
            f"| {'yes' if r['default_within'] else 'no'} | – |")
    scored = [r for r in rows if "gain" in r]
    lines += ["", *held_out_summary(scored, len(rows)), ""]
    lines += ["### Alternatives tried (held out by source, seed 0)", "",
              "The same leave-one-source-out on the seed-0 grid (no fresh seeds needed), for "
              "the shipped model and the alternatives tried; mean gain over the default ± "
              "standard error over task-conditions (`python benchmarks/meta.py loso "
              "--alternatives`). The shipped model (the linear-probe gap, the paper's own "
              "measure; the monotone staircase, the simplest model) was preferred for those "
              "reasons; these numbers were seen while developing it, so they do not test that "
              "choice cleanly, and every alternative is within noise of it.", "",
              "| gap | model | held-out seed-0 gain | worst source | default kept |",
              "|---|---|---|---|---|"]
    for alt in meta_fit.alternatives(examples):
        lines.append(f"| {alt['gap']} | {alt['model']} | {alt['gain']:+.2f} ± {alt['se']:.2f} "
                     f"| {alt['worst']} ({alt['worst_gain']:+.2f}) | {alt['default']}/"
                     f"{alt['tasks']} |")
    return lines


def describe_cell(cell: str) -> str:
    c = t.parse_cell(cell)
    if cell == t.DEFAULT_CELL:
        return "default"
    return (f"r{c['reinit']}, {'one lr' if c['lr_mode'] == 'one' else 'per group'} "
            f"{c['base_lr']:g}, {REG_LABEL[c['reg']]}")


def held_out_summary(scored: Sequence[Mapping[str, Any]], total: int) -> list[str]:
    """Per source and in aggregate: gain over the default, regret, within noise, and the
    share within noise by confidence."""
    if not scored:
        return [f"No held-out advice scored yet ({total} pending)."]
    lines = ["Per source (gains: mean of the paired differences over every task and fresh "
             "seed of the source ± 2 standard errors; *worse beyond noise*: the whole interval "
             "below zero):", "",
             "| source | task-conditions | gain over default | worse beyond noise | regret "
             "| within noise of the best | default within noise |", "|---|---|---|---|---|---|---|"]
    sources = sorted({r["example"].source for r in scored})
    worse = []
    for source in sources:
        part = [r for r in scored if r["example"].source == source]
        d = 100 * np.concatenate([r["diffs"] for r in part])
        se = d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else math.nan
        bad = bool(np.isfinite(se) and d.mean() + 2 * se < 0)
        if bad:
            worse.append(source)
        regret = 100 * np.mean([r["regret"][0] for r in part])
        lines.append(f"| {source} | {len(part)} | {d.mean():+.1f} ± {2 * se:.1f} | "
                     f"{'yes' if bad else 'no'} | {regret:+.1f} "
                     f"| {sum(r['within'] for r in part)}/{len(part)} "
                     f"| {sum(r['default_within'] for r in part)}/{len(part)} |")
    gains = 100 * np.array([r["gain"][0] for r in scored])
    seed_sd = 100 * np.concatenate([r["diffs"] for r in scored]).std(ddof=1)
    within = sum(r["within"] for r in scored)
    dwithin = sum(r["default_within"] for r in scored)
    paper = [r for r in scored if "paper_gain" in r]
    pending = total - len(scored)
    lines += ["", f"**Aggregate over {len(scored)} held-out task-conditions** ({pending} "
              f"pending): gain over the default {gains.mean():+.2f} points (standard error "
              f"over tasks {gains.std(ddof=1) / math.sqrt(len(gains)):.2f}; the paired "
              f"per-seed differences have sd {seed_sd:.1f}), regret "
              f"{100 * np.mean([r['regret'][0] for r in scored]):+.1f}; within noise of the "
              f"best on {within}/{len(scored)} ({100 * within / len(scored):.0f} %), the default "
              f"on {dwithin}/{len(scored)}; sources worse than the default beyond noise: "
              f"{', '.join(worse) or 'none'}."
              + (f" The paper rules' recommendation on the same tasks: "
                 f"{100 * np.mean([r['paper_gain'] for r in paper]):+.2f} points, within noise "
                 f"on {sum(r['paper_within'] for r in paper)}/{len(paper)}." if paper else ""),
              "", "By the confidence the held-out advice was given with:", "",
              "| confidence | task-conditions | within noise of the best | mean gain |",
              "|---|---|---|---|"]
    for level in ("high", "medium", "low"):
        part = [r for r in scored if r["confidence"] == level]
        if part:
            lines.append(f"| {level} | {len(part)} | {sum(r['within'] for r in part)}/"
                         f"{len(part)} ({100 * np.mean([r['within'] for r in part]):.0f} %) | "
                         f"{100 * np.mean([r['gain'][0] for r in part]):+.1f} |")
    return lines


def write(page: Path, body: str) -> None:
    text = page.read_text(encoding="utf-8") if page.is_file() else ""
    block = f"{START}\n{body}\n{END}"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    page.write_text(text, encoding="utf-8")


def main(args: argparse.Namespace) -> int:
    cells = load(t.read_results(args.results))
    write(args.out, render(cells))
    done = sum(c.complete for c in cells.values())
    print(f"{done} complete task-condition(s) of {len(cells)} started -> {args.out}")
    return 0


def by_source(cells: Mapping[tuple[str, str, str], Cell]) -> dict[str, list[Cell]]:
    out: dict[str, list[Cell]] = defaultdict(list)
    for (task, _, _), c in cells.items():
        out[meta.origin(meta.BY_ID[task])].append(c)
    return dict(out)
