"""The fitted ladder: from the binary default, one step on one axis at a time, as far as the
meta-benchmark's evidence for targets like this one, at this budget, goes (issue 19)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from heuristics.rules.common import by_margin
from heuristics.types import Confidence


def ladder_confidence(model: Mapping[str, Any], gap: float, budget: str) -> Confidence:
    """By the distance from ``gap`` to the nearest change of rung, in MIN_SPACING bands
    (heuristics.rules.common.by_margin); at most medium outside the benchmark's gaps."""
    spec = model["budgets"][budget]
    edges = [p["from"] for p in spec["pieces"][1:]]
    band = model["min_spacing"]
    level = by_margin(min((abs(gap - x) for x in edges), default=3 * band), band)
    lo, hi = spec["gap_range"] or (0.0, 0.0)
    if not lo <= gap <= hi and level == "high":
        return "medium"
    return level
