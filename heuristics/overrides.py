"""User overrides: a value the user sets for a hyperparameter wins over every rule.

:func:`parse_override` turns a CLI string (``"base_lr=0.003"``) into a typed ``(name, value)``;
:func:`check_overrides` validates a mapping of them against the backbone's blocks at the front
door of :func:`heuristics.advise`, which sets them before any rule runs, so that the rules
that depend on them (e.g. the group learning rates on ``base_lr``) follow. :data:`OVERRIDABLE`
names the hyperparameters a user may set, each with how its value is read.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from heuristics.rules.budget import SCHEDULES
from heuristics.rules.lr import OPTIMIZERS
from heuristics.types import FrozenMap

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")
_NONE = ("none", "null", "")
DECAY_KINDS = ("batchnorm", "bias")


@dataclass(frozen=True)
class OverrideSpec:
    """How to read one overridable hyperparameter: ``convert(value)`` or ``ValueError``."""

    expected: str  # what a valid value looks like, for messages and help
    convert: Callable[[Any], Any]


class _Bad(ValueError):
    """A value that does not convert; the caller adds the hyperparameter's name and expectation."""


def _integer(minimum: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise _Bad from None
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise _Bad
        if value < minimum:
            raise _Bad
        return int(value)
    return convert


def _real(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False):
    def convert(value: Any) -> float:
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise _Bad from None
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise _Bad
        number = float(value)
        if not math.isfinite(number):
            raise _Bad
        if number < lo or (lo_open and number == lo) or number > hi or (hi_open and number == hi):
            raise _Bad
        return number
    return convert


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise _Bad


def _choice(options: Sequence[str]) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if isinstance(value, str) and value.strip().lower() in options:
            return value.strip().lower()
        raise _Bad
    return convert


def _block(value: Any) -> str | None:
    # A block name, checked against the backbone's blocks in check_overrides.
    if value is None or (isinstance(value, str) and value.strip().lower() in _NONE):
        return None
    if isinstance(value, str):
        return value.strip()
    raise _Bad


def _kinds(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = () if value.strip().lower() in _NONE else value.split(",")
    if not isinstance(value, (list, tuple)):
        raise _Bad
    kinds = tuple(k.strip().lower() if isinstance(k, str) else k for k in value)
    if any(k not in DECAY_KINDS for k in kinds):
        raise _Bad
    return tuple(k for k in DECAY_KINDS if k in kinds)  # canonical order, no repeats


_LR = OverrideSpec("a number > 0", _real(0.0, math.inf, lo_open=True))
_WEIGHT = OverrideSpec("a number >= 0 (0 = off)", _real(0.0, math.inf))

# Every hyperparameter of heuristics.rules.DECIDED a user may set, in that order.
OVERRIDABLE: Mapping[str, OverrideSpec] = FrozenMap({
    "reinit_top_blocks": OverrideSpec("an integer >= 0, below the number of blocks",
                                      _integer(0)),
    "split_block": OverrideSpec("the name of a transferred block, or none", _block),
    "optimizer": OverrideSpec(f"one of {', '.join(OPTIMIZERS)}", _choice(OPTIMIZERS)),
    "momentum": OverrideSpec("a number in [0, 1)", _real(0.0, 1.0, hi_open=True)),
    "base_lr": _LR,
    "head_lr": _LR,
    "upper_lr": _LR,
    "lower_lr": _LR,
    "l2sp_weight": _WEIGHT,
    "l2_weight": _WEIGHT,
    "exclude_from_decay": OverrideSpec(f"comma-separated kinds among "
                                       f"{', '.join(DECAY_KINDS)}, or none", _kinds),
    "batch_size": OverrideSpec("an integer >= 1", _integer(1)),
    "epochs": OverrideSpec("an integer >= 1", _integer(1)),
    "schedule": OverrideSpec(f"one of {', '.join(SCHEDULES)}", _choice(SCHEDULES)),
    "warmup_epochs": OverrideSpec("an integer >= 0", _integer(0)),
    "lp_ft": OverrideSpec("true or false", _boolean),
    "lp_epochs": OverrideSpec("an integer >= 0", _integer(0)),
    "label_smoothing": OverrideSpec("a number in [0, 1)", _real(0.0, 1.0, hi_open=True)),
})
# Reported hyperparameters that follow from others and cannot be set themselves.
DERIVED_ONLY = {
    "effective_lr": "base_lr and momentum (effective_lr = base_lr / (1 - momentum))",
    "steps": "epochs, batch_size and the dataset size",
}


def parse_override(text: str) -> tuple[str, Any]:
    """``"name=value"`` -> ``(name, typed value)``, e.g. ``"lp_ft=true"`` -> ``("lp_ft", True)``.

    Names are case-insensitive and may use ``-`` for ``_``. Whether a block name or a number
    of re-initialised blocks fits the backbone is checked by :func:`heuristics.advise`.

    Raises
    ------
    ValueError
        Not of the form ``name=value``, an unknown or derived name (the message lists the
        valid names), or a value of the wrong type or out of range (it says what is expected).
    """
    if not isinstance(text, str) or "=" not in text:
        raise ValueError(f"an override must look like name=value (e.g. base_lr=0.003), "
                         f"got {text!r}")
    name, value = text.split("=", 1)
    return convert_override(name.strip().lower().replace("-", "_"), value)


def convert_override(name: str, value: Any) -> tuple[str, Any]:
    """Check ``name`` and convert ``value`` (a string or a typed value) for it."""
    if name in DERIVED_ONLY:
        raise ValueError(f"{name} cannot be set: it follows from {DERIVED_ONLY[name]}; "
                         "set those instead")
    if name not in OVERRIDABLE:
        raise ValueError(f"unknown hyperparameter {name!r}; valid names: "
                         f"{', '.join(OVERRIDABLE)}")
    spec = OVERRIDABLE[name]
    try:
        return name, spec.convert(value)
    except _Bad:
        raise ValueError(f"{name} must be {spec.expected}, got {value!r}") from None


def check_overrides(overrides: Mapping[str, Any], block_names: Sequence[str]) -> FrozenMap:
    """Validate user overrides against the backbone's blocks, in :data:`OVERRIDABLE` order.

    Raises
    ------
    TypeError
        ``overrides`` is not a mapping.
    ValueError
        An unknown name, a value of the wrong type or range, ``reinit_top_blocks`` that would
        re-initialise every block, or ``split_block`` that is not a transferred block.
    """
    if not isinstance(overrides, Mapping):
        raise TypeError(f"overrides must be a mapping of hyperparameter names to values, "
                        f"got {type(overrides).__name__}")
    typed = dict(convert_override(name, value) for name, value in overrides.items())
    n = len(block_names)
    reinit = typed.get("reinit_top_blocks")
    if reinit is not None and reinit > max(n - 1, 0):
        raise ValueError(f"reinit_top_blocks must be between 0 and {max(n - 1, 0)} for {n} "
                         f"block(s) (the bottom block stays transferred), got {reinit}")
    split = typed.get("split_block")
    if split is not None:
        if split not in block_names:
            raise ValueError(f"split_block must be one of the blocks "
                             f"({', '.join(block_names) or 'none given'}) or none, "
                             f"got {split!r}")
        top = n - 1 - (reinit or 0)
        if block_names.index(split) > top:
            raise ValueError(f"split_block {split!r} would be re-initialised with "
                             f"reinit_top_blocks={reinit}; choose one of "
                             f"{', '.join(block_names[:top + 1])}")
    return FrozenMap({name: typed[name] for name in OVERRIDABLE if name in typed})
