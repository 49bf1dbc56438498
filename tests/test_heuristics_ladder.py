"""The fitted ladder (issue 19): budget-aware, never a cliff, the default kept when within noise."""

from __future__ import annotations

import itertools
import math

import pytest

import heuristics
from heuristics import MEASURE_BOUNDS, Block, advise, binary_default
from heuristics.gaps import GAPS, fit_gap
from heuristics.rules import PAPER_RULES
from heuristics.rules.fitted import MODEL
from heuristics.rules.ladder import (
    LADDER_TARGETS,
    ladder_confidence,
    plan_for,
    rung_for,
    rung_rates,
)

BLOCKS = [Block(f"blocks.{i}", (f"blocks.{i}",)) for i in range(7)]
SHORT = {"epochs": 6, "image_size": 64}
LONG = {"epochs": 12, "image_size": 96}
MEASURES = {"linear_probe_accuracy": 0.8, "knn_accuracy": 0.75, "pretraining_gain": 0.2,
            "source_confidence": 0.3, "leep": -1.2, "logme": 0.5, "bn_shift": 1.5,
            "linear_probe_accuracy_spread": 0.05}


def rec(measures=None, budget=SHORT, classes=10, images=300, **kwargs):
    return advise(MEASURES if measures is None else measures, blocks=BLOCKS,
                  num_images=images, num_classes=classes, budget=budget, **kwargs)


def accuracy_at(gap: float, classes: int) -> float:
    """The linear-probe accuracy whose gap is ``gap``."""
    chance = 1 / classes
    return 1 - gap * (1 - chance)


def steps(a, b) -> list[tuple[str, int]]:
    """The axes on which two hyperparameter sets differ, with the size of each move."""
    ha, hb = a.hyperparameters, b.hyperparameters
    out = []
    if ha.reinit_top_blocks != hb.reinit_top_blocks:
        out.append(("reinit", abs(ha.reinit_top_blocks - hb.reinit_top_blocks)))
    def rates(h) -> dict[str, float]:
        return {g.name: g.lr for g in h.lr_groups}

    # The learning-rate recipe: the base rate and the rate of every group (the head's too;
    # re-initialising a block more moves modules between groups, not rates).
    if ha.base_lr != hb.base_lr or set(rates(ha).values()) != set(rates(hb).values()):
        out.append(("learning rates", 1))
    if (ha.l2sp_weight, ha.l2_weight) != (hb.l2sp_weight, hb.l2_weight):
        out.append(("regulariser", 1))
    if ha.lp_ft != hb.lp_ft:
        out.append(("lp_ft", 1))
    return out


def test_the_ladder_starts_at_the_binary_default_and_moves_one_axis_per_rung():
    cells = [r["cell"] for r in MODEL["ladder"]]
    assert cells[0] == "r0-l2-one-0.01"
    for low, high in itertools.pairwise(MODEL["ladder"]):
        moved = [k for k in ("reinit", "reg") if low[k] != high[k]]
        moved += ["lr"] if (low["lr_mode"], low["base_lr"]) != (high["lr_mode"],
                                                                high["base_lr"]) else []
        assert len(moved) == 1, (low["cell"], high["cell"])
        assert abs(low["reinit"] - high["reinit"]) <= 1


def test_rungs_change_one_at_a_time_and_pieces_are_at_least_min_spacing_wide():
    for spec in MODEL["budgets"].values():
        pieces = spec["pieces"]
        for a, b in itertools.pairwise(pieces):
            assert abs(a["rung"] - b["rung"]) == 1
            assert b["from"] - a["from"] >= MODEL["min_spacing"] - 1e-9


@pytest.mark.parametrize("classes", [2, 3, 10])
@pytest.mark.parametrize("budget", ["short", "long"])
def test_no_cliffs_a_small_change_of_any_measure_moves_one_step_on_one_axis_at_most(
        classes, budget):
    """Around every change of rung, and at points between, a change of each measure by
    0.002 (in its own units) moves the advice by at most one step on one axis."""
    plan = {"epochs": MODEL["budgets"][budget]["epochs"],
            "image_size": MODEL["budgets"][budget]["image_size"]}
    edges = [p["from"] for p in MODEL["budgets"][budget]["pieces"]]
    gaps = sorted({max(0.0, x + d) for x in edges for d in (-0.003, -0.001, 0.0, 0.001, 0.003)}
                  | {i / 20 for i in range(20)})
    delta = 0.002
    for gap in gaps:
        base = dict(MEASURES, linear_probe_accuracy=accuracy_at(gap, classes))
        if not 0 <= base["linear_probe_accuracy"] <= 1:
            continue
        here = rec(base, plan, classes)
        for name in MEASURES:
            for sign in (-1, 1):
                moved = dict(base, **{name: base[name] + sign * delta})
                lo, hi = MEASURE_BOUNDS.get(name) or (-math.inf, math.inf)
                if not lo <= moved[name] <= hi:
                    continue
                there = rec(moved, plan, classes)
                change = steps(here, there)
                assert len(change) <= 1 and all(size == 1 for _, size in change), (
                    gap, name, sign, change)


def test_a_small_change_crossing_a_threshold_does_move_the_advice_one_step():
    """The test above is not vacuous: some perturbation does cross a change of rung."""
    short = MODEL["budgets"]["short"]["pieces"]
    if len(short) < 2:
        pytest.skip("the fitted short budget has a single rung")
    x = short[1]["from"]
    below = rec(dict(MEASURES, linear_probe_accuracy=accuracy_at(x - 0.001, 10)))
    above = rec(dict(MEASURES, linear_probe_accuracy=accuracy_at(x + 0.001, 10)))
    assert len(steps(below, above)) == 1


def test_the_planned_budget_is_matched_by_compute_per_image():
    assert plan_for(6, 64).budget == "short" and not plan_for(6, 64).extrapolated
    assert plan_for(12, 96).budget == "long" and not plan_for(12, 96).extrapolated
    far = plan_for(200, 224)
    assert far.budget == "long" and far.extrapolated
    assert plan_for(2, 32).budget == "short" and plan_for(2, 32).extrapolated
    assert plan_for(10, 64).budget == "short"  # 10 units: nearer 6 than 27 on a log scale
    assert plan_for(12, 80).budget == "long"  # 18.75 units


def test_the_json_records_the_budget_the_advice_is_for():
    doc = rec(budget={"epochs": 30, "image_size": 128}).to_dict()
    budget = doc["ladder"]["budget"]
    assert budget == {"epochs": 30, "image_size": 128,
                      "benchmark_budget": plan_for(30, 128).budget,
                      "benchmark_epochs": plan_for(30, 128).budget_epochs,
                      "benchmark_image_size": plan_for(30, 128).budget_image_size,
                      "extrapolated": plan_for(30, 128).extrapolated,
                      "epochs_from": "budget"}
    assert doc["ladder"]["gap"] == {"name": MODEL["gap"], "value": pytest.approx(
        fit_gap(MODEL["gap"], MEASURES, 10))}


def test_without_a_budget_the_rule_tables_epochs_at_224_px_are_the_plan():
    doc = rec(budget=None).to_dict()
    assert doc["ladder"]["budget"]["epochs"] == doc["hyperparameters"]["epochs"]
    assert doc["ladder"]["budget"]["image_size"] == 224
    assert doc["ladder"]["budget"]["epochs_from"] == "rule table"
    assert "recommendation's own budget" in doc["details"]["reinit_top_blocks"]["reason"]
    overridden = rec(budget=None, overrides={"epochs": 6}).to_dict()
    assert overridden["ladder"]["budget"]["epochs"] == 6
    assert overridden["ladder"]["budget"]["epochs_from"] == "epochs override"
    assert "budget you plan" in overridden["details"]["reinit_top_blocks"]["reason"]


@pytest.mark.parametrize("bad", [{"epochs": 0}, {"image_size": -3}, {"epochs": 2.5},
                                 {"steps": 10}, {"epochs": True}])
def test_a_bad_budget_is_refused_with_a_message_naming_it(bad):
    with pytest.raises(ValueError, match="budget"):
        rec(budget=bad)


def test_at_rung_zero_every_ladder_value_is_the_binary_default_and_says_so():
    for gap in (0.0, 0.01):
        r = rec(dict(MEASURES, linear_probe_accuracy=accuracy_at(gap, 10)))
        assert r.to_dict()["ladder"]["rung"] == 0 and r.to_dict()["ladder"]["keep_default"]
        default = binary_default(head_modules=("classifier",))
        hp = r.hyperparameters
        assert hp.reinit_top_blocks == 0 and hp.l2sp_weight == 0
        assert {g.lr for g in hp.lr_groups} == {default.base_lr}
        assert hp.l2_weight == default.l2_weight
        for target in LADDER_TARGETS:
            detail = r.details[target]
            assert detail.set_by == f"ladder.{target}"
            assert "binary default" in detail.reason and "benchmark" in detail.reason


def test_a_climbed_rung_names_its_evidence_and_sets_the_grids_recipe():
    spec = MODEL["budgets"]["short"]
    top = spec["pieces"][-1]
    if top["rung"] == 0:
        pytest.skip("the fitted short budget never leaves the default")
    gap = top["from"] + 0.05
    r = rec(dict(MEASURES, linear_probe_accuracy=accuracy_at(gap, 10)))
    rung = MODEL["ladder"][top["rung"]]
    hp = r.hyperparameters
    rates = rung_rates(rung)
    assert hp.reinit_top_blocks == rung["reinit"]
    assert {g.name: g.lr for g in hp.lr_groups}["head"] == pytest.approx(rates["head_lr"])
    assert {g.name: g.lr for g in hp.lr_groups}["upper"] == pytest.approx(rates["upper_lr"])
    assert r.to_dict()["ladder"]["rung"] == top["rung"]
    reason = r.details["reinit_top_blocks"].reason
    assert f"{top['evidence']['tasks']} benchmark tasks" in reason
    assert "points over the binary default" in reason


def test_at_the_long_budget_the_fit_keeps_the_default_where_the_benchmark_found_no_gain():
    for gap in (0.05, 0.2, 0.5):
        rung = rung_for(gap, "long")
        r = rec(dict(MEASURES, linear_probe_accuracy=accuracy_at(gap, 10)), LONG)
        assert r.to_dict()["ladder"]["rung"] == rung
    if all(p["rung"] == 0 for p in MODEL["budgets"]["long"]["pieces"]):
        assert rec(budget=LONG).to_dict()["ladder"]["keep_default"]


def test_a_users_base_lr_carries_the_rungs_recipe():
    spec = MODEL["budgets"]["short"]
    top = spec["pieces"][-1]
    r = rec(dict(MEASURES, linear_probe_accuracy=accuracy_at(top["from"] + 0.05, 10)),
            overrides={"base_lr": 0.02})
    expected = rung_rates(MODEL["ladder"][top["rung"]], base=0.02)
    got = {g.name: g.lr for g in r.hyperparameters.lr_groups}
    assert got["upper"] == pytest.approx(expected["upper_lr"])
    assert got["head"] == pytest.approx(expected["head_lr"])
    assert r.details["base_lr"].confidence == "user"


def test_a_users_reinit_wins_and_the_ladder_sets_the_rest():
    r = rec(dict(MEASURES, linear_probe_accuracy=0.99), overrides={"reinit_top_blocks": 2})
    assert r.hyperparameters.reinit_top_blocks == 2
    assert r.details["base_lr"].set_by == "ladder.base_lr"


def test_without_the_gaps_measure_the_paper_rules_decide():
    measure = GAPS[MODEL["gap"]][0]
    without = {k: v for k, v in MEASURES.items() if k != measure}
    r = rec(without)
    assert r.to_dict()["ladder"] is None
    assert not r.details["reinit_top_blocks"].set_by.startswith("ladder.")
    paper = advise(without, blocks=BLOCKS, num_images=300, num_classes=10, rules=PAPER_RULES)
    assert r.hyperparameters.reinit_top_blocks == paper.hyperparameters.reinit_top_blocks
    assert r.hyperparameters.base_lr == paper.hyperparameters.base_lr


def test_the_paper_rules_adjustments_do_not_touch_the_ladders_values():
    # A far source head would make the paper's rules re-initialise blocks; the ladder rules.
    r = rec(dict(MEASURES, linear_probe_accuracy=0.99, source_confidence=0.05))
    assert r.hyperparameters.reinit_top_blocks == MODEL["ladder"][
        rung_for(fit_gap(MODEL["gap"], dict(MEASURES, linear_probe_accuracy=0.99), 10),
                 "short")]["reinit"]
    fired = {t.rule for t in r.trace if t.fired}
    assert "reinit.far_domain_renews_top" not in fired
    assert "lr.stand_ins_disagree" not in fired


def test_confidence_is_low_near_a_change_of_rung_and_high_far_from_one():
    pieces = MODEL["budgets"]["short"]["pieces"]
    if len(pieces) < 2:
        pytest.skip("one rung")
    edge = pieces[1]["from"]
    assert ladder_confidence(MODEL, edge + 0.001, "short") == "low"
    far = max(MODEL["budgets"]["short"]["gap_range"][1] - 0.001, pieces[-1]["from"] + 0.1)
    assert ladder_confidence(MODEL, min(far, MODEL["budgets"]["short"]["gap_range"][1]),
                             "short") in ("medium", "high")
    assert ladder_confidence(MODEL, 5.0, "short") != "high"  # beyond the benchmark's gaps


def test_an_extrapolated_budget_caps_the_confidence_at_medium():
    r = rec(budget={"epochs": 300, "image_size": 384})
    assert r.to_dict()["ladder"]["budget"]["extrapolated"]
    assert r.details["ladder_rung" if "ladder_rung" in r.details else "reinit_top_blocks"
                     ].confidence in ("low", "medium", "user")


def test_the_same_inputs_give_the_same_json():
    assert rec().to_dict() == rec().to_dict()


def test_every_need_of_the_fitted_table_is_an_input_a_derived_quantity_or_an_earlier_target():
    facts = {"num_images", "num_classes", "num_blocks", "block_names", "planned_epochs",
             "planned_image_size", "planned_from"}
    inputs = facts | set(MEASURE_BOUNDS) | {f"profile.{m}" for m in MEASURE_BOUNDS}
    earlier = set(heuristics.OVERRIDABLE)

    def known(name: str) -> bool:
        if name in heuristics.DERIVED:
            return all(known(i) for i in heuristics.DERIVED[name].inputs)
        return name in inputs or name in earlier

    for rule in heuristics.RULES:
        unknown = [n for n in rule.needs if not known(n)]
        assert not unknown, (rule.id, unknown)
        earlier.add(rule.target)


def test_the_verdicts_confidence_is_capped_by_the_cautions_like_every_value():
    few = rec(images=40)  # 4 images per class: the too-few-images caution caps at low
    assert few.warnings
    assert few.to_dict()["ladder"]["confidence"] == "low"
    assert few.details["reinit_top_blocks"].confidence == "low"
