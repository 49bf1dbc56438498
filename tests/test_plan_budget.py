"""The training the user plans (--train-epochs, --train-size, or the --validate budget): checked
before any work, passed to the rules as the budget, recorded in the JSON, and the fitted
ladder's verdict for it said first in the report and the HTML page. No feature extraction:
the analysis is a small fake."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from _cli import run_cli as run

import heuristics
import recommender
import recommender.pipeline as pipeline
from probes import Measurement
from recommender import report
from recommender.analysis import Analysis, ProbeResult
from recommender.config import Options, ValidationOptions
from recommender.data.dataset import Dataset
from recommender.errors import EXIT_USAGE, UsageError

# --- the options ---------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, expected", [
    ({"train_epochs": 0}, "--train-epochs 0 must be at least 1"),
    ({"train_epochs": -3}, "--train-epochs -3 must be at least 1"),
    ({"train_size": 31}, "--train-size 31 must be at least 32 pixels"),
])
def test_a_bad_planned_budget_is_refused_naming_the_option(kwargs, expected):
    with pytest.raises(UsageError, match=expected):
        Options.from_kwargs(**kwargs).check()


def test_the_planned_budget_is_a_plain_option_recorded_in_the_settings():
    options = Options.from_kwargs(train_epochs=12, train_size=96)
    options.check()
    assert (options.train_epochs, options.train_size) == (12, 96)
    settings = options.to_dict("all")
    assert settings["train_epochs"] == 12 and settings["train_size"] == 96
    assert Options().to_dict("all")["train_epochs"] is None


@pytest.mark.parametrize("option, value", [("--train-epochs", "0"), ("--train-size", "16")])
def test_bad_train_options_exit_with_a_usage_error_before_any_work(monkeypatch, capsys,
                                                                   sample_dir, option, value):
    def no_work(*_args, **_kwargs):
        raise AssertionError("the dataset was scanned before the options were checked")

    monkeypatch.setattr(pipeline, "_scan", no_work)
    monkeypatch.setattr(pipeline, "load_backbone", no_work)
    code, out, err = run(monkeypatch, capsys, str(sample_dir), option, value)
    assert code == EXIT_USAGE
    assert f"{option} {value} must be at least" in err
    assert "Traceback" not in err + out


def test_a_bad_train_option_is_refused_before_a_ranking_scans(monkeypatch, capsys, sample_dir):
    import recommender.ranking

    def no_work(*_args, **_kwargs):
        raise AssertionError("the dataset was scanned before the options were checked")

    monkeypatch.setattr(recommender.ranking, "scan", no_work)
    code, _, err = run(monkeypatch, capsys, str(sample_dir), "--model",
                       "tf_efficientnet_lite0,tf_efficientnet_lite1", "--train-size", "8")
    assert code == EXIT_USAGE and "--train-size 8 must be at least 32" in err


# --- the budget passed to the rules ----------------------------------------------------------


@pytest.mark.parametrize("options, budget", [
    (Options(), {"image_size": 224}),
    (Options(image_size=160), {"image_size": 160}),
    (Options(train_epochs=6), {"epochs": 6, "image_size": 224}),
    (Options(train_size=64, image_size=160), {"image_size": 64}),
    (Options(validation=ValidationOptions()), {"epochs": 20, "image_size": 128}),
    (Options(validation=ValidationOptions(epochs=6, image_size=64), image_size=160),
     {"epochs": 6, "image_size": 64}),
    (Options(validation=ValidationOptions(), train_epochs=12), {"epochs": 12, "image_size": 128}),
    (Options(validation=ValidationOptions(), train_epochs=12, train_size=96),
     {"epochs": 12, "image_size": 96}),
])
def test_the_planned_budget_is_train_then_validate_then_the_defaults(options, budget):
    assert pipeline.plan_budget(options) == budget


@pytest.fixture
def captured(monkeypatch):
    """The command with the analysis stubbed out: the options it built."""
    calls = {}

    class _Fake:
        def to_dict(self):
            return {"schema_version": "1.2"}

    def recommend(path, options, **_kwargs):
        calls["options"] = options
        return _Fake()

    monkeypatch.setattr(pipeline, "recommend", recommend)
    monkeypatch.setattr(report, "print_report", lambda *a, **k: None)
    return calls


@pytest.mark.parametrize("args, budget", [
    ([], {"image_size": 224}),
    (["--image-size", "192"], {"image_size": 192}),
    (["--validate", "--validate-epochs", "6", "--validate-size", "64"],
     {"epochs": 6, "image_size": 64}),
    (["--validate", "--train-epochs", "12", "--train-size", "96"],
     {"epochs": 12, "image_size": 96}),
    (["--train-epochs", "12"], {"epochs": 12, "image_size": 224}),
])
def test_the_command_passes_the_planned_budget(monkeypatch, capsys, sample_dir, captured, args,
                                               budget):
    code, _, err = run(monkeypatch, capsys, str(sample_dir), *args)
    assert code == 0, err
    assert pipeline.plan_budget(captured["options"]) == budget


def test_the_api_takes_the_planned_budget_as_keywords(monkeypatch, sample_dir):
    seen = {}

    def analyse(dataset, split, own_split, options, device, **_kwargs):
        seen["options"] = options
        return "done"

    monkeypatch.setattr(pipeline, "_scan", lambda path, options: (None, None, False))
    monkeypatch.setattr(pipeline, "analyse_scanned", analyse)
    assert recommender.recommend(sample_dir, train_epochs=6, train_size=64,
                                 use_cache=False) == "done"
    assert (seen["options"].train_epochs, seen["options"].train_size) == (6, 64)


BLOCKS = ("b0", "b1", "b2")


def _analysed(monkeypatch, options: Options, probe: float) -> tuple[pipeline.Result, dict]:
    """:func:`recommender.pipeline.analyse_scanned` on a fake cached analysis (10 classes,
    300 images, a linear probe of ``probe`` at every block), with the budget that reached
    :func:`heuristics.advise`."""
    analysis = Analysis(
        model={"name": "fake", "weights": "none", "head_modules": ["classifier"],
               "blocks": [{"name": b, "modules": [f"blocks.{i}"]} for i, b in enumerate(BLOCKS)]},
        blocks=BLOCKS, dims=(8, 16, 32),
        probes=(ProbeResult("linear_probe_accuracy", True,
                            tuple(Measurement(probe) for _ in BLOCKS), (None,) * 3, 300),),
        random_init_images=300, from_cache=True)
    monkeypatch.setattr(pipeline, "analysis_key", lambda *_args: "fake")
    monkeypatch.setattr(pipeline, "load_analysis", lambda _key: analysis)
    seen = {}
    advise = heuristics.advise

    def spy(*args, **kwargs):
        seen["budget"] = kwargs.get("budget")
        return advise(*args, **kwargs)

    monkeypatch.setattr(heuristics, "advise", spy)
    classes = tuple(f"c{i}" for i in range(10))
    dataset = Dataset(root=Path("/nowhere"), source="folder", classes=classes,
                      samples=tuple((Path(f"/nowhere/{i}.png"), i % 10) for i in range(300)),
                      skipped=(), dropped_classes=(), warnings=())
    result = pipeline.analyse_scanned(dataset, None, False, options, "cpu",
                                      say=lambda _t: None, progress=None, timings={}, start=0.0)
    return result, seen


def test_the_budget_reaches_the_rules_and_the_json(monkeypatch):
    result, seen = _analysed(monkeypatch, Options(train_epochs=6, train_size=64), probe=0.8)
    assert seen["budget"] == {"epochs": 6, "image_size": 64}
    doc = result.to_dict()
    assert doc["settings"]["train_epochs"] == 6 and doc["settings"]["train_size"] == 64
    ladder = doc["recommendation"]["ladder"]
    assert ladder["budget"]["epochs"] == 6 and ladder["budget"]["image_size"] == 64
    assert ladder["budget"]["benchmark_budget"] == "short"


def test_the_planned_epochs_are_the_recommendations_epochs(monkeypatch):
    planned, _ = _analysed(monkeypatch, Options(train_epochs=6, train_size=64), probe=0.8)
    own, _ = _analysed(monkeypatch, Options(), probe=0.8)
    hp, own_hp = planned.recommendation.hyperparameters, own.recommendation.hyperparameters
    assert own_hp.epochs != 6  # the rule table's own length ...
    assert hp.epochs == 6  # ... gives way to the training you plan
    assert hp.steps * own_hp.epochs == own_hp.steps * 6  # the schedule follows the epochs
    assert planned.recommendation.details["epochs"].set_by == "override"
    assert planned.to_dict()["settings"]["overrides"] == {}  # no --set was given


def test_train_epochs_and_a_disagreeing_set_epochs_are_refused():
    with pytest.raises(UsageError, match="--train-epochs 6 and --set epochs=10 disagree"):
        Options.from_kwargs(train_epochs=6, overrides={"epochs": 10}).check()
    Options.from_kwargs(train_epochs=6, overrides={"epochs": 6}).check()  # the same: fine


def test_validate_checks_the_advice_at_its_own_budget(monkeypatch):
    _, seen = _analysed(monkeypatch, Options(validation=ValidationOptions(epochs=12,
                                                                          image_size=96)),
                        probe=0.8)
    assert seen["budget"] == {"epochs": 12, "image_size": 96}


def test_without_a_plan_the_rules_choose_the_epochs(monkeypatch):
    result, seen = _analysed(monkeypatch, Options(), probe=0.8)
    assert seen["budget"] == {"image_size": 224}
    ladder = result.recommendation.to_dict()["ladder"]
    assert ladder["budget"]["image_size"] == 224 and ladder["budget"]["epochs"] >= 1


# --- the verdict -----------------------------------------------------------------------------


def _verdict(result: pipeline.Result, ladder: dict | None = None) -> str:
    doc = result.to_dict()
    if ladder is not None:
        doc["recommendation"]["ladder"] = ladder
    buffer = io.StringIO()
    report._print_verdict(result, doc, report.Console(file=buffer, width=300, highlight=False))
    return " ".join(buffer.getvalue().split())


def _ladder(*, rung: int, extrapolated: bool = False) -> dict:
    return {"rung": rung, "rungs": 4, "setting": "SETTING", "keep_default": rung == 0,
            "confidence": "medium", "gap": {"name": "linear_probe", "value": 0.0123},
            "budget": {"epochs": 6, "image_size": 64, "benchmark_budget": "short",
                       "benchmark_epochs": 6, "benchmark_image_size": 64,
                       "extrapolated": extrapolated}}


def test_the_verdict_says_keep_the_default_before_the_changes(monkeypatch):
    result, _ = _analysed(monkeypatch, Options(train_epochs=6, train_size=64), probe=0.8)
    text = _verdict(result, _ladder(rung=0))
    assert ("Keep the binary default: for the training you plan, 6 epochs at 64 px (the "
            "benchmark's 'short' budget), the meta-benchmark found no change that gains beyond "
            "noise for features that fit like yours (fit gap 0.01).") in text
    assert text.index("Keep the binary default") < text.index("Change from the binary default")
    assert "Advice: rung" not in text and "beyond the benchmark" not in text


def test_the_verdict_names_the_rung_and_the_benchmark_budget(monkeypatch):
    result, _ = _analysed(monkeypatch, Options(train_epochs=6, train_size=64), probe=0.8)
    text = _verdict(result, _ladder(rung=2))
    assert ("Advice: rung 2 of 3 of the fitted ladder (SETTING), for the training you plan, 6 "
            "epochs at 64 px (the benchmark's 'short' budget).") in text
    assert text.index("Advice:") < text.index("Change from the binary default")
    assert "Keep the binary default" not in text


@pytest.mark.parametrize("rung", [0, 3])
def test_the_verdict_says_when_the_plan_is_beyond_the_benchmark(monkeypatch, rung):
    result, _ = _analysed(monkeypatch, Options(), probe=0.8)
    text = _verdict(result, _ladder(rung=rung, extrapolated=True))
    assert "beyond the benchmark's budgets; its nearest: 6 epochs at 64 px" in text


def test_the_verdict_from_the_real_ladder(monkeypatch):
    result, _ = _analysed(monkeypatch, Options(train_epochs=6, train_size=64), probe=0.8)
    ladder = result.recommendation.to_dict()["ladder"]
    text = _verdict(result)
    if ladder["keep_default"]:
        assert "Keep the binary default: at the budget you plan (6 epochs at 64 px)" in text
    else:
        assert (f"Advice: rung {ladder['rung']} of {ladder['rungs'] - 1} of the fitted ladder "
                f"({ladder['setting']}), for the training you plan, 6 epochs at 64 px") in text


def test_no_ladder_no_line(monkeypatch):
    result, _ = _analysed(monkeypatch, Options(), probe=0.8)
    doc = result.to_dict()
    doc["recommendation"]["ladder"] = None
    assert report.ladder_sentence(doc) is None
    buffer = io.StringIO()
    report._print_verdict(result, doc, report.Console(file=buffer, width=300, highlight=False))
    assert "Advice:" not in buffer.getvalue() and "Keep the binary" not in buffer.getvalue()


def test_the_html_verdict_says_the_same(monkeypatch):
    pytest.importorskip("matplotlib")
    from recommender.html import _verdict_section

    result, _ = _analysed(monkeypatch, Options(train_epochs=6, train_size=64), probe=0.8)
    doc = result.to_dict()
    doc["recommendation"]["ladder"] = _ladder(rung=0)
    html = _verdict_section(doc)
    assert "<b>Keep the binary default:</b> for the training you plan, 6 epochs at 64 px" in html
    doc["recommendation"]["ladder"] = _ladder(rung=3)
    assert "<b>Advice:</b> rung 3 of 3 of the fitted ladder" in _verdict_section(doc)


def test_an_unstated_plan_is_called_the_recommendations_own_budget():
    ladder = _ladder(rung=0)
    ladder["budget"]["epochs_from"] = "rule table"
    doc = {"recommendation": {"ladder": ladder}}
    sentence = report.ladder_sentence(doc)
    assert sentence.startswith("Keep the binary default: for the recommendation's own "
                               "training, 6 epochs at 64 px")
    assert "--train-epochs" in sentence
    ladder["budget"]["epochs_from"] = "budget"
    assert "for the training you plan" in report.ladder_sentence(doc)


def test_no_change_from_the_default_says_none(monkeypatch):
    result, _ = _analysed(monkeypatch, Options(train_epochs=200, train_size=224), probe=0.99)
    text = _verdict(result, _ladder(rung=0))
    hp = result.recommendation.hyperparameters
    assert hp.reinit_top_blocks == 0 and hp.l2sp_weight == 0 and not hp.lp_ft
    assert "none: every layer transferred" in text
