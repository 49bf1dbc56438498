"""The training protocol around the non-binary choices: batch, budget, schedule, loss.

Areas ``budget`` (batch size, epochs, steps), ``schedule`` (decay, warm-up) and ``loss`` (label
smoothing). The paper's code fixes these (batch 32, 3 warm-up epochs, label smoothing 0.1); the
budget follows Kornblith et al. 2019's fixed number of steps, scaled to the dataset size.
Steps per epoch drop the last partial batch, as the training loop does.
"""

from __future__ import annotations

import math

from heuristics.rules.common import (
    CODE,
    KORNBLITH_2019,
    LI_2018,
    LOSHCHILOV_2017,
    SZEGEDY_2016,
    always,
)
from heuristics.types import Derived, Rule, View

# Batch: 32 in the paper's code (`--batch-size` default); Li et al. 2018 use 64.
BATCH_SIZE = 32
BATCH_SIZE_CHOICES = (16, 32, 64)
# A small target still needs this many steps per epoch, and a batch of at least MIN_BATCH_SIZE
# for BatchNorm's batch statistics (Wu & He, ECCV 2018: BatchNorm degrades with small batches).
# Provisional nbtl choices.
MIN_STEPS_PER_EPOCH = 10
MIN_BATCH_SIZE = 8
# Budget: Kornblith et al. 2019 fine-tune for 20,000 steps (at batch 256). Here: that many
# steps at the recommended batch, kept within [MIN_EPOCHS, MAX_EPOCHS]; 200 is the paper code's
# `--epochs` default, also used without a dataset size. Provisional nbtl scaling.
BUDGET_STEPS = 20_000
MIN_EPOCHS = 10
MAX_EPOCHS = 200
# Schedule: the paper's code warms up for 3 epochs, then decays 10x every 30 epochs (step).
# Cosine decay (Loshchilov & Hutter 2017) needs no decay points, so it follows any budget;
# the warm-up is kept to at most a tenth of the budget (provisional).
SCHEDULE = "cosine"
SCHEDULES = ("cosine", "step", "constant")
WARMUP_EPOCHS = 3
WARMUP_MAX_FRACTION = 0.1
# Loss: label smoothing 0.1 in the paper's code (`--smoothing`), the value of Szegedy et al.
# 2016; range up to 0.2, provisional.
LABEL_SMOOTHING = 0.1
LABEL_SMOOTHING_RANGE = (0.0, 0.2)


def batch_cap(num_images: int) -> int:
    """The largest power of two giving at least MIN_STEPS_PER_EPOCH steps, >= MIN_BATCH_SIZE."""
    fits = num_images // MIN_STEPS_PER_EPOCH
    return max(MIN_BATCH_SIZE, 2 ** int(math.log2(fits)) if fits >= 1 else 1)


def _around(value: int, lo: int, hi: int) -> tuple[int, ...]:
    # Half, the value and double, within [lo, hi].
    return tuple(sorted({max(lo, value // 2), value, min(hi, value * 2)}))


DERIVED = (
    Derived("batch_cap", ("num_images",), lambda v: batch_cap(v["num_images"]),
            "largest power-of-two batch that leaves MIN_STEPS_PER_EPOCH steps per epoch"),
    Derived("steps_per_epoch", ("num_images", "batch_size"),
            lambda v: max(1, v["num_images"] // v["batch_size"]),
            "optimiser steps per epoch, the last partial batch dropped"),
    Derived("epochs_for_budget", ("steps_per_epoch",),
            lambda v: math.ceil(BUDGET_STEPS / v["steps_per_epoch"]),
            "epochs that make BUDGET_STEPS steps"),
)


def _clamped_epochs(v: View) -> int:
    return min(max(v["epochs_for_budget"], v["min_epochs"]), v["max_epochs"])


RULES = (
    Rule(
        id="budget.paper_batch_size", target="batch_size",
        needs=(), condition=always, effect=lambda v: v["batch"],
        reason="Batch size {value}, as in the paper's code.",
        params={"batch": BATCH_SIZE},
        confidence="medium",
        search_range=lambda v: BATCH_SIZE_CHOICES,
        source=f"{CODE}; 64 in {LI_2018}",
    ),
    Rule(
        id="budget.batch_fits_dataset", target="batch_size", kind="adjust",
        needs=("batch_size", "batch_cap", "num_images"),
        condition=lambda v: v["batch_size"] > v["batch_cap"],
        effect=lambda v: v["batch_cap"],
        reason="With {num_images} images, batches of {previous} would leave fewer than "
               "{min_steps} steps per epoch, so the batch is {value} (a power of two, at least "
               "{min_batch} for BatchNorm's batch statistics).",
        when="batch_size {batch_size} > {batch_cap} at {num_images} images",
        params={"min_steps": MIN_STEPS_PER_EPOCH, "min_batch": MIN_BATCH_SIZE},
        confidence="medium",
        search_range=lambda v: _around(v["value"], MIN_BATCH_SIZE, v["value"]),
        source="nbtl provisional (Wu & He, ECCV 2018: BatchNorm degrades with small batches)",
    ),
    Rule(
        id="budget.kornblith_steps", target="epochs",
        needs=("epochs_for_budget", "steps_per_epoch", "num_images", "batch_size"),
        condition=always,
        effect=_clamped_epochs,
        reason="Kornblith et al. 2019 fine-tune for {budget_steps} steps; at {steps_per_epoch} "
               "steps per epoch ({num_images} images, batch {batch_size}) that is "
               "{epochs_for_budget} epochs, kept within [{min_epochs}, {max_epochs}]: "
               "{value} epochs.",
        when="num_images {num_images} known",
        params={"budget_steps": BUDGET_STEPS, "min_epochs": MIN_EPOCHS,
                "max_epochs": MAX_EPOCHS},
        confidence="low",
        search_range=lambda v: _around(v["value"], MIN_EPOCHS, MAX_EPOCHS),
        source=f"{KORNBLITH_2019} (20,000 steps); 200 epochs is the default of the {CODE}; "
               "the scaling to a batch and dataset size is provisional",
    ),
    Rule(
        id="budget.default_epochs", target="epochs", kind="default",
        needs=(), condition=always, effect=lambda v: v["epochs"],
        reason="Default: without num_images, {value} epochs, the default of the paper's code.",
        when="no earlier rule set epochs",
        params={"epochs": MAX_EPOCHS},
        confidence="low",
        search_range=lambda v: (v["value"] // 4, v["value"] // 2, v["value"]),
        source=CODE,
    ),
    Rule(
        id="budget.steps_from_epochs", target="steps",
        needs=("epochs", "steps_per_epoch"), condition=always,
        effect=lambda v: v["epochs"] * v["steps_per_epoch"],
        reason="{epochs} epochs of {steps_per_epoch} steps: {value} optimiser steps.",
        when="steps_per_epoch known",
        confidence="high",
        search_range=lambda v: tuple(e * v["steps_per_epoch"] for e in v["ranges"]["epochs"]),
        source="arithmetic (the last partial batch of an epoch dropped)",
    ),
    Rule(
        id="budget.steps_unknown", target="steps", kind="default",
        needs=(), condition=always, effect=lambda v: None,
        reason="Default: without num_images the number of steps is unknown.",
        when="no earlier rule set steps",
        confidence="low",
        source="arithmetic",
    ),
    Rule(
        id="schedule.cosine_after_warmup", target="schedule",
        needs=(), condition=always, effect=lambda v: v["schedule"],
        reason="Cosine decay after a linear warm-up: it needs no decay points, so it follows "
               "any budget (the paper's code decays 10x every 30 epochs after 3 warm-up "
               "epochs).",
        params={"schedule": SCHEDULE},
        confidence="medium",
        search_range=lambda v: ("cosine", "step"),
        source=f"{LOSHCHILOV_2017}; step schedule of the {CODE}",
    ),
    Rule(
        id="schedule.paper_warmup", target="warmup_epochs",
        needs=(), condition=always, effect=lambda v: v["warmup"],
        reason="{value} warm-up epochs, as in the paper's code.",
        params={"warmup": WARMUP_EPOCHS},
        confidence="medium",
        search_range=lambda v: tuple(range(v["value"] + 1)),
        source=CODE,
    ),
    Rule(
        id="schedule.warmup_within_budget", target="warmup_epochs", kind="adjust",
        needs=("warmup_epochs", "epochs"),
        condition=lambda v: v["warmup_epochs"] > max(1, int(v["epochs"] * v["fraction"])),
        effect=lambda v: max(1, int(v["epochs"] * v["fraction"])),
        reason="A warm-up of {previous} epochs would take more than {fraction:g} of the "
               "{epochs}-epoch budget, so it is {value} epoch(s).",
        when="warmup_epochs {warmup_epochs} > {fraction:g} x {epochs} epochs",
        params={"fraction": WARMUP_MAX_FRACTION},
        confidence="medium",
        search_range=lambda v: tuple(range(v["value"] + 1)),
        source="nbtl provisional",
    ),
    Rule(
        id="loss.paper_label_smoothing", target="label_smoothing",
        needs=(), condition=always, effect=lambda v: v["smoothing"],
        reason="Label smoothing {value:g}, as in the paper's code.",
        params={"smoothing": LABEL_SMOOTHING},
        confidence="medium",
        search_range=lambda v: LABEL_SMOOTHING_RANGE,
        source=f"{CODE}; {SZEGEDY_2016}",
    ),
)
