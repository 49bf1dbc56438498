"""benchmarks/cka.py: the one-threshold rules, leave-one-dataset-out, and the published tables."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks import cka as c  # noqa: E402
from benchmarks import transfer as t  # noqa: E402

BEST = {"a": [2], "b": [2], "c": [0], "d": [2]}


def test_a_threshold_rule_predicts_two_on_one_side_and_none_on_the_other():
    assert c.predict(0.5, 0.4, above=2) == 2 and c.predict(0.3, 0.4, above=2) == 0
    assert c.predict(0.5, 0.4, above=0) == 0 and c.predict(0.3, 0.4, above=0) == 2


def test_the_fit_finds_the_threshold_that_separates_the_winners():
    values = {"a": 0.1, "b": 0.2, "c": 0.9, "d": 0.3}
    threshold, above = c.fit(values, BEST)
    assert 0.3 < threshold < 0.9 and above == 0
    assert c.hits(values, BEST, threshold, above) == 4


def test_a_single_odd_dataset_is_missed_when_it_is_left_out():
    # Without "c", every other dataset wants 2: the fit says "always 2" and misses "c".
    data = {n: {"score": v, "reinit_best": BEST[n], "reinit_top": BEST[n][0]}
            for n, v in {"a": 0.1, "b": 0.2, "c": 0.9, "d": 0.3}.items()}
    c.SCALARS["test score"] = lambda d: d["score"]
    try:
        result = c.evaluate("test score", data)
    finally:
        del c.SCALARS["test score"]
    assert result["in_sample"] == 4 and result["held_out"] == 3


def test_the_published_cka_tables_are_what_the_script_makes_of_the_committed_results():
    doc = (ROOT / "docs" / "benchmark.md").read_text(encoding="utf-8")
    published = doc.split("<!-- cka:start -->\n")[1].split("\n<!-- cka:end -->")[0]
    cka = json.loads(c.CKA_RESULTS.read_text(encoding="utf-8"))
    assert c.report(cka, t.read_results(t.RESULTS)) == published
