"""``advise``: check the inputs, run the rule table, assemble the hyperparameters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from heuristics.cautions import CAUTIONS, capped, check_cautions
from heuristics.cautions import DERIVED as CAUTION_DERIVED
from heuristics.engine import Decision, evaluate
from heuristics.inputs import check_inputs
from heuristics.overrides import check_overrides
from heuristics.rules import DECIDED, DERIVED, MEASURE_BOUNDS, RULES
from heuristics.types import (
    Block,
    CautionRule,
    Derived,
    Detail,
    FrozenMap,
    Hyperparameters,
    LrGroup,
    Recommendation,
    Rule,
)


def advise(
    measures: Mapping[str, float],
    *,
    profile: Mapping[str, Sequence[float]] | None = None,
    blocks: Sequence[Block] = (),
    head_modules: Sequence[str] = ("classifier",),
    num_images: int | None = None,
    num_classes: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    rules: Sequence[Rule] = RULES,
    derived: Mapping[str, Derived] = DERIVED,
    cautions: Sequence[CautionRule] = CAUTIONS,
    budget: Mapping[str, int] | None = None,
) -> Recommendation:
    """Turn measures of fit into the paper's non-binary fine-tuning hyperparameters, with reasons.

    Parameters
    ----------
    measures : mapping of str to float
        Summary measures by the probes' registered names (at the backbone's output features,
        or once per model), e.g. ``linear_probe_accuracy`` and ``scratch_accuracy``
        (fractions: the paper's measure of fit), ``pretraining_gain``, ``knn_accuracy``,
        ``logme``, ``bn_shift``, ``leep``, ``source_confidence``; see
        :data:`heuristics.rules.MEASURE_BOUNDS`. Any subset, even none: a rule that lacks
        its inputs does not fire and a default says so. Unknown names are ignored.
    profile : mapping of str to sequence of float, optional
        Per-block measures, bottom-up, one value per block of ``blocks``. Unknown names are
        ignored; an empty sequence counts as not given.
    blocks : sequence of Block
        The backbone's transferable blocks, bottom-up. Any object with ``name`` and
        ``modules`` attributes is accepted. Without blocks the backbone is one group.
    head_modules : sequence of str
        The classifier's module names (always new).
    num_images, num_classes : int, optional
        Dataset size: for the caps on re-initialised blocks and the batch, the training
        budget, and the chance level.
    overrides : mapping of str to value, optional
        Hyperparameters the user sets (typed values or strings as in
        :func:`heuristics.parse_override`). Each wins over every rule and is set before the
        rules run, so the values derived from it follow (e.g. the group learning rates from
        ``base_lr``, the split and module lists from ``reinit_top_blocks``).
    rules, derived : optional
        The rule table and derived quantities; the defaults are :data:`heuristics.rules.RULES`
        and :data:`heuristics.rules.DERIVED`.
    cautions : sequence of CautionRule, optional
        Evaluated after the rules (default :data:`heuristics.cautions.CAUTIONS`): those that
        fire become ``warnings`` and cap the confidence of every value a rule set.
    budget : mapping, optional
        The training the user plans: ``epochs`` and ``image_size`` (pixels). The fitted
        ladder follows the benchmark's evidence at the nearest benchmark budget. Default: the
        rule table's own epochs (or the user's ``epochs`` override) at 224 px.

    Returns
    -------
    Recommendation
        ``to_dict()`` gives ``hyperparameters``, ``details``, ``reasons``, ``trace`` (the rules,
        then the cautions), ``defaults_used``, ``overrides``, ``warnings`` and ``ladder`` (the
        fitted ladder's verdict and the budget it is for; None without its measure).

    Raises
    ------
    ValueError
        A known measure that is not a finite number or is out of range (the message names it),
        a profile whose length differs from ``len(blocks)``, duplicate block or module names, a
        dataset size that is not a positive integer (``num_classes`` at least 2), or an override
        with an unknown name or a bad value (the message names the hyperparameter).
    TypeError
        Inputs of the wrong kind (e.g. ``measures`` not a mapping).
    """
    inputs = check_inputs(measures, profile if profile is not None else {}, blocks,
                          head_modules, num_images, num_classes, MEASURE_BOUNDS)
    block_names = tuple(b.name for b in inputs.blocks)
    user = check_overrides(overrides if overrides is not None else {}, block_names)
    plan = _plan(budget, inputs.values, block_names, derived, user)
    evaluation = evaluate(rules, inputs.values, {"block_names": block_names, **plan}, derived,
                          user)
    decisions = evaluation.decisions
    unset = [name for name in DECIDED if name not in decisions]
    if unset:
        raise ValueError(f"the rule table set no value for {', '.join(unset)}; every "
                         f"hyperparameter needs a default rule")
    warnings, caution_trace = check_cautions(
        cautions, inputs.values, {**derived, **{d.name: d for d in CAUTION_DERIVED}})
    return Recommendation(
        hyperparameters=_assemble(decisions, inputs.blocks, inputs.head_modules),
        details=FrozenMap({name: capped(_detail(decisions[name]), warnings)
                           for name in DECIDED}),
        reasons=evaluation.reasons,
        trace=evaluation.trace + caution_trace,
        defaults_used=tuple(name for name in DECIDED if decisions[name].default),
        overrides=user,
        warnings=warnings,
        ladder=_ladder(decisions, inputs.values, plan, warnings),
    )


def _plan(budget: Mapping[str, int] | None, values: Mapping[str, Any],
          block_names: tuple[str, ...], derived: Mapping[str, Derived],
          user: Mapping[str, Any]) -> dict[str, Any]:
    """The planned epochs and image size: the user's, else the budget rules' epochs; and
    where the epochs came from ("budget", "epochs override" or "rule table")."""
    from heuristics.rules import budget as budget_rules
    from heuristics.rules.ladder import DEFAULT_IMAGE_SIZE

    budget = dict(budget or {})
    for key in budget:
        if key not in ("epochs", "image_size"):
            raise ValueError(f"budget: unknown key {key!r} (expected epochs, image_size)")
        value = budget[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"budget: {key} must be a positive integer, got {value!r}")
    epochs = budget.get("epochs")
    stated = "budget" if epochs is not None else "epochs override" if "epochs" in user \
        else "rule table"
    if epochs is None:
        epochs = evaluate(budget_rules.RULES, values, {"block_names": block_names}, derived,
                          {k: v for k, v in user.items() if k in ("batch_size", "epochs")}
                          ).decisions["epochs"].value
    return {"planned_epochs": int(epochs),
            "planned_image_size": int(budget.get("image_size") or DEFAULT_IMAGE_SIZE),
            "planned_from": stated}


def _ladder(decisions: Mapping[str, Decision], values: Mapping[str, Any],
            plan: Mapping[str, int], warnings) -> dict[str, Any] | None:
    """The fitted ladder's verdict, for the JSON and the report's first line (its confidence
    capped by the cautions, as every value's is)."""
    from heuristics.gaps import fit_gap
    from heuristics.rules.ladder import MODEL, describe, plan_for

    rung = decisions.get("ladder_rung")
    if rung is None or rung.value is None:
        return None
    step = MODEL["ladder"][rung.value]
    return {
        "rung": rung.value, "rungs": len(MODEL["ladder"]), "setting": describe(step),
        "keep_default": rung.value == 0,
        "confidence": capped(_detail(rung), warnings).confidence,
        "gap": {"name": MODEL["gap"],
                "value": fit_gap(MODEL["gap"], values, values["num_classes"])},
        "budget": {**plan_for(plan["planned_epochs"], plan["planned_image_size"]).to_dict(),
                   "epochs_from": plan["planned_from"]},
    }


def _detail(decision: Decision) -> Detail:
    return Detail(decision.value, decision.range, decision.confidence, decision.reason,
                  decision.source, decision.set_by, decision.rules, decision.measures)


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
    lower, upper = transferred[:at], transferred[at:]
    # L2-SP on the lower group, or on every transferred block when there is no split point.
    l2sp = "l2sp" if value["l2sp_weight"] > 0 else "l2"
    head = LrGroup("head", value["head_lr"], _names(new), _modules(new) + head_modules, "l2")
    if blocks:
        rest = (LrGroup("upper", value["upper_lr"], _names(upper), _modules(upper),
                        "l2" if lower else l2sp),
                LrGroup("lower", value["lower_lr"], _names(lower), _modules(lower), l2sp))
    else:  # the backbone's modules are unknown: one group takes every other parameter
        rest = (LrGroup("backbone", value["upper_lr"], (), (), l2sp, rest=True),)
    groups = tuple(g for g in (head, *rest) if g.modules or g.rest)
    return Hyperparameters(
        reinit_top_blocks=reinit,
        reinit_modules=_modules(new),
        split_block=split,
        lr_groups=groups,
        optimizer=value["optimizer"],
        momentum=value["momentum"],
        base_lr=value["base_lr"],
        effective_lr=value["effective_lr"],
        l2sp_weight=value["l2sp_weight"],
        l2sp_modules=tuple(m for g in groups if g.penalty == "l2sp" for m in g.modules),
        l2_weight=value["l2_weight"],
        l2_modules=tuple(m for g in groups if g.penalty == "l2" for m in g.modules),
        exclude_from_decay=value["exclude_from_decay"],
        batch_size=value["batch_size"],
        epochs=value["epochs"],
        steps=value["steps"],
        schedule=value["schedule"],
        warmup_epochs=value["warmup_epochs"],
        lp_ft=value["lp_ft"],
        lp_epochs=value["lp_epochs"],
        label_smoothing=value["label_smoothing"],
    )


def _names(blocks: Sequence[Block]) -> tuple[str, ...]:
    return tuple(b.name for b in blocks)


def _modules(blocks: Sequence[Block]) -> tuple[str, ...]:
    return tuple(m for b in blocks for m in b.modules)
