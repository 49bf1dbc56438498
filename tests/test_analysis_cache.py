"""The analysis cache: a re-run with the same images, labels, model and code loads the probe
results instead of the model, the features and the probes; anything that could change them
makes a new entry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest

import recommender.analysis
import recommender.pipeline
from recommender.errors import NbtlWarning

pytestmark = pytest.mark.slow  # whole analyses of 20 images (seconds each)

SMALL = {"max_per_class": 2, "workers": 0}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("NBTL_CACHE_DIR", str(folder))
    return folder


def _document(result) -> dict:
    doc = result.to_dict()
    doc.pop("timings")
    return doc


def test_a_rerun_loads_the_probes_and_gives_the_same_document(cache, sample_dir):
    first = recommender.pipeline.recommend(sample_dir, **SMALL)
    second = recommender.pipeline.recommend(sample_dir, **SMALL)
    assert not first.probes_from_cache and second.probes_from_cache
    assert "features_s" not in second.timings and "probes_s" not in second.timings
    # The same text, keys in the same order: what --json writes.
    assert json.dumps(_document(first)) == json.dumps(_document(second))
    assert len(list((cache / "analysis").glob("*.json"))) == 1


def test_a_set_value_reuses_the_cached_measures(cache, sample_dir):
    recommender.pipeline.recommend(sample_dir, **SMALL)
    tweaked = recommender.pipeline.recommend(sample_dir, **SMALL,
                                             overrides={"reinit_top_blocks": 1})
    assert tweaked.probes_from_cache
    assert tweaked.recommendation.hyperparameters.reinit_top_blocks == 1


def test_other_labels_reuse_the_features_but_not_the_probes(cache, sample_dir, tmp_path):
    """Features are keyed by the images and the model, not the labels (nor their order)."""
    # Two images of each of six classes.
    paths = sorted(p.relative_to(sample_dir) for p in sample_dir.glob("*/*.png"))[::10][:12]
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\n" + "".join(f"{p},{p.parent.name}\n" for p in paths))
    first = recommender.pipeline.recommend(sample_dir, labels_csv=csv, workers=0)
    # The same images, two classes instead of six, listed in reverse.
    csv.write_text("path,label\n" + "".join(
        f"{p},{'a' if i % 2 else 'b'}\n" for i, p in enumerate(reversed(paths))))
    second = recommender.pipeline.recommend(sample_dir, labels_csv=csv, workers=0)
    assert not first.features_from_cache and second.features_from_cache
    assert not second.probes_from_cache
    assert first.dataset.classes != second.dataset.classes


def test_another_probe_code_version_makes_a_new_entry(cache, sample_dir, monkeypatch):
    recommender.pipeline.recommend(sample_dir, **SMALL)
    monkeypatch.setattr(recommender.analysis, "code_version", lambda: "changed")
    again = recommender.pipeline.recommend(sample_dir, **SMALL)
    assert again.features_from_cache and not again.probes_from_cache


def test_no_cache_reads_and_writes_no_analysis(cache, sample_dir):
    recommender.pipeline.recommend(sample_dir, **SMALL)
    again = recommender.pipeline.recommend(sample_dir, **SMALL, use_cache=False)
    assert not again.probes_from_cache
    assert len(list((cache / "analysis").glob("*.json"))) == 1


def test_a_damaged_entry_is_discarded_with_a_warning_and_made_again(cache, sample_dir):
    first = recommender.pipeline.recommend(sample_dir, **SMALL)
    (entry,) = (cache / "analysis").glob("*.json")
    entry.write_text('{"version": 1, "probes": [')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = recommender.pipeline.recommend(sample_dir, **SMALL)
    assert any(issubclass(w.category, NbtlWarning) and "damaged" in str(w.message)
               for w in caught)
    assert not again.probes_from_cache and _document(again) == _document(first)
    assert json.loads(entry.read_text())["version"] == recommender.analysis.ANALYSIS_VERSION


def test_an_entry_from_other_probes_is_not_used(cache, sample_dir):
    recommender.pipeline.recommend(sample_dir, **SMALL)
    (entry,) = (cache / "analysis").glob("*.json")
    doc = json.loads(entry.read_text())
    doc["probes"] = doc["probes"][:-1]
    entry.write_text(json.dumps(doc))
    assert not recommender.pipeline.recommend(sample_dir, **SMALL).probes_from_cache


def test_a_cached_run_imports_neither_torch_nor_timm_nor_torchvision(cache, sample_dir):
    recommender.pipeline.recommend(sample_dir, **SMALL)
    code = (
        "import sys, recommender.cli\n"
        f"sys.argv = ['nbtl-recommend', {str(sample_dir)!r}, '--max-per-class', '2', "
        "'--workers', '0', '-q', '--json', '-']\n"
        "try:\n"
        "    recommender.cli.main()\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "print(sorted(m for m in ('torch', 'timm', 'torchvision') if m in sys.modules),"
        " file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "NBTL_CACHE_DIR": str(cache)}, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "[]"
    assert json.loads(done.stdout)["recommendation"]
