"""``recommend``: validate the measures, run the rule table, assemble the hyperparameters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from heuristics.engine import Decision, evaluate
from heuristics.rules import DERIVED, HYPERPARAMETERS, MEASURE_BOUNDS, RULES
from heuristics.types import (
    Block,
    Derived,
    Detail,
    FrozenMap,
    Hyperparameters,
    LrGroup,
    Recommendation,
    Rule,
)
from heuristics.validation import validate


def recommend(
    measures: Mapping[str, float],
    *,
    profile: Mapping[str, Sequence[float]] | None = None,
    blocks: Sequence[Block] = (),
    head_modules: Sequence[str] = ("classifier",),
    num_images: int | None = None,
    num_classes: int | None = None,
    rules: Sequence[Rule] = RULES,
    derived: Mapping[str, Derived] = DERIVED,
) -> Recommendation:
    """Turn measures of fit into the paper's non-binary fine-tuning hyperparameters, with reasons.

    Parameters
    ----------
    measures : mapping of str to float
        Summary measures at the backbone's output (penultimate) features, by the probes'
        registered names: ``linear_probe_accuracy`` (fraction), ``logme``, ``leep``,
        ``pretraining_gain`` (in [-1, 1]), ``scratch_accuracy`` (fraction). Any subset;
        unknown names are ignored.
    profile : mapping of str to sequence of float, optional
        Per-block measures, bottom-up, one value per block of ``blocks``. Unknown names are
        ignored; an empty sequence counts as not given.
    blocks : sequence of Block
        The backbone's transferable blocks, bottom-up. Any object with ``name`` and
        ``modules`` attributes is accepted.
    head_modules : sequence of str
        The classifier's module names (always new).
    num_images, num_classes : int, optional
        Dataset size, for the size cap on re-initialised blocks and the chance level.
    rules, derived : optional
        The rule table and derived quantities; the defaults are :data:`heuristics.rules.RULES`
        and :data:`heuristics.rules.DERIVED`.

    Returns
    -------
    Recommendation
        ``to_dict()`` gives ``hyperparameters``, ``details``, ``reasons``, ``trace`` and
        ``defaults_used``.

    Raises
    ------
    ValueError
        A known measure that is not a finite number or is out of range (the message names it),
        a profile whose length differs from ``len(blocks)``, duplicate block or module names,
        or a dataset size that is not a positive integer (``num_classes`` at least 2).
    TypeError
        Inputs of the wrong kind (e.g. ``measures`` not a mapping).
    """
    inputs = validate(measures, profile if profile is not None else {}, blocks, head_modules,
                      num_images, num_classes, MEASURE_BOUNDS)
    context = {"block_names": tuple(b.name for b in inputs.blocks)}
    evaluation = evaluate(rules, inputs.values, context, derived)
    decisions = evaluation.decisions
    unset = [name for name in HYPERPARAMETERS if name not in decisions]
    if unset:
        raise ValueError(f"the rule table set no value for {', '.join(unset)}; every "
                         f"hyperparameter needs a default rule")
    return Recommendation(
        hyperparameters=_assemble(decisions, inputs.blocks, inputs.head_modules),
        details=FrozenMap({name: _detail(decisions[name]) for name in HYPERPARAMETERS}),
        reasons=evaluation.reasons,
        trace=evaluation.trace,
        defaults_used=tuple(name for name in HYPERPARAMETERS if decisions[name].default),
    )


def _detail(decision: Decision) -> Detail:
    return Detail(decision.value, decision.range, decision.confidence, decision.rules)


def _assemble(decisions: Mapping[str, Decision], blocks: tuple[Block, ...],
              head_modules: tuple[str, ...]) -> Hyperparameters:
    value = {name: d.value for name, d in decisions.items()}
    reinit = value["reinit_top_blocks"]
    if not 0 <= reinit <= max(len(blocks) - 1, 0):
        raise ValueError(f"rule {decisions['reinit_top_blocks'].set_by} set reinit_top_blocks "
                         f"to {reinit} for {len(blocks)} blocks; at least one must stay")
    transferred, new = blocks[:len(blocks) - reinit], blocks[len(blocks) - reinit:]
    names = [b.name for b in transferred]
    split = value["split_block"]
    if split is not None and split not in names:
        raise ValueError(f"rule {decisions['split_block'].set_by} set split_block to {split!r}, "
                         f"not a transferred block ({', '.join(names) or 'none'})")
    at = names.index(split) if split is not None else 0  # no split point: no lower group
    lower, upper = _modules(transferred[:at]), _modules(transferred[at:])
    groups = (
        LrGroup("head", value["head_lr"], _modules(new) + head_modules),
        LrGroup("upper", value["upper_lr"], upper),
        LrGroup("lower", value["lower_lr"], lower),
    )
    return Hyperparameters(
        reinit_top_blocks=reinit,
        reinit_modules=_modules(new),
        lr_groups=tuple(g for g in groups if g.modules),
        split_block=split,
        l2sp_weight=value["l2sp_weight"],
        l2sp_modules=lower if value["l2sp_weight"] > 0 else (),
        l2_weight=value["l2_weight"],
        base_lr=value["base_lr"],
        momentum=value["momentum"],
        optimizer=value["optimizer"],
    )


def _modules(blocks: Sequence[Block]) -> tuple[str, ...]:
    return tuple(m for b in blocks for m in b.modules)

