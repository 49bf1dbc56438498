"""User overrides: a value the user sets wins over every rule, moves what depends on it, and
is marked as the user's everywhere (details, reasons, trace, to_dict)."""

from __future__ import annotations

import functools
import json

import pytest

from heuristics import OVERRIDABLE, Block, advise, parse_override
from heuristics.rules import DECIDED, PAPER_RULES
from heuristics.rules.groups import HEAD_LR_FACTOR, LOWER_LR_FACTOR

# These tests pin the paper's rule table; the fitted ladder that now leads heuristics.RULES
# (issue 19) has its own tests in test_heuristics_ladder.py.
advise = functools.partial(advise, rules=PAPER_RULES)

BLOCKS = tuple(Block(f"stage{i}", (f"blocks.{i}",)) for i in range(1, 7))
HEAD = ("classifier",)
PEAKED = [0.30, 0.42, 0.51, 0.60, 0.64, 0.60]  # the profile re-initialises the top block
FITS = {"linear_probe_accuracy": 0.75, "scratch_accuracy": 0.6}


def rec_with(overrides=None, measures=FITS, **kwargs):
    kwargs.setdefault("profile", {"linear_probe_accuracy": PEAKED})
    return advise(measures, blocks=BLOCKS, head_modules=HEAD, num_images=5000,
                  num_classes=10, overrides=overrides, **kwargs)


def groups(rec) -> dict:
    return {g.name: g for g in rec.hyperparameters.lr_groups}


# --- The override wins, and is marked -------------------------------------------------------


def test_an_override_wins_over_the_rule_that_would_decide():
    assert rec_with().hyperparameters.l2sp_weight > 0
    rec = rec_with({"l2sp_weight": 0.0})
    assert rec.hyperparameters.l2sp_weight == 0.0
    assert rec.hyperparameters.l2sp_modules == ()


def test_an_override_wins_over_a_cap():
    # The size cap allows 0 re-initialised blocks at 3 images per class; the user wants 2.
    rec = advise({}, blocks=BLOCKS, num_images=30, num_classes=10,
                 overrides={"reinit_top_blocks": 2})
    assert rec.hyperparameters.reinit_top_blocks == 2
    why = {t.rule: t.why for t in rec.trace}
    assert why["reinit.size_cap"] == "skipped: reinit_top_blocks already set by the user"


def test_an_overridden_detail_is_marked_as_the_users():
    detail = rec_with({"l2sp_weight": 0.01}).details["l2sp_weight"]
    assert (detail.value, detail.confidence, detail.set_by) == (0.01, "user", "override")
    assert detail.reasons == ("override",)
    assert detail.reason == "set by the user"
    assert detail.range == (0.01,)


def test_an_override_appears_in_the_reasons_and_the_trace():
    rec = rec_with({"base_lr": 0.003})
    reason = next(r for r in rec.reasons if r.rule == "override")
    assert reason.target == "base_lr"
    assert reason.text.startswith("set by the user")
    assert rec.trace[0].rule == "override" and rec.trace[0].fired
    assert "base_lr" in rec.trace[0].why


def test_to_dict_lists_the_overrides():
    doc = rec_with({"lp_ft": "true", "base_lr": 0.003}).to_dict()
    assert doc["overrides"] == {"base_lr": 0.003, "lp_ft": True}
    assert json.loads(json.dumps(doc)) == doc


def test_without_overrides_nothing_is_marked_as_the_users():
    rec = rec_with()
    assert rec.to_dict()["overrides"] == {}
    assert all(d.confidence != "user" for d in rec.details.values())


# --- What depends on an override follows it ---------------------------------------------------


def test_overriding_base_lr_moves_every_group_rate_derived_from_it():
    rec = rec_with({"base_lr": 0.003})
    g = groups(rec)
    assert g["upper"].lr == 0.003
    assert g["lower"].lr == pytest.approx(0.003 * LOWER_LR_FACTOR)
    assert g["head"].lr == pytest.approx(0.003 * HEAD_LR_FACTOR)
    assert rec.hyperparameters.effective_lr == pytest.approx(0.03)


def test_a_value_derived_from_an_override_cites_it_and_keeps_its_rules_confidence():
    detail = rec_with({"base_lr": 0.003}).details["head_lr"]
    assert detail.reasons == ("override", "groups.new_layers_faster")
    assert detail.confidence == "medium"


def test_overriding_reinit_moves_the_split_and_the_module_lists():
    rec = rec_with({"reinit_top_blocks": 2})
    hp = rec.hyperparameters
    assert hp.reinit_modules == ("blocks.5", "blocks.6")
    assert hp.split_block == "stage3"  # the lower half of the 4 transferred blocks
    assert groups(rec)["head"].modules == ("blocks.5", "blocks.6", "classifier")


def test_overriding_momentum_moves_the_learning_rate_of_the_same_decade():
    default = rec_with().hyperparameters
    rec = rec_with({"momentum": 0.0}).hyperparameters
    assert rec.effective_lr == pytest.approx(default.effective_lr)
    assert rec.base_lr == pytest.approx(default.base_lr / (1 - 0.9))


def test_overriding_the_optimiser_to_adamw_leaves_the_sgd_learning_rate_rules():
    rec = rec_with({"optimizer": "adamw"})
    assert rec.details["base_lr"].set_by == "lr.adamw_rate"
    assert rec.hyperparameters.effective_lr is None


def test_a_user_split_block_keeps_that_block_transferred():
    rec = rec_with({"split_block": "stage6"})  # the profile would re-initialise stage6
    assert rec.hyperparameters.reinit_top_blocks == 0
    assert "reinit.keep_user_split_block" in {r.rule for r in rec.reasons}
    assert groups(rec)["lower"].blocks == ("stage1", "stage2", "stage3", "stage4", "stage5")


def test_turning_lp_ft_on_gives_head_only_epochs():
    rec = rec_with({"lp_ft": True}, measures={})
    assert rec.hyperparameters.lp_ft is True
    assert rec.hyperparameters.lp_epochs >= 1


# --- Validation at the front door -------------------------------------------------------------


def test_an_unknown_override_lists_the_valid_names():
    with pytest.raises(ValueError, match="unknown hyperparameter 'learning_rate'.*base_lr"):
        rec_with({"learning_rate": 0.1})


@pytest.mark.parametrize(("name", "value", "message"), [
    ("base_lr", 0.0, "base_lr must be a number > 0"),
    ("l2sp_weight", -0.1, "l2sp_weight must be a number >= 0"),
    ("momentum", 1.0, r"momentum must be a number in \[0, 1\)"),
    ("reinit_top_blocks", 1.5, "reinit_top_blocks must be an integer"),
    ("reinit_top_blocks", True, "reinit_top_blocks must be an integer"),
    ("optimizer", "adam", "optimizer must be one of sgd_nesterov, sgd, adamw"),
    ("lp_ft", "maybe", "lp_ft must be true or false"),
    ("batch_size", 0, "batch_size must be an integer >= 1"),
])
def test_a_bad_override_value_is_rejected_naming_the_hyperparameter(name, value, message):
    with pytest.raises(ValueError, match=message):
        rec_with({name: value})


def test_reinit_override_must_leave_the_bottom_block():
    with pytest.raises(ValueError, match="reinit_top_blocks must be between 0 and 5 for 6"):
        rec_with({"reinit_top_blocks": 6})


def test_split_override_must_name_a_block():
    with pytest.raises(ValueError, match="split_block must be one of the blocks"):
        rec_with({"split_block": "stage9"})


def test_split_override_must_stay_transferred_under_a_reinit_override():
    with pytest.raises(ValueError, match="'stage6' would be re-initialised"):
        rec_with({"split_block": "stage6", "reinit_top_blocks": 1})


def test_derived_hyperparameters_cannot_be_overridden():
    with pytest.raises(ValueError, match="effective_lr cannot be set.*base_lr and momentum"):
        rec_with({"effective_lr": 0.1})


def test_overrides_must_be_a_mapping():
    with pytest.raises(TypeError, match="overrides must be a mapping"):
        rec_with([("base_lr", 0.1)])


# --- parse_override ---------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("base_lr=0.003", ("base_lr", 0.003)),
    ("lp_ft=true", ("lp_ft", True)),
    ("lp_ft=off", ("lp_ft", False)),
    ("reinit_top_blocks=1", ("reinit_top_blocks", 1)),
    ("optimizer=adamw", ("optimizer", "adamw")),
    ("split_block=stage3", ("split_block", "stage3")),
    ("split_block=none", ("split_block", None)),
    ("l2_weight=1", ("l2_weight", 1.0)),
    ("Warmup-Epochs = 2", ("warmup_epochs", 2)),
    ("exclude_from_decay=bias,batchnorm", ("exclude_from_decay", ("batchnorm", "bias"))),
])
def test_parse_override_converts_to_the_hyperparameters_type(text, expected):
    name, value = parse_override(text)
    assert (name, value) == expected
    assert type(value) is type(expected[1])


def test_parse_override_needs_an_equals_sign():
    with pytest.raises(ValueError, match="must look like name=value"):
        parse_override("base_lr 0.1")


def test_parse_override_says_what_a_bad_value_should_be():
    with pytest.raises(ValueError, match="base_lr must be a number > 0, got 'fast'"):
        parse_override("base_lr=fast")


def test_parse_override_rejects_a_non_finite_number():
    with pytest.raises(ValueError, match="base_lr"):
        parse_override("base_lr=nan")


def test_every_reported_hyperparameter_is_overridable_or_derived():
    from heuristics import DERIVED_ONLY

    assert set(OVERRIDABLE) | set(DERIVED_ONLY) == set(DECIDED)
    assert not set(OVERRIDABLE) & set(DERIVED_ONLY)


@pytest.mark.parametrize("name", tuple(OVERRIDABLE))
def test_every_overridable_hyperparameter_takes_its_own_reported_value(name):
    value = rec_with().details[name].value
    assert rec_with({name: value}).details[name].value == value
