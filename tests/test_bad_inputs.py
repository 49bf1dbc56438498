"""Hostile datasets end to end: memory bounded by any one image, and names printed safely.

The per-file cases (corrupt, truncated, empty, odd modes, bombs, long thin images, links
leaving the root, NUL bytes in a labels file) are specified in test_images.py and
test_dataset.py; these tests follow such files further, into memory use and the report.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from recommender import report
from recommender.data.dataset import load_dataset
from recommender.data.images import MAX_ASPECT_RATIO
from recommender.errors import DatasetError

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "fashion-mnist-sample"
MEMORY_BOUND_MB = 200
# A class folder and a file name with a byte that is not UTF-8 and a terminal colour command.
ODD_CLASS = os.fsdecode(b"caf\xff \x1b[31mred")
ODD_FILE = os.fsdecode(b"\x1b[2Jcleared\xff.png")


def _peak_memory_mb(code: str, *args: str) -> float:
    """How far ``code``, run in a fresh Python after its imports, raises the peak resident
    memory; ``code`` sees ``args`` as ``sys.argv[1:]``."""
    pytest.importorskip("resource")  # Unix only
    script = textwrap.dedent("""
        import resource, sys
        from recommender.data.dataset import load_dataset
        from recommender.data.tensors import load_image_tensors

        def peak():
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

        before = peak()
        {code}
        # ru_maxrss is in KiB on Linux, in bytes on macOS.
        print((peak() - before) / (1024 ** 2 if sys.platform == "darwin" else 1024))
    """).format(code=code)
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                          check=True, timeout=120)
    return float(done.stdout.strip().splitlines()[-1])


def _folder(root: Path, classes: dict[str, int]) -> Path:
    for name, count in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.new("RGB", (4, 4), (i, 0, 0)).save(root / name / f"{i}.png")
    return root


def _odd_names(root: Path) -> Path:
    """A dataset with ODD_CLASS as a class and ODD_FILE, unreadable, in it."""
    try:
        _folder(root, {"a": 2, ODD_CLASS: 2})
        (root / ODD_CLASS / ODD_FILE).write_bytes(b"")
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system does not take names that are not UTF-8")
    return root


def _strict_utf8_stdout(monkeypatch) -> io.BytesIO:
    """Make stdout a strict UTF-8 stream, as it is under LC_ALL=C.UTF-8; return its bytes."""
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8", errors="strict", write_through=True)
    monkeypatch.setattr(sys, "stdout", stream)
    monkeypatch.setenv("COLUMNS", "200")  # one report line per printed line
    return raw


# --- memory: bounded by any one image -------------------------------------------------------


def test_scanning_a_60000x1_image_skips_it_in_little_memory(tmp_path):
    root = _folder(tmp_path / "data", {"a": 2, "b": 2})
    Image.new("RGB", (60_000, 1)).save(root / "a" / "long.png")

    used = _peak_memory_mb("load_dataset(sys.argv[1], workers=1)", str(root))

    assert {s.path: s.reason for s in load_dataset(root).skipped}["a/long.png"].startswith(
        "aspect ratio 60000:1")
    assert used < MEMORY_BOUND_MB


def test_training_tensors_of_the_longest_image_allowed_take_little_memory(tmp_path):
    # Resized on its shorter side before the crop, this image would take 640 MB at 1024 px.
    path = tmp_path / "long.png"
    Image.new("RGB", (int(MAX_ASPECT_RATIO) * 40, 40)).save(path)

    used = _peak_memory_mb("load_image_tensors([sys.argv[1]], [0], size=1024)", str(path))

    assert used < MEMORY_BOUND_MB


# --- names: escaped in the report, exact in the JSON ------------------------------------------


def test_printable_escapes_controls_and_bytes_that_are_not_utf8():
    assert report.printable("caf\udcff \x1b[31mred\u202e\n") == "caf\\udcff \\x1b[31mred\\u202e\\n"


def test_printable_leaves_other_text_as_it_is():
    assert report.printable("Zürich 日本　✓ a\\b") == "Zürich 日本　✓ a\\b"


def test_dataset_section_prints_odd_names_escaped_on_a_strict_utf8_stream(tmp_path, monkeypatch):
    doc = load_dataset(_odd_names(tmp_path / "data")).to_dict()
    raw = _strict_utf8_stdout(monkeypatch)

    report._print_dataset(doc, report.console(stderr=False))

    text = raw.getvalue().decode("utf-8")
    assert "\x1b" not in text
    assert "caf\\udcff \\x1b[31mred 2" in text
    assert "skipped caf\\udcff \\x1b[31mred/\\x1b[2Jcleared\\udcff.png: empty file" in text


def test_error_message_naming_an_odd_file_is_printed_escaped(capsys):
    report.print_error(DatasetError(f"Cannot read {ODD_FILE}", f"Remove {ODD_CLASS}."))

    err = capsys.readouterr().err
    assert "\x1b" not in err
    assert "Cannot read \\x1b[2Jcleared\\udcff.png" in err
    assert "Remove caf\\udcff \\x1b[31mred." in err


@pytest.mark.slow
def test_report_and_json_of_a_run_on_odd_names(tmp_path, monkeypatch):
    import json

    import recommender

    root = _odd_names(tmp_path / "data")
    for name in ("bag", "coat"):
        target = root / ("a" if name == "bag" else ODD_CLASS)
        for image in sorted((SAMPLE / name).iterdir())[:4]:
            shutil.copy(image, target / f"{name}_{image.name}")
    result = recommender.recommend(root, workers=0)
    raw = _strict_utf8_stdout(monkeypatch)

    report.print_report(result, report.console(stderr=False))

    assert "\x1b" not in raw.getvalue().decode("utf-8")
    doc = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert ODD_CLASS in doc["dataset"]["classes"]
