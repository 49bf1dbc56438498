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
        return t.recommended_id(t.recommend_from(self.analysis).hyperparameters)

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
                  "| task | source | train/val/test | default | recommended | top | gain (rec − "
                  "default) | regret | rec within noise | default within noise | LP-FT twin − "
                  "rec | best set |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
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
        lines += ["", f"Over these {len(done)} tasks: the recommendation gains "
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
                  + " | best by reinit 0/1/2/3 | best by base lr | recommended |",
                  "|---|" + "---|" * (len(AXES) + 3)]
        for c in [c for k, c in sorted(cells.items(), key=lambda kv: meta.BY_ID[kv[0][0]]
                                       .cost()) if k[1:] == (backbone, budget) and c.grid_done]:
            w = c.winners()
            rec_hp = t.plain_hp(t.recommend_from(c.analysis).hyperparameters)
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
    return "\n".join(lines)


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
