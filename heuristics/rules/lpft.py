"""Whether to train the new layers first (LP-FT), and for how many epochs.

Area ``lpft``. Kumar et al. (ICLR 2022): fine-tuning with a random head distorts good
pre-trained features; training the head first with the backbone frozen (linear probing), then
everything, does better (+1 % in distribution, +10 % out of distribution) when the probe is
already strong. Here the head-only phase trains the head group: the classifier and any
re-initialised block, with the transferred blocks frozen. Their "out of distribution" is a
shift between the fine-tuning and the test data, which the probes do not see, so only the
probe's strength decides here.
"""

from __future__ import annotations

from heuristics.rules.common import BINARY, KUMAR_2022, always, at_most, by_margin
from heuristics.types import Rule, View

# A probe counts as strong at this chance-normalised accuracy (Kumar et al. give no number).
# Provisional nbtl choice, to be calibrated by the benchmark issue.
LP_FT_MIN_PROBE = 0.7
LP_FT_CONFIDENCE_BAND = 0.05  # provisional, as the learning-rate stand-in's band
# Head-only epochs: a tenth of the budget, at least one. Provisional nbtl choice.
LP_EPOCH_FRACTION = 0.1

_NEEDS = ("chance_normalised_accuracy", "linear_probe_accuracy", "num_classes")


def _confidence(v: View):
    return at_most(by_margin(v["chance_normalised_accuracy"] - v["min_probe"],
                             LP_FT_CONFIDENCE_BAND), "medium")


def _head_epochs(v: View) -> int:
    return max(1, round(v["epochs"] * v["fraction"]))


RULES = (
    Rule(
        id="lpft.strong_probe", target="lp_ft",
        needs=_NEEDS,
        condition=lambda v: v["chance_normalised_accuracy"] >= v["min_probe"],
        effect=lambda v: True,
        reason="A linear probe on the frozen features is already strong (chance-normalised "
               "accuracy {chance_normalised_accuracy:.3g} >= {min_probe:g}), so the new layers "
               "train first with the transferred blocks frozen, then all layers (LP-FT): a "
               "random head would distort good features.",
        when="chance-normalised accuracy {chance_normalised_accuracy:.3g} >= {min_probe:g}",
        params={"min_probe": LP_FT_MIN_PROBE},
        confidence=_confidence,
        search_range=lambda v: (True, False),
        source=f"{KUMAR_2022}; threshold provisional",
    ),
    Rule(
        id="lpft.weak_probe", target="lp_ft",
        needs=_NEEDS,
        condition=lambda v: v["chance_normalised_accuracy"] < v["min_probe"],
        effect=lambda v: False,
        reason="A linear probe on the frozen features is not strong (chance-normalised accuracy "
               "{chance_normalised_accuracy:.3g} < {min_probe:g}): the features must change "
               "anyway, so there is no head-only phase.",
        when="chance-normalised accuracy {chance_normalised_accuracy:.3g} < {min_probe:g}",
        params={"min_probe": LP_FT_MIN_PROBE},
        confidence=_confidence,
        search_range=lambda v: (False, True),
        source=f"{KUMAR_2022}; threshold provisional",
    ),
    Rule(
        id="lpft.default_off", target="lp_ft", kind="default",
        needs=(), condition=always, effect=lambda v: False,
        reason="Default: with no linear_probe_accuracy and num_classes, all layers train from "
               "the start, as in the binary practice.",
        when="no earlier rule set lp_ft",
        confidence="low",
        search_range=lambda v: (False, True),
        source=BINARY,
    ),
    Rule(
        id="lpft.head_epochs", target="lp_epochs",
        needs=("lp_ft", "epochs"),
        condition=lambda v: v["lp_ft"],
        effect=_head_epochs,
        reason="The head-only phase lasts {value} epoch(s), {fraction:g} of the {epochs}-epoch "
               "budget, before every layer trains.",
        when="lp_ft is {lp_ft}",
        params={"fraction": LP_EPOCH_FRACTION},
        confidence="low",
        search_range=lambda v: tuple(sorted({1, v["value"], 2 * v["value"]})),
        source=f"{KUMAR_2022}; the fraction is provisional",
    ),
    Rule(
        id="lpft.no_head_phase", target="lp_epochs",
        needs=("lp_ft",),
        condition=lambda v: not v["lp_ft"],
        effect=lambda v: 0,
        reason="No LP-FT, so no head-only epochs.",
        when="lp_ft is {lp_ft}",
        confidence="high",
        source=KUMAR_2022,
    ),
)
