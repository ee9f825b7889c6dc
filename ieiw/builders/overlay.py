"""What the segmentation converters share: the palette, the semi-transparent overlay, the instruction
templates and the reading of a source image (docs/multitask.md, docs/formats.md "Segmentation overlay").

- **Palette**: InstructDiffusion's eight training colours (``color_list_train_small.txt``): red, purple
  (128,0,128), blue, green (0,128,0), yellow, white, black, gray (128). A row's colour is picked from its
  row id (:func:`pick_colour`), so a row keeps its colour between runs; the name, lower-cased, fills
  ``{color}``.
- **Overlay**: inside the mask ``target = alpha*pixel + (1-alpha)*colour`` with alpha 0.5, truncated to
  an integer as the official code's ``uint8`` assignment does; outside the mask the pixels are exactly
  the source's. The target is stored as PNG, so it decodes to exactly these values.
- **Templates**: ``templates/segmentation.yaml`` (beside this module): ``segment:`` templates with the
  placeholders ``{object}`` and ``{color}``, and ``nothing:`` sentences for an image with no label at all.
  A file of the same form replaces them (a converter's ``templates:`` key); the template is picked by the
  row id.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ieiw.builders.template_files import load_packaged_template_file, load_template_file
from ieiw.imageio import ImageDecodeError, Orientation, SizeMismatch, decode, encode
from ieiw.schemas.rows import stable_hash
from ieiw.schemas.source_image import SourceImage
from ieiw.schemas.units import SourceRecordError

ALPHA = 0.5  # InstructDiffusion's ``transparency``: the share of the source pixel kept inside the mask


@dataclass(frozen=True)
class Colour:
    name: str  # as the official colour list writes it ("Purple")
    rgb: tuple[int, int, int]

    @property
    def word(self) -> str:
        """What fills ``{color}``: the name in lower case."""
        return self.name.lower()


PALETTE: tuple[Colour, ...] = (
    Colour("Red", (255, 0, 0)),
    Colour("Purple", (128, 0, 128)),
    Colour("Blue", (0, 0, 255)),
    Colour("Green", (0, 128, 0)),
    Colour("Yellow", (255, 255, 0)),
    Colour("White", (255, 255, 255)),
    Colour("Black", (0, 0, 0)),
    Colour("Gray", (128, 128, 128)),
)


def unit_interval(*parts: Any) -> float:
    """A deterministic number in [0, 1) from ``parts`` (seeded choices that never change between runs)."""
    return int(stable_hash(*parts, length=16), 16) / float(1 << 64)


def pick_index(count: int, *parts: Any) -> int:
    """A deterministic index in ``range(count)`` from ``parts``."""
    return int(stable_hash(*parts, length=16), 16) % count


def pick_colour(row_id: str) -> Colour:
    """The row's colour: uniform over :data:`PALETTE`, by a hash of the row id."""
    return PALETTE[pick_index(len(PALETTE), "colour", row_id)]


def overlay(pixels: np.ndarray, mask: np.ndarray, rgb: tuple[int, int, int], alpha: float = ALPHA) -> np.ndarray:
    """``pixels`` (H x W x 3 uint8) with ``rgb`` blended in where ``mask`` is non-zero; a new array.

    Inside: ``floor(alpha*pixel + (1-alpha)*colour)`` per channel (the official code's float blend
    assigned into ``uint8``); outside: the source values unchanged."""
    if pixels.shape[:2] != mask.shape[:2]:
        raise ValueError(f"mask {mask.shape[:2]} and image {pixels.shape[:2]} differ in size")
    out = pixels.copy()
    inside = mask.astype(bool)
    blend = alpha * pixels[inside].astype(np.float64) + (1.0 - alpha) * np.asarray(rgb, np.float64)
    out[inside] = np.floor(blend + 1e-9).astype(np.uint8)
    return out


def mask_png(mask: np.ndarray) -> bytes:
    """A 0/1 mask as the mask column stores it: a grey PNG, 255 inside."""
    return encode((mask.astype(bool) * 255).astype(np.uint8), "png")


# -- templates -----------------------------------------------------------------------------------
DOUBLE_ARTICLE = re.compile(r"\bthe (the|a|an) ")
TEMPLATE_KINDS = {"segment": {"object", "color"}, "nothing": set()}  # kind -> the placeholders it uses
DEFAULT_TEMPLATES = "templates/segmentation.yaml"  # inside this package


@dataclass(frozen=True)
class SegTemplates:
    segment: tuple[str, ...]
    nothing: tuple[str, ...]
    source: str

    def digest(self) -> str:
        """Changes when a template changes (part of the builders' fingerprints, not of row ids)."""
        return hashlib.sha256(repr((self.segment, self.nothing)).encode()).hexdigest()[:16]

    def pick(self, kind: str, row_id: str) -> str:
        """The template for ``row_id``: its first 8 hex digits modulo the number of templates."""
        options = getattr(self, kind)
        return options[int(row_id[:8], 16) % len(options)]

    def segment_instruction(self, row_id: str, obj: str, colour: Colour) -> str:
        """The row's template with ``{object}`` and ``{color}`` filled in (:func:`fill_segment`)."""
        return fill_segment(self.pick("segment", row_id), obj, colour)

    def nothing_instruction(self, row_id: str) -> str:
        return self.pick("nothing", row_id).format()


def fill_segment(template: str, obj: str, colour: Colour) -> str:
    """A ``segment:`` template with ``{object}`` (lower-cased) and ``{color}`` filled in; a template's "the"
    before an object that has its own article ("the the man") is dropped."""
    text = template.format(object=" ".join(obj.lower().split()), color=colour.word)
    return DOUBLE_ARTICLE.sub(r"\1 ", text)


def load_seg_templates(path: str | Path) -> SegTemplates:
    """A template file of the shipped form; :class:`~ieiw.phrases.TemplateError` with one line naming the file."""
    lists = load_template_file(path, TEMPLATE_KINDS)
    return SegTemplates(segment=lists["segment"], nothing=lists["nothing"], source=str(Path(path)))


@functools.lru_cache(maxsize=1)
def default_seg_templates() -> SegTemplates:
    lists = load_packaged_template_file(DEFAULT_TEMPLATES, TEMPLATE_KINDS)
    return SegTemplates(segment=lists["segment"], nothing=lists["nothing"], source=DEFAULT_TEMPLATES)


def templates_for(path: Path | None) -> SegTemplates:
    return load_seg_templates(path) if path is not None else default_seg_templates()


# -- source images -------------------------------------------------------------------------------
class NotARegularFile(OSError):
    """A dataset entry that is a folder, a FIFO, a socket or a device, not a file: reading it would fail,
    block for ever (a FIFO) or never end (``/dev/zero``)."""


def read_regular_file(path: Path) -> bytes:
    """The bytes of the regular file at ``path`` (symlinks followed). Opened without blocking and checked
    on the open descriptor, so a FIFO a crafted archive holds cannot stall the build, and no file can be
    swapped in between the check and the read. ``FileNotFoundError`` when nothing is there,
    :class:`NotARegularFile` for a folder or a special file, another ``OSError`` otherwise."""
    with open(path, "rb", opener=lambda name, flags: os.open(name, flags | os.O_NONBLOCK)) as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise NotARegularFile(f"{path}: not a regular file")
        return handle.read()


def read_source(path: Path, expect: tuple[int, int], record_id: str, size_from: str) -> SourceImage:
    """The image at ``path`` in the annotation's coordinates (``expect`` = (width, height), stated by
    ``size_from``), or a :class:`SourceRecordError` (``missing_image``, ``unreadable_image``,
    ``image_size_mismatch``).

    The stored bytes are kept when they decode to those pixels in every viewer (RGB, no EXIF
    orientation to apply); otherwise the pixels are re-encoded as PNG, losslessly, so that the source
    column decodes to exactly the pixels the overlay was computed from. The EXIF transpose is applied
    only when that is what makes the size match (as for PhraseCut)."""
    try:
        data = read_regular_file(path)
    except (FileNotFoundError, NotARegularFile):
        raise SourceRecordError("missing_image", record_id, str(path), "image file not found") from None
    except OSError as exc:  # a symlink loop, a name too long, no permission: this record's file only
        raise SourceRecordError("unreadable_image", record_id, str(path), f"cannot read it: {exc}") from None
    try:
        decoded = decode(data, Orientation.MATCH, expect)
    except SizeMismatch as exc:
        raise SourceRecordError("image_size_mismatch", record_id, str(path), f"{exc} (from {size_from})") from None
    except ImageDecodeError as exc:
        raise SourceRecordError("unreadable_image", record_id, str(path), str(exc)) from None
    return SourceImage.from_decoded(data, decoded, fmt="png")
