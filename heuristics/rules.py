"""The rule table: measures of fit -> the paper's non-binary fine-tuning hyperparameters.

Rules are evaluated in table order by :func:`heuristics.engine.evaluate`. A rule of kind
``decide`` sets its target unless an earlier rule did, so the order of rules for one target is
their priority (the paper's own measure before its stand-ins, stand-ins before the default);
``adjust`` rules (caps) come after the rules they adjust; one ``default`` rule closes each
hyperparameter. Adding a rule is one table entry; every threshold is a named constant below
with its source, or marked provisional where no paper gives a number.

Rule ids are ``<area>.<what>`` with areas ``fit`` (an intermediate finding, ``feature_fit``:
``"good"`` or ``"poor"``), ``reg``, ``reinit``, ``opt``, ``lr`` and ``groups``.
"""

from __future__ import annotations

import math

from heuristics.profile import absolute_shape, relative_shape
from heuristics.types import CONFIDENCE_LEVELS, Confidence, Derived, Rule, View

# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------

# The measures the table reads (the probes' registered names) and the interval a valid value
# lies in (None: any finite number). Unknown names are ignored by recommend().
MEASURE_BOUNDS: dict[str, tuple[float, float] | None] = {
    "linear_probe_accuracy": (0.0, 1.0),  # a fraction, not a percentage
    # Standard deviation of the probe's accuracy over cross-validation folds (a per-block
    # profile: the noise against which a drop between blocks is judged).
    "linear_probe_accuracy_spread": (0.0, 1.0),
    "scratch_accuracy": (0.0, 1.0),
    "pretraining_gain": (-1.0, 1.0),  # difference of two accuracies
    "logme": None,
    "leep": None,
}

# What recommend() reports in `hyperparameters` / `details`, in this order.
HYPERPARAMETERS = (
    "reinit_top_blocks", "split_block", "base_lr", "head_lr", "upper_lr", "lower_lr",
    "momentum", "optimizer", "l2sp_weight", "l2_weight",
)

# ---------------------------------------------------------------------------------------------
# Thresholds and coefficients
# ---------------------------------------------------------------------------------------------

# Fit of the pre-trained features. Plested et al. 2021 (paper.md): only the sign of
# "scratch minus linear probe" is known to matter (Caltech-256 -16.2 and DTD -7.8 points: L2-SP
# helped; Stanford Cars +28.5 and FGVC Aircraft +28.9: it hurt). Probe at least as good as
# scratch = good fit.
FIT_MAX_SCRATCH_GAP = 0.0
# Stand-in when no scratch run exists: probe on pre-trained minus probe on random-init features.
# Provisional nbtl choice, to be calibrated by the benchmark issue.
FIT_MIN_PRETRAINING_GAIN = 0.10
# Margins (accuracy fractions) within this band of a threshold are within the spread of a
# cross-validated accuracy: low confidence; 3x the band or more: high.
# Provisional nbtl choice, to be calibrated by the benchmark issue.
FIT_CONFIDENCE_BAND = 0.02
# A margin of at least this many bands counts as far from the threshold (high confidence).
# Provisional nbtl choice, to be calibrated by the benchmark issue.
CONFIDENCE_HIGH_BANDS = 3.0

# Regularisation coefficients: the official code of Plested et al. 2021 hard-codes 0.004 for
# L2-SP (lower transferred blocks) and 0.0005 for L2 (everything else, BatchNorm excluded).
L2SP_WEIGHT = 0.004
L2_WEIGHT = 0.0005
# Search ranges: L2-SP from the lower end of the code's order of magnitude (1e-3, provisional)
# to Li, Grandvalet, Davoine 2018's reference alpha = 0.1; L2 over Kornblith et al. 2019's
# weight-decay grid [1e-6, 1e-3] extended to Li et al. 2018's beta = 0.01.
L2SP_RANGE = (1e-3, 0.1)
L2_RANGE = (1e-6, 1e-2)
# Binary practice (rules.md): weight decay 1e-4 toward zero on every weight, no L2-SP.
DEFAULT_L2_WEIGHT = 1e-4

# Re-initialisation from the per-block profile (Yosinski et al. 2014; Plested & Gedeon 2019).
# Provisional nbtl choices, to be calibrated by the benchmark issue: a drop of the top block
# below the peak of more than 2 accuracy points (about a cross-validation spread), or for LogME
# 5 % of max(|peak|, span) (LogME has no natural unit).
PROFILE_ACCURACY_TOLERANCE = 0.02
# A drop no larger than this many fold standard deviations of the probe (at the peak or the top
# block, whichever is noisier) is not evidence: on small targets the folds disagree by more than
# the tolerance above. Provisional nbtl choice, to be calibrated by the benchmark issue.
PROFILE_NOISE_STDS = 1.0
PROFILE_LOGME_RELATIVE_TOLERANCE = 0.05
# New layers need data (Plested & Gedeon 2019: the best number of transferred layers depends
# on the target size). At most this many top blocks re-initialised below each number of images
# per class, and never more than REINIT_MAX_BLOCKS.
# Provisional nbtl choices, to be calibrated by the benchmark issue.
REINIT_SIZE_CAPS = ((5.0, 0), (30.0, 1))
REINIT_MAX_BLOCKS = 2

# Optimiser: the paper's code (a timm train.py fork) uses SGD with Nesterov momentum 0.9, as do
# Kornblith et al. 2019 and Li et al. 2020.
OPTIMIZER = "sgd_nesterov"
MOMENTUM = 0.9

# Learning rate: Li, Chaudhari et al. (ICLR 2020) -- the more similar the domain, the smaller the
# best effective learning rate ELR = lr / (1 - momentum); the similarity predicts the decade.
ELR_SIMILAR = (1e-3, 1e-2)
ELR_MIDDLE = (1e-2, 1e-1)
ELR_DISTANT = (1e-1, 1.0)
# Until a domain-similarity measure exists the stand-in is the chance-normalised linear-probe
# accuracy. Provisional nbtl choices, to be calibrated by the benchmark issue.
LR_SIMILAR_MIN = 0.9
LR_DISTANT_MAX = 0.6
LR_CONFIDENCE_BAND = 0.05  # provisional, as FIT_CONFIDENCE_BAND
# Binary practice (rules.md): lr 0.01 at momentum 0.9; searched over Kornblith et al. 2019's
# learning-rate grid [1e-4, 0.1].
DEFAULT_LR = 0.01
DEFAULT_LR_RANGE = (1e-4, 0.1)

# Learning-rate groups (the paper's three groups). Lower blocks at 0.1x the base rate: tllib's
# backbone-to-head ratio; range down to 0.01x, fastai's 100x discriminative spread.
LOWER_LR_FACTOR = 0.1
LOWER_LR_MIN_FACTOR = 0.01
# New layers (classifier, re-initialised blocks) at 10x the base rate -- provisional nbtl
# choice within fastai's 100x spread -- capped at lr 0.1, i.e. ELR 1.0 at momentum 0.9, the top
# of Li et al. 2020's largest decade (training from scratch needs a larger ELR, about the same
# for every dataset).
HEAD_LR_FACTOR = 10.0
HEAD_LR_CAP = 0.1

# ---------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------

_PLESTED_2021 = "Plested, Shen, Gedeon 2021, Non-binary deep transfer learning (arXiv 2107.08585)"
_CODE = ("official code of Plested et al. 2021 (github.com/XuyangSHEN/"
         "Non-binary-deep-transfer-learning-for-image-classification)")
_BINARY = ("common binary practice, the default Plested et al. 2021 improve on: every block "
           "transferred, "
           "new classifier, lr 0.01, "
           "momentum 0.9, weight decay 1e-4")
_LI_2018 = "Li, Grandvalet, Davoine, ICML 2018 (L2-SP)"
_LI_2020 = "Li, Chaudhari et al., ICLR 2020 (effective learning rate by domain similarity)"
_YOSINSKI_2014 = "Yosinski et al., NeurIPS 2014 (early features general, top ones specific)"
_PLESTED_2019 = "Plested & Gedeon, ICONIP 2019 (layers to transfer depend on target size)"
_FASTAI = ("fastai discriminative learning rates; tllib (Transfer-Learning-Library) backbone "
           "at 0.1x the head")

# ---------------------------------------------------------------------------------------------
# Small pure helpers used by the table
# ---------------------------------------------------------------------------------------------


def by_margin(margin: float, band: float) -> Confidence:
    """Confidence from the distance of the deciding measure to its threshold."""
    distance = abs(margin)
    if distance < band:
        return "low"
    return "medium" if distance < CONFIDENCE_HIGH_BANDS * band else "high"


def at_most(level: Confidence, cap: Confidence) -> Confidence:
    """The weaker of two confidences (a stand-in measure never gives ``high``)."""
    return min(level, cap, key=CONFIDENCE_LEVELS.index)


def reinit_size_cap(images_per_class: float) -> int:
    """Most top blocks that can be learned afresh with this many images per class."""
    for below, cap in REINIT_SIZE_CAPS:
        if images_per_class < below:
            return cap
    return REINIT_MAX_BLOCKS


def _zero_to_value(v: View) -> tuple[int, ...]:
    # From the binary default (only the classifier new) to the recommendation: every caller's
    # cap still holds over the whole range.
    return tuple(range(v["value"] + 1))


def _decade_lr(v: View) -> float:
    return math.sqrt(v["elr_lo"] * v["elr_hi"]) * (1.0 - v["momentum"])


def _decade_range(v: View) -> tuple[float, float]:
    return (v["elr_lo"] * (1.0 - v["momentum"]), v["elr_hi"] * (1.0 - v["momentum"]))


def _lr_confidence(v: View) -> Confidence:
    a = v["chance_normalised_accuracy"]
    margin = min(abs(a - v["similar_min"]), abs(a - v["distant_max"]))
    return at_most(by_margin(margin, LR_CONFIDENCE_BAND), "medium")


def _decade_params(decade: tuple[float, float]) -> dict[str, float]:
    lo, hi = decade
    return {"elr_lo": lo, "elr_hi": hi, "elr": math.sqrt(lo * hi),
            "similar_min": LR_SIMILAR_MIN, "distant_max": LR_DISTANT_MAX}


def _split_choices(v: View) -> tuple[str, ...]:
    n, k, names = v["n_transferred"], v["n_lower"], v["block_names"]
    if n == 1:
        return (names[0],)
    return tuple(names[i] for i in (k - 1, k, k + 1) if 1 <= i <= n - 1)


def _noise_at_peak_and_top(spread, shape) -> float:
    return max(spread[shape.peak_index], spread[-1])


def _chance_normalised(v: View) -> float:
    chance = 1.0 / v["num_classes"]
    return (v["linear_probe_accuracy"] - chance) / (1.0 - chance)


# ---------------------------------------------------------------------------------------------
# Derived quantities (looked up like measures; missing when an input is missing)
# ---------------------------------------------------------------------------------------------

DERIVED: dict[str, Derived] = {d.name: d for d in (
    Derived("scratch_gap", ("scratch_accuracy", "linear_probe_accuracy"),
            lambda v: v["scratch_accuracy"] - v["linear_probe_accuracy"],
            "scratch minus linear-probe accuracy: the paper's measure of fit"),
    Derived("chance_normalised_accuracy", ("linear_probe_accuracy", "num_classes"),
            _chance_normalised,
            "(accuracy - 1/C) / (1 - 1/C): 0 at chance, 1 when perfect"),
    Derived("images_per_class", ("num_images", "num_classes"),
            lambda v: v["num_images"] / v["num_classes"], "num_images / num_classes"),
    Derived("reinit_size_cap", ("images_per_class",),
            lambda v: reinit_size_cap(v["images_per_class"]),
            "most top blocks re-initialised at this many images per class"),
    Derived("accuracy_shape", ("profile.linear_probe_accuracy", "block_names"),
            lambda v: absolute_shape(v["profile.linear_probe_accuracy"], v["block_names"],
                                     PROFILE_ACCURACY_TOLERANCE),
            "peak and drop of the per-block linear-probe accuracy"),
    Derived("accuracy_noise", ("profile.linear_probe_accuracy_spread", "accuracy_shape"),
            lambda v: _noise_at_peak_and_top(v["profile.linear_probe_accuracy_spread"],
                                             v["accuracy_shape"]),
            "fold standard deviation of the probe at the peak or the top block, the larger"),
    Derived("logme_shape", ("profile.logme", "block_names"),
            lambda v: relative_shape(v["profile.logme"], v["block_names"],
                                     PROFILE_LOGME_RELATIVE_TOLERANCE),
            "peak and drop of the per-block LogME"),
    Derived("n_transferred", ("num_blocks", "reinit_top_blocks"),
            lambda v: v["num_blocks"] - v["reinit_top_blocks"],
            "blocks that keep their pre-trained weights"),
    Derived("n_lower", ("n_transferred",), lambda v: v["n_transferred"] // 2,
            "transferred blocks in the lower group"),
)}

# ---------------------------------------------------------------------------------------------
# The rule table
# ---------------------------------------------------------------------------------------------

_FIT_RULES = (
    Rule(
        id="fit.probe_matches_scratch", target="feature_fit",
        needs=("scratch_gap", "scratch_accuracy", "linear_probe_accuracy"),
        condition=lambda v: v["scratch_gap"] <= v["max_gap"],
        effect=lambda v: "good",
        reason="Training from scratch reaches {scratch_accuracy:.3g} and a linear probe on the "
               "frozen pre-trained features {linear_probe_accuracy:.3g} (scratch minus probe "
               "{scratch_gap:+.3g} <= {max_gap:g}), so the pre-trained features fit the target.",
        when="scratch_gap {scratch_gap:+.3g} <= {max_gap:g}",
        params={"max_gap": FIT_MAX_SCRATCH_GAP},
        confidence=lambda v: by_margin(v["scratch_gap"] - v["max_gap"], FIT_CONFIDENCE_BAND),
        source=f"{_PLESTED_2021}: the probe beat scratch on Caltech-256 (-16.2 points) and DTD "
               "(-7.8), where L2-SP and re-initialising top layers helped",
    ),
    Rule(
        id="fit.scratch_beats_probe", target="feature_fit",
        needs=("scratch_gap", "scratch_accuracy", "linear_probe_accuracy"),
        condition=lambda v: v["scratch_gap"] > v["max_gap"],
        effect=lambda v: "poor",
        reason="Training from scratch ({scratch_accuracy:.3g}) beats a linear probe on the "
               "frozen pre-trained features ({linear_probe_accuracy:.3g}) by "
               "{scratch_gap:+.3g}, so the pre-trained features fit the target poorly.",
        when="scratch_gap {scratch_gap:+.3g} > {max_gap:g}",
        params={"max_gap": FIT_MAX_SCRATCH_GAP},
        confidence=lambda v: by_margin(v["scratch_gap"] - v["max_gap"], FIT_CONFIDENCE_BAND),
        source=f"{_PLESTED_2021}: scratch beat the probe on Stanford Cars (+28.5 points) and "
               "FGVC Aircraft (+28.9), where L2-SP hurt",
    ),
    Rule(
        id="fit.pretraining_gain_high", target="feature_fit",
        needs=("pretraining_gain",),
        condition=lambda v: v["pretraining_gain"] >= v["min_gain"],
        effect=lambda v: "good",
        reason="Without the scratch-minus-probe gap the pre-training gain stands in for it: the "
               "probe gains {pretraining_gain:+.3g} accuracy on pre-trained over random-init "
               "features (>= {min_gain:g}), so the pre-trained features fit the target.",
        when="pretraining_gain {pretraining_gain:+.3g} >= {min_gain:g}",
        params={"min_gain": FIT_MIN_PRETRAINING_GAIN},
        confidence=lambda v: at_most(
            by_margin(v["pretraining_gain"] - v["min_gain"], FIT_CONFIDENCE_BAND), "medium"),
        source=f"{_PLESTED_2021}, with the pre-training gain (probe on pre-trained minus "
               "random-init features) as a stand-in for "
               "scratch training; threshold provisional",
    ),
    Rule(
        id="fit.pretraining_gain_low", target="feature_fit",
        needs=("pretraining_gain",),
        condition=lambda v: v["pretraining_gain"] < v["min_gain"],
        effect=lambda v: "poor",
        reason="Without the scratch-minus-probe gap the pre-training gain stands in for it: the "
               "probe gains only {pretraining_gain:+.3g} accuracy on pre-trained over "
               "random-init features (< {min_gain:g}), so the pre-trained features fit the "
               "target poorly.",
        when="pretraining_gain {pretraining_gain:+.3g} < {min_gain:g}",
        params={"min_gain": FIT_MIN_PRETRAINING_GAIN},
        confidence=lambda v: at_most(
            by_margin(v["pretraining_gain"] - v["min_gain"], FIT_CONFIDENCE_BAND), "medium"),
        source=f"{_PLESTED_2021}, with the pre-training gain (probe on pre-trained minus "
               "random-init features) as a stand-in for "
               "scratch training; threshold provisional",
    ),
)

_REG_RULES = (
    Rule(
        id="reg.l2sp_on_lower_blocks", target="l2sp_weight",
        needs=("feature_fit",),
        condition=lambda v: v["feature_fit"] == "good",
        effect=lambda v: v["weight"],
        reason="The pre-trained features fit the target, so L2-SP (alpha = {value:g}) pulls the "
               "lower transferred blocks toward their pre-trained weights, as in the paper's "
               "code.",
        when="feature_fit is {feature_fit} (needs good)",
        params={"weight": L2SP_WEIGHT},
        confidence="high",
        search_range=lambda v: L2SP_RANGE,
        source=f"{_PLESTED_2021}; alpha from the {_CODE}; range from {_LI_2018}",
    ),
    Rule(
        id="reg.plain_l2_on_poor_fit", target="l2sp_weight",
        needs=("feature_fit",),
        condition=lambda v: v["feature_fit"] == "poor",
        effect=lambda v: 0.0,
        reason="The pre-trained features fit the target poorly, so no weight is pulled toward "
               "its pre-trained value (L2-SP off): plain L2 toward zero everywhere.",
        when="feature_fit is {feature_fit} (needs poor)",
        confidence="high",
        search_range=lambda v: (0.0, L2SP_WEIGHT),
        source=f"{_PLESTED_2021}: L2-SP hurt Stanford Cars and FGVC Aircraft; also Li, "
               "Chaudhari et al. 2020, Table 5 (L2-SP loses on dissimilar targets)",
    ),
    Rule(
        id="reg.default_no_l2sp", target="l2sp_weight", kind="default",
        needs=(),
        condition=lambda v: True,
        effect=lambda v: 0.0,
        reason="Default: with no measure of fit (scratch_accuracy with linear_probe_accuracy, "
               "or pretraining_gain) there is no L2-SP, as in the binary practice.",
        when="no earlier rule set l2sp_weight",
        confidence="low",
        search_range=lambda v: (0.0, L2SP_WEIGHT),
        source=_BINARY,
    ),
    Rule(
        id="reg.l2_paper_coefficient", target="l2_weight",
        needs=("feature_fit",),
        condition=lambda v: True,
        effect=lambda v: v["weight"],
        reason="With the fit of the features measured ({feature_fit}), plain L2 (beta = "
               "{value:g}) decays every weight not under L2-SP toward zero, BatchNorm excluded, "
               "as in the paper's code.",
        when="feature_fit is known ({feature_fit})",
        params={"weight": L2_WEIGHT},
        confidence="medium",
        search_range=lambda v: L2_RANGE,
        source=f"{_CODE}; range from Kornblith et al. 2019 and {_LI_2018}",
    ),
    Rule(
        id="reg.default_l2", target="l2_weight", kind="default",
        needs=(),
        condition=lambda v: True,
        effect=lambda v: v["weight"],
        reason="Default: with no measure of fit, plain L2 (weight decay {value:g}) on every "
               "weight, as in the binary practice.",
        when="no earlier rule set l2_weight",
        params={"weight": DEFAULT_L2_WEIGHT},
        confidence="low",
        search_range=lambda v: L2_RANGE,
        source=_BINARY,
    ),
)


def _peak_rule(measure: str, label: str, shape: str) -> Rule:
    return Rule(
        id=f"reinit.{measure}_peaks_below_top", target="reinit_top_blocks",
        needs=(shape,),
        condition=lambda v: v[shape].blocks_above > 0,
        effect=lambda v: v[shape].blocks_above,
        reason=f"{label} across the blocks peaks at {{{shape}.peak_block}} "
               f"({{{shape}.peak:.3g}}) and the top block {{{shape}.top_block}} is "
               f"{{{shape}.drop:.3g}} lower (more than the tolerance {{{shape}.tolerance:.3g}}), "
               f"so the {{value}} block(s) above {{{shape}.kept_block}} are re-initialised.",
        when=f"drop from the peak {{{shape}.drop:.3g}} > tolerance {{{shape}.tolerance:.3g}}",
        confidence=lambda v: by_margin(v[shape].drop - v[shape].tolerance, v[shape].tolerance),
        search_range=_zero_to_value,
        source=f"{_YOSINSKI_2014}; {_PLESTED_2021}: re-initialising top layers helped DTD and "
               "Caltech-256; tolerance provisional",
    )


def _rising_rule(measure: str, label: str, shape: str) -> Rule:
    return Rule(
        id=f"reinit.{measure}_top_near_peak", target="reinit_top_blocks",
        needs=(shape,),
        condition=lambda v: v[shape].blocks_above == 0,
        effect=lambda v: 0,
        reason=f"{label} at the top block {{{shape}.top_block}} ({{{shape}.top:.3g}}) is within "
               f"{{{shape}.tolerance:.3g}} of its peak ({{{shape}.peak:.3g}}), so the top "
               "transferred features still help and no block is re-initialised.",
        when=f"drop from the peak {{{shape}.drop:.3g}} <= tolerance {{{shape}.tolerance:.3g}}",
        confidence=lambda v: by_margin(v[shape].tolerance - v[shape].drop, v[shape].tolerance),
        search_range=_zero_to_value,
        source=f"{_YOSINSKI_2014}; tolerance provisional",
    )


_REINIT_RULES = (
    _peak_rule("accuracy", "Linear-probe accuracy", "accuracy_shape"),
    _rising_rule("accuracy", "Linear-probe accuracy", "accuracy_shape"),
    # LogME only speaks when the accuracy profile is missing: these are skipped once set.
    _peak_rule("logme", "LogME", "logme_shape"),
    _rising_rule("logme", "LogME", "logme_shape"),
    Rule(
        id="reinit.default_keep_all", target="reinit_top_blocks", kind="default",
        needs=(),
        condition=lambda v: True,
        effect=lambda v: 0,
        reason="Default: with no per-block profile of linear_probe_accuracy or logme, every "
               "transferred block is kept and only the classifier is new (binary practice).",
        when="no earlier rule set reinit_top_blocks",
        confidence="low",
        search_range=_zero_to_value,
        source=_BINARY,
    ),
    Rule(
        id="reinit.drop_within_noise", target="reinit_top_blocks", kind="adjust",
        needs=("reinit_top_blocks", "accuracy_shape", "accuracy_noise"),
        condition=lambda v: (v["reinit_top_blocks"] > 0
                             and v["accuracy_shape"].drop <= v["noise_stds"] * v["accuracy_noise"]),
        effect=lambda v: 0,
        reason="The top block's linear-probe accuracy is {accuracy_shape.drop:.3g} below its "
               "peak, within {noise_stds:g} fold standard deviation ({accuracy_noise:.3g}) of "
               "the probe, so the drop is not evidence and no block is re-initialised "
               "({previous} -> {value}).",
        when="reinit_top_blocks {reinit_top_blocks} > 0 and drop {accuracy_shape.drop:.3g} <= "
             "{noise_stds:g} x fold std {accuracy_noise:.3g}",
        params={"noise_stds": PROFILE_NOISE_STDS},
        confidence="low",
        # From 0 up to what the profile alone suggested: the search decides.
        search_range=lambda v: tuple(range(v["previous"] + 1)),
        source=f"{_YOSINSKI_2014}; noise criterion provisional",
    ),
    Rule(
        id="reinit.poor_fit_keeps_layers", target="reinit_top_blocks", kind="adjust",
        needs=("reinit_top_blocks", "feature_fit"),
        condition=lambda v: v["feature_fit"] == "poor" and v["reinit_top_blocks"] > 0,
        effect=lambda v: 0,
        reason="The pre-trained features fit the target poorly, and in the paper re-initialising "
               "layers then did not pay off, so the transferred layers are kept "
               "({previous} -> {value} blocks re-initialised).",
        when="feature_fit is {feature_fit} (needs poor) and reinit_top_blocks "
             "{reinit_top_blocks} > 0",
        confidence="medium",
        search_range=_zero_to_value,
        source=f"{_PLESTED_2021}: more re-initialised layers did not help Stanford Cars or FGVC "
               "Aircraft",
    ),
    Rule(
        id="reinit.size_cap", target="reinit_top_blocks", kind="adjust",
        needs=("reinit_top_blocks", "reinit_size_cap", "images_per_class", "num_images",
               "num_classes"),
        condition=lambda v: v["reinit_top_blocks"] > v["reinit_size_cap"],
        effect=lambda v: v["reinit_size_cap"],
        reason="With {images_per_class:.3g} images per class ({num_images} images, "
               "{num_classes} classes) new layers have little to learn from, so at most "
               "{value} top block(s) are re-initialised ({previous} -> {value}).",
        when="reinit_top_blocks {reinit_top_blocks} > {reinit_size_cap} allowed at "
             "{images_per_class:.3g} images per class",
        confidence="medium",
        search_range=_zero_to_value,
        source=f"{_PLESTED_2019}; caps provisional",
    ),
    Rule(
        id="reinit.at_most_max_blocks", target="reinit_top_blocks", kind="adjust",
        needs=("reinit_top_blocks",),
        condition=lambda v: v["reinit_top_blocks"] > v["max_blocks"],
        effect=lambda v: v["max_blocks"],
        reason="At most {max_blocks} top blocks are re-initialised whatever the dataset size "
               "({previous} -> {value}).",
        when="reinit_top_blocks {reinit_top_blocks} > {max_blocks}",
        params={"max_blocks": REINIT_MAX_BLOCKS},
        confidence="medium",
        search_range=_zero_to_value,
        source=f"{_PLESTED_2019}; cap provisional",
    ),
    Rule(
        id="reinit.keep_bottom_block", target="reinit_top_blocks", kind="adjust",
        needs=("reinit_top_blocks", "num_blocks"),
        condition=lambda v: v["reinit_top_blocks"] > max(v["num_blocks"] - 1, 0),
        effect=lambda v: max(v["num_blocks"] - 1, 0),
        reason="Re-initialising every one of the {num_blocks} blocks would discard the "
               "pre-trained backbone, and even distant features beat random ones, so the bottom "
               "block is kept ({previous} -> {value}).",
        when="reinit_top_blocks {reinit_top_blocks} >= num_blocks {num_blocks}",
        confidence="high",
        search_range=_zero_to_value,
        source=_YOSINSKI_2014,
    ),
)

_OPT_RULES = (
    Rule(
        id="opt.sgd_nesterov", target="optimizer",
        needs=(), condition=lambda v: True, effect=lambda v: v["optimizer"],
        reason="SGD with Nesterov momentum, as in the paper's code.",
        params={"optimizer": OPTIMIZER},
        search_range=lambda v: (v["value"],),
        source=_CODE,
    ),
    Rule(
        id="opt.momentum", target="momentum",
        needs=(), condition=lambda v: True, effect=lambda v: v["momentum"],
        reason="Momentum {value:g}, as in the paper's code; the learning rate is then chosen as "
               "an effective learning rate lr / (1 - momentum).",
        params={"momentum": MOMENTUM},
        search_range=lambda v: (v["value"], v["value"]),
        source=f"{_CODE}; {_LI_2020}",
    ),
)

_LR_NEEDS = ("chance_normalised_accuracy", "linear_probe_accuracy", "num_classes", "momentum")
_LR_STAND_IN = ("Chance-normalised linear-probe accuracy {chance_normalised_accuracy:.3g} "
                "(accuracy {linear_probe_accuracy:.3g} over {num_classes} classes) stands in for "
                "domain similarity: ")
_LR_CHOICE = ("so the effective learning rate comes from the decade [{elr_lo:g}, {elr_hi:g}] "
              "and lr = {elr:.3g} x (1 - {momentum:g}) = {value:.3g}.")

_LR_RULES = (
    Rule(
        id="lr.similar_domain", target="base_lr", needs=_LR_NEEDS,
        condition=lambda v: v["chance_normalised_accuracy"] >= v["similar_min"],
        effect=_decade_lr,
        reason=_LR_STAND_IN + "at >= {similar_min:g} the target looks close to the source, "
               + _LR_CHOICE,
        when="chance-normalised accuracy {chance_normalised_accuracy:.3g} >= {similar_min:g}",
        params=_decade_params(ELR_SIMILAR),
        confidence=_lr_confidence,
        search_range=_decade_range,
        source=f"{_LI_2020}; the stand-in and its thresholds are provisional",
    ),
    Rule(
        id="lr.middle_domain", target="base_lr", needs=_LR_NEEDS,
        condition=lambda v: v["distant_max"] <= v["chance_normalised_accuracy"] < v["similar_min"],
        effect=_decade_lr,
        reason=_LR_STAND_IN + "between {distant_max:g} and {similar_min:g} the target looks "
               "moderately close to the source, " + _LR_CHOICE,
        when="{distant_max:g} <= chance-normalised accuracy {chance_normalised_accuracy:.3g} "
             "< {similar_min:g}",
        params=_decade_params(ELR_MIDDLE),
        confidence=_lr_confidence,
        search_range=_decade_range,
        source=f"{_LI_2020}; the stand-in and its thresholds are provisional",
    ),
    Rule(
        id="lr.distant_domain", target="base_lr", needs=_LR_NEEDS,
        condition=lambda v: v["chance_normalised_accuracy"] < v["distant_max"],
        effect=_decade_lr,
        reason=_LR_STAND_IN + "below {distant_max:g} the target looks far from the source, "
               + _LR_CHOICE,
        when="chance-normalised accuracy {chance_normalised_accuracy:.3g} < {distant_max:g}",
        params=_decade_params(ELR_DISTANT),
        confidence=_lr_confidence,
        search_range=_decade_range,
        source=f"{_LI_2020}; the stand-in and its thresholds are provisional",
    ),
    Rule(
        id="lr.default_binary", target="base_lr", kind="default",
        needs=("momentum",),
        condition=lambda v: True,
        effect=lambda v: v["lr"],
        reason="Default: with no linear_probe_accuracy and num_classes to stand in for domain "
               "similarity, lr = {value:g} at momentum {momentum:g}, as in the binary practice.",
        when="no earlier rule set base_lr",
        params={"lr": DEFAULT_LR},
        confidence="low",
        search_range=lambda v: DEFAULT_LR_RANGE,
        source=f"{_BINARY}; range from Kornblith et al. 2019's learning-rate grid",
    ),
)

_GROUP_RULES = (
    Rule(
        id="groups.lower_half_split", target="split_block",
        needs=("n_transferred", "n_lower", "block_names"),
        condition=lambda v: v["n_transferred"] >= 1,
        effect=lambda v: v["block_names"][v["n_lower"]],
        reason="Early-layer features are general and top ones source-specific, so the lower "
               "{n_lower} of the {n_transferred} transferred blocks (those below {value}) form "
               "the lower group, with the smaller learning rate and, when on, L2-SP.",
        when="{n_transferred} transferred block(s) >= 1",
        search_range=_split_choices,
        source=f"{_YOSINSKI_2014}; the paper's code splits learning rates and L2-SP at one "
               "index; the half is a provisional nbtl choice",
    ),
    Rule(
        id="groups.default_no_split", target="split_block", kind="default",
        needs=(), condition=lambda v: True, effect=lambda v: None,
        reason="Default: no transferred blocks were given, so there is no split point.",
        when="no earlier rule set split_block",
        confidence="low",
        source=_BINARY,
    ),
    Rule(
        id="groups.upper_at_base_lr", target="upper_lr",
        needs=("base_lr",), condition=lambda v: True, effect=lambda v: v["base_lr"],
        reason="The upper transferred blocks train at the base learning rate {value:.3g}.",
        search_range=lambda v: (v["value"], v["value"]),
        source=f"{_PLESTED_2021} (three learning-rate groups)",
    ),
    Rule(
        id="groups.lower_slower", target="lower_lr",
        needs=("base_lr",), condition=lambda v: True,
        effect=lambda v: v["base_lr"] * v["factor"],
        reason="The lower transferred blocks hold the most general features, so they train at "
               "{factor:g} x the base learning rate {base_lr:.3g} = {value:.3g}.",
        params={"factor": LOWER_LR_FACTOR, "min_factor": LOWER_LR_MIN_FACTOR},
        search_range=lambda v: (v["base_lr"] * v["min_factor"], v["base_lr"]),
        source=f"{_PLESTED_2021} (three learning-rate groups); {_FASTAI}; {_YOSINSKI_2014}",
    ),
    Rule(
        id="groups.new_layers_faster", target="head_lr",
        needs=("base_lr",), condition=lambda v: True,
        effect=lambda v: min(v["base_lr"] * v["factor"], v["cap"]),
        reason="New layers (the classifier and any re-initialised block) start from random "
               "weights and need a larger effective learning rate, so they train at "
               "min({factor:g} x {base_lr:.3g}, {cap:g}) = {value:.3g}.",
        params={"factor": HEAD_LR_FACTOR, "cap": HEAD_LR_CAP},
        search_range=lambda v: (min(v["base_lr"], v["cap"]), v["cap"]),
        source=f"{_LI_2020} (training from scratch needs a larger ELR); {_FASTAI}; factor "
               "provisional",
    ),
)

RULES: tuple[Rule, ...] = (
    *_FIT_RULES, *_REG_RULES, *_REINIT_RULES, *_OPT_RULES, *_LR_RULES, *_GROUP_RULES,
)
