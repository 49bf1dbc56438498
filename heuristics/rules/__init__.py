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

from heuristics.rules import budget, groups, lpft, lr, regularisation, reinit
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

RULES: tuple[Rule, ...] = (
    *regularisation.FIT_RULES,
    *reinit.RULES,
    *groups.SPLIT_RULES,
    *regularisation.REG_RULES,
    *lr.RULES,
    *groups.LR_RULES,
    *budget.RULES,
    *lpft.RULES,
)

DERIVED: dict[str, Derived] = {d.name: d for d in (
    *regularisation.DERIVED, *reinit.DERIVED, *groups.DERIVED, *lr.DERIVED, *budget.DERIVED,
)}

__all__ = ["DECIDED", "DERIVED", "MEASURE_BOUNDS", "RULES"]
