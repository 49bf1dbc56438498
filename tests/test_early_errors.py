"""A user's mistake is refused before the work it would spoil: exit 2 with what is allowed,
never an "internal error" after minutes of feature extraction."""

from __future__ import annotations

import pytest
from _cli import run_cli as run

import recommender.pipeline
from recommender.errors import EXIT_USAGE, UsageError

SMALL = ["--max-per-class", "3", "--workers", "0"]


def fail_if_called(what: str):
    def called(*args, **kwargs):
        raise AssertionError(f"{what} ran")

    return called


def not_cached(monkeypatch):
    """The analysis cache neither read (a cached run skips what the stubs stand for) nor
    written (a stubbed analysis would be found by later tests)."""
    monkeypatch.setattr(recommender.pipeline, "load_analysis", lambda key: None)
    monkeypatch.setattr(recommender.pipeline, "save_analysis", lambda key, analysis: None)


@pytest.fixture
def no_extraction(monkeypatch):
    not_cached(monkeypatch)
    monkeypatch.setattr(recommender.pipeline, "extract_features",
                        fail_if_called("the feature extraction"))


@pytest.fixture
def no_analysis(monkeypatch):
    monkeypatch.setattr(recommender.pipeline, "recommend", fail_if_called("the analysis"))


def test_a_split_block_that_is_not_a_block_is_refused_before_extraction(
        monkeypatch, capsys, sample_dir, no_extraction):
    code, _, err = run(monkeypatch, capsys, str(sample_dir), *SMALL, "--set", "split_block=stage9")
    assert code == EXIT_USAGE and "stage9" in err and "stage1" in err  # and what is allowed
    assert "internal error" not in err


def test_reinit_top_blocks_beyond_the_blocks_is_refused_before_extraction(
        monkeypatch, capsys, sample_dir, no_extraction):
    code, _, err = run(monkeypatch, capsys, str(sample_dir), *SMALL,
                       "--set", "reinit_top_blocks=99")
    assert code == EXIT_USAGE and "reinit_top_blocks must be between 0 and" in err
    assert "internal error" not in err


class _Features:
    blocks = ("stage1", "stage2")
    pretrained = ()  # no features: no consecutive-block CKA
    from_cache = False
    pretrained = ()

    def twin_rows(self):
        return ()

    def dims(self):
        return (8, 16)


def _advise_fails(monkeypatch):
    """Everything up to the rules stubbed out; the rules raise ValueError."""
    import heuristics

    not_cached(monkeypatch)
    monkeypatch.setattr(recommender.pipeline, "extract_features", lambda *a, **k: _Features())
    monkeypatch.setattr(recommender.pipeline, "run_probes", lambda *a, **k: [])

    def advise(*args, **kwargs):
        raise ValueError("split_block 'stage4' would be re-initialised")

    monkeypatch.setattr(heuristics, "advise", advise)


def test_a_rule_conflict_with_a_set_value_is_a_usage_error(monkeypatch, sample_dir):
    _advise_fails(monkeypatch)
    with pytest.raises(UsageError, match="--set: split_block 'stage4'"):
        recommender.pipeline.recommend(sample_dir, max_per_class=2, workers=0,
                                       overrides={"base_lr": 0.01})


def test_a_rule_failure_without_set_values_stays_a_bug(monkeypatch, sample_dir):
    _advise_fails(monkeypatch)
    with pytest.raises(ValueError, match="would be re-initialised"):
        recommender.pipeline.recommend(sample_dir, max_per_class=2, workers=0)


def test_json_in_a_missing_folder_is_refused_before_any_work(
        monkeypatch, capsys, sample_dir, tmp_path, no_analysis):
    target = tmp_path / "missing" / "out.json"
    code, _, err = run(monkeypatch, capsys, str(sample_dir), "--json", str(target))
    assert code == EXIT_USAGE and "does not exist" in err and "does not create it" in err
    assert not target.parent.exists()


def test_json_that_is_a_folder_is_refused_before_any_work(
        monkeypatch, capsys, sample_dir, tmp_path, no_analysis):
    code, _, err = run(monkeypatch, capsys, str(sample_dir), "--json", str(tmp_path))
    assert code == EXIT_USAGE and "is a folder" in err


def test_cuda_without_a_gpu_is_refused_before_the_dataset_and_the_cache(
        monkeypatch, capsys, sample_dir):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    # Before the scan, so before the features cache is looked up: cached or not, the same.
    monkeypatch.setattr(recommender.pipeline, "_scan", fail_if_called("the scan"))
    code, _, err = run(monkeypatch, capsys, str(sample_dir), "--device", "cuda")
    assert code == EXIT_USAGE and "no CUDA GPU" in err


def test_emit_with_json_to_stdout_is_refused_before_any_work(
        monkeypatch, capsys, sample_dir, no_analysis):
    code, _, err = run(monkeypatch, capsys, str(sample_dir), "--emit", "timm", "--json", "-")
    assert code == EXIT_USAGE and "--emit" in err and "stdout" in err


def test_an_unknown_emit_kind_is_a_usage_error_naming_the_kinds(
        monkeypatch, capsys, sample_dir, no_analysis):
    code, _, err = run(monkeypatch, capsys, str(sample_dir), "--emit", "keras")
    assert code == EXIT_USAGE and "timm" in err and "torch" in err
