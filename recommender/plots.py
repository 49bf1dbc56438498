"""The figures of the HTML report (``--html``) and ``--plot``, drawn with matplotlib from the
JSON document (:meth:`recommender.pipeline.Result.to_dict`), so a saved document draws the
same figures as the run that made it.

matplotlib is an extra (``pip install "nbtl[plot]"``): :func:`require_matplotlib` says so
before any work. Figures are made with :class:`matplotlib.figure.Figure` (no pyplot, no global
backend or state); SVG output keeps its text as text and is byte-for-byte the same for the same
document. Elements a reader (or a test) looks for carry ids: ``reinit-BLOCK`` on each shaded
re-initialised block, ``group-NAME`` on each learning-rate group's band.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recommender.errors import UsageError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PLOT_EXTRA = 'pip install "nbtl[plot]"'  # (from a clone: python -m pip install -e ".[plot]")

# One colour per learning-rate group and per validation setting (matplotlib's tab10 entries,
# distinguishable in colour-blind simulations), the same in every figure.
GROUP_COLOURS = {"head": "#d62728", "upper": "#ff7f0e", "lower": "#1f77b4",
                 "backbone": "#1f77b4"}
SETTING_COLOURS = {"default": "#7f7f7f", "recommended": "#2ca02c", "best_found": "#9467bd"}
SETTING_LABELS = {"default": "binary default", "recommended": "recommended",
                  "best_found": "best found"}
REINIT_COLOUR = "#d62728"
_LEGEND_RIGHT = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "fontsize": 8,
                 "frameon": False}
_AUTO_ID = re.compile(r'id="([A-Za-z][A-Za-z0-9.]*_\d+)"')
_RC = {"svg.fonttype": "none", "svg.hashsalt": "nbtl", "font.size": 9,
       "font.family": "DejaVu Sans", "axes.spines.top": False, "axes.spines.right": False}


def require_matplotlib() -> None:
    """Refuse ``--html`` / ``--plot`` before any work when matplotlib is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("--html and --plot need matplotlib, which is not installed.",
                         f"Install the plotting extra: {PLOT_EXTRA} (from a clone: "
                         'python -m pip install -e ".[plot]").') from None


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def to_svg(figure: Figure, salt: str = "") -> str:
    """The figure as an ``<svg>`` element for inline use (no XML header, no date); ``salt``
    makes its internal ids (markers, clip paths) differ from another figure's on one page."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({**_RC, "svg.hashsalt": f"nbtl-{salt}"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    # matplotlib numbers its groups per file (figure_1, axes_1, ...): prefixed, so that two
    # figures on one page share no id.
    return _AUTO_ID.sub(rf'id="{salt}-\1"', text[text.index("<svg"):])


def save(figure: Figure, path: str | Path) -> None:
    """Write ``figure`` to ``path``; its suffix chooses the format (``.png``, ``.svg``, ...)."""
    import matplotlib

    with matplotlib.rc_context(_RC):
        figure.savefig(path, dpi=150, metadata=_metadata(Path(path).suffix))


def _metadata(suffix: str) -> dict[str, Any] | None:
    """No creation date in the file: the same document gives the same bytes."""
    return {"Date": None} if suffix.lower() in (".svg", ".pdf") else None


# --- the per-block profile ------------------------------------------------------------------

def _per_block(doc: Mapping[str, Any], name: str) -> tuple[list[float], list[float]] | None:
    """A per-block probe's values and fold spreads (NaN where unavailable), or None."""
    probe = doc["measures"]["probes"].get(name)
    if not probe or not probe["per_block"]:
        return None
    nan = float("nan")
    values = [nan if v is None else float(v) for v in probe["values"]]
    spreads = [nan if s is None else float(s) for s in probe["spread"]]
    return values, spreads


def measure_label(doc: Mapping[str, Any], name: str) -> str:
    definition = doc["measures"]["definitions"].get(name, {})
    arrow = "↑" if definition.get("higher_is_better", True) else "↓"
    return f"{definition.get('label', name)} {arrow}"


def _group_spans(doc: Mapping[str, Any]) -> list[tuple[str, float, list[int]]]:
    """(group name, learning rate, block indices) for each learning-rate group with blocks."""
    blocks = list(doc["measures"]["blocks"])
    spans = []
    for group in doc["recommendation"]["hyperparameters"]["lr_groups"]:
        names = blocks if group.get("rest") else group.get("blocks", ())
        indices = [blocks.index(b) for b in names if b in blocks]
        if indices:
            spans.append((group["name"], float(group["lr"]), indices))
    return spans


def reinit_blocks(doc: Mapping[str, Any]) -> list[str]:
    """The blocks the recommendation re-initialises (its top ``reinit_top_blocks``)."""
    n = int(doc["recommendation"]["hyperparameters"]["reinit_top_blocks"])
    return list(doc["measures"]["blocks"][-n:]) if n else []


def profile_figure(doc: Mapping[str, Any]) -> Figure:
    """The per-block profile: accuracies (linear probe with its fold spread, kNN) and the
    pre-training gain above; LogME and the BatchNorm shift (second axis, log scale) below.
    Blocks run bottom-up from left to right; re-initialised blocks are shaded and the
    learning-rate groups are bands along the top."""
    from matplotlib.patches import Patch

    blocks = list(doc["measures"]["blocks"])
    x = list(range(len(blocks)))
    figure = _figure(9.5, 5.8)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    probe = _per_block(doc, "linear_probe_accuracy")
    if probe:
        top.errorbar(x, probe[0], yerr=probe[1], marker="o", capsize=3, color="#1f77b4",
                     label=f"{measure_label(doc, 'linear_probe_accuracy')} ± fold spread")
    for name, style, colour in (("knn_accuracy", "s--", "#9467bd"),
                                ("pretraining_gain", "^:", "#8c564b")):
        measured = _per_block(doc, name)
        if measured:
            top.plot(x, measured[0], style, color=colour, label=measure_label(doc, name))
    chance = 1 / doc["dataset"]["num_classes"]
    top.axhline(chance, color="#999999", lw=0.8, ls="-.", label=f"chance {chance:.2g}")
    top.axhline(0, color="#cccccc", lw=0.6)
    top.set_ylabel("accuracy / gain")
    logme = _per_block(doc, "logme")
    if logme:
        bottom.plot(x, logme[0], "o-", color="#17becf", label=measure_label(doc, "logme"))
        bottom.set_ylabel("LogME (nats)")
    shift = _per_block(doc, "bn_shift")
    if shift and any(math.isfinite(v) and v > 0 for v in shift[0]):
        twin = bottom.twinx()
        twin.plot(x, shift[0], "D-", color="#bcbd22", label=measure_label(doc, "bn_shift"))
        twin.set_yscale("log")
        twin.set_ylabel("BatchNorm shift (log)")
        twin.spines["right"].set_visible(True)
        lines = bottom.get_legend_handles_labels()
        more = twin.get_legend_handles_labels()
        bottom.legend(lines[0] + more[0], lines[1] + more[1],
                      **{**_LEGEND_RIGHT, "bbox_to_anchor": (1.09, 1.0)})
    elif logme:
        bottom.legend(**_LEGEND_RIGHT)
    bottom.set_xticks(x, blocks)
    bottom.set_xlabel("block")
    for axes in (top, bottom):
        axes.set_xlim(-0.5, len(blocks) - 0.5)
        for block in reinit_blocks(doc):
            i = blocks.index(block)
            span = axes.axvspan(i - 0.5, i + 0.5, color=REINIT_COLOUR, alpha=0.12, lw=0)
            if axes is top:
                span.set_gid(f"reinit-{block}")
    _group_bands(doc, top)
    handles, labels = top.get_legend_handles_labels()
    if reinit_blocks(doc):
        handles.append(Patch(color=REINIT_COLOUR, alpha=0.12))
        labels.append("re-initialised (recommended)")
    top.legend(handles, labels, **_LEGEND_RIGHT)
    return figure


def _group_bands(doc: Mapping[str, Any], axes) -> None:
    """The learning-rate groups as coloured bands, labelled, above the top panel."""
    from matplotlib.patches import Rectangle

    transform = axes.get_xaxis_transform()  # x in data, y in axes fraction
    for name, lr, indices in _group_spans(doc):
        lo, hi = min(indices) - 0.5, max(indices) + 0.5
        band = Rectangle((lo + 0.03, 1.02), hi - lo - 0.06, 0.08, transform=transform,
                         color=GROUP_COLOURS.get(name, "#7f7f7f"), alpha=0.45,
                         clip_on=False)
        band.set_gid(f"group-{name}")
        axes.add_patch(band)
        axes.text((lo + hi) / 2, 1.06, f"{name} lr {lr:.3g}", transform=transform,
                  ha="center", va="center", fontsize=8, color="black", clip_on=False)


# --- the learning-rate groups ---------------------------------------------------------------

def groups_figure(doc: Mapping[str, Any]) -> Figure:
    """The blocks (and the classifier) as a row of boxes coloured by learning-rate group,
    each with its rate and penalty; re-initialised ones hatched."""
    from matplotlib.patches import FancyBboxPatch

    hp = doc["recommendation"]["hyperparameters"]
    blocks = list(doc["measures"]["blocks"])
    boxes: list[tuple[str, Mapping[str, Any] | None]] = []
    owner = {}
    for group in hp["lr_groups"]:
        for block in blocks if group.get("rest") else group.get("blocks", ()):
            owner.setdefault(block, group)
    boxes = [(b, owner.get(b)) for b in blocks]
    head = next((g for g in hp["lr_groups"] if g["name"] == "head"), None)
    for module in doc["model"].get("head_modules", ()):
        boxes.append((module, head))
    reinit = set(reinit_blocks(doc)) | set(doc["model"].get("head_modules", ()))
    penalties = {"l2sp": f"L2-SP {hp['l2sp_weight']:.2g}", "l2": f"L2 {hp['l2_weight']:.2g}"}
    figure = _figure(max(6.0, 1.15 * len(boxes)), 1.9)
    axes = figure.subplots()
    for i, (name, group) in enumerate(boxes):
        colour = GROUP_COLOURS.get(group["name"], "#7f7f7f") if group else "#dddddd"
        box = FancyBboxPatch((i + 0.05, 0.1), 0.9, 0.8, boxstyle="round,pad=0.02",
                             facecolor=colour, alpha=0.85, edgecolor="black",
                             hatch="//" if name in reinit else None, lw=0.8)
        box.set_gid(f"box-{name}")
        axes.add_patch(box)
        # Text on a hatched box gets a pale backing, to stay readable over the stripes.
        backing = {"bbox": {"facecolor": "white", "alpha": 0.75, "lw": 0, "pad": 1}} \
            if name in reinit else {}
        axes.text(i + 0.5, 0.72, name, ha="center", va="center", fontsize=8, weight="bold",
                  **backing)
        if group:
            axes.text(i + 0.5, 0.48, f"{group['name']}\nlr {group['lr']:.3g}", ha="center",
                      va="center", fontsize=7.5, **backing)
            axes.text(i + 0.5, 0.2, penalties.get(group["penalty"], group["penalty"]),
                      ha="center", va="center", fontsize=7, **backing)
    axes.set_xlim(0, len(boxes))
    axes.set_ylim(0, 1)
    axes.axis("off")
    lp = (f"; LP-FT: the head alone for {hp['lp_epochs']} epoch(s) first" if hp.get("lp_ft")
          else "")
    axes.set_title("Learning-rate groups, input → classifier (hatched: new or "
                   f"re-initialised; {'+'.join(hp.get('exclude_from_decay', ())) or 'nothing'} "
                   f"under neither penalty{lp})", loc="left", fontsize=8.5)
    return figure


# --- validation -----------------------------------------------------------------------------

def validation_figure(validation: Mapping[str, Any]) -> Figure:
    """Test accuracy per seed (points) with mean ± spread for each setting, and the training
    curves: mean loss and validation accuracy per epoch, one line per setting and seed."""
    settings = validation["settings"]
    figure = _figure(9.5, 3.6)
    points, losses, accuracies = figure.subplots(1, 3, width_ratios=[1.1, 1, 1])
    drawn: list[Any] = []  # runs already drawn: best found may be the recommendation itself
    for i, (name, setting) in enumerate(settings.items()):
        colour = SETTING_COLOURS.get(name, "#333333")
        same = setting["runs"] in drawn
        drawn.append(setting["runs"])
        tests = [r["test_accuracy"] for r in setting["runs"]]
        offsets = [i + 0.12 * (j - (len(tests) - 1) / 2) for j in range(len(tests))]
        points.scatter(offsets, tests, color=colour, alpha=0.6, s=22, zorder=3)
        spread = setting["test_spread"] or 0.0
        points.errorbar([i + 0.3], [setting["test_mean"]], yerr=[spread], fmt="_",
                        color=colour, capsize=5, markersize=14, lw=1.5)
        for run in setting["runs"]:
            curve = run.get("curve") or []
            if not curve or same:
                continue
            epochs = [e["epoch"] for e in curve]
            style = dict(color=colour, alpha=0.85, lw=1.2,
                         ls="-" if run["seed"] == setting["runs"][0]["seed"] else "--")
            label = f"{SETTING_LABELS.get(name, name)}, seed {run['seed']}"
            losses.plot(epochs, [e["train_loss"] for e in curve], label=label, **style)
            accuracies.plot(epochs, [e["val_accuracy"] for e in curve], **style)
    points.set_xticks(range(len(settings)),
                      [SETTING_LABELS.get(n, n).replace(" ", "\n") for n in settings])
    points.set_xlim(-0.5, len(settings) - 0.3)
    points.set_ylabel("test accuracy")
    points.set_title("Test accuracy: seeds and mean ± std", loc="left")
    from matplotlib.ticker import MaxNLocator

    for axes in (losses, accuracies):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    losses.set_title("Training loss per epoch", loc="left")
    losses.set_xlabel("epoch")
    accuracies.set_title("Validation accuracy per epoch", loc="left")
    accuracies.set_xlabel("epoch")
    if losses.get_legend_handles_labels()[0]:
        figure.legend(*losses.get_legend_handles_labels(), loc="outside lower center",
                      ncols=4, fontsize=8, frameon=False)
    else:
        for axes in (losses, accuracies):
            axes.text(0.5, 0.5, "no curves recorded\n(runs from an older cache)",
                      transform=axes.transAxes, ha="center", va="center", color="#777777")
    return figure


def moved_figure(validation: Mapping[str, Any]) -> Figure | None:
    """How far fine-tuning moved each block: CKA between the pre-trained and the fine-tuned
    features of the test images (1 = unchanged), one line per setting that measured it
    (mean over seeds); the blocks the recommendation re-initialises are shaded. None when
    no setting measured it."""
    blocks = validation.get("blocks") or []
    measured = {name: s["block_cka"] for name, s in validation["settings"].items()
                if s.get("block_cka")}
    if not blocks or not measured:
        return None
    figure = _figure(6.5, 3.0)
    axes = figure.subplots()
    x = list(range(len(blocks)))
    treatment = validation.get("recommended_treatment") or []
    for i, what in enumerate(treatment):
        if what == "re-init":
            axes.axvspan(i - 0.45, i + 0.45, color="#d62728", alpha=0.12, lw=0,
                         gid=f"moved-reinit-{blocks[i]}")
    for name, values in measured.items():
        points = [(i, v) for i, v in zip(x, values) if v is not None]
        axes.plot([i for i, _ in points], [v for _, v in points], marker="o",
                  color=SETTING_COLOURS.get(name, "#333333"),
                  label=SETTING_LABELS.get(name, name), gid=f"moved-{name}")
    axes.set_xticks(x, blocks)
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("CKA, pre-trained vs fine-tuned")
    axes.set_title("How far fine-tuning moved each block (lower: moved more)", loc="left")
    axes.legend(fontsize=8, frameon=False, loc="lower left")
    return figure


# --- search ---------------------------------------------------------------------------------

def search_figure(search: Mapping[str, Any], importances: Mapping[str, float] | None
                  ) -> Figure:
    """The search history (validation accuracy per trial, best so far) and, when known, the
    parameter importances."""
    trials = search["trials"]
    figure = _figure(9.0, 3.0)
    history, bars = figure.subplots(1, 2, width_ratios=[1.4, 1])
    numbers = [t["number"] for t in trials]
    values = [t["val_accuracy"] for t in trials]
    best, running = [], -math.inf
    for value in values:
        running = max(running, value)
        best.append(running)
    history.plot(numbers, values, "o", color="#1f77b4", label="trial")
    history.step(numbers, best, where="post", color="#2ca02c", label="best so far")
    history.plot([search["best_trial"]],
                 [next(t["val_accuracy"] for t in trials if t["number"] == search["best_trial"])],
                 "*", color="#d62728", markersize=12, label="best trial")
    from matplotlib.ticker import MaxNLocator

    history.xaxis.set_major_locator(MaxNLocator(integer=True))
    history.set_xlabel("trial (0: the recommendation)")
    history.set_ylabel("validation accuracy")
    history.set_title("Search history", loc="left")
    history.legend(fontsize=8, frameon=False)
    if importances:
        names = list(importances)[::-1]
        bars.barh(names, [importances[n] for n in names], color="#ff7f0e")
        bars.set_xlabel("importance (fANOVA, sums to 1)")
    else:
        bars.text(0.5, 0.5, "importances need 2 or more\ntrials that differ",
                  transform=bars.transAxes, ha="center", va="center", color="#777777")
        bars.axis("off")
    bars.set_title("Parameter importances", loc="left")
    return figure


def param_importances(search: Mapping[str, Any]) -> dict[str, float] | None:
    """Optuna's fANOVA importances (seeded) of the searched parameters, rebuilt from the
    document's trials and space; None with fewer than 2 trials or when they cannot be
    computed (e.g. every trial has the same values)."""
    import optuna
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    trials = search["trials"]
    if len(trials) < 2:
        return None
    distributions = {}
    for axis, (kind, bounds) in search["space"].items():
        if kind == "int":
            distributions[axis] = IntDistribution(*bounds)
        elif kind == "log":
            distributions[axis] = FloatDistribution(*bounds, log=True)
        else:
            distributions[axis] = CategoricalDistribution(_hashable(bounds))
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" line
    try:
        study = optuna.create_study(direction="maximize")
        for trial in trials:
            params = {k: _hashable(v) for k, v in trial["params"].items() if k in distributions}
            study.add_trial(optuna.trial.create_trial(
                params=params, distributions={k: distributions[k] for k in params},
                value=trial["val_accuracy"]))
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        found = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (ValueError, RuntimeError):
        return None
    finally:
        optuna.logging.set_verbosity(verbosity)
    return {k: float(v) for k, v in found.items()} or None


def _hashable(value: Any) -> Any:
    """JSON lists back to tuples (Optuna's categorical choices must be hashable)."""
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    return value
