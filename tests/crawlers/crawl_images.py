"""Image bytes for the crawler tests, in a module of its own: test modules import it by name, which a
``conftest`` is not safe for (pytest may have imported another folder's ``conftest`` under that name first,
as when ``tests/fuzz`` is collected in the same run)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def jpeg_bytes(rgb: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
