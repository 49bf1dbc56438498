"""benchmarks/datasets.py on three datasets that need no download: layout, counts,
train/test disjointness and byte-for-byte determinism."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("skimage")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "datasets.py"
CLASSES = {"digits8x8": [str(d) for d in range(10)], "textures": ["brick", "grass", "gravel"],
           "photos": sorted(["astronaut", "cat", "coffee", "rocket", "temple", "flower"])}


def _builder():
    spec = importlib.util.spec_from_file_location("bench_datasets", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _build(out: Path, sources: Path) -> dict[str, bytes]:
    argv = ["--out", str(out), "--sources", str(sources), "--per-class", "5",
            "--test-per-class", "3", "--only", "digits8x8,textures,photos"]
    assert _builder().main(argv) == 0
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_split_layout_disjoint_and_deterministic(tmp_path):
    first = _build(tmp_path / "a", tmp_path / "sources")
    for name, classes in CLASSES.items():
        for split, count in (("train", 5), ("test", 3)):
            folder = tmp_path / "a" / name / split
            assert sorted(p.name for p in folder.iterdir()) == classes
            for cls in classes:
                files = sorted(p.name for p in (folder / cls).iterdir())
                assert files == [f"{i:04d}.png" for i in range(count)]
    assert len(first) == (10 + 3 + 6) * (5 + 3)

    digits = tmp_path / "a" / "digits8x8"
    train = {p.read_bytes() for p in (digits / "train").rglob("*.png")}
    test = {p.read_bytes() for p in (digits / "test").rglob("*.png")}
    assert len(train) == 50 and len(test) == 30 and not train & test

    from PIL import Image

    with Image.open(digits / "train" / "0" / "0000.png") as im:
        assert (im.mode, im.size) == ("L", (8, 8))
    with Image.open(tmp_path / "a" / "textures" / "test" / "grass" / "0000.png") as im:
        assert (im.mode, im.size) == ("L", (128, 128))
    with Image.open(tmp_path / "a" / "photos" / "train" / "cat" / "0000.png") as im:
        assert (im.mode, im.size) == ("RGB", (96, 96))

    assert _build(tmp_path / "b", tmp_path / "sources") == first
    assert not any((tmp_path / "sources").iterdir())  # nothing downloaded for these
