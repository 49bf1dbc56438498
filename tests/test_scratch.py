"""The measured scratch accuracy and its training loop: splits, schedule, determinism."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recommender.data.tensors import ImageTensors
from recommender.finetune.training import (
    TrainConfig,
    _lr_at,
    accuracy,
    build_optimizer,
    decay_groups,
    train,
)


def test_learning_rate_warms_up_linearly_then_decays_to_zero():
    rates = [_lr_at(step, 0.1, warmup=4, total=20) for step in range(20)]
    assert rates[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    assert all(a >= b for a, b in zip(rates[3:], rates[4:]))
    assert rates[-1] < 0.002


def _toy(seed: int = 0) -> ImageTensors:
    """Two classes told apart by brightness."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(32) % 2
    images = (torch.rand((32, 3, 8, 8), generator=g) * 100 + labels.view(-1, 1, 1, 1) * 150)
    return ImageTensors(images.to(torch.uint8), labels)


def _tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


CONFIG = TrainConfig(epochs=6, lr=0.1, weight_decay=1e-4, batch_size=8)
NORM = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}


def test_training_learns_a_separable_toy_task():
    model = train(_tiny_model(), _toy(), CONFIG, seed=0, **NORM)
    assert accuracy(model, _toy(seed=1), **NORM) >= 0.9


def test_training_is_deterministic_for_a_seed():
    a = train(_tiny_model(), _toy(), CONFIG, seed=5, **NORM)
    b = train(_tiny_model(), _toy(), CONFIG, seed=5, **NORM)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_weight_decay_spares_batchnorm_and_biases():
    model = _tiny_model()
    decayed, spared = decay_groups(model, 0.01)
    assert decayed["weight_decay"] == 0.01 and spared["weight_decay"] == 0.0
    ids = {id(p) for p in spared["params"]}
    assert {id(model[1].weight), id(model[1].bias), id(model[0].bias), id(model[5].bias)} == ids
    assert len(decayed["params"]) + len(spared["params"]) == len(list(model.parameters()))


@pytest.mark.parametrize("name, kind, nesterov", [("sgd_nesterov", torch.optim.SGD, True),
                                                  ("sgd", torch.optim.SGD, False),
                                                  ("adamw", torch.optim.AdamW, None)])
def test_one_builder_makes_every_optimiser_with_each_groups_own_decay(name, kind, nesterov):
    layer = nn.Linear(3, 2)
    groups = [{"params": [layer.weight], "weight_decay": 0.5, "lr": 0.2},
              {"params": [layer.bias], "weight_decay": 0.0}]
    optimizer = build_optimizer(groups, name, lr=0.1, momentum=0.9)
    assert isinstance(optimizer, kind)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.5, 0.0]
    assert [g["lr"] for g in optimizer.param_groups] == [0.2, 0.1]
    if nesterov is not None:
        assert optimizer.defaults["nesterov"] is nesterov


def test_an_unknown_optimiser_is_refused_by_name():
    with pytest.raises(ValueError, match="lion"):
        build_optimizer([{"params": [nn.Parameter(torch.zeros(1))]}], "lion", 0.1, 0.9)
