"""Guards on the rule table: every rule is seen to fire and not to fire, and every measure it
reads is a registered probe or is named, with its origin, as not one."""

from __future__ import annotations

import math
import random
import re
from pathlib import Path

import pytest

from heuristics import DERIVED, MEASURE_BOUNDS, OVERRIDABLE, RULES, Block, advise
from heuristics.rules import PAPER_RULES
from heuristics.rules.budget import SCHEDULES
from heuristics.rules.lr import OPTIMIZERS
from heuristics.rules.measures import NOT_PROBES
from probes import list_probes

# what advise() is told (the planned budget: its ``budget`` argument, or the epochs rules)
FACTS = {"num_images", "num_classes", "num_blocks", "block_names", "planned_epochs",
         "planned_image_size", "planned_from"}
NEEDS = {n for rule in RULES for n in rule.needs} | {n for d in DERIVED.values() for n in d.inputs}
# The per-block profiles the rules read, by measure name.
PROFILED = sorted(n.removeprefix("profile.") for n in NEEDS if n.startswith("profile."))

# --- The corpus: seeded random inputs over the whole input space ------------------------------

SEED = 0
CASES = 1200
# Where a measure has no finite bound, or its bounds are far wider than real values, values are
# drawn from this span instead.
SPANS = {"linear_probe_accuracy_spread": (0.0, 0.1), "logme": (-2.0, 3.0),
         "transrate": (-1.0, 5.0), "bn_shift": (0.0, 5.0)}
# A top block up to this far (relative) below its profile's peak: on either side of the rules'
# tolerances and of the fold spread.
NEAR_PEAK = 0.1


def _measure(rng: random.Random, name: str) -> float:
    lo, hi = SPANS.get(name) or MEASURE_BOUNDS[name] or (-math.inf, math.inf)
    lo, hi = (hi - 10.0 if math.isinf(lo) else lo), (lo + 10.0 if math.isinf(hi) else hi)
    return rng.uniform(lo, hi)


def _profile(rng: random.Random, name: str, n: int) -> list[float]:
    values = [_measure(rng, name) for _ in range(n)]
    shape = rng.choice(("random", "rising", "top just below the peak"))
    if shape == "rising":
        values.sort()
    elif shape == "top just below the peak":
        peak = max(values)
        values[-1] = peak - rng.uniform(0.0, NEAR_PEAK) * abs(peak)
    return values


def _override(rng: random.Random, name: str, names: list[str], reinit: int):
    n = len(names)
    choices = {
        "reinit_top_blocks": lambda: rng.randint(0, max(n - 1, 0)),
        # The top transferred block half of the time: the rules must move reinit_top_blocks.
        "split_block": lambda: (names[n - 1 - reinit] if n and rng.random() < 0.5
                                else rng.choice([None, *names[:n - reinit]])),
        "optimizer": lambda: rng.choice(OPTIMIZERS),
        "momentum": lambda: rng.choice((0.0, 0.5, 0.9, 0.95)),
        "l2sp_weight": lambda: rng.choice((0.0, 1e-3, 0.02)),
        "l2_weight": lambda: rng.choice((0.0, 1e-4, 1e-2)),
        "exclude_from_decay": lambda: rng.choice(((), ("batchnorm",), ("batchnorm", "bias"))),
        "batch_size": lambda: rng.choice((8, 16, 64)),
        "epochs": lambda: rng.randint(1, 300),
        "schedule": lambda: rng.choice(SCHEDULES),
        "warmup_epochs": lambda: rng.randint(0, 5),
        "lp_ft": lambda: rng.random() < 0.5,
        "lp_epochs": lambda: rng.randint(0, 5),
        "label_smoothing": lambda: rng.choice((0.0, 0.2)),
    }
    draw = choices.get(name, lambda: 10 ** rng.uniform(-4, -1))  # the learning rates
    return draw()


def _overrides(rng: random.Random, names: list[str]) -> dict:
    chosen = rng.sample(sorted(OVERRIDABLE), rng.randint(1, 3))
    reinit = rng.randint(0, max(len(names) - 1, 0)) if "reinit_top_blocks" in chosen else 0
    values = {name: _override(rng, name, names, reinit) for name in chosen}
    if "reinit_top_blocks" in chosen:
        values["reinit_top_blocks"] = reinit
    return values


def corpus(seed: int = SEED, cases: int = CASES):
    """``(measures, keyword arguments)`` for :func:`heuristics.advise`, drawn with ``seed``."""
    rng = random.Random(seed)
    for _ in range(cases):
        n = rng.choice((0, 1, 2, 3, 4, 6))
        names = [f"block{i}" for i in range(n)]
        measures = {m: _measure(rng, m) for m in MEASURE_BOUNDS if rng.random() < 0.4}
        profile = {m: _profile(rng, m, n) for m in PROFILED if n and rng.random() < 0.35}
        kwargs = {"profile": profile, "head_modules": ("head",),
                  "blocks": [Block(name, (f"blocks.{i}",)) for i, name in enumerate(names)]}
        if rng.random() < 0.7:
            kwargs["num_images"] = rng.choice((10, 50, 200, 1000, 5000, 50_000))
        if rng.random() < 0.7:
            kwargs["num_classes"] = rng.choice((2, 3, 10, 100))
        if rng.random() < 0.3:
            kwargs["overrides"] = _overrides(rng, names)
        yield measures, kwargs


@pytest.fixture(scope="module")
def outcomes() -> tuple[set[str], set[str]]:
    """The ids of the rules that fired on some input of the corpus, and of those that did not:
    with the fitted table (at the default budget and at the benchmark's short one, where the
    ladder climbs) and with the paper's (the fallback, whose rules the ladder mostly
    pre-empts; they count as covered when they fire there)."""
    fired: set[str] = set()
    not_fired: set[str] = set()
    for measures, kwargs in corpus():
        for extra in ({}, {"budget": {"epochs": 6, "image_size": 64}},
                      {"rules": PAPER_RULES}):
            for entry in advise(measures, **kwargs, **extra).trace:
                (fired if entry.fired else not_fired).add(entry.rule)
    return fired, not_fired


def test_every_rule_fires_on_some_input(outcomes):
    never = [rule.id for rule in RULES if rule.id not in outcomes[0]]
    assert not never, f"rules that never fire on the corpus: {', '.join(never)}"


def test_every_rule_stays_silent_on_some_input(outcomes):
    always = [rule.id for rule in RULES if rule.id not in outcomes[1]]
    assert not always, f"rules that fire on every input of the corpus: {', '.join(always)}"


def test_the_corpus_is_the_same_on_every_run():
    assert list(corpus(cases=20)) == list(corpus(cases=20))


# --- The two rules that speak when the probe profile is missing and the top is near its peak --

FOUR = [Block(f"stage{i}", (f"blocks.{i}",)) for i in range(1, 5)]


def _reinit(profile: dict):
    rec = advise({}, profile=profile, blocks=FOUR)
    return rec, {t.rule: t for t in rec.trace}


@pytest.mark.parametrize(("measure", "rising"), [("knn", [0.30, 0.50, 0.70, 0.80]),
                                                 ("logme", [-0.5, 0.2, 0.9, 1.2])])
def test_a_top_block_at_the_peak_of_a_stand_in_profile_keeps_every_block(measure, rising):
    name = {"knn": "knn_accuracy", "logme": "logme"}[measure]
    rec, trace = _reinit({name: rising})
    entry = trace[f"reinit.{measure}_top_near_peak"]
    assert entry.fired and "<= tolerance" in entry.why
    assert rec.hyperparameters.reinit_top_blocks == 0
    assert rec.details["reinit_top_blocks"].set_by == f"reinit.{measure}_top_near_peak"


@pytest.mark.parametrize(("measure", "peaked"), [("knn", [0.30, 0.80, 0.60, 0.50]),
                                                 ("logme", [-0.5, 1.2, 0.5, 0.3])])
def test_a_top_block_below_the_peak_of_a_stand_in_profile_is_not_near_it(measure, peaked):
    name = {"knn": "knn_accuracy", "logme": "logme"}[measure]
    rec, trace = _reinit({name: peaked})
    entry = trace[f"reinit.{measure}_top_near_peak"]
    assert not entry.fired
    assert entry.why == (f"skipped: reinit_top_blocks already set by "
                         f"reinit.{measure}_peaks_below_top")
    assert rec.hyperparameters.reinit_top_blocks == 2  # the two blocks above the peak


def test_a_linear_probe_profile_outranks_a_knn_profile_near_its_peak():
    rec, trace = _reinit({"linear_probe_accuracy": [0.30, 0.80, 0.60, 0.50],
                          "knn_accuracy": [0.30, 0.50, 0.70, 0.80]})
    assert not trace["reinit.knn_top_near_peak"].fired
    assert rec.details["reinit_top_blocks"].set_by == "reinit.accuracy_peaks_below_top"


# --- The measures the rules read ---------------------------------------------------------------


def _measures_read() -> set[str]:
    targets = {rule.target for rule in RULES}
    return {n for n in NEEDS | set(MEASURE_BOUNDS)
            if n not in targets and n not in DERIVED and n not in FACTS
            and not n.startswith("profile.")}


def test_every_measure_the_rules_read_is_a_probe_or_listed_as_not_one():
    probes = {p.name for p in list_probes()}
    unexplained = sorted(_measures_read() - probes - set(NOT_PROBES))
    assert not unexplained, (f"measures read by the rules that no probe registers and "
                             f"NOT_PROBES does not list: {', '.join(unexplained)}")


def test_every_profile_the_rules_read_is_of_a_bounded_measure():
    assert set(PROFILED) <= set(MEASURE_BOUNDS)


def test_no_measure_listed_as_not_a_probe_is_a_probe():
    probes = {p.name for p in list_probes()}
    assert not set(NOT_PROBES) & probes


def test_every_measure_listed_as_not_a_probe_is_one_the_rules_take():
    assert set(NOT_PROBES) <= set(MEASURE_BOUNDS)
    assert all(NOT_PROBES.values())


def test_the_readme_counts_the_rules_of_the_table():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    stated = re.search(r"a declarative table of (\d+) rules", readme)
    assert stated is not None, "README.md no longer says how many rules the table holds"
    assert int(stated.group(1)) == len(RULES)
