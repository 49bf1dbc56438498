"""The companions of the non-binary choices: effective learning rate, batch, budget, schedule,
LP-FT, label smoothing, what the penalties cover, and a recommendation without blocks."""

from __future__ import annotations

import functools
import json
import math

import pytest

from heuristics import Block, advise
from heuristics.rules import PAPER_RULES
from heuristics.rules.budget import (
    BATCH_SIZE,
    BUDGET_STEPS,
    LABEL_SMOOTHING,
    MAX_EPOCHS,
    MIN_BATCH_SIZE,
    MIN_EPOCHS,
    WARMUP_EPOCHS,
)
from heuristics.rules.lpft import LP_FT_MIN_PROBE
from heuristics.rules.lr import MOMENTUM

# These tests pin the paper's rule table; the fitted ladder that now leads heuristics.RULES
# (issue 19) has its own tests in test_heuristics_ladder.py.
advise = functools.partial(advise, rules=PAPER_RULES)

BLOCKS = tuple(Block(f"stage{i}", (f"blocks.{i}", f"blocks.{i}.bn")) for i in range(1, 7))
HEAD = ("classifier",)
GOOD_FIT = {"linear_probe_accuracy": 0.8, "scratch_accuracy": 0.6}
POOR_FIT = {"linear_probe_accuracy": 0.5, "scratch_accuracy": 0.8}


def hp(measures=None, **kwargs):
    kwargs.setdefault("blocks", BLOCKS)
    kwargs.setdefault("head_modules", HEAD)
    return advise(measures or {}, **kwargs).hyperparameters


def groups(h) -> dict:
    return {g.name: g for g in h.lr_groups}


# --- Effective learning rate ------------------------------------------------------------------


def test_effective_lr_is_the_lr_over_one_minus_momentum():
    h = hp({"linear_probe_accuracy": 0.75}, num_classes=10)
    assert h.effective_lr == pytest.approx(h.base_lr / (1 - MOMENTUM))


def test_effective_lr_range_is_the_decade_the_stand_in_points_to():
    rec = advise({"linear_probe_accuracy": 0.75}, num_classes=10)  # middle decade
    lo, hi = rec.details["effective_lr"].range
    assert (lo, hi) == (pytest.approx(1e-2), pytest.approx(1e-1))


# --- Batch and budget -------------------------------------------------------------------------


def test_batch_is_the_papers_on_a_large_dataset():
    assert hp(num_images=10_000, num_classes=10).batch_size == BATCH_SIZE


@pytest.mark.parametrize(("num_images", "batch"), [(200, 16), (100, 8), (30, MIN_BATCH_SIZE)])
def test_batch_shrinks_on_a_small_dataset(num_images, batch):
    assert hp(num_images=num_images, num_classes=10).batch_size == batch


def test_epochs_make_kornblith_steps_at_the_recommended_batch():
    h = hp(num_images=8144, num_classes=196)  # Stanford Cars: 254 steps per epoch at batch 32
    assert h.epochs == math.ceil(BUDGET_STEPS / (8144 // 32))
    assert h.steps == h.epochs * (8144 // 32)


def test_epochs_stop_at_the_papers_default_on_a_small_dataset():
    assert hp(num_images=200, num_classes=10).epochs == MAX_EPOCHS


def test_epochs_do_not_fall_below_the_minimum_on_a_large_dataset():
    assert hp(num_images=1_000_000, num_classes=1000).epochs == MIN_EPOCHS


def test_without_a_dataset_size_epochs_default_and_steps_are_unknown():
    rec = advise({})
    assert rec.hyperparameters.epochs == MAX_EPOCHS
    assert rec.hyperparameters.steps is None
    assert {"epochs", "steps"} <= set(rec.defaults_used)


def test_budget_reason_shows_the_arithmetic():
    rec = advise({}, num_images=8144, num_classes=196)
    assert "254 steps per epoch" in rec.details["epochs"].reason
    assert "Kornblith" in rec.details["epochs"].source


# --- Schedule and loss ------------------------------------------------------------------------


def test_schedule_is_cosine_after_the_papers_warmup():
    h = hp(num_images=10_000, num_classes=10)
    assert (h.schedule, h.warmup_epochs) == ("cosine", WARMUP_EPOCHS)


def test_warmup_shrinks_to_a_tenth_of_a_short_budget():
    h = hp(num_images=1_000_000, num_classes=1000)  # 10 epochs
    assert h.warmup_epochs == 1


def test_label_smoothing_is_the_papers():
    assert hp().label_smoothing == LABEL_SMOOTHING


# --- LP-FT ----------------------------------------------------------------------------------


def test_lp_ft_when_the_probe_is_already_strong():
    rec = advise({"linear_probe_accuracy": 0.9}, num_classes=10, num_images=1000)
    assert rec.hyperparameters.lp_ft is True
    assert rec.hyperparameters.lp_epochs == round(rec.hyperparameters.epochs / 10)
    assert "Kumar" in rec.details["lp_ft"].source


def test_no_lp_ft_when_the_probe_is_weak():
    h = hp({"linear_probe_accuracy": 0.4}, num_classes=10)
    assert (h.lp_ft, h.lp_epochs) == (False, 0)


def test_lp_ft_threshold_is_on_the_chance_normalised_accuracy():
    # 0.75 raw accuracy over 2 classes is 0.5 chance-normalised: below the threshold.
    assert 0.75 > LP_FT_MIN_PROBE > (0.75 - 0.5) / 0.5
    assert hp({"linear_probe_accuracy": 0.75}, num_classes=2).lp_ft is False


# --- What the penalties cover -----------------------------------------------------------------


def test_l2sp_covers_the_lower_group_and_l2_everything_else():
    h = hp(GOOD_FIT)
    g = groups(h)
    assert h.l2sp_modules == g["lower"].modules
    assert h.l2_modules == g["head"].modules + g["upper"].modules
    assert (g["lower"].penalty, g["upper"].penalty, g["head"].penalty) == ("l2sp", "l2", "l2")


def test_with_l2sp_off_l2_covers_every_module():
    h = hp(POOR_FIT)
    every = [m for b in BLOCKS for m in b.modules] + list(HEAD)
    assert sorted(h.l2_modules) == sorted(every)
    assert h.l2sp_modules == ()


def test_batchnorm_is_under_neither_penalty_and_the_output_says_so():
    rec = advise(GOOD_FIT)
    assert rec.hyperparameters.exclude_from_decay == ("batchnorm",)
    assert "BatchNorm" in rec.details["exclude_from_decay"].reason


def test_with_one_transferred_block_l2sp_covers_it():
    h = hp(GOOD_FIT, blocks=BLOCKS[:1])
    assert h.split_block is None
    assert h.l2sp_modules == BLOCKS[0].modules
    assert h.l2_modules == HEAD


# --- No blocks, no measures ------------------------------------------------------------------


def test_an_empty_mapping_without_blocks_gives_a_complete_json_recommendation():
    doc = advise({}).to_dict()
    assert json.loads(json.dumps(doc, allow_nan=False)) == doc
    assert set(doc) == {"hyperparameters", "details", "reasons", "trace", "defaults_used",
                        "overrides", "warnings", "ladder"}
    assert all(d["reason"] for d in doc["details"].values())


def test_without_blocks_the_backbone_is_one_group_at_the_base_rate_and_says_so():
    rec = advise({})
    g = groups(rec.hyperparameters)
    assert set(g) == {"head", "backbone"}
    assert g["backbone"].rest and g["backbone"].modules == ()
    assert g["backbone"].lr == rec.hyperparameters.base_lr
    assert "No blocks were given" in rec.details["upper_lr"].reason
    assert rec.details["lower_lr"].value is None


def test_without_blocks_the_fit_still_decides_l2sp_for_the_backbone():
    h = advise({"pretraining_gain": 0.3}).hyperparameters
    assert h.l2sp_weight > 0
    assert groups(h)["backbone"].penalty == "l2sp"
