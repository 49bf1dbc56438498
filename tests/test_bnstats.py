"""BatchNorm statistics: target moments of every BN layer's input beside its stored ones."""

from __future__ import annotations

import numpy as np
import pytest
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


# --- the moments themselves: chunked two-pass moments against torch.var_mean ---------------

_SHAPES = {"channels_last": (6, 5, 9, 11), "contiguous": (6, 5, 9, 11), "2-D": (64, 5),
           "3-D": (6, 5, 13)}


def _inputs(layout: str) -> torch.Tensor:
    torch.manual_seed(2)
    shape = _SHAPES[layout]
    offsets = torch.linspace(-4, 4, shape[1]).reshape(1, -1, *([1] * (len(shape) - 2)))
    x = torch.randn(shape) * torch.rand(offsets.shape) * 3 + offsets
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
        assert not x.is_contiguous()
    return x


def _reference(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    dims = [d for d in range(x.ndim) if d != 1]
    var, mean = torch.var_mean(x, dim=dims, correction=0)
    return mean.double().numpy(), var.double().numpy()


@pytest.mark.parametrize("chunk", [1 << 18, 7, None],
                         ids=["one chunk", "one row per chunk", "fused, as on a GPU"])
@pytest.mark.parametrize("layout", list(_SHAPES))
def test_moments_equal_torch_var_mean(layout, chunk, monkeypatch):
    from recommender.models import bnstats

    monkeypatch.setattr(bnstats, "CPU_CHUNK", chunk)
    x = _inputs(layout)
    moments = bnstats._Moments()
    moments.add(x)
    mean, var = _reference(x)
    assert moments.count == x.numel() // x.shape[1]
    np.testing.assert_allclose(moments.means(), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(moments.variance(), var, rtol=1e-5)


@pytest.mark.parametrize("chunk", [40, None], ids=["uneven chunks", "fused"])
@pytest.mark.parametrize("layout", list(_SHAPES))
def test_moments_merged_over_batches_equal_the_moments_at_once(layout, chunk, monkeypatch):
    from recommender.models import bnstats

    monkeypatch.setattr(bnstats, "CPU_CHUNK", chunk)  # 40: several chunks per batch too
    x = _inputs(layout)
    moments = bnstats._Moments()
    for part in torch.split(x, [1, 3, 2] if x.shape[0] == 6 else [10, 50, 4]):
        moments.add(part)
    mean, var = _reference(x)
    np.testing.assert_allclose(moments.means(), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(moments.variance(), var, rtol=1e-5)


@pytest.mark.parametrize("layout", list(_SHAPES))
def test_moments_of_some_rows_equal_those_of_the_rows_alone(layout):
    from recommender.models.bnstats import _Moments

    x = _inputs(layout)
    rows = torch.tensor([0, 2, 3])
    some, alone = _Moments(), _Moments()
    some.add(x, rows)
    alone.add(x[rows].contiguous())
    assert some.count == alone.count
    np.testing.assert_allclose(some.means(), alone.means(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(some.variance(), alone.variance(), rtol=1e-12)


def test_a_selection_records_only_the_selected_images_of_each_batch():
    net = _net()
    torch.manual_seed(3)
    batches = [torch.randn(4, 3, 6, 6) * 2 for _ in range(3)]
    masks = [torch.tensor([True, False, True, True]), torch.zeros(4, dtype=torch.bool),
             torch.ones(4, dtype=torch.bool)]
    with torch.inference_mode(), BatchNormRecorder(net, BLOCKS) as recorder:
        for batch, mask in zip(batches, masks):
            recorder.select(mask if not mask.all() else None)
            net(batch)
    expected = _record(net, [b[m] for b, m in zip(batches, masks) if m.any()])
    for got, want in zip(recorder.per_block(), expected):
        if want is None:
            assert got is None
        else:
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert recorder.moments["1"].count == (3 + 4) * 4 * 4  # images x positions (6 - 2)²


def test_a_selection_of_no_image_reads_no_input():
    net = _net()
    with torch.inference_mode(), BatchNormRecorder(net, BLOCKS) as recorder:
        recorder.select(torch.tensor([], dtype=torch.long))
        net(torch.randn(2, 3, 5, 5))
    assert all(m.count == 0 and m.mean is None for m in recorder.moments.values())
    assert recorder.per_block() == (None, None, None)
