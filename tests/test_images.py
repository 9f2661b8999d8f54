"""Hostile and unusual image files."""

import numpy as np
import pytest
from helpers import make_image
from PIL import Image

from clipdet.pipeline import images
from clipdet.pipeline.images import ImageLoadError, load_rgb


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _truncated(tmp_path):
    good = make_image(tmp_path / "good.jpg", size=(200, 150), format="JPEG")
    data = good.read_bytes()
    path = tmp_path / "truncated.jpg"
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: p / "missing.png", "file not found"),
        (lambda p: _write(p / "empty.jpg", b""), "empty file"),
        (lambda p: _write(p / "notes.png", b"hello, not an image"), "not a readable image"),
        (_truncated, "cannot decode image"),
        (lambda p: (p / "adir").mkdir() or p / "adir", "is a directory"),
    ],
    ids=["missing", "empty", "non-image", "truncated", "directory"],
)
def test_unreadable_files_raise_a_clear_error(tmp_path, make, message):
    with pytest.raises(ImageLoadError, match=message):
        load_rgb(make(tmp_path))


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    path = make_image(tmp_path / "big.png", size=(300, 300))
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 300 * 300 - 1)
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        load_rgb(path)


@pytest.mark.parametrize("pillow_limit", [60_000, 40_000], ids=["warning", "error"])
def test_pillows_own_bomb_check_is_a_row_error(tmp_path, monkeypatch, pillow_limit):
    """90,000 pixels: over Pillow's limit (a DecompressionBombWarning, made an error) or over
    twice it (Pillow's DecompressionBombError); clipdet's own check is not what fires here."""
    path = make_image(tmp_path / "big.png", size=(300, 300))
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 10**12)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pillow_limit)
    with pytest.raises(ImageLoadError, match="possible decompression bomb: Image size"):
        load_rgb(path)


def _save(path, image, **kw):
    image.save(path, **kw)
    return path


def _exif_image(path):
    image = Image.fromarray(np.full((20, 30, 3), 90, np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90
    return _save(path, image, exif=exif)


def _animated(path):
    frames = [Image.new("P", (16, 12), color=i) for i in range(3)]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    return path


@pytest.mark.parametrize(
    "name,make,size",
    [
        ("cmyk.jpg", lambda p: _save(p, Image.new("CMYK", (30, 20), (10, 20, 30, 40))), (30, 20)),
        (
            "16bit.png",
            lambda p: _save(p, Image.fromarray(np.full((20, 30), 40000, np.uint16))),
            (30, 20),
        ),
        ("palette.png", lambda p: make_image(p, (30, 20), mode="P"), (30, 20)),
        ("rgba.png", lambda p: make_image(p, (30, 20), mode="RGBA"), (30, 20)),
        ("anim.gif", _animated, (16, 12)),
        ("exif.jpg", _exif_image, (30, 20)),
        ("tiny.png", lambda p: make_image(p, (1, 1)), (1, 1)),
        ("thin.png", lambda p: make_image(p, (4000, 8)), (4000, 8)),
        ("gray.webp", lambda p: make_image(p, (30, 20), mode="L"), (30, 20)),
    ],
)
def test_unusual_images_decode_to_rgb(tmp_path, name, make, size):
    image = load_rgb(make(tmp_path / name))
    assert image.mode == "RGB"
    assert image.size == size


def test_exif_orientation_is_not_applied_like_the_reference(tmp_path):
    """The reference reads pixels as stored; so does clipdet, to give the same LLRs."""
    assert load_rgb(_exif_image(tmp_path / "e.jpg")).size == (30, 20)


def test_fast_decoding_reduces_a_jpeg_to_the_smallest_scale_above_the_bound(tmp_path):
    jpeg = make_image(tmp_path / "photo.jpg", size=(1600, 1200), format="JPEG", quality=90)
    assert load_rgb(jpeg).size == (1600, 1200)
    assert load_rgb(jpeg, min_side=448).size == (800, 600)  # 1/4 would be 400x300 < 448
    assert load_rgb(jpeg, min_side=100).size == (200, 150)  # 1/8, Pillow's smallest scale
    assert load_rgb(jpeg, min_side=1300).size == (1600, 1200)  # no scale is large enough
    png = make_image(tmp_path / "photo.png", size=(1600, 1200))
    assert load_rgb(png, min_side=448).size == (1600, 1200)  # only JPEGs have DCT scales
