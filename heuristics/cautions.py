"""Cautions: when the inputs cannot carry the recommendation, say so and lower its confidence.

The rules read the measures as if they were exact. On a handful of images per class the probe's
folds disagree by more than the differences the rules act on, and on untrained weights the
measures describe random features; the rules still return values, so the table below
(:data:`CAUTIONS`, evaluated by :func:`heuristics.advise` after the rules, over the same
validated inputs) turns those cases into warnings. A caution with a ``cap`` lowers the
confidence of every value a rule set to at most the cap (a user's value keeps ``"user"``), and
the :class:`~heuristics.types.Detail` names it. Adding a caution is one table entry; every
threshold is a named constant with its reason, marked provisional where no paper gives it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from heuristics.rules.common import HENDRYCKS_2017
from heuristics.types import (
    CONFIDENCE_ORDER,
    Caution,
    CautionRule,
    Derived,
    Detail,
    FrozenMap,
    TraceEntry,
)

# The linear probe scores 5 stratified outer folds (probes/linear_probe.py): below 10 images
# per class a fold tests fewer than two images per class, and a fold's accuracy on C test images
# has a binomial standard deviation of sqrt(p (1 - p) / C), 0.16 at p = 0.5 and C = 10: more
# than any difference the rules act on. Provisional nbtl choice.
MIN_IMAGES_PER_CLASS = 10
# The probe's fold standard deviation at the top block above which the measures cannot decide:
# five times the re-initialisation rule's tolerance (heuristics.rules.reinit,
# PROFILE_ACCURACY_TOLERANCE = 0.02), wider than the margins of the fit and learning-rate
# thresholds. The bundled sample (20 images per class, 10 classes) gives 0.062 at the top
# block, 0.071 at most; 5 per class gives up to 0.17. Provisional nbtl choice.
MAX_TOP_SPREAD = 0.1
# Untrained weights give a flat source head: a mean max-softmax near chance (1 / Cs, 0.001 for
# ImageNet's 1000 classes: a zero-initialised head) or a few times it, and a normalised entropy
# near 1. Randomly initialised tf_efficientnet_lite0 weights (timm's init, --weights) give 0.036
# and 0.876 on the bundled sample; its ImageNet weights 0.26 and 0.59 (0.22 and 0.62 at 5
# images per class): trained heads stay well above chance even far from their domain (Hendrycks
# & Gimpel 2017). Both must hold, so a trained head of many more classes (a lower chance) is
# not taken for an untrained one. Provisional nbtl choices, between those values.
UNTRAINED_MAX_CONFIDENCE = 0.1
UNTRAINED_MIN_ENTROPY = 0.8

PROVISIONAL = "provisional nbtl threshold"

DERIVED = (
    Derived("top_accuracy_spread", ("profile.linear_probe_accuracy_spread",),
            lambda v: v["profile.linear_probe_accuracy_spread"][-1],
            "fold standard deviation of the linear probe at the top block"),
)

CAUTIONS: tuple[CautionRule, ...] = (
    CautionRule(
        id="caution.few_images_per_class",
        needs=("images_per_class", "num_images", "num_classes"),
        condition=lambda v: v["images_per_class"] < v["min_images_per_class"],
        text="Only {images_per_class:.3g} images per class ({num_images} images, {num_classes} "
             "classes), fewer than {min_images_per_class:g}: the probes' cross-validation folds "
             "test fewer than two images per class each, too few for the measures to decide, "
             "so every setting's confidence is low; measure on more images per class.",
        when="{images_per_class:.3g} images per class < {min_images_per_class:g}",
        params={"min_images_per_class": MIN_IMAGES_PER_CLASS},
        source=f"{PROVISIONAL}: the linear probe's 5 stratified folds and the binomial noise "
               f"of a fold's accuracy",
    ),
    CautionRule(
        id="caution.noisy_probe",
        needs=("top_accuracy_spread",),
        condition=lambda v: v["top_accuracy_spread"] > v["max_spread"],
        text="The linear probe's accuracy varies by {top_accuracy_spread:.3g} between "
             "cross-validation folds at the top block, more than {max_spread:g}: differences "
             "between blocks and from the thresholds are within noise, so the measures cannot "
             "decide and every setting's confidence is low; measure on more images per class.",
        when="fold std {top_accuracy_spread:.3g} > {max_spread:g} at the top block",
        params={"max_spread": MAX_TOP_SPREAD},
        source=f"{PROVISIONAL}: five times the re-initialisation rule's tolerance of 0.02",
    ),
    CautionRule(
        id="caution.untrained_weights",
        needs=("source_confidence", "source_entropy"),
        condition=lambda v: (v["source_confidence"] <= v["max_confidence"]
                             and v["source_entropy"] >= v["min_entropy"]),
        text="The source head's predictions are near uniform (mean max-softmax "
             "{source_confidence:.3g} <= {max_confidence:g}, normalised entropy "
             "{source_entropy:.3g} >= {min_entropy:g}): the weights look untrained, so the "
             "measures describe random features and every setting's confidence is low; load "
             "the pre-trained weights.",
        when="source_confidence {source_confidence:.3g} <= {max_confidence:g} and "
             "source_entropy {source_entropy:.3g} >= {min_entropy:g}",
        params={"max_confidence": UNTRAINED_MAX_CONFIDENCE,
                "min_entropy": UNTRAINED_MIN_ENTROPY},
        source=f"{PROVISIONAL}; {HENDRYCKS_2017}",
    ),
)


def check_cautions(cautions: Sequence[CautionRule], inputs: Mapping[str, Any],
                   derived: Mapping[str, Derived]
                   ) -> tuple[tuple[Caution, ...], tuple[TraceEntry, ...]]:
    """Evaluate ``cautions`` in order over validated ``inputs``: those that fired, and one
    trace entry per caution (fired, or why not, in the words of the rule engine's trace)."""
    fired: list[Caution] = []
    trace: list[TraceEntry] = []
    for caution in cautions:
        found = {}
        try:
            for need in caution.needs:
                found[need] = _lookup(need, inputs, derived)
        except KeyError as missing:
            behind = "" if missing.args[0] == need else f"{missing.args[0]} "
            trace.append(TraceEntry(caution.id, False, f"needs {need}: {behind}missing"))
            continue
        view = {**caution.params, **{name: value for name, (value, _) in found.items()}}
        when = caution.when.format_map(view)
        if not caution.condition(view):
            trace.append(TraceEntry(caution.id, False, f"condition not met: {when}"))
            continue
        measures = {k: v for _, parts in found.values() for k, v in parts.items()}
        fired.append(Caution(caution.id, caution.text.format_map(view),
                             FrozenMap(dict(sorted(measures.items()))), caution.source,
                             caution.cap))
        trace.append(TraceEntry(caution.id, True, when))
    return tuple(fired), tuple(trace)


def capped(detail: Detail, warnings: Sequence[Caution]) -> Detail:
    """``detail`` with its confidence lowered to the cap of every warning that has one, and
    those warnings named; a user's value is left as it is."""
    caps = [w for w in warnings if w.cap is not None]
    if not caps or detail.confidence == "user":
        return detail
    level = min((detail.confidence, *(w.cap for w in caps)), key=CONFIDENCE_ORDER.index)
    return dataclasses.replace(detail, confidence=level, cautions=tuple(w.id for w in caps))


def _lookup(name: str, inputs: Mapping[str, Any], derived: Mapping[str, Derived]
            ) -> tuple[Any, Mapping[str, Any]]:
    """The value of an input or derived quantity, and the reported inputs it comes from.

    Raises ``KeyError(name)`` with the missing input's name."""
    if name in inputs:
        return inputs[name], {name: inputs[name]}
    if name not in derived:
        raise KeyError(name)
    spec = derived[name]
    found = {inp: _lookup(inp, inputs, derived) for inp in spec.inputs}
    measures = {k: v for _, parts in found.values() for k, v in parts.items()}
    return spec.compute({inp: value for inp, (value, _) in found.items()}), measures
