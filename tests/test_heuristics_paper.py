"""The paper's own evidence, reproduced: Plested, Shen, Gedeon 2021, "Non-binary deep transfer
learning for image classification" (arXiv 2107.08585; its results read off the figure of its
official code repository).

With the paper's measure of fit (scratch minus frozen-feature probe accuracy: Caltech-256 -16.2,
DTD -7.8, Stanford Cars +28.5, FGVC Aircraft +28.9 points) the recommendation must use L2-SP
where it helped (Caltech, DTD) and not where it hurt (Cars, Aircraft), re-initialise at least
as many blocks where that helped, and give the layer groups different learning rates on all
four, as per-group rates helped on all four.

Inputs: the paper's backbone (Inception-v4 as timm builds it: ``features.0`` to ``features.21``
and the classifier ``last_linear``) cut into blocks at the paper code's granularity for the top
layers; the real training-set sizes. The probe accuracies are of the order of Kornblith et al.
2019's Inception-v4 logistic-regression results (Caltech-256 is not in their study: a plausible
value); only the gaps are the paper's, and scratch accuracy = probe + gap. One synthetic
per-block profile, peaking one block below the top, is shared by all four datasets, so that
any difference between them comes from the measure of fit alone.
"""

from __future__ import annotations

import functools

import pytest

from heuristics import Block, advise
from heuristics.rules import PAPER_RULES

# These tests pin the paper's rule table; the fitted ladder that now leads heuristics.RULES
# (issue 19) has its own tests in test_heuristics_ladder.py.
advise = functools.partial(advise, rules=PAPER_RULES)

INCEPTION_V4 = (
    Block("stem", tuple(f"features.{i}" for i in range(6))),  # stem, mixed_3a/4a/5a
    Block("inception_a", tuple(f"features.{i}" for i in range(6, 10))),
    Block("reduction_a", ("features.10",)),
    Block("inception_b", tuple(f"features.{i}" for i in range(11, 18))),
    Block("reduction_b", ("features.18",)),
    Block("inception_c1", ("features.19",)),
    Block("inception_c2", ("features.20",)),
    Block("inception_c3", ("features.21",)),
)
HEAD = ("last_linear",)
PROFILE = [0.20, 0.35, 0.45, 0.62, 0.68, 0.72, 0.74, 0.71]  # relative shape only

# name: (probe accuracy, paper's scratch-minus-probe gap, training images, classes)
DATASETS = {
    "caltech256_30": (0.84, -0.162, 256 * 30, 256),
    "dtd": (0.74, -0.078, 47 * 80, 47),
    "stanford_cars": (0.64, +0.285, 8144, 196),
    "fgvc_aircraft": (0.60, +0.289, 6667, 100),
}
L2SP_HELPED = ("caltech256_30", "dtd")
L2SP_HURT = ("stanford_cars", "fgvc_aircraft")


def paper(name: str, flip_gap: bool = False):
    probe, gap, num_images, num_classes = DATASETS[name]
    scratch = probe + gap
    if flip_gap:  # swap the two accuracies: the same gap, the other sign
        probe, scratch = scratch, probe
    return advise(
        {"linear_probe_accuracy": probe, "scratch_accuracy": scratch},
        profile={"linear_probe_accuracy": PROFILE},
        blocks=INCEPTION_V4, head_modules=HEAD,
        num_images=num_images, num_classes=num_classes,
    )


def groups(rec) -> dict:
    return {g.name: g for g in rec.hyperparameters.lr_groups}


@pytest.mark.parametrize("name", L2SP_HELPED)
def test_l2sp_is_on_for_the_lower_blocks_where_the_probe_beats_scratch(name):
    hp = paper(name).hyperparameters
    assert hp.l2sp_weight > 0
    assert hp.l2sp_modules and hp.l2sp_modules == groups(paper(name))["lower"].modules


@pytest.mark.parametrize("name", L2SP_HURT)
def test_l2sp_is_off_and_plain_l2_on_where_scratch_beats_the_probe(name):
    hp = paper(name).hyperparameters
    assert hp.l2sp_weight == 0.0
    assert hp.l2sp_modules == ()
    assert hp.l2_weight > 0


@pytest.mark.parametrize("name", DATASETS)
def test_flipping_the_sign_of_the_gap_flips_l2sp(name):
    assert (paper(name).hyperparameters.l2sp_weight > 0) != (
        paper(name, flip_gap=True).hyperparameters.l2sp_weight > 0)


def test_where_l2sp_helped_at_least_as_many_blocks_are_reinitialised():
    helped = [paper(n).hyperparameters.reinit_top_blocks for n in L2SP_HELPED]
    hurt = [paper(n).hyperparameters.reinit_top_blocks for n in L2SP_HURT]
    assert min(helped) >= max(hurt)
    assert min(helped) > 0  # not trivially 0 >= 0: the shared profile peaks below the top


def test_reinitialised_blocks_are_named_by_the_backbones_modules():
    hp = paper("dtd").hyperparameters
    assert hp.reinit_modules == ("features.21",)
    assert groups(paper("dtd"))["head"].modules == ("features.21", "last_linear")


@pytest.mark.parametrize("name", [n for n in DATASETS if n != "fgvc_aircraft"])
def test_layer_groups_get_different_learning_rates(name):
    g = groups(paper(name))
    assert len({group.lr for group in g.values()}) >= 2
    assert g["lower"].lr < g["upper"].lr < g["head"].lr


def test_a_far_target_trains_every_group_at_one_rate():
    """A documented departure from the paper (per-group rates helped FGVC Aircraft there, at
    a full budget): the benchmark's fit datasets (docs/benchmark.md) put a target in the
    distant ELR decade, as Aircraft's probe does, at one rate for every group."""
    rec = paper("fgvc_aircraft")
    assert rec.hyperparameters.effective_lr >= 0.1
    assert len({group.lr for group in groups(rec).values()}) == 1


@pytest.mark.parametrize("name", DATASETS)
def test_the_l2sp_reason_shows_the_gap_and_cites_the_paper(name):
    _, gap, _, _ = DATASETS[name]
    detail = paper(name).details["l2sp_weight"]
    assert f"{gap:+.3g}" in detail.reason
    assert "Plested" in detail.source
    assert detail.confidence == "high"  # every gap is far from 0 in accuracy points


# --- where the fitted table departs from the paper (issue 19) ------------------------------------

def fitted(name: str, budget: dict[str, int]):
    """The shipped table (the fitted ladder first) on the paper's four datasets."""
    from heuristics import advise as shipped

    probe, gap, num_images, num_classes = DATASETS[name]
    return shipped({"linear_probe_accuracy": probe, "scratch_accuracy": probe + gap},
                   profile={"linear_probe_accuracy": PROFILE}, blocks=INCEPTION_V4,
                   head_modules=HEAD, num_images=num_images, num_classes=num_classes,
                   budget=budget)


@pytest.mark.parametrize("name", DATASETS)
def test_the_fitted_table_departs_from_the_paper_where_the_benchmark_found_no_gain(name):
    """The paper fine-tunes for long (its code's default: 200 epochs at 299 px); at budgets
    like that the meta-benchmark's evidence (12 epochs at 96 px, its largest) showed no change
    from the binary default gaining beyond noise, so the fitted table keeps the default where
    the paper's rules move -- no L2-SP, one learning rate -- and says why."""
    from heuristics.rules.fitted import MODEL
    from heuristics.rules.ladder import rung_for

    rec = fitted(name, {"epochs": 200, "image_size": 299})
    hp = rec.hyperparameters
    probe, _, _, num_classes = DATASETS[name]
    gap = 1 - (probe - 1 / num_classes) / (1 - 1 / num_classes)
    rung = rung_for(gap, "long")
    if rung:  # the fitted long budget climbs for gaps this large (fgvc_aircraft: 0.40)
        assert not rec.to_dict()["ladder"]["keep_default"]
        assert hp.reinit_top_blocks == MODEL["ladder"][rung]["reinit"]
        assert hp.l2sp_weight == 0
        return
    assert rec.to_dict()["ladder"]["keep_default"]
    assert hp.l2sp_weight == 0 and hp.reinit_top_blocks == 0
    assert len({g.lr for g in hp.lr_groups}) == 1
    assert "no step away from the binary default gained beyond noise" in \
        rec.details["l2sp_weight"].reason
    assert paper(name).hyperparameters != hp  # the paper's rules do move


@pytest.mark.parametrize("name", DATASETS)
def test_at_the_short_budget_the_fitted_table_moves_as_far_as_the_gap_says(name):
    from heuristics.rules.fitted import MODEL
    from heuristics.rules.ladder import rung_for

    rec = fitted(name, {"epochs": 6, "image_size": 64})
    probe, _, _, num_classes = DATASETS[name]
    gap = 1 - (probe - 1 / num_classes) / (1 - 1 / num_classes)
    rung = MODEL["ladder"][rung_for(gap, "short")]
    assert rec.hyperparameters.reinit_top_blocks == rung["reinit"]
    assert (rec.hyperparameters.l2sp_weight > 0) == (rung["reg"] == "l2sp_lower")
