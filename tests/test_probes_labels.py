"""Labels of any hashable values become class codes 0..C-1, whatever their order."""

from __future__ import annotations

import numpy as np
import pytest

from probes import ProbeError
from probes._checks import encode_labels


def _object_array(values: list) -> np.ndarray:
    return np.fromiter(values, dtype=object, count=len(values))


def test_sortable_labels_keep_numpy_unique_order():
    codes, n_classes = encode_labels(np.array([7, -2, 7, 100]), 4)
    assert codes.tolist() == [1, 0, 1, 2] and n_classes == 3


def test_strings_are_codes_in_sorted_order():
    codes, _ = encode_labels(["pear", "apple", "pear"], 3)
    assert codes.tolist() == [1, 0, 1]


def test_a_list_of_tuples_is_one_label_per_tuple():
    codes, n_classes = encode_labels([("a", 1), ("b", 2), ("a", 1)], 3)
    assert codes.tolist() == [0, 1, 0] and n_classes == 2


def test_tuples_of_different_lengths_are_labels_too():
    codes, n_classes = encode_labels([(1,), (1, 2), (1,)], 3)
    assert codes.tolist() == [0, 1, 0] and n_classes == 2


def test_labels_of_mixed_types_are_classes():
    codes, n_classes = encode_labels([3, "three", (3,), "three"], 4)
    assert n_classes == 3 and codes[1] == codes[3] and len(set(codes[:3])) == 3


def test_numbers_and_their_strings_stay_different_classes():
    # np.asarray([1, "1"]) would make them equal strings.
    _, n_classes = encode_labels([1, "1", 1], 3)
    assert n_classes == 2


def test_codes_of_unsortable_labels_do_not_depend_on_sample_order():
    labels = _object_array(["b", 7, ("a", 0), 7, "b", ("a", 0)])
    codes, _ = encode_labels(labels, 6)
    order = np.array([5, 3, 1, 0, 2, 4])
    shuffled_codes, _ = encode_labels(labels[order], 6)
    assert shuffled_codes.tolist() == codes[order].tolist()


def test_labels_that_skip_values_count_only_the_classes_present():
    # A y.max() + 1 class count would give 101 classes here.
    _, n_classes = encode_labels(np.array([0, 100, 0, 100]), 4)
    assert n_classes == 2


@pytest.mark.parametrize(
    ("labels", "found"),
    [
        (np.array([0.0, 1.0, np.nan, 1.0]), r"labels: 1 label\(s\) are NaN or None"),
        ([1, "a", None, 2], r"labels: 1 label\(s\) are NaN or None .*position 2"),
        (_object_array([1.0, float("nan"), 2.0, 1.0]), r"labels: 1 label\(s\) are NaN"),
        ([[1, 2], 3, 4, 5], "labels: could not be read"),
        (_object_array([[1], [2], 3, 3]), "labels: label at position 0 is a list"),
    ],
    ids=["nan", "none", "nan-in-object-array", "ragged", "unhashable"],
)
def test_labels_that_cannot_name_classes_are_rejected(labels, found):
    with pytest.raises(ProbeError, match=found):
        encode_labels(labels, 4)


def test_one_hot_labels_are_rejected_with_a_hint():
    with pytest.raises(ProbeError, match="one-hot"):
        encode_labels([[0, 1], [1, 0]], 2)


def test_a_single_class_is_rejected():
    with pytest.raises(ProbeError, match="labels: found 1 class"):
        encode_labels(["a", "a", "a"], 3)
