"""The terminal views: report, progress, errors. The only module that imports rich."""

from __future__ import annotations

import io
import math
import re
import shlex
import sys
import unicodedata
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

import probes
from heuristics.baseline import BINARY_LR
from probes import Measurement
from recommender.config import VALIDATE_MEASURED
from recommender.data.splits import SPLIT_FRACTIONS
from recommender.errors import NbtlError

if TYPE_CHECKING:
    from recommender.pipeline import Result
    from recommender.ranking import Ranking

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
    """A console on stdout or stderr. A pipe or file gets text without hard wraps (a long
    line stays one line) and without the spaces rich pads lines with; NO_COLOR is honoured
    by rich itself."""
    terminal = Console(stderr=stderr, quiet=quiet, highlight=False)
    if terminal.is_terminal:
        return terminal
    stream = sys.stderr if stderr else sys.stdout
    return Console(file=_Unpadded(stream), quiet=quiet, highlight=False, soft_wrap=True)


class _Unpadded(io.TextIOBase):
    """Writes whole lines to ``stream`` with their trailing spaces removed (rich pads table
    cells and titles to the column width)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._line = ""

    @property
    def encoding(self) -> str:  # what rich checks to choose box characters
        return getattr(self._stream, "encoding", None) or "utf-8"

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        *lines, self._line = (self._line + text).split("\n")
        for line in lines:
            self._stream.write(line.rstrip(" ") + "\n")
        return len(text)

    def flush(self) -> None:
        if self._line:
            self._stream.write(self._line)
            self._line = ""
        self._stream.flush()


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
    them in one display (epochs above batches). Not on a pipe or a file: a bar there is only
    blank lines between the stage lines."""
    if not err.is_terminal:
        return lambda _label, _total, _unit: lambda _count: None
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
    """The registered measures, one block each: a table's narrow columns would break words
    when the output is a pipe or a narrow terminal."""
    for probe in probes.list_probes():
        direction = "higher is better" if probe.higher_is_better else "lower is better"
        out.print(Text.assemble((probe.name, "bold"), f" ({probe.label}, {direction}; needs "
                                f"{', '.join(probe.needs)})"))
        out.print(Text(f"  {probe.meaning}"))
        out.print(Text(f"  {probe.reference}", style="dim"))


def print_report(result: Result, out: Console, *, explain: bool = False) -> None:
    """The answer first (verdict, what to change and why, settings), then the evidence
    (dataset, model, measures, validation); definitions and sources only with ``explain``."""
    doc = result.to_dict()
    rec = doc["recommendation"]
    out.print()
    out.rule("[bold]nbtl · fine-tuning recommendation")
    _print_verdict(result, doc, out)
    sources = _print_settings(rec, out, explain)
    out.print()
    _print_dataset(doc["dataset"], out)
    if result.analysed == "train":
        out.print(Text("         (the training split: the probes and the recommendation never "
                       "see the validation and test images)", style="dim"))
    _print_model(doc["model"], out)
    _print_measures(result, out, explain)
    if result.validation is not None:
        _print_validation(doc["validation"], result.validation, result.timings, out)
    if explain:
        _print_sources(sources, out)
    timings = result.timings
    cached = " (from cache)" if result.features_from_cache else ""
    scratch = f", scratch training {timings['scratch_s']:.1f} s" if "scratch_s" in timings else ""
    validation = (f", fine-tuning {_minutes(timings['validation_s'])}"
                  if "validation_s" in timings else "")
    more = "" if explain else " · more: --explain"
    analysis = ("features and probes from the cache" if result.probes_from_cache else
                f"features {timings.get('features_s', 0):.1f} s{cached}, probes "
                f"{timings.get('probes_s', 0):.1f} s")
    out.print(Text(
        f"Time: {analysis}{scratch}{validation}, total "
        f"{_minutes(timings.get('total_s', 0))}{more}", style="dim"))


_RANK_COLUMNS = (("logme", "LogME"), ("linear_probe", "linear\nprobe"), ("knn", "kNN"),
                 ("h_score", "H-score"))


def print_ranking(ranking: Ranking, out: Console, *, explain: bool = False) -> None:
    """Several models: the ranking table (criterion marked, ties said), then the top model's
    report (every loaded model's with ``--recommend-all``)."""
    from recommender.ranking import TIE_RULE, WHY

    rows = [c.to_dict() for c in ranking.candidates]
    out.print()
    out.rule("[bold]nbtl · ranking candidate backbones")
    out.print(Text.assemble(
        ("Ranked by ", "bold"), (ranking.criterion, "bold"),
        " at the penultimate block (higher is better; change with --rank-by). ",
        _first_sentence(WHY[ranking.criterion]) if not explain else WHY[ranking.criterion]))
    table = Table(box=None, pad_edge=False, padding=(0, 1, 0, 0))
    table.add_column("rank", justify="right", no_wrap=True)
    table.add_column("model", no_wrap=True)
    for key, header in _RANK_COLUMNS:
        table.add_column(header + (" *" if key == ranking.criterion else ""), justify="right",
                         no_wrap=True, style="bold" if key == ranking.criterion else "")
    table.add_column("params\n(M)", justify="right", no_wrap=True)
    table.add_column("images/s", justify="right", no_wrap=True)
    for row in rows:
        cells = []
        for key, _ in _RANK_COLUMNS:
            value, spread = row[key], row[f"{key}_spread"]
            cells.append(_sig3(value) + (f" ±{_sig3(spread)}" if spread is not None else "")
                         if value is not None else "-")
        rank = "-" if row["rank"] is None else f"{row['rank']}" + ("=" * row["tie_with_previous"])
        speed = ("-" if row["forward_cost"] is None else "cached" if row["images_per_s"] is None
                 else f"{row['images_per_s']:.1f}")
        table.add_row(rank, printable(row["model"]), *cells,
                      "-" if row["params_m"] is None else f"{row['params_m']:.2f}", speed)
    out.print(table)
    notes = ["* the ranking criterion", "± spread over cross-validation folds",
             "images/s: feature extraction measured this run (pre-trained and random-init "
             "network, every block; 'cached': features read from the cache)"]
    out.print(Text(" · ".join(notes), style="dim"))
    for a, b in ranking.ties():
        out.print(Text(f"{printable(a)} and {printable(b)} tie on {ranking.criterion} "
                       f"({TIE_RULE}): the order between them means little.", style="yellow"))
    for row in rows:
        if row["error"]:
            out.print(Text(f"{printable(row['model'])} not ranked: {printable(row['error'])}",
                           style="red"))
    chosen = ranking.recommended
    which = "every model" if ranking.recommend_all else f"the top model, {ranking.top.model}"
    out.print(Text(f"Below: the recommendation for {which}"
                   + ("" if ranking.recommend_all else " (all of them: --recommend-all)")
                   + ".", style="dim"))
    for candidate in chosen:
        print_report(candidate.result, out, explain=explain)


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
        "and --validate-size.", style="dim"))
    if validation.worker:
        search = val["search"]
        out.print(Text(f"  Search worker: the study {search['study']} has "
                       f"{len(search['trials'])} finished trials; the main process (started "
                       "without --role worker) trains the reference settings, confirms the "
                       "best and reports.", style="dim"))
        _print_search(search, out)
        return
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
    _print_moved(val, out)
    diff = val["difference"]
    spread = diff["spread"]
    verdict = _verdict(diff["recommended_minus_default"], spread)
    out.print(Text.assemble(
        ("  recommended - default: ", "bold"),
        (f"{100 * diff['recommended_minus_default']:+.1f} points", "bold"),
        (f" ± {100 * spread:.1f} (paired over seeds)" if spread is not None else
         " (one seed: no spread)", ""), (f" · {verdict}", "dim")))
    if "best_found_minus_recommended" in diff:
        s = diff["best_found_spread"]
        out.print(Text.assemble(
            ("  best found - recommended: ", "bold"),
            (f"{100 * diff['best_found_minus_recommended']:+.1f} points", "bold"),
            (f" ± {100 * s:.1f}" if s is not None else "", "")))
    if val.get("search"):
        _print_search(val["search"], out)


def _print_search(search: dict[str, Any], out: Console) -> None:
    pruned = sum(t["state"] == "pruned" for t in search["trials"])
    how = f"{search['sampler']}; scored on {search['objective']}"
    if search.get("pruner"):
        how += f"; {pruned} pruned by successive halving"
    trials = Table(title=f"Search: {len(search['trials'])} trials ({how})",
                   title_justify="left")
    for column in ("trial", "settings tried", "validation", "test"):
        trials.add_column(column, overflow="fold",
                          justify="right" if column in ("validation", "test") else "left")
    for trial in search["trials"]:
        mark = " *" if trial["number"] == search["best_trial"] else ""
        label = "recommended" if trial is search["trials"][0] else _describe(
            trial["overrides"])
        if trial["state"] == "pruned":
            test = f"pruned at epoch {trial['epochs']}"
        else:
            test = _pct(trial["test_accuracy"])
        trials.add_row(f"{trial['number']}{mark}", label, _pct(trial["val_accuracy"]), test)
    out.print(trials)
    if search["storage"] is None:
        kept = ("Without a cache the trials were kept in memory only; give --search-db "
                "FILE to keep them.")
    else:
        kept = (f"Resumable: the trials are stored in {printable(search['storage'])} (study "
                f"{search['study']}); rerun the same command to add trials (raise --search) "
                "or reuse them, or start workers on it (--role worker).")
    out.print(Text(f"  * best by validation accuracy. {kept}", style="dim"))


def _print_moved(val: dict[str, Any], out: Console) -> None:
    """Per block, CKA between the pre-trained and each setting's fine-tuned features of the
    test images, beside what the recommendation does with the block."""
    measured = {name: s["block_cka"] for name, s in val["settings"].items() if s["block_cka"]}
    if not measured or not val.get("blocks"):
        return
    columns = [("block", val["blocks"])]
    columns += [(SETTING_LABELS.get(name, name).replace(" ", "\n"), [_sig3(v) for v in values])
                for name, values in measured.items()]
    if val.get("recommended_treatment"):
        columns.append(("recommended\ndoes", val["recommended_treatment"]))
    out.print(Text("Which blocks fine-tuning moved", style="bold"),
                   Text("(CKA of each block's features of the test images, pre-trained vs "
                        "fine-tuned, mean over seeds; 1 = unchanged, lower = moved more)",
                        style="dim"))
    _print_block_table(columns, out)
    sentence = moved_sentence(val)
    if sentence:
        out.print(Text(f"  {sentence}", style="dim"))


def moved_sentence(val: dict[str, Any]) -> str:
    """Which blocks the default moved most, and whether the recommendation's re-initialised
    and lowest-rate blocks are among them."""
    default = val["settings"].get("default", {}).get("block_cka")
    if not default or any(v is None for v in default):
        return ""
    blocks, treatment = val["blocks"], val.get("recommended_treatment") or []
    order = sorted(range(len(blocks)), key=lambda i: default[i])  # most moved first
    ranks = {blocks[i]: r + 1 for r, i in enumerate(order)}
    text = (f"The binary default moved {blocks[order[0]]} most (CKA {_sig3(default[order[0]])})"
            f" and {blocks[order[-1]]} least ({_sig3(default[order[-1]])}).")
    reinit = [b for b, t in zip(blocks, treatment) if t == "re-init"]
    if reinit:
        text += (f" The recommendation re-initialises {', '.join(reinit)}: ranked "
                 f"{', '.join(str(ranks[b]) for b in reinit)} of {len(blocks)} by how far "
                 "the default moved them (1 = most).")
    rates = {b: float(t.split()[1]) for b, t in zip(blocks, treatment) if t.startswith("lr ")}
    if rates and len(set(rates.values())) > 1:
        low = min(rates.values())
        slow = [b for b, r in rates.items() if r == low]
        text += (f" Its lowest rate ({low:.3g}) trains {', '.join(slow)}: ranked "
                 f"{', '.join(str(ranks[b]) for b in slow)}.")
    return text


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
    out.print(Text(f"         {printable(counts)}", style="dim"))
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


def _print_measures(result: Result, out: Console, explain: bool) -> None:
    """Blocks as rows and measures as columns, 3 significant figures; when the columns do not
    fit the console's width they continue in a second table, so no number is cut."""
    registry = {p.name: p for p in probes.list_probes()}
    per_block = [p for p in result.probes if p.per_block]
    units = []  # (headers, cells per block): a measure, and its fold spread beside it
    for p in per_block:
        label = _label(registry[p.name])  # words stacked, the arrow kept with the last
        columns = [(label.replace(" ", "\n", label.count(" ") - 1),
                    [_sig3(m.value) if m else "n/a" for m in p.values])]
        if any(m is not None and m.spread is not None for m in p.values):
            columns.append(("±", [_sig3(m.spread) if m and m.spread is not None else ""
                                  for m in p.values]))
        units.append(columns)
    if result.consecutive_cka:  # no direction: where the representation changes
        units.append([("CKA\nbelow", [_sig3(v) if v is not None else "" for v in
                                        result.consecutive_cka])])
    out.print()
    out.print(Text("Measures by block", style="bold"),
              Text("(rows bottom-up: input → penultimate features)", style="dim"))
    fixed = [("block", list(result.blocks)), ("dim", [str(d) for d in result.dims])]
    chunk: list[tuple[str, list[str]]] = []
    for unit in units:
        if chunk and _width([*fixed, *chunk, *unit]) > out.width:
            _print_block_table([*fixed, *chunk], out)
            chunk = []
        chunk.extend(unit)
    if chunk:
        _print_block_table([*fixed, *chunk], out)
    out.print(Text("↑ higher is better · ↓ lower is better · ± spread over cross-validation "
                   "folds · CKA below: similarity (debiased CKA) of the block's features to "
                   "the block's below", style="dim"))
    twin, images = result.random_init_images, len(result.dataset.samples)
    if twin is not None and twin < images:
        out.print(Text(f"The random-init twin saw {twin} of the {images} images (a fixed, "
                       "seeded subset): the pre-training gain and CKA rand compare both "
                       "networks on those, and BN shift measures the target's BatchNorm "
                       "statistics on them.", style="dim"))
    note = subset_note(result.probes, registry)
    if note:
        out.print(Text(note, style="dim"))
    once = [p for p in result.probes if not p.per_block]
    if once:
        cells = [f"{_label(registry[p.name])} {_fmt(p.summary)}" for p in once]
        out.print(Text.assemble(("Source head ", "bold"), "(whole model): ", " · ".join(cells)))
    if result.scratch is not None:
        s = result.scratch
        out.print(Text.assemble(
            ("Scratch ", "bold"),
            f"accuracy {_fmt(Measurement(s.accuracy, s.spread))}: the network trained "
            f"from random initialisation for {s.epochs} epoch{'s' * (s.epochs != 1)} at "
            f"{s.image_size} px on "
            f"{s.n_train} images, tested on {s.n_test} held out (a short budget: a lower "
            "bound on full training)"))
    if explain:
        out.print(Text("What they mean", style="bold"))
    for p in result.probes:
        probe = registry[p.name]
        if explain:
            out.print(Text(f"  {_label(probe)}: {probe.meaning} ({probe.reference})",
                           style="dim"))
        reasons = {error for error in p.errors if error}
        for error in sorted(reasons):  # always: they say why a cell reads n/a
            where = [b for b, e in zip(result.blocks, p.errors) if e == error] \
                if p.per_block else []
            at = f" at {', '.join(where)}" if where else ""
            out.print(Text(f"  {_label(probe)} unavailable{at}: "
                           f"{error.removeprefix('unavailable: ')}", style="yellow"))


def subset_note(results, registry) -> str:
    """One line naming the probes computed on a subset of the images (their
    ``max_samples``), e.g. "kNN acc and probe acc computed on a stratified subset of 20,000
    of 100,000 images (seed 0)"; empty when every probe saw every image."""
    by_size: dict[tuple[int, int | None], list[str]] = {}
    for p in results:
        used = {n for n in p.n_used if n is not None}
        for n in sorted(used):
            by_size.setdefault((n, p.n_samples), []).append(registry[p.name].label)
    parts = []
    for (n, total), labels in sorted(by_size.items()):
        names = labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} and {labels[-1]}"
        of = f" of {total:,}" if total else ""
        parts.append(f"{names} computed on a stratified subset of {n:,}{of} images "
                     f"(seed {probes.SUBSAMPLE_SEED})")
    return "; ".join(parts)


def _width(columns: list[tuple[str, list[str]]]) -> int:
    """Characters a block table of these columns takes: each column's widest line, plus one
    space after every column."""
    return sum(max(len(line) for text in (header, *cells) for line in text.split("\n")) + 1
               for header, cells in columns)


def _print_block_table(columns: list[tuple[str, list[str]]], out: Console) -> None:
    table = Table(box=None, pad_edge=False, padding=(0, 1, 0, 0))
    for i, (header, _) in enumerate(columns):
        table.add_column(header, justify="left" if i == 0 else "right", no_wrap=True,
                         style="dim" if header == "±" else "")
    for row in zip(*(cells for _, cells in columns)):
        table.add_row(*row)
    out.print(table)


def _sig3(value: float | None) -> str:
    """3 significant figures, exponents written short (``1.2e3``), for table cells."""
    if value is None or not math.isfinite(value):
        return "n/a"
    text = f"{value:.3g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent)}"
    return text


def _label(probe) -> str:
    return f"{probe.label} {'↑' if probe.higher_is_better else '↓'}"


# The settings the verdict names: the non-binary choices of the paper.
KEY_SETTINGS = ("reinit_top_blocks", "split_block", "base_lr", "l2sp_weight", "lp_ft")
_CONFIDENCE_ORDER = ("low", "medium", "high")


def _print_verdict(result: Result, doc: dict[str, Any], out: Console) -> None:
    """How well the features fit, what to change from the binary default and why, how sure,
    and how to check: the first screen."""
    rec = doc["recommendation"]
    hp, details = rec["hyperparameters"], rec["details"]
    out.print(Text.assemble(("Fit  ", "bold"), fit_sentence(doc)))
    ladder = ladder_sentence(doc)
    if ladder is not None:
        head, _, rest = ladder.partition(": ")
        out.print(Text.assemble((f"{head}:", "bold"), " ", printable(rest)))
    out.print(Text(f"Change from the binary default (every layer transferred, one learning rate "
                   f"{_fmt_value(BINARY_LR)}, L2 toward zero):", style="bold"))
    changes = _changes(hp, result.blocks, BINARY_LR)
    if not changes:
        out.print(Text("  • none: every layer transferred, one learning rate, L2 toward zero"))
    for change, setting in changes:
        detail = details.get(setting, {})
        user = detail.get("set_by") == "override"
        why = "set by you (--set)" if user else _first_sentence(detail.get("reason", ""))
        out.print(Text.assemble("  • ", (change, "bold"), ": ",
                                (why, "magenta" if user else "")))
    levels = {name: details[name]["confidence"] for name in KEY_SETTINGS if name in details}
    ranked = [c for c in levels.values() if c in _CONFIDENCE_ORDER]
    overall = min(ranked, key=_CONFIDENCE_ORDER.index) if ranked else "user"
    weakest = [name for name, c in levels.items() if c == overall]
    line = Text.assemble(("Confidence  ", "bold"),
                         (overall, _CONFIDENCE_STYLE.get(overall, "magenta")))
    if overall != "user":
        line.append(f" ({', '.join(weakest)})")
    if result.validation is not None:
        line.append(". The validation below fine-tunes it against the default.")
    elif overall == "low":
        line.append(". Check it against the default on your data: ")
        line.append(printable(_validate_command(result)), style="bold")
    out.print(line)
    for warning in rec.get("warnings", []):
        out.print(Text(f"Warning  {printable(warning['text'])}", style="yellow"))


def _first_sentence(text: str) -> str:
    """A reason's first sentence: the why; the rest restates the change (``--explain`` has it
    all). A sentence ends at a full stop before a capital letter ("et al. 2018" goes on)."""
    return re.split(r"(?<=\.)\s+(?=[A-Z])", text, maxsplit=1)[0]


def ladder_sentence(doc: Mapping[str, Any]) -> str | None:
    """The fitted ladder's verdict for the planned budget, from a result's JSON document (the
    terminal report and the HTML page say the same); None without a ladder."""
    ladder = doc["recommendation"].get("ladder")
    if not ladder:
        return None
    budget = ladder["budget"]
    own = budget.get("epochs_from", "budget") == "rule table"
    training = (f"the recommendation's own training, {budget['epochs']} epochs at "
                f"{budget['image_size']} px" if own else
                f"the training you plan, {budget['epochs']} epochs at {budget['image_size']} px")
    where = (f"beyond the benchmark's budgets; its nearest: {budget['benchmark_epochs']} epochs "
             f"at {budget['benchmark_image_size']} px" if budget.get("extrapolated") else
             f"the benchmark's '{budget['benchmark_budget']}' budget")
    hint = (" For another training, give --train-epochs and --train-size." if own else "")
    if ladder["keep_default"]:
        gap = ladder.get("gap") or {}
        fit = (f" (fit gap {gap['value']:.2f})" if isinstance(gap.get("value"), (int, float))
               else "")
        return (f"Keep the binary default: for {training} ({where}), the meta-benchmark found "
                f"no change that gains beyond noise for features that fit like yours{fit}."
                + hint)
    # Rung 0 is the binary default: the rungs that change something are 1 to rungs - 1.
    return (f"Advice: rung {ladder['rung']} of {ladder['rungs'] - 1} of the fitted ladder "
            f"({ladder['setting']}), for {training} ({where})." + hint)


def fit_sentence(doc: Mapping[str, Any]) -> str:
    """The fit in words and the key numbers, from a result's JSON document (the terminal
    report and the HTML page say the same); the words follow the thresholds the rules use."""
    from heuristics.rules.lpft import LP_FT_MIN_PROBE
    from heuristics.rules.regularisation import FIT_MIN_PRETRAINING_GAIN

    summary = _summaries(doc["measures"]["probes"])
    probe, gain = summary.get("linear_probe_accuracy"), summary.get("pretraining_gain")
    confidence = summary.get("source_confidence")
    chance = 1 / doc["dataset"]["num_classes"]
    numbers = []
    if probe is not None:
        top = doc["measures"]["blocks"][-1]
        numbers.append(f"a linear probe on the top block ({top}) reaches "
                       f"{_fmt(probe)} accuracy (chance {chance:.2g})")
    if gain is not None:
        numbers.append(f"pre-training adds {gain.value:+.2f} over random-init features")
    if confidence is not None:
        numbers.append(f"the ImageNet head's mean confidence is {confidence.value:.2f}")
    if probe is None or gain is None:
        words = "The fit could not be measured fully"
    else:
        strong = (probe.value - chance) / (1 - chance) >= LP_FT_MIN_PROBE
        helps = gain.value >= FIT_MIN_PRETRAINING_GAIN
        words = ("The pre-trained features fit well" if strong and helps else
                 "The pre-trained features fit partly: pre-training helps, but the features "
                 "must still change" if helps else
                 "The pre-trained features fit poorly: pre-training adds little")
    return f"{words} — {'; '.join(numbers)}." if numbers else f"{words}."


def _summaries(documented: Mapping[str, Any]) -> dict[str, Measurement]:
    """Each probe's value at the top block (or its one value) with its spread, as the
    document's ``measures.probes`` has them; a probe without a value is left out."""
    out = {}
    for name, probe in documented.items():
        value, spread = probe["values"][-1], probe["spread"][-1]
        if value is not None:
            out[name] = Measurement(value, spread)
    return out


def _changes(hp: dict[str, Any], blocks: tuple[str, ...], default_lr: float
             ) -> list[tuple[str, str]]:
    """(what to change, the setting whose reason says why), for each departure from the
    binary default."""
    changes = []
    n = hp["reinit_top_blocks"]
    if n:
        changes.append((f"re-initialise the top {n} block{'s' * (n != 1)} "
                        f"({', '.join(blocks[-n:])})", "reinit_top_blocks"))
    rates = {g["name"]: g["lr"] for g in hp["lr_groups"]}
    if len(set(rates.values())) > 1:
        listed = ", ".join(f"{name} {_fmt_value(lr)}" for name, lr in rates.items())
        changes.append((f"learning rates per group: {listed}", "lower_lr"))
    elif hp["base_lr"] != default_lr:
        changes.append((f"learning rate {_fmt_value(hp['base_lr'])} for every group",
                        "base_lr"))
    if hp["l2sp_weight"] > 0:
        lower = [b for g in hp["lr_groups"] if g["penalty"] == "l2sp" for b in g.get("blocks", ())]
        changes.append((f"L2-SP {_fmt_value(hp['l2sp_weight'])} toward the pre-trained weights"
                        f"{' on ' + ', '.join(lower) if lower else ''}, L2 "
                        f"{_fmt_value(hp['l2_weight'])} on the rest", "l2sp_weight"))
    if hp["lp_ft"]:
        changes.append((f"train the head alone for {hp['lp_epochs']} epoch(s) first (LP-FT)",
                        "lp_ft"))
    return changes


def _validate_command(result: Result) -> str:
    """The command that checks this recommendation: the same inputs with --validate."""
    options = result.options
    parts = ["nbtl-recommend", result.dataset.root]
    for flag, value in (("--labels", options.labels_csv), ("--model", options.model),
                        ("--weights", options.weights), ("--image-size", options.image_size),
                        ("--max-per-class", options.max_per_class)):
        if value is not None:
            parts += [flag, value]
    if options.seed:
        parts += ["--seed", options.seed]
    for name, value in options.overrides.items():
        parts += ["--set", f"{name}={_fmt_value(value)}"]
    return shlex.join([*map(str, parts), "--validate"])


def _print_settings(rec: dict[str, Any], out: Console, explain: bool) -> list[str]:
    """The settings table (the full reasons and the sources only with ``explain``); returns
    the sources in citation order."""
    hp = rec["hyperparameters"]
    out.print()
    out.print(Text("Recommended fine-tuning settings", style="bold"),
              Text("(the deciding rule's reasoning: --explain and the JSON)", style="dim"))
    rows = []
    sources: list[str] = []
    for name, detail in rec["details"].items():
        user = detail.get("set_by") == "override"
        source = detail.get("source") or ""
        if source and source not in sources and not user:
            sources.append(source)
        cite = f" [{sources.index(source) + 1}]" if explain and source in sources else ""
        rows.append((
            Text(name, style="magenta" if user else ""), Text(_fmt_value(detail["value"])),
            Text(_fmt_range(detail["range"])),
            Text("set by you" if user else detail["confidence"],
                 style="magenta" if user else _CONFIDENCE_STYLE.get(detail["confidence"], "")),
            Text.assemble((detail.get("set_by", ""), "dim"), (cite, "cyan"))))
    headers = ("setting", "value", "search range", "conf.", "rule")
    # The rule column only where it fits: on a narrow console --explain and the JSON name it.
    widths = [max(len(h), *(len(row[i].plain) for row in rows)) + 1
              for i, h in enumerate(headers)]
    shown = len(headers) if sum(widths) <= out.width else len(headers) - 1
    table = Table(box=None, pad_edge=False, padding=(0, 1, 0, 0))
    for column in headers[:shown]:
        table.add_column(column, no_wrap=column != "search range")
    for row in rows:
        table.add_row(*row[:shown])
    out.print(table)
    if rec.get("overrides"):
        out.print(Text("  Settings marked 'set by you' come from --set; the settings that "
                       "depend on them followed your value.", style="magenta"))
    groups = []
    for group in hp["lr_groups"]:
        penalty = {"l2sp": f"L2-SP {_fmt_value(hp['l2sp_weight'])}",
                   "l2": f"L2 {_fmt_value(hp['l2_weight'])}"}.get(group["penalty"],
                                                                   group["penalty"])
        where = ("all other parameters" if group.get("rest")
                 else ", ".join(group.get("blocks", ())) or ", ".join(group["modules"]))
        if explain and group["modules"]:
            where += f"; modules {', '.join(group['modules'])}"
        groups.append(f"{group['name']} {_fmt_value(group['lr'])} ({penalty}; {where})")
    excluded = " and ".join(hp.get("exclude_from_decay", ())) or "nothing"
    lp_ft = (f"; LP-FT: the new layers alone for {hp['lp_epochs']} epoch(s), then everything, "
             f"{hp['epochs']} epochs in all" if hp.get("lp_ft") else "")
    out.print(Text.assemble(("Learning-rate groups ", "bold"), " · ".join(groups),
                            (f"; {excluded} under neither penalty{lp_ft}", "dim")))
    if explain:
        out.print(Text("Why, setting by setting", style="bold"))
        for name, detail in rec["details"].items():
            source = detail.get("source") or ""
            cite = f" [{sources.index(source) + 1}]" if source in sources else ""
            out.print(Text.assemble(("  ", ""), (name, "bold"), ": ",
                                    (detail.get("reason", ""), "dim"), (cite, "cyan")))
    return sources


def _print_sources(sources: list[str], out: Console) -> None:
    out.print()
    out.print(Text("Sources", style="bold"))
    for number, source in enumerate(sources, 1):
        out.print(Text.assemble((f"  [{number}] ", "cyan"), (source, "dim")))
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
