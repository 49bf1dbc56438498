"""Measures of fit -> the non-binary fine-tuning hyperparameters of Plested et al. 2021.

Plain Python (no numpy, torch, rich or typer)::

    from heuristics import Block, advise, parse_override
    rec = advise(
        {"linear_probe_accuracy": 0.80, "scratch_accuracy": 0.64},
        profile={"linear_probe_accuracy": [0.41, 0.55, 0.70, 0.80, 0.74]},
        blocks=[Block(f"stage{i}", (f"blocks.{i}",)) for i in range(5)],
        head_modules=("classifier",), num_images=5000, num_classes=50,
        overrides=dict([parse_override("base_lr=0.003")]),
    )
    rec.to_dict()["hyperparameters"]

The rules are a declarative table (:data:`heuristics.rules.RULES`) evaluated in order by a
small pure engine (:func:`heuristics.engine.evaluate`); every rule evaluated appears in the
trace, every rule that fired in the reasons. The table leads with the fitted ladder
(:mod:`heuristics.rules.ladder`: the meta-benchmark's evidence for the fit gap at the planned
``budget``); the paper's rules as they stood before that fit are :data:`PAPER_RULES`
(``advise(..., rules=PAPER_RULES)``), and decide what the ladder leaves. A user override
wins over every rule and is marked as such (confidence ``"user"``, rule ``"override"``).
:func:`binary_default` is the common practice the recommendation improves on, as the same
:class:`Hyperparameters` type;
:meth:`Hyperparameters.from_dict` reads either back from JSON. After the rules, a table of
cautions (:data:`CAUTIONS`) warns when the inputs cannot carry the advice (too few images per
class, a noisy probe, untrained weights) and caps the confidence (``Recommendation.warnings``).
"""

from heuristics.advisor import advise
from heuristics.baseline import binary_default
from heuristics.cautions import CAUTIONS
from heuristics.engine import OVERRIDE, Decision, Evaluation, evaluate
from heuristics.overrides import DERIVED_ONLY, OVERRIDABLE, parse_override
from heuristics.rules import DECIDED, DERIVED, MEASURE_BOUNDS, PAPER_RULES, RULES
from heuristics.rules.common import BINARY_LR, BINARY_MOMENTUM, BINARY_WEIGHT_DECAY
from heuristics.types import (
    Block,
    Caution,
    CautionRule,
    Derived,
    Detail,
    Hyperparameters,
    LrGroup,
    Reason,
    Recommendation,
    Rule,
    TraceEntry,
)

__all__ = [
    "BINARY_LR",
    "BINARY_MOMENTUM",
    "BINARY_WEIGHT_DECAY",
    "CAUTIONS",
    "DECIDED",
    "DERIVED",
    "DERIVED_ONLY",
    "MEASURE_BOUNDS",
    "OVERRIDABLE",
    "OVERRIDE",
    "PAPER_RULES",
    "RULES",
    "Block",
    "Caution",
    "CautionRule",
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
    "advise",
    "binary_default",
    "evaluate",
    "parse_override",
]
