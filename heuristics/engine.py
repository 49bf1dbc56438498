"""The engine: evaluate a rule table, in order, over named inputs; return values and the trace.

Pure: the same rules and inputs give the same :class:`Evaluation`; nothing is validated here
(that is :mod:`heuristics.validation`'s job at the front door).

Semantics, rule by rule in table order:

1. A ``decide`` or ``default`` rule whose target an earlier rule already set is skipped.
2. Its ``needs`` are looked up: a target set by an earlier rule, then a derived quantity
   (computed from its own inputs), then an input. If one is missing the rule is skipped and
   the trace says which name was missing.
3. If ``condition(view)`` is false the rule is skipped, and the trace shows ``when`` filled in.
4. Otherwise it fires: ``effect(view)`` becomes the target's value, with a reason sentence, a
   confidence (the weakest of the rule's own and that of every earlier target it needs), a
   search range, and its provenance (the ids of every rule the value rests on).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from heuristics.types import (
    CONFIDENCE_LEVELS,
    Confidence,
    Derived,
    FrozenMap,
    Reason,
    Rule,
    TraceEntry,
)


@dataclass(frozen=True)
class Decision:
    """The value a target ended up with, and what it rests on."""

    value: Any
    set_by: str  # the rule that set the current value
    rules: tuple[str, ...]  # provenance, in table order
    confidence: Confidence
    range: tuple[Any, ...]
    default: bool  # set by a ``default`` rule


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
             derived: Mapping[str, Derived] | None = None) -> Evaluation:
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

    Returns
    -------
    Evaluation
    """
    context = context or {}
    derived = derived or {}
    order = {rule.id: i for i, rule in enumerate(rules)}
    targets = {rule.target for rule in rules}
    decisions: dict[str, Decision] = {}
    reasons: list[Reason] = []
    trace: list[TraceEntry] = []

    def lookup(name: str) -> _Found:
        if name in decisions:
            return _Found(decisions[name].value, {}, (name,))
        if name in derived:
            spec = derived[name]
            found = {inp: lookup(inp) for inp in spec.inputs}
            value = spec.compute({inp: f.value for inp, f in found.items()})
            return _Found(value, _merge(f.measures for f in found.values()),
                          tuple(u for f in found.values() for u in f.upstream))
        if name in inputs:
            return _Found(inputs[name], {name: inputs[name]}, ())
        if name in context:
            return _Found(context[name], {}, ())
        raise _Missing(name, undecided=name in targets)

    for rule in rules:
        prior = decisions.get(rule.target)
        if prior is not None and rule.kind != "adjust":
            trace.append(TraceEntry(rule.id, False,
                                    f"skipped: {rule.target} already set by {prior.set_by}"))
            continue
        found: dict[str, _Found] = {}
        try:
            for need in rule.needs:
                found[need] = lookup(need)
        except _Missing as missing:
            trace.append(TraceEntry(rule.id, False, _missing_why(need, missing)))
            continue
        view: dict[str, Any] = {**rule.params, **{n: f.value for n, f in found.items()}}
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
                         key=CONFIDENCE_LEVELS.index)
        provenance = {rule.id, *(r for u in upstream for r in decisions[u].rules)}
        decisions[rule.target] = Decision(
            value=value,
            set_by=rule.id,
            rules=tuple(sorted(provenance, key=order.__getitem__)),
            confidence=confidence,
            range=tuple(rule.search_range(view)) if rule.search_range else (value,),
            default=rule.kind == "default",
        )
        reasons.append(Reason(rule.id, rule.target, rule.reason.format_map(view),
                              _merge(f.measures for f in found.values()), rule.source))
        trace.append(TraceEntry(rule.id, True, when))

    return Evaluation(FrozenMap(decisions), tuple(reasons), tuple(trace))


def _merge(parts) -> FrozenMap:
    merged: dict[str, Any] = {}
    for part in parts:
        merged.update(part)
    return FrozenMap(merged)


def _missing_why(need: str, missing: _Missing) -> str:
    state = "not set by any earlier rule" if missing.undecided else "missing"
    if need == missing.name:
        return f"needs {need}: {state}"
    return f"needs {need}: {missing.name} {state}"  # a derived need, and the input behind it
