"""benchmarks/datasets.py on three datasets that need no download (layout, counts,
train/test disjointness and byte-for-byte determinism), and the grouped sources (emoji, icons,
artwork) on small fake copies of their packages built here: classes, RGB on white, no group on
both sides of a split, determinism, class subsets and ``out_name``. Nothing is downloaded."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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
    pytest.importorskip("sklearn")
    pytest.importorskip("skimage")
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

    with Image.open(digits / "train" / "0" / "0000.png") as im:
        assert (im.mode, im.size) == ("L", (8, 8))
    with Image.open(tmp_path / "a" / "textures" / "test" / "grass" / "0000.png") as im:
        assert (im.mode, im.size) == ("L", (128, 128))
    with Image.open(tmp_path / "a" / "photos" / "train" / "cat" / "0000.png") as im:
        assert (im.mode, im.size) == ("RGB", (96, 96))

    assert _build(tmp_path / "b", tmp_path / "sources") == first
    assert not any((tmp_path / "sources").iterdir())  # nothing downloaded for these


# --- grouped sources on fake packages -----------------------------------------------------

def _png(colour: int, size: tuple[int, int] = (64, 64), side: int = 24) -> bytes:
    """A transparent canvas with an opaque square in the middle whose colour encodes
    ``colour`` (red = colour % 250, green = colour // 250), so an output image says which
    source image it came from."""
    rgba = np.zeros((size[1], size[0], 4), np.uint8)
    y, x = (size[1] - side) // 2, (size[0] - side) // 2
    rgba[y:y + side, x:x + side] = (colour % 250, colour // 250, 7, 255)
    buf = io.BytesIO()
    Image.fromarray(rgba).save(buf, format="PNG")
    return buf.getvalue()


def _colour(image: np.ndarray) -> int:
    r, g, _ = (int(v) for v in image[image.shape[0] // 2, image.shape[1] // 2])
    return r + 250 * g


def _no_downloads(module, monkeypatch) -> None:
    def refuse(cmd, cwd=None):
        raise AssertionError(f"the test tried to run {cmd}")
    monkeypatch.setattr(module, "_run", refuse)


def _fake_emoji(sources: Path) -> dict[int, int]:
    """The two emoji-datasource .tgz files, with 20 smileys, 21 mammals, 3 birds and 20
    people (every fourth with two skin tones), a Component and one emoji that only Google has;
    returns image colour -> base emoji (its place in emoji order)."""
    subs = ([("Smileys & Emotion", "face-smiling")] * 20 + [("Animals & Nature", "animal-mammal")]
            * 21 + [("Animals & Nature", "animal-bird")] * 3 + [("People & Body", "person")] * 20)
    meta, base_of, colour = [], {}, 0
    for i, (cat, sub) in enumerate(subs):
        entry = {"image": f"e{i}.png", "category": cat, "subcategory": sub, "sort_order": i,
                 "has_img_google": True, "has_img_twitter": i != 5}
        if sub == "person" and i % 4 == 0:
            entry["skin_variations"] = {
                tone: {"image": f"e{i}-{tone}.png", "has_img_google": True,
                       "has_img_twitter": True} for tone in ("1F3FB", "1F3FF")}
        meta.append(entry)
    meta.append({"image": "c.png", "category": "Component", "subcategory": "skin-tone",
                 "sort_order": 999, "has_img_google": True, "has_img_twitter": True})
    meta.reverse()  # the loader orders by sort_order, not by file order
    for vendor in ("google", "twitter"):
        files = {"package/emoji.json": json.dumps(meta).encode()}
        for entry in meta:
            variants = [entry, *entry.get("skin_variations", {}).values()]
            for variant in variants:
                colour += 1
                files[f"package/img/{vendor}/64/{variant['image']}"] = _png(colour)
                if entry["category"] != "Component":
                    base_of[colour] = entry["sort_order"]
        with tarfile.open(sources / f"emoji-datasource-{vendor}-16.0.0.tgz", "w:gz") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return base_of


def _read(folder: Path) -> dict[str, dict[str, list[np.ndarray]]]:
    """split -> class -> images of a built dataset."""
    return {split.name: {cls.name: [np.asarray(Image.open(p)) for p in sorted(cls.iterdir())]
                         for cls in sorted(split.iterdir())}
            for split in sorted(folder.iterdir())}


def test_emoji_classes_rgb_on_white_and_groups(tmp_path, monkeypatch):
    mod = _builder()
    _no_downloads(mod, monkeypatch)
    sources = tmp_path / "sources"
    sources.mkdir()
    base_of = _fake_emoji(sources)

    emoji = mod.load("emoji", sources, 0, None)
    assert emoji.classes == ["smileys", "people", "animals", "food", "travel", "activities",
                             "objects", "symbols", "flags"]
    images, labels = emoji.pools["all"]
    groups = emoji.groups["all"]
    assert images.shape[1:] == (64, 64, 3) and images.dtype == np.uint8
    assert (images[:, 0, 0] == 255).all()  # transparent corners composited on white
    # 20 + 21 + 3 + 20 base emoji, both vendors but one (no Twemoji), 5 x 2 skin tones each
    assert len(labels) == 2 * 64 - 1 + 2 * 5 * 2 and len(np.unique(groups)) == 64
    assert np.bincount(labels, minlength=9).tolist() == [39, 60, 48, 0, 0, 0, 0, 0, 0]
    for image, group in zip(images, groups):
        assert base_of[_colour(image)] == group  # a group is one base emoji
    assert mod.load("emoji", sources, 0, None) is emoji  # loaded once per process

    sub = mod.load("emoji-sub", sources, 0, None)
    assert sub.classes == ["face-smiling", "animal-mammal", "person"]  # birds: 3 < 20


def test_grouped_build_disjoint_deterministic_subset(tmp_path, monkeypatch, capsys):
    mod = _builder()
    _no_downloads(mod, monkeypatch)
    sources = tmp_path / "sources"
    sources.mkdir()
    base_of = _fake_emoji(sources)

    def built(out: Path, **kwargs) -> dict[str, bytes]:
        mod.build("emoji-sub", out, sources, 6, 4, 3, **kwargs)
        return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.png"))}

    first = built(tmp_path / "a")
    assert built(tmp_path / "b") == first
    splits = _read(tmp_path / "a" / "emoji-sub")
    for cls in ("face-smiling", "animal-mammal", "person"):
        train = [base_of[_colour(im)] for im in splits["train"][cls]]
        test = [base_of[_colour(im)] for im in splits["test"][cls]]
        assert (len(train), len(test)) == (6, 4)
        assert not set(train) & set(test)
        assert len(set(train)) == 6 and len(set(test)) == 4  # one image per group first
        assert splits["train"][cls][0].shape == (64, 64, 3)

    mod.build("emoji", tmp_path / "c", sources, 3, 2, 0, classes=["animals", "smileys"],
              out_name="task-1")
    assert sorted(p.name for p in (tmp_path / "c" / "task-1" / "train").iterdir()) == [
        "animals", "smileys"]
    assert not (tmp_path / "c" / "emoji").exists()
    animals = _read(tmp_path / "c" / "task-1")["train"]["animals"]
    assert {base_of[_colour(im)] for im in animals} <= set(range(20, 44))
    with pytest.raises(ValueError, match="'planets'.*smileys, people"):
        mod.build("emoji", tmp_path / "c", sources, 3, 2, 0, classes=["planets"])
    with pytest.raises(ValueError, match="plain folder name"):
        mod.build("emoji", tmp_path / "c", sources, 3, 2, 0, out_name="../up")

    capsys.readouterr()
    mod.build("emoji", tmp_path / "d", sources, 30, 20, 0, classes=["smileys"])
    assert "class 'smileys' gives" in capsys.readouterr().out  # 39 images cannot give 50


def test_grouped_pick_keeps_groups_on_one_side():
    mod = _builder()
    groups = np.repeat(np.arange(12), [1, 5, 2, 2, 8, 1, 1, 3, 2, 2, 1, 4])
    members = np.arange(len(groups))
    for seed in range(20):
        picks = mod._grouped_pick(members, groups, 5, 3, np.random.default_rng(seed))
        train, test = groups[picks["train"]], groups[picks["test"]]
        assert (len(train), len(test)) == (5, 3)
        assert not set(train) & set(test)
        assert len(set(train)) == 5 and len(set(test)) == 3
    # few groups: a side takes several images of a group, and test still gets its share
    picks = mod._grouped_pick(members, np.arange(len(groups)) // 8, 10, 6,
                              np.random.default_rng(0))
    assert (len(picks["train"]), len(picks["test"])) == (10, 6)
    assert not set(picks["train"] // 8) & set(picks["test"] // 8)
    # a flat build (m = 0) spreads over the groups; one group cannot be split
    flat = mod._grouped_pick(members, groups, 12, 0, np.random.default_rng(0))
    assert len(set(groups[flat["train"]])) == 12 and len(flat["test"]) == 0
    one = mod._grouped_pick(np.arange(4), np.zeros(4, int), 2, 2, np.random.default_rng(0))
    assert (len(one["train"]), len(one["test"])) == (2, 0)


def _unpacked(sources: Path, package: str, prefix: str, files: dict[str, bytes]) -> None:
    """A Debian package as _deb_tree leaves it after unpacking (no .deb needed)."""
    folder = sources / package / prefix
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    (folder / ".complete").write_text(f"{len(files)}\n")


def test_icons_contexts_sizes_and_groups(tmp_path, monkeypatch):
    mod = _builder()
    _no_downloads(mod, monkeypatch)
    files = {f"{context}/{context}-{i}.png": _png(100 * c + i)
             for c, (context, count) in enumerate([("apps", 20), ("emblems", 3), ("places", 25)])
             for i in range(count)}
    files["apps/small.png"] = _png(999, (22, 22), 10)  # filed under 64x64 but 22 px: left out
    files["apps/nested/deeper.png"] = _png(998)
    _unpacked(tmp_path, mod.ICONS_PACKAGE, mod.ICONS_PREFIX, files)

    icons = mod.load("icons", tmp_path, 0, None)
    assert icons.classes == ["apps", "places"]  # emblems: 3 < 20 icons
    images, labels = icons.pools["all"]
    assert images.shape == (45, 64, 64, 3) and (images[:, 0, 0] == 255).all()
    assert np.bincount(labels).tolist() == [20, 25]
    assert len(np.unique(icons.groups["all"])) == 45  # one group per icon file
    mod.build("icons", tmp_path / "out", tmp_path, 8, 4, 1)
    splits = _read(tmp_path / "out" / "icons")
    for cls in icons.classes:
        train = {_colour(im) for im in splits["train"][cls]}
        assert len(train) == 8 and not train & {_colour(im) for im in splits["test"][cls]}


def test_artwork_units_lines_and_shared_frames(tmp_path, monkeypatch):
    mod = _builder()
    _no_downloads(mod, monkeypatch)
    sprite = {"size": (72, 72), "side": 30}
    files = {}
    for i, unit in enumerate(["burner", "fighter", "glider", "sky-drake", "clasher", "flare"]):
        for j, frame in enumerate(["", "-attack-1", "-defend", "+female"]):
            files[f"drakes/{unit}{frame}.png"] = _png(10 * i + j, **sprite)
    files["drakes/burner-flame1.png"] = _png(400, (72, 72), 3)  # an effect: under 3 % opaque
    files["drakes/inferno.png"] = _png(500, (150, 150), 60)  # large: shrunk to 72 px
    for i, unit in enumerate(["archer", "captain", "druid", "hero", "lord"]):
        files[f"elves/{unit}.png"] = _png(100 + i, **sprite)
        files[f"elves/{unit}-bow.png"] = _png(110 + i, **sprite)
    files["elves/scout/scout.png"] = _png(120, **sprite)  # a unit line in its own folder:
    files["elves/scout/rider.png"] = _png(121, **sprite)  # one group
    files["elves/shyde.png"] = _png(130, **sprite)
    files["elves/sylph.png"] = _png(130, **sprite)  # the same pixels: joined to shyde
    files["drakes/shared.png"] = _png(140, **sprite)  # the same pixels in two races:
    files["elves/shared.png"] = _png(140, **sprite)  # left out of both
    files["ogres/ogre.png"] = _png(150, **sprite)  # one unit: not a class
    _unpacked(tmp_path, mod.ARTWORK_PACKAGE, mod.ARTWORK_PREFIX, files)

    art = mod.load("artwork", tmp_path, 0, None)
    assert art.classes == ["drakes", "elves"]
    images, labels = art.pools["all"]
    groups = art.groups["all"]
    assert images.shape[1:] == (72, 72, 3) and (images[:, 0, 0] == 255).all()
    colours = [_colour(im) for im in images]
    assert 400 not in colours and 140 not in colours and 150 not in colours
    group_of = dict(zip(colours, groups))
    assert len({group_of[c] for c in (0, 1, 2, 3)}) == 1  # burner, its frames, +female
    assert group_of[120] == group_of[121]
    assert colours.count(130) == 2 and len({g for c, g in zip(colours, groups) if c == 130}) == 1
    assert np.bincount(labels).tolist() == [25, 14]
    assert [len(set(groups[labels == c])) for c in (0, 1)] == [7, 7]
    mod.build("artwork", tmp_path / "out", tmp_path, 4, 3, 2)
    splits = _read(tmp_path / "out" / "artwork")
    for cls in art.classes:
        train = {group_of[_colour(im)] for im in splits["train"][cls]}
        test = {group_of[_colour(im)] for im in splits["test"][cls]}
        assert len(train) == 4 and len(test) == 3 and not train & test
