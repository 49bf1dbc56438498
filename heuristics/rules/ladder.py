"""The fitted ladder: from the binary default one step on one axis at a time, as far as the
meta-benchmark's evidence for targets like this one, at the budget the user plans, goes.

Area ``ladder`` (issue 19). The fit (``python benchmarks/meta.py fit``, written to
:mod:`heuristics.rules.fitted`) gives a ladder of settings from the meta-benchmark's grid --
rung 0 is the binary default, each rung one step on one axis from the one below -- and, per
benchmark budget, the rung to take at each *fit gap* (:mod:`heuristics.gaps`; rungs rise with
the gap, and change by one at most per ``min_spacing`` of gap: no cliffs). The rung sets the
blocks to re-initialise, the learning-rate recipe (one rate, or new layers faster and lower
blocks slower), L2-SP or L2 and LP-FT; every axis the rung does not move stays at the binary
default, and its reason says so. The paper's rules (:data:`heuristics.rules.PAPER_RULES`) decide
only when the ladder cannot: without the measure its gap needs.

The budget: the user's planned training (``epochs`` -- the rule table's own unless set -- at
``image_size`` pixels) is matched to the nearest benchmark budget by its compute per image,
``epochs x (image_size / 64)^2``, on a log scale; a plan beyond the benchmark's budgets takes the
nearest one's evidence, with confidence at most medium.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from heuristics.gaps import GAPS, fit_gap
from heuristics.rules.common import BINARY, at_most, by_margin
from heuristics.rules.fitted import MODEL
from heuristics.types import Confidence, Derived, Rule, View

SOURCE = ("nbtl meta-benchmark, fitted by benchmarks/meta_fit.py (docs/benchmark.md, "
          "'The fitted recommender')")
# A plan more than this factor beyond the benchmark's smallest or largest compute per image
# is an extrapolation (confidence at most medium).
EXTRAPOLATION_FACTOR = 1.5
# The image size the budget is taken at when none is given: the backbones' ImageNet input.
DEFAULT_IMAGE_SIZE = 224
LADDER_TARGETS = ("reinit_top_blocks", "base_lr", "head_lr", "upper_lr", "lower_lr",
                  "l2sp_weight", "l2_weight", "lp_ft")


@dataclass(frozen=True)
class Plan:
    """The planned training matched to a benchmark budget."""

    epochs: int
    image_size: int
    budget: str  # the benchmark budget whose evidence applies
    budget_epochs: int
    budget_image_size: int
    extrapolated: bool
    stated: bool = True  # False: the rule table's own epochs, not the user's

    @property
    def words(self) -> str:
        """How the reasons say which training the advice is for."""
        return ("at the budget you plan" if self.stated else
                "at the recommendation's own budget (state yours to get advice for it)")

    def to_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "image_size": self.image_size,
                "benchmark_budget": self.budget,
                "benchmark_epochs": self.budget_epochs,
                "benchmark_image_size": self.budget_image_size,
                "extrapolated": self.extrapolated}


def compute_units(epochs: float, image_size: float) -> float:
    return epochs * (image_size / 64.0) ** 2


def plan_for(epochs: int, image_size: int | None, model: Mapping[str, Any] = MODEL,
             stated: bool = True) -> Plan:
    size = image_size or DEFAULT_IMAGE_SIZE
    units = compute_units(epochs, size)
    budgets = model["budgets"]
    name = min(budgets, key=lambda b: (abs(math.log(units) - math.log(compute_units(
        budgets[b]["epochs"], budgets[b]["image_size"]))), b))
    spans = [compute_units(b["epochs"], b["image_size"]) for b in budgets.values()]
    outside = (units > max(spans) * EXTRAPOLATION_FACTOR
               or units < min(spans) / EXTRAPOLATION_FACTOR)
    return Plan(int(epochs), int(size), name, budgets[name]["epochs"],
                budgets[name]["image_size"], outside, stated)


def piece_for(gap: float, budget: str, model: Mapping[str, Any] = MODEL) -> dict[str, Any]:
    """The piece of the budget's rung profile that ``gap`` falls in ({} below the first)."""
    found = [p for p in model["budgets"][budget]["pieces"] if gap >= p["from"]]
    return found[-1] if found else {}


def rung_for(gap: float, budget: str, model: Mapping[str, Any] = MODEL) -> int:
    """The rung for a target of this gap at this benchmark budget."""
    return piece_for(gap, budget, model).get("rung", 0)


def ladder_confidence(model: Mapping[str, Any], gap: float, budget: str) -> Confidence:
    """By the distance from ``gap`` to the nearest change of rung, in ``min_spacing`` bands
    (:func:`heuristics.rules.common.by_margin`); at most medium outside the benchmark's gaps."""
    spec = model["budgets"][budget]
    edges = [p["from"] for p in spec["pieces"][1:]]
    band = model["min_spacing"]
    level = by_margin(min((abs(gap - x) for x in edges), default=3 * band), band)
    lo, hi = spec["gap_range"] or (0.0, 0.0)
    if not lo <= gap <= hi:
        return at_most(level, "medium")
    return level


def rung_rates(rung: Mapping[str, Any], model: Mapping[str, Any] = MODEL,
               base: float | None = None) -> dict[str, float]:
    """The learning rates of a rung's recipe, as the benchmark's grid set them (around
    ``base`` instead of the rung's base rate when given: a user's ``base_lr``)."""
    base = rung["base_lr"] if base is None else base
    grid = model["grid"]
    ratio = grid["group_ratio"] if rung["lr_mode"] == "groups" else 1.0
    cap = grid["head_cap"]
    head = base * ratio if cap is None or ratio == 1.0 else max(base, min(base * ratio, cap))
    return {"base_lr": base, "head_lr": head, "upper_lr": base, "lower_lr": base / ratio}


def describe(rung: Mapping[str, Any], model: Mapping[str, Any] = MODEL) -> str:
    """A rung in words."""
    if rung["cell"] == model["ladder"][0]["cell"]:
        return "the binary default"
    rates = rung_rates(rung, model)
    k = rung["reinit"]
    parts = [f"{k} top block{'s' * (k != 1)} re-initialised" if k else "every block kept"]
    if rung["lr_mode"] == "groups":
        parts.append(f"new layers at {rates['head_lr']:.2g}, transferred blocks at "
                     f"{rates['upper_lr']:.2g} and the lower half at {rates['lower_lr']:.2g}")
    else:
        parts.append(f"one learning rate {rates['base_lr']:g}")
    parts.append("L2-SP on the lower blocks" if rung["reg"] == "l2sp_lower" else "L2")
    return ", ".join(parts)


def _sources(sources: list[str]) -> str:
    return ", ".join(sources) if len(sources) <= 4 else f"{len(sources)} sources"


def rung_reason(gap: float, plan: Plan, model: Mapping[str, Any] = MODEL) -> str:
    """Why this rung: the benchmark's evidence for targets with a gap like this, at this
    budget."""
    budget = model["budgets"][plan.budget]
    piece = piece_for(gap, plan.budget, model)
    rung = piece.get("rung", 0)
    ev = piece.get("evidence") or {}
    beyond = ", the nearest: an extrapolation" if plan.extrapolated else ""
    what = (f"{plan.words} ({plan.epochs} epochs at {plan.image_size} px; the "
            f"benchmark's '{plan.budget}' budget is {plan.budget_epochs} epochs at "
            f"{plan.budget_image_size} px{beyond})")
    head = f"Fit gap {gap:.3f} ({GAPS[model['gap']][1]}) {what}: "
    n = ev.get("tasks", 0)
    if n >= 2 and ev.get("se") is not None:
        where = (f"on the {n} benchmark tasks with a gap of {ev['gap'][0]:.3f}-{ev['gap'][1]:.3f} "
                 f"({_sources(ev['sources'])})")
        if rung == 0:
            gains = ev["gain"]
            best = max(range(1, len(gains)), key=lambda i: gains[i] - 2 * ev["se"][i],
                       default=0)
            if best:
                return (head + f"{where} no step away from the binary default gained beyond "
                        f"noise (the best, {describe(model['ladder'][best], model)}: "
                        f"{gains[best]:+.1f} +/- {ev['se'][best]:.1f} points), so the binary "
                        "default is kept.")
            return head + f"{where} the binary default is kept."
        return (head + f"{where} {describe(model['ladder'][rung], model)} gained "
                f"{ev['gain'][rung]:+.1f} +/- {ev['se'][rung]:.1f} points over the binary "
                f"default (seed 0), so the advice is rung {rung} of the fitted ladder.")
    if rung == 0:
        return (head + f"the benchmark's {budget['tasks']} tasks at this budget showed no step "
                "away from the binary default that gained beyond noise for targets like "
                "yours, so the binary default is kept.")
    return (head + f"rung {rung} of the fitted ladder ({describe(model['ladder'][rung], model)}): "
            "a step between its neighbours, so that the advice changes one step at a time as "
            "the gap grows.")


def _gap_needs() -> tuple[str, ...]:
    return (GAPS[MODEL["gap"]][0], "num_classes")


def _rate(name: str):
    return lambda rung, base=None: rung_rates(rung, base=base)[name]


def _l2sp(rung: Mapping[str, Any], base=None) -> float:
    return MODEL["grid"]["l2sp_weight"] if rung["reg"] == "l2sp_lower" else 0.0


# target -> (its value on a rung, what it is); the group rates follow the base rate decided
# (the rung's, or the user's)
AXES: dict[str, tuple[Any, str]] = {
    "reinit_top_blocks": (lambda rung, base=None: rung["reinit"], "number of top blocks "
                          "re-initialised"),
    "base_lr": (_rate("base_lr"), "base learning rate"),
    "head_lr": (_rate("head_lr"), "learning rate of the classifier and re-initialised blocks"),
    "upper_lr": (_rate("upper_lr"), "learning rate of the transferred blocks"),
    "lower_lr": (_rate("lower_lr"), "learning rate of the lower transferred blocks"),
    "l2sp_weight": (_l2sp, "L2-SP weight toward the pre-trained weights"),
    "l2_weight": (lambda rung, base=None: MODEL["grid"]["l2_weight"], "L2 weight decay"),
    "lp_ft": (lambda rung, base=None: False, "LP-FT (train the classifier alone first)"),
}
RATES = ("head_lr", "upper_lr", "lower_lr")


def _axis_text(target: str, rung: int | None) -> str:
    if rung is None:
        return ""
    value, label = AXES[target]
    mine, default = value(MODEL["ladder"][rung]), value(MODEL["ladder"][0])
    if target == "lp_ft":
        ev = MODEL["lpft"]
        return ("LP-FT off, as in the binary default and every setting of the benchmark's "
                f"grid: turning it on changed the earlier recommendation by {ev['gain']:+.1f} "
                f"+/- {ev['se']:.1f} points on {ev['tasks']} benchmark tasks (fresh seeds), "
                "not a gain beyond noise." if "gain" in ev else
                "LP-FT off, as in the binary default: the benchmark has no evidence for it.")
    if mine == default:
        return f"The {label} stays at the binary default ({_fmt(default)})."
    return f"The {label} moves from the binary default {_fmt(default)} to {_fmt(mine)}."


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


DERIVED = (
    Derived("fit_gap", _gap_needs(),
            lambda v: fit_gap(MODEL["gap"], v, v["num_classes"]),
            f"the fitted ladder's fit gap: {GAPS[MODEL['gap']][1]}"),
    Derived("plan", ("planned_epochs", "planned_image_size", "planned_from"),
            lambda v: plan_for(v["planned_epochs"], v["planned_image_size"],
                               stated=v["planned_from"] != "rule table"),
            "the planned training matched to the nearest benchmark budget"),
    Derived("ladder_evidence", ("fit_gap", "plan"),
            lambda v: rung_reason(v["fit_gap"], v["plan"]),
            "the benchmark's evidence for the rung at this gap and budget"),
    *(Derived(f"ladder_text_{target}", ("ladder_rung",),
              lambda v, target=target: _axis_text(target, v["ladder_rung"]),
              f"what the rung does to {target}") for target in AXES),
)


def _rung_confidence(v: View) -> Confidence:
    level = ladder_confidence(MODEL, v["fit_gap"], v["plan"].budget)
    return at_most(level, "medium") if v["plan"].extrapolated else level


def _axis_rule(target: str) -> Rule:
    value = AXES[target][0]
    rate = target in RATES
    return Rule(
        id=f"ladder.{target}", target=target,
        needs=("ladder_rung", f"ladder_text_{target}", *(("base_lr",) if rate else ())),
        condition=lambda v: v["ladder_rung"] is not None,
        effect=lambda v: value(MODEL["ladder"][v["ladder_rung"]],
                               v["base_lr"] if rate else None),
        reason=f"{{because[ladder_rung]}} {{ladder_text_{target}}}",
        when="ladder_rung {ladder_rung} set (rung of the fitted ladder)",
        confidence="high",  # the rung's confidence caps it (the engine takes the weakest)
        search_range=lambda v: tuple(dict.fromkeys(
            value(MODEL["ladder"][k]) for k in _around(v["ladder_rung"]))),
        source=SOURCE,
    )


def _around(rung: int) -> range:
    """From the binary default to one rung above: the search range of every value the rung
    sets (a search starts at the advice and may go back to the default)."""
    return range(0, min(len(MODEL["ladder"]), rung + 2))


RULES = (
    Rule(
        id="ladder.rung", target="ladder_rung",
        needs=("fit_gap", "plan", "ladder_evidence"),
        condition=lambda v: True,
        effect=lambda v: rung_for(v["fit_gap"], v["plan"].budget),
        reason="{ladder_evidence}",
        when="fit gap {fit_gap:.3f} at the benchmark's '{plan.budget}' budget",
        confidence=_rung_confidence,
        search_range=lambda v: tuple(_around(v["value"])),
        source=SOURCE,
    ),
    Rule(
        id="ladder.none", target="ladder_rung", kind="default",
        needs=(), condition=lambda v: True, effect=lambda v: None,
        reason="No fitted ladder: the measure its gap needs is missing, so the paper's rules "
               "decide.",
        when="no earlier rule set ladder_rung",
        confidence="high",
        source=BINARY,
    ),
    *(_axis_rule(target) for target in AXES),
)
