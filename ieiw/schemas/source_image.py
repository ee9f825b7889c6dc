"""An image read from a source and ready to pair: the bytes a row stores and the pixels they decode to.

Every reader (PhraseCut, SA-1B, Open Images, image folders, the multi-task datasets, the importers) returns
one, so a row's ``source_image`` always decodes, in every viewer, to the pixels its masks and boxes were
made on: the file's own bytes when decoding changed nothing, a re-encoding (with the reasons) otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ieiw.imageio import JPEG_QUALITY, DecodedImage, encode


@dataclass(frozen=True, eq=False)
class SourceImage:
    """A record's image, ready to pair: ``pixels`` are RGB in the annotation's coordinates, and ``data``
    decodes to exactly those pixels in every viewer (no EXIF step left to apply, RGB)."""

    data: bytes  # the file's own bytes, or a re-encoding of ``pixels`` when ``reencoded``
    pixels: np.ndarray  # RGB uint8, height x width x 3, as annotated
    format: str  # the stored format (Pillow name: "JPEG", "PNG", ...), whatever the file name says
    stored_mode: str  # the stored mode ("RGB", "L", "CMYK", "I;16", "P", ...)
    orientation_tag: int  # the file's EXIF orientation tag (1 when absent)
    orientation: Literal["as-stored", "exif-applied"]  # which pixel order matched the annotated size
    reencoded: bool  # True when ``data`` is not the file's bytes
    reasons: tuple[str, ...] = ()  # why it was re-encoded, e.g. ("mode CMYK converted to RGB",)

    @classmethod
    def from_decoded(cls, data: bytes, decoded: DecodedImage, fmt: str | None = None,
                     quality: int | None = None) -> SourceImage:
        """The file's ``data`` kept when decoding changed nothing; else the pixels re-encoded (JPEG for a
        stored JPEG, PNG otherwise, unless ``fmt``), with the reasons."""
        reasons = []
        if decoded.converted:
            reasons.append(f"mode {decoded.stored_mode} converted to RGB")
        if decoded.transposed:
            reasons.append(f"EXIF orientation {decoded.orientation} applied")
        elif decoded.orientation != 1:
            reasons.append(f"EXIF orientation {decoded.orientation} dropped (annotated as stored)")
        if reasons:
            data = encode(decoded.pixels, fmt or ("jpeg" if decoded.format == "JPEG" else "png"),
                          quality or JPEG_QUALITY)
        return cls(data=data, pixels=decoded.pixels, format=decoded.format, stored_mode=decoded.stored_mode,
                   orientation_tag=decoded.orientation,
                   orientation="exif-applied" if decoded.transposed else "as-stored",
                   reencoded=bool(reasons), reasons=tuple(reasons))

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    def provenance(self) -> dict[str, Any]:
        """What a row may record about how its source image was made."""
        return {
            "stored_format": self.format,
            "stored_mode": self.stored_mode,
            "exif_orientation": self.orientation_tag,
            "orientation": self.orientation,
            "reencoded": self.reencoded,
        }
