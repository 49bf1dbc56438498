"""The fit of the pre-trained features, and what it decides: L2-SP, plain L2, or a mix.

Area ``fit`` sets an intermediate finding, ``feature_fit`` (``"good"`` or ``"poor"``), from the
paper's measure (scratch minus frozen-feature probe) or its stand-in (the pre-training gain);
area ``reg`` turns it into the paper's regularisation. Penalties follow the paper's code:
``l2sp_weight / 2 * ||w - w0||^2`` on the lower transferred blocks (on every transferred
block when there is no split point, as in Li et al. 2018) and ``l2_weight / 2 * ||w||^2`` on
every other weight, BatchNorm parameters under neither.
"""

from __future__ import annotations

from heuristics.rules.common import (
    BINARY,
    BINARY_WEIGHT_DECAY,
    CODE,
    KORNBLITH_2019,
    LI_2018,
    PLESTED_2021,
    always,
    at_most,
    by_margin,
)
from heuristics.types import Derived, Rule

# Fit of the pre-trained features. Plested, Shen, Gedeon 2021 ("Non-binary deep transfer
# learning for image classification", arXiv 2107.08585): only the sign of "scratch minus linear
# probe" is known to matter (Caltech-256 -16.2 and DTD -7.8 points: L2-SP helped; Stanford Cars
# +28.5 and FGVC Aircraft +28.9: it hurt, in the results figure of the paper's official code).
# Probe at least as good as scratch = good fit.
FIT_MAX_SCRATCH_GAP = 0.0
# Stand-in when no scratch run exists: probe on pre-trained minus probe on random-init features.
# Provisional nbtl choice, to be calibrated by the benchmark issue.
FIT_MIN_PRETRAINING_GAIN = 0.10
# Margins (accuracy fractions) within this band of a threshold are within the spread of a
# cross-validated accuracy: low confidence; 3 bands or more: high.
# Provisional nbtl choice, to be calibrated by the benchmark issue.
FIT_CONFIDENCE_BAND = 0.02

# Regularisation coefficients of the paper's code (timm/loss/l2sp.py): the L2-SP sum over the
# lower transferred blocks is scaled by 0.004 after a factor 5 on every tensor (10 on the
# first), so the effective alpha of alpha/2 ||w - w0||^2 is 0.004 x 5 = 0.02; plain L2 on
# everything else is 0.0005 / 2 ||w||^2. Parameters with "bn" in their name are skipped by
# both; biases are regularised ("Facebook regularized biases too", a comment there).
L2SP_WEIGHT = 0.02
L2_WEIGHT = 0.0005
EXCLUDE_FROM_DECAY = ("batchnorm",)
# Search ranges: L2-SP from 1e-3 (provisional) to Li, Grandvalet, Davoine 2018's reference
# alpha = 0.1; L2 over Kornblith et al. 2019's weight-decay grid [1e-6, 1e-3] extended to Li
# et al. 2018's beta = 0.01.
L2SP_RANGE = (1e-3, 0.1)
L2_RANGE = (1e-6, 1e-2)
# Without a measure of fit, the binary practice: its weight decay toward zero on every weight,
# no L2-SP.
DEFAULT_L2_WEIGHT = BINARY_WEIGHT_DECAY

_GAIN_SOURCE = (f"{PLESTED_2021}, with the pre-training gain (probe on pre-trained minus "
                "random-init features) as a stand-in for scratch training; threshold "
                "provisional")

DERIVED = (
    Derived("scratch_gap", ("scratch_accuracy", "linear_probe_accuracy"),
            lambda v: v["scratch_accuracy"] - v["linear_probe_accuracy"],
            "scratch minus linear-probe accuracy: the paper's measure of fit"),
)


def _gap_confidence(v):
    return by_margin(v["scratch_gap"] - v["max_gap"], FIT_CONFIDENCE_BAND)


def _gain_confidence(v):
    return at_most(by_margin(v["pretraining_gain"] - v["min_gain"], FIT_CONFIDENCE_BAND),
                   "medium")


FIT_RULES = (
    Rule(
        id="fit.probe_matches_scratch", target="feature_fit",
        needs=("scratch_gap", "scratch_accuracy", "linear_probe_accuracy"),
        condition=lambda v: v["scratch_gap"] <= v["max_gap"],
        effect=lambda v: "good",
        reason="A linear probe on the frozen pre-trained features ({linear_probe_accuracy:.3g}) "
               "is at least as good as training from scratch ({scratch_accuracy:.3g}; scratch "
               "minus probe {scratch_gap:+.3g} <= {max_gap:g}): the pre-trained features fit "
               "the target.",
        when="scratch_gap {scratch_gap:+.3g} <= {max_gap:g}",
        params={"max_gap": FIT_MAX_SCRATCH_GAP},
        confidence=_gap_confidence,
        source=f"{PLESTED_2021}: the probe beat scratch on Caltech-256 (-16.2 points) and DTD "
               "(-7.8), where L2-SP and re-initialising top layers helped",
    ),
    Rule(
        id="fit.scratch_beats_probe", target="feature_fit",
        needs=("scratch_gap", "scratch_accuracy", "linear_probe_accuracy"),
        condition=lambda v: v["scratch_gap"] > v["max_gap"],
        effect=lambda v: "poor",
        reason="Training from scratch ({scratch_accuracy:.3g}) beats a linear probe on the "
               "frozen pre-trained features ({linear_probe_accuracy:.3g}) by "
               "{scratch_gap:+.3g}: the pre-trained features fit the target poorly.",
        when="scratch_gap {scratch_gap:+.3g} > {max_gap:g}",
        params={"max_gap": FIT_MAX_SCRATCH_GAP},
        confidence=_gap_confidence,
        source=f"{PLESTED_2021}: scratch beat the probe on Stanford Cars (+28.5 points) and "
               "FGVC Aircraft (+28.9), where L2-SP hurt",
    ),
    Rule(
        id="fit.pretraining_gain_high", target="feature_fit",
        needs=("pretraining_gain",),
        condition=lambda v: v["pretraining_gain"] >= v["min_gain"],
        effect=lambda v: "good",
        reason="Without scratch_accuracy the pre-training gain stands in for the paper's "
               "scratch-minus-probe gap: the probe gains {pretraining_gain:+.3g} accuracy on "
               "pre-trained over random-init features (>= {min_gain:g}), so the pre-trained "
               "features fit the target.",
        when="pretraining_gain {pretraining_gain:+.3g} >= {min_gain:g}",
        params={"min_gain": FIT_MIN_PRETRAINING_GAIN},
        confidence=_gain_confidence,
        source=_GAIN_SOURCE,
    ),
    Rule(
        id="fit.pretraining_gain_low", target="feature_fit",
        needs=("pretraining_gain",),
        condition=lambda v: v["pretraining_gain"] < v["min_gain"],
        effect=lambda v: "poor",
        reason="Without scratch_accuracy the pre-training gain stands in for the paper's "
               "scratch-minus-probe gap: the probe gains only {pretraining_gain:+.3g} accuracy "
               "on pre-trained over random-init features (< {min_gain:g}), so the pre-trained "
               "features fit the target poorly.",
        when="pretraining_gain {pretraining_gain:+.3g} < {min_gain:g}",
        params={"min_gain": FIT_MIN_PRETRAINING_GAIN},
        confidence=_gain_confidence,
        source=_GAIN_SOURCE,
    ),
)

REG_RULES = (
    Rule(
        id="reg.l2sp_on_lower_blocks", target="l2sp_weight",
        needs=("feature_fit",),
        condition=lambda v: v["feature_fit"] == "good",
        effect=lambda v: v["weight"],
        reason="{because[feature_fit]} So L2-SP (alpha = {value:g}) pulls the lower "
               "transferred blocks toward their pre-trained weights, as in the paper's code "
               "(every transferred block when there is no split point, as in Li et al. 2018).",
        when="feature_fit is {feature_fit} (needs good)",
        params={"weight": L2SP_WEIGHT},
        confidence="high",
        search_range=lambda v: L2SP_RANGE,
        source=f"{PLESTED_2021}; alpha from the {CODE} (0.004 x 5); range from {LI_2018}",
    ),
    Rule(
        id="reg.plain_l2_on_poor_fit", target="l2sp_weight",
        needs=("feature_fit",),
        condition=lambda v: v["feature_fit"] == "poor",
        effect=lambda v: 0.0,
        reason="{because[feature_fit]} So no weight is pulled toward its pre-trained value "
               "(L2-SP off): plain L2 toward zero everywhere.",
        when="feature_fit is {feature_fit} (needs poor)",
        confidence="high",
        search_range=lambda v: (0.0, L2SP_WEIGHT),
        source=f"{PLESTED_2021}: L2-SP hurt Stanford Cars and FGVC Aircraft; also Li, "
               "Chaudhari et al. 2020, Table 5 (L2-SP loses on dissimilar targets)",
    ),
    Rule(
        id="reg.default_no_l2sp", target="l2sp_weight", kind="default",
        needs=(),
        condition=always,
        effect=lambda v: 0.0,
        reason="Default: with no measure of fit (scratch_accuracy with linear_probe_accuracy, "
               "or pretraining_gain) there is no L2-SP, as in the binary practice.",
        when="no earlier rule set l2sp_weight",
        confidence="low",
        search_range=lambda v: (0.0, L2SP_WEIGHT),
        source=BINARY,
    ),
    Rule(
        id="reg.l2_paper_coefficient", target="l2_weight",
        needs=("feature_fit",),
        condition=always,
        effect=lambda v: v["weight"],
        reason="With the fit of the features measured ({feature_fit}), plain L2 (beta = "
               "{value:g}) decays every weight not under L2-SP toward zero (upper transferred "
               "blocks, re-initialised blocks, classifier), as in the paper's code.",
        when="feature_fit is known ({feature_fit})",
        params={"weight": L2_WEIGHT},
        confidence="medium",
        search_range=lambda v: L2_RANGE,
        source=f"{CODE}; range from {KORNBLITH_2019} and {LI_2018}",
    ),
    Rule(
        id="reg.default_l2", target="l2_weight", kind="default",
        needs=(),
        condition=always,
        effect=lambda v: v["weight"],
        reason="Default: with no measure of fit, plain L2 (weight decay {value:g}) on every "
               "weight, as in the binary practice.",
        when="no earlier rule set l2_weight",
        params={"weight": DEFAULT_L2_WEIGHT},
        confidence="low",
        search_range=lambda v: L2_RANGE,
        source=BINARY,
    ),
    Rule(
        id="reg.batchnorm_unregularised", target="exclude_from_decay",
        needs=(),
        condition=always,
        effect=lambda v: v["kinds"],
        reason="BatchNorm parameters are under neither L2-SP nor L2 (biases are regularised), "
               "as in the paper's code and in Li et al. 2018.",
        params={"kinds": EXCLUDE_FROM_DECAY},
        confidence="high",
        search_range=lambda v: (v["kinds"], (*v["kinds"], "bias")),
        source=f"{CODE} (timm/loss/l2sp.py skips every parameter named 'bn'); {LI_2018}",
    ),
)
