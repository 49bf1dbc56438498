"""Specification of recommender.data.images.open_rgb: every usable file as 8-bit RGB, or why not."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from recommender.data.images import (
    IMAGE_EXTENSIONS,
    MAX_ASPECT_RATIO,
    UnreadableImage,
    open_rgb,
)
from recommender.errors import EXIT_DATA

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


def _palette_png(path, transparency: bytes):
    image = Image.new("P", (3, 1))
    image.putpalette([*RED, *GREEN, *BLUE] + [0] * (256 - 3) * 3)
    image.putdata([0, 1, 2])
    image.save(path, transparency=transparency)
    return path


def _jpeg_bytes(path) -> bytes:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, quality=90)
    return path.read_bytes()


def test_extensions_are_torchvisions_in_lower_case():
    assert set(IMAGE_EXTENSIONS) == {
        ".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp",
    }  # fmt: skip


def test_rgb_png_comes_back_with_the_same_pixels(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "x.png")

    image = open_rgb(tmp_path / "x.png")

    assert image.mode == "RGB"
    np.testing.assert_array_equal(_pixels(image), pixels)


def test_grey_image_becomes_rgb_with_three_equal_channels(tmp_path):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(grey).save(tmp_path / "g.png")

    pixels = _pixels(open_rgb(tmp_path / "g.png"))

    assert pixels.shape == (3, 4, 3)
    for channel in range(3):
        np.testing.assert_array_equal(pixels[..., channel], grey)


def test_grey_with_alpha_keeps_the_grey_and_drops_the_alpha(tmp_path):
    Image.new("LA", (2, 2), (100, 30)).save(tmp_path / "la.png")

    assert _pixels(open_rgb(tmp_path / "la.png"))[0, 0].tolist() == [100, 100, 100]


def test_rgba_keeps_the_colour_and_drops_the_alpha(tmp_path):
    Image.new("RGBA", (2, 2), (10, 20, 30, 0)).save(tmp_path / "rgba.png")

    image = open_rgb(tmp_path / "rgba.png")

    assert image.mode == "RGB"
    assert _pixels(image)[1, 1].tolist() == [10, 20, 30]


def test_palette_with_transparency_converts_without_a_pil_warning(tmp_path):
    path = _palette_png(tmp_path / "p.png", transparency=b"\x80\xff\x00")

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = open_rgb(path)

    assert _pixels(image)[0].tolist() == [list(RED), list(GREEN), list(BLUE)]


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.jpg")

    image = open_rgb(tmp_path / "c.jpg")

    assert image.mode == "RGB"
    red, green, blue = _pixels(image)[4, 4].tolist()
    assert red > 200 and green < 60 and blue < 60


def test_one_bit_image_becomes_black_and_white(tmp_path):
    image = Image.new("1", (2, 1))
    image.putdata([0, 1])
    image.save(tmp_path / "b.png")

    assert _pixels(open_rgb(tmp_path / "b.png"))[0].tolist() == [[0, 0, 0], [255, 255, 255]]


@pytest.mark.parametrize(
    ("filename", "dtype"),
    [("i16.png", np.uint16), ("i16b.tif", ">u2"), ("i32.pgm", np.uint16), ("f.tif", np.float32)],
    ids=["I;16 png", "I;16B tiff", "I (16-bit pgm)", "F tiff"],
)
def test_high_bit_depth_grey_is_stretched_not_clipped_to_white(tmp_path, filename, dtype):
    levels = (np.arange(16).reshape(4, 4) * 4369).astype(dtype)  # 0 .. 65535
    Image.fromarray(levels).save(tmp_path / filename)

    grey = _pixels(open_rgb(tmp_path / filename))[..., 0].ravel()

    assert grey.min() == 0 and grey.max() == 255  # the full range, not all white
    assert np.all(np.diff(grey.astype(int)) > 0)  # the order of grey levels is kept


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.new("RGB", (40, 20), RED).save(tmp_path / "r.jpg", exif=exif)

    assert open_rgb(tmp_path / "r.jpg").size == (20, 40)


def test_result_is_decoded_and_detached_from_the_file(tmp_path):
    Image.new("RGB", (3, 3), GREEN).save(tmp_path / "x.png")

    image = open_rgb(tmp_path / "x.png")
    (tmp_path / "x.png").unlink()

    assert image.getpixel((1, 1)) == GREEN


def test_empty_file_is_unreadable(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")

    with pytest.raises(UnreadableImage) as caught:
        open_rgb(tmp_path / "empty.png")

    assert caught.value.reason == "empty file"


def test_text_file_named_jpg_is_not_an_image(tmp_path):
    (tmp_path / "notes.jpg").write_text("not a picture\n")

    with pytest.raises(UnreadableImage) as caught:
        open_rgb(tmp_path / "notes.jpg")

    assert caught.value.reason == "not an image"


@pytest.mark.parametrize("keep", [0.5, 0.05], ids=["half", "header only"])
def test_truncated_jpeg_is_unreadable(tmp_path, keep):
    data = _jpeg_bytes(tmp_path / "full.jpg")
    (tmp_path / "cut.jpg").write_bytes(data[: int(len(data) * keep)])

    with pytest.raises(UnreadableImage) as caught:
        open_rgb(tmp_path / "cut.jpg")

    assert caught.value.reason == "truncated or corrupt image"


def test_truncated_png_is_unreadable_as_truncated(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "f.png")
    data = (tmp_path / "f.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])

    with pytest.raises(UnreadableImage) as caught:
        open_rgb(tmp_path / "cut.png")

    assert caught.value.reason == "truncated or corrupt image"


def test_missing_file_is_unreadable(tmp_path):
    with pytest.raises(UnreadableImage) as caught:
        open_rgb(tmp_path / "nowhere.png")

    assert caught.value.reason.startswith("cannot read file")


@pytest.mark.parametrize("size", [(11, 10), (30, 30)], ids=["warning level", "error level"])
def test_image_over_the_decompression_bomb_limit_is_unreadable(tmp_path, monkeypatch, size):
    Image.new("RGB", size).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)

    with pytest.raises(UnreadableImage) as caught:
        open_rgb(tmp_path / "bomb.png")

    assert caught.value.reason == "over PIL's decompression-bomb limit (100 pixels)"


def test_image_at_the_decompression_bomb_limit_is_accepted(tmp_path, monkeypatch):
    Image.new("RGB", (10, 10)).save(tmp_path / "ok.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)

    assert open_rgb(tmp_path / "ok.png").size == (10, 10)


def test_decompression_bomb_check_leaves_the_warning_filters_as_they_were(tmp_path, monkeypatch):
    Image.new("RGB", (11, 10)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    before = list(warnings.filters)

    with pytest.raises(UnreadableImage):
        open_rgb(tmp_path / "bomb.png")

    assert warnings.filters == before


def test_unreadable_image_names_the_file_and_ends_the_run_as_a_data_error(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")

    with pytest.raises(UnreadableImage) as caught:
        open_rgb(tmp_path / "empty.png")

    assert str(tmp_path / "empty.png") in str(caught.value)
    assert caught.value.exit_code == EXIT_DATA


@pytest.mark.parametrize("size", [(8000, 1), (2, 20000)], ids=["wide", "tall"])
def test_image_too_long_for_its_width_is_unreadable(tmp_path, size):
    # Resized so that its shorter side is 256 px, 8000x1 would take 2 GB.
    Image.new("RGB", size).save(tmp_path / "long.png")

    with pytest.raises(UnreadableImage) as caught:
        open_rgb(tmp_path / "long.png")

    ratio = max(size) // min(size)
    assert caught.value.reason.startswith(f"aspect ratio {ratio}:1 ({size[0]}x{size[1]} pixels)")
    assert f"over the {MAX_ASPECT_RATIO:.0f}:1 limit" in caught.value.reason


def test_image_at_the_aspect_ratio_limit_is_accepted(tmp_path):
    longest = int(MAX_ASPECT_RATIO)
    Image.new("RGB", (1, longest)).save(tmp_path / "thin.png")

    assert open_rgb(tmp_path / "thin.png").size == (1, longest)
