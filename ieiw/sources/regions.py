"""One region record for every replacement source: masks, regions, and the image they belong to.

Sources (docs/replacement.md, "Region sources"): SA-1B per-image JSON (:mod:`ieiw.sources.sa1b`), Open
Images V7 segmentation (:mod:`ieiw.sources.openimages`) and region proposals over an image folder
(:mod:`ieiw.sources.image_folder`, by a ``regions`` backend: :mod:`ieiw.backends.regions`). The policy that
chooses among regions is :mod:`ieiw.builders.region_policy`; the config that picks a source,
:mod:`ieiw.builders.region_sources`. Each is a
reader with ``count()`` (images) and ``read(start, stop)`` -> one :class:`ImageRegions` per image, in a
deterministic order, so a unit is a range of images; ``load_image(entry)`` gives the image's pixels.

Masks are **decoded lazily**: a :class:`Region` holds a :class:`MaskSource` (a compressed COCO RLE, or an
array) and :attr:`Region.mask` decodes it on first access (then keeps it). ``area`` and ``bbox`` are
exact without decoding (pycocotools on the RLE), so the region policy never decodes: a real SA-1B image has
~100 masks of ~1500x2250 px, 340 MB decoded, of which a policy keeps a few. An RLE is checked when it is
read (its runs must add up to the image; see :func:`rle_runs`), so decoding cannot fail later.

Bad input never raises out of ``read``: an image that cannot be used at all (bad JSON, missing image)
comes back with no regions and one :class:`Failure`; a bad annotation of a good image becomes a failure
beside the image's other regions. Reasons are short and stable (listed per reader); messages name the
file and the record.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from ieiw.schemas.units import Failure, SourceRecordError


# -- masks ----------------------------------------------------------------------------------------
class MaskSource(Protocol):
    def load(self) -> np.ndarray:
        """The mask as a ``bool`` array of shape (height, width)."""


@dataclass(frozen=True, eq=False)
class ArrayMask:
    """A mask already in memory (Open Images PNGs, embedded proposals)."""

    array: np.ndarray

    def load(self) -> np.ndarray:
        return np.asarray(self.array, dtype=bool)


@dataclass(frozen=True)
class RleMask:
    """A compressed COCO RLE (SA-1B's ``segmentation``, SAM's ``coco_rle`` output), checked on creation
    by :func:`rle_mask`, decoded with ``pycocotools.mask.decode``."""

    height: int
    width: int
    counts: str

    def rle(self) -> dict[str, Any]:
        return {"size": [self.height, self.width], "counts": self.counts}

    def load(self) -> np.ndarray:
        from pycocotools import mask as mask_utils

        with warnings.catch_warnings():  # pycocotools 2.0.x under numpy 2: a DeprecationWarning per decode
            warnings.simplefilter("ignore", DeprecationWarning)
            return mask_utils.decode({"size": [self.height, self.width], "counts": self.counts.encode()}) > 0


class BadRle(ValueError):
    """Counts that are not a well-formed compressed COCO RLE of the stated size."""


def rle_runs(counts: str, most: int | None = None) -> np.ndarray:
    """The run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString``, vectorised).

    pycocotools decodes some malformed strings into garbage instead of failing (``""`` and ``"0"``
    give masks of uninitialised memory), so readers check each string with this first. Raises
    :class:`BadRle` on a character outside the alphabet, a truncated or overlong number, or a negative
    run; with ``most`` (the image's pixel count), also on a number beyond it (a run, or the difference of two,
    that no image of that size has), which also keeps the sums below int64's range: a crafted string of 60-bit
    numbers would otherwise wrap around to any total.

    The format: each number is 5-bit groups, least significant first, one character each (value + 48);
    bit 0x20 says another group follows, bit 0x10 of the last group is the sign. From the third number
    on, each is stored as the difference to the number two places before it."""
    try:
        raw = counts.encode("ascii")
    except UnicodeEncodeError as exc:
        raise BadRle(f"character {counts[exc.start]!r} at {exc.start} is not in the RLE alphabet") from None
    codes = np.frombuffer(raw, dtype=np.uint8).astype(np.int64) - 48
    if not len(codes):
        return np.zeros(0, dtype=np.int64)
    bad = np.flatnonzero((codes < 0) | (codes > 63))
    if len(bad):
        raise BadRle(f"character {counts[bad[0]]!r} at {bad[0]} is not in the RLE alphabet")
    more = (codes & 0x20) != 0
    if more[-1]:
        raise BadRle(f"truncated: the number at the end ({len(codes)} characters) is unfinished")
    ends = np.flatnonzero(~more)
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    if lengths.max() > 12:  # 60 bits: far beyond any image
        raise BadRle(f"a number of {lengths.max()} characters")
    shift = np.arange(len(codes)) - np.repeat(starts, lengths)
    values = np.add.reduceat((codes & 0x1F) << (5 * shift), starts)
    negative = (codes[ends] & 0x10) != 0
    values[negative] -= np.left_shift(1, 5 * lengths[negative])
    if most is not None and np.abs(values).max() > most:
        index = int(np.argmax(np.abs(values)))
        raise BadRle(f"number {index} ({int(values[index])}) is beyond the image's {most} pixels")
    runs = values.copy()
    runs[1::2] = np.cumsum(values[1::2])
    runs[2::2] = np.cumsum(values[2::2])
    if (runs < 0).any():
        index = int(np.flatnonzero(runs < 0)[0])
        raise BadRle(f"run {index} is negative ({int(runs[index])})")
    if most is not None and runs.max() > most:  # then their sum stays far below int64's range too
        index = int(np.argmax(runs))
        raise BadRle(f"run {index} ({int(runs[index])}) is longer than the image's {most} pixels")
    return runs


def rle_mask(size: Any, counts: Any, height: int, width: int) -> tuple[RleMask, int, tuple[int, int, int, int]]:
    """Check a COCO RLE against its image and return it with its exact area and tight box.

    ``size`` must be ``[height, width]`` of the image (else :class:`BadRle` with ``size`` in the message's
    first word: callers map it to ``rle_size_mismatch``); ``counts`` a compressed string (or the
    uncompressed list of run lengths) whose runs add up to ``height * width``."""
    from pycocotools import mask as mask_utils

    if not (isinstance(size, list | tuple) and len(size) == 2 and all(_is_int(v) for v in size)):
        raise BadRle(f"malformed size {size!r}: expected [height, width]")
    if [int(size[0]), int(size[1])] != [height, width]:
        raise BadRle(f"size [{size[0]}, {size[1]}] does not match the image's [height, width] [{height}, {width}]")
    pixels = height * width
    if isinstance(counts, list):
        if not all(_is_int(v) and v >= 0 for v in counts):
            raise BadRle("uncompressed counts must be non-negative integers")
        if sum(counts) != pixels:  # Python ints: no int64 overflow, no run beyond the image
            raise BadRle(f"runs cover {sum(counts)} pixels, the image has {pixels}")
        runs = np.asarray(counts, dtype=np.int64)
        counts = mask_utils.frPyObjects({"size": [height, width], "counts": runs}, height, width)["counts"].decode()
    elif isinstance(counts, str):
        runs = rle_runs(counts, pixels)
    else:
        raise BadRle(f"counts is a {type(counts).__name__}, not a compressed RLE string")
    total = int(runs.sum())
    if total != pixels:
        raise BadRle(f"runs cover {total} pixels, the image has {pixels}")
    rle = {"size": [height, width], "counts": counts.encode()}
    area = int(mask_utils.area(rle))
    x, y, w, h = (int(round(v)) for v in mask_utils.toBbox(rle))
    return RleMask(height, width, counts), area, (x, y, w, h)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """The tight box ``(x, y, w, h)`` of a mask's pixels (w, h count pixels, as pycocotools' toBbox);
    ``(0, 0, 0, 0)`` for an empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return (0, 0, 0, 0)
    return (int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1))


# -- records --------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Region:
    """One candidate region of one image, whatever its source.

    ``mask`` (a property) is ``bool`` (height, width), decoded from ``mask_source`` on first access and
    kept; pickling drops the decoded copy. ``bbox`` is the mask's tight box ``(x, y, w, h)`` in pixels
    and ``area`` its pixel count, both exact (not the source's own rounded or normalised values, which
    stay in ``extra``). ``label`` is set by sources that have one (Open Images' DisplayName, with
    ``label_source="open-images"``), else None until a labeller sets it (:meth:`with_label`).
    ``predicted_iou`` / ``stability_score`` are the source's own (SA-1B, SAM; Open Images' PredictedIoU
    is ``predicted_iou``), None where it has none.
    """

    dataset: str  # "sa-1b", "open-images", or an image folder's dataset name
    record_id: str  # unique within the dataset: "<image_id>:<annotation id>"
    image_id: str
    image_path: Path
    width: int
    height: int
    mask_source: MaskSource = field(repr=False)
    bbox: tuple[int, int, int, int]
    area: int
    label: str | None
    label_source: str | None
    predicted_iou: float | None
    stability_score: float | None
    source_file: str  # the annotation file (or image, for proposals) the region came from
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)  # source fields kept as stored

    @functools.cached_property
    def mask(self) -> np.ndarray:
        mask = self.mask_source.load()
        if mask.shape != (self.height, self.width):
            raise ValueError(f"{self.source_file}: record {self.record_id}: mask {mask.shape} is not "
                             f"{(self.height, self.width)}")
        return mask

    @property
    def area_share(self) -> float:
        return self.area / float(self.width * self.height)

    def rle(self) -> dict[str, Any]:
        """The mask as a compressed COCO RLE ``{"size": [h, w], "counts": str}`` (no decode for RLE sources)."""
        if isinstance(self.mask_source, RleMask):
            return self.mask_source.rle()
        from pycocotools import mask as mask_utils

        rle = mask_utils.encode(np.asfortranarray(self.mask.astype(np.uint8)))
        return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode()}

    def with_label(self, label: str | None, label_source: str | None) -> Region:
        return replace(self, label=label, label_source=label_source)

    @classmethod
    def from_mask(cls, mask: np.ndarray, **fields: Any) -> Region:
        """A region of an in-memory mask; ``bbox``, ``area``, ``height`` and ``width`` come from it."""
        mask = np.asarray(mask, dtype=bool)
        fields.setdefault("label", None)
        fields.setdefault("label_source", None)
        fields.setdefault("predicted_iou", None)
        fields.setdefault("stability_score", None)
        return cls(mask_source=ArrayMask(mask), bbox=mask_box(mask), area=int(mask.sum()),
                   height=int(mask.shape[0]), width=int(mask.shape[1]), **fields)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("mask", None)  # the cached decode: cheap to redo, heavy to send
        return state


@dataclass(frozen=True, eq=False)
class ImageRegions:
    """What a reader gives for one image: its regions and the failures of its records.

    An image that cannot be used at all has no regions and one failure. ``orientation`` is how
    ``load_image`` orients the pixels so that the masks fit (``"match"``: as stored, or EXIF-transposed
    when that is what gives the annotated size; ``"apply"``: always upright). ``pixels`` is set by
    sources that decoded the image already (proposals)."""

    dataset: str
    image_id: str
    image_path: Path
    width: int
    height: int
    source_file: str
    regions: tuple[Region, ...] = ()
    failures: tuple[Failure, ...] = ()
    orientation: Literal["match", "apply"] = "match"
    pixels: np.ndarray | None = field(default=None, repr=False)


class RegionSource(Protocol):
    dataset: str

    def count(self) -> int: ...

    def read(self, start: int, stop: int) -> list[ImageRegions]: ...

    def load_image(self, entry: ImageRegions) -> Any: ...

    def problems(self) -> list[str]: ...


def load_source_image(entry: ImageRegions, fmt: str | None = None, quality: int | None = None):
    """``entry``'s image as :class:`ieiw.schemas.source_image.SourceImage` (pixels in the masks'
    coordinates, bytes that decode to exactly them), or :class:`SourceRecordError`: ``missing_image``,
    ``unreadable_image``, ``image_size_mismatch``. The same rules as PhraseCut's ``load_image``: the
    file's bytes are kept unless decoding changed the pixels (mode converted, EXIF transpose) or an EXIF
    tag would make a viewer show them otherwise; then the pixels are re-encoded (JPEG for a stored JPEG,
    PNG otherwise, unless ``fmt``)."""
    from ieiw.imageio import ImageDecodeError, Orientation, SizeMismatch, decode
    from ieiw.schemas.source_image import SourceImage

    path, record = Path(entry.image_path), entry.image_id
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SourceRecordError("missing_image", record, str(path), "image file not found") from None
    except OSError as exc:
        raise SourceRecordError("unreadable_image", record, str(path), str(exc)) from None
    orientation = Orientation.APPLY if entry.orientation == "apply" else Orientation.MATCH
    try:
        decoded = decode(data, orientation, (entry.width, entry.height) if orientation is Orientation.MATCH else None)
    except SizeMismatch as exc:
        raise SourceRecordError("image_size_mismatch", record, str(path), f"{exc} (from {entry.source_file})") from None
    except ImageDecodeError as exc:
        raise SourceRecordError("unreadable_image", record, str(path), str(exc)) from None
    pixels = decoded.pixels
    if pixels.shape[:2] != (entry.height, entry.width):
        raise SourceRecordError("image_size_mismatch", record, str(path),
                                f"decoded {pixels.shape[1]}x{pixels.shape[0]}, regions are for "
                                f"{entry.width}x{entry.height}")
    return SourceImage.from_decoded(data, decoded, fmt, quality)


def failure(reason: str, record_id: str, file: str | Path | None, message: str) -> Failure:
    return SourceRecordError(reason, record_id, str(file) if file is not None else None, message).failure


