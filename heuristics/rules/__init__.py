"""The rule table: measures of fit -> the paper's non-binary fine-tuning hyperparameters.

Rules are evaluated in table order by :func:`heuristics.engine.evaluate`. A rule of kind
``decide`` sets its target unless an earlier rule (or the user) did, so the order of rules for
one target is their priority (the paper's own measure before its stand-ins, stand-ins before
the default); ``adjust`` rules (caps) come after the rules they adjust; a ``default`` rule
closes a hyperparameter whose rules all lack their inputs. Adding a rule is one table entry;
every threshold is a named constant next to its rules, with its source, or marked provisional
where no paper gives a number.

Rule ids are ``<area>.<what>``, one module per area group:

- :mod:`.regularisation`: ``fit`` (an intermediate finding, ``feature_fit``: ``"good"`` or
  ``"poor"``) and ``reg`` (L2-SP, L2, what neither touches);
- :mod:`.reinit`: ``reinit`` (top blocks to re-initialise);
- :mod:`.groups`: ``groups`` (the split point and the three learning-rate groups);
- :mod:`.lr`: ``opt`` and ``lr`` (optimiser, momentum, base and effective learning rate);
- :mod:`.budget`: ``budget``, ``schedule`` and ``loss`` (batch, epochs, steps, warm-up, label
  smoothing);
- :mod:`.lpft`: ``lpft`` (train the new layers first).
"""

from __future__ import annotations

from dataclasses import replace

from heuristics.rules import budget, groups, ladder, lpft, lr, regularisation, reinit
from heuristics.rules.measures import MEASURE_BOUNDS
from heuristics.types import Derived, Rule

DECIDED = (
    "reinit_top_blocks", "split_block",
    "optimizer", "momentum", "base_lr", "effective_lr", "head_lr", "upper_lr", "lower_lr",
    "l2sp_weight", "l2_weight", "exclude_from_decay",
    "batch_size", "epochs", "steps", "schedule", "warmup_epochs", "lp_ft", "lp_epochs",
    "label_smoothing",
)
"""The values the rule table decides, one :class:`~heuristics.types.Detail` each, in report order.

:class:`~heuristics.types.Hyperparameters` is assembled from them by :func:`heuristics.advise`
(``head_lr``, ``upper_lr`` and ``lower_lr`` become the learning-rate groups' rates)."""

PAPER_RULES: tuple[Rule, ...] = (
    *regularisation.FIT_RULES,
    *reinit.RULES,
    *groups.SPLIT_RULES,
    *regularisation.REG_RULES,
    *lr.RULES,
    *groups.LR_RULES,
    *budget.RULES,
    *lpft.RULES,
)
"""The paper's rules with nbtl's provisional thresholds, before the fit to the meta-benchmark
(issue 19): kept for the paper-reproduction test, and as the fallback of :data:`RULES` when the
fitted ladder lacks its measure."""

# Safety caps that hold whatever set the value: a user's split block stays transferred, the
# bottom block is never re-initialised.
_ALWAYS = ("reinit.keep_user_split_block", "reinit.keep_bottom_block")


def _unless_ladder(rule: Rule) -> Rule:
    """An adjust rule of the paper's table that yields to the fitted ladder."""
    if rule.kind != "adjust" or rule.target not in ladder.LADDER_TARGETS or rule.id in _ALWAYS:
        return rule
    return replace(rule, needs=(*rule.needs, "ladder_rung"),
                   condition=lambda v, c=rule.condition: v["ladder_rung"] is None and c(v),
                   when=rule.when + " (and no fitted ladder: ladder_rung {ladder_rung})")


RULES: tuple[Rule, ...] = (
    *budget.RULES,
    *ladder.RULES,
    *(_unless_ladder(rule) for rule in PAPER_RULES if rule not in budget.RULES),
)
"""The table :func:`heuristics.advise` evaluates: the budget first (the ladder reads the planned
epochs), the fitted ladder (:mod:`.ladder`), then the paper's rules, which decide what the
ladder leaves (or everything, when its measure is missing)."""

DERIVED: dict[str, Derived] = {d.name: d for d in (
    *regularisation.DERIVED, *reinit.DERIVED, *groups.DERIVED, *lr.DERIVED, *budget.DERIVED,
    *ladder.DERIVED,
)}

__all__ = ["DECIDED", "DERIVED", "MEASURE_BOUNDS", "PAPER_RULES", "RULES"]
