"""Specification of the cautions (heuristics/cautions.py): warnings, and low confidence, when the
inputs cannot carry the recommendation -- too few images per class, a noisy probe, untrained
weights -- and silence on a normal dataset."""

from __future__ import annotations

import json
import pickle

import pytest

from heuristics import CAUTIONS, DECIDED, Block, Caution, CautionRule, advise
from heuristics.cautions import MAX_TOP_SPREAD, MIN_IMAGES_PER_CLASS

BLOCKS = [Block(f"stage{i}", (f"blocks.{i}",)) for i in range(1, 7)]

# Measured by `nbtl-recommend data/fashion-mnist-sample --json out.json` (efficientnet_b0,
# ImageNet weights): `measures.summary` and the linear probe's per-block values and fold spread,
# 20 images per class, 10 classes. A normal dataset: no caution may fire on it.
SAMPLE = {
    "measures": {"linear_probe_accuracy": 0.72, "knn_accuracy": 0.705, "logme": 0.1607,
                 "pretraining_gain": 0.2, "bn_shift": 0.4655, "leep": -1.4738,
                 "nce": -0.7545, "source_confidence": 0.2577, "source_entropy": 0.5908},
    "profile": {"linear_probe_accuracy": [0.545, 0.635, 0.63, 0.725, 0.755, 0.72],
                "linear_probe_accuracy_spread": [0.0485, 0.0624, 0.0430, 0.0447, 0.0714,
                                                 0.0620]},
    "num_images": 200, "num_classes": 10,
}
# The same command with `--max-per-class 5`: 50 images, the probe's folds disagree by up to 0.17.
FIVE_PER_CLASS = {
    "measures": {**SAMPLE["measures"], "linear_probe_accuracy": 0.56,
                 "source_confidence": 0.2220, "source_entropy": 0.6153},
    "profile": {"linear_probe_accuracy": [0.24, 0.36, 0.40, 0.58, 0.58, 0.56],
                "linear_probe_accuracy_spread": [0.1744, 0.1744, 0.0632, 0.1720, 0.1327,
                                                 0.1497]},
    "num_images": 50, "num_classes": 10,
}
# A model without its pre-trained weights: randomly initialised tf_efficientnet_lite0 (timm's
# init, saved and passed as --weights) on the bundled sample, 10 images per class.
UNTRAINED = {"source_confidence": 0.0357, "source_entropy": 0.8764}
# A zero-initialised 1000-class head: uniform, its mean max-softmax at chance.
UNIFORM = {"source_confidence": 0.001, "source_entropy": 1.0}


def run(case: dict, **kwargs):
    return advise(case["measures"], profile=case["profile"], blocks=BLOCKS,
                  num_images=case["num_images"], num_classes=case["num_classes"], **kwargs)


def warned(rec) -> list[str]:
    return [w.id for w in rec.warnings]


def untrained_sample(**kwargs):
    return run({**SAMPLE, "measures": {**SAMPLE["measures"], **UNTRAINED}}, **kwargs)


def with_spread(top: float):
    return run({**SAMPLE, "profile": {**SAMPLE["profile"], "linear_probe_accuracy_spread":
                                      [*SAMPLE["profile"]["linear_probe_accuracy_spread"][:-1],
                                       top]}})


def with_images_per_class(n: int):
    return run({**SAMPLE, "num_images": n * SAMPLE["num_classes"]})


# --- Silent on a normal dataset --------------------------------------------------------------


def test_no_caution_fires_on_the_bundled_sample():
    assert run(SAMPLE).warnings == ()


def test_a_silent_table_leaves_every_detail_as_the_rules_set_it():
    assert run(SAMPLE).details == run(SAMPLE, cautions=()).details


# --- Too few images per class ----------------------------------------------------------------


def test_five_images_per_class_warn_that_the_measures_cannot_decide():
    rec = run(FIVE_PER_CLASS)
    assert "caution.few_images_per_class" in warned(rec)
    text = next(w.text for w in rec.warnings if w.id == "caution.few_images_per_class")
    assert text.startswith("Only 5 images per class (50 images, 10 classes), fewer than 10")


def test_images_per_class_at_the_minimum_do_not_warn():
    assert "caution.few_images_per_class" not in warned(
        with_images_per_class(MIN_IMAGES_PER_CLASS))
    assert "caution.few_images_per_class" in warned(
        with_images_per_class(MIN_IMAGES_PER_CLASS - 1))


def test_without_a_dataset_size_the_image_caution_is_silent_and_says_why():
    rec = advise(SAMPLE["measures"], profile=SAMPLE["profile"], blocks=BLOCKS)
    why = {t.rule: t.why for t in rec.trace}
    assert why["caution.few_images_per_class"] == "needs images_per_class: num_images missing"
    assert rec.warnings == ()


# --- A noisy probe ---------------------------------------------------------------------------


def test_the_probe_spread_of_five_images_per_class_warns():
    assert "caution.noisy_probe" in warned(run(FIVE_PER_CLASS))


def test_a_top_block_spread_above_the_limit_warns_and_names_it():
    rec = with_spread(0.17)
    (warning,) = rec.warnings
    assert warning.id == "caution.noisy_probe"
    assert "varies by 0.17 between cross-validation folds at the top block" in warning.text


def test_a_top_block_spread_at_the_limit_does_not_warn():
    assert with_spread(MAX_TOP_SPREAD).warnings == ()


def test_a_noisy_lower_block_alone_does_not_warn():
    spread = [0.3, *SAMPLE["profile"]["linear_probe_accuracy_spread"][1:]]
    rec = run({**SAMPLE, "profile": {**SAMPLE["profile"],
                                     "linear_probe_accuracy_spread": spread}})
    assert "caution.noisy_probe" not in warned(rec)


def test_without_a_spread_profile_the_noise_caution_is_silent_and_says_why():
    rec = run({**SAMPLE, "profile": {"linear_probe_accuracy":
                                     SAMPLE["profile"]["linear_probe_accuracy"]}})
    why = {t.rule: t.why for t in rec.trace}
    assert why["caution.noisy_probe"] == ("needs top_accuracy_spread: "
                                          "profile.linear_probe_accuracy_spread missing")


# --- Untrained weights -----------------------------------------------------------------------


def test_randomly_initialised_weights_warn_that_they_look_untrained():
    rec = untrained_sample()
    assert warned(rec) == ["caution.untrained_weights"]
    assert "the weights look untrained" in rec.warnings[0].text
    assert rec.warnings[0].measures == UNTRAINED


def test_a_uniform_source_head_warns_that_the_weights_look_untrained():
    rec = run({**SAMPLE, "measures": {**SAMPLE["measures"], **UNIFORM}})
    assert warned(rec) == ["caution.untrained_weights"]


def test_a_trained_head_far_from_its_domain_does_not_warn():
    assert "caution.untrained_weights" not in warned(run(SAMPLE))


def test_a_low_max_softmax_with_a_peaked_head_does_not_warn():
    # A head of many more classes than ImageNet's has a lower chance level but, trained, is
    # not near uniform: both signs are needed.
    rec = run({**SAMPLE, "measures": {**SAMPLE["measures"], "source_confidence": 0.05,
                                      "source_entropy": 0.7}})
    assert "caution.untrained_weights" not in warned(rec)


# --- Confidence capped, the trace and the details say why ------------------------------------


def test_a_firing_caution_caps_every_rule_set_value_at_low():
    rec = untrained_sample()
    assert {d.confidence for d in run(SAMPLE).details.values()} - {"low"}  # some were higher
    assert {d.confidence for d in rec.details.values()} == {"low"}


def test_a_user_value_keeps_its_confidence_under_a_caution():
    rec = untrained_sample(overrides={"base_lr": 0.003})
    assert rec.details["base_lr"].confidence == "user"
    assert rec.details["base_lr"].cautions == ()
    assert rec.details["upper_lr"].confidence == "low"  # derived from it by a rule


def test_a_capped_detail_names_the_cautions_that_capped_it():
    rec = run(FIVE_PER_CLASS)
    assert all(d.cautions == ("caution.few_images_per_class", "caution.noisy_probe")
               for d in rec.details.values())


def test_the_trace_records_a_fired_caution_with_its_values():
    why = {t.rule: (t.fired, t.why) for t in untrained_sample().trace}
    assert why["caution.untrained_weights"] == (
        True, "source_confidence 0.0357 <= 0.1 and source_entropy 0.876 >= 0.8")


def test_the_trace_records_a_silent_caution_and_why():
    why = {t.rule: (t.fired, t.why) for t in run(SAMPLE).trace}
    assert why["caution.few_images_per_class"] == (
        False, "condition not met: 20 images per class < 10")


def test_a_caution_without_a_cap_warns_and_leaves_confidence_alone():
    note = CautionRule(id="caution.note", needs=("num_images",), condition=lambda v: True,
                       text="{num_images} images.", when="always", source="test", cap=None)
    rec = run(SAMPLE, cautions=(note,))
    assert [w.text for w in rec.warnings] == ["200 images."]
    assert rec.details == run(SAMPLE, cautions=()).details


def test_a_caution_rule_rejects_an_unknown_cap():
    with pytest.raises(ValueError, match="cap must be one of"):
        CautionRule(id="caution.bad", needs=(), condition=lambda v: True, text="",
                    when="", source="", cap="user")


# --- JSON --------------------------------------------------------------------------------------


def test_the_keys_keep_their_order_warnings_then_the_fitted_ladder():
    assert list(run(SAMPLE).to_dict()) == ["hyperparameters", "details", "reasons", "trace",
                                           "defaults_used", "overrides", "warnings", "ladder"]


def test_no_warnings_serialise_as_an_empty_list():
    assert run(SAMPLE).to_dict()["warnings"] == []


def test_each_warning_serialises_as_id_text_measures_source_and_cap():
    doc = json.loads(json.dumps(untrained_sample().to_dict(), allow_nan=False))
    (warning,) = doc["warnings"]
    assert list(warning) == ["id", "text", "measures", "source", "cap"]
    assert warning["id"] == "caution.untrained_weights"
    assert warning["measures"] == UNTRAINED
    assert warning["cap"] == "low"


def test_a_capped_detail_lists_its_cautions_in_the_json():
    details = run(FIVE_PER_CLASS).to_dict()["details"]
    assert list(details) == list(DECIDED)
    assert details["base_lr"]["cautions"] == ["caution.few_images_per_class",
                                              "caution.noisy_probe"]


def test_a_recommendation_with_warnings_survives_pickling():
    rec = run(FIVE_PER_CLASS)
    assert pickle.loads(pickle.dumps(rec)) == rec


# --- The table ---------------------------------------------------------------------------------

# One input on which each caution fires and one on which it stays silent: a new caution must
# add its own, so every caution is seen both ways.
FIRES = {
    "caution.few_images_per_class": lambda: with_images_per_class(5),
    "caution.noisy_probe": lambda: with_spread(0.17),
    "caution.untrained_weights": untrained_sample,
}


@pytest.mark.parametrize("caution", CAUTIONS, ids=lambda c: c.id)
def test_every_caution_fires_on_some_input(caution):
    assert caution.id in FIRES, f"add an input on which {caution.id} fires to FIRES"
    assert caution.id in warned(FIRES[caution.id]())


@pytest.mark.parametrize("caution", CAUTIONS, ids=lambda c: c.id)
def test_every_caution_stays_silent_on_the_bundled_sample(caution):
    fired = {t.rule: t.fired for t in run(SAMPLE).trace}
    assert fired[caution.id] is False


@pytest.mark.parametrize("caution", CAUTIONS, ids=lambda c: c.id)
def test_every_caution_is_one_sentence_with_its_values_filled_in(caution):
    (warning,) = [w for w in FIRES[caution.id]().warnings if w.id == caution.id]
    assert isinstance(warning, Caution)
    assert "{" not in warning.text and warning.text.endswith(".")
    assert warning.text.count(". ") == 0
    assert warning.source
