"""nbtl-recommend: the bundled sample end to end, and every bad input as a clean exit."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch
from _cli import run_cli as run
from PIL import Image

from recommender.errors import EXIT_DATA, EXIT_MODEL, EXIT_USAGE

SMALL = ["--max-per-class", "3", "--workers", "0"]


def tree(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def sample_json(sample_dir, tmp_path_factory):
    """The console script itself on the bundled sample, JSON on stdout."""
    result = subprocess.run(
        [sys.executable, "-m", "recommender", str(sample_dir), *SMALL, "--json", "-"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return result


@pytest.mark.slow
def test_sample_run_writes_json_to_stdout_and_the_report_to_stderr(sample_json):
    document = json.loads(sample_json.stdout)
    assert document["schema_version"] == "1.2"
    assert "Recommended fine-tuning settings" in sample_json.stderr
    assert "Traceback" not in sample_json.stderr


@pytest.mark.slow
def test_sample_json_has_the_documented_fields(sample_json):
    document = json.loads(sample_json.stdout)
    assert document["dataset"]["num_classes"] == 10
    assert document["dataset"]["num_images"] == 30
    assert document["model"]["name"] == "tf_efficientnet_lite0"
    hp = document["recommendation"]["hyperparameters"]
    assert isinstance(hp["reinit_top_blocks"], int)
    assert all({"name", "lr", "modules"} <= set(g) for g in hp["lr_groups"])
    assert isinstance(hp["l2sp_weight"], float) and isinstance(hp["l2_weight"], float)
    assert document["recommendation"]["reasons"]
    assert set(document["measures"]["probes"]) >= {"linear_probe_accuracy", "logme", "leep",
                                                   "pretraining_gain"}


@pytest.mark.slow
def test_report_shows_the_dataset_the_probe_table_and_the_recommendation(
        monkeypatch, capsys, sample_dir):
    code, out, _ = run(monkeypatch, capsys, str(sample_dir), *SMALL)
    assert code == 0
    for text in ("10 classes", "Measures by block", "stage1", "neck", "reinit_top_blocks",
                 "Learning-rate groups"):
        assert text in out


@pytest.mark.slow
def test_json_file_is_written_where_asked(monkeypatch, capsys, sample_dir, tmp_path):
    target = tmp_path / "out.json"
    code, out, _ = run(monkeypatch, capsys, str(sample_dir), *SMALL, "--json", str(target))
    assert code == 0 and "Recommended" in out
    assert json.loads(target.read_text())["dataset"]["num_images"] == 30


@pytest.mark.slow
def test_the_run_leaves_the_dataset_folder_untouched(monkeypatch, capsys, sample_dir):
    before = tree(sample_dir)
    run(monkeypatch, capsys, str(sample_dir), *SMALL, "--quiet")
    assert tree(sample_dir) == before


def test_json_inside_the_dataset_folder_is_refused(monkeypatch, capsys, sample_dir):
    code, _, err = run(monkeypatch, capsys, str(sample_dir), "--json",
                       str(sample_dir / "out.json"))
    assert code == EXIT_USAGE and "never writes into a dataset folder" in err
    assert not (sample_dir / "out.json").exists()


def test_missing_dataset_path_is_a_data_error(monkeypatch, capsys, tmp_path):
    code, _, err = run(monkeypatch, capsys, str(tmp_path / "nowhere"))
    assert code == EXIT_DATA and "nowhere" in err and "Traceback" not in err


def test_folder_without_images_is_a_data_error(monkeypatch, capsys, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "notes.txt").write_text("hello")
    code, _, err = run(monkeypatch, capsys, str(tmp_path))
    assert code == EXIT_DATA and "Traceback" not in err


def test_a_single_usable_class_is_a_data_error(monkeypatch, capsys, tmp_path):
    for i in range(3):
        (tmp_path / "only").mkdir(exist_ok=True)
        Image.new("RGB", (8, 8), (i, i, i)).save(tmp_path / "only" / f"{i}.png")
    code, _, err = run(monkeypatch, capsys, str(tmp_path))
    assert code == EXIT_DATA and "class" in err


def test_unknown_option_is_a_usage_error(monkeypatch, capsys, sample_dir):
    code, _, err = run(monkeypatch, capsys, str(sample_dir), "--frobnicate")
    assert code == EXIT_USAGE and "frobnicate" in err


def test_missing_path_argument_is_a_usage_error(monkeypatch, capsys):
    code, _, err = run(monkeypatch, capsys)
    assert code == EXIT_USAGE and "PATH" in err


def test_unknown_model_is_a_model_error(monkeypatch, capsys, sample_dir):
    code, _, err = run(monkeypatch, capsys, str(sample_dir), *SMALL, "--model", "no_such_net")
    assert code == EXIT_MODEL and "no_such_net" in err


def test_hub_model_offline_is_a_model_error_pointing_at_weights(monkeypatch, capsys, sample_dir):
    code, _, err = run(monkeypatch, capsys, str(sample_dir), *SMALL, "--model", "resnet18",
                       "--offline")
    assert code == EXIT_MODEL and "--weights" in err


def test_pickled_weights_are_refused_as_a_model_error(monkeypatch, capsys, sample_dir, tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"w": object()}, path)
    code, _, err = run(monkeypatch, capsys, str(sample_dir), *SMALL, "--weights", str(path))
    assert code == EXIT_MODEL and "not plain tensors" in err and "\x1b" not in err


def test_empty_weights_file_is_a_model_error_naming_it(monkeypatch, capsys, sample_dir,
                                                       tmp_path):
    path = tmp_path / "empty.pth"
    path.write_bytes(b"")
    code, _, err = run(monkeypatch, capsys, str(sample_dir), *SMALL, "--weights", str(path))
    assert code == EXIT_MODEL and f"{path} is empty" in err and "Traceback" not in err


def test_empty_json_path_is_a_usage_error_before_any_work(monkeypatch, capsys, sample_dir):
    import recommender.pipeline

    def no_work(*args, **kwargs):
        raise AssertionError("the analysis ran")

    monkeypatch.setattr(recommender.pipeline, "recommend", no_work)
    code, _, err = run(monkeypatch, capsys, str(sample_dir), "--json", "")
    assert code == EXIT_USAGE and "--json" in err and "'-'" in err


def test_ctrl_c_exits_130_with_one_line(monkeypatch, capsys):
    from recommender import report

    def interrupt(console):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "print_probe_list", interrupt)
    code, _, err = run(monkeypatch, capsys, "--list-probes")
    assert code == 130 and err.strip() == "nbtl-recommend: interrupted."


def test_an_exit_code_returned_by_the_command_is_the_exit_status(monkeypatch, capsys):
    from recommender import cli, report

    def leave(console):
        raise cli.typer.Exit(5)  # what ctx.exit(5) raises; tests do not import typer

    monkeypatch.setattr(report, "print_probe_list", leave)
    code, _, _ = run(monkeypatch, capsys, "--list-probes")
    assert code == 5


def test_short_h_shows_the_help(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "-h")
    assert code == 0 and "Exit codes" in out


def test_list_probes_names_every_registered_probe(monkeypatch, capsys):
    import probes

    code, out, _ = run(monkeypatch, capsys, "--list-probes")
    assert code == 0
    assert all(p.name in out for p in probes.list_probes())


def test_help_documents_the_exit_codes(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "--help")
    assert code == 0 and "Exit codes" in out and "--max-per-class" in out


@pytest.mark.slow
def test_skipped_files_are_listed_in_the_report_and_the_json(monkeypatch, capsys, sample_dir,
                                                               tmp_path):
    import shutil

    data = tmp_path / "data"
    for name in ("bag", "trouser"):
        (data / name).mkdir(parents=True)
        for image in sorted((sample_dir / name).glob("*.png"))[:3]:
            shutil.copy(image, data / name / image.name)
    (data / "bag" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (data / "trouser" / "empty.jpg").write_bytes(b"")
    target = tmp_path / "out.json"
    code, out, _ = run(monkeypatch, capsys, str(data), "--workers", "0", "--json", str(target))
    assert code == 0
    assert "2 skipped" in out and "bag/broken.png" in out and "trouser/empty.jpg" in out
    dataset = json.loads(target.read_text())["dataset"]
    assert dataset["num_skipped"] == 2 and dataset["num_images"] == 6
    assert {s["path"] for s in dataset["skipped"]} == {"bag/broken.png", "trouser/empty.jpg"}


def test_version_prints_the_package_version(monkeypatch, capsys):
    from importlib.metadata import version

    code, out, _ = run(monkeypatch, capsys, "--version")
    assert code == 0 and out.strip() == f"nbtl {version('nbtl')}"


@pytest.mark.slow
def test_set_overrides_a_setting_and_the_report_marks_it(monkeypatch, capsys, sample_dir,
                                                         tmp_path):
    target = tmp_path / "out.json"
    code, out, _ = run(monkeypatch, capsys, str(sample_dir), *SMALL, "--set", "base_lr=0.003",
                       "--set", "lp_ft=true", "--json", str(target))
    assert code == 0
    assert re.search(r"^base_lr +0\.003 .*set by you", out, re.MULTILINE), out
    document = json.loads(target.read_text())
    assert document["recommendation"]["overrides"] == {"base_lr": 0.003, "lp_ft": True}
    assert document["recommendation"]["hyperparameters"]["lp_ft"] is True


@pytest.mark.parametrize("value, expected", [
    ("warp_speed=9", "unknown"), ("base_lr=fast", "base_lr"), ("base_lr", "name=value")])
def test_a_bad_set_is_a_usage_error_naming_it(monkeypatch, capsys, sample_dir, value, expected):
    code, _, err = run(monkeypatch, capsys, str(sample_dir), "--set", value)
    assert code == EXIT_USAGE
    assert f"--set {value}" in err and expected in err.lower()
    assert "Traceback" not in err


def test_the_same_setting_twice_is_a_usage_error(monkeypatch, capsys, sample_dir):
    code, _, err = run(monkeypatch, capsys, str(sample_dir), "--set", "base_lr=0.1",
                       "--set", "base_lr=0.2")
    assert code == EXIT_USAGE and "twice" in err


@pytest.mark.slow
def test_scratch_adds_its_measure_and_time_to_the_report(monkeypatch, capsys, sample_dir):
    code, out, _ = run(monkeypatch, capsys, str(sample_dir), *SMALL, "--scratch",
                       "--scratch-epochs", "1")
    assert code == 0
    assert "Scratch accuracy" in out and "for 1 epoch at 96 px" in out
    assert "scratch training" in out


def test_zero_scratch_epochs_is_a_usage_error(monkeypatch, capsys, sample_dir):
    code, _, err = run(monkeypatch, capsys, str(sample_dir), *SMALL, "--scratch",
                       "--scratch-epochs", "0")
    assert code == EXIT_USAGE and "--scratch-epochs 0" in err


def test_help_lists_the_settings_that_set_can_override(monkeypatch, capsys):
    import heuristics

    code, out, _ = run(monkeypatch, capsys, "--help")
    assert code == 0
    flat = " ".join(out.split())
    assert all(name in flat for name in heuristics.OVERRIDABLE)


VALIDATE = ["--max-per-class", "5", "--workers", "0", "--validate-epochs", "2",
            "--validate-size", "32"]


@pytest.mark.slow
def test_validate_reports_both_settings_and_writes_them_to_the_json(monkeypatch, capsys,
                                                                    sample_dir, tmp_path):
    target = tmp_path / "out.json"
    code, out, _ = run(monkeypatch, capsys, str(sample_dir), *VALIDATE, "--validate",
                       "--validate-seeds", "2", "--json", str(target))
    assert code == 0
    flat = " ".join(out.split())
    assert "Validation: fine-tuned, same budget and seeds" in flat
    assert "binary default" in flat and "recommended - default:" in flat
    assert "2 epochs at 32 px" in flat and "30 train, 10 validation, 10 test images" in flat
    doc = json.loads(target.read_text())
    assert set(doc["validation"]["settings"]) == {"default", "recommended"}
    assert doc["schema_version"] == "1.2" and doc["settings"]["analysed"] == "train"
    assert doc["timings"]["validation_s"] > 0


def test_search_db_inside_the_dataset_is_refused(monkeypatch, capsys, sample_dir):
    before = tree(sample_dir)
    code, _, err = run(monkeypatch, capsys, str(sample_dir), *VALIDATE, "--search", "2",
                       "--search-db", str(sample_dir / "trials.journal"))
    assert code == EXIT_USAGE and "--search-db" in err and "inside the dataset" in err
    assert tree(sample_dir) == before


@pytest.mark.parametrize("option, value", [("--validate-seeds", "0"), ("--search", "-1"),
                                           ("--validate-epochs", "1")])
def test_bad_validation_options_are_usage_errors(monkeypatch, capsys, sample_dir, option,
                                                 value):
    code, _, err = run(monkeypatch, capsys, str(sample_dir), *VALIDATE, "--validate", option,
                       value)
    assert code == EXIT_USAGE and f"{option} {value}" in err


class _FakeResult:
    """What the command needs of a result once the analysis is done (the analysis stubbed)."""

    def to_dict(self):
        return {"schema_version": "1.1"}


@pytest.fixture
def shown(monkeypatch):
    """The analysis stubbed out; records how the report and the export were asked for."""
    import recommender.export
    import recommender.pipeline
    from recommender import report

    calls = {}

    def print_report(result, out, *, explain=False):
        calls["explain"] = explain
        out.print("REPORT")

    monkeypatch.setattr(recommender.pipeline, "recommend", lambda *a, **k: _FakeResult())
    monkeypatch.setattr(report, "print_report", print_report)
    monkeypatch.setattr(recommender.export, "emit", lambda result, kind: f"EMITTED {kind}\n")
    return calls


def test_the_default_report_is_the_short_one(monkeypatch, capsys, sample_dir, shown):
    code, out, _ = run(monkeypatch, capsys, str(sample_dir))
    assert code == 0 and shown == {"explain": False} and out == "REPORT\n"


@pytest.mark.parametrize("flag", ["--explain", "-v"])
def test_explain_asks_for_the_report_with_definitions_and_sources(monkeypatch, capsys,
                                                                    sample_dir, shown, flag):
    code, _, _ = run(monkeypatch, capsys, str(sample_dir), flag)
    assert code == 0 and shown["explain"] is True


@pytest.mark.parametrize("kind", ["timm", "torch"])
def test_emit_prints_the_export_on_stdout_and_the_report_on_stderr(monkeypatch, capsys,
                                                                    sample_dir, shown, kind):
    code, out, err = run(monkeypatch, capsys, str(sample_dir), "--emit", kind)
    assert code == 0 and out == f"EMITTED {kind}\n" and "REPORT" in err


def test_the_emit_choices_are_the_export_kinds():
    from recommender.cli import Emit
    from recommender.export import EMIT_KINDS

    assert tuple(kind.value for kind in Emit) == EMIT_KINDS


def test_json_file_says_where_it_was_written(monkeypatch, capsys, sample_dir, tmp_path, shown):
    target = tmp_path / "out.json"
    code, _, err = run(monkeypatch, capsys, str(sample_dir), "--json", str(target))
    assert code == 0 and f"Wrote the JSON to {target}." in err
    assert json.loads(target.read_text()) == {"schema_version": "1.1"}


def test_quiet_json_file_says_nothing(monkeypatch, capsys, sample_dir, tmp_path, shown):
    code, out, err = run(monkeypatch, capsys, str(sample_dir), "--json",
                         str(tmp_path / "out.json"), "-q")
    assert code == 0 and out == "" and err == ""


@pytest.fixture
def hub_model(monkeypatch, tmp_path):
    """A hub model that is not in the (empty, private) hub cache."""
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_hub_model_offline_says_where_nbtl_looked_and_how_to_get_it(monkeypatch, capsys,
                                                                     sample_dir, hub_model):
    code, _, err = run(monkeypatch, capsys, str(sample_dir), *SMALL, "--model", "resnet18",
                       "--offline")
    flat = " ".join(err.split())
    assert code == EXIT_MODEL and "'resnet18'" in flat and f"local cache {hub_model}" in flat
    assert "--offline" in flat and "check your connection" not in flat
    assert "timm.create_model('resnet18', pretrained=True)" in flat and "--weights" in flat


def test_hub_model_without_a_network_fails_at_once_with_one_message(monkeypatch, capsys,
                                                                     sample_dir, hub_model):
    import time

    import huggingface_hub.constants as hub

    from recommender.models import backbones

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)  # the tests' own setting (conftest)
    monkeypatch.setattr(backbones, "_hub_reachable", lambda endpoint: False)
    start = time.perf_counter()
    code, _, err = run(monkeypatch, capsys, str(sample_dir), *SMALL, "--model", "resnet18")
    flat = " ".join(err.split())
    assert code == EXIT_MODEL and time.perf_counter() - start < 30
    assert f"the hub {hub.ENDPOINT} cannot be reached" in flat and "Retry" not in flat
    assert "With --offline, nbtl does not try the hub at all." in flat


def test_the_probes_stage_moves_a_progress_bar_per_block(monkeypatch, sample_dir):
    """The tens of seconds of probes are not silent: one step per block (stubbed run)."""
    import recommender.pipeline

    class Features:
        blocks = ("stage1", "stage2", "stage3")
        pretrained = ()  # no features: no consecutive-block CKA
        from_cache = False
        pretrained = ()

        def twin_rows(self):
            return ()

        def dims(self):
            return (4, 4, 4)

    def run_probes(features, labels, jobs=None, on_block=None):
        for _ in features.blocks:
            on_block(1)
        return []

    bars = []

    def progress(label, total, unit):
        bar = [label, total, unit, 0]
        bars.append(bar)
        return lambda n: bar.__setitem__(3, bar[3] + n)

    monkeypatch.setattr(recommender.pipeline, "extract_features", lambda *a, **k: Features())
    monkeypatch.setattr(recommender.pipeline, "run_probes", run_probes)
    monkeypatch.setattr(recommender.pipeline, "load_analysis", lambda key: None)  # not cached
    monkeypatch.setattr(recommender.pipeline, "save_analysis", lambda key, analysis: None)
    recommender.pipeline.recommend(sample_dir, max_per_class=2, workers=0, progress=progress)
    assert ["probes", 3, "blocks", 3] in bars
