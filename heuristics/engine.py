"""The engine: evaluate a rule table, in order, over named inputs; return values and the trace.

Pure: the same rules and inputs give the same :class:`Evaluation`; nothing is validated here
(that is :mod:`heuristics.inputs`'s job at the front door).

Semantics:

0. User overrides are set first, before any rule: each is a decision of its own (confidence
   ``"user"``, rule ``"override"``), with a reason and a trace entry, so every rule that needs
   an overridden target reads the user's value.
1. Rule by rule in table order, a ``decide`` or ``default`` rule whose target is already set
   (by an earlier rule or the user) is skipped; an ``adjust`` rule is skipped only when the
   user set its target (an override wins over any rule).
2. Its ``needs`` are looked up: a target already set, then a derived quantity (computed from
   its own inputs), then an input. If one is missing the rule is skipped and the trace says
   which name was missing.
3. If ``condition(view)`` is false the rule is skipped, and the trace shows ``when`` filled in.
4. Otherwise it fires: ``effect(view)`` becomes the target's value, with a reason sentence, a
   confidence (the weakest of the rule's own and that of every earlier target it needs), a
   search range, its provenance (the ids of every rule the value rests on) and the measures
   it rests on (its inputs', and those behind every earlier target it needs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from heuristics.types import (
    CONFIDENCE_ORDER,
    Confidence,
    Derived,
    FrozenMap,
    Reason,
    Rule,
    TraceEntry,
)

OVERRIDE = "override"  # the rule id of a user override, in reasons, details and the trace
OVERRIDE_TEXT = "set by the user"
OVERRIDE_SOURCE = "user override"


@dataclass(frozen=True)
class Decision:
    """The value a target ended up with, and what it rests on."""

    value: Any
    set_by: str  # the rule that set the current value, or OVERRIDE
    rules: tuple[str, ...]  # provenance, in table order (OVERRIDE first)
    confidence: Confidence
    range: tuple[Any, ...]
    default: bool  # set by a ``default`` rule
    reason: str  # the setter's sentence, filled in
    source: str  # the setter's source
    measures: Mapping[str, Any]  # the reported inputs the value rests on


@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate` returns: one decision per target set, the reasons, the trace."""

    decisions: Mapping[str, Decision]
    reasons: tuple[Reason, ...]
    trace: tuple[TraceEntry, ...]


class _Missing(Exception):
    def __init__(self, name: str, undecided: bool) -> None:
        super().__init__(name)
        self.name = name
        self.undecided = undecided


@dataclass(frozen=True)
class _Found:
    value: Any
    measures: Mapping[str, Any]  # the reported inputs the value comes from
    upstream: tuple[str, ...]  # earlier targets it comes from


def evaluate(rules: Sequence[Rule], inputs: Mapping[str, Any],
             context: Mapping[str, Any] | None = None,
             derived: Mapping[str, Derived] | None = None,
             overrides: Mapping[str, Any] | None = None) -> Evaluation:
    """Evaluate ``rules`` in order.

    Parameters
    ----------
    rules : sequence of Rule
        The table, in priority order.
    inputs : mapping
        Measures and dataset facts by name, JSON-ready; a reason lists the ones it used.
    context : mapping, optional
        Other named inputs rules may need but reasons do not list (e.g. block names).
    derived : mapping of str to Derived, optional
        Quantities computed on demand from inputs, context or earlier targets.
    overrides : mapping, optional
        Target values set by the user, already validated; they win over every rule.

    Returns
    -------
    Evaluation
    """
    context = context or {}
    derived = derived or {}
    order = {OVERRIDE: -1, **{rule.id: i for i, rule in enumerate(rules)}}
    targets = {rule.target for rule in rules}
    decisions: dict[str, Decision] = {}
    reasons: list[Reason] = []
    trace: list[TraceEntry] = []

    for name, value in (overrides or {}).items():
        decisions[name] = Decision(value, OVERRIDE, (OVERRIDE,), "user", (value,), False,
                                   OVERRIDE_TEXT, OVERRIDE_SOURCE, FrozenMap())
        reasons.append(Reason(OVERRIDE, name, f"{OVERRIDE_TEXT}: {name} = {value!r}",
                              FrozenMap(), OVERRIDE_SOURCE))
        trace.append(TraceEntry(OVERRIDE, True, f"{name} = {value!r} {OVERRIDE_TEXT}"))

    def lookup(name: str) -> _Found:
        if name in decisions:
            return _Found(decisions[name].value, decisions[name].measures, (name,))
        if name in derived:
            spec = derived[name]
            found = {inp: lookup(inp) for inp in spec.inputs}
            value = spec.compute({inp: f.value for inp, f in found.items()})
            return _Found(value, _merge(f.measures for f in found.values()),
                          tuple(u for f in found.values() for u in f.upstream))
        if name in inputs:
            return _Found(inputs[name], FrozenMap({name: inputs[name]}), ())
        if name in context:
            return _Found(context[name], FrozenMap(), ())
        raise _Missing(name, undecided=name in targets)

    for rule in rules:
        prior = decisions.get(rule.target)
        if prior is not None and (rule.kind != "adjust" or prior.set_by == OVERRIDE):
            by = "the user" if prior.set_by == OVERRIDE else prior.set_by
            trace.append(TraceEntry(rule.id, False, f"skipped: {rule.target} already set by {by}"))
            continue
        found: dict[str, _Found] = {}
        try:
            for need in rule.needs:
                found[need] = lookup(need)
        except _Missing as missing:
            trace.append(TraceEntry(rule.id, False, _missing_why(need, missing)))
            continue
        view: dict[str, Any] = {**rule.params, **{n: f.value for n, f in found.items()}}
        view["because"] = {n: decisions[n].reason for n in found if n in decisions}
        view["ranges"] = {n: decisions[n].range for n in found if n in decisions}
        when = rule.when.format_map(view)
        if not rule.condition(view):
            trace.append(TraceEntry(rule.id, False, f"condition not met: {when}"))
            continue

        value = rule.effect(view)
        view["value"] = value
        view["previous"] = prior.value if prior is not None else None
        upstream = {u for f in found.values() for u in f.upstream}
        own = rule.confidence(view) if callable(rule.confidence) else rule.confidence
        confidence = min((own, *(decisions[u].confidence for u in upstream)),
                         key=CONFIDENCE_ORDER.index)
        provenance = {rule.id, *(r for u in upstream for r in decisions[u].rules)}
        text = rule.reason.format_map(view)
        measures = _merge(f.measures for f in found.values())
        decisions[rule.target] = Decision(
            value=value,
            set_by=rule.id,
            rules=tuple(sorted(provenance, key=order.__getitem__)),
            confidence=confidence,
            range=tuple(rule.search_range(view)) if rule.search_range else (value,),
            default=rule.kind == "default",
            reason=text,
            source=rule.source,
            measures=measures,
        )
        reasons.append(Reason(rule.id, rule.target, text, measures, rule.source))
        trace.append(TraceEntry(rule.id, True, when))

    return Evaluation(FrozenMap(decisions), tuple(reasons), tuple(trace))


def _merge(parts) -> FrozenMap:
    merged: dict[str, Any] = {}
    for part in parts:
        merged.update(part)
    return FrozenMap(dict(sorted(merged.items())))


def _missing_why(need: str, missing: _Missing) -> str:
    state = "not set by any earlier rule" if missing.undecided else "missing"
    if need == missing.name:
        return f"needs {need}: {state}"
    return f"needs {need}: {missing.name} {state}"  # a derived need, and the input behind it
