"""The probes' newer measures: valid intervals, and the rules that read them (k-NN and
BatchNorm-shift profiles for re-initialisation, the source head's confidence for the
learning-rate decade)."""

from __future__ import annotations

import functools
import math

import pytest

from heuristics import Block, advise
from heuristics.rules import PAPER_RULES
from heuristics.rules.lr import ELR_DISTANT, ELR_MIDDLE, ELR_SIMILAR, MOMENTUM

# These tests pin the paper's rule table; the fitted ladder that now leads heuristics.RULES
# (issue 19) has its own tests in test_heuristics_ladder.py.
advise = functools.partial(advise, rules=PAPER_RULES)

BLOCKS = tuple(Block(f"stage{i}", (f"blocks.{i}",)) for i in range(1, 7))
RISING = [0.30, 0.42, 0.51, 0.58, 0.60, 0.62]
PEAKED = [0.30, 0.42, 0.51, 0.60, 0.64, 0.60]
SHIFT_JUMPS_AT_TOP = [0.10, 0.12, 0.15, 0.18, 0.20, 0.60]  # 3x into the top block
SHIFT_SMOOTH = [0.10, 0.12, 0.15, 0.18, 0.20, 0.24]


def with_profile(profile, measures=None, **kwargs):
    return advise(measures or {}, profile=profile, blocks=BLOCKS, **kwargs)


def fired(rec) -> set[str]:
    return {t.rule for t in rec.trace if t.fired}


# --- Valid intervals --------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "value"), [
    ("knn_accuracy", 1.2), ("h_score", -1.0), ("shrinkage_h_score", -0.5), ("gbc", 0.3),
    ("bn_shift", -0.1), ("leep", 0.2), ("nce", 0.1), ("source_confidence", 1.5),
    ("source_entropy", -0.2),
])
def test_a_measure_outside_its_interval_is_rejected_by_name(name, value):
    with pytest.raises(ValueError, match=name):
        advise({name: value})


@pytest.mark.parametrize(("name", "value"), [
    ("knn_accuracy", 0.9), ("h_score", 12.0), ("shrinkage_h_score", 0.0), ("transrate", -3.0),
    ("gbc", -40.0), ("bn_shift", 0.0), ("leep", -2.1), ("nce", -1.5),
    ("source_confidence", 0.7), ("source_entropy", 0.4), ("logme", -0.8),
])
def test_a_measure_inside_its_interval_is_accepted(name, value):
    rec = advise({name: value})
    assert rec.to_dict()["hyperparameters"]


def test_float_round_off_just_outside_a_bound_is_clamped_not_rejected():
    rec = advise({"leep": 1e-15, "scratch_accuracy": 1 + 1e-12,
                  "linear_probe_accuracy": 0.5})
    assert rec.details["l2sp_weight"].measures["scratch_accuracy"] == 1.0


def test_a_per_block_measure_outside_its_interval_is_rejected_by_block():
    with pytest.raises(ValueError, match=r"'bn_shift'\[1\] \(stage2\)"):
        with_profile({"bn_shift": [0.1, -1.0, 0.2, 0.3, 0.4, 0.5]})


# --- k-NN profile -----------------------------------------------------------------------------


def test_knn_profile_decides_when_the_probe_profile_is_missing():
    rec = with_profile({"knn_accuracy": PEAKED})
    assert rec.hyperparameters.reinit_top_blocks == 1
    assert rec.details["reinit_top_blocks"].set_by == "reinit.knn_peaks_below_top"


def test_probe_profile_outranks_the_knn_profile():
    rec = with_profile({"linear_probe_accuracy": RISING, "knn_accuracy": PEAKED})
    assert rec.hyperparameters.reinit_top_blocks == 0
    assert "reinit.knn_peaks_below_top" not in fired(rec)


# --- BatchNorm shift by depth -----------------------------------------------------------------


def test_a_bn_shift_jump_into_the_top_block_reinitialises_it():
    rec = with_profile({"bn_shift": SHIFT_JUMPS_AT_TOP})
    assert rec.hyperparameters.reinit_top_blocks == 1
    detail = rec.details["reinit_top_blocks"]
    assert detail.set_by == "reinit.bn_shift_jumps_at_top"
    assert "3x" in detail.reason and "stage5 to stage6" in detail.reason
    assert detail.confidence == "low"


def test_a_jump_into_the_second_highest_block_reinitialises_two():
    rec = with_profile({"bn_shift": [0.10, 0.12, 0.15, 0.18, 0.50, 0.55]})
    assert rec.hyperparameters.reinit_top_blocks == 2


def test_a_jump_below_the_top_blocks_is_not_read():
    rec = with_profile({"bn_shift": [0.10, 0.12, 0.50, 0.55, 0.60, 0.66]})
    assert rec.hyperparameters.reinit_top_blocks == 0
    assert "reinit.bn_shift_no_jump" in fired(rec)


def test_a_smoothly_rising_bn_shift_reinitialises_nothing():
    rec = with_profile({"bn_shift": SHIFT_SMOOTH})
    assert rec.hyperparameters.reinit_top_blocks == 0
    assert rec.details["reinit_top_blocks"].set_by == "reinit.bn_shift_no_jump"


def test_a_shift_from_zero_counts_as_a_jump():
    rec = with_profile({"bn_shift": [0.0, 0.0, 0.0, 0.0, 0.0, 0.3]})
    assert rec.hyperparameters.reinit_top_blocks == 1
    assert "infx" in rec.details["reinit_top_blocks"].reason


def test_separability_outranks_the_bn_shift():
    rec = with_profile({"linear_probe_accuracy": RISING, "bn_shift": SHIFT_JUMPS_AT_TOP})
    assert rec.hyperparameters.reinit_top_blocks == 0
    assert "reinit.bn_shift_jumps_at_top" not in fired(rec)


def test_the_bn_shift_jump_still_obeys_the_caps():
    rec = with_profile({"bn_shift": SHIFT_JUMPS_AT_TOP}, num_images=40, num_classes=10)
    assert rec.hyperparameters.reinit_top_blocks == 0
    assert "reinit.size_cap" in fired(rec)


# --- The source head's confidence and the learning-rate decade --------------------------------


@pytest.mark.parametrize(("confidence", "decade"), [
    (0.8, ELR_SIMILAR), (0.45, ELR_MIDDLE), (0.1, ELR_DISTANT)])
def test_source_confidence_picks_the_decade_without_a_probe(confidence, decade):
    rec = advise({"source_confidence": confidence})
    elr = rec.hyperparameters.effective_lr
    assert decade[0] < elr < decade[1]
    assert rec.details["base_lr"].confidence == "low"


def test_the_probe_outranks_the_source_head():
    rec = advise({"linear_probe_accuracy": 0.95, "source_confidence": 0.95},
                 num_classes=10)
    assert rec.details["base_lr"].set_by == "lr.similar_domain"


def test_disagreeing_stand_ins_widen_the_range_and_lower_the_confidence():
    agree = advise({"linear_probe_accuracy": 0.95, "source_confidence": 0.9},
                   num_classes=10)
    disagree = advise({"linear_probe_accuracy": 0.95, "source_confidence": 0.1},
                      num_classes=10)
    # the farther decade wins (calibrated on the benchmark's fit datasets)
    assert disagree.hyperparameters.effective_lr == pytest.approx(
        math.sqrt(ELR_DISTANT[0] * ELR_DISTANT[1]))
    assert agree.hyperparameters.effective_lr == pytest.approx(
        math.sqrt(ELR_SIMILAR[0] * ELR_SIMILAR[1]))
    assert disagree.details["base_lr"].confidence == "low"
    lo, hi = disagree.details["base_lr"].range
    assert lo == pytest.approx(ELR_SIMILAR[0] * (1 - MOMENTUM))
    assert hi == pytest.approx(ELR_DISTANT[1] * (1 - MOMENTUM))
    assert "lr.stand_ins_disagree" not in fired(agree)


def test_measures_no_rule_reads_leave_the_hyperparameters_unchanged():
    plain = advise({}).to_dict()["hyperparameters"]
    scored = advise({"source_entropy": 0.3, "h_score": 5.0, "transrate": 1.0,
                     "gbc": -2.0, "leep": -1.0, "nce": -1.0}).to_dict()["hyperparameters"]
    assert scored == plain
