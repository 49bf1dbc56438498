"""The report a person reads: the answer first, the evidence after, readable at 60 columns and
in a pipe; and the probe stage's progress that feeds its bar."""

from __future__ import annotations

import io
import re
import sys

import numpy as np
import pytest

import heuristics
import probes
from recommender import report
from recommender.analysis import block_profile, run_probes, summary_measures
from recommender.config import Options
from recommender.data.dataset import load_dataset
from recommender.models.features import Features
from recommender.pipeline import Result

BLOCKS = ("stage1", "stage2", "neck")


def _features(widths=(8, 16, 32), n_per_class=12, classes=4) -> tuple[Features, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(classes), n_per_class)
    pretrained = tuple(rng.normal(size=(len(labels), d)).astype(np.float32)
                       + labels[:, None] * 0.5 for d in widths)
    random = tuple(rng.normal(size=(len(labels), d)).astype(np.float32) for d in widths)
    probs = rng.dirichlet(np.ones(20), size=len(labels))
    names = tuple(f"b{i}" for i in range(len(widths)))
    return Features(names, pretrained, random, probs), labels


@pytest.fixture(scope="module")
def result(sample_dir) -> Result:
    """A real Result of the sample's scan with synthetic features: seconds, not a whole run."""
    features, labels = _features()
    results = run_probes(features, labels, jobs=1)
    recommendation = heuristics.advise(
        summary_measures(results), profile=block_profile(results),
        blocks=[heuristics.Block(name, (f"blocks.{i}",)) for i, name in enumerate(BLOCKS)],
        num_images=200, num_classes=10)
    model = {"name": "tf_efficientnet_lite0", "weights": "synthetic", "num_params": 4_650_000,
             "input_size": [3, 224, 224], "interpolation": "bicubic"}
    return Result(dataset=load_dataset(sample_dir), model=model, blocks=BLOCKS,
                  dims=(8, 16, 32), probes=tuple(results), recommendation=recommendation,
                  options=Options(), timings={"features_s": 1.0, "probes_s": 2.0,
                                              "total_s": 3.0})


def _render(result, width=100, explain=False) -> str:
    buffer = io.StringIO()
    # rich stays inside the report module (a lint rule): its Console, at a fixed width.
    report.print_report(result, report.Console(file=buffer, width=width, highlight=False),
                        explain=explain)
    return buffer.getvalue()


# --- the first screen is the answer ------------------------------------------------------------


def test_report_leads_with_the_fit_and_the_changes_before_settings_and_measures(result):
    text = _render(result)
    fit, change = text.index("Fit "), text.index("Change from the binary default")
    settings, measures = text.index("Recommended fine-tuning settings"), text.index("Measures")
    assert fit < change < settings < measures
    assert text.index("Dataset ") > settings


def test_fit_sentence_gives_the_probe_accuracy_against_chance(result):
    probe = next(p for p in result.probes if p.name == "linear_probe_accuracy").summary
    flat = " ".join(_render(result).split())
    assert f"reaches {report._fmt(probe)} accuracy (chance 0.1)" in flat


def test_low_confidence_names_the_validate_command(result):
    levels = {d.confidence for d in result.recommendation.details.values()}
    assert "low" in levels  # the synthetic recommendation is unsure
    flat = " ".join(_render(result, width=200).split())
    assert f"nbtl-recommend {result.dataset.root} --validate" in flat


def test_recommendation_warnings_are_shown_in_the_verdict(result, monkeypatch):
    document = result.to_dict()
    document["recommendation"]["warnings"] = [
        {"id": "caution.few_images", "text": "Only 4 images per class.", "measures": {}}]
    monkeypatch.setattr(Result, "to_dict", lambda self: document)
    text = _render(result)
    assert "Warning  Only 4 images per class." in text
    assert text.index("Only 4 images") < text.index("Recommended fine-tuning settings")


def test_definitions_and_sources_only_with_explain(result):
    short, long = _render(result), _render(result, explain=True)
    assert "What they mean" not in short and "Sources" not in short
    assert "What they mean" in long and "Sources" in long and "[1]" in long


def test_settings_table_has_every_setting_with_value_and_confidence(result):
    lines = _render(result, width=120).splitlines()
    table = lines[next(i for i, line in enumerate(lines) if line.startswith("setting ")):]
    for name, detail in result.recommendation.details.items():
        row = next(line for line in table if line.startswith(f"{name} "))
        assert detail.confidence in row and detail.set_by in row


# --- narrow consoles, pipes, colour ------------------------------------------------------------


def test_measures_fit_60_columns_without_cutting_a_number(result):
    text = _render(result, width=60)
    assert all(len(line) <= 60 for line in text.splitlines())
    assert "…" not in text
    for p in result.probes:
        for m in (m for m in p.values if m is not None and p.per_block):
            assert report._sig3(m.value) in text


@pytest.mark.parametrize("value, expected", [(0.0096871, "0.00969"), (-14.34, "-14.3"),
                                             (239.9, "240"), (1234.5, "1.23e3"),
                                             (None, "n/a"), (float("nan"), "n/a")])
def test_table_cells_have_three_significant_figures(value, expected):
    assert report._sig3(value) == expected


def _piped(monkeypatch, columns: int) -> io.StringIO:
    stream = io.StringIO()  # not a terminal
    monkeypatch.setattr(sys, "stdout", stream)
    monkeypatch.setenv("COLUMNS", str(columns))
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)
    return stream


def test_a_pipe_gets_no_trailing_spaces(result, monkeypatch):
    stream = _piped(monkeypatch, 60)
    report.print_report(result, report.console(stderr=False))
    lines = stream.getvalue().splitlines()
    assert lines and all(line == line.rstrip() for line in lines)


def test_a_pipe_gets_long_sentences_on_one_line(result, monkeypatch):
    stream = _piped(monkeypatch, 60)
    report.print_report(result, report.console(stderr=False))
    fit = next(line for line in stream.getvalue().splitlines() if line.startswith("Fit "))
    assert fit.endswith(".") and "accuracy (chance 0.1)" in fit


def test_probe_list_in_a_pipe_keeps_every_meaning_whole(monkeypatch):
    stream = _piped(monkeypatch, 40)
    report.print_probe_list(report.console(stderr=False))
    lines = stream.getvalue().splitlines()
    for probe in probes.list_probes():
        assert f"  {probe.meaning}" in lines


_COLOUR = re.compile(r"\x1b\[[0-9;]*?(?:3[0-7]|9[0-7]|38;)[0-9;]*m")


def test_no_color_leaves_out_colour_codes(result, monkeypatch):
    stream = _piped(monkeypatch, 100)
    monkeypatch.setenv("FORCE_COLOR", "1")  # a terminal as far as rich is concerned
    report.print_report(result, report.console(stderr=False))
    assert _COLOUR.search(stream.getvalue())  # coloured without NO_COLOR
    stream.seek(0), stream.truncate()
    monkeypatch.setenv("NO_COLOR", "1")
    report.print_report(result, report.console(stderr=False))
    assert stream.getvalue() and not _COLOUR.search(stream.getvalue())


@pytest.mark.slow
def test_default_report_on_the_sample_fits_about_60_lines_at_100_columns(sample_dir):
    import recommender

    run = recommender.recommend(sample_dir, max_per_class=4, workers=0)
    lines = _render(run, width=100).splitlines()
    # 61 lines on the whole sample before the CKA columns, which continue the measures in
    # a second table of 8 lines at 100 columns; 4 images per class add small-sample
    # warnings, up to 3 lines each, and a ladder that climbs (the 40 images' fit gap is
    # 0.64) a change bullet with its evidence, up to 8 lines.
    rec = run.to_dict()["recommendation"]
    climbs = not rec["ladder"]["keep_default"]
    assert len(lines) <= 70 + 3 * len(rec.get("warnings", [])) + 8 * climbs, "\n".join(lines)


# --- the probe stage's progress ----------------------------------------------------------------


@pytest.mark.parametrize("jobs", [1, 2])
def test_run_probes_reports_each_block_as_it_finishes(jobs):
    features, labels = _features()
    ticks = []
    run_probes(features, labels, jobs=jobs, on_block=ticks.append)
    assert ticks == [1] * len(features.blocks)



def test_a_pipe_gets_the_stage_lines_without_progress_bars(monkeypatch):
    stream = _piped(monkeypatch, 60)
    err = report.console(stderr=False)
    say, start = report.stage_printer(err), report.progress_factory(err)
    say("Extracting features")
    advance = start("features", 2, "images")
    advance(1)
    advance(1)
    say("Computing probes")
    assert stream.getvalue() == "· Extracting features\n· Computing probes\n"


def test_a_twin_subset_is_named_with_what_was_measured_on_it(result):
    """Beyond 500 images the twin and the BatchNorm statistics saw a subset: one line says so."""
    from dataclasses import replace

    assert "random-init twin saw" not in _render(result)  # all of them: nothing to say
    text = " ".join(_render(replace(result, random_init_images=50), width=200).split())
    images = len(result.dataset.samples)
    assert f"The random-init twin saw 50 of the {images} images" in text
    assert "BN shift measures the target's BatchNorm statistics on them" in text
