"""The one place images are sniffed, decoded and encoded (builders, crawlers, filters, training).

Policy, the same everywhere:

- **Sniffing** is Pillow's own header parse, restricted to :data:`ALLOWED_FORMATS`, so HTML served as
  ``image/jpeg`` or a truncated header is "not an image" rather than a guess from two magic bytes.
- **Decoding** returns RGB ``uint8`` pixels whatever the stored mode: grey (L, 1), palette (P),
  CMYK and YCbCr are converted by Pillow; 16-bit grey (I;16*, I) is scaled to 8 bits (Pillow's own
  conversion would clip at 255); transparency (RGBA, LA, P with a transparent index) is composited
  over white, which is what an editor shows. The EXIF orientation is reported always and applied only
  when the caller says so (see :class:`Orientation`): a crawled phone photo is always shown upright, an
  annotated dataset's polygons are in the coordinates the annotators saw.
- **Encoding**: JPEG at quality 95 with 4:4:4 chroma (no subsampling: thin edits and coloured marks
  survive), PNG at zlib level 3 (level 9 and ``optimize`` cost 3-5x the time for a few percent).
"""

from __future__ import annotations

import enum
import warnings
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow format name -> file extension; the one map every module uses (image cells, caches, exports).
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}
ALLOWED_FORMATS = tuple(EXTENSIONS)
# What ``encode`` writes, by the names configs use.
ENCODE_FORMATS = {"jpeg": "JPEG", "jpg": "JPEG", "png": "PNG"}
JPEG_QUALITY = 95
PNG_COMPRESS_LEVEL = 3
EXIF_ORIENTATION_TAG = 0x0112


class ImageDecodeError(ValueError):
    """Bytes that are not a decodable image of an allowed format."""


class Orientation(enum.Enum):
    """What to do with an EXIF orientation tag."""

    APPLY = "apply"  # always show upright (crawled photos)
    IGNORE = "ignore"  # keep the stored pixel order
    MATCH = "match"  # apply only if that makes the size equal the expected (annotation) size


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray  # RGB uint8, H x W x 3
    format: str  # Pillow format name, e.g. "JPEG"
    stored_mode: str  # the mode in the file, e.g. "CMYK"; "RGB" when nothing was converted
    orientation: int  # the EXIF orientation tag, 1 when absent
    transposed: bool  # True when the EXIF orientation was applied

    @property
    def converted(self) -> bool:
        return self.stored_mode != "RGB"


class SizeMismatch(ImageDecodeError):
    """The stored image matches the expected size neither as stored nor after its EXIF transpose."""


def sniff(data: bytes) -> str | None:
    """The Pillow format name of ``data`` (header only), or ``None`` when it is no allowed image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(BytesIO(data), formats=ALLOWED_FORMATS) as image:
                return image.format
    except Image.DecompressionBombError:
        # A header claiming a huge size is still that format (the caller decides what a bomb means);
        # Pillow refuses before it says which, so ask each plugin's own header test.
        Image.init()
        return next((f for f in ALLOWED_FORMATS if f in Image.OPEN and Image.OPEN[f][1](data[:32])), None)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None


def pixel_limit() -> int | None:
    """The most pixels :func:`decode` accepts (Pillow's ``MAX_IMAGE_PIXELS``; None when unlimited): a larger
    image is a decompression bomb here, refused whatever the caller (Pillow itself only warns up to twice it)."""
    limit = Image.MAX_IMAGE_PIXELS
    return int(limit) if limit else None


def header_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of the image file at ``path`` from its header alone (no pixel decode).

    Raises :class:`ImageDecodeError` for a file that is no allowed image and, starting ``"decompression
    bomb:"`` as :func:`decode` does, for a header declaring more than :func:`pixel_limit` pixels (so an image
    that :func:`decode` would refuse is refused here already, before any of its pixels are read)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=ALLOWED_FORMATS) as image:
                return image.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"decompression bomb: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"not an image: {exc}") from None


def extension(data: bytes) -> str:
    """File extension for encoded ``data`` (the ``path`` of an image cell); ``bin`` if unknown."""
    fmt = sniff(data)
    return EXTENSIONS.get(fmt, "bin") if fmt else "bin"


def extension_for_format(fmt: str) -> str:
    """``"JPEG"``/``"jpeg"``/``"jpg"`` -> ``"jpg"``, and so on for every allowed format."""
    name = ENCODE_FORMATS.get(fmt.lower(), fmt.upper())
    return EXTENSIONS.get(name, fmt.lower())


def exif_orientation(image: Image.Image) -> int:
    value = image.getexif().get(EXIF_ORIENTATION_TAG, 1)
    return int(value) if value in range(1, 9) else 1


def orientation_of(data: bytes) -> int:
    """The EXIF orientation tag of encoded ``data`` (1 = upright or absent)."""
    with Image.open(BytesIO(data)) as image:
        return exif_orientation(image)


def to_rgb(image: Image.Image) -> np.ndarray:
    """RGB ``uint8`` pixels of any Pillow mode (see the module docstring for the rules)."""
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image)
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        values = np.asarray(image).astype(np.float64)
        peak = 65535.0 if values.max(initial=0) > 255 or mode.startswith("I;16") else 255.0
        grey = np.clip(np.round(values * (255.0 / peak)), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "F":
        grey = np.clip(np.asarray(image), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))


def decode(
    data: bytes,
    orientation: Orientation | str = Orientation.APPLY,
    expect_size: tuple[int, int] | None = None,
) -> DecodedImage:
    """Decode ``data`` to RGB; see :class:`Orientation` for the EXIF choice.

    ``expect_size`` is ``(width, height)`` as an annotation file states it; with ``MATCH`` it decides
    whether the EXIF transpose applies, and a size matching neither raises :class:`SizeMismatch`.
    """
    orientation = Orientation(orientation)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(BytesIO(data), formats=ALLOWED_FORMATS) as image:
                fmt, stored_mode = image.format or "?", image.mode
                tag = exif_orientation(image)
                image.load()
                upright = ImageOps.exif_transpose(image) if tag != 1 else image
                transposed = False
                if orientation is Orientation.APPLY:
                    chosen, transposed = upright, tag != 1
                elif orientation is Orientation.IGNORE or expect_size is None:
                    chosen = image
                else:
                    expect = tuple(int(v) for v in expect_size)
                    if image.size == expect:
                        chosen = image
                    elif upright.size == expect:
                        chosen, transposed = upright, True
                    else:
                        raise SizeMismatch(
                            f"stored size {image.size[0]}x{image.size[1]} (EXIF orientation {tag}) matches "
                            f"neither as stored nor upright the expected {expect[0]}x{expect[1]}"
                        )
                pixels = to_rgb(chosen)
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"decompression bomb: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"cannot decode: {exc}") from None
    return DecodedImage(pixels, fmt, stored_mode, tag, transposed)


def decode_rgb(data: bytes, orientation: Orientation | str = Orientation.APPLY) -> np.ndarray:
    """Just the RGB pixels (EXIF orientation applied by default)."""
    return decode(data, orientation).pixels


def decode_image(data: bytes, min_side: int | None = None) -> Image.Image:
    """An RGB PIL image of shard bytes as stored (no EXIF step: builders store images upright), for
    loaders that resize anyway. With ``min_side``, a JPEG is decoded by libjpeg at 1/2..1/8 scale while
    both sides stay >= ``min_side`` (several times faster than a full decode and a resize)."""
    image = Image.open(BytesIO(data), formats=ALLOWED_FORMATS)
    if min_side and image.format == "JPEG":
        image.draft("RGB", (min_side, min_side))
    return image if image.mode == "RGB" else Image.fromarray(to_rgb(image))


def downscale(pixels: np.ndarray, long_side: int) -> np.ndarray:
    """``pixels`` shrunk (area filter) so the long side is at most ``long_side``; smaller images as they are."""
    import cv2

    height, width = pixels.shape[:2]
    scale = long_side / max(height, width)
    if scale >= 1:
        return pixels
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)


def decode_mask(data: bytes) -> np.ndarray:
    """A stored mask PNG as a 0/1 ``uint8`` array (white = the edited region)."""
    with Image.open(BytesIO(data)) as image:
        return (np.asarray(image.convert("L")) > 127).astype(np.uint8)


def encode(pixels: np.ndarray, fmt: str = "jpeg", quality: int = JPEG_QUALITY) -> bytes:
    """RGB (or L) ``uint8`` array -> JPEG (4:4:4, ``quality``) or PNG (level 3) bytes."""
    name = ENCODE_FORMATS.get(fmt.lower())
    if name is None:
        raise ValueError(f"cannot encode {fmt!r}: use one of {sorted(ENCODE_FORMATS)}")
    buffer = BytesIO()
    image = Image.fromarray(np.ascontiguousarray(pixels))
    if name == "JPEG":
        image.save(buffer, format="JPEG", quality=quality, subsampling=0)
    else:
        image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()
