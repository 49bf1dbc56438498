"""The run's options: one frozen object, built from the command's names, checked before work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import recommender
from recommender.config import (
    SCRATCH_EPOCHS,
    VALIDATE_EPOCHS,
    Options,
    SearchOptions,
    ValidationOptions,
)
from recommender.errors import UsageError


def test_defaults_live_in_the_options():
    options = Options()
    assert options.seed == 0 and options.batch_size is None and options.device == "auto"
    assert options.validation is None and options.search is None
    assert options.scratch_epochs is None and dict(options.overrides) == {}
    assert ValidationOptions().epochs == VALIDATE_EPOCHS


def test_a_batch_size_below_one_is_refused_before_any_work():
    with pytest.raises(UsageError, match="--batch-size 0 must be at least 1"):
        Options(batch_size=0).check()
    Options(batch_size=1).check()
    Options().check()  # None: by device


def test_flat_keyword_arguments_map_onto_nested_options():
    options = Options.from_kwargs(scratch=True, validate=True, validate_seeds=3,
                                  search=4, search_db="s.journal", labels_csv="l.csv")
    assert options.scratch_epochs == SCRATCH_EPOCHS
    assert options.validation == ValidationOptions(seeds=3)
    assert options.search == SearchOptions(4, Path("s.journal"))
    assert options.labels_csv == Path("l.csv")


def test_options_that_are_off_leave_their_values_out():
    options = Options.from_kwargs(scratch_epochs=5, validate_seeds=9, search_db="x")
    assert options.scratch_epochs is None and options.validation is None
    assert options.search is None


def test_a_search_fine_tunes_so_it_brings_validation_options():
    assert Options(search=SearchOptions(2)).validation == ValidationOptions()
    assert Options.from_kwargs(search=2).validation == ValidationOptions()


def test_an_unknown_keyword_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match="max_per_klass"):
        Options.from_kwargs(max_per_klass=3)


def test_options_are_frozen():
    with pytest.raises(AttributeError):
        Options().seed = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        Options(overrides={"base_lr": 0.1}).overrides["base_lr"] = 0.2  # type: ignore[index]


@pytest.mark.parametrize("kwargs, message", [
    ({"scratch": True, "scratch_epochs": 0}, "--scratch-epochs 0"),
    ({"search": -1}, "--search -1"),
    ({"validate": True, "validate_seeds": 0}, "--validate-seeds 0"),
    ({"validate": True, "validate_epochs": 1}, "--validate-epochs 1"),
    ({"validate": True, "validate_size": 16}, "--validate-size 16"),
])
def test_check_refuses_values_that_cannot_work(kwargs, message):
    with pytest.raises(UsageError, match=message):
        Options.from_kwargs(**kwargs).check()


def test_a_bad_value_of_an_option_that_is_off_is_not_checked():
    Options.from_kwargs(scratch_epochs=0, validate_epochs=1).check()


def test_the_json_settings_say_what_shaped_the_result():
    options = Options.from_kwargs(seed=2, overrides={"lp_ft": True, "base_lr": 0.01},
                                  validate=True, search=3)
    settings = options.to_dict("train")
    assert list(settings) == ["seed", "max_per_class", "image_size", "labels_csv",
                              "scratch_epochs", "overrides", "validate", "validate_seeds",
                              "search", "train_epochs", "train_size", "analysed"]
    assert settings["overrides"] == {"base_lr": 0.01, "lp_ft": True}  # sorted
    assert settings["validate"] is True and settings["validate_seeds"] == 2
    assert settings["search"] == 3 and settings["analysed"] == "train"
    json.dumps(settings, allow_nan=False)


def test_recommend_takes_options_or_keywords_not_both(sample_dir):
    with pytest.raises(TypeError, match="not both"):
        recommender.recommend(sample_dir, Options(), seed=1)


def test_recommend_checks_the_options_before_any_work(tmp_path):
    # The folder does not exist: a scan would fail with a data error, the check comes first.
    with pytest.raises(UsageError, match="--validate-seeds 0"):
        recommender.recommend(tmp_path / "missing", validate=True, validate_seeds=0)


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:x", "CPU", ""])
def test_a_device_that_cannot_be_is_refused_by_the_options_and_the_cli(device, monkeypatch,
                                                                      capsys):
    """One check serves the Python API (Options.check, before any work) and the CLI."""
    with pytest.raises(UsageError, match="is not one of auto, cpu, cuda, cuda:K"):
        Options.from_kwargs(device=device).check()
    from _cli import run_cli

    from recommender.errors import EXIT_USAGE

    code, _, err = run_cli(monkeypatch, capsys, "no-such-folder", "--device", device)
    assert code == EXIT_USAGE and "is not one of auto, cpu, cuda, cuda:K" in err


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_every_device_form_passes_the_check(device):
    Options.from_kwargs(device=device).check()
