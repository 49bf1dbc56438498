"""benchmarks/meta_fit.py (issue 19): the ladder, the staircase, no cliffs, leave-one-source-out,
and the committed fit reproduced from the committed results by one command."""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks import meta  # noqa: E402
from benchmarks import meta_fit as f  # noqa: E402
from benchmarks import transfer as t  # noqa: E402
from heuristics.rules.ladder import rung_for  # noqa: E402

FAR = "r2-l2-groups-0.003"


def example(task: str, source: str, gap: float, gains: dict[str, float],
            budget: str = "short") -> f.Example:
    scores = {cell: 50.0 for cell in meta.GRID.cells()}
    for cell, gain in gains.items():
        scores[cell] = 50.0 + gain
    return f.Example(task, source, t.DEFAULT_BACKBONE, budget, {"linear_probe": gap}, scores)


def synthetic(n: int = 24, cut: float = 0.3) -> list[f.Example]:
    """Reinit 1 then the far recipe gain beyond ``cut``, lose below it (small, fixed noise)."""
    out = []
    for i in range(n):
        gap = 0.6 * i / (n - 1)
        wiggle = ((i * 7) % 5 - 2) * 0.4
        far = (8.0 if gap > cut else -4.0) + wiggle
        one = (3.0 if gap > cut else -2.0) + wiggle
        out.append(example(f"task{i}", f"src{i % 4}", gap,
                           {"r1-l2-one-0.01": one, "r2-l2-one-0.01": one, FAR: far}))
    return out


def test_the_ladder_moves_one_axis_per_rung_toward_the_best_staircase():
    ladder = f.fit_ladder(f.reading(synthetic(), "linear_probe"))
    assert ladder[0] == t.DEFAULT_CELL and ladder[-1] == FAR
    for a, b in itertools.pairwise(ladder):
        assert b in f.moves(a)
    assert len(ladder) - 1 <= f.LADDER_STEPS


def test_moves_change_one_axis():
    for cell in meta.GRID.cells():
        for other in f.moves(cell):
            a, b = t.parse_cell(cell), t.parse_cell(other)
            changed = {k for k in ("reinit", "reg") if a[k] != b[k]}
            if (a["lr_mode"], a["base_lr"]) != (b["lr_mode"], b["base_lr"]):
                changed.add("lr")
            assert len(changed) == 1 and abs(a["reinit"] - b["reinit"]) <= 1


def test_the_staircase_climbs_where_the_gains_are_and_not_below():
    exs = f.reading(synthetic(), "linear_probe")
    ladder = f.fit_ladder(exs)
    model = f.fit_model(synthetic())
    assert rung_for(0.05, "short", model) == 0 and rung_for(0.2, "short", model) == 0
    assert rung_for(0.59, "short", model) == len(ladder) - 1
    thresholds = f.staircase(exs, ladder)
    assert all(x is None or 0.25 <= x <= 0.35 for x in thresholds)


def test_nothing_beyond_noise_keeps_the_default():
    flat = [example(f"t{i}", f"s{i % 3}", i / 30, {FAR: (-1) ** i * 3.0}) for i in range(20)]
    model = f.fit_model(flat)
    assert all(p["rung"] == 0 for p in model["budgets"]["short"]["pieces"])


def test_a_rung_needs_min_tasks():
    few = [example(f"t{i}", f"s{i}", 0.5 + i / 100, {FAR: 20.0})
           for i in range(f.MIN_TASKS - 1)]
    many = few + [example(f"u{i}", f"s{i}", 0.01 * i, {FAR: -20.0}) for i in range(10)]
    assert all(p["rung"] == 0 for p in f.fit_model(many)["budgets"]["short"]["pieces"])


@pytest.mark.parametrize("raw", [[0] * 5 + [3] * 40 + [0] * 10 + [2] * 3 + [0] * 30,
                                 [3] * 50, [0, 3] * 30, [1] * 10 + [2] * 10 + [0] * 50])
def test_no_cliffs_lowers_only_and_moves_one_rung_per_min_spacing(raw):
    out = f.no_cliffs(raw)
    width = round(f.MIN_SPACING / f.STEP)
    assert len(out) == len(raw) and all(o <= r for o, r in zip(out, raw, strict=True))
    runs = f._runs(out)
    for (a, _), (c, _) in itertools.pairwise(runs):
        assert abs(out[a] - out[c]) == 1
    for a, b in runs[:-1]:
        assert b - a >= width or a == 0


def test_a_piece_that_no_cliffs_moved_off_its_evidence_is_lowered():
    """Rung 2 from gap 0.2 (after the envelope's step of rung 1), on 10 tasks whose rung-2
    gains are +-3 (within noise): dropped to rung 1, whose gains there are within noise too,
    then to the default. With the same tasks gaining +5 +- 0.5, nothing moves."""
    ladder = [t.DEFAULT_CELL, "r1-l2-one-0.01", "r2-l2-one-0.01"]
    raw = [0] * 180 + [1] * 20 + [2] * 400
    for gains, expected in (([3.0, -3.0] * 5, [0] * 600), ([5.5, 4.5] * 5, raw)):
        part = f.reading([example(f"t{i}", f"s{i % 3}", 0.25 + 0.03 * i,
                                  {ladder[1]: -gains[i], ladder[2]: gains[i]})
                          for i in range(10)], "linear_probe")
        assert f.within_evidence(part, ladder, raw) == expected
    # a step with fewer than MIN_TASKS tasks (the envelope's bridge) is left as it is
    bridge = f.reading([example("b", "s", 0.19, {ladder[1]: -9.0})], "linear_probe") + part
    assert f.within_evidence(bridge, ladder, raw) == raw


def test_held_out_never_fits_on_the_held_out_source(monkeypatch):
    seen = []
    real = f.fit_model

    def spy(fit, *args, **kwargs):
        seen.append({e.source for e in fit})
        return real(fit, *args, **kwargs)

    monkeypatch.setattr(f, "fit_model", spy)
    exs = synthetic()
    held = f.held_out(exs)
    sources = sorted({e.source for e in exs})
    assert len(seen) == len(sources)
    for source, fitted_on in zip(sources, seen, strict=True):
        assert source not in fitted_on and fitted_on == set(sources) - {source}
    assert set(held) == {e.key for e in exs}


def test_the_fitted_module_round_trips(tmp_path):
    model = f.fit_model(synthetic())
    path = tmp_path / "fitted.py"
    f.write_fitted(model, path)
    spec = importlib.util.spec_from_file_location("fitted_copy", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.MODEL == model


def test_the_committed_fit_is_what_one_command_makes_from_the_committed_results():
    """heuristics/rules/fitted.py is `python benchmarks/meta.py fit` on
    benchmarks/results/meta.jsonl: refit after adding results."""
    from benchmarks import meta_report
    from heuristics.rules.fitted import MODEL

    if not meta.RESULTS.is_file():
        pytest.skip("no committed results")
    exs = f.examples(meta_report.load(t.read_results(meta.RESULTS)))
    model = f.fit_model(exs)
    import json
    assert json.loads(json.dumps(model)) == MODEL
    assert not any(isinstance(v, float) and math.isnan(v) for v in _leaves(MODEL))


def _leaves(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from _leaves(v)
    elif isinstance(node, list):
        for v in node:
            yield from _leaves(v)
    else:
        yield node


def _brute_force_value(part, ladder):
    """The staircase objective by trying every set of cut points (what staircase() does)."""
    order = sorted(part, key=lambda e: (e.gap, e.task, e.backbone))
    n, m = len(order), len(ladder) - 1
    gains = [np.array([e.gain(cell) for e in order]) for cell in ladder]
    best = 0.0
    for cand in itertools.combinations_with_replacement(range(n + 1), m):
        bounds = [*cand, n]
        best = max(best, sum(f.lower_bound(gains[k + 1][bounds[k]:bounds[k + 1]])
                             for k in range(m)))
    return best


@pytest.mark.parametrize("ladder", [[t.DEFAULT_CELL, "r1-l2-one-0.01"],
                                    [t.DEFAULT_CELL, "r1-l2-one-0.01", "r2-l2-one-0.01", FAR]])
def test_the_dynamic_programme_finds_the_brute_force_staircase_value(ladder):
    exs = f.reading(synthetic(18), "linear_probe")
    value = f.staircase_value(exs, ladder)
    assert value > 0
    assert value == pytest.approx(_brute_force_value(exs, ladder), abs=1e-9)
    # and the thresholds staircase() returns reach it
    thresholds = f.staircase(exs, ladder)
    order = sorted(exs, key=lambda e: (e.gap, e.task, e.backbone))
    cuts = [sum(e.gap < x for e in order) if x is not None else len(order) for x in thresholds]
    bounds = [*cuts, len(order)]
    reached = sum(f.lower_bound(np.array([e.gain(ladder[k + 1]) for e in
                                          order[bounds[k]:bounds[k + 1]]]))
                  for k in range(len(ladder) - 1))
    assert reached == pytest.approx(value, abs=1e-9)


def test_the_ladder_is_chosen_by_its_staircase_not_by_its_mean_gain():
    """A last rung that wins big on a few tasks and loses on the rest has the larger mean gain;
    the one that wins steadily above a gap has the better staircase: the fit takes that one."""
    lucky = "r0-l2-one-0.03"  # one move from the default (another learning-rate recipe)
    out = []
    for i in range(30):
        gap = 0.6 * i / 29
        wiggle = ((i * 7) % 5 - 2) * 0.4
        gains = {FAR: (4.0 if gap > 0.3 else -4.0) + wiggle,
                 "r1-l2-one-0.01": (2.0 if gap > 0.3 else -2.0) + wiggle,
                 "r2-l2-one-0.01": (2.0 if gap > 0.3 else -2.0) + wiggle,
                 lucky: 40.0 if i % 10 == 0 else -2.0 + wiggle}
        out.append(example(f"task{i}", f"src{i % 4}", gap, gains))
    exs = f.reading(out, "linear_probe")
    assert f.mean_gain_ladder(exs) == [t.DEFAULT_CELL, lucky]
    assert f.fit_ladder(exs)[-1] == FAR


def test_pooled_budgets_give_every_budget_the_staircase_of_all_tasks():
    short = synthetic()
    long = [dataclasses.replace(e, task=e.task + "-long", budget="long") for e in synthetic()]
    apart = f.fit_model(short + [dataclasses.replace(e, scores={c: 50.0 for c in e.scores})
                                 for e in long])
    pooled = f.fit_model(short + [dataclasses.replace(e, scores={c: 50.0 for c in e.scores})
                                  for e in long], pool_budgets=True)
    assert [p["rung"] for p in apart["budgets"]["long"]["pieces"]] == [0]  # flat: the default
    assert pooled["budgets"]["long"]["pieces"] == pooled["budgets"]["short"]["pieces"]
    assert max(p["rung"] for p in pooled["budgets"]["long"]["pieces"]) > 0
