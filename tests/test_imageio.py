"""The one image I/O module, on files made in the forms real datasets and crawls deliver."""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from ieiw.imageio import (
    EXTENSIONS,
    ImageDecodeError,
    Orientation,
    SizeMismatch,
    decode,
    encode,
    extension,
    extension_for_format,
    orientation_of,
    sniff,
)


def saved(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return skdata.chelsea()  # a real photograph, 300x451, shipped inside scikit-image


def rotated_with_exif(photo: np.ndarray, tag: int = 6) -> bytes:
    """What a phone writes: pixels stored sideways plus an orientation tag saying how to show them.
    Tag 6 means "rotate 90 degrees clockwise to display", so the stored pixels are the upright image
    rotated 90 degrees counter-clockwise."""
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(photo, 1)))
    exif = Image.Exif()
    exif[0x0112] = tag
    return saved(stored, "JPEG", quality=95, exif=exif.tobytes())


def test_exif_orientation_apply_ignore_and_match(photo):
    data = rotated_with_exif(photo)
    height, width = photo.shape[:2]
    assert orientation_of(data) == 6
    upright = decode(data, Orientation.APPLY)
    assert upright.pixels.shape[:2] == (height, width) and upright.transposed and upright.orientation == 6
    assert np.abs(upright.pixels.astype(int) - photo).mean() < 4, "displayed as the original"
    stored = decode(data, Orientation.IGNORE)
    assert stored.pixels.shape[:2] == (width, height) and not stored.transposed
    # annotated at the displayed size -> transpose; annotated at the stored size -> keep the stored order
    assert decode(data, Orientation.MATCH, (width, height)).transposed
    assert not decode(data, Orientation.MATCH, (height, width)).transposed
    with pytest.raises(SizeMismatch, match="matches neither"):
        decode(data, Orientation.MATCH, (100, 100))


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "RGBA", "LA", "I;16", "1"])
def test_every_mode_becomes_rgb(photo, mode):
    base = Image.fromarray(photo)
    if mode == "I;16":
        grey = np.asarray(base.convert("L")).astype(np.uint16) * 257  # full 16-bit range
        image, fmt = Image.fromarray(grey), "PNG"
    elif mode in ("RGBA", "LA"):
        image, fmt = base.convert(mode), "PNG"
    elif mode == "CMYK":
        image, fmt = base.convert("CMYK"), "JPEG"
    else:
        image, fmt = base.convert(mode), "PNG"
    decoded = decode(saved(image, fmt))
    assert decoded.pixels.dtype == np.uint8 and decoded.pixels.shape == photo.shape
    assert decoded.stored_mode == image.mode and decoded.converted
    if mode in ("L", "I;16"):
        grey = np.asarray(base.convert("L")).astype(int)
        assert np.abs(decoded.pixels[..., 0].astype(int) - grey).max() <= 1, "16-bit scaled, not clipped at 255"
    if mode in ("CMYK", "RGBA"):
        assert np.abs(decoded.pixels.astype(int) - photo).mean() < 12
    if mode == "P":
        assert np.array_equal(decoded.pixels, np.asarray(image.convert("RGB"))), "the palette's own colours"


def test_transparency_is_composited_over_white():
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:4, :, :] = (255, 0, 0, 255)  # opaque red on top, fully transparent below
    pixels = decode(saved(Image.fromarray(rgba, "RGBA"), "PNG")).pixels
    assert (pixels[:4] == (255, 0, 0)).all() and (pixels[4:] == 255).all()
    palette = Image.fromarray(rgba, "RGBA").convert("P")
    palette.info["transparency"] = palette.getpixel((0, 7))
    assert (decode(saved(palette, "PNG", transparency=palette.getpixel((0, 7)))).pixels[7] == 255).all()


def test_sniff_is_pillow_restricted_to_image_formats(photo):
    image = Image.fromarray(photo)
    assert sniff(saved(image, "JPEG")) == "JPEG" and sniff(saved(image, "PNG")) == "PNG"
    assert sniff(saved(image, "WEBP")) == "WEBP" and sniff(saved(image.convert("P"), "GIF")) == "GIF"
    assert sniff(b"<!DOCTYPE html><html><body>404</body></html>") is None
    assert sniff(saved(image, "JPEG")[:2]) is None, "two magic bytes are not an image"
    with pytest.raises(ImageDecodeError):
        decode(b"<html></html>")


def test_one_extension_map_and_one_encode_policy(photo):
    assert extension(encode(photo, "jpeg")) == "jpg" and extension(encode(photo, "png")) == "png"
    assert extension(b"nope") == "bin"
    assert extension_for_format("JPEG") == extension_for_format("jpg") == EXTENSIONS["JPEG"] == "jpg"
    jpeg = Image.open(BytesIO(encode(photo, "jpg")))
    assert jpeg.layer[0][1:3] == jpeg.layer[1][1:3] == (1, 1), "JPEG chroma is not subsampled (4:4:4)"
    assert np.array_equal(decode(encode(photo, "png")).pixels, photo), "PNG is lossless"
    with pytest.raises(ValueError, match="cannot encode"):
        encode(photo, "tiff")
