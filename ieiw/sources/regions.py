"""One region record for every replacement source, the region choice policy, and the source configs.

Sources (docs/replacement.md, "Region sources"): SA-1B per-image JSON (:mod:`ieiw.sources.sa1b`), Open
Images V7 segmentation (:mod:`ieiw.sources.openimages`) and region proposals over an image folder, by
SAM's automatic mask generator or a classical CPU segmenter (:mod:`ieiw.backends.regions`). Each is a
reader with ``count()`` (images) and ``read(start, stop)`` -> one :class:`ImageRegions` per image, in a
deterministic order, so a unit is a range of images; ``load_image(entry)`` gives the image's pixels.

Masks are **decoded lazily**: a :class:`Region` holds a :class:`MaskSource` (a compressed COCO RLE, or an
array) and :attr:`Region.mask` decodes it on first access (then keeps it). ``area`` and ``bbox`` are
exact without decoding (pycocotools on the RLE), so :func:`choose` never decodes: a real SA-1B image has
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
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

import numpy as np
from pydantic import Field, model_validator

from ieiw.schemas.units import Failure, SourceRecordError
from ieiw.schemas.config import StrictModel, backend_field

# Skip reasons of :func:`choose`, in the order the checks run (a region counts under the first it fails).
REASONS = (
    "region_too_small",
    "region_too_large",
    "low_predicted_iou",
    "low_stability",
    "touches_border",
    "over_per_image_limit",
)


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


def rle_runs(counts: str) -> np.ndarray:
    """The run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString``, vectorised).

    pycocotools decodes some malformed strings into garbage instead of failing (``""`` and ``"0"``
    give masks of uninitialised memory), so readers check each string with this first. Raises
    :class:`BadRle` on a character outside the alphabet, a truncated or overlong number, or a negative
    run.

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
    runs = values.copy()
    runs[1::2] = np.cumsum(values[1::2])
    runs[2::2] = np.cumsum(values[2::2])
    if (runs < 0).any():
        index = int(np.flatnonzero(runs < 0)[0])
        raise BadRle(f"run {index} is negative ({int(runs[index])})")
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
    if isinstance(counts, list):
        if not all(_is_int(v) and v >= 0 for v in counts):
            raise BadRle("uncompressed counts must be non-negative integers")
        runs = np.asarray(counts, dtype=np.int64)
        counts = mask_utils.frPyObjects({"size": [height, width], "counts": runs}, height, width)["counts"].decode()
    elif isinstance(counts, str):
        runs = rle_runs(counts)
    else:
        raise BadRle(f"counts is a {type(counts).__name__}, not a compressed RLE string")
    total = int(runs.sum())
    if total != height * width:
        raise BadRle(f"runs cover {total} pixels, the image has {height * width}")
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
    """``entry``'s image as :class:`ieiw.sources.phrasecut.SourceImage` (pixels in the masks'
    coordinates, bytes that decode to exactly them), or :class:`SourceRecordError`: ``missing_image``,
    ``unreadable_image``, ``image_size_mismatch``. The same rules as PhraseCut's ``load_image``: the
    file's bytes are kept unless decoding changed the pixels (mode converted, EXIF transpose) or an EXIF
    tag would make a viewer show them otherwise; then the pixels are re-encoded (JPEG for a stored JPEG,
    PNG otherwise, unless ``fmt``)."""
    from ieiw.sources.phrasecut import SourceImage
    from ieiw.imageio import ImageDecodeError, Orientation, SizeMismatch, decode

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


# -- the policy -----------------------------------------------------------------------------------
class RegionPolicy(StrictModel):
    """Which regions of an image become replacement candidates; :func:`choose` applies it.

    Checks run in the order of :data:`REASONS`; a region is counted under the first it fails. Score
    thresholds apply only to regions that have the score (SA-1B, SAM; Open Images' PredictedIoU where
    filled); a region without it passes. ``max_per_image`` then keeps the first N of the survivors
    ranked by ``rank``."""

    min_area: float = Field(0.005, ge=0, le=1, description="skip regions covering less of the image (region_too_small)")
    max_area: float = Field(0.5, ge=0, le=1, description="skip regions covering more (region_too_large)")
    min_predicted_iou: float | None = Field(None, ge=0, le=1, description="skip regions whose source's predicted "
                                                                          "IoU is lower (low_predicted_iou)")
    min_stability_score: float | None = Field(None, ge=0, le=1, description="skip regions whose stability score "
                                                                            "is lower (low_stability)")
    border: Literal["keep", "skip"] = Field("keep", description="regions touching the image border: keep, or "
                                                                "skip (touches_border)")
    border_margin: int = Field(1, ge=1, description="px from the edge that count as touching it")
    max_per_image: int | None = Field(8, ge=1, description="keep at most this many regions per image "
                                                            "(over_per_image_limit); null = all")
    rank: Literal["area", "score"] = Field(
        "area", description="which survivors max_per_image keeps: the largest (area), or the best scored "
                            "(score: predicted IoU, then stability, then area; unscored regions rank by area "
                            "after scored ones)")

    @model_validator(mode="after")
    def _bounds(self) -> RegionPolicy:
        if self.min_area > self.max_area:
            raise ValueError(f"min_area {self.min_area} is above max_area {self.max_area}")
        return self


def touches_border(region: Region, margin: int = 1) -> bool:
    """Whether the mask has a pixel within ``margin`` px of the edge (exact: ``bbox`` is the mask's
    tight box)."""
    x, y, w, h = region.bbox
    return x < margin or y < margin or x + w > region.width - margin or y + h > region.height - margin


def _rank_key(policy: RegionPolicy, index: int, region: Region) -> tuple:
    if policy.rank == "score":
        scored = region.predicted_iou is not None or region.stability_score is not None
        return (not scored, -(region.predicted_iou or 0.0), -(region.stability_score or 0.0), -region.area, index)
    return (-region.area, index)


def choose(regions: Iterable[Region], policy: RegionPolicy) -> tuple[list[Region], Counter]:
    """The regions of ONE image that ``policy`` keeps (in the input's order), and the skipped ones counted
    by reason (:data:`REASONS`). Never decodes a mask. Raises ``ValueError`` for regions of several images."""
    regions = list(regions)
    if len({(r.dataset, r.image_id) for r in regions}) > 1:
        raise ValueError("choose() takes the regions of one image; got several images")
    skipped: Counter = Counter()
    survivors: list[tuple[int, Region]] = []
    for index, region in enumerate(regions):
        share = region.area_share
        if share < policy.min_area:
            skipped["region_too_small"] += 1
        elif share > policy.max_area:
            skipped["region_too_large"] += 1
        elif (policy.min_predicted_iou is not None and region.predicted_iou is not None
              and region.predicted_iou < policy.min_predicted_iou):
            skipped["low_predicted_iou"] += 1
        elif (policy.min_stability_score is not None and region.stability_score is not None
              and region.stability_score < policy.min_stability_score):
            skipped["low_stability"] += 1
        elif policy.border == "skip" and touches_border(region, policy.border_margin):
            skipped["touches_border"] += 1
        else:
            survivors.append((index, region))
    if policy.max_per_image is not None and len(survivors) > policy.max_per_image:
        ranked = sorted(survivors, key=lambda item: _rank_key(policy, *item))
        kept_indices = {index for index, _ in ranked[: policy.max_per_image]}
        skipped["over_per_image_limit"] += len(survivors) - len(kept_indices)
        survivors = [(index, region) for index, region in survivors if index in kept_indices]
    return [region for _, region in survivors], skipped


# -- source configs -------------------------------------------------------------------------------
class ReplaceSampleSpec(StrictModel):
    """Make the bundled synthetic replacement sample (:mod:`ieiw.samples.replacement`) when the
    source's root is missing: both formats are written side by side into the root's parent
    (``sa1b/`` and ``open-images/``), so the root must be named after its format."""

    images: int = Field(30, ge=1, description="images per format")
    seed: int = 0
    width: int = Field(320, ge=64)
    height: int = Field(240, ge=64)


def _resolve(path: Path, base: Path | None) -> Path:
    path = Path(path)
    return path if path.is_absolute() or base is None else Path(base) / path


class _SourceConfig(StrictModel):
    root: Path
    limit: int | None = Field(None, ge=1, description="read at most this many images")

    def resolved_root(self, base: Path | None = None) -> Path:
        return _resolve(self.root, base)

    def prepare(self, base: Path | None = None) -> None:
        """Make the bundled sample when ``samples`` is set and the root is missing (race-safe)."""
        samples = getattr(self, "samples", None)
        if samples is not None:
            from ieiw.samples.replacement import ensure_replace_samples

            ensure_replace_samples(self.resolved_root(base).parent, samples.images, samples.seed, samples.width,
                                   samples.height)

    def fingerprint(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"samples"}) | {
            "samples": None if getattr(self, "samples", None) is None else self.samples.model_dump()}

    def preflight(self, base: Path | None = None) -> list[str]:
        if getattr(self, "samples", None) is not None and not self.resolved_root(base).exists():
            return []  # made by prepare()
        try:
            return self.open(base).problems()
        except (ValueError, FileNotFoundError) as exc:
            return [str(exc)]


def _sample_root_named(config: Any, name: str) -> Any:
    if config.samples is not None and Path(config.root).name != name:
        raise ValueError(f"with samples set, root must be a folder named {name!r} (the sample writes sa1b/ "
                         f"and open-images/ side by side), not {str(config.root)!r}")
    return config


class SA1BSourceConfig(_SourceConfig):
    """SA-1B: a folder (searched recursively, e.g. one subfolder per extracted tar shard) of
    ``sa_<id>.jpg`` + ``sa_<id>.json``."""

    type: Literal["sa1b"] = "sa1b"
    samples: ReplaceSampleSpec | None = Field(None, description="make the bundled sample if root is missing")

    @model_validator(mode="after")
    def _sample_root(self) -> SA1BSourceConfig:
        return _sample_root_named(self, "sa1b")

    def open(self, base: Path | None = None):
        from ieiw.sources.sa1b import SA1BSource

        return SA1BSource(self.resolved_root(base), limit=self.limit)


class OpenImagesSourceConfig(_SourceConfig):
    """Open Images V7 segmentation: the mask CSV, the class-description CSV (with or without its header),
    mask PNGs (a folder, or the 16 ``*-masks-<hex>.zip`` files in it) and images, all under ``root``."""

    type: Literal["open-images"] = "open-images"
    annotations: str = Field("train-annotations-object-segmentation.csv", description="mask CSV, relative to root")
    classes: str = Field("oidv7-class-descriptions.csv", description="LabelName,DisplayName CSV, relative to root")
    images: str = Field("images", description="image folder, relative to root: <images>/<ImageID>.<image_ext>")
    image_ext: str = "jpg"
    masks: str = Field("masks", description="folder of mask PNGs and/or the masks zips, relative to root")
    samples: ReplaceSampleSpec | None = Field(None, description="make the bundled sample if root is missing")

    @model_validator(mode="after")
    def _sample_root(self) -> OpenImagesSourceConfig:
        return _sample_root_named(self, "open-images")

    def open(self, base: Path | None = None):
        from ieiw.sources.openimages import OpenImagesSource

        return OpenImagesSource(self.resolved_root(base), annotations=self.annotations, classes=self.classes,
                                images=self.images, image_ext=self.image_ext, masks=self.masks, limit=self.limit)


class ImageFolderSourceConfig(_SourceConfig):
    """Any folder of images, segmented by a ``regions`` backend (``sam`` or ``embedded``)."""

    type: Literal["proposals"] = "proposals"
    dataset: str = Field("images", description="the name regions and exemplars record as their dataset")
    extensions: list[str] = Field(["jpg", "jpeg", "png", "webp"], description="file name endings read (any case)")
    regions: backend_field("regions") = Field(  # type: ignore[valid-type]
        {"backend": "embedded"}, validate_default=True, description="the proposal backend")

    def open(self, base: Path | None = None):
        from ieiw.backends.regions import ImageFolderSource

        return ImageFolderSource(self.resolved_root(base), self.regions, dataset=self.dataset,
                                 extensions=self.extensions, limit=self.limit)

    def fingerprint(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"regions"}) | {"regions": self.regions.fingerprint()}

    def preflight(self, base: Path | None = None) -> list[str]:
        return self.regions.preflight() + super().preflight(base)


RegionSourceConfig = Annotated[
    SA1BSourceConfig | OpenImagesSourceConfig | ImageFolderSourceConfig, Field(discriminator="type")
]
