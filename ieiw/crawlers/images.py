"""Checking fetched image bytes before anything trusts them.

The checks run before the body reaches the cache: the header must parse as an allowed image format
(:func:`ieiw.imageio.sniff`: HTML served as ``image/jpeg`` is common), the header's pixel count must
stay under a cap (a PNG of a few kilobytes can claim 400 megapixels: it is refused before decoding),
and a full decode must succeed (a truncated JPEG fails here rather than later as a half-grey picture).
Decoding and encoding for the pairs is :mod:`ieiw.imageio`'s, as everywhere else.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image

from ieiw.crawlers.http import FetchError, PoliteSession
from ieiw.imageio import sniff


def check_image(body: bytes, url: str, max_pixels: int) -> tuple[str, int, int]:
    """Return (Pillow format name, width, height) of a complete, decodable, reasonably sized image."""
    fmt: str | None = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            fmt = sniff(body)  # inside the try: Pillow refuses a huge header already when parsing it
            if fmt is None:
                head = body[:40].decode("latin-1", errors="replace")
                raise FetchError("not_an_image", url, f"body is not an image (starts with {head!r})")
            with Image.open(io.BytesIO(body), formats=(fmt,)) as im:
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
    assert fmt is not None  # every path without a format raised above
    return fmt, width, height


def fetch_image(session: PoliteSession, url: str, max_pixels: int) -> tuple[bytes, str]:
    """Fetch a checked image through the polite session: (bytes, Pillow format name) or FetchError."""
    checked: list[str] = []

    def validate(body: bytes, _ctype: str) -> None:
        checked.append(check_image(body, url, max_pixels)[0])

    fetched = session.get(url, "image", validate=validate)
    if not checked:  # served from the cache: checked again (cheap), the cache may predate a check
        checked.append(check_image(fetched.body, url, max_pixels)[0])
    return fetched.body, checked[-1]
