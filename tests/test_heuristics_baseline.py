"""The binary default as a typed value, and the one way JSON becomes Hyperparameters again."""

from __future__ import annotations

import json
import re

import pytest

import heuristics
from heuristics import (
    BINARY_LR,
    BINARY_MOMENTUM,
    BINARY_WEIGHT_DECAY,
    Block,
    Hyperparameters,
    LrGroup,
    advise,
    binary_default,
)
from heuristics.rules.common import BINARY
from heuristics.rules.lr import DEFAULT_LR, effective_lr
from heuristics.rules.regularisation import DEFAULT_L2_WEIGHT

BLOCKS = tuple(Block(f"stage{i}", (f"blocks.{i}",)) for i in range(1, 6))
HEAD = ("classifier",)
BUDGET = ("batch_size", "epochs", "steps", "schedule", "warmup_epochs", "label_smoothing")


def from_json(h: Hyperparameters) -> Hyperparameters:
    return Hyperparameters.from_dict(json.loads(json.dumps(h.to_dict())))


# --- binary_default ---------------------------------------------------------------------------


def test_the_binary_default_transfers_every_block_at_one_rate_under_l2():
    h = binary_default(head_modules=HEAD)
    assert (h.reinit_top_blocks, h.reinit_modules, h.split_block) == (0, (), None)
    assert h.lr_groups == (LrGroup("head", BINARY_LR, (), HEAD, "l2"),
                           LrGroup("all", BINARY_LR, (), (), "l2", rest=True))
    assert (h.optimizer, h.momentum, h.base_lr) == ("sgd_nesterov", BINARY_MOMENTUM, BINARY_LR)
    assert (h.l2sp_weight, h.l2sp_modules) == (0.0, ())
    assert (h.l2_weight, h.l2_modules, h.exclude_from_decay) == (BINARY_WEIGHT_DECAY, HEAD, ())
    assert (h.lp_ft, h.lp_epochs) == (False, 0)


def test_the_binary_values_are_the_common_practice():
    assert (BINARY_LR, BINARY_WEIGHT_DECAY, BINARY_MOMENTUM) == (0.01, 1e-4, 0.9)


def test_the_binary_source_text_names_the_binary_values():
    named = dict(re.findall(r"(lr|momentum|weight decay) ([0-9.e-]+)", BINARY))
    assert {k: float(v) for k, v in named.items()} == {
        "lr": BINARY_LR, "momentum": BINARY_MOMENTUM, "weight decay": BINARY_WEIGHT_DECAY}


def test_the_rule_tables_binary_defaults_are_the_binary_values():
    assert DEFAULT_LR is BINARY_LR and DEFAULT_L2_WEIGHT is BINARY_WEIGHT_DECAY
    defaults = advise({}).hyperparameters
    assert (defaults.base_lr, defaults.l2_weight) == (BINARY_LR, BINARY_WEIGHT_DECAY)


def test_the_binary_effective_lr_is_computed_as_the_rule_table_does():
    h = binary_default(lr=0.03, momentum=0.5)
    assert h.effective_lr == effective_lr(0.03, 0.5)
    rec = advise({}, overrides={"base_lr": 0.03, "momentum": 0.5})
    assert h.effective_lr == rec.hyperparameters.effective_lr


def test_the_binary_default_takes_its_arguments():
    h = binary_default(head_modules=("fc", "neck"), lr=0.03, weight_decay=5e-4, momentum=0.8)
    assert [g.lr for g in h.lr_groups] == [0.03, 0.03]
    assert h.lr_groups[0].modules == h.l2_modules == ("fc", "neck")
    assert (h.base_lr, h.l2_weight, h.momentum) == (0.03, 5e-4, 0.8)


def test_without_a_budget_the_binary_default_has_the_rule_tables_defaults():
    h, defaults = binary_default(), advise({}).hyperparameters
    assert {n: getattr(h, n) for n in BUDGET} == {n: getattr(defaults, n) for n in BUDGET}


def test_the_binary_default_takes_the_budget_it_is_compared_with():
    rec = advise({"linear_probe_accuracy": 0.8}, blocks=BLOCKS, head_modules=HEAD,
                 num_images=300, num_classes=10,
                 overrides={"schedule": "step", "label_smoothing": 0.0})
    h = binary_default(head_modules=HEAD, budget=rec.hyperparameters)
    assert {n: getattr(h, n) for n in BUDGET} == {
        n: getattr(rec.hyperparameters, n) for n in BUDGET}
    assert h.steps is not None and h.schedule == "step"


def test_the_binary_default_rejects_a_string_of_head_modules():
    with pytest.raises(TypeError, match=r"write \('classifier',\)"):
        binary_default(head_modules="classifier")


def test_the_binary_default_is_exported_with_its_values():
    names = {"binary_default", "BINARY_LR", "BINARY_WEIGHT_DECAY", "BINARY_MOMENTUM"}
    assert names <= set(heuristics.__all__)


# --- Hyperparameters.from_dict ---------------------------------------------------------------

EXAMPLES = {
    "no measures, no blocks": lambda: advise({}),
    "good fit, blocks": lambda: advise(
        {"linear_probe_accuracy": 0.8, "scratch_accuracy": 0.6},
        profile={"linear_probe_accuracy": [0.4, 0.5, 0.7, 0.8, 0.7]}, blocks=BLOCKS,
        head_modules=HEAD, num_images=5000, num_classes=50),
    "far target, re-initialised blocks": lambda: advise(
        {"linear_probe_accuracy": 0.82, "source_confidence": 0.1, "pretraining_gain": 0.2},
        blocks=BLOCKS, head_modules=HEAD, num_images=400, num_classes=10),
    "overrides": lambda: advise(
        {}, blocks=BLOCKS, overrides={"optimizer": "adamw", "exclude_from_decay": "batchnorm,bias",
                                      "reinit_top_blocks": 1, "split_block": "stage2"}),
}


@pytest.mark.parametrize("name", EXAMPLES)
def test_hyperparameters_round_trip_through_json_exactly(name):
    h = EXAMPLES[name]().hyperparameters
    back = from_json(h)
    assert back == h
    assert all(isinstance(g, LrGroup) and isinstance(g.modules, tuple) for g in back.lr_groups)
    assert isinstance(back.exclude_from_decay, tuple) and isinstance(back.l2_modules, tuple)


def test_the_binary_default_round_trips_through_json_exactly():
    h = binary_default(head_modules=HEAD)
    assert from_json(h) == h


def test_an_lr_group_round_trips_with_its_rest_flag():
    group = LrGroup("backbone", 0.01, (), (), "l2sp", rest=True)
    assert LrGroup.from_dict(json.loads(json.dumps(group.to_dict()))) == group


def test_a_missing_key_is_named_and_the_message_says_what_to_pass():
    d = advise({}).hyperparameters.to_dict()
    del d["base_lr"], d["lp_ft"]
    with pytest.raises(ValueError, match=r"missing base_lr, lp_ft; pass the `hyperparameters` "
                                         r"object of the JSON document nbtl-recommend wrote"):
        Hyperparameters.from_dict(d)


def test_an_unknown_key_is_named():
    d = {**advise({}).hyperparameters.to_dict(), "learning_rate": 0.1}
    with pytest.raises(ValueError, match=r"unknown learning_rate; pass the `hyperparameters`"):
        Hyperparameters.from_dict(d)


def test_the_whole_recommendation_document_is_not_hyperparameters():
    with pytest.raises(ValueError, match="unknown hyperparameters, details"):
        Hyperparameters.from_dict(advise({}).to_dict())


def test_a_bad_lr_group_entry_is_named():
    d = advise({}).hyperparameters.to_dict()
    del d["lr_groups"][0]["penalty"]
    with pytest.raises(ValueError, match="an lr_groups entry: missing penalty"):
        Hyperparameters.from_dict(d)

