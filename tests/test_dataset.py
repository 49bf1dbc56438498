"""Specification of recommender.data.dataset.load_dataset: what is kept, what is left out, why."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import recommender.data.dataset as dataset_module
from recommender.data.dataset import Dataset, SkippedFile, load_dataset
from recommender.errors import DatasetError, UsageError

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "fashion-mnist-sample"


# --- building datasets in tmp_path ---------------------------------------------------------


def _png(path: Path, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (value % 256, 0, 0)).save(path)
    return path


def _folder(root: Path, counts: dict[str, int]) -> Path:
    """An ImageFolder with ``counts[name]`` small PNGs in each class folder."""
    for name, count in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            _png(root / name / f"{i:03d}.png", i)
    return root


def _corrupt(path: Path) -> Path:
    """A PNG cut in half."""
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _csv(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(text, encoding=encoding)
    return path


def _rel_samples(dataset: Dataset) -> list[tuple[str, str]]:
    return [
        (path.relative_to(dataset.root).as_posix(), dataset.classes[index])
        for path, index in dataset.samples
    ]


def _reasons(dataset: Dataset) -> dict[str, str]:
    return {skipped.path: skipped.reason for skipped in dataset.skipped}


def _snapshot(root: Path) -> dict[str, tuple[int, int] | None]:
    """Every file and folder under root: (size, mtime_ns) for files, None for folders."""
    entries: dict[str, tuple[int, int] | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            entries[os.path.relpath(os.path.join(dirpath, name), root)] = None
        for name in filenames:
            stat = os.stat(os.path.join(dirpath, name))
            entries[os.path.relpath(os.path.join(dirpath, name), root)] = (
                stat.st_size,
                stat.st_mtime_ns,
            )
    return entries


def _symlink(link: Path, target: Path) -> None:
    try:
        link.symlink_to(target)
    except (OSError, NotImplementedError):
        pytest.skip("symbolic links are not available here")


# --- ImageFolder layout ---------------------------------------------------------------------


def test_classes_are_the_sorted_sub_folder_names(tmp_path):
    _folder(tmp_path, {"zebra": 2, "Apple": 2, "mango": 2})

    assert load_dataset(tmp_path).classes == ("Apple", "mango", "zebra")


def test_samples_are_absolute_paths_sorted_by_class_then_path(tmp_path):
    _folder(tmp_path, {"b": 2, "a": 3})

    dataset = load_dataset(tmp_path)

    assert all(path.is_absolute() for path, _ in dataset.samples)
    assert _rel_samples(dataset) == [
        ("a/000.png", "a"),
        ("a/001.png", "a"),
        ("a/002.png", "a"),
        ("b/000.png", "b"),
        ("b/001.png", "b"),
    ]


def test_images_in_nested_folders_belong_to_their_top_level_class(tmp_path):
    _folder(tmp_path, {"a": 2})
    _png(tmp_path / "b" / "x" / "deep" / "1.png")
    _png(tmp_path / "b" / "y" / "2.png")

    dataset = load_dataset(tmp_path)

    assert ("b/x/deep/1.png", "b") in _rel_samples(dataset)
    assert ("b/y/2.png", "b") in _rel_samples(dataset)
    assert dataset.class_counts() == {"a": 2, "b": 2}


def test_image_extensions_match_in_any_case(tmp_path):
    _folder(tmp_path, {"a": 2})
    _png(tmp_path / "b" / "one.PNG")
    Image.new("RGB", (4, 4)).save(tmp_path / "b" / "two.JPeG", format="JPEG")

    assert load_dataset(tmp_path).class_counts() == {"a": 2, "b": 2}


def test_hidden_files_and_folders_are_ignored_not_listed(tmp_path):
    _folder(tmp_path, {"a": 2, "b": 2})
    _png(tmp_path / ".hidden_class" / "1.png")
    _png(tmp_path / "a" / ".thumbnail.png")
    _png(tmp_path / "a" / ".cache" / "1.png")
    (tmp_path / ".DS_Store").write_bytes(b"\0\0")

    dataset = load_dataset(tmp_path)

    assert dataset.classes == ("a", "b")
    assert dataset.class_counts() == {"a": 2, "b": 2}
    assert dataset.skipped == ()


def test_file_with_a_non_image_extension_is_skipped_with_its_extension(tmp_path):
    _folder(tmp_path, {"a": 2, "b": 2})
    (tmp_path / "a" / "notes.txt").write_text("hello")

    assert _reasons(load_dataset(tmp_path)) == {
        "a/notes.txt": "not an image file: unsupported extension .txt"
    }


def test_file_directly_in_the_root_is_skipped_as_not_in_a_class_folder(tmp_path):
    _folder(tmp_path, {"a": 2, "b": 2})
    _png(tmp_path / "stray.png")

    assert _reasons(load_dataset(tmp_path)) == {"stray.png": "not inside a class folder"}


def test_unreadable_files_are_skipped_with_a_reason_each_and_counted(tmp_path, monkeypatch):
    _folder(tmp_path, {"a": 2, "b": 2})
    (tmp_path / "a" / "empty.png").write_bytes(b"")
    _corrupt(tmp_path / "a" / "cut.png")
    jpeg = tmp_path / "b" / "full.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), np.uint8)).save(jpeg)
    (tmp_path / "b" / "cut.jpg").write_bytes(jpeg.read_bytes()[:300])
    jpeg.unlink()
    (tmp_path / "b" / "text.jpg").write_text("not a picture")
    Image.new("RGB", (30, 30)).save(tmp_path / "b" / "bomb.png")
    Image.new("RGB", (400, 1)).save(tmp_path / "b" / "long.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)

    dataset = load_dataset(tmp_path)

    reasons = _reasons(dataset)
    assert reasons.pop("b/long.png").startswith("aspect ratio 400:1")
    assert reasons == {
        "a/cut.png": "truncated or corrupt image",
        "a/empty.png": "empty file",
        "b/bomb.png": "over PIL's decompression-bomb limit (500 pixels)",
        "b/cut.jpg": "truncated or corrupt image",
        "b/text.jpg": "not an image",
    }
    assert dataset.class_counts() == {"a": 2, "b": 2}
    assert dataset.to_dict()["num_skipped"] == 6


def test_skipped_files_are_sorted_by_path(tmp_path):
    _folder(tmp_path, {"a": 2, "b": 2})
    (tmp_path / "b" / "z.txt").write_text("")
    (tmp_path / "b" / "e.png").write_bytes(b"")
    (tmp_path / "a" / "y.txt").write_text("")
    (tmp_path / "root.txt").write_text("")

    paths = [skipped.path for skipped in load_dataset(tmp_path).skipped]

    assert paths == ["a/y.txt", "b/e.png", "b/z.txt", "root.txt"]


def test_class_left_with_one_usable_image_is_dropped_with_a_warning(tmp_path):
    _folder(tmp_path, {"a": 2, "b": 2, "c": 1})
    _corrupt(tmp_path / "c" / "bad.png")

    dataset = load_dataset(tmp_path)

    assert dataset.classes == ("a", "b")
    assert dataset.dropped_classes == ("c",)
    assert len(dataset.warnings) == 1 and "'c'" in dataset.warnings[0]
    assert "c/bad.png" in _reasons(dataset)


def test_class_folder_without_images_is_dropped(tmp_path):
    _folder(tmp_path, {"a": 2, "b": 2})
    (tmp_path / "empty_class").mkdir()

    dataset = load_dataset(tmp_path)

    assert dataset.dropped_classes == ("empty_class",)
    assert dataset.classes == ("a", "b")


def test_class_indices_count_only_the_classes_kept(tmp_path):
    _folder(tmp_path, {"a": 1, "b": 2, "c": 2})

    dataset = load_dataset(tmp_path)

    assert sorted({index for _, index in dataset.samples}) == [0, 1]
    assert dataset.classes[dataset.samples[0][1]] == "b"


def test_result_does_not_depend_on_the_number_of_workers(tmp_path):
    _folder(tmp_path, {"a": 7, "b": 5, "c": 1})
    _corrupt(tmp_path / "a" / "bad.png")
    (tmp_path / "b" / "empty.jpg").write_bytes(b"")

    assert load_dataset(tmp_path, workers=1) == load_dataset(tmp_path, workers=4)


# --- symbolic links -----------------------------------------------------------------------


def _outside_folder(tmp_path: Path) -> Path:
    """A folder of images next to the dataset root, not inside it."""
    return _folder(tmp_path / "outside", {"x": 2})


def _walked_dirs(monkeypatch) -> list[str]:
    """Every folder that os.walk lists from now on, resolved."""
    walked: list[str] = []
    walk = os.walk

    def recording_walk(top, *args, **kwargs):
        for dirpath, dirnames, filenames in walk(top, *args, **kwargs):
            walked.append(os.path.realpath(dirpath))
            yield dirpath, dirnames, filenames

    monkeypatch.setattr(os, "walk", recording_walk)
    return walked


@pytest.mark.parametrize("target", ["outside folder", "filesystem root"])
def test_folder_link_leading_outside_the_root_is_skipped_not_walked(tmp_path, monkeypatch, target):
    root = _folder(tmp_path / "data", {"a": 2, "b": 2})
    _symlink(root / "a" / "more", _outside_folder(tmp_path) if target != "filesystem root"
             else Path(tmp_path.anchor))
    walked = _walked_dirs(monkeypatch)

    dataset = load_dataset(root)

    assert _reasons(dataset) == {"a/more": "symbolic link leading outside the dataset root"}
    assert dataset.class_counts() == {"a": 2, "b": 2}
    assert all(Path(folder).is_relative_to(root.resolve()) for folder in walked)


def test_class_folder_link_leading_outside_the_root_is_skipped(tmp_path):
    root = _folder(tmp_path / "data", {"a": 2, "b": 2})
    _symlink(root / "c", _outside_folder(tmp_path) / "x")

    dataset = load_dataset(root)

    assert _reasons(dataset) == {"c": "symbolic link leading outside the dataset root"}
    assert dataset.classes == ("a", "b")


def test_file_link_leading_outside_the_root_is_skipped_not_read(tmp_path, monkeypatch):
    root = _folder(tmp_path / "data", {"a": 2, "b": 2})
    _symlink(root / "a" / "link.png", _png(tmp_path / "outside.png"))
    opened: list[Path] = []
    monkeypatch.setattr(dataset_module, "open_rgb",
                        lambda path: opened.append(Path(path)) or Image.new("RGB", (1, 1)))

    dataset = load_dataset(root)

    assert _reasons(dataset) == {"a/link.png": "symbolic link leading outside the dataset root"}
    assert root / "a" / "link.png" not in opened and len(opened) == 4


def test_links_that_stay_inside_the_root_are_followed(tmp_path):
    root = _folder(tmp_path / "data", {"a": 2, "b": 2})
    _symlink(root / "a" / "alias.png", root / "b" / "000.png")
    _symlink(root / "b" / "from_a", root / "a")

    dataset = load_dataset(root)

    assert dataset.skipped == ()
    assert ("a/alias.png", "a") in _rel_samples(dataset)
    assert ("b/from_a/000.png", "b") in _rel_samples(dataset)


def test_folder_link_loop_is_walked_once(tmp_path):
    root = _folder(tmp_path / "data", {"a": 2, "b": 2})
    _symlink(root / "a" / "again", root / "a")

    assert load_dataset(root).class_counts() == {"a": 2, "b": 2}


# --- names that are not UTF-8 or not printable ----------------------------------------------


def test_names_with_undecodable_bytes_and_escapes_are_kept_exactly_in_the_json(tmp_path):
    root = _folder(tmp_path / "data", {"a": 2})
    odd_class = os.fsdecode(b"caf\xff \x1b[31mred")
    try:
        _folder(root, {odd_class: 2})
        (root / "a" / os.fsdecode(b"\x1b[2Jnote\xff.txt")).write_text("")
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system does not take such names")

    doc = load_dataset(root).to_dict()

    assert odd_class in doc["classes"]
    assert json.loads(json.dumps(doc)) == doc
    assert "\\udcff" in json.dumps(doc)


def test_max_per_class_draw_works_for_a_class_name_that_is_not_utf8(tmp_path):
    root = _folder(tmp_path / "data", {"a": 3})
    try:
        _folder(root, {os.fsdecode(b"\xff"): 3})
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system does not take such names")

    assert sum(load_dataset(root, max_per_class=2).class_counts().values()) == 4


# --- unusable datasets --------------------------------------------------------------------


def test_missing_path_is_a_dataset_error_naming_it(tmp_path):
    with pytest.raises(DatasetError, match="not found") as caught:
        load_dataset(tmp_path / "nowhere")

    assert str(tmp_path / "nowhere") in caught.value.message


def test_file_instead_of_a_folder_is_a_dataset_error(tmp_path):
    path = _png(tmp_path / "one.png")

    with pytest.raises(DatasetError, match="is a file, not a folder"):
        load_dataset(path)


def test_folder_of_loose_files_says_what_was_found_and_what_to_do(tmp_path):
    for i in range(3):
        _png(tmp_path / f"{i}.png")

    with pytest.raises(DatasetError) as caught:
        load_dataset(tmp_path)

    assert "found 3 files and 0 sub-folders" in caught.value.message
    assert "--labels" in caught.value.hint and "sub-folder" in caught.value.hint


def test_empty_folder_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="found 0 files and 0 sub-folders"):
        load_dataset(tmp_path)


def test_class_folders_without_image_files_are_a_dataset_error(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "readme.txt").write_text("")

    with pytest.raises(DatasetError, match="No images in the 2 class folders"):
        load_dataset(tmp_path)


def test_only_one_class_left_is_a_dataset_error_with_the_counts(tmp_path):
    _folder(tmp_path, {"a": 3, "b": 1})
    _corrupt(tmp_path / "b" / "bad.png")

    with pytest.raises(DatasetError) as caught:
        load_dataset(tmp_path)

    assert "a 3, b 1" in caught.value.message
    assert "b/bad.png: truncated or corrupt image" in caught.value.message
    assert caught.value.exit_code == 3


# --- labels file ----------------------------------------------------------------------------


def test_labels_csv_gives_classes_from_the_label_column(tmp_path):
    for name in ("p", "q", "r", "s"):
        _png(tmp_path / "img" / f"{name}.png")
    labels = _csv(
        tmp_path / "labels.csv",
        "id,path,label\n1,img/p.png,dog\n2,img/q.png,cat\n3,img/r.png,dog\n4,img/s.png,cat\n",
    )

    dataset = load_dataset(tmp_path, labels_csv=labels)

    assert dataset.classes == ("cat", "dog")
    assert _rel_samples(dataset) == [
        ("img/q.png", "cat"),
        ("img/s.png", "cat"),
        ("img/p.png", "dog"),
        ("img/r.png", "dog"),
    ]
    assert dataset.source == str(labels)


def test_labels_csv_with_a_byte_order_mark_is_read(tmp_path):
    for name in ("p", "q", "r", "s"):
        _png(tmp_path / f"{name}.png")
    labels = _csv(
        tmp_path / "labels.csv",
        "path,label\np.png,x\nq.png,x\nr.png,y\ns.png,y\n",
        encoding="utf-8-sig",
    )

    assert load_dataset(tmp_path, labels_csv=labels).classes == ("x", "y")


def test_labels_csv_path_is_relative_to_the_root_not_the_csv(tmp_path):
    root = _folder(tmp_path / "data", {"a": 2, "b": 2})
    labels = _csv(
        tmp_path / "labels.csv", "path,label\na/000.png,x\na/001.png,x\nb/000.png,y\nb/001.png,y\n"
    )

    dataset = load_dataset(root, labels_csv=labels)

    assert dataset.class_counts() == {"x": 2, "y": 2}
    assert dataset.samples[0][0] == root.resolve() / "a" / "000.png"


@pytest.mark.parametrize("escape", ["../outside.png", "a/../../outside.png"])
def test_labels_csv_path_leading_out_of_the_root_is_refused_and_named(tmp_path, escape):
    root = _folder(tmp_path / "data", {"a": 2, "b": 2})
    _png(tmp_path / "outside.png")
    labels = _csv(root / "labels.csv", f"path,label\na/000.png,a\n{escape},a\n")

    with pytest.raises(DatasetError) as caught:
        load_dataset(root, labels_csv=labels)

    assert f"line 3: the path {escape!r}" in caught.value.message
    assert "relative to the dataset root" in caught.value.hint


def test_labels_csv_absolute_path_is_refused(tmp_path):
    root = _folder(tmp_path / "data", {"a": 2, "b": 2})
    absolute = _png(tmp_path / "outside.png")
    labels = _csv(root / "labels.csv", f"path,label\n{absolute},a\n")

    with pytest.raises(DatasetError, match="is absolute") as caught:
        load_dataset(root, labels_csv=labels)

    assert str(absolute) in caught.value.message


def test_labels_csv_symlink_pointing_out_of_the_root_is_refused(tmp_path):
    root = _folder(tmp_path / "data", {"a": 2, "b": 2})
    _symlink(root / "a" / "link.png", _png(tmp_path / "outside.png"))
    labels = _csv(root / "labels.csv", "path,label\na/000.png,a\na/link.png,a\n")

    with pytest.raises(DatasetError, match="leads outside the dataset root") as caught:
        load_dataset(root, labels_csv=labels)

    assert "'a/link.png'" in caught.value.message


def test_labels_csv_symlink_loop_is_skipped_not_an_internal_error(tmp_path):
    root = _folder(tmp_path / "data", {"a": 2, "b": 2})
    _symlink(root / "a" / "x.png", root / "a" / "y.png")
    _symlink(root / "a" / "y.png", root / "a" / "x.png")
    labels = _csv(tmp_path / "l.csv",
                  "path,label\na/000.png,a\na/001.png,a\nb/000.png,b\nb/001.png,b\na/x.png,a\n")

    assert list(_reasons(load_dataset(root, labels_csv=labels))) == ["a/x.png"]


@pytest.mark.parametrize("where", ["row", "header"])
def test_labels_csv_with_a_nul_byte_is_a_dataset_error_naming_the_line(tmp_path, where):
    root = _folder(tmp_path, {"a": 2, "b": 2})
    text = "path,label\na/000.png,a\na/0\x0001.png,a\n" if where == "row" else "pa\x00th,label\n"
    labels = _csv(tmp_path / "l.csv", text)

    with pytest.raises(DatasetError) as caught:
        load_dataset(root, labels_csv=labels)

    line = 3 if where == "row" else 1
    assert f"{labels} line {line} contains a NUL byte" in caught.value.message
    assert "UTF-8" in caught.value.hint


def test_labels_csv_dotdot_that_stays_inside_the_root_is_accepted(tmp_path):
    root = _folder(tmp_path, {"a": 2, "b": 2})
    labels = _csv(
        tmp_path / "l.csv", "path,label\nb/../a/000.png,a\na/001.png,a\nb/000.png,b\nb/001.png,b\n"
    )

    assert ("a/000.png", "a") in _rel_samples(load_dataset(root, labels_csv=labels))


def test_labels_csv_without_a_label_column_names_the_columns_found(tmp_path):
    labels = _csv(tmp_path / "l.csv", "path,class\na.png,x\n")

    with pytest.raises(DatasetError) as caught:
        load_dataset(tmp_path, labels_csv=labels)

    assert str(labels) in caught.value.message
    assert "no label column" in caught.value.message
    assert "'path', 'class'" in caught.value.message


def test_labels_csv_listing_a_missing_file_skips_it_as_not_found(tmp_path):
    root = _folder(tmp_path, {"a": 2, "b": 2})
    labels = _csv(
        tmp_path / "l.csv",
        "path,label\na/000.png,a\na/001.png,a\nb/000.png,b\nb/001.png,b\ngone.png,b\n",
    )

    dataset = load_dataset(root, labels_csv=labels)

    assert _reasons(dataset) == {"gone.png": "file not found"}
    assert dataset.class_counts() == {"a": 2, "b": 2}


def test_labels_csv_duplicate_row_is_kept_once_and_listed_once(tmp_path):
    root = _folder(tmp_path, {"a": 2, "b": 2})
    labels = _csv(
        tmp_path / "l.csv",
        "path,label\na/000.png,a\na/001.png,a\nb/000.png,b\nb/001.png,b\na/000.png,a\n",
    )

    dataset = load_dataset(root, labels_csv=labels)

    assert dataset.class_counts() == {"a": 2, "b": 2}
    assert [skipped.path for skipped in dataset.skipped] == ["a/000.png"]
    assert "duplicate row" in dataset.skipped[0].reason


def test_labels_csv_corrupt_file_is_skipped_like_in_a_folder(tmp_path):
    root = _folder(tmp_path, {"a": 2, "b": 2})
    _corrupt(root / "a" / "bad.png")
    labels = _csv(
        tmp_path / "l.csv",
        "path,label\na/000.png,a\na/001.png,a\na/bad.png,a\nb/000.png,b\nb/001.png,b\n",
    )

    assert _reasons(load_dataset(root, labels_csv=labels)) == {
        "a/bad.png": "truncated or corrupt image"
    }


def test_missing_labels_csv_is_a_dataset_error_naming_it(tmp_path):
    _folder(tmp_path, {"a": 2, "b": 2})

    with pytest.raises(DatasetError, match="Labels file not found") as caught:
        load_dataset(tmp_path, labels_csv=tmp_path / "nope.csv")

    assert "nope.csv" in caught.value.message


def test_labels_csv_with_only_a_header_is_a_dataset_error(tmp_path):
    labels = _csv(tmp_path / "l.csv", "path,label\n")

    with pytest.raises(DatasetError, match="lists no images"):
        load_dataset(tmp_path, labels_csv=labels)


# --- --max-per-class and --seed -------------------------------------------------------------


def test_max_per_class_keeps_at_most_that_many_images_per_class(tmp_path):
    _folder(tmp_path, {"a": 10, "b": 3})

    dataset = load_dataset(tmp_path, max_per_class=4, seed=0)

    assert dataset.class_counts() == {"a": 4, "b": 3}
    assert dataset.to_dict()["max_per_class"] == 4


def test_max_per_class_draw_is_the_same_for_the_same_seed(tmp_path):
    _folder(tmp_path, {"a": 20, "b": 20})

    first = load_dataset(tmp_path, max_per_class=5, seed=7)
    again = load_dataset(tmp_path, max_per_class=5, seed=7, workers=1)

    assert first.samples == again.samples


def test_max_per_class_draw_changes_with_the_seed(tmp_path):
    _folder(tmp_path, {"a": 20, "b": 20})

    draws = {load_dataset(tmp_path, max_per_class=5, seed=seed).samples for seed in range(3)}

    assert len(draws) == 3


def test_corrupt_files_do_not_reduce_the_max_per_class_count(tmp_path):
    _folder(tmp_path, {"a": 6, "b": 6})
    for i in range(6):
        _corrupt(tmp_path / "a" / f"bad{i}.png")

    dataset = load_dataset(tmp_path, max_per_class=5, seed=0)

    assert dataset.class_counts() == {"a": 5, "b": 5}
    assert all(reason == "truncated or corrupt image" for reason in _reasons(dataset).values())


def test_max_per_class_decodes_only_what_it_needs(tmp_path, monkeypatch):
    _folder(tmp_path, {"a": 30, "b": 30})
    opened: list[Path] = []
    real_open_rgb = dataset_module.open_rgb

    def counting_open_rgb(path):
        opened.append(path)
        return real_open_rgb(path)

    monkeypatch.setattr(dataset_module, "open_rgb", counting_open_rgb)

    load_dataset(tmp_path, max_per_class=3, seed=0)

    assert len(opened) == 6


@pytest.mark.parametrize("bad", [0, 1, -3, 2.5, True])
def test_max_per_class_below_two_or_not_a_whole_number_is_a_usage_error(tmp_path, bad):
    _folder(tmp_path, {"a": 2, "b": 2})

    with pytest.raises(UsageError, match="--max-per-class"):
        load_dataset(tmp_path, max_per_class=bad)


def test_negative_seed_is_a_usage_error(tmp_path):
    _folder(tmp_path, {"a": 2, "b": 2})

    with pytest.raises(UsageError, match="--seed"):
        load_dataset(tmp_path, max_per_class=2, seed=-1)


# --- the report's view, the bundled sample, and the no-write guarantee ------------------------


def test_to_dict_is_json_ready_and_matches_the_dataset(tmp_path):
    _folder(tmp_path, {"a": 3, "b": 2, "c": 1})
    (tmp_path / "a" / "x.txt").write_text("")

    record = json.loads(json.dumps(load_dataset(tmp_path, seed=3).to_dict()))

    assert record == {
        "root": str(tmp_path.resolve()),
        "source": "folder",
        "num_images": 5,
        "num_classes": 2,
        "classes": ["a", "b"],
        "class_counts": {"a": 3, "b": 2},
        "skipped": [{"path": "a/x.txt", "reason": "not an image file: unsupported extension .txt"}],
        "num_skipped": 1,
        "dropped_classes": ["c"],
        "warnings": ["Class 'c' dropped: 1 image usable (at least 2 needed)."],
        "max_per_class": None,
        "seed": 3,
    }


def test_skipped_file_is_a_frozen_record():
    skipped = SkippedFile("a/b.png", "empty file")

    with pytest.raises(AttributeError):
        skipped.reason = "other"  # type: ignore[misc]


def test_bundled_fashion_mnist_sample_has_ten_classes_of_twenty():
    dataset = load_dataset(SAMPLE)

    assert len(dataset.classes) == 10
    assert set(dataset.class_counts().values()) == {20}
    assert dataset.skipped == () and dataset.warnings == ()


def test_loading_writes_nothing_into_the_dataset_folder(tmp_path, monkeypatch):
    root = _folder(tmp_path / "data", {"a": 3, "b": 3, "c": 1})
    (root / "a" / "empty.png").write_bytes(b"")
    _corrupt(root / "b" / "cut.png")
    (root / "b" / "text.jpg").write_text("not a picture")
    (root / "b" / "notes.txt").write_text("notes")
    _png(root / ".hidden" / "x.png")
    Image.new("RGB", (30, 30)).save(root / "a" / "bomb.png")
    labels = _csv(root / "labels.csv", "path,label\na/000.png,a\na/001.png,a\nb/cut.png,b\n")
    labels.write_text(labels.read_text() + "b/000.png,b\nb/001.png,b\nmissing.png,b\n")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
    before = _snapshot(root)

    load_dataset(root)
    load_dataset(root, labels_csv=labels, max_per_class=2, seed=1)

    assert _snapshot(root) == before


def test_decoding_on_threads_leaves_the_warning_filters_as_they_were(tmp_path, monkeypatch):
    _folder(tmp_path, {"a": 4, "b": 4})
    for i in range(8):
        Image.new("RGB", (30, 30)).save(tmp_path / "ab"[i % 2] / f"bomb{i}.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
    before = list(warnings.filters)

    dataset = load_dataset(tmp_path, workers=8)

    assert warnings.filters == before
    assert len(dataset.skipped) == 8
