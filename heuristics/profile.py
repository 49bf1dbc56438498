"""The shape of a per-block profile: where target separability peaks, and how far the top falls;
where the domain shift jumps.

Yosinski et al. (NeurIPS 2014) found early-layer features general and top ones source-specific,
so the depth at which separability stops rising, or the domain distance jumps, reads as the
point where transferred layers stop helping. :class:`ProfileShape`
(separability, higher is better) and :class:`ShiftJump` (a distance, lower is closer) summarise
a bottom-up profile for the re-initialisation rules; their fields are what the reasons print.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# Equal within float round-off counts as within tolerance, so a drop printed as "0.02" with a
# tolerance of 0.02 reads the same way the rule decides it.
_FLOAT_SLACK = 1e-12


@dataclass(frozen=True)
class ProfileShape:
    """A bottom-up profile (higher is better) and its tolerance.

    The *kept* block is the highest block whose value is within ``tolerance`` of the maximum:
    the blocks above it are the ones whose features make the target less separable. Choosing
    the highest such block (rather than the arg-max) re-initialises as few blocks as the
    evidence allows, since new layers need data (Plested & Gedeon 2019).
    """

    values: tuple[float, ...]
    names: tuple[str, ...]
    tolerance: float

    @property
    def peak_index(self) -> int:
        return self.values.index(max(self.values))

    @property
    def peak(self) -> float:
        return self.values[self.peak_index]

    @property
    def peak_block(self) -> str:
        return self.names[self.peak_index]

    @property
    def top(self) -> float:
        return self.values[-1]

    @property
    def top_block(self) -> str:
        return self.names[-1]

    @property
    def drop(self) -> float:
        """How much lower the top block is than the peak (0 when the top is the peak)."""
        return self.peak - self.top

    @property
    def kept_index(self) -> int:
        floor = self.peak - self.tolerance - _FLOAT_SLACK
        return max(i for i, v in enumerate(self.values) if v >= floor)

    @property
    def kept_block(self) -> str:
        return self.names[self.kept_index]

    @property
    def blocks_above(self) -> int:
        """Blocks above the kept block: what the profile says to re-initialise."""
        return len(self.values) - 1 - self.kept_index


def absolute_shape(values: Sequence[float], names: Sequence[str],
                   tolerance: float) -> ProfileShape:
    """Shape of a profile whose tolerance is in the measure's own units (e.g. accuracy)."""
    return ProfileShape(tuple(values), tuple(names), tolerance)


def relative_shape(values: Sequence[float], names: Sequence[str],
                   relative_tolerance: float) -> ProfileShape:
    """Shape of a profile on an arbitrary scale (e.g. LogME, which can be negative).

    The tolerance is ``relative_tolerance * max(|peak|, max - min)``: relative to the peak
    when the profile is flat, to its span when the values sit near zero.
    """
    values = tuple(values)
    scale = max(abs(max(values)), max(values) - min(values))
    return ProfileShape(values, tuple(names), relative_tolerance * scale)


@dataclass(frozen=True)
class ShiftJump:
    """The largest jump of a bottom-up distance profile (lower = closer to the source) among
    its top ``window`` blocks.

    A jump into block ``j`` is the ratio ``values[j] / values[j - 1]`` (infinite when the
    block below is at distance 0 and block ``j`` is not; 1 when both are 0). Among equal
    ratios the higher block wins, which re-initialises fewer blocks.
    """

    values: tuple[float, ...]
    names: tuple[str, ...]
    window: int
    min_ratio: float

    @property
    def ratios(self) -> tuple[float, ...]:
        """``ratios[j]`` for the jump into block ``j``; ``ratios[0]`` is 1 (nothing below)."""
        return (1.0, *(_ratio(lo, hi) for lo, hi in zip(self.values, self.values[1:])))

    @property
    def jump_index(self) -> int:
        """The block the largest jump in the window leads into (0 when there is no window)."""
        candidates = range(max(1, len(self.values) - self.window), len(self.values))
        return max(candidates, key=lambda j: (self.ratios[j], j), default=0)

    @property
    def ratio(self) -> float:
        return self.ratios[self.jump_index]

    @property
    def jump_block(self) -> str:
        return self.names[self.jump_index]

    @property
    def below_block(self) -> str:
        return self.names[max(self.jump_index - 1, 0)]

    @property
    def jumps(self) -> bool:
        return self.jump_index > 0 and self.ratio >= self.min_ratio

    @property
    def blocks_above(self) -> int:
        """Blocks from the jump to the top when it jumps: what the profile says to re-initialise."""
        return len(self.values) - self.jump_index if self.jumps else 0


def _ratio(below: float, above: float) -> float:
    if below > 0:
        return above / below
    return math.inf if above > 0 else 1.0


def shift_jump(values: Sequence[float], names: Sequence[str], window: int,
               min_ratio: float) -> ShiftJump:
    """The largest jump of a distance profile among its top ``window`` blocks."""
    return ShiftJump(tuple(values), tuple(names), window, min_ratio)
