"""Does ranking backbones by a cheap measure pick the one that fine-tunes best?

    python benchmarks/datasets.py --out DATA --per-class 40 --test-per-class 50 --only ...
    for m in tf_efficientnet_lite0 tf_efficientnet_lite1 tf_efficientnet_lite2; do
        python benchmarks/transfer.py run --data DATA --only NAME --backbone $m --stage default \\
            --results benchmarks/results/ranking.jsonl
    done
    python benchmarks/ranking.py [--results benchmarks/results/ranking.jsonl] [--out FILE]

``transfer.py run --stage default`` analyses the training folder with each backbone (the
measures ``nbtl-recommend --model A --model B`` ranks by, at the penultimate block) and
fine-tunes the binary default with it on the fresh seeds 1-3 at the benchmark's budget. This
script reads those JSON lines and writes, per dataset, each model's measures and fine-tuned
test accuracy, and each measure's weighted Kendall tau against the mean fine-tuned accuracy
(``scipy.stats.weightedtau``, as LogME and SFDA report), as a Markdown section (stdout, or
between the markers of ``--out``).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.transfer import CONFIRM_SEEDS, DEFAULT_BACKBONE, NOISE_SE, read_results  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "ranking.jsonl"
MEASURES = (("logme", "logme", "LogME"), ("linear_probe", "linear_probe_accuracy", "linear probe"),
            ("knn", "knn_accuracy", "kNN"), ("h_score", "h_score", "H-score"))
BEGIN = "<!-- ranking:begin (benchmarks/ranking.py writes this section) -->"
END = "<!-- ranking:end -->"


def short(model: str) -> str:
    return model.replace("tf_efficientnet_", "")


def collect(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """dataset -> model -> {measures, params, tests (by seed)}; only complete models (an
    analysis and the binary default on every fresh seed)."""
    out: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in rows:
        if r.get("kind") == "analysis":
            model = r.get("backbone", DEFAULT_BACKBONE)
            out[r["dataset"]].setdefault(model, {"tests": {}})["analysis"] = r["analysis"]
    for r in rows:
        if r.get("kind") == "run" and r["setting"] == "default":
            model = r.get("backbone", DEFAULT_BACKBONE)
            entry = out[r["dataset"]].setdefault(model, {"tests": {}})
            entry["tests"][r["seed"]] = 0.0 if r["diverged"] else r["test"]
            entry["n_test"] = r["n_test"]
    return {d: {m: e for m, e in models.items()
                if "analysis" in e and all(s in e["tests"] for s in CONFIRM_SEEDS)}
            for d, models in out.items()}


def tie_within_noise(a: Mapping[int, float], b: Mapping[int, float]) -> bool:
    """Paired over seeds: the mean difference within NOISE_SE standard errors of zero."""
    d = np.array([a[s] - b[s] for s in CONFIRM_SEEDS])
    se = d.std(ddof=1) / math.sqrt(d.size)
    return abs(d.mean()) <= NOISE_SE * se


def dataset_table(name: str, models: Mapping[str, Mapping[str, Any]]) -> tuple[list[str],
                                                                              dict[str, float]]:
    from scipy.stats import weightedtau

    names = sorted(models, key=lambda m: -np.mean(list(models[m]["tests"].values())))
    acc = np.array([np.mean(list(models[m]["tests"].values())) for m in names])
    lines = [f"**{name}** ({models[names[0]]['analysis']['num_images']} training images, "
             f"{models[names[0]]['analysis']['num_classes']} classes; "
             f"{models[names[0]].get('n_test', '?')} test images)", "",
             "| model | params (M) | " + " | ".join(label for *_, label in MEASURES)
             + " | fine-tuned test accuracy (%), seeds 1-3 | mean ± sd |",
             "|---|---:|" + "---:|" * len(MEASURES) + "---|---:|"]
    for m in names:
        e = models[m]
        meas = e["analysis"]["measures"]
        tests = [e["tests"][s] for s in CONFIRM_SEEDS]
        params = e["analysis"].get("num_params")
        cells = [f"{meas[key]:.4g}" if key in meas else "n/a" for _, key, _ in MEASURES]
        lines.append(f"| {short(m)} | {params / 1e6:.2f} | " if params else f"| {short(m)} | ? | ")
        lines[-1] += " | ".join(cells) + " | " + " / ".join(f"{100 * t:.1f}" for t in tests) \
            + f" | {100 * np.mean(tests):.1f} ± {100 * np.std(tests, ddof=1):.1f} |"
    taus = {}
    for key, probe, _ in MEASURES:
        values = np.array([models[m]["analysis"]["measures"].get(probe, np.nan) for m in names])
        if np.isfinite(values).all() and np.ptp(values) > 1e-9:  # all equal: no ranking
            taus[key] = float(weightedtau(values, acc).statistic)
    ties = [f"{short(a)} and {short(b)}" for i, a in enumerate(names) for b in names[i + 1:]
            if tie_within_noise(models[a]["tests"], models[b]["tests"])]
    picks = {}
    for _, probe, label in MEASURES:
        values = [models[m]["analysis"]["measures"].get(probe, -np.inf) for m in names]
        picks[label] = " = ".join(short(m) for m, v in zip(names, values)
                                  if v >= max(values) - 1e-9)  # a tie at the top: all of them
    lines += ["", "Weighted Kendall tau against the mean fine-tuned accuracy: "
              + ", ".join(f"{label} {taus[key]:+.2f}" if key in taus
                          else f"{label} n/a (equal for every model)"
                          for key, _, label in MEASURES) + ". Top pick: "
              + ", ".join(f"{label} {pick}" for label, pick in picks.items())
              + f"; best fine-tuned: {short(names[0])}. "
              + (f"Within seed noise (paired over the 3 seeds, difference within {NOISE_SE:g} "
                 f"standard errors): {'; '.join(ties)}." if ties else
                 "No two models tie within seed noise.")
              + (" **Every pair ties within seed noise: the fine-tuned order is noise, and so "
                 "are the tau values.**" if all_tie(models) else ""), ""]
    return lines, taus


def all_tie(models: Mapping[str, Mapping[str, Any]]) -> bool:
    names = list(models)
    return all(tie_within_noise(models[a]["tests"], models[b]["tests"])
               for i, a in enumerate(names) for b in names[i + 1:])


def section(results: Path) -> str:
    data = collect(read_results(results))
    lines = [BEGIN, ""]
    all_taus: dict[str, list[float]] = defaultdict(list)
    separable: dict[str, list[float]] = defaultdict(list)
    complete = {d: m for d, m in data.items() if len(m) >= 3}
    for name in sorted(complete):
        table, taus = dataset_table(name, complete[name])
        lines += table
        for key, tau in taus.items():
            all_taus[key].append(tau)
            if not all_tie(complete[name]):
                separable[key].append(tau)

    def summary(taus: Mapping[str, list[float]]) -> str:
        return ", ".join(f"{label} {np.mean(taus[key]):+.2f} over {len(taus[key])} "
                         f"(range {min(taus[key]):+.2f} to {max(taus[key]):+.2f})"
                         for key, _, label in MEASURES if key in taus)

    if all_taus:
        lines += [f"**Over the {len(complete)} datasets**, mean weighted Kendall tau (over the "
                  "datasets where the measure is not equal for every model): "
                  + summary(all_taus) + ". Over the datasets where not every pair of models "
                  "ties within seed noise: " + (summary(separable) or "none") + ".", ""]
    lines.append(END)
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--out", type=Path, default=None,
                        help="Markdown file whose section between the ranking markers is "
                             "replaced (default: print the section)")
    args = parser.parse_args(argv)
    text = section(args.results)
    if args.out is None:
        sys.stdout.write(text)
        return 0
    doc = args.out.read_text(encoding="utf-8")
    if BEGIN not in doc or END not in doc:
        print(f"{args.out} has no ranking markers ({BEGIN} ... {END}).", file=sys.stderr)
        return 1
    head, rest = doc.split(BEGIN, 1)
    args.out.write_text(head + text.rstrip("\n") + rest.split(END, 1)[1], encoding="utf-8")
    print(f"ranking section -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
