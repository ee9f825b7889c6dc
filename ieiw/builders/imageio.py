"""Encoding and decoding of the image cells, shared by builders and filters."""

from __future__ import annotations

from io import BytesIO

import numpy as np
from PIL import Image


def encode(pixels: np.ndarray, fmt: str = "jpeg", quality: int = 95) -> bytes:
    """RGB or L ``uint8`` array -> encoded bytes. JPEG uses 4:4:4 chroma so thin edits survive."""
    buffer = BytesIO()
    image = Image.fromarray(pixels)
    if fmt == "jpeg":
        image.save(buffer, format="JPEG", quality=quality, subsampling=0)
    else:
        image.save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def decode(data: bytes, mode: str = "RGB") -> np.ndarray:
    with Image.open(BytesIO(data)) as image:
        return np.asarray(image.convert(mode))


def extension(data: bytes) -> str:
    """File extension from the magic bytes, for the ``path`` of an image cell."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return "bin"
