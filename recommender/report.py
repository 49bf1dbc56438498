"""The terminal views: report, progress, errors. The only module that imports rich."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

import probes
from probes import Measurement
from recommender.errors import NbtlError

if TYPE_CHECKING:
    from recommender.pipeline import Result

MAX_SKIPPED_SHOWN = 10
_CONFIDENCE_STYLE = {"high": "green", "medium": "yellow", "low": "red"}


def console(stderr: bool, quiet: bool = False) -> Console:
    return Console(stderr=stderr, quiet=quiet, highlight=False)


def print_error(exc: NbtlError) -> None:
    err = console(stderr=True)
    err.print(Text(f"nbtl-recommend: error: {exc.message}", style="bold red"))
    if exc.hint:
        err.print(Text(exc.hint))


def stage_printer(err: Console) -> Callable[[str], None]:
    return lambda text: err.print(Text(f"· {text}", style="dim"))


def progress_factory(err: Console) -> Callable[[str, int, str], Callable[[int], None]]:
    """``start(label, total, unit)`` draws a progress bar on ``err`` and returns ``advance(n)``;
    the bar goes away when ``total`` is reached."""

    def start(label: str, total: int, unit: str) -> Callable[[int], None]:
        progress = Progress(
            TextColumn(f"  {label}"), BarColumn(), MofNCompleteColumn(),
            TextColumn(unit), TimeRemainingColumn(), console=err, transient=True,
        )
        task = progress.add_task(label, total=total)
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
    scratch = f", scratch training {timings['scratch_s']:.1f} s" if "scratch_s" in timings else ""
    out.print(Text(
        f"Time: features {timings.get('features_s', 0):.1f} s{cached}, probes "
        f"{timings.get('probes_s', 0):.1f} s{scratch}, total {timings.get('total_s', 0):.1f} s",
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
