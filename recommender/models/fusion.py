"""BatchNorm folded into the convolution before it, for faster inference-only passes.

In eval mode a BatchNorm layer is a per-channel affine map of its input, so when its input is
a convolution's output it can be folded into that convolution's weights and bias (the same
function, up to float rounding). On the CPU, EfficientNet-Lite0's forward pass at 224 px
takes 0.87x the time folded (``benchmarks/bench_analysis.py --part fold``): the feature
extraction runs the folded copy on every image that needs nothing but features.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

# The folded copy is used only if its output on a test input is this close to the original's
# (relative to the largest magnitude): float rounding is ~1e-6 there; a wrong fold is O(1).
TOLERANCE = 1e-4


def fold_batchnorm(model: nn.Module, example: torch.Tensor) -> nn.Module | None:
    """A copy of ``model`` (which must be in eval mode) with every BatchNorm layer that reads a
    convolution's output folded into that convolution, or None when there is none to fold
    or the copy's output on ``example`` differs from the original's beyond rounding.

    Which layer follows which is found by running ``example`` (a batch of model inputs, on
    the model's device) through the model once: a BatchNorm whose input is the very tensor
    the last convolution returned. timm's ``BatchNormAct2d`` keeps its activation (and
    dropout) after the fold. ``model`` itself is not changed; the check runs in float32.
    """
    if model.training:  # a BatchNorm in training mode normalises by the batch's moments
        return None
    pairs, want = _conv_bn_pairs(model, example)
    if not pairs:
        return None
    folded = copy.deepcopy(model)
    with torch.no_grad():
        for conv_name, bn_name in pairs:
            conv = folded.get_submodule(conv_name)
            bn = folded.get_submodule(bn_name)
            _replace(folded, conv_name, fuse_conv_bn_eval(conv, bn))
            _replace(folded, bn_name, _after_norm(bn))
    with torch.inference_mode(), torch.autocast(example.device.type, enabled=False):
        got = folded(example.float())
    if not isinstance(want, torch.Tensor) or want.shape != got.shape:
        return None
    scale = float(want.abs().max()) or 1.0
    if not float((want - got).abs().max()) <= TOLERANCE * scale:
        return None
    return folded


def _conv_bn_pairs(model: nn.Module, example: torch.Tensor
                   ) -> tuple[list[tuple[str, str]], object]:
    """(convolution, BatchNorm) module names where the BatchNorm's input is the output of
    that convolution, in the order of a forward pass of ``example`` (in float32), and that
    pass's output (what the folded copy must reproduce)."""
    last: dict[str, object] = {"name": None, "output": None}
    pairs: list[tuple[str, str]] = []
    handles = []

    def after_conv(name: str):
        def hook(_module, _args, output):
            last["name"], last["output"] = name, output
        return hook

    def before_norm(name: str):
        def hook(_module, args):
            if args and args[0] is last["output"]:
                pairs.append((str(last["name"]), name))
        return hook

    for name, module in model.named_modules():
        if type(module) is nn.Conv2d or _is_conv2d_same(module):
            handles.append(module.register_forward_hook(after_conv(name)))
        elif _foldable_norm(module):
            handles.append(module.register_forward_pre_hook(before_norm(name)))
    try:
        with torch.inference_mode(), torch.autocast(example.device.type, enabled=False):
            output = model(example.float())
    finally:
        for handle in handles:
            handle.remove()
    # A convolution read by two BatchNorm layers (or a BatchNorm reached twice) is left alone.
    convs = [c for c, _ in pairs]
    norms = [b for _, b in pairs]
    return [(c, b) for c, b in dict.fromkeys(pairs)
            if convs.count(c) == 1 and norms.count(b) == 1], output


def _is_conv2d_same(module: nn.Module) -> bool:
    """timm's ``Conv2dSame`` (TensorFlow's asymmetric "same" padding): a Conv2d whose forward
    reads only its weight and bias, so folding into them is exact."""
    return isinstance(module, nn.Conv2d) and type(module).__name__ == "Conv2dSame"


def _foldable_norm(module: nn.Module) -> bool:
    """A BatchNorm2d in eval mode with running statistics: torch's own, or timm's
    ``BatchNormAct2d`` (BatchNorm, then dropout and activation)."""
    if type(module) is nn.BatchNorm2d:
        ok = True
    elif type(module).__name__ == "BatchNormAct2d" and isinstance(module, nn.BatchNorm2d):
        ok = hasattr(module, "act") and hasattr(module, "drop")
    else:
        return False
    return ok and module.running_mean is not None and module.running_var is not None


def _after_norm(bn: nn.Module) -> nn.Module:
    """What is left of a folded BatchNorm layer: nothing, or timm's dropout and activation."""
    if type(bn) is nn.BatchNorm2d:
        return nn.Identity()
    return nn.Sequential(bn.drop, bn.act)


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)
