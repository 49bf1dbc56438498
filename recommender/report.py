"""The terminal views: report, progress, errors. The only module that imports rich."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

import probes
from recommender.errors import NbtlError

if TYPE_CHECKING:
    from recommender.pipeline import Result

MAX_SKIPPED_SHOWN = 10


def console(stderr: bool, quiet: bool = False) -> Console:
    return Console(stderr=stderr, quiet=quiet, highlight=False)


def print_error(exc: NbtlError) -> None:
    err = console(stderr=True)
    err.print(Text(f"nbtl-recommend: error: {exc.message}", style="bold red"))
    if exc.hint:
        err.print(Text(exc.hint))


def stage_printer(err: Console) -> Callable[[str], None]:
    return lambda text: err.print(Text(f"· {text}", style="dim"))


def progress_factory(err: Console) -> Callable[[int], Callable[[int], None]]:
    """A per-batch callback that draws a progress bar on ``err`` for ``total`` images."""

    def start(total: int) -> Callable[[int], None]:
        progress = Progress(
            TextColumn("  features"), BarColumn(), MofNCompleteColumn(),
            TextColumn("images"), TimeRemainingColumn(), console=err, transient=True,
        )
        task = progress.add_task("features", total=total)
        progress.start()
        done = 0

        def advance(count: int) -> None:
            nonlocal done
            done += count
            progress.update(task, advance=count)
            if done >= total:
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
    _print_model(doc["model"], out)
    _print_measures(result, out)
    _print_recommendation(doc["recommendation"], out)
    timings = result.timings
    cached = " (from cache)" if result.features_from_cache else ""
    out.print(Text(
        f"Time: features {timings.get('features_s', 0):.1f} s{cached}, probes "
        f"{timings.get('probes_s', 0):.1f} s, total {timings.get('total_s', 0):.1f} s",
        style="dim"))


def _print_dataset(dataset: dict[str, Any], out: Console) -> None:
    source = "ImageFolder" if dataset["source"] == "folder" else f"CSV {dataset['source']}"
    out.print(Text.assemble(
        ("Dataset  ", "bold"), f"{dataset['root']} ({source}): {dataset['num_classes']} classes, "
        f"{dataset['num_images']} images, {dataset['num_skipped']} skipped"))
    counts = ", ".join(f"{name} {n}" for name, n in dataset["class_counts"].items())
    out.print(Text(f"         {counts}", style="dim"), overflow="fold")
    for warning in dataset["warnings"]:
        out.print(Text(f"         warning: {warning}", style="yellow"))
    skipped = dataset["skipped"]
    for item in skipped[:MAX_SKIPPED_SHOWN]:
        out.print(Text(f"         skipped {item['path']}: {item['reason']}", style="yellow"))
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
    table = Table(title="Measures by block", title_justify="left",
                  caption="top row: nearest the input; bottom row: penultimate features",
                  caption_justify="left")
    table.add_column("block")
    table.add_column("dim", justify="right")
    for p in per_block:
        arrow = "↑" if registry[p.name].higher_is_better else "↓"
        table.add_column(f"{registry[p.name].label} {arrow}", justify="right")
    for i, block in enumerate(result.blocks):
        cells = [_fmt(p.values[i]) for p in per_block]
        table.add_row(block, str(result.dims[i]), *cells)
    out.print()
    out.print(table)
    for p in (p for p in result.probes if not p.per_block):
        probe = registry[p.name]
        out.print(Text.assemble((f"{probe.label}", "bold"), " (source head): ",
                                _fmt(p.summary) or "unavailable"))
    for p in result.probes:
        probe = registry[p.name]
        out.print(Text(f"  {probe.label}: {probe.meaning} ({probe.reference})", style="dim"),
                  overflow="fold")
        for block, error in zip(result.blocks, p.errors):
            if error:
                out.print(Text(f"  {probe.label} unavailable at {block}: {error}",
                               style="yellow"), overflow="fold")


def _print_recommendation(rec: dict[str, Any], out: Console) -> None:
    hp = rec["hyperparameters"]
    table = Table(title="Recommended fine-tuning settings", title_justify="left")
    table.add_column("setting", no_wrap=True)
    for column in ("value", "search range", "confidence"):
        table.add_column(column, overflow="fold")
    table.add_column("decided by", no_wrap=True)
    defaults = set(rec.get("defaults_used", ()))
    for name, detail in rec["details"].items():
        rule = detail["reasons"][-1] if detail["reasons"] else ""
        table.add_row(name, _fmt_value(detail["value"]), _fmt_range(detail["range"]),
                      detail["confidence"], rule + (" (default)" if name in defaults else ""))
    out.print()
    out.print(table)
    groups = Table(title="Learning-rate groups", title_justify="left")
    for column in ("group", "lr", "modules"):
        groups.add_column(column, overflow="fold")
    for group in hp["lr_groups"]:
        groups.add_row(group["name"], _fmt_value(group["lr"]), ", ".join(group["modules"]))
    out.print(groups)
    l2 = f"L2 (beta {_fmt_value(hp['l2_weight'])})"
    if hp["l2sp_weight"] > 0 and hp["l2sp_modules"]:
        out.print(Text(f"L2-SP (alpha {_fmt_value(hp['l2sp_weight'])}) on: "
                       f"{', '.join(hp['l2sp_modules'])}; {l2} on every other weight, "
                       "BatchNorm excluded."), overflow="fold")
    else:
        out.print(Text(f"L2-SP off; {l2} on every weight, BatchNorm excluded."))
    out.print()
    out.print(Text("Why", style="bold"))
    for reason in rec["reasons"]:
        out.print(Text.assemble((f"  [{reason['rule']}] ", "cyan"), reason["text"]),
                  overflow="fold")
        out.print(Text(f"      source: {reason['source']}", style="dim"), overflow="fold")
    out.print(Text("  (the JSON carries every rule evaluated, fired or not, in "
                   "recommendation.trace)", style="dim"))


def _fmt(measurement) -> str:
    if measurement is None:
        return "n/a"
    text = _fmt_value(measurement.value)
    if measurement.spread is not None:
        text += f" ± {_fmt_value(measurement.spread)}"
    return text


def _fmt_value(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    if value == 0 or not math.isfinite(value):
        return str(value)
    if abs(value) < 1e-3 or abs(value) >= 1e4:
        return f"{value:.1e}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.3f}".rstrip("0").rstrip(".")


def _fmt_range(span: Any) -> str:
    if isinstance(span, (list, tuple)) and len(span) == 2 and span[0] == span[1]:
        return _fmt_value(span[0])
    if isinstance(span, (list, tuple)) and len(span) == 2:
        return f"{_fmt_value(span[0])} – {_fmt_value(span[1])}"
    if isinstance(span, (list, tuple)):
        return ", ".join(_fmt_value(v) for v in span)
    return str(span)
