"""Checking fetched image bytes before anything trusts them, and decoding them for alignment.

The checks run before the body reaches the cache: the magic bytes must be an image format (HTML
served as ``image/jpeg`` is common), the header's pixel count must stay under a cap (a PNG of a few
kilobytes can claim 400 megapixels: it is refused before decoding), and a full decode must succeed
(a truncated JPEG fails here rather than later as a half-grey picture).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps

from .http import FetchError, PoliteSession

MAGIC = {
    b"\xff\xd8\xff": "jpeg",
    b"\x89PNG\r\n\x1a\n": "png",
    b"GIF87a": "gif",
    b"GIF89a": "gif",
}


def sniff(body: bytes) -> str | None:
    """The image format named by the first bytes, or None."""
    for magic, fmt in MAGIC.items():
        if body.startswith(magic):
            return fmt
    if body[:4] == b"RIFF" and body[8:12] == b"WEBP":
        return "webp"
    return None


def check_image(body: bytes, url: str, max_pixels: int) -> tuple[str, int, int]:
    """Return (format, width, height) of a complete, decodable, reasonably sized image."""
    fmt = sniff(body)
    if fmt is None:
        head = body[:40].decode("latin-1", errors="replace")
        raise FetchError("not_an_image", url, f"body is not an image (starts with {head!r})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(body)) as im:
                width, height = im.size
                if width * height > max_pixels:
                    raise FetchError("decompression_bomb", url, f"header claims {width}x{height} > {max_pixels} pixels")
                im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise FetchError("decompression_bomb", url, str(exc)) from exc
    except FetchError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        reason = "truncated_image" if "truncat" in str(exc).lower() else "bad_image"
        raise FetchError(reason, url, f"{fmt} does not decode: {exc}") from exc
    return fmt, width, height


def decode_rgb(body: bytes) -> np.ndarray:
    """RGB uint8 HWC array, EXIF orientation applied (phone photos are often stored rotated)."""
    with Image.open(io.BytesIO(body)) as im:
        im = ImageOps.exif_transpose(im)
        return np.asarray(im.convert("RGB"))


def needs_reencode(body: bytes) -> bool:
    """True when the bytes carry an EXIF rotation: decoders disagree on applying it, so such an image
    is stored re-encoded upright (as :func:`decode_rgb` sees it) instead of as fetched."""
    with Image.open(io.BytesIO(body)) as im:
        return im.getexif().get(0x0112, 1) not in (None, 1)


def encode(rgb: np.ndarray, fmt: str) -> bytes:
    """JPEG (quality 95) or PNG bytes of an RGB array."""
    buf = io.BytesIO()
    im = Image.fromarray(rgb)
    if fmt == "png":
        im.save(buf, format="PNG", optimize=True)
    else:
        im.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def fetch_image(session: PoliteSession, url: str, max_pixels: int) -> tuple[bytes, str]:
    """Fetch a checked image through the polite session: (bytes, format) or FetchError."""

    def validate(body: bytes, _ctype: str) -> None:
        check_image(body, url, max_pixels)

    fetched = session.get(url, "image", validate=validate)
    if fetched.from_cache:
        fmt, _, _ = check_image(fetched.body, url, max_pixels)  # a cached body is checked again: cheap
    else:
        fmt = sniff(fetched.body) or "jpeg"
    return fetched.body, fmt
