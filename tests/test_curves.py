"""Training curves of the --validate runs: recorded per epoch, kept in the run cache and the
JSON, and recording them does not change the training."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import recommender
from recommender.data.tensors import ImageTensors
from recommender.finetune.runs import EpochRecord, Run, RunCache
from recommender.finetune.training import TrainConfig, accuracy, train

MEAN = STD = (0.5, 0.5, 0.5)


def _data(n=16, size=8):
    g = torch.Generator().manual_seed(0)
    return ImageTensors(torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g),
                        torch.arange(n) % 2)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


def test_evaluating_after_each_epoch_leaves_the_training_unchanged():
    config = TrainConfig(epochs=3, lr=0.1, weight_decay=1e-4, batch_size=4)
    plain, watched = _model(), _model()
    train(plain, _data(), config, mean=MEAN, std=STD, seed=0)
    seen = []
    train(watched, _data(), config, mean=MEAN, std=STD, seed=0,
          on_epoch=lambda epoch, loss: seen.append(
              (epoch, loss, accuracy(watched, _data(8), mean=MEAN, std=STD))))
    assert [e for e, _, _ in seen] == [1, 2, 3]
    for key, value in plain.state_dict().items():  # BatchNorm statistics included
        assert torch.equal(value, watched.state_dict()[key]), key


def test_a_run_keeps_its_curve_in_the_cache(tmp_path):
    curve = (EpochRecord(1, "head", 1.5, 0.25), EpochRecord(2, "all", 0.75, 0.5))
    run = Run(seed=3, val_accuracy=0.5, test_accuracy=0.4, lp_epochs=1, curve=curve)
    cache, path = RunCache(), tmp_path / "run.json"
    cache.write(path, run)
    back = cache.read(path, 3)
    assert back == run and back.cached
    assert run.to_dict()["curve"] == [
        {"epoch": 1, "phase": "head", "train_loss": 1.5, "val_accuracy": 0.25},
        {"epoch": 2, "phase": "all", "train_loss": 0.75, "val_accuracy": 0.5}]


@pytest.mark.slow
def test_each_validation_run_records_loss_and_validation_accuracy_per_epoch(sample_dir):
    result = recommender.recommend(sample_dir, max_per_class=5, workers=0, validate=True,
                                   validate_seeds=1, validate_epochs=3, validate_size=32,
                                   overrides={"lp_ft": True}, use_cache=False)
    recommended = result.to_dict()["validation"]["settings"]["recommended"]["runs"][0]
    curve = recommended["curve"]
    assert [e["epoch"] for e in curve] == [1, 2, 3]
    assert [e["phase"] for e in curve] == ["head"] * recommended["lp_epochs"] + ["all"] * (
        3 - recommended["lp_epochs"]) and recommended["lp_epochs"] >= 1
    assert curve[-1]["val_accuracy"] == recommended["val_accuracy"]
    assert all(e["train_loss"] > 0 and 0 <= e["val_accuracy"] <= 1 for e in curve)
