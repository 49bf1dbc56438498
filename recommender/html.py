"""The HTML report (``--html``): one self-contained page made from the JSON document.

The page says what the terminal report says (the verdict, the settings with their ranges,
confidence, reasons and sources, the dataset, the model) and adds the figures of
:mod:`recommender.plots` inline as SVG: the per-block profile, the learning-rate groups and,
when the run had them, the validation and the search. It has no script, loads nothing (a
Content-Security-Policy forbids any fetch) and opens from disk. Every text that comes from the
dataset or the user is escaped.

A saved document renders the same page: ``python -m recommender.html result.json out.html``.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from heuristics.baseline import BINARY_LR
from recommender import plots
from recommender.errors import NbtlError, UsageError
from recommender.report import (
    KEY_SETTINGS,
    _changes,
    _describe,
    _first_sentence,
    _fmt_range,
    _fmt_value,
    _verdict,
    fit_sentence,
    ladder_sentence,
)

# Section ids, in page order; "search" and "ranking" appear only when the document has them.
SECTIONS = ("verdict", "profile", "groups", "settings", "measures", "validation", "search",
            "ranking", "dataset", "model")
MAX_SKIPPED_LISTED = 500  # a page, not a log: the JSON lists them all
_CONFIDENCE_ORDER = ("low", "medium", "high")
# No fetch of any kind: a page that tried would be blocked, not leak where it was opened.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
_CSS = """
body { font-family: "DejaVu Sans", Verdana, sans-serif; margin: 1.5em auto; max-width: 72em;
       padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.5em; border-bottom: 2px solid #2ca02c; padding-bottom: .2em; }
h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: .5em 0; font-size: .88em; }
th, td { border: 1px solid #ddd; padding: .2em .5em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.reason { min-width: 24em; } td.source { font-size: .85em; color: #555; min-width: 14em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.low { color: #b22222; font-weight: bold; } .medium { color: #b8860b; font-weight: bold; }
.high { color: #228b22; font-weight: bold; } .user { color: #8b008b; font-weight: bold; }
.warning { background: #fff4d6; border-left: 4px solid #e0a800; padding: .3em .6em; }
.note { color: #666; font-size: .9em; }
.verdict { font-size: 1.05em; }
figure { margin: .8em 0; } figure svg { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: .9em; }
"""


def render_html(doc: Mapping[str, Any]) -> str:
    """The page for a result's JSON document (:meth:`recommender.pipeline.Result.to_dict`).

    Raises
    ------
    recommender.errors.UsageError
        matplotlib is not installed (the ``plot`` extra).
    """
    plots.require_matplotlib()
    title = f"nbtl · {doc['dataset']['root']} · {doc['model']['name']}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<h1>nbtl · fine-tuning recommendation</h1>",
        f'<p class="note">{escape(doc["dataset"]["root"])} · {escape(doc["model"]["name"])} · '
        f'JSON schema {escape(str(doc.get("schema_version", "?")))}</p>',
        _verdict_section(doc),
        _profile_section(doc),
        _groups_section(doc),
        _settings_section(doc),
        _measures_section(doc),
        _validation_section(doc),
        _search_section(doc),
        _ranking_section(doc),
        _dataset_section(doc),
        _model_section(doc),
        _timings(doc),
        "</body>",
        "</html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


def write_html(result_or_doc: Any, path: str | Path) -> Path:
    """Write the page for a :class:`~recommender.pipeline.Result` (or its JSON document, e.g.
    read back from ``--json``) to ``path``; returns the path."""
    doc = result_or_doc.to_dict() if hasattr(result_or_doc, "to_dict") else result_or_doc
    path = Path(path)
    path.write_text(render_html(doc), encoding="utf-8")
    return path


def write_profile_plot(result_or_doc: Any, path: str | Path) -> Path:
    """Write the per-block profile figure alone (``--plot``); the suffix (``.png``,
    ``.svg``) chooses the format."""
    plots.require_matplotlib()
    doc = result_or_doc.to_dict() if hasattr(result_or_doc, "to_dict") else result_or_doc
    plots.save(plots.profile_figure(doc), path)
    return Path(path)


# --- sections -------------------------------------------------------------------------------

def _section(name: str, title: str, *body: str) -> str:
    return "\n".join([f'<section id="{name}">', f"<h2>{escape(title)}</h2>", *body,
                      "</section>"])


def _figure(name: str, figure, caption: str) -> str:
    svg = plots.to_svg(figure, salt=name)
    return (f'<figure id="figure-{name}">\n{svg}\n<figcaption>{escape(caption)}</figcaption>'
            "\n</figure>")


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], numeric: set[int] = frozenset(),
           classes: Mapping[int, str] | None = None) -> str:
    """A table of escaped cells; a cell given as ``_Raw`` is already HTML. Columns in
    ``numeric`` are right-aligned; ``classes`` gives other columns a CSS class."""
    classes = {**{i: "num" for i in numeric}, **(classes or {})}
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    lines = [f"<table><thead><tr>{head}</tr></thead><tbody>"]
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            css = f' class="{classes[i]}"' if i in classes else ""
            text = cell if isinstance(cell, _Raw) else escape(str(cell))
            cells.append(f"<td{css}>{text}</td>")
        lines.append(f"<tr>{''.join(cells)}</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


class _Raw(str):
    """A table cell that is HTML already (built from escaped parts)."""


def _verdict_section(doc: Mapping[str, Any]) -> str:
    rec = doc["recommendation"]
    hp, details = rec["hyperparameters"], rec["details"]
    items = []
    for change, setting in _changes(hp, tuple(doc["measures"]["blocks"]), BINARY_LR):
        detail = details.get(setting, {})
        user = detail.get("set_by") == "override"
        why = "set by you (--set)" if user else _first_sentence(detail.get("reason", ""))
        items.append(f"<li><b>{escape(change)}</b>: {escape(why)}</li>")
    if not items:
        items.append("<li>nothing: the binary default is the recommendation</li>")
    levels = {name: details[name]["confidence"] for name in KEY_SETTINGS if name in details}
    ranked = [c for c in levels.values() if c in _CONFIDENCE_ORDER]
    overall = min(ranked, key=_CONFIDENCE_ORDER.index) if ranked else "user"
    weakest = [name for name, c in levels.items() if c == overall]
    confidence = f'<span class="{escape(overall)}">{escape(overall)}</span>'
    if overall != "user":
        confidence += f" ({escape(', '.join(weakest))})"
    check = (" The validation section fine-tunes it against the default." if doc.get("validation")
             else " Check it on your data by adding --validate to the command."
             if overall == "low" else "")
    warnings = [f'<p class="warning">Warning: {escape(w["text"])}</p>'
                for w in rec.get("warnings", [])]
    ladder = ladder_sentence(doc)
    if ladder is not None:
        head, _, rest = ladder.partition(": ")
        ladder = f"<p><b>{escape(head)}:</b> {escape(rest)}</p>"
    return _section(
        "verdict", "Verdict",
        f'<p class="verdict"><b>Fit.</b> {escape(fit_sentence(doc))}</p>',
        *([ladder] if ladder else []),
        f"<p><b>Change from the binary default</b> (every layer transferred, one learning rate "
        f"{escape(_fmt_value(BINARY_LR))}, L2 toward zero):</p>",
        "<ul>", *items, "</ul>",
        f"<p><b>Confidence</b> {confidence}.{escape(check)}</p>", *warnings)


def _settings_section(doc: Mapping[str, Any]) -> str:
    rows = []
    for name, detail in doc["recommendation"]["details"].items():
        user = detail.get("set_by") == "override"
        level = "user" if user else detail["confidence"]
        rows.append((name, _fmt_value(detail["value"]), _fmt_range(detail["range"]),
                     _Raw(f'<span class="{escape(level)}">'
                          f'{escape("set by you" if user else level)}</span>'),
                     detail.get("reason", ""),
                     f"{detail.get('source') or ''} ({detail.get('set_by', '')})"))
    return _section(
        "settings", "Recommended fine-tuning settings",
        _table(("setting", "value", "search range", "confidence", "reason", "source (rule)"),
               rows, classes={4: "reason", 5: "source"}),
        '<p class="note">The search range is what --search explores; "set by you" marks a '
        "--set value, which wins over every rule.</p>")


def _profile_section(doc: Mapping[str, Any]) -> str:
    reinit = plots.reinit_blocks(doc)
    marked = (f"shaded red: the {len(reinit)} re-initialised block(s) recommended "
              f"({', '.join(reinit)})" if reinit else "no block is re-initialised")
    return _section(
        "profile", "Fit by block",
        _figure("profile", plots.profile_figure(doc),
                "Top: linear-probe accuracy (error bars: spread over cross-validation folds), "
                "kNN accuracy and the pre-training gain (probe accuracy on pre-trained minus "
                "random-init features), block by block from the input (left) to the "
                "penultimate features (right). Bottom: LogME and the BatchNorm statistics "
                f"shift (log scale). Bands on top: the learning-rate groups; {marked}."))


def _groups_section(doc: Mapping[str, Any]) -> str:
    hp = doc["recommendation"]["hyperparameters"]
    rows = []
    penalties = {"l2sp": f"L2-SP {_fmt_value(hp['l2sp_weight'])} toward the pre-trained "
                         "weights", "l2": f"L2 {_fmt_value(hp['l2_weight'])} toward zero"}
    for group in hp["lr_groups"]:
        where = "all other parameters" if group.get("rest") else ", ".join(group.get("blocks", ()))
        rows.append((group["name"], _fmt_value(group["lr"]),
                     penalties.get(group["penalty"], group["penalty"]), where or "—",
                     ", ".join(group["modules"]) or "—"))
    return _section(
        "groups", "Learning-rate groups and penalties",
        _figure("groups", plots.groups_figure(doc),
                "Each block (and the classifier) coloured by its learning-rate group, with the "
                "group's peak learning rate and penalty; hatched: new or re-initialised."),
        _table(("group", "lr", "penalty", "blocks", "modules"), rows, {1}))


def _measures_section(doc: Mapping[str, Any]) -> str:
    measures = doc["measures"]
    definitions = measures["definitions"]
    per_block = {n: p for n, p in measures["probes"].items() if p["per_block"]}
    headers = ["block", "dim"]
    for name in per_block:
        headers.append(plots.measure_label(doc, name))
        if any(s is not None for s in per_block[name]["spread"]):
            headers.append("±")
    rows = []
    for i, (block, dim) in enumerate(zip(measures["blocks"], measures["dims"])):
        row = [block, dim]
        for probe in per_block.values():
            row.append(_sig3(probe["values"][i]))
            if any(s is not None for s in probe["spread"]):
                row.append(_sig3(probe["spread"][i]) if probe["spread"][i] is not None else "")
        rows.append(row)
    once = [f"{plots.measure_label(doc, n)} {_sig3(p['values'][0])}"
            for n, p in measures["probes"].items() if not p["per_block"]]
    meanings = [(plots.measure_label(doc, n), d["meaning"], d["reference"])
                for n, d in definitions.items()]
    unavailable = []
    for name, probe in measures["probes"].items():
        for block, error in zip(measures["blocks"] if probe["per_block"] else ["whole model"],
                                probe["errors"]):
            if error:
                label = plots.measure_label(doc, name)
                unavailable.append(f"<li>{escape(label)} at {escape(block)}: "
                                   f"{escape(error)}</li>")
    return _section(
        "measures", "Measures by block",
        _table(headers, rows, set(range(1, len(headers)))),
        '<p class="note">Rows bottom-up: input → penultimate features. ↑ higher is better, '
        "↓ lower is better; ± spread over cross-validation folds.</p>",
        f"<p><b>Source head</b> (whole model): {escape(' · '.join(once))}</p>" if once else "",
        f"<ul>{''.join(unavailable)}</ul>" if unavailable else "",
        "<details><summary>What they mean</summary>",
        _table(("measure", "meaning", "reference"), meanings), "</details>")


def _validation_section(doc: Mapping[str, Any]) -> str:
    val = doc.get("validation")
    if not val:
        return _section(
            "validation", "Validation",
            '<p class="note">Not run. Add --validate to fine-tune the recommendation against '
            "the binary default (same budget and seeds, held-out test accuracy); the page then "
            "shows both per seed and their training curves.</p>")
    split, budget = val["split"], val["budget"]
    rows = []
    for name, setting in val["settings"].items():
        rows.append((plots.SETTING_LABELS.get(name, name), _pct(setting["test_mean"]),
                     _pct(setting["test_spread"]),
                     " ".join(_pct(r["test_accuracy"]) for r in setting["runs"]),
                     _pct(setting["val_mean"])))
    diff = val["difference"]
    spread = diff["spread"]
    verdict = _verdict(diff["recommended_minus_default"], spread)
    spread_text = f" ± {100 * spread:.1f} (paired over seeds)" if spread is not None else \
        " (one seed: no spread)"
    lines = [f"<p><b>recommended − default: {100 * diff['recommended_minus_default']:+.1f} "
             f"points</b>{escape(spread_text)} · {escape(verdict)}</p>"]
    if "best_found_minus_recommended" in diff:
        s = diff["best_found_spread"]
        lines.append(f"<p><b>best found − recommended: "
                     f"{100 * diff['best_found_minus_recommended']:+.1f} points</b>"
                     f"{f' ± {100 * s:.1f}' if s is not None else ''}</p>")
    where = ("Your train/val/test folders" if split["source"] == "folders"
             else "A stratified split")
    precision = "bf16 mixed precision" if val["mixed_precision"] else "float32"
    return _section(
        "validation", "Validation: fine-tuned, same budget and seeds",
        f"<p>{escape(where)}: {split['n_train']} train, {split['n_val']} validation, "
        f"{split['n_test']} test images (the probes saw the training images only). Budget for "
        f"each setting: {budget['epochs']} epochs at {budget['image_size']} px, batch "
        f"{budget['batch_size']}, {escape(budget['augmentation'])}, label smoothing "
        f"{budget['label_smoothing']:g}, {escape(budget['schedule'])} schedule, "
        f"{precision}; seeds {', '.join(map(str, val['seeds']))}.</p>",
        _figure("validation", plots.validation_figure(val),
                "Left: test accuracy of each seed (points) and the mean ± standard deviation "
                "over seeds (bar). Middle and right: the mean training loss (regulariser "
                "included) and the validation accuracy after each epoch, one line per "
                "setting and seed." + _same_runs_note(val)),
        _table(("setting", "test mean (%)", "± spread", "per seed", "validation (%)"), rows,
               {1, 2, 4}),
        *lines, *_moved(val))


def _moved(val: Mapping[str, Any]) -> list[str]:
    """The per-block CKA after fine-tuning, when the runs measured it."""
    figure = plots.moved_figure(val)
    if figure is None:
        return []
    return [_figure("moved", figure,
                    "CKA between the pre-trained network's and the fine-tuned network's "
                    "features of the test images, per block (mean over seeds; 1 = the block's "
                    "representation unchanged). Shaded: the blocks the recommendation "
                    "re-initialises.")]


def _same_runs_note(val: Mapping[str, Any]) -> str:
    best, recommended = val["settings"].get("best_found"), val["settings"]["recommended"]
    if best is not None and best["runs"] == recommended["runs"]:
        return (" The best setting found is the recommendation itself (search trial 0): its "
                "curves are the recommended ones.")
    return ""


def _search_section(doc: Mapping[str, Any]) -> str:
    search = (doc.get("validation") or {}).get("search")
    if not search:
        return ""
    importances = plots.param_importances(search)
    rows = []
    for trial in search["trials"]:
        mark = " *" if trial["number"] == search["best_trial"] else ""
        label = "recommended" if trial is search["trials"][0] else _describe(trial["overrides"])
        rows.append((f"{trial['number']}{mark}", label, _pct(trial["val_accuracy"]),
                     _pct(trial["test_accuracy"])))
    where = (f"stored in {search['storage']}" if search["storage"]
             else "kept in memory (give --search-db FILE to keep them)")
    return _section(
        "search", f"Search: {len(search['trials'])} trials",
        _figure("search", plots.search_figure(search, importances),
                "Left: validation accuracy of each trial (trial 0 is the recommendation) and "
                "the best so far. Right: Optuna's fANOVA parameter importances over the "
                "trials (seeded), when there are 2 or more."),
        _table(("trial", "settings tried", "validation (%)", "test (%)"), rows, {2, 3}),
        f'<p class="note">* best by validation accuracy ({escape(search["sampler"])}, scored on '
        f"{escape(search['objective'])}); trials {escape(where)}.</p>")


def _ranking_section(doc: Mapping[str, Any]) -> str:
    """Candidate backbones side by side: a table of whatever keys the ranking rows have."""
    ranking = doc.get("ranking")
    if not ranking:
        return ""
    rows = [r for r in ranking if isinstance(r, Mapping)]
    headers: list[str] = []
    for row in rows:
        headers += [k for k in row if k not in headers and not isinstance(row[k], Mapping)]
    numeric = {i for i, h in enumerate(headers)
               if all(_is_number(r.get(h)) or r.get(h) is None for r in rows)}
    cells = [[_cell(row.get(h)) for h in headers] for row in rows]
    criterion = doc.get("ranking_criterion")
    note = (f'<p class="note">Ranked by {escape(str(criterion))}.</p>' if criterion else "")
    return _section("ranking", "Ranking of candidate backbones",
                    _table(headers, cells, numeric), note)


def _dataset_section(doc: Mapping[str, Any]) -> str:
    dataset = doc["dataset"]
    source = "ImageFolder" if dataset["source"] == "folder" else f"CSV {dataset['source']}"
    counts = _table(("class", "images"), dataset["class_counts"].items(), {1})
    skipped = dataset["skipped"]
    listed = _table(("skipped file", "reason"),
                    ((s["path"], s["reason"]) for s in skipped[:MAX_SKIPPED_LISTED]))
    more = (f'<p class="note">... and {len(skipped) - MAX_SKIPPED_LISTED} more (all listed in '
            "the JSON).</p>" if len(skipped) > MAX_SKIPPED_LISTED else "")
    analysed = ('<p class="note">The probes saw the training split only.</p>'
                if doc["settings"].get("analysed") == "train" else "")
    dropped = dataset["dropped_classes"]
    dropped = f"; dropped classes: {', '.join(dropped)}" if dropped else ""
    return _section(
        "dataset", "Dataset",
        f"<p>{escape(dataset['root'])} ({escape(source)}): {dataset['num_classes']} classes, "
        f"{dataset['num_images']} images, {dataset['num_skipped']} skipped{escape(dropped)}.</p>",
        analysed,
        *(f'<p class="warning">Warning: {escape(w)}</p>' for w in dataset["warnings"]),
        counts, listed if skipped else "<p>No file was skipped.</p>", more)


def _model_section(doc: Mapping[str, Any]) -> str:
    model = doc["model"]
    size = "×".join(str(v) for v in model["input_size"][1:])
    crop = model.get("crop_pct")
    size_set = doc["settings"].get("image_size")
    size_set = f"; image size set to {size_set} px" if size_set else ""
    blocks = _table(("block", "modules", "feature dim"),
                    ((b["name"], ", ".join(b["modules"]), dim)
                     for b, dim in zip(model["blocks"], doc["measures"]["dims"])), {2})
    return _section(
        "model", "Model and preprocessing",
        f"<p><b>{escape(model['name'])}</b> ({model['num_params'] / 1e6:.2f} M parameters), "
        f"{escape(model['weights'])}; {model['num_source_classes']} source classes.</p>",
        f"<p>Preprocessing: input {size} px, {escape(model['interpolation'])} interpolation"
        f"{f', centre crop {crop:g}' if crop else ''}, mean "
        f"{escape(_fmt_list(model['mean']))}, std {escape(_fmt_list(model['std']))}"
        f"{size_set}.</p>",
        blocks,
        f"<p>Head modules (new for your classes): "
        f"{escape(', '.join(model.get('head_modules', ())) or '—')}.</p>")


def _timings(doc: Mapping[str, Any]) -> str:
    timings = doc.get("timings") or {}
    if not timings:
        return ""
    text = ", ".join(f"{k.removesuffix('_s')} {v:.1f} s" for k, v in timings.items())
    return f'<p class="note">Wall time: {escape(text)}.</p>'


# --- formatting -----------------------------------------------------------------------------

def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _sig3(value: Any) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.3g}"


def _fmt_list(values: Sequence[float]) -> str:
    return ", ".join(f"{v:g}" for v in values)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return _sig3(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value)


# --- python -m recommender.html -------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    """``python -m recommender.html RESULT.json OUT.html``: the page for a saved document."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m recommender.html RESULT.json OUT.html", file=sys.stderr)
        return 2
    source, target = Path(args[0]), Path(args[1])
    try:
        doc = _read_document(source)
        write_html(doc, target)
    except NbtlError as exc:
        print(f"nbtl html: error: {exc.message}" + (f"\n{exc.hint}" if exc.hint else ""),
              file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"nbtl html: error: cannot write {target}: {exc.strerror}.", file=sys.stderr)
        return 2
    print(f"Wrote the HTML report to {target}.", file=sys.stderr)
    return 0


def _read_document(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"{path} cannot be read ({exc.strerror}).",
                         "Give the file that --json wrote.") from None
    except ValueError as exc:
        raise UsageError(f"{path} is not JSON ({exc}).",
                         "Give the file that --json wrote.") from None
    missing = [k for k in ("dataset", "model", "measures", "recommendation")
               if not isinstance(doc, dict) or k not in doc]
    if missing:
        raise UsageError(f"{path} is not an nbtl result (no {', '.join(missing)}).",
                         "Give the file that nbtl-recommend --json wrote.")
    return doc


if __name__ == "__main__":
    sys.exit(main())
