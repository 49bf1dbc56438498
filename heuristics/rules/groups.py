"""The paper's three learning-rate groups: where the transferred blocks split, and each rate.

Area ``groups``. The paper's code (``--num-lowlrs``) splits the transferred blocks at one index:
the lower blocks get their own (smaller) learning rate and, when on, L2-SP; the upper blocks
the base rate and plain L2; the classifier and any re-initialised block form the head group.
``split_block`` names the lowest block of the upper group (``None``: no lower group).
"""

from __future__ import annotations

from heuristics.rules.common import FASTAI, LI_2020, PLESTED_2021, YOSINSKI_2014
from heuristics.types import Derived, Rule, View

# Lower blocks at 0.1x the base rate: tllib's backbone-to-head ratio; range down to 0.01x,
# fastai's 100x discriminative spread.
LOWER_LR_FACTOR = 0.1
LOWER_LR_MIN_FACTOR = 0.01
# New layers (classifier, re-initialised blocks) at 10x the base rate -- provisional nbtl
# choice within fastai's 100x spread -- capped at lr 0.1, i.e. ELR 1.0 at momentum 0.9, the top
# of Li et al. 2020's largest decade (training from scratch needs a larger ELR, about the same
# for every dataset).
HEAD_LR_FACTOR = 10.0
HEAD_LR_CAP = 0.1
# A far target (effective learning rate in Li et al. 2020's distant decade, from 0.1): every
# group trains at the base rate. The lower blocks must change too (Lee et al. 2023: an
# input-level shift is best tuned in the first blocks), and new layers get no extra factor.
# This departs from the paper (per-group rates helped FGVC Aircraft there, at a full budget).
# Calibrated on fashion-mnist and mnist: docs/benchmark.md, "Calibration evidence behind the
# rules", FAR_ELR.
FAR_ELR = 0.1

DERIVED = (
    Derived("n_transferred", ("num_blocks", "reinit_top_blocks"),
            lambda v: v["num_blocks"] - v["reinit_top_blocks"],
            "blocks that keep their pre-trained weights"),
    Derived("n_lower", ("n_transferred",), lambda v: v["n_transferred"] // 2,
            "transferred blocks in the lower group: the lower half, rounded down"),
)


def _split_choices(v: View) -> tuple[str, ...]:
    n, k, names = v["n_transferred"], v["n_lower"], v["block_names"]
    return tuple(names[i] for i in (k - 1, k, k + 1) if 1 <= i <= n - 1)


SPLIT_RULES = (
    Rule(
        id="groups.lower_half_split", target="split_block",
        needs=("n_transferred", "n_lower", "block_names"),
        condition=lambda v: v["n_lower"] >= 1,
        effect=lambda v: v["block_names"][v["n_lower"]],
        reason="Early-layer features are general and top ones source-specific, so the lower "
               "{n_lower} of the {n_transferred} transferred blocks (those below {value}) form "
               "the lower group, with the smaller learning rate and, when on, L2-SP.",
        when="{n_lower} lower block(s) of {n_transferred} transferred >= 1",
        search_range=_split_choices,
        source=f"{YOSINSKI_2014}; the paper's code splits learning rates and L2-SP at one "
               "index; the half is a provisional nbtl choice",
    ),
    Rule(
        id="groups.no_split", target="split_block",
        needs=("n_transferred", "n_lower"),
        condition=lambda v: v["n_lower"] == 0,
        effect=lambda v: None,
        reason="With {n_transferred} transferred block(s) there is no lower group: the "
               "transferred blocks train as one group at the base rate.",
        when="{n_transferred} transferred block(s) < 2",
        confidence="high",
        source=f"{PLESTED_2021} (three learning-rate groups)",
    ),
)

LR_RULES = (
    Rule(
        id="groups.backbone_at_base_lr", target="upper_lr",
        needs=("base_lr", "num_blocks"),
        condition=lambda v: v["num_blocks"] == 0,
        effect=lambda v: v["base_lr"],
        reason="No blocks were given, so the whole pre-trained backbone is one group at the "
               "base learning rate {value:.3g}; give the backbone's blocks for per-group rates.",
        when="num_blocks {num_blocks} == 0",
        confidence="low",
        search_range=lambda v: v["ranges"]["base_lr"],
        source=f"{PLESTED_2021} (three learning-rate groups need the blocks)",
    ),
    Rule(
        id="groups.upper_at_base_lr", target="upper_lr",
        needs=("base_lr",), condition=lambda v: True, effect=lambda v: v["base_lr"],
        reason="The upper transferred blocks train at the base learning rate {value:.3g}.",
        search_range=lambda v: v["ranges"]["base_lr"],
        source=f"{PLESTED_2021} (three learning-rate groups)",
    ),
    Rule(
        id="groups.far_domain_lower_at_base", target="lower_lr",
        needs=("base_lr", "split_block", "effective_lr"),
        condition=lambda v: (v["split_block"] is not None and v["effective_lr"] is not None
                             and v["effective_lr"] >= v["far_elr"]),
        effect=lambda v: v["base_lr"],
        reason="The effective learning rate {effective_lr:.3g} is in the distant decade (>= "
               "{far_elr:g}): the target is far from the source and the lower blocks must "
               "change too, so they train at the base learning rate {value:.3g}.",
        when="split_block {split_block} is set and effective_lr (SGD only) >= {far_elr:g}",
        params={"far_elr": FAR_ELR},
        confidence="low",
        search_range=lambda v: (v["base_lr"] * LOWER_LR_MIN_FACTOR, v["base_lr"]),
        source=f"{LI_2020}; Lee et al., ICLR 2023 (surgical fine-tuning); calibrated by the "
               "nbtl benchmark on fashion-mnist and mnist (docs/benchmark.md)",
    ),
    Rule(
        id="groups.lower_slower", target="lower_lr",
        needs=("base_lr", "split_block"),
        condition=lambda v: v["split_block"] is not None,
        effect=lambda v: v["base_lr"] * v["factor"],
        reason="The lower transferred blocks hold the most general features, so they train at "
               "{factor:g} x the base learning rate {base_lr:.3g} = {value:.3g}.",
        when="split_block {split_block} is set",
        params={"factor": LOWER_LR_FACTOR, "min_factor": LOWER_LR_MIN_FACTOR},
        search_range=lambda v: (v["base_lr"] * v["min_factor"], v["base_lr"]),
        source=f"{PLESTED_2021} (three learning-rate groups); {FASTAI}; {YOSINSKI_2014}",
    ),
    Rule(
        id="groups.no_lower_group", target="lower_lr",
        needs=("split_block",),
        condition=lambda v: v["split_block"] is None,
        effect=lambda v: None,
        reason="There is no split point, so there is no lower group and no lower rate.",
        when="split_block is None",
        confidence="high",
        source=f"{PLESTED_2021} (three learning-rate groups)",
    ),
    Rule(
        id="groups.far_domain_head_at_base", target="head_lr",
        needs=("base_lr", "effective_lr"),
        condition=lambda v: v["effective_lr"] is not None and v["effective_lr"] >= v["far_elr"],
        effect=lambda v: v["base_lr"],
        reason="The effective learning rate {effective_lr:.3g} is already in the distant "
               "decade (>= {far_elr:g}), so the new layers train at the base learning rate "
               "{value:.3g} with the rest.",
        when="effective_lr (SGD only) >= {far_elr:g}",
        params={"far_elr": FAR_ELR},
        confidence="low",
        search_range=lambda v: (v["base_lr"], min(v["base_lr"] * HEAD_LR_FACTOR, HEAD_LR_CAP)),
        source=f"{LI_2020}; calibrated by the nbtl benchmark on fashion-mnist and mnist "
               "(docs/benchmark.md)",
    ),
    Rule(
        id="groups.new_layers_faster", target="head_lr",
        needs=("base_lr",), condition=lambda v: True,
        effect=lambda v: min(v["base_lr"] * v["factor"], v["cap"]),
        reason="New layers (the classifier and any re-initialised block) start from random "
               "weights and need a larger effective learning rate, so they train at "
               "min({factor:g} x {base_lr:.3g}, {cap:g}) = {value:.3g}.",
        params={"factor": HEAD_LR_FACTOR, "cap": HEAD_LR_CAP},
        search_range=lambda v: (min(v["base_lr"], v["cap"]), max(v["value"], v["cap"])),
        source=f"{LI_2020} (training from scratch needs a larger ELR); {FASTAI}; factor "
               "provisional",
    ),
)
