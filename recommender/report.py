"""The terminal views: report, progress, errors. The only module that imports rich."""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

import probes
from probes import Measurement
from recommender.config import VALIDATE_MEASURED
from recommender.data.splits import SPLIT_FRACTIONS
from recommender.errors import NbtlError

if TYPE_CHECKING:
    from recommender.pipeline import Result

MAX_SKIPPED_SHOWN = 10
_CONFIDENCE_STYLE = {"high": "green", "medium": "yellow", "low": "red"}


# Characters a terminal must not receive raw: controls (ESC starts a terminal command), format
# characters (bidirectional overrides reorder what is shown), lone surrogates (a file name byte
# that is not UTF-8, as os.fsdecode gives it; a strict UTF-8 stream cannot write them) and
# line or paragraph separators.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def printable(text: str) -> str:
    """Text that comes from the dataset (a file, folder or class name), safe to print.

    Characters of ``_ESCAPED_CATEGORIES`` are written as Python escapes (``\\x1b``,
    ``\\udcff``, the same ``\\udcff`` that the JSON has); everything else is unchanged.
    """
    return "".join(
        ascii(char)[1:-1] if unicodedata.category(char) in _ESCAPED_CATEGORIES else char
        for char in text
    )


def console(stderr: bool, quiet: bool = False) -> Console:
    return Console(stderr=stderr, quiet=quiet, highlight=False)


def print_error(exc: NbtlError) -> None:
    err = console(stderr=True)
    # Messages name the dataset's files and classes.
    err.print(Text(f"nbtl-recommend: error: {printable(exc.message)}", style="bold red"))
    if exc.hint:
        err.print(Text(printable(exc.hint)))


def stage_printer(err: Console) -> Callable[[str], None]:
    return lambda text: err.print(Text(f"· {text}", style="dim"))


def progress_factory(err: Console) -> Callable[[str, int, str], Callable[[int], None]]:
    """``start(label, total, unit)`` draws a progress bar on ``err`` and returns ``advance(n)``;
    the bar goes away when ``total`` is reached. Bars started while others run stack below
    them in one display (epochs above batches)."""
    progress = Progress(
        TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[unit]}"), TimeRemainingColumn(), console=err, transient=True,
    )
    active: set[int] = set()

    def start(label: str, total: int, unit: str) -> Callable[[int], None]:
        task = progress.add_task(label, total=total, unit=unit)
        if not active:
            progress.start()
        active.add(task)
        done = 0

        def advance(count: int) -> None:
            nonlocal done
            if task not in active:
                return
            done += count
            progress.update(task, advance=count)
            if done >= total:
                progress.remove_task(task)
                active.discard(task)
                if not active:
                    progress.stop()

        return advance

    return start


def print_probe_list(out: Console) -> None:
    table = Table(title="Measures of fit", title_justify="left")
    for column in ("name", "needs", "direction", "meaning", "reference"):
        table.add_column(column, overflow="fold")
    for probe in probes.list_probes():
        table.add_row(probe.name, ", ".join(probe.needs),
                      "higher is better" if probe.higher_is_better else "lower is better",
                      probe.meaning, probe.reference)
    out.print(table)


def print_report(result: Result, out: Console) -> None:
    doc = result.to_dict()
    out.print()
    out.rule("[bold]nbtl · transferability and fine-tuning recommendation")
    _print_dataset(doc["dataset"], out)
    if result.analysed == "train":
        out.print(Text("         (the training split: the probes and the recommendation never "
                       "see the validation and test images)", style="dim"))
    _print_model(doc["model"], out)
    _print_measures(result, out)
    _print_recommendation(doc["recommendation"], out)
    if result.validation is not None:
        _print_validation(doc["validation"], result.validation, result.timings, out)
    timings = result.timings
    cached = " (from cache)" if result.features_from_cache else ""
    scratch = f", scratch training {timings['scratch_s']:.1f} s" if "scratch_s" in timings else ""
    validation = (f", fine-tuning {_minutes(timings['validation_s'])}"
                  if "validation_s" in timings else "")
    out.print(Text(
        f"Time: features {timings.get('features_s', 0):.1f} s{cached}, probes "
        f"{timings.get('probes_s', 0):.1f} s{scratch}{validation}, total "
        f"{_minutes(timings.get('total_s', 0))}", style="dim"))


def _minutes(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)} min {seconds % 60:02.0f} s"


SETTING_LABELS = {"default": "binary default", "recommended": "recommended",
                  "best_found": "best found"}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _print_validation(val: dict[str, Any], validation, timings: Mapping[str, float],
                      out: Console) -> None:
    split, budget = val["split"], val["budget"]
    out.print()
    fractions = "/".join(f"{100 * f:.0f}" for f in SPLIT_FRACTIONS)
    where = ("your train/val/test folders" if split["source"] == "folders"
             else f"a stratified {fractions} split")
    out.print(Text("Validation: fine-tuned, same budget and seeds", style="bold"),
              Text(f"({where}: {split['n_train']} train, {split['n_val']} validation, "
                   f"{split['n_test']} test images; the probes saw the training images only)",
                   style="dim"))
    precision = "bf16 mixed precision" if val["mixed_precision"] else "float32"
    out.print(Text(
        f"  Budget for both: {budget['epochs']} epochs at {budget['image_size']} px, batch "
        f"{budget['batch_size']}, {budget['augmentation']}, label smoothing "
        f"{budget['label_smoothing']:g}, {budget['schedule']} schedule with "
        f"{budget['warmup_fraction']:.0%} warm-up, {precision}; seeds "
        f"{', '.join(map(str, val['seeds']))}. The budget is reduced so that validation runs "
        f"in minutes on a CPU ({VALIDATE_MEASURED}): it tests "
        "the settings' direction, not their final accuracy; raise it with --validate-epochs "
        "and --validate-size.", style="dim"), overflow="fold")
    table = Table(title="Test accuracy (%)", title_justify="left")
    for column in ("setting", "test mean", "± spread", "per seed", "validation", "wall time"):
        table.add_column(column, justify="left" if column in ("setting", "per seed") else "right",
                         no_wrap=column in ("setting", "wall time"))
    for name, setting in val["settings"].items():
        seconds = timings.get(f"{name}_s")
        runs = validation.setting(name).runs
        cached = sum(r.cached for r in runs)
        wall = _minutes(seconds) if seconds is not None else ""
        if cached:
            wall = "cached" if cached == len(runs) else f"{wall} (+{cached} cached)"
        table.add_row(
            SETTING_LABELS.get(name, name), _pct(setting["test_mean"]),
            _pct(setting["test_spread"]),
            " ".join(_pct(r["test_accuracy"]) for r in setting["runs"]),
            _pct(setting["val_mean"]), wall)
    out.print(table)
    diff = val["difference"]
    spread = diff["spread"]
    verdict = _verdict(diff["recommended_minus_default"], spread)
    out.print(Text.assemble(
        ("  recommended - default: ", "bold"),
        (f"{100 * diff['recommended_minus_default']:+.1f} points", "bold"),
        (f" ± {100 * spread:.1f} (paired over seeds)" if spread is not None else
         " (one seed: no spread)", ""), (f" · {verdict}", "dim")), overflow="fold")
    if "best_found_minus_recommended" in diff:
        s = diff["best_found_spread"]
        out.print(Text.assemble(
            ("  best found - recommended: ", "bold"),
            (f"{100 * diff['best_found_minus_recommended']:+.1f} points", "bold"),
            (f" ± {100 * s:.1f}" if s is not None else "", "")))
    search = val.get("search")
    if search:
        trials = Table(title=f"Search: {len(search['trials'])} trials ({search['sampler']}; "
                             f"scored on {search['objective']})", title_justify="left")
        for column in ("trial", "settings tried", "validation", "test"):
            trials.add_column(column, overflow="fold",
                              justify="right" if column in ("validation", "test") else "left")
        for trial in search["trials"]:
            mark = " *" if trial["number"] == search["best_trial"] else ""
            label = "recommended" if trial is search["trials"][0] else _describe(
                trial["overrides"])
            trials.add_row(f"{trial['number']}{mark}", label, _pct(trial["val_accuracy"]),
                           _pct(trial["test_accuracy"]))
        out.print(trials)
        if search["storage"] is None:
            kept = ("Without a cache the trials were kept in memory only; give --search-db "
                    "FILE to keep them.")
        else:
            kept = (f"Resumable: the trials are stored in {printable(search['storage'])}; rerun "
                    "the same command to add trials (raise --search) or reuse them.")
        out.print(Text(f"  * best by validation accuracy. {kept}", style="dim"),
                  overflow="fold")


def _verdict(mean: float, spread: float | None) -> str:
    if spread is None:
        return "run 2 or more seeds (--validate-seeds) to tell it from noise"
    if abs(mean) <= spread:
        return "within the seed spread: no clear difference at this budget"
    return "the recommendation is better" if mean > 0 else "the binary default is better"


def _print_dataset(dataset: dict[str, Any], out: Console) -> None:
    source = "ImageFolder" if dataset["source"] == "folder" else f"CSV {dataset['source']}"
    out.print(Text.assemble(
        ("Dataset  ", "bold"), printable(f"{dataset['root']} ({source}): "),
        f"{dataset['num_classes']} classes, {dataset['num_images']} images, "
        f"{dataset['num_skipped']} skipped"))
    counts = ", ".join(f"{name} {n}" for name, n in dataset["class_counts"].items())
    out.print(Text(f"         {printable(counts)}", style="dim"), overflow="fold")
    for warning in dataset["warnings"]:
        out.print(Text(f"         warning: {printable(warning)}", style="yellow"))
    skipped = dataset["skipped"]
    for item in skipped[:MAX_SKIPPED_SHOWN]:
        out.print(Text(f"         skipped {printable(item['path'])}: {printable(item['reason'])}",
                       style="yellow"))
    if len(skipped) > MAX_SKIPPED_SHOWN:
        out.print(Text(f"         ... and {len(skipped) - MAX_SKIPPED_SHOWN} more skipped "
                       "(all listed in the JSON)", style="yellow"))


def _print_model(model: dict[str, Any], out: Console) -> None:
    size = "x".join(str(v) for v in model["input_size"][1:])
    out.print(Text.assemble(
        ("Model    ", "bold"),
        f"{model['name']} ({model['num_params'] / 1e6:.2f} M params), {model['weights']}; "
        f"input {size} px, {model['interpolation']}"))


def _print_measures(result: Result, out: Console) -> None:
    registry = {p.name: p for p in probes.list_probes()}
    per_block = [p for p in result.probes if p.per_block]
    table = Table(title="Measures by block (bottom-up: input → penultimate features)",
                  title_justify="left", caption="↑ higher is better · ↓ lower is better · "
                  "± standard deviation over cross-validation folds", caption_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("measure", no_wrap=True)
    for block, dim in zip(result.blocks, result.dims):
        table.add_column(f"{block}\n{dim}-d", justify="right", no_wrap=True)
    for p in per_block:
        table.add_row(_label(registry[p.name]),
                      *(_short(m.value) if m else "n/a" for m in p.values))
        if any(m is not None and m.spread is not None for m in p.values):
            table.add_row(Text("  ±", style="dim"), *(
                Text(_short(m.spread), style="dim") if m and m.spread is not None else ""
                for m in p.values))
    out.print()
    out.print(table)
    once = [p for p in result.probes if not p.per_block]
    if once:
        cells = [f"{_label(registry[p.name])} {_fmt(p.summary)}" for p in once]
        out.print(Text.assemble(("Source head ", "bold"), "(whole model): ", " · ".join(cells)),
                  overflow="fold")
    if result.scratch is not None:
        s = result.scratch
        out.print(Text.assemble(
            ("Scratch ", "bold"),
            f"accuracy {_fmt(Measurement(s.accuracy, s.spread))}: the network trained "
            f"from random initialisation for {s.epochs} epoch{'s' * (s.epochs != 1)} at "
            f"{s.image_size} px on "
            f"{s.n_train} images, tested on {s.n_test} held out (a short budget: a lower "
            "bound on full training)"), overflow="fold")
    out.print(Text("What they mean", style="bold"))
    for p in result.probes:
        probe = registry[p.name]
        out.print(Text(f"  {_label(probe)}: {probe.meaning} ({probe.reference})", style="dim"),
                  overflow="fold")
        reasons = {error for error in p.errors if error}
        for error in sorted(reasons):
            where = [b for b, e in zip(result.blocks, p.errors) if e == error] \
                if p.per_block else []
            at = f" at {', '.join(where)}" if where else ""
            out.print(Text(f"    unavailable{at}: {error.removeprefix('unavailable: ')}",
                           style="yellow"), overflow="fold")


def _short(value: float) -> str:
    """At most 4 significant digits, for table cells."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.1e}"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def _label(probe) -> str:
    return f"{probe.label} {'↑' if probe.higher_is_better else '↓'}"


def _print_recommendation(rec: dict[str, Any], out: Console) -> None:
    hp = rec["hyperparameters"]
    out.print()
    out.print(Text("Recommended fine-tuning settings", style="bold"),
              Text("(value · search range · confidence · why)", style="dim"))
    sources: list[str] = []
    for name, detail in rec["details"].items():
        user = detail.get("set_by") == "override"
        source = detail.get("source") or ""
        if source and source not in sources and not user:
            sources.append(source)
        cite = f" [{sources.index(source) + 1}]" if source in sources else ""
        out.print(Text.assemble(
            ("  ", ""), (name, "bold magenta" if user else "bold"),
            (f" = {_fmt_value(detail['value'])}", "bold"),
            (f" · range {_fmt_range(detail['range'])}", ""),
            (f" · {'set by you' if user else detail['confidence']}",
             "magenta" if user else _CONFIDENCE_STYLE.get(detail["confidence"], "")),
            (f" · {detail.get('reason', '')}", "magenta" if user else "dim"),
            (cite, "cyan")),
            overflow="fold")
    if rec.get("overrides"):
        out.print(Text("  Settings marked 'set by you' come from --set; the settings that "
                       "depend on them followed your value.", style="magenta"))
    groups = Table(title="Learning-rate groups", title_justify="left")
    for column in ("group", "lr", "penalty", "blocks", "modules"):
        groups.add_column(column, overflow="fold")
    for group in hp["lr_groups"]:
        penalty = {"l2sp": f"L2-SP {_fmt_value(hp['l2sp_weight'])}",
                   "l2": f"L2 {_fmt_value(hp['l2_weight'])}"}.get(group["penalty"],
                                                                   group["penalty"])
        modules = "(all other parameters)" if group.get("rest") else ", ".join(group["modules"])
        groups.add_row(group["name"], _fmt_value(group["lr"]), penalty,
                       ", ".join(group.get("blocks", ())), modules)
    out.print(groups)
    excluded = " and ".join(hp.get("exclude_from_decay", ())) or "nothing"
    if hp["l2sp_weight"] > 0 and hp["l2sp_modules"]:
        out.print(Text(f"L2-SP alpha/2·||w - w0||² (alpha {_fmt_value(hp['l2sp_weight'])}) pulls "
                       "the lower transferred blocks toward their pre-trained weights; L2 "
                       f"beta/2·||w||² (beta {_fmt_value(hp['l2_weight'])}) on the rest; "
                       f"{excluded} excluded from both."), overflow="fold")
    else:
        out.print(Text(f"L2-SP off: plain L2 beta/2·||w||² (beta {_fmt_value(hp['l2_weight'])}) "
                       f"on every weight, {excluded} excluded."), overflow="fold")
    if hp.get("lp_ft"):
        out.print(Text(f"LP-FT: train the new layers alone for {hp['lp_epochs']} epoch(s), then "
                       f"everything, {hp['epochs']} epochs in all."), overflow="fold")
    out.print()
    out.print(Text("Sources", style="bold"))
    for number, source in enumerate(sources, 1):
        out.print(Text.assemble((f"  [{number}] ", "cyan"), (source, "dim")), overflow="fold")
    out.print(Text("  (the JSON carries each setting's deciding rule and measure values, and "
                   "every rule evaluated, fired or not, in recommendation.trace)", style="dim"))


def _fmt(measurement) -> str:
    if measurement is None:
        return "n/a"
    text = _fmt_value(measurement.value)
    if measurement.spread is not None:
        text += f" ± {_fmt_value(measurement.spread)}"
    return text


def _fmt_value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt_value(v) for v in value) or "—"
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    if value == 0 or not math.isfinite(value):
        return str(value)
    if abs(value) < 1e-3 or abs(value) >= 1e4:
        return f"{value:.1e}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.3f}".rstrip("0").rstrip(".")


def _fmt_range(span: Any) -> str:
    if not isinstance(span, (list, tuple)):
        return str(span)
    if any(isinstance(v, (list, tuple)) for v in span):  # alternative sets, e.g. of exclusions
        return " | ".join("+".join(map(str, v)) or "none" for v in span)
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in span)
    if numeric and len(span) == 2 and span[0] == span[1]:
        return _fmt_value(span[0])
    if numeric and len(span) == 2:
        return f"{_fmt_value(span[0])} – {_fmt_value(span[1])}"
    return ", ".join(_fmt_value(v) for v in span)


def _describe(params: Mapping[str, Any]) -> str:
    """A search trial's values, e.g. ``base_lr=0.003, lp_ft=True``."""
    parts = []
    for key, value in params.items():
        if isinstance(value, float):
            value = f"{value:.3g}" if value and math.isfinite(value) else value
        parts.append(f"{key}={value}")
    return ", ".join(parts)
