"""The front door: check what :func:`heuristics.advise` was given, once, with clear errors.

Everything after this module works on validated, plain-Python values and does not check again.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from heuristics.types import Block

# A value this far outside its measure's bounds is float round-off of a computation that is
# exactly in bounds (e.g. a LEEP of +1e-16, the log of a probability that sums to 1): clamped.
ROUND_OFF = 1e-9


@dataclass(frozen=True)
class Inputs:
    """Validated inputs: reported ``values`` (measures, profiles, dataset facts) and blocks."""

    values: Mapping[str, Any]
    blocks: tuple[Block, ...]
    head_modules: tuple[str, ...]


def check_inputs(measures: Mapping[str, Any], profile: Mapping[str, Sequence[Any]],
                 blocks: Sequence[Any], head_modules: Sequence[str], num_images: Any,
                 num_classes: Any, bounds: Mapping[str, tuple[float, float] | None]) -> Inputs:
    """Check and normalise the inputs of :func:`heuristics.advise`.

    Measures and profiles whose names are not in ``bounds`` are ignored. Empty profiles count
    as not given. Profiles are stored as ``"profile.<name>"``.

    Raises
    ------
    TypeError
        A mapping, sequence or block of the wrong type.
    ValueError
        A measure or profile value that is not a finite number or lies outside its bounds
        (by more than :data:`ROUND_OFF`, which is clamped); a
        profile whose length differs from the number of blocks; duplicate block names or a
        module in two places; a dataset size that is not a positive integer.
    """
    blocks_ = _blocks(blocks)
    head = _head(head_modules, blocks_)
    values: dict[str, Any] = {}
    for name, value in _mapping(measures, "measures").items():
        if name in bounds:
            values[name] = _number(value, f"measure {name!r}", bounds[name])
    for name, series in _mapping(profile, "profile").items():
        if name in bounds and len(_sequence(series, f"profile {name!r}")) > 0:
            values[f"profile.{name}"] = _profile(name, series, blocks_, bounds[name])
    if num_images is not None:
        values["num_images"] = _count(num_images, "num_images", minimum=1)
    if num_classes is not None:
        values["num_classes"] = _count(num_classes, "num_classes", minimum=2)
    values["num_blocks"] = len(blocks_)
    return Inputs(values, blocks_, head)


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} must be a mapping of names to values, "
                        f"got {type(value).__name__}")
    return value


def _sequence(value: Any, what: str) -> Sequence[Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{what} must be a sequence (list or tuple), got {type(value).__name__}")
    return value


def _number(value: Any, what: str, bounds: tuple[float, float] | None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{what} must be a finite number, got {value!r} "
                         f"({type(value).__name__})")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} must be a finite number, got {number!r}; leave out a measure "
                         f"that could not be computed")
    if bounds is None:
        return number
    lo, hi = bounds
    if lo - ROUND_OFF <= number < lo or hi < number <= hi + ROUND_OFF:
        return min(max(number, lo), hi)  # a probe's float round-off, not a wrong value
    if not lo <= number <= hi:
        raise ValueError(f"{what} must lie in [{lo:g}, {hi:g}], got {number!r}"
                         + ("; accuracies are fractions, not percentages"
                            if bounds == (0.0, 1.0) else ""))
    return number


def _profile(name: str, series: Sequence[Any], blocks: tuple[Block, ...],
             bounds: tuple[float, float] | None) -> tuple[float, ...]:
    if len(series) != len(blocks):
        names = ", ".join(b.name for b in blocks) or "none"
        raise ValueError(f"profile {name!r} has {len(series)} values but {len(blocks)} blocks "
                         f"were given ({names}); give one value per block, bottom-up")
    return tuple(_number(v, f"profile {name!r}[{i}] ({blocks[i].name})", bounds)
                 for i, v in enumerate(series))


def _count(value: Any, what: str, minimum: int) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        count = operator.index(value)
    except TypeError:
        raise ValueError(f"{what} must be an integer, got {value!r}") from None
    if count < minimum:
        raise ValueError(f"{what} must be at least {minimum}, got {count}")
    return count


def _blocks(blocks: Sequence[Any]) -> tuple[Block, ...]:
    # Any object with `name` and `modules` is accepted (recommender/ has its own Block type).
    result = []
    for i, block in enumerate(_sequence(blocks, "blocks")):
        if not (hasattr(block, "name") and hasattr(block, "modules")):
            raise TypeError(f"blocks[{i}] must be a Block(name, modules), "
                            f"got {type(block).__name__}")
        result.append(block if isinstance(block, Block) else Block(block.name, block.modules))
    names = [b.name for b in result]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"block names must be unique, got {', '.join(duplicates)} twice")
    return tuple(result)


def _head(head_modules: Sequence[str], blocks: tuple[Block, ...]) -> tuple[str, ...]:
    head = tuple(_sequence(head_modules, "head_modules"))
    for module in head:
        if not isinstance(module, str) or not module:
            raise ValueError(f"head_modules must be non-empty strings, got {module!r}")
    owner: dict[str, str] = {}
    for where, modules in [*((f"block {b.name!r}", b.modules) for b in blocks),
                           ("head_modules", head)]:
        for module in modules:
            if module in owner:
                raise ValueError(f"module {module!r} appears in {owner[module]} and in {where}; "
                                 f"each module must belong to one block or the head")
            owner[module] = where
    return head
