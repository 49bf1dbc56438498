"""How many top blocks to re-initialise: from the per-block profile and the dataset size.

Area ``reinit``. The per-block profile says where transferred layers stop helping: where
target separability stops rising (linear probe, then k-NN, then LogME, in that priority) or,
with no separability profile, where the domain shift (BatchNorm statistics) jumps. Caps then
apply: poor fit keeps the layers (the paper), few images per class allow few new layers
(Plested & Gedeon 2019), the bottom block always stays.

Separability outranks the BatchNorm shift because it is the direct evidence: a shift in
activation statistics alone can be absorbed by re-estimating them (AdaBN, Li et al. 2016),
which fine-tuning does anyway. H-score, shrinkage H-score and TransRate are not read across
blocks: they grow with the feature dimension (H-score, Bao et al. 2019, saturates at C - 1 when
the samples are fewer than the dimensions; TransRate, Huang et al. 2022, rewards rank), which
differs from block to block.
"""

from __future__ import annotations

from heuristics.profile import absolute_shape, relative_shape, shift_jump
from heuristics.rules.common import (
    ADABN_2016,
    BINARY,
    PLESTED_2019,
    PLESTED_2021,
    YOSINSKI_2014,
    always,
    by_margin,
)
from heuristics.types import Derived, Rule, View

# Re-initialisation from the per-block profile (Yosinski et al. 2014; Plested & Gedeon 2019).
# Provisional nbtl choices, to be calibrated by the benchmark issue: a drop of the top block
# below the peak of more than 2 accuracy points (about a cross-validation spread), or for LogME
# 5 % of max(|peak|, span) (LogME has no natural unit).
PROFILE_ACCURACY_TOLERANCE = 0.02
PROFILE_LOGME_RELATIVE_TOLERANCE = 0.05
# A drop no larger than this many fold standard deviations of the probe (at the peak or the top
# block, whichever is noisier) is not evidence: on small targets the folds disagree by more than
# the tolerance above. Provisional nbtl choice, to be calibrated by the benchmark issue.
PROFILE_NOISE_STDS = 1.0
# New layers need data (Plested & Gedeon 2019: the best number of transferred layers depends
# on the target size). At most this many top blocks re-initialised below each number of images
# per class, and never more than REINIT_MAX_BLOCKS.
# Provisional nbtl choices, to be calibrated by the benchmark issue.
REINIT_SIZE_CAPS = ((5.0, 0), (30.0, 1))
REINIT_MAX_BLOCKS = 2
# Far targets renew the top blocks: when a stand-in of domain similarity (heuristics.rules.lr)
# puts the target in Li et al. 2020's distant decade, this many top blocks are re-initialised
# (then the caps below apply). Calibrated on fashion-mnist and mnist: docs/benchmark.md,
# "Calibration evidence behind the rules", FAR_DOMAIN_REINIT_BLOCKS.
FAR_DOMAIN_REINIT_BLOCKS = 2
# The domain shift "jumps" into a block when its BatchNorm shift is at least this many times
# the block below's; only the top REINIT_MAX_BLOCKS blocks are looked at.
# Provisional nbtl choice (the criterion -- the depth at which the domain distance jumps is
# where transferred layers stop helping -- follows Yosinski et al. 2014; no paper gives a number).
BN_SHIFT_JUMP_RATIO = 2.0


def reinit_size_cap(images_per_class: float) -> int:
    """Most top blocks that can be learned afresh with this many images per class."""
    for below, cap in REINIT_SIZE_CAPS:
        if images_per_class < below:
            return cap
    return REINIT_MAX_BLOCKS


def zero_to_value(v: View) -> tuple[int, ...]:
    # From the binary default (only the classifier new) to the recommendation: every caller's
    # cap still holds over the whole range.
    return tuple(range(v["value"] + 1))


def _noise_at_peak_and_top(spread, shape) -> float:
    return max(spread[shape.peak_index], spread[-1])


DERIVED = (
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
    Derived("knn_shape", ("profile.knn_accuracy", "block_names"),
            lambda v: absolute_shape(v["profile.knn_accuracy"], v["block_names"],
                                     PROFILE_ACCURACY_TOLERANCE),
            "peak and drop of the per-block k-NN accuracy"),
    Derived("logme_shape", ("profile.logme", "block_names"),
            lambda v: relative_shape(v["profile.logme"], v["block_names"],
                                     PROFILE_LOGME_RELATIVE_TOLERANCE),
            "peak and drop of the per-block LogME"),
    Derived("shift_jump", ("profile.bn_shift", "block_names"),
            lambda v: shift_jump(v["profile.bn_shift"], v["block_names"], REINIT_MAX_BLOCKS,
                                 BN_SHIFT_JUMP_RATIO),
            "largest jump of the per-block BatchNorm shift among the top blocks"),
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
        search_range=zero_to_value,
        source=f"{YOSINSKI_2014}; {PLESTED_2021}: re-initialising top layers helped DTD and "
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
        search_range=zero_to_value,
        source=f"{YOSINSKI_2014}; tolerance provisional",
    )


_SHIFT_SOURCE = (f"{ADABN_2016}; {YOSINSKI_2014}; nbtl's criterion (where the domain distance "
                 "jumps); ratio provisional")

_SHIFT_RULES = (
    Rule(
        id="reinit.bn_shift_jumps_at_top", target="reinit_top_blocks",
        needs=("shift_jump",),
        condition=lambda v: v["shift_jump"].jumps,
        effect=lambda v: v["shift_jump"].blocks_above,
        reason="With no separability profile, the domain shift by depth decides: the target's "
               "BatchNorm statistics move {shift_jump.ratio:.3g}x further from the source's "
               "from {shift_jump.below_block} to {shift_jump.jump_block} (>= "
               "{shift_jump.min_ratio:g}x), so the {value} block(s) from "
               "{shift_jump.jump_block} up are re-initialised.",
        when="BatchNorm shift jumps {shift_jump.ratio:.3g}x into {shift_jump.jump_block} >= "
             "{shift_jump.min_ratio:g}x",
        confidence="low",
        search_range=zero_to_value,
        source=_SHIFT_SOURCE,
    ),
    Rule(
        id="reinit.bn_shift_no_jump", target="reinit_top_blocks",
        needs=("shift_jump",),
        condition=lambda v: not v["shift_jump"].jumps,
        effect=lambda v: 0,
        reason="With no separability profile, the domain shift by depth decides: the target's "
               "BatchNorm statistics move at most {shift_jump.ratio:.3g}x further from the "
               "source's into any of the top {shift_jump.window} blocks (< "
               "{shift_jump.min_ratio:g}x), so no block is re-initialised.",
        when="largest BatchNorm shift jump among the top blocks {shift_jump.ratio:.3g}x < "
             "{shift_jump.min_ratio:g}x",
        confidence="low",
        search_range=zero_to_value,
        source=_SHIFT_SOURCE,
    ),
)

_CAPS = (
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
        source=f"{YOSINSKI_2014}; noise criterion provisional",
    ),
    Rule(
        id="reinit.far_domain_renews_top", target="reinit_top_blocks", kind="adjust",
        needs=("reinit_top_blocks", "probe_decade", "source_decade"),
        condition=lambda v: (v["reinit_top_blocks"] < v["blocks"]
                             and "distant" in (v["probe_decade"].name, v["source_decade"].name)),
        effect=lambda v: v["blocks"],
        reason="A stand-in of domain similarity puts the target far from the source (the "
               "probe points to the {probe_decade.name} decade, the source head to the "
               "{source_decade.name} one), and the top features are the most source-specific, "
               "so the top {value} blocks are learned afresh ({previous} -> {value}).",
        when="reinit_top_blocks {reinit_top_blocks} < {blocks} and a stand-in says distant "
             "(probe {probe_decade.name}, source head {source_decade.name})",
        params={"blocks": FAR_DOMAIN_REINIT_BLOCKS},
        confidence="low",
        search_range=zero_to_value,
        source=f"{YOSINSKI_2014}; {PLESTED_2021} (re-initialising top layers helped DTD); "
               "calibrated by the nbtl benchmark on fashion-mnist and mnist (docs/benchmark.md)",
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
        search_range=zero_to_value,
        source=f"{PLESTED_2021}: more re-initialised layers did not help Stanford Cars or FGVC "
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
        search_range=zero_to_value,
        source=f"{PLESTED_2019}; caps provisional",
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
        search_range=zero_to_value,
        source=f"{PLESTED_2019}; cap provisional",
    ),
    # Only a user override sets split_block this early: the split block must stay transferred.
    Rule(
        id="reinit.keep_user_split_block", target="reinit_top_blocks", kind="adjust",
        needs=("reinit_top_blocks", "split_block", "block_names"),
        condition=lambda v: (v["split_block"] is not None and v["reinit_top_blocks"]
                             > len(v["block_names"]) - 1 - v["block_names"].index(
                                 v["split_block"])),
        effect=lambda v: len(v["block_names"]) - 1 - v["block_names"].index(v["split_block"]),
        reason="The user put the split at {split_block}, so that block and those below stay "
               "transferred: {value} top block(s) re-initialised ({previous} -> {value}).",
        when="split_block {split_block} would be re-initialised by {reinit_top_blocks} blocks",
        confidence="medium",
        search_range=zero_to_value,
        source="user override of split_block",
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
        search_range=zero_to_value,
        source=YOSINSKI_2014,
    ),
)

RULES = (
    _peak_rule("accuracy", "Linear-probe accuracy", "accuracy_shape"),
    _rising_rule("accuracy", "Linear-probe accuracy", "accuracy_shape"),
    # The next profiles only speak when the ones above are missing: skipped once set.
    _peak_rule("knn", "k-NN accuracy", "knn_shape"),
    _rising_rule("knn", "k-NN accuracy", "knn_shape"),
    _peak_rule("logme", "LogME", "logme_shape"),
    _rising_rule("logme", "LogME", "logme_shape"),
    *_SHIFT_RULES,
    Rule(
        id="reinit.default_keep_all", target="reinit_top_blocks", kind="default",
        needs=(),
        condition=always,
        effect=lambda v: 0,
        reason="Default: with no per-block profile (linear_probe_accuracy, knn_accuracy, logme "
               "or bn_shift), every transferred block is kept and only the classifier is new "
               "(binary practice).",
        when="no earlier rule set reinit_top_blocks",
        confidence="low",
        search_range=zero_to_value,
        source=BINARY,
    ),
    *_CAPS,
)
