"""Measures of fit -> the non-binary fine-tuning hyperparameters of Plested et al. 2021.

Plain Python (no numpy, torch, rich or typer)::

    from heuristics import Block, parse_override, recommend
    rec = recommend(
        {"linear_probe_accuracy": 0.80, "scratch_accuracy": 0.64},
        profile={"linear_probe_accuracy": [0.41, 0.55, 0.70, 0.80, 0.74]},
        blocks=[Block(f"stage{i}", (f"blocks.{i}",)) for i in range(5)],
        head_modules=("classifier",), num_images=5000, num_classes=50,
        overrides=dict([parse_override("base_lr=0.003")]),
    )
    rec.to_dict()["hyperparameters"]

The rules are a declarative table (:data:`heuristics.rules.RULES`) evaluated in order by a
small pure engine (:func:`heuristics.engine.evaluate`); every rule evaluated appears in the
trace, every rule that fired in the reasons. A user override wins over every rule and is
marked as such (confidence ``"user"``, rule ``"override"``).
"""

from heuristics.engine import OVERRIDE, Decision, Evaluation, evaluate
from heuristics.overrides import DERIVED_ONLY, SETTINGS, parse_override
from heuristics.recommend import recommend
from heuristics.rules import DERIVED, HYPERPARAMETERS, MEASURE_BOUNDS, RULES
from heuristics.types import (
    Block,
    Derived,
    Detail,
    Hyperparameters,
    LrGroup,
    Reason,
    Recommendation,
    Rule,
    TraceEntry,
)

OVERRIDABLE = tuple(SETTINGS)  # the hyperparameters parse_override and recommend accept

__all__ = [
    "DERIVED",
    "DERIVED_ONLY",
    "HYPERPARAMETERS",
    "MEASURE_BOUNDS",
    "OVERRIDABLE",
    "OVERRIDE",
    "RULES",
    "SETTINGS",
    "Block",
    "Decision",
    "Derived",
    "Detail",
    "Evaluation",
    "Hyperparameters",
    "LrGroup",
    "Reason",
    "Recommendation",
    "Rule",
    "TraceEntry",
    "evaluate",
    "parse_override",
    "recommend",
]
