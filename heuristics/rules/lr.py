"""The optimiser, its momentum, the base learning rate and the effective learning rate.

Areas ``opt`` and ``lr``. Li, Chaudhari et al. (ICLR 2020): what matters for SGD with momentum
is the effective learning rate ELR = lr / (1 - momentum), and the more similar source and
target, the smaller the best ELR; the similarity predicts its decade. No measure of domain
similarity without source data is established, so stand-ins speak for it, capped at medium
confidence: the chance-normalised linear-probe accuracy (how well the source features separate
the target), else the source head's confidence (low on out-of-distribution inputs, Hendrycks
& Gimpel 2017). When both are measured and point to different decades, the search range spans
both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from heuristics.rules.common import (
    BINARY,
    BINARY_LR,
    CODE,
    HENDRYCKS_2017,
    KORNBLITH_2019,
    LI_2020,
    always,
    at_most,
    by_margin,
)
from heuristics.types import Confidence, Derived, Rule, View

# Optimiser: the paper's code (a timm train.py fork, `--opt sgd`, which timm runs with Nesterov
# momentum) uses SGD with Nesterov momentum 0.9, as do Kornblith et al. 2019 and Li et al. 2020.
OPTIMIZER = "sgd_nesterov"
OPTIMIZERS = ("sgd_nesterov", "sgd", "adamw")
SGD_FAMILY = ("sgd_nesterov", "sgd")  # where lr / (1 - momentum) is the effective rate
MOMENTUM = 0.9

# Li, Chaudhari et al. 2020: the best ELR's decade by domain similarity.
ELR_SIMILAR = (1e-3, 1e-2)
ELR_MIDDLE = (1e-2, 1e-1)
ELR_DISTANT = (1e-1, 1.0)
# Stand-in 1, chance-normalised linear-probe accuracy: at least LR_SIMILAR_MIN is similar,
# below LR_DISTANT_MAX distant. Provisional nbtl choices, to be calibrated by the benchmark issue.
LR_SIMILAR_MIN = 0.9
LR_DISTANT_MAX = 0.6
LR_CONFIDENCE_BAND = 0.05  # margins within it give low confidence; provisional
# Stand-in 2, mean max-softmax of the source head: ImageNet models are confident on ImageNet
# and markedly less so on out-of-distribution images (Hendrycks & Gimpel 2017).
# Provisional nbtl thresholds, to be calibrated by the benchmark issue.
SOURCE_SIMILAR_MIN = 0.6
SOURCE_DISTANT_MAX = 0.3
# Without a stand-in, the binary practice's lr (at momentum 0.9), searched over Kornblith et al.
# 2019's learning-rate grid [1e-4, 0.1].
DEFAULT_LR = BINARY_LR
DEFAULT_LR_RANGE = (1e-4, 0.1)
# AdamW (only when the user asks for it): the ELR rule is for SGD with momentum. A common
# fine-tuning rate and a decade either side. Provisional nbtl choice.
ADAMW_LR = 1e-4
ADAMW_LR_RANGE = (1e-5, 1e-3)


@dataclass(frozen=True)
class Decade:
    """Which of Li et al. 2020's decades a stand-in's score falls in."""

    name: str  # "similar", "middle" or "distant"
    lo: float
    hi: float


_DECADES = {"similar": Decade("similar", *ELR_SIMILAR), "middle": Decade("middle", *ELR_MIDDLE),
            "distant": Decade("distant", *ELR_DISTANT)}


def decade_of(score: float, similar_min: float, distant_max: float) -> Decade:
    if score >= similar_min:
        return _DECADES["similar"]
    return _DECADES["middle" if score >= distant_max else "distant"]


def _chance_normalised(v: View) -> float:
    chance = 1.0 / v["num_classes"]
    return (v["linear_probe_accuracy"] - chance) / (1.0 - chance)


DERIVED = (
    Derived("chance_normalised_accuracy", ("linear_probe_accuracy", "num_classes"),
            _chance_normalised, "(accuracy - 1/C) / (1 - 1/C): 0 at chance, 1 when perfect"),
    Derived("probe_decade", ("chance_normalised_accuracy",),
            lambda v: decade_of(v["chance_normalised_accuracy"], LR_SIMILAR_MIN, LR_DISTANT_MAX),
            "the ELR decade the chance-normalised probe accuracy points to"),
    Derived("source_decade", ("source_confidence",),
            lambda v: decade_of(v["source_confidence"], SOURCE_SIMILAR_MIN, SOURCE_DISTANT_MAX),
            "the ELR decade the source head's confidence points to"),
)


def effective_lr(base_lr: float, momentum: float) -> float:
    """Li et al. 2020's effective learning rate of SGD with momentum: ``lr / (1 - momentum)``."""
    return base_lr / (1.0 - momentum)


def _decade_lr(v: View) -> float:
    return math.sqrt(v["elr_lo"] * v["elr_hi"]) * (1.0 - v["momentum"])


def _decade_range(v: View) -> tuple[float, float]:
    return (v["elr_lo"] * (1.0 - v["momentum"]), v["elr_hi"] * (1.0 - v["momentum"]))


def _stand_in_rules(ids: tuple[str, str, str], score: str, needs: tuple[str, ...],
                    thresholds: tuple[float, float], evidence: str, cap: Confidence,
                    source: str) -> tuple[Rule, ...]:
    """One rule per decade for one stand-in of domain similarity (similar, middle, distant)."""
    similar_min, distant_max = thresholds

    def confidence(v: View) -> Confidence:
        margin = min(abs(v[score] - similar_min), abs(v[score] - distant_max))
        return at_most(by_margin(margin, LR_CONFIDENCE_BAND), cap)

    conditions = {
        "similar": (lambda s: s >= similar_min, f"{{{score}:.3g}} >= {similar_min:g}",
                    f"at >= {similar_min:g} the target looks close to the source"),
        "middle": (lambda s: distant_max <= s < similar_min,
                   f"{distant_max:g} <= {{{score}:.3g}} < {similar_min:g}",
                   f"between {distant_max:g} and {similar_min:g} the target looks moderately "
                   "close to the source"),
        "distant": (lambda s: s < distant_max, f"{{{score}:.3g}} < {distant_max:g}",
                    f"below {distant_max:g} the target looks far from the source"),
    }
    rules = []
    for rule_id, (name, (test, when, verdict)) in zip(ids, conditions.items()):
        decade = _DECADES[name]
        rules.append(Rule(
            id=rule_id, target="base_lr", needs=(*needs, "momentum", "optimizer"),
            condition=lambda v, test=test: v["optimizer"] in SGD_FAMILY and test(v[score]),
            effect=_decade_lr,
            reason=f"{evidence} stands in for domain similarity: {verdict}, so the effective "
                   "learning rate comes from the decade [{elr_lo:g}, {elr_hi:g}] and lr = "
                   "{elr:.3g} x (1 - {momentum:g}) = {value:.3g}.",
            when=f"optimizer {{optimizer}} (needs SGD) and {score} {when}",
            params={"elr_lo": decade.lo, "elr_hi": decade.hi,
                    "elr": math.sqrt(decade.lo * decade.hi)},
            confidence=confidence,
            search_range=_decade_range,
            source=f"{LI_2020}; {source}",
        ))
    return tuple(rules)


_PROBE_RULES = _stand_in_rules(
    ("lr.similar_domain", "lr.middle_domain", "lr.distant_domain"),
    "chance_normalised_accuracy",
    ("chance_normalised_accuracy", "linear_probe_accuracy", "num_classes"),
    (LR_SIMILAR_MIN, LR_DISTANT_MAX),
    "Chance-normalised linear-probe accuracy {chance_normalised_accuracy:.3g} (accuracy "
    "{linear_probe_accuracy:.3g} over {num_classes} classes)",
    "medium", "the stand-in and its thresholds are provisional",
)
_SOURCE_RULES = _stand_in_rules(
    ("lr.source_head_similar", "lr.source_head_middle", "lr.source_head_distant"),
    "source_confidence", ("source_confidence",),
    (SOURCE_SIMILAR_MIN, SOURCE_DISTANT_MAX),
    "With no linear-probe accuracy, the source head's mean confidence {source_confidence:.3g}",
    "low", f"{HENDRYCKS_2017}; the stand-in and its thresholds are provisional",
)


def _farther_decade_lr(v: View) -> float:
    far = max(v["probe_decade"], v["source_decade"], key=lambda d: d.lo)
    return math.sqrt(far.lo * far.hi) * (1.0 - v["momentum"])


def _both_decades(v: View) -> tuple[float, float]:
    lo = min(v["probe_decade"].lo, v["source_decade"].lo)
    hi = max(v["probe_decade"].hi, v["source_decade"].hi)
    return (lo * (1.0 - v["momentum"]), hi * (1.0 - v["momentum"]))


RULES = (
    Rule(
        id="opt.sgd_nesterov", target="optimizer",
        needs=(), condition=always, effect=lambda v: v["optimizer"],
        reason="SGD with Nesterov momentum, as in the paper's code.",
        params={"optimizer": OPTIMIZER},
        confidence="high",
        search_range=lambda v: (v["value"],),
        source=f"{CODE}; {KORNBLITH_2019}",
    ),
    Rule(
        id="opt.momentum", target="momentum",
        needs=(), condition=always, effect=lambda v: v["momentum"],
        reason="Momentum {value:g}, as in the paper's code; the learning rate is then chosen as "
               "an effective learning rate lr / (1 - momentum).",
        params={"momentum": MOMENTUM},
        confidence="high",
        search_range=lambda v: (v["value"], v["value"]),
        source=f"{CODE}; {LI_2020}",
    ),
    *_PROBE_RULES,
    *_SOURCE_RULES,
    Rule(
        id="lr.adamw_rate", target="base_lr",
        needs=("optimizer",),
        condition=lambda v: v["optimizer"] not in SGD_FAMILY,
        effect=lambda v: v["lr"],
        reason="The effective-learning-rate rule is for SGD with momentum; with {optimizer} the "
               "learning rate is {value:g}, a common fine-tuning rate (provisional).",
        when="optimizer {optimizer} is not SGD",
        params={"lr": ADAMW_LR},
        confidence="low",
        search_range=lambda v: ADAMW_LR_RANGE,
        source="nbtl provisional choice for AdamW (Loshchilov & Hutter, ICLR 2019)",
    ),
    Rule(
        id="lr.default_binary", target="base_lr", kind="default",
        needs=("momentum",),
        condition=always,
        effect=lambda v: v["lr"],
        reason="Default: with no linear_probe_accuracy and num_classes (or source_confidence) "
               "to stand in for domain similarity, lr = {value:g} at momentum {momentum:g}, as "
               "in the binary practice.",
        when="no earlier rule set base_lr",
        params={"lr": DEFAULT_LR},
        confidence="low",
        search_range=lambda v: DEFAULT_LR_RANGE,
        source=f"{BINARY}; range from {KORNBLITH_2019}'s learning-rate grid",
    ),
    # When the two stand-ins point to different decades, the farther one sets the rate (the
    # search range spans both). Calibrated on fashion-mnist and mnist: docs/benchmark.md,
    # "Calibration evidence behind the rules", lr.stand_ins_disagree.
    Rule(
        id="lr.stand_ins_disagree", target="base_lr", kind="adjust",
        needs=("base_lr", "momentum", "optimizer", "probe_decade", "source_decade",
               "source_confidence"),
        condition=lambda v: (v["optimizer"] in SGD_FAMILY
                             and v["probe_decade"] != v["source_decade"]),
        effect=_farther_decade_lr,
        reason="The source head's mean confidence {source_confidence:.3g} points to the "
               "{source_decade.name} decade, the probe to the {probe_decade.name} one: the "
               "farther decade wins (lr {previous:.3g} -> {value:.3g}), with low confidence, "
               "and the search range spans both decades.",
        when="probe decade {probe_decade.name} != source-head decade {source_decade.name}",
        confidence="low",
        search_range=_both_decades,
        source=f"{LI_2020}; {HENDRYCKS_2017}; the farther decade calibrated by the nbtl "
               "benchmark on fashion-mnist and mnist (docs/benchmark.md)",
    ),
    Rule(
        id="lr.effective", target="effective_lr",
        needs=("base_lr", "momentum", "optimizer"),
        condition=lambda v: v["optimizer"] in SGD_FAMILY,
        effect=lambda v: effective_lr(v["base_lr"], v["momentum"]),
        reason="Effective learning rate lr / (1 - momentum) = {base_lr:.3g} / (1 - "
               "{momentum:g}) = {value:.3g}, the quantity Li et al. 2020 find decisive.",
        when="optimizer {optimizer} uses SGD momentum",
        confidence="high",
        search_range=lambda v: tuple(effective_lr(lr, v["momentum"])
                                     for lr in v["ranges"]["base_lr"]),
        source=LI_2020,
    ),
    Rule(
        id="lr.no_effective_lr", target="effective_lr",
        needs=("optimizer",),
        condition=lambda v: v["optimizer"] not in SGD_FAMILY,
        effect=lambda v: None,
        reason="The effective learning rate lr / (1 - momentum) is defined for SGD with "
               "momentum, not for {optimizer}.",
        when="optimizer {optimizer} is not SGD",
        confidence="high",
        source=LI_2020,
    ),
)
