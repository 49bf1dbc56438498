"""Is CKA informative? Per-block CKA of the benchmark's datasets against the grid's winners.

    python benchmarks/cka.py profiles --data /tmp/nbtl-bench     # features + CKA per dataset
    python benchmarks/cka.py report                              # the comparison, as markdown

``profiles`` extracts the default backbone's features of each dataset's ``train/`` folder (the
images ``nbtl-recommend`` analyses; the features cache is used) and writes, per dataset, the
debiased linear CKA between the pre-trained and random-init features of every block and
between consecutive blocks to ``benchmarks/results/cka.json``. ``report`` reads that file and
``benchmarks/results/transfer.jsonl`` and asks whether a block's similarity predicts the
grid's best number of re-initialised blocks better than the linear-probe profile does:
leave-one-dataset-out with a one-threshold rule on each measure ("re-initialise the top 2
blocks" on one side, "none" on the other: the grid's two winning counts), and rank
correlations. ``moved`` fine-tunes the binary default once per dataset (the benchmark's
budget, split and a fresh seed) and adds the CKA per block between the pre-trained and the
fine-tuned features of the test images.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import transfer as t  # noqa: E402
from benchmarks import transfer_report as tr  # noqa: E402

CKA_RESULTS = ROOT / "benchmarks" / "results" / "cka.json"
MAX_REINIT = max(t.REINIT)  # the grid re-initialised 0-3 top blocks


# --- profiles --------------------------------------------------------------------------------

def profile(root: Path, device: str = "cpu") -> dict[str, Any]:
    """CKA per block of the ``train/`` images of the dataset at ``root``."""
    import probes
    from recommender.analysis import consecutive_cka
    from recommender.data.dataset import load_dataset
    from recommender.models.backbones import load_backbone
    from recommender.models.features import extract_features

    dataset = load_dataset(root / "train")
    backbone = load_backbone()
    features = extract_features([p for p, _ in dataset.samples], backbone, device=device)
    twin = features.twin_rows()  # the images the random-init twin saw (all up to 500)
    return {
        "blocks": list(features.blocks),
        "num_images": len(dataset.samples),
        "random_init_images": int(twin.size),
        "cka_random_init": [probes.block_cka(f[twin], r) for f, r in
                            zip(features.pretrained, features.random_features)],
        "cka_random_init_biased": [probes.linear_cka(f[twin], r) for f, r in
                                   zip(features.pretrained, features.random_features)],
        "consecutive_cka": list(consecutive_cka(features.pretrained)),
    }


def profiles_main(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    out = json.loads(args.out.read_text()) if args.out.is_file() else {}
    for name in args.only.split(","):
        root = args.data / name
        if not (root / "train").is_dir():
            print(f"skipped {name}: no {root / 'train'}", file=sys.stderr)
            continue
        out[name] = profile(root, args.device)
        args.out.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
        print(name, " ".join(f"{v:.3f}" for v in out[name]["cka_random_init"]), flush=True)
    return 0


def moved(root: Path, name: str, rows: Sequence[Mapping[str, Any]], seed: int,
          device: str = "cpu") -> dict[str, Any]:
    """Fine-tune the binary default on ``name`` as the benchmark did (its budget, split and
    ``seed``) and measure, per block, the CKA between the pre-trained and the fine-tuned
    features of the test images."""
    from recommender.data.dataset import load_dataset
    from recommender.data.splits import split_from_folders
    from recommender.data.tensors import load_image_tensors
    from recommender.finetune.compare import default_hyperparameters
    from recommender.finetune.runs import Budget, held_out_features, run_setting
    from recommender.models.backbones import load_backbone

    analysis = next(r["analysis"] for r in rows
                    if r.get("kind") == "analysis" and r["dataset"] == name)
    done = next(r for r in rows if r.get("kind") == "run" and r["dataset"] == name)
    rec_hp = t.recommend_from(analysis, rules="paper").hyperparameters  # as the runs were
    budget = Budget.for_recommendation(rec_hp, done["budget"]["epochs"],
                                       done["budget"]["image_size"])
    split = split_from_folders({r: load_dataset(root / r) for r in ("train", "test")},
                               t.GRID_SEED)
    data = load_image_tensors([p for p, _ in split.samples], [c for _, c in split.samples],
                              budget.image_size)
    backbone = load_backbone()
    run = run_setting(default_hyperparameters(rec_hp), backbone, data, split, budget,
                      seed=seed, device=device,
                      reference=lambda: held_out_features(backbone.model, data, split,
                                                          backbone.data_config, device,
                                                          len(backbone.blocks)))
    return {"seed": seed, "test_accuracy": run.test_accuracy, "block_cka": list(run.block_cka),
            "n_test": int(split.test.size)}


def moved_main(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    rows = t.read_results(t.RESULTS)
    out = json.loads(args.out.read_text())
    for name in args.only.split(","):
        if name not in out:
            print(f"skipped {name}: run 'profiles' first", file=sys.stderr)
            continue
        out[name]["default_moved"] = moved(args.data / name, name, rows, args.seed, args.device)
        args.out.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
        m = out[name]["default_moved"]
        print(name, f"test {m['test_accuracy']:.3f}",
              " ".join(f"{v:.3f}" for v in m["block_cka"]), flush=True)
    return 0


# --- the comparison --------------------------------------------------------------------------

def winners(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per dataset: the re-init counts and learning-rate modes of the best set (fresh seeds),
    the top setting's, and what the linear-probe profile alone says."""
    out = {}
    for name, d in tr.load(rows).items():
        if not d.complete:
            continue
        best = [tr.axes_of(s) for s in d.best_set()]
        top = tr.axes_of(d.top())
        out[name] = {"reinit_best": sorted({a["reinit"] for a in best}),
                     "reinit_top": top["reinit"],
                     "lr_mode_best": sorted({a["lr_mode"] for a in best}),
                     "reinit_profile": tr.profile_reinit(d.analysis),
                     "reinit_marg": tr.marginals(d, "reinit"),
                     "lr_marg": tr.marginals(d, "lr_mode"),
                     "probe_profile": d.analysis["profile"]["linear_probe_accuracy"],
                     "measures": d.analysis["measures"]}
    return out


# Scalars per dataset that might tell "re-initialise the top 2 blocks" (the grid's usual
# winner) from "re-initialise nothing" (its other one): each is tried as a one-threshold rule.
SCALARS: dict[str, Callable[[Mapping[str, Any]], float | None]] = {
    "CKA pre-trained vs random-init, neck": lambda d: d["cka_random_init"][-1],
    "CKA pre-trained vs random-init, mean of top 3 blocks":
        lambda d: float(np.mean(d["cka_random_init"][-3:])),
    "consecutive CKA, neck vs stage5": lambda d: d["consecutive_cka"][-1],
    "consecutive CKA, stage5 vs stage4": lambda d: d["consecutive_cka"][-2],
    "CKA after fine-tuning the default, neck": lambda d: _moved(d, -1),
    "CKA after fine-tuning the default, mean of top 3 blocks": lambda d: _moved(d, slice(-3, None)),
    "probe profile: peak minus top (linear-probe accuracy)":
        lambda d: max(d["probe_profile"]) - d["probe_profile"][-1],
    "linear-probe accuracy (top)": lambda d: d["measures"]["linear_probe_accuracy"],
    "pre-training gain (top)": lambda d: d["measures"]["pretraining_gain"],
    "source confidence (ImageNet head)": lambda d: d["measures"]["source_confidence"],
}
CHOICES = (0, 2)  # what a one-threshold rule predicts below / above its threshold (or reversed)


def _moved(d: Mapping[str, Any], where: int | slice) -> float | None:
    m = d.get("default_moved")
    return None if m is None else float(np.mean(np.asarray(m["block_cka"])[where]))


def predict(value: float, threshold: float, above: int) -> int:
    """``above`` when ``value`` >= ``threshold``, the other choice otherwise."""
    return above if value >= threshold else CHOICES[above == CHOICES[0]]


def hits(values: Mapping[str, float], best: Mapping[str, list[int]], threshold: float,
         above: int) -> int:
    return sum(predict(values[n], threshold, above) in best[n] for n in values)


def fit(values: Mapping[str, float], best: Mapping[str, list[int]]) -> tuple[float, int]:
    """Threshold and direction with the most hits on ``values`` (ties: the first of thresholds
    in increasing order, "2 above" before "0 above": one fixed choice)."""
    sorted_values = sorted(set(values.values()))
    cuts = [sorted_values[0] - 1.0, *((a + b) / 2 for a, b in zip(sorted_values,
                                                                  sorted_values[1:])),
            sorted_values[-1] + 1.0]
    options = [(th, above) for above in (2, 0) for th in cuts]
    return max(options, key=lambda o: (hits(values, best, *o), -options.index(o)))


def evaluate(name: str, data: Mapping[str, Mapping[str, Any]]) -> dict[str, Any] | None:
    """In-sample hits of the best one-threshold rule on ``name``, and leave-one-dataset-out
    hits (the rule fitted on the other datasets, applied to the one left out)."""
    values = {n: SCALARS[name](d) for n, d in data.items()}
    if any(v is None for v in values.values()):
        return None
    best = {n: d["reinit_best"] for n, d in data.items()}
    th, above = fit(values, best)
    held = 0
    for n in values:
        rest = {k: v for k, v in values.items() if k != n}
        held += predict(values[n], *fit(rest, best)) in best[n]
    top = [data[n]["reinit_top"] for n in values]
    return {"in_sample": hits(values, best, th, above), "threshold": th, "above": above,
            "held_out": held, "spearman": spearman(list(values.values()), top),
            "values": values}


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def _row(values: Sequence[float | None]) -> str:
    return " ".join("-" if v is None else f"{v:.2f}" for v in values)


def report(cka: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str:
    won = winners(rows)
    data = {n: {**won[n], **cka[n]} for n in t.DATASETS if n in won and n in cka}
    n = len(data)
    lines = ["| dataset | CKA pre-trained vs random-init | consecutive CKA (vs block below) | "
             "CKA pre-trained vs fine-tuned default | linear-probe profile | best reinit | "
             "probe profile says |", "|---|---|---|---|---|---|---|"]
    for name, d in data.items():
        m = d.get("default_moved")
        lines.append(
            f"| {name} | {_row(d['cka_random_init'])} | {_row(d['consecutive_cka'][1:])} | "
            f"{_row(m['block_cka']) if m else 'not run'} | {_row(d['probe_profile'])} | "
            f"{', '.join(map(str, d['reinit_best']))} | {d['reinit_profile']} |")
    lines += ["", "| measure (one threshold: reinit 2 on one side, 0 on the other) | hits, "
              f"fitted on all {n} | hits, leave one dataset out | Spearman with the top "
              "setting's reinit |", "|---|---|---|---|"]
    for name in SCALARS:
        e = evaluate(name, data)
        if e is None:
            lines.append(f"| {name} | not measured on every dataset | | |")
            continue
        side = ">=" if e["above"] == 2 else "<"
        inside = min(e["values"].values()) < e["threshold"] < max(e["values"].values())
        always = predict(e["threshold"] + 2.0, e["threshold"], e["above"])
        rule = f"2 when {side} {e['threshold']:.3f}" if inside else f"best fit: always {always}"
        lines.append(f"| {name} ({rule}) | {e['in_sample']} of "
                     f"{n} | {e['held_out']} of {n} | {e['spearman']:+.2f} |")
    lines.append(f"| the probe profile as the reinit rule reads it (not fitted) | "
                 f"{sum(d['reinit_profile'] in d['reinit_best'] for d in data.values())} of "
                 f"{n} | same | |")
    for k in range(MAX_REINIT + 1):
        lines.append(f"| always {k} | {sum(k in d['reinit_best'] for d in data.values())} of "
                     f"{n} | same | |")
    one = sum(d["lr_mode_best"] == ["one"] for d in data.values())
    lines += ["", f"Learning-rate spread: the best set held only the one-rate setting on {one} "
              f"of {n} datasets (" + "; ".join(f"{k} {'/'.join(d['lr_mode_best'])}"
                                              for k, d in data.items()) + ")."]
    return "\n".join(lines)


def report_main(args: argparse.Namespace) -> int:
    cka = json.loads(args.cka.read_text())
    print(report(cka, t.read_results(args.results)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("profiles", help="CKA per block of each dataset's train/ images")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--only", default=",".join(t.DATASETS))
    p.add_argument("--out", type=Path, default=CKA_RESULTS)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(run=profiles_main)
    m = sub.add_parser("moved", help="CKA per block after fine-tuning the binary default")
    m.add_argument("--data", type=Path, required=True)
    m.add_argument("--only", default=",".join(t.DATASETS))
    m.add_argument("--out", type=Path, default=CKA_RESULTS)
    m.add_argument("--seed", type=int, default=t.CONFIRM_SEEDS[0])
    m.add_argument("--device", default="cpu")
    m.add_argument("--threads", type=int, default=1)
    m.set_defaults(run=moved_main)
    r = sub.add_parser("report", help="does CKA predict the grid's winners?")
    r.add_argument("--cka", type=Path, default=CKA_RESULTS)
    r.add_argument("--results", type=Path, default=t.RESULTS)
    r.set_defaults(run=report_main)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
