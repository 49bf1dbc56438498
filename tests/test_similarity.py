"""CKA in the analysis and after fine-tuning: consecutive blocks, the apply API's helper, the
per-run record, and what the report says about which blocks moved."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import probes
import recommender
from heuristics import Block, binary_default
from recommender.analysis import consecutive_cka
from recommender.errors import UsageError
from recommender.finetune import runs as runs_mod
from recommender.finetune.compare import block_treatment
from recommender.report import moved_sentence


def _timm_model():
    import timm

    torch.manual_seed(0)
    return timm.create_model("resnet10t", pretrained=False, num_classes=3).eval()


def _images(n=12, size=32):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


# --- consecutive blocks ----------------------------------------------------------------------

def test_consecutive_cka_compares_each_block_with_the_one_below():
    rng = np.random.default_rng(0)
    blocks = [rng.normal(size=(20, d)) for d in (3, 5, 4)]
    values = consecutive_cka(blocks)
    assert values[0] is None
    assert values[1:] == (probes.linear_cka(blocks[0], blocks[1], debiased=True),
                          probes.linear_cka(blocks[1], blocks[2], debiased=True))


def test_consecutive_cka_is_none_where_there_are_too_few_images():
    blocks = [np.eye(3), np.eye(3)[::-1]]
    assert consecutive_cka(blocks) == (None, None)


# --- the apply API's helper ------------------------------------------------------------------

def test_a_model_is_unchanged_against_itself_at_every_block():
    model = _timm_model()
    sim = recommender.block_similarity(model, copy.deepcopy(model), _images())
    assert sim.blocks == ("stage1", "stage2", "stage3", "stage4", "stage5", "neck")[
        :len(sim.blocks)]
    assert sim.num_images == 12
    assert all(v == pytest.approx(1.0, abs=1e-9) for v in sim.cka)


def test_a_changed_top_block_moves_only_from_there_up():
    model = _timm_model()
    tuned = copy.deepcopy(model)
    with torch.no_grad():
        for p in tuned.layer4.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(2)))
    sim = recommender.block_similarity(model, tuned, _images())
    assert all(v == pytest.approx(1.0, abs=1e-9) for v in sim.cka[:-1])
    assert sim.cka[-1] < 0.99


def test_a_head_of_another_size_and_a_dataloader_of_pairs_are_accepted():
    model = _timm_model()
    tuned = copy.deepcopy(model)
    tuned.reset_classifier(7)
    images = _images()
    loader = [(images[:5], torch.zeros(5)), (images[5:], torch.zeros(7))]
    sim = recommender.block_similarity(model, tuned, loader)
    assert sim.num_images == 12 and sim.to_dict()["cka"] == list(sim.cka)


def test_block_similarity_restores_the_models_modes():
    model, tuned = _timm_model().train(), _timm_model().eval()
    recommender.block_similarity(model, tuned, _images())
    assert model.training and not tuned.training


def test_block_similarity_refuses_a_model_that_is_not_timm():
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(UsageError, match="no forward_intermediates"):
        recommender.block_similarity(plain, plain, _images())


def test_block_similarity_needs_four_images():
    model = _timm_model()
    with pytest.raises(UsageError, match="got 3 images, CKA needs at least 4"):
        recommender.block_similarity(model, model, _images(n=3))


# --- after fine-tuning: the runs and the report ----------------------------------------------

def test_a_setting_reports_the_mean_cka_over_its_seeds():
    runs = (runs_mod.Run(0, 0.5, 0.5, 0, block_cka=(0.9, 0.2)),
            runs_mod.Run(1, 0.5, 0.5, 0, block_cka=(0.7, None)))
    setting = runs_mod.SettingResult("default", binary_default(), runs)
    assert setting.block_cka == (pytest.approx(0.8), None)
    assert setting.to_dict()["runs"][0]["block_cka"] == [0.9, 0.2]
    unmeasured = runs_mod.SettingResult("x", binary_default(), (runs_mod.Run(0, 0.5, 0.5, 0),))
    assert unmeasured.block_cka is None and unmeasured.to_dict()["block_cka"] is None


def test_the_run_cache_keeps_each_run_cka(tmp_path):
    cache = runs_mod.RunCache()
    path = tmp_path / "run.json"
    cache.write(path, runs_mod.Run(3, 0.5, 0.25, 0, block_cka=(0.5, None, 0.125)))
    back = cache.read(path, 3)
    assert back.block_cka == (0.5, None, 0.125) and back.cached


def test_block_treatment_names_reinitialised_blocks_and_each_block_rate():
    blocks = [Block("stage1", ("blocks.0",)), Block("stage2", ("blocks.1",)),
              Block("neck", ("conv_head",))]
    hp = binary_default(head_modules=("classifier",))
    assert block_treatment(hp, blocks) == ("lr 0.01",) * 3
    import dataclasses

    hp = dataclasses.replace(hp, reinit_top_blocks=1, reinit_modules=("conv_head",))
    assert block_treatment(hp, blocks)[-1] == "re-init"


def test_the_report_says_which_blocks_the_default_moved_and_where_the_reinit_ones_rank():
    val = {"blocks": ["stage1", "stage2", "neck"],
           "recommended_treatment": ["lr 0.001", "lr 0.01", "re-init"],
           "settings": {"default": {"block_cka": [0.95, 0.6, 0.3]},
                        "recommended": {"block_cka": [0.99, 0.7, 0.05]}}}
    text = moved_sentence(val)
    assert "moved neck most (CKA 0.3) and stage1 least (0.95)" in text
    assert "re-initialises neck: ranked 1 of 3" in text
    assert "lowest rate (0.001) trains stage1: ranked 3" in text
    val["settings"]["default"]["block_cka"] = None
    assert moved_sentence(val) == ""
