"""--html and --plot: one self-contained page with every section, figures that mark the
recommendation, escaped user text, no network resource, and a clean refusal without
matplotlib."""

from __future__ import annotations

import builtins
import copy
import json
import re
import sys
from html.parser import HTMLParser

import numpy as np
import pytest

import heuristics
from recommender import html as html_mod
from recommender import plots
from recommender.analysis import block_profile, run_probes, summary_measures
from recommender.config import Options
from recommender.data.dataset import load_dataset
from recommender.errors import EXIT_USAGE, UsageError
from recommender.models.features import Features
from recommender.pipeline import Result

BLOCKS = ("stage1", "stage2", "stage3", "neck")
MODEL = {"name": "tf_efficientnet_lite0", "weights": "synthetic", "num_params": 4_650_000,
         "num_source_classes": 20, "input_size": [3, 224, 224], "interpolation": "bicubic",
         "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "crop_pct": 0.875,
         "blocks": [{"name": b, "modules": [f"blocks.{i}"]} for i, b in enumerate(BLOCKS)],
         "head_modules": ["classifier"]}
VOID = {"meta", "br", "img", "hr", "input", "link", "area", "base", "col", "source", "wbr"}


def _result(sample_dir, overrides) -> Result:
    """A real Result of the sample's scan with synthetic features: seconds, not a whole run."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 12)
    widths = (8, 16, 24, 32)
    pretrained = tuple(rng.normal(size=(len(labels), d)).astype(np.float32)
                       + labels[:, None] * 0.5 for d in widths)
    random = tuple(rng.normal(size=(len(labels), d)).astype(np.float32) for d in widths)
    features = Features(BLOCKS, pretrained, random, rng.dirichlet(np.ones(20), size=48))
    results = run_probes(features, labels, jobs=1)
    recommendation = heuristics.advise(
        summary_measures(results), profile=block_profile(results),
        blocks=[heuristics.Block(b, (f"blocks.{i}",)) for i, b in enumerate(BLOCKS)],
        head_modules=("classifier",), num_images=200, num_classes=10, overrides=overrides)
    return Result(dataset=load_dataset(sample_dir), model=MODEL, blocks=BLOCKS, dims=widths,
                  probes=tuple(results), recommendation=recommendation,
                  options=Options(overrides=overrides), timings={"total_s": 3.0})


def _curve(losses, accuracies, phase="all"):
    return [{"epoch": i + 1, "phase": phase, "train_loss": loss, "val_accuracy": acc}
            for i, (loss, acc) in enumerate(zip(losses, accuracies))]


def _setting(name, tests, shift=0.0):
    runs = [{"seed": s, "val_accuracy": 0.5 + shift, "test_accuracy": t, "lp_epochs": 0,
             "curve": _curve([2.0 - shift, 1.5, 1.0], [0.3, 0.4 + shift, 0.5 + shift])}
            for s, t in enumerate(tests)]
    return {"name": name, "test_mean": float(np.mean(tests)),
            "test_spread": float(np.std(tests, ddof=1)), "val_mean": 0.5 + shift,
            "val_spread": 0.0, "runs": runs, "overrides": None, "hyperparameters": {}}


def _validation(search: bool) -> dict:
    """A --validate (and --search) section as the JSON document has it."""
    settings = {"default": _setting("default", [0.5, 0.6]),
                "recommended": _setting("recommended", [0.6, 0.7], 0.1)}
    doc = {"split": {"source": "stratified", "n_train": 30, "n_val": 10, "n_test": 10,
                     "fractions": [0.6, 0.2, 0.2]},
           "budget": {"epochs": 3, "image_size": 32, "batch_size": 8, "label_smoothing": 0.1,
                      "warmup_fraction": 0.1, "schedule": "cosine",
                      "augmentation": "random-resized crop and flip"},
           "seeds": [0, 1], "mixed_precision": False, "settings": settings,
           "difference": {"recommended_minus_default": 0.1, "spread": 0.0}, "search": None}
    if search:
        settings["best_found"] = _setting("best_found", [0.65, 0.7], 0.15)
        doc["difference"].update(best_found_minus_recommended=0.025, best_found_spread=0.03)
        trials = [{"number": i, "params": {"base_lr": lr, "lp_ft": lp},
                   "overrides": {"base_lr": lr, "lp_ft": lp}, "val_accuracy": v,
                   "test_accuracy": v - 0.05}
                  for i, (lr, lp, v) in enumerate([(0.01, False, 0.5), (0.03, True, 0.6),
                                                   (0.003, False, 0.4), (0.05, True, 0.65)])]
        doc["search"] = {"trials": trials, "space": {"base_lr": ["log", [0.001, 0.1]],
                                                     "lp_ft": ["choice", [False, True]]},
                         "best_trial": 3, "storage": None, "sampler": "optuna TPESampler",
                         "objective": "validation accuracy, seed 0"}
    return doc


@pytest.fixture(scope="module")
def result(sample_dir) -> Result:
    return _result(sample_dir, {"reinit_top_blocks": 1})


@pytest.fixture(scope="module")
def full_doc(result) -> dict:
    doc = result.to_dict()
    doc["validation"] = _validation(search=True)
    return doc


@pytest.fixture(scope="module")
def page(full_doc) -> str:
    return html_mod.render_html(full_doc)


class _Checker(HTMLParser):
    """Tag balance (every element closed in order), section ids, resource attributes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.sections: list[str] = []
        self.ids: list[str] = []
        self.resources: list[str] = []
        self.problems: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append(attrs.get("id"))
        if "id" in attrs:
            self.ids.append(attrs["id"])
        for name in ("src", "href", "xlink:href", "srcset", "action", "data", "poster"):
            if attrs.get(name):
                self.resources.append(attrs[name])
        for value in attrs.values():  # style="fill: url(#hatch)", clip-path="url(#p1)"
            self.resources += [u.strip("'\" ") for u in re.findall(r"url\(([^)]*)\)",
                                                                 value or "")]
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def check(page: str) -> _Checker:
    checker = _Checker()
    checker.feed(page)
    checker.close()
    return checker


# --- the page -------------------------------------------------------------------------------

def test_the_page_is_well_formed_and_has_every_section_in_order(page):
    checker = check(page)
    assert checker.problems == [] and checker.stack == []
    assert checker.sections == [s for s in html_mod.SECTIONS if s != "ranking"]
    assert page.startswith("<!DOCTYPE html>")


def test_element_ids_are_unique_across_the_inline_figures(page):
    ids = check(page).ids
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})


def test_the_page_fetches_nothing_and_runs_no_script(page):
    checker = check(page)
    assert all(r.startswith(("#", "data:")) for r in checker.resources), checker.resources
    assert "<script" not in page.lower() and "@import" not in page and "@font-face" not in page
    assert re.search(r"Content-Security-Policy\" content=\"default-src 'none'", page)


def test_the_profile_plot_shades_the_recommended_reinitialised_blocks(page, result):
    assert result.recommendation.hyperparameters.reinit_top_blocks == 1
    assert 'id="reinit-neck"' in page
    assert not any(f'id="reinit-{b}"' in page for b in BLOCKS[:-1])
    assert "re-initialised (recommended)" in page  # the legend says what the shading means


def test_no_block_is_shaded_when_none_is_reinitialised(sample_dir):
    page = html_mod.render_html(_result(sample_dir, {"reinit_top_blocks": 0}).to_dict())
    assert 'id="reinit-' not in page and "no block is re-initialised" in page


def test_the_profile_and_the_groups_diagram_mark_every_learning_rate_group(page, full_doc):
    groups = full_doc["recommendation"]["hyperparameters"]["lr_groups"]
    for group in groups:
        assert f'id="group-{group["name"]}"' in page
    for block in BLOCKS:
        assert f'id="box-{block}"' in page
    assert 'id="box-classifier"' in page


def test_the_settings_table_gives_value_range_confidence_reason_and_source(page, full_doc):
    text = " ".join(check(page).text)
    for name, detail in full_doc["recommendation"]["details"].items():
        assert name in text
        assert html_mod.escape(detail["reason"]) in page
    assert "set by you" in text  # reinit_top_blocks came from --set


def test_validation_shows_seeds_curves_and_the_difference(page):
    validation = page[page.index('<section id="validation">'):page.index('<section id="search">')]
    assert 'id="figure-validation"' in validation
    for label in ("Training loss per epoch", "Validation accuracy per epoch",
                  "binary default, seed 0", "recommended, seed 1"):
        assert label in validation
    assert "recommended − default: +10.0 points" in validation


def test_validation_shows_how_far_fine_tuning_moved_each_block(full_doc):
    """With the runs' per-block CKA (issue 20), a figure per setting over the blocks, the
    recommendation's re-initialised blocks shaded; without it, no figure."""
    assert 'id="figure-moved"' not in html_mod.render_html(full_doc)
    doc = copy.deepcopy(full_doc)
    val = doc["validation"]
    val["blocks"] = list(BLOCKS)
    val["recommended_treatment"] = ["lr 0.01"] * (len(BLOCKS) - 1) + ["re-init"]
    val["settings"]["default"]["block_cka"] = [0.99, 0.95, 0.9, 0.6]
    val["settings"]["recommended"]["block_cka"] = [0.98, 0.9, 0.8, 0.3]
    page = html_mod.render_html(doc)
    validation = page[page.index('<section id="validation">'):page.index('<section id="search">')]
    assert 'id="figure-moved"' in validation
    assert f'id="moved-reinit-{BLOCKS[-1]}"' in validation
    assert 'id="moved-default"' in validation and 'id="moved-recommended"' in validation


def test_search_shows_history_importances_and_trials(page):
    search = page[page.index('<section id="search">'):page.index('<section id="dataset">')]
    assert "Search history" in search and "Parameter importances" in search
    assert "importances need" not in search  # 4 trials that differ: importances computed
    assert "3 *" in search and "base_lr=0.05, lp_ft=True" in search


def test_parameter_importances_come_from_optuna_and_need_two_trials():
    search = _validation(search=True)["search"]
    importances = plots.param_importances(search)
    assert set(importances) == {"base_lr", "lp_ft"}
    assert sum(importances.values()) == pytest.approx(1.0)
    assert plots.param_importances({**search, "trials": search["trials"][:1]}) is None


def test_without_validation_the_page_says_how_to_get_it(result):
    page = html_mod.render_html(result.to_dict())
    sections = check(page).sections
    assert "validation" in sections and "search" not in sections and "ranking" not in sections
    assert "Add --validate" in page


def test_a_ranking_is_a_table_of_whatever_the_rows_hold(result):
    doc = result.to_dict()
    doc["ranking"] = [
        {"model": "tf_efficientnet_lite1", "rank": 1, "logme": 0.25, "linear_probe": 0.8,
         "params_m": 5.4, "images_per_s": 41.5, "error": None},
        {"model": "tf_efficientnet_lite0", "rank": 2, "logme": 0.16, "linear_probe": 0.72,
         "params_m": 4.65, "images_per_s": 60.2, "error": None},
        {"model": "<b>broken</b>", "rank": None, "error": "weights not found"}]
    doc["ranking_criterion"] = "logme"
    page = html_mod.render_html(doc)
    ranking = page[page.index('<section id="ranking">'):page.index('<section id="dataset">')]
    for header in ("model", "rank", "logme", "linear_probe", "params_m", "images_per_s",
                   "error"):
        assert f"<th>{header}</th>" in ranking
    assert "tf_efficientnet_lite1" in ranking and "weights not found" in ranking
    assert "&lt;b&gt;broken&lt;/b&gt;" in ranking and "Ranked by logme" in ranking
    assert ranking.index("lite1") < ranking.index("lite0")  # the rows keep their order


def test_text_from_the_dataset_is_escaped(full_doc):
    doc = copy.deepcopy(full_doc)
    evil = '<script>alert("x")</script>'
    doc["dataset"]["root"] = f"/data/{evil}"
    doc["dataset"]["class_counts"] = {evil: 3, "b&c": 4}
    doc["dataset"]["skipped"] = [{"path": f"{evil}.png", "reason": "not an image <svg>"}]
    doc["dataset"]["num_skipped"] = 1
    page = html_mod.render_html(doc)
    assert "<script" not in page and "&lt;script&gt;" in page and "b&amp;c" in page
    assert "not an image &lt;svg&gt;" in page
    assert check(page).problems == []


def test_the_same_document_gives_the_same_page(full_doc):
    saved = json.loads(json.dumps(full_doc))  # as read back from --json
    assert html_mod.render_html(saved) == html_mod.render_html(full_doc)


# --- files and the command line -------------------------------------------------------------

def test_a_saved_json_renders_with_python_m_recommender_html(full_doc, tmp_path, capsys):
    source, target = tmp_path / "result.json", tmp_path / "report.html"
    source.write_text(json.dumps(full_doc))
    assert html_mod.main([str(source), str(target)]) == 0
    assert target.read_text() == html_mod.render_html(full_doc)
    assert f"Wrote the HTML report to {target}." in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    (None, "cannot be read"), ("{not json", "is not JSON"), ('{"a": 1}', "is not an nbtl result")])
def test_a_bad_saved_json_is_one_line_and_exit_2(tmp_path, capsys, content, message):
    source = tmp_path / "result.json"
    if content is not None:
        source.write_text(content)
    assert html_mod.main([str(source), str(tmp_path / "out.html")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_the_profile_plot_alone_as_png_and_svg(result, tmp_path):
    png = html_mod.write_profile_plot(result, tmp_path / "profile.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = html_mod.write_profile_plot(result.to_dict(), tmp_path / "profile.svg")
    assert 'id="reinit-neck"' in svg.read_text()


@pytest.fixture
def no_matplotlib(monkeypatch):
    """matplotlib as if not installed."""
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(builtins, "__import__", fake_import)


def test_without_matplotlib_the_page_is_refused_with_the_install_command(no_matplotlib, result):
    with pytest.raises(UsageError) as info:
        html_mod.render_html(result.to_dict())
    assert 'pip install "nbtl[plot]"' in info.value.hint


def _cli(monkeypatch, capsys, *args):
    from recommender.cli import main

    monkeypatch.setattr(sys, "argv", ["nbtl-recommend", *args])

    def no_work(*_args, **_kwargs):
        raise AssertionError("the analysis started")

    monkeypatch.setattr("recommender.pipeline.recommend", no_work)
    with pytest.raises(SystemExit) as info:
        main()
    return info.value.code, capsys.readouterr().err


def test_without_matplotlib_the_cli_refuses_html_before_any_work(no_matplotlib, monkeypatch,
                                                                 capsys, sample_dir, tmp_path):
    for option, name in (("--html", "r.html"), ("--plot", "p.png")):
        code, err = _cli(monkeypatch, capsys, str(sample_dir), option, str(tmp_path / name))
        assert code == EXIT_USAGE
        assert "need matplotlib" in err and 'pip install "nbtl[plot]"' in err


@pytest.mark.parametrize("args, message", [
    (["--plot", "{tmp}/profile.jpg"], "must end in .png or .svg"),
    (["--html", "{tmp}/missing/report.html"], "does not exist"),
    (["--html", "{tmp}"], "is a folder"),
    (["--html", "{data}/report.html"], "inside the dataset folder"),
    (["--plot", "{data}/profile.png"], "inside the dataset folder"),
    (["--html", "{tmp}/same.svg", "--plot", "{tmp}/same.svg"], "both name"),
])
def test_bad_html_and_plot_paths_are_refused_before_any_work(monkeypatch, capsys, sample_dir,
                                                             tmp_path, args, message):
    args = [a.format(tmp=tmp_path, data=sample_dir) for a in args]
    code, err = _cli(monkeypatch, capsys, str(sample_dir), *args)
    assert code == EXIT_USAGE and message in err
    assert not (sample_dir / "report.html").exists() and not (sample_dir / "profile.png").exists()
