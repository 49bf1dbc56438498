"""Tables and figure of ``docs/benchmark.md`` from ``benchmarks/results/transfer.jsonl``.

    python benchmarks/transfer.py report [--results FILE] [--out docs/benchmark.md]
                                          [--figure docs/benchmark.png]

The recommendation is re-derived from each dataset's stored measures with the heuristics as
they are now, so after a change to a rule the report shows the new recommendation (and says
when it has not been fine-tuned yet: run ``transfer.py run`` again). Every earlier
recommendation that was fine-tuned on the fresh seeds is kept as "before".
The tables go between the ``<!-- results:start -->`` and ``<!-- results:end -->`` markers of
``--out`` (the rest of the page is left as it is); the file is created when missing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

try:
    from benchmarks import transfer as t
except ImportError:  # run from inside benchmarks/
    import transfer as t  # type: ignore[no-redef]

START, END = "<!-- results:start -->", "<!-- results:end -->"
REG_LABEL = {"l2": "L2", "l2sp_lower": "L2-SP lower + L2", "l2sp_all": "L2-SP all"}


@dataclass
class Paired:
    """Test accuracy of one setting per fresh seed."""

    setting: str
    by_seed: dict[int, float]

    def values(self, seeds: Sequence[int]) -> np.ndarray:
        return np.array([self.by_seed[s] for s in seeds], dtype=float)

    def mean(self, seeds: Sequence[int]) -> float:
        return float(self.values(seeds).mean())


def diff_stats(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation (ddof 1) of the paired differences a - b."""
    d = np.asarray(a, float) - np.asarray(b, float)
    return float(d.mean()), float(d.std(ddof=1)) if d.size > 1 else math.nan


def within_noise(top: np.ndarray, other: np.ndarray, k: float = t.NOISE_SE) -> bool:
    """Is ``other`` within noise of ``top``: their mean paired difference at most k standard
    errors (a difference of exactly 0 always is)."""
    mean, sd = diff_stats(top, other)
    if mean <= 0:
        return True
    if not np.isfinite(sd):
        return False
    return mean <= k * sd / math.sqrt(len(top))


def reg_of(hp: Mapping[str, Any]) -> str:
    if not hp.get("l2sp_weight"):
        return "l2"
    penalties = {g["name"]: g.get("penalty") for g in hp["lr_groups"]}
    upper = penalties.get("upper", penalties.get("backbone"))
    return "l2sp_all" if upper == "l2sp" or hp.get("split_block") is None else "l2sp_lower"


def axes_of(setting: str, hp: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """reinit / reg / lr_mode / base_lr of a grid cell, the default or a recommendation."""
    if setting == "default":
        return t.parse_cell(t.DEFAULT_CELL) or {}
    cell = t.parse_cell(setting)
    if cell is not None:
        return cell
    assert hp is not None
    lrs = {g["name"]: g["lr"] for g in hp["lr_groups"]}
    return {"reinit": hp["reinit_top_blocks"], "reg": reg_of(hp),
            "lr_mode": "one" if len(set(np.round(list(lrs.values()), 12))) == 1 else "groups",
            "base_lr": hp["base_lr"]}


@dataclass
class Dataset:
    name: str
    analysis: dict[str, Any]
    rec_id: str
    rec_hp: dict[str, Any]
    rows: list[dict[str, Any]]
    seed0: dict[str, dict[str, Any]] = field(default_factory=dict)
    paired: dict[str, Paired] = field(default_factory=dict)
    hps: dict[str, dict[str, Any]] = field(default_factory=dict)
    seeds: tuple[int, ...] = field(default_factory=lambda: tuple(t.CONFIRM_SEEDS))

    @property
    def complete(self) -> bool:
        need = ["default", self.rec_id, *self.top_cells]
        return bool(self.top_cells) and all(
            s in self.paired and all(k in self.paired[s].by_seed for k in self.seeds)
            for s in need)

    @property
    def top_cells(self) -> list[str]:
        cells = [{**r, "setting": t.DEFAULT_CELL} if r["setting"] == "default" else r
                 for r in self.seed0.values() if r["setting"] in t.grid_cells()
                 or r["setting"] == "default"]
        if len(cells) < len(t.grid_cells()):
            return []
        first = self.rows[0] if self.rows else {}
        ranked = t.rank(cells, first.get("n_val", 1), first.get("n_test", 1))[:t.TOP]
        return ["default" if c == t.DEFAULT_CELL else c for c in ranked]

    def paired_pair(self) -> bool:
        """The default and the recommendation on every fresh seed (without the grid)."""
        return all(s in self.paired and all(k in self.paired[s].by_seed for k in self.seeds)
                   for s in ("default", self.rec_id))

    def confirmed_grid(self) -> list[str]:
        return list(dict.fromkeys(["default", *self.top_cells]))

    def top(self) -> str:
        return max(self.confirmed_grid(), key=lambda s: self.paired[s].mean(self.seeds))

    def best_set(self) -> list[str]:
        top = self.paired[self.top()].values(self.seeds)
        return [s for s in self.confirmed_grid()
                if within_noise(top, self.paired[s].values(self.seeds))]

    def before_ids(self) -> list[str]:
        """Earlier recommendations fine-tuned on every fresh seed (first run first)."""
        out = []
        for s, p in self.paired.items():
            if s.startswith("rec@") and s != self.rec_id and all(k in p.by_seed
                                                                  for k in self.seeds):
                out.append(s)
        return out


def load(rows: Sequence[Mapping[str, Any]]) -> dict[str, Dataset]:
    """Group the results by dataset (runs of the first budget/device/thread setting seen)."""
    out: dict[str, Dataset] = {}
    for r in rows:
        if r.get("kind") == "analysis" and r["dataset"] not in out:
            rec_hp = t.recommend_from(r["analysis"]).hyperparameters
            out[r["dataset"]] = Dataset(r["dataset"], r["analysis"], t.recommended_id(rec_hp),
                                        t.plain_hp(rec_hp), [])
    for r in rows:
        if r.get("kind") != "run" or r["dataset"] not in out:
            continue
        d = out[r["dataset"]]
        if d.rows and (r["budget"], r["device"], r["threads"]) != (
                d.rows[0]["budget"], d.rows[0]["device"], d.rows[0]["threads"]):
            continue
        d.rows.append(dict(r))
        d.hps.setdefault(r["setting"], r["hyperparameters"])
        if r["seed"] == t.GRID_SEED:
            d.seed0[r["setting"]] = dict(r)
        else:
            d.paired.setdefault(r["setting"], Paired(r["setting"], {})).by_seed[r["seed"]] = \
                r["test"]
    for d in out.values():  # the recommendation as run: the checkout's at the run's budget,
        if not d.rows:      # else the paper rules' (before the fit of issue 19)
            continue
        budget = (d.rows[0]["budget"]["epochs"], d.rows[0]["budget"]["image_size"])
        for kind in (None, "paper"):
            hp = t.recommend_from(d.analysis, budget=budget, rules=kind).hyperparameters
            if t.recommended_id(hp) in d.seed0 or t.recommended_id(hp) in d.paired:
                d.rec_id, d.rec_hp = t.recommended_id(hp), t.plain_hp(hp)
                break
    return out


# --- text ------------------------------------------------------------------------------------

def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def pm(mean: float, sd: float) -> str:
    return f"{100 * mean:+.1f} ± {100 * sd:.1f}" if np.isfinite(sd) else f"{100 * mean:+.1f}"


def describe(setting: str, hp: Mapping[str, Any] | None = None) -> str:
    a = axes_of(setting, hp)
    if "@" in setting and hp is not None:
        lrs = "/".join(f"{g['lr']:.2g}" for g in hp["lr_groups"])
        lp = ", LP-FT" if hp.get("lp_ft") else ""
        return f"reinit {a['reinit']}, {REG_LABEL[a['reg']]}, lr {lrs}{lp}"
    name = "default: " if setting == "default" else ""
    mode = "one lr" if a["lr_mode"] == "one" else "per-group lr"
    return f"{name}reinit {a['reinit']}, {REG_LABEL[a['reg']]}, {mode} {a['base_lr']:g}"


def marginals(d: Dataset, axis: str) -> dict[Any, float]:
    """Best seed-0 test accuracy over the grid's cells at each value of one axis (a mean
    would be dominated by the cells whose learning rate was too high)."""
    groups: dict[Any, list[float]] = {}
    for s, r in d.seed0.items():
        if s == "default" or t.parse_cell(s):
            groups.setdefault(axes_of(s)[axis], []).append(r["test"])
    return {k: float(np.max(v)) for k, v in sorted(groups.items())}


def profile_reinit(analysis: Mapping[str, Any]) -> int | None:
    """Top blocks above the peak of the linear-probe profile: what the profile alone says,
    before any cap or other rule (heuristics.rules.reinit)."""
    from heuristics.profile import absolute_shape
    from heuristics.rules.reinit import PROFILE_ACCURACY_TOLERANCE

    values = analysis["profile"].get("linear_probe_accuracy")
    if not values:
        return None
    names = [b["name"] for b in analysis["blocks"]]
    return absolute_shape(values, names, PROFILE_ACCURACY_TOLERANCE).blocks_above


def summary(d: Dataset) -> dict[str, Any]:
    seeds = d.seeds
    default = d.paired["default"].values(seeds)
    rec = d.paired[d.rec_id].values(seeds)
    top_name = d.top()
    top = d.paired[top_name].values(seeds)
    best = d.best_set()
    rec_axes = axes_of(d.rec_id, d.rec_hp)
    best_axes = [axes_of(s) for s in best]
    out = {"dataset": d.name, "default": default, "rec": rec, "top": top, "top_name": top_name,
           "best": best, "gain": diff_stats(rec, default), "regret": diff_stats(top, rec),
           "rec_within": within_noise(top, rec), "default_within": "default" in best,
           "reinit_pred": rec_axes["reinit"], "reinit_best": sorted({a["reinit"]
                                                                      for a in best_axes}),
           "reg_pred": rec_axes["reg"], "reg_best": sorted({a["reg"] for a in best_axes}),
           "reinit_marg": marginals(d, "reinit"), "reg_marg": marginals(d, "reg")}
    out["reinit_profile"] = profile_reinit(d.analysis)
    out["reinit_hit"] = out["reinit_pred"] in out["reinit_best"]
    out["reg_hit"] = out["reg_pred"] in out["reg_best"]
    for name in d.before_ids():
        b = d.paired[name].values(seeds)
        out.setdefault("before", []).append({"id": name, "rec": b, "gain": diff_stats(b, default),
                                             "regret": diff_stats(top, b),
                                             "within": within_noise(top, b)})
    return out


def aggregate(sums: Sequence[Mapping[str, Any]], which: str = "now") -> dict[str, float]:
    gains, regrets, within = [], [], []
    for s in sums:
        if which == "now":
            gains.append(s["gain"][0]), regrets.append(s["regret"][0])
            within.append(s["rec_within"])
        elif which == "before" and s.get("before"):
            b = s["before"][0]
            gains.append(b["gain"][0]), regrets.append(b["regret"][0]), within.append(b["within"])
        elif which == "default":
            gains.append(0.0), regrets.append(float(np.mean(s["top"] - s["default"])))
            within.append(s["default_within"])
    if not gains:
        return {}
    return {"n": len(gains), "mean_gain": float(np.mean(gains)),
            "mean_regret": float(np.mean(regrets)), "share_within": float(np.mean(within))}


def render(datasets: Mapping[str, Dataset], fit_on: Sequence[str]) -> str:
    lines: list[str] = []
    done = [d for d in datasets.values() if d.complete]
    pending = [d.name for d in datasets.values() if not d.complete]
    sums = [summary(d) for d in done]
    first = done[0].rows[0] if done else None
    if first:
        b = first["budget"]
        lines += [f"Budget of every run: {b['epochs']} epochs at {b['image_size']} px, "
                  f"{first['device']}, {first['threads']} torch thread(s); grid on seed "
                  f"{t.GRID_SEED}, top {t.TOP} cells, the default and the recommendation on "
                  f"fresh seeds {', '.join(map(str, t.CONFIRM_SEEDS))} (paired). Accuracies "
                  "are test %, mean over the fresh seeds; differences are paired mean ± "
                  "standard deviation over those seeds.", ""]
    if pending:
        lines += [f"Grid not complete yet (run `python benchmarks/transfer.py run` again): "
                  f"{', '.join(pending)}.", ""]
    partial = [d for d in datasets.values() if not d.complete and d.paired_pair()]
    lines += ["### Per dataset", "",
              "| dataset | classes, train/val/test | default | recommended | best of the grid "
              "| gain (rec − default) | regret (best − rec) | rec within noise of best | "
              "set within noise of best |",
              "|---|---|---|---|---|---|---|---|---|"]
    for s, d in zip(sums, done):
        r = d.rows[0]
        lines.append(
            f"| {d.name}{' (fit)' if d.name in fit_on else ''} | {d.analysis['num_classes']}, "
            f"{r['n_train']}/{r['n_val']}/{r['n_test']} | {pct(s['default'].mean())} "
            f"| {pct(s['rec'].mean())} | {pct(s['top'].mean())} | {pm(*s['gain'])} "
            f"| {pm(*s['regret'])} | {'yes' if s['rec_within'] else 'no'} "
            f"| {'; '.join(describe(x) for x in s['best'])} |")
    if partial:
        lines += ["", "Datasets whose grid is not complete, with the default and the "
                  "recommendation on the fresh seeds (no regret without the grid):", "",
                  "| dataset | classes, train/val/test | default | recommended | gain (rec − "
                  "default) | recommended before | gain before |", "|---|---|---|---|---|---|---|"]
        for d in partial:
            r, seeds = d.rows[0], d.seeds
            default, rec = d.paired["default"].values(seeds), d.paired[d.rec_id].values(seeds)
            before = [d.paired[b].values(seeds) for b in d.before_ids()]
            lines.append(
                f"| {d.name} | {d.analysis['num_classes']}, {r['n_train']}/{r['n_val']}/"
                f"{r['n_test']} | {pct(default.mean())} | {pct(rec.mean())} "
                f"| {pm(*diff_stats(rec, default))} "
                f"| {pct(before[0].mean()) if before else '–'} "
                f"| {pm(*diff_stats(before[0], default)) if before else '–'} |")
    if any(s.get("before") for s in sums):
        lines += ["", "### Before calibration", "",
                  "The recommendation of the heuristics before this issue's changes, on the "
                  "same fresh seeds.", "",
                  "| dataset | recommended before | test % | gain | regret | within noise |",
                  "|---|---|---|---|---|---|"]
        for s, d in zip(sums, done):
            for b in s.get("before", []):
                lines.append(f"| {d.name} | {describe(b['id'], d.hps[b['id']])} "
                             f"| {pct(b['rec'].mean())} | {pm(*b['gain'])} "
                             f"| {pm(*b['regret'])} | {'yes' if b['within'] else 'no'} |")
    candidates = sorted({s for d in done for s in d.paired if "@" in s
                         and not s.startswith("rec@")})
    if candidates:
        lines += ["", "### Calibration candidates", "",
                  "Variants of the recommendation tried on the datasets marked (fit) before a "
                  "rule was changed; same fresh seeds.", "",
                  "| dataset | candidate | what it changes | test % | gain | regret |",
                  "|---|---|---|---|---|---|"]
        for s, d in zip(sums, done):
            for c in candidates:
                p = d.paired.get(c)
                if p is None or not all(k in p.by_seed for k in d.seeds):
                    continue
                v = p.values(d.seeds)
                lines.append(f"| {d.name} | {c.split('@')[0]} | {describe(c, d.hps[c])} "
                             f"| {pct(v.mean())} | {pm(*diff_stats(v, s['default']))} "
                             f"| {pm(*diff_stats(s['top'], v))} |")
    lines += ["", "### Aggregate", "",
              "| datasets | setting | n | mean gain over default | mean regret to best | "
              "share within noise of best |", "|---|---|---|---|---|---|"]
    groups = [("all", sums), ("fitted on", [s for s in sums if s["dataset"] in fit_on]),
              ("held out", [s for s in sums if s["dataset"] not in fit_on])]
    for label, group in groups:
        if not group or (label != "all" and not fit_on):
            continue
        for which, name in (("now", "recommended"), ("before", "recommended before"),
                            ("default", "binary default")):
            a = aggregate(group, which)
            if a:
                lines.append(f"| {label} | {name} | {a['n']} | {100 * a['mean_gain']:+.1f} "
                             f"| {100 * a['mean_regret']:+.1f} | {a['share_within']:.0%} |")
    lines += ["", "### Did the probes point at the winners?", "",
              "Best = the settings within noise of the top on the fresh seeds; \"grid best by\" "
              "is the best seed-0 test accuracy among the cells with that value.", "",
              "| dataset | pre-training gain | profile says reinit | recommended reinit | best "
              "reinit | grid best by reinit 0/1/2/3 | recommended regulariser | best "
              "regulariser | grid best by L2 / L2-SP lower / L2-SP all | recommended lrs "
              "(head/upper/lower) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for s, d in zip(sums, done):
        gain = d.analysis["measures"].get("pretraining_gain")
        lrs = "/".join(f"{g['lr']:.2g}" for g in d.rec_hp["lr_groups"])
        rm = "/".join(pct(v) for v in s["reinit_marg"].values())
        gm = s["reg_marg"]
        lines.append(
            f"| {d.name} | {'–' if gain is None else f'{gain:+.3f}'} "
            f"| {'–' if s['reinit_profile'] is None else s['reinit_profile']} "
            f"{'✓' if s['reinit_profile'] in s['reinit_best'] else '✗'} | {s['reinit_pred']} "
            f"| {', '.join(map(str, s['reinit_best']))} {'✓' if s['reinit_hit'] else '✗'} "
            f"| {rm} | {REG_LABEL[s['reg_pred']]} "
            f"| {', '.join(REG_LABEL[x] for x in s['reg_best'])} {'✓' if s['reg_hit'] else '✗'} "
            f"| {'/'.join(pct(gm[k]) for k in t.REGULARISERS if k in gm)} | {lrs} |")
    lines += ["", "### The grid on seed 0", "",
              "Test % of every cell (rows: reinit and regulariser; columns: learning rates), "
              "and training from scratch.", ""]
    for d in done:
        cols = [(m, b) for m in t.LR_MODES for b in t.BASE_LRS]
        scratch = d.seed0.get("scratch")
        lines += [f"**{d.name}** (scratch: {pct(scratch['test']) if scratch else '–'}; "
                  f"default {pct(d.seed0['default']['test'])})", "",
                  "| reinit | regulariser | " + " | ".join(
                      f"{'one' if m == 'one' else 'groups'} {b:g}" for m, b in cols) + " |",
                  "|---|---|" + "---|" * len(cols)]
        for k in t.REINIT:
            for reg in t.REGULARISERS:
                cells = []
                for m, b in cols:
                    c = t.cell_id(k, reg, m, b)
                    row = d.seed0.get("default" if c == t.DEFAULT_CELL else c)
                    cells.append(pct(row["test"]) if row else "–")
                lines.append(f"| {k} | {REG_LABEL[reg]} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["### Probe profiles (linear-probe accuracy per block, on the training folder)", "",
              "| dataset | " + " | ".join(b["name"] for b in done[0].analysis["blocks"]) +
              " | pre-training gain per block |" if done else "",
              "|---|" + "---|" * (len(done[0].analysis["blocks"]) + 1) if done else ""]
    for d in done:
        prof = d.analysis["profile"].get("linear_probe_accuracy", [])
        gains = d.analysis["profile"].get("pretraining_gain", [])
        lines.append(f"| {d.name} | " + " | ".join(pct(v) for v in prof) + " | "
                     + " / ".join(f"{v:+.2f}" for v in gains) + " |")
    return "\n".join(lines).rstrip() + "\n"


def figure(datasets: Mapping[str, Dataset], path: Path) -> bool:
    """Draw the figure; False (and nothing written) without matplotlib (the `bench` extra)."""
    try:
        import matplotlib
    except ImportError:
        return False

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [d for d in datasets.values() if d.complete]
    if not done:
        return False
    sums = [summary(d) for d in done]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(14, 5.2), gridspec_kw={"width_ratios": [3, 2]})
    series = [("binary default", "default", "#9e9e9e"), ("nbtl before calibration", "before",
                                                          "#f4a261"),
              ("nbtl recommended", "rec", "#2a9d8f"), ("best of the grid", "top", "#264653")]
    series = [s for s in series if s[1] != "before" or any(x.get("before") for x in sums)]
    x = np.arange(len(done))
    width = 0.8 / len(series)
    for i, (label, key, colour) in enumerate(series):
        vals = [(s["before"][0]["rec"] if s.get("before") else s["rec"]) if key == "before"
                else s[key] for s in sums]
        ax.bar(x + (i - (len(series) - 1) / 2) * width, [100 * v.mean() for v in vals], width,
               yerr=[100 * v.std(ddof=1) for v in vals], label=label, color=colour, capsize=2)
    ax.set_xticks(x, [f"{d.name}\n(fit)" if d.name in FIT_ON else d.name for d in done])
    low = min(100 * min(s["default"].min(), s["rec"].min(), s["top"].min()) for s in sums)
    ax.set_ylim(max(0, low - 10), 100)
    ax.set_ylabel("test accuracy % (mean ± sd, fresh seeds)")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=len(series))
    ax.set_title("Fine-tuning on real data, same budget")
    names = [b["name"] for b in done[0].analysis["blocks"]]
    for d in done:
        prof = d.analysis["profile"].get("linear_probe_accuracy")
        if prof:
            ax2.plot(names, [100 * v for v in prof], marker="o", label=d.name)
    ax2.set_ylabel("linear-probe accuracy %")
    ax2.set_title("Probe profiles (pre-trained features)")
    if ax2.get_legend_handles_labels()[0]:
        ax2.legend(fontsize=7)
    ax2.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})  # no version stamp: same bytes
    plt.close(fig)
    return True


def write(text: str, out: Path) -> None:
    old = out.read_text(encoding="utf-8") if out.is_file() else f"{START}\n{END}\n"
    if START not in old or END not in old:
        old = old.rstrip() + f"\n\n{START}\n{END}\n"
    head, rest = old.split(START, 1)
    _, tail = rest.split(END, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"{head}{START}\n{text}{END}{tail}", encoding="utf-8")


# The datasets whose results were used to change the heuristics (docs/benchmark.md says how);
# the others are reported as held out.
FIT_ON: tuple[str, ...] = ("fashion-mnist", "mnist")


def main(args: Any) -> int:
    datasets = load(t.read_results(args.results))
    if not datasets:
        print(f"no results in {args.results}: run `python benchmarks/transfer.py run` first")
        return 1
    text = render(datasets, FIT_ON)
    write(text, args.out)
    drawn = figure(datasets, args.figure)
    print(text)
    print(f"wrote {args.out}" + (f" and {args.figure}" if drawn else
                                 " (no figure: pip install -e '.[bench]' for matplotlib)"))
    return 0
