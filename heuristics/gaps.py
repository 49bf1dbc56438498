"""Fit gaps: how far the frozen pre-trained features are from fitting the target, 0 to about 1.

Each is a measure of fit rescaled so that 0 means a perfect fit and 1 means chance, whatever
the number of classes C, so that targets with different C can be compared on one scale. The
fitted ladder (:mod:`heuristics.rules.ladder`) reads one of them, chosen by the fit to the
meta-benchmark (``benchmarks/meta_fit.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def _accuracy_gap(accuracy: float, num_classes: int) -> float:
    chance = 1.0 / num_classes
    return 1.0 - (accuracy - chance) / (1.0 - chance)


# The accuracy gaps are (1 - a) / (1 - 1/C); LEEP's is 0 when the source head's labels predict
# the target's perfectly, about 1 at chance.
GAPS: dict[str, tuple[str, str]] = {
    "linear_probe": ("linear_probe_accuracy", "1 - chance-normalised linear-probe accuracy"),
    "knn": ("knn_accuracy", "1 - chance-normalised k-NN accuracy"),
    "leep": ("leep", "-LEEP / ln C"),
}
"""Gap name -> (the measure it is computed from, what it is, as reasons say it)."""


def fit_gap(name: str, measures: Mapping[str, Any], num_classes: int) -> float | None:
    """The gap ``name`` from the summary measures, or None when its measure is missing."""
    measure = GAPS[name][0]
    value = measures.get(measure)
    if value is None or num_classes < 2 or not math.isfinite(float(value)):
        return None
    if name == "leep":
        return -float(value) / math.log(num_classes)
    return _accuracy_gap(float(value), num_classes)
