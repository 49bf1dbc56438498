"""BatchNorm folded into the convolution before it: the same function, or no fold at all."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from recommender.models.fusion import fold_batchnorm  # noqa: E402


def _trained_bn(channels: int, seed: int) -> nn.BatchNorm2d:
    """A BatchNorm layer with non-trivial statistics and affine weights, in eval mode."""
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(channels)
    bn.running_mean.copy_(torch.randn(channels, generator=g))
    bn.running_var.copy_(torch.rand(channels, generator=g) + 0.1)
    with torch.no_grad():
        bn.weight.copy_(torch.randn(channels, generator=g))
        bn.bias.copy_(torch.randn(channels, generator=g))
    return bn.eval()


class _Chain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = _trained_bn(4, 1)
        self.relu = nn.ReLU()
        self.bn_after_relu = _trained_bn(4, 2)

    def forward(self, x):
        return self.bn_after_relu(self.relu(self.bn(self.conv(x))))


class _Shared(nn.Module):
    """The convolution's output is read by the BatchNorm and by a residual sum."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = _trained_bn(3, 3)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


def _example(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_a_batchnorm_after_a_convolution_is_folded_and_one_after_a_relu_is_not():
    torch.manual_seed(0)
    model = _Chain().eval()
    folded = fold_batchnorm(model, _example())
    assert folded is not None
    assert isinstance(folded.bn, nn.Identity) and folded.conv.bias is not None
    assert isinstance(folded.bn_after_relu, nn.BatchNorm2d)  # its input is no conv's output
    x = _example(1)  # not the input the fold was checked on
    with torch.inference_mode():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)
    # The original is untouched.
    assert isinstance(model.bn, nn.BatchNorm2d) and model.conv.bias is None


def test_a_fold_that_changes_the_function_is_refused():
    torch.manual_seed(0)
    assert fold_batchnorm(_Shared().eval(), _example()) is None


def test_a_model_in_training_mode_is_not_folded():
    assert fold_batchnorm(_Chain().train(), _example()) is None


def test_nothing_to_fold_gives_none():
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU()).eval()
    assert fold_batchnorm(model, _example()) is None


def test_the_default_backbone_folds_every_batchnorm_and_keeps_its_features(backbone):
    from recommender.models.features import _forward

    model = backbone.model.eval()
    g = torch.Generator().manual_seed(0)
    size = backbone.data_config["input_size"]
    folded = fold_batchnorm(model, torch.randn((2, *size), generator=g))
    assert folded is not None
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 49
    x = torch.randn((3, *size), generator=g)
    with torch.inference_mode():
        want, want_logits = _forward(model, x, len(backbone.blocks))
        got, got_logits = _forward(folded, x, len(backbone.blocks))
    for a, b in zip(got, want):
        torch.testing.assert_close(torch.from_numpy(a), torch.from_numpy(b), rtol=1e-4,
                                   atol=1e-4)
    torch.testing.assert_close(got_logits, want_logits, rtol=1e-4, atol=1e-4)
