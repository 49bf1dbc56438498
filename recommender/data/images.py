"""Open one image file as fully decoded 8-bit RGB, or say in a few words why not.

Every image the recommender uses goes through :func:`open_rgb`, at scan time (to
find unusable files before any model runs) and again when features are
extracted, so both see exactly the same pixels.
"""

from __future__ import annotations

import os
import threading
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from recommender.errors import DatasetError

# torchvision.datasets.folder.IMG_EXTENSIONS, lower-case.
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".ppm",
    ".bmp",
    ".pgm",
    ".tif",
    ".tiff",
    ".webp",
)

# Modes that PIL's ``convert("RGB")`` handles faithfully (8 bits per channel, or 1 bit).
_DIRECT_TO_RGB = frozenset({"RGB", "L", "1", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "P"})
# Modes with an alpha channel: go through RGBA so PIL neither warns nor guesses;
# the alpha is then dropped, as torchvision's ``pil_loader`` does.
_VIA_RGBA = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
# High bit-depth modes: PIL's convert clips them to 0..255 (16-bit images come out
# white), so their value range is stretched into 0..255 here instead.
_HIGH_DEPTH = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})

# Images are resized so that their shorter side meets a target, then centre-cropped: a
# long thin image grows into a huge one first (8000x1 at 256 px: 524 megapixels, 2 GB in
# PIL). The bound: no image may resize past MAX_RESIZED_PIXELS at RESIZE_TARGET px.
# RESIZE_TARGET is generous: nbtl resizes to a model's input over its crop fraction
# (224 / 0.875 = 256 for most, up to ~600 for the largest) and trains at --validate-size.
# 40 megapixels are 120 MB as 8-bit RGB: several decoding threads or processes fit in memory.
RESIZE_TARGET = 512
MAX_RESIZED_PIXELS = 40_000_000
MAX_ASPECT_RATIO = MAX_RESIZED_PIXELS / RESIZE_TARGET**2  # about 153:1

# ``warnings.catch_warnings`` swaps the process-wide filter list on entry and
# restores it on exit; two threads inside it at once can leave a filter behind.
# The lock serialises only ``Image.open`` (header parsing), not the decoding.
_OPEN_LOCK = threading.Lock()


class UnreadableImage(DatasetError):
    """An image file that cannot be used; ``reason`` says why in a few words.

    A :class:`~recommender.errors.DatasetError`, so one that escapes (a file
    changed after the scan) still ends the run with a clean message.
    """

    def __init__(self, reason: str, path: str | os.PathLike[str] | None = None) -> None:
        message = reason if path is None else f"Cannot read image {os.fspath(path)}: {reason}"
        super().__init__(message)
        self.reason = reason
        self.path = path


def changed_during_run(path: str | os.PathLike[str], reason: str, step: str) -> DatasetError:
    """The error for a file that was readable at scan time and no longer is during ``step``."""
    return DatasetError(f"{os.fspath(path)} became unreadable during {step} ({reason}).",
                        "Do not modify the dataset while nbtl runs, then run again.")


def open_rgb(path: str | os.PathLike[str]) -> Image.Image:
    """Open ``path`` and return it fully decoded as an 8-bit RGB image.

    The EXIF orientation is applied. Grey, alpha, palette, CMYK and 1-bit images
    are converted with PIL (alpha is dropped); 16-bit, 32-bit integer and float
    images have their value range stretched linearly into 0..255.

    Parameters
    ----------
    path : str or os.PathLike
        The image file.

    Returns
    -------
    PIL.Image.Image
        A loaded image in mode ``"RGB"``, detached from the file.

    Raises
    ------
    UnreadableImage
        If the file is missing, empty, not an image, truncated or corrupt, in a
        mode that cannot be converted, or over PIL's decompression-bomb limit
        (``PIL.Image.MAX_IMAGE_PIXELS``; the warning level counts as over), or
        longer than ``MAX_ASPECT_RATIO`` times its width (or the other way round).
    """
    try:
        if os.stat(path).st_size == 0:
            raise UnreadableImage("empty file", path)
    except OSError as exc:
        raise UnreadableImage(f"cannot read file: {exc.strerror or exc}", path) from exc

    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UnreadableImage(_bomb_reason(), path) from exc
    except UnidentifiedImageError as exc:
        raise UnreadableImage("not an image", path) from exc
    except OSError as exc:
        if exc.errno is not None:
            raise UnreadableImage(f"cannot read file: {exc.strerror or exc}", path) from exc
        raise UnreadableImage("truncated or corrupt image", path) from exc

    with image:
        if _over_bomb_limit(image.size):
            # Some plugins check again while decoding; refuse before they get there.
            raise UnreadableImage(_bomb_reason(), path)
        if _aspect_ratio(image.size) > MAX_ASPECT_RATIO:
            raise UnreadableImage(_aspect_reason(image.size), path)
        try:
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
        except UnreadableImage:
            raise
        except Image.DecompressionBombError as exc:
            raise UnreadableImage(_bomb_reason(), path) from exc
        # Decoders fail in many ways (OSError, SyntaxError, EOFError, zlib.error,
        # struct.error, ValueError ...); each means the file's data is unusable.
        except Exception as exc:
            raise UnreadableImage("truncated or corrupt image", path) from exc


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "P" and "transparency" in image.info:
        return image.convert("RGBA").convert("RGB")
    if mode in _DIRECT_TO_RGB:
        return image.convert("RGB")
    if mode in _VIA_RGBA:
        return image.convert("RGBA").convert("RGB")
    if mode in _HIGH_DEPTH:
        grey = _stretch_to_uint8(np.asarray(image))
        return Image.fromarray(grey, mode="L").convert("RGB")
    raise UnreadableImage(f"unsupported image mode {mode}")


def _stretch_to_uint8(values: np.ndarray) -> np.ndarray:
    """Map the finite range [min, max] of ``values`` linearly onto 0..255.

    Non-finite values become 0; a constant image keeps its value, clipped to 0..255.
    """
    values = values.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, dtype=np.uint8)
    low, high = values[finite].min(), values[finite].max()
    if high > low:
        scaled = (values - low) * (255.0 / (high - low))
    else:
        scaled = np.clip(values, 0.0, 255.0)
    scaled[~finite] = 0.0
    return np.rint(scaled).astype(np.uint8)


def _over_bomb_limit(size: tuple[int, int]) -> bool:
    # The same pixel count as PIL's own check (PIL.Image._decompression_bomb_check).
    limit = Image.MAX_IMAGE_PIXELS
    return limit is not None and max(1, size[0]) * max(1, size[1]) > limit


def _bomb_reason() -> str:
    return f"over PIL's decompression-bomb limit ({Image.MAX_IMAGE_PIXELS} pixels)"


def _aspect_ratio(size: tuple[int, int]) -> float:
    return max(size) / max(1, min(size))


def _aspect_reason(size: tuple[int, int]) -> str:
    return (f"aspect ratio {_aspect_ratio(size):.0f}:1 ({size[0]}x{size[1]} pixels) over the "
            f"{MAX_ASPECT_RATIO:.0f}:1 limit: with its shorter side resized to {RESIZE_TARGET} px "
            f"it would exceed {MAX_RESIZED_PIXELS // 1_000_000} megapixels")
