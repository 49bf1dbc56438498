"""Data splits: one stratified splitter for --validate, the scratch training and the benchmark;
the user's own train/, val/, test/ folders."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from recommender.data.dataset import load_dataset
from recommender.data.splits import (
    find_split_folders,
    split_dataset,
    split_from_folders,
    stratified_split,
)
from recommender.errors import DatasetError

# --- splits ------------------------------------------------------------------------------------

def test_three_way_split_is_stratified_disjoint_complete_and_seeded():
    codes = np.repeat(np.arange(4), [50, 20, 5, 3])
    train, test, val = stratified_split(codes, (0.2, 0.2), seed=0)
    assert np.intersect1d(train, val).size == np.intersect1d(train, test).size == 0
    assert np.intersect1d(val, test).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, val, test])), np.arange(codes.size))
    for cls, n in enumerate([50, 20, 5, 3]):
        counts = [int((codes[part] == cls).sum()) for part in (train, val, test)]
        assert counts[1] >= 1 and counts[2] >= 1 and counts[0] >= 1
        if n == 50:
            assert counts == [30, 10, 10]
    again = stratified_split(codes, (0.2, 0.2), seed=0)
    other = stratified_split(codes, (0.2, 0.2), seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(again, (train, test, val)))
    assert not np.array_equal(other[2], test)


def test_too_few_images_per_class_is_a_data_error(tmp_path):
    samples = [(tmp_path / f"{i}.png", i % 2) for i in range(5)]  # class 1 has 2 images
    with pytest.raises(DatasetError, match="at least 3 images per class"):
        split_dataset(samples, ("a", "b"), seed=0)


def _copy_classes(sample_dir, target, classes, per_class, offset=0):
    for name in classes:
        (target / name).mkdir(parents=True)
        for path in sorted((sample_dir / name).iterdir())[offset:offset + per_class]:
            shutil.copy(path, target / name / path.name)


def test_split_folders_are_detected_and_used(sample_dir, tmp_path):
    classes = sorted(p.name for p in sample_dir.iterdir() if p.is_dir())[:3]
    _copy_classes(sample_dir, tmp_path / "train", classes, 8)
    _copy_classes(sample_dir, tmp_path / "test", classes, 4, offset=8)
    layout = find_split_folders(tmp_path)
    assert set(layout) == {"train", "test"}
    assert find_split_folders(sample_dir) is None
    parts = {role: load_dataset(folder) for role, folder in layout.items()}
    split = split_from_folders(parts, seed=0)
    assert split.source == "folders" and split.test.size == 12
    assert split.val.size == 6 and split.train.size == 18  # a quarter of train held out
    test_paths = {split.samples[i][0] for i in split.test}
    assert all(p.parent.parent.name == "test" for p in test_paths)


def test_split_folders_with_other_classes_are_a_data_error(sample_dir, tmp_path):
    classes = sorted(p.name for p in sample_dir.iterdir() if p.is_dir())[:3]
    _copy_classes(sample_dir, tmp_path / "train", classes, 4)
    _copy_classes(sample_dir, tmp_path / "test", classes[:2], 4)
    parts = {role: load_dataset(folder) for role, folder in
             find_split_folders(tmp_path).items()}
    with pytest.raises(DatasetError, match="class folders"):
        split_from_folders(parts, seed=0)


def test_split_holds_out_a_quarter_of_every_class_and_keeps_one_to_train():
    codes = np.repeat([0, 1, 2], [20, 8, 2])
    train_idx, test_idx = stratified_split(codes, (0.25,), seed=0)
    assert np.bincount(codes[test_idx]).tolist() == [5, 2, 1]
    assert np.bincount(codes[train_idx]).tolist() == [15, 6, 1]
    assert not set(train_idx) & set(test_idx)


def test_split_depends_on_the_seed_only():
    codes = np.repeat([0, 1], 12)
    held_out = [stratified_split(codes, (0.25,), seed)[1] for seed in (3, 3, 4)]
    assert np.array_equal(held_out[0], held_out[1])
    assert not np.array_equal(held_out[0], held_out[2])


