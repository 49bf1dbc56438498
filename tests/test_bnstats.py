"""BatchNorm statistics: target moments of every BN layer's input beside its stored ones."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from heuristics import Block
from recommender.models.bnstats import BatchNormRecorder


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, eps=1e-3),  # block "low"
        nn.Conv2d(4, 5, 1), nn.ReLU(),                   # block "plain": no BatchNorm
        nn.Conv2d(5, 6, 1), nn.BatchNorm2d(6),            # block "high"
    )
    net[1].running_mean.uniform_(-1, 1)
    net[1].running_var.uniform_(0.5, 2)
    return net.eval()


BLOCKS = (Block("low", ("0", "1")), Block("plain", ("2", "3")), Block("high", ("4", "5")))


def _record(net, batches):
    with torch.inference_mode(), BatchNormRecorder(net, BLOCKS) as recorder:
        for batch in batches:
            net(batch)
    return recorder.per_block()


def test_moments_over_batches_equal_the_moments_of_all_inputs_at_once():
    net = _net()
    torch.manual_seed(1)
    batches = [torch.randn(n, 3, 7, 7) * 3 + 1 for n in (2, 5, 1)]
    stats = _record(net, batches)
    with torch.inference_mode():
        inputs = net[0](torch.cat(batches)).double()
    expected_mean = inputs.mean(dim=(0, 2, 3)).numpy()
    expected_var = inputs.var(dim=(0, 2, 3), unbiased=False).numpy()
    np.testing.assert_allclose(stats[0][0], expected_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats[0][1], expected_var + 1e-3, rtol=1e-5)


def test_stored_statistics_come_with_the_layers_eps():
    net = _net()
    stats = _record(net, [torch.randn(2, 3, 5, 5)])
    np.testing.assert_allclose(stats[0][2], net[1].running_mean.double().numpy())
    np.testing.assert_allclose(stats[0][3], net[1].running_var.double().numpy() + 1e-3)
    np.testing.assert_allclose(stats[2][3], net[5].running_var.double().numpy() + 1e-5)


def test_a_block_without_batchnorm_has_no_statistics():
    stats = _record(_net(), [torch.randn(2, 3, 5, 5)])
    assert stats[1] is None
    assert stats[0].shape == (4, 4) and stats[2].shape == (4, 6)


def test_the_hooks_are_removed_afterwards():
    net = _net()
    _record(net, [torch.randn(2, 3, 5, 5)])
    assert not net[1]._forward_pre_hooks and not net[5]._forward_pre_hooks


def test_the_default_backbone_has_statistics_at_every_block(backbone, sample_dir):
    from recommender.models.features import extract_features

    paths = sorted(sample_dir.glob("*/*.png"))[::40]
    features = extract_features(paths, backbone, batch_size=2, workers=0, use_cache=False)
    assert len(features.bn_stats) == len(backbone.blocks)
    for stats in features.bn_stats:
        assert stats is not None and stats.shape[0] == 4
        assert np.isfinite(stats).all() and (stats[[1, 3]] > 0).all()
