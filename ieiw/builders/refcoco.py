"""Referring segmentation as an edit: RefCOCO and gRefCOCO -> ``refer-segment`` rows (docs/multitask.md).

Layout (docs/formats.md, "RefCOCO", "gRefCOCO"), ``root`` being the ``coco_2014/`` folder:

- RefCOCO: ``refcoco/refs(unc).p``, a pickled list of refs ``{ref_id, ann_id, image_id, category_id,
  split, sentences: [{sent_id, sent, tokens}]}``, and ``refcoco/instances.json`` (COCO ``images``,
  ``annotations``, ``categories``).
- gRefCOCO: ``grefcoco/grefs(unc).json`` (or ``.p``) and ``grefcoco/instances.json``; ``ann_id`` and
  ``category_id`` are lists, ``ann_id == [-1]`` is a ref with no target.
- Images: ``images/train2014/{file_name}`` (``file_name`` from ``instances.json``).

Each path can be set on its own (``refs``, ``instances``, ``images``); ``split_by`` picks ``refs(unc)``,
``refs(google)``, ... Only refs of ``split`` are read, in file order. The pickle is read with an unpickler
that builds plain containers only (a ref file needs nothing else), so a file that asks for anything
more is refused rather than run.

Masks: polygons go through ``pycocotools.mask.frPyObjects`` and ``decode``, RLE as its run lengths
(compressed ``counts`` strings read by ieiw and checked to cover the image exactly, since pycocotools'
decoder trusts them; then, as uncompressed count lists, through ``frPyObjects``); the parts of
an annotation and the annotations of a multi-target ref are unioned. (RefCOCO's loader sums the parts and
keeps pixels equal to 1, which drops pixels where two parts of one object overlap; ieiw keeps them.)
gRefCOCO skips crowd annotations, as its loader does; a ref whose targets are all crowds is skipped
(``crowd_only``). Polygons of fewer than 3 points are left out (``frPyObjects`` would take a 2-point one
for a box).

Rows, one per ref: ``{object}`` is one of the ref's sentences, picked by the row id and lower-cased; the
target is the source with the mask blended 50/50 with the row's colour (:mod:`ieiw.builders.overlay`),
PNG. **Object-absent rows** (target = the source's own bytes, empty mask, the instruction still names an
object), about ``absent_share`` of all rows:

- gRefCOCO has its own: every no-target ref is one. ``absent_share`` defaults to 0 there (no extra rows).
- RefCOCO has none, and neither has the official RefCOCO loader, so ``absent_share`` defaults to 0. Our
  option: with ``absent_share`` set, for each ref an extra absent row is made with probability
  ``absent_share / (1 - absent_share)`` (seeded by the ref id; at 0.2 absent rows are about 0.2 of the
  rows): the same image with a sentence of a ref of a *category that has no annotation in
  that image* (COCO annotates every instance of its 80 categories, so that object is not there), the
  donor ref and its sentence picked by the row id. The row's ``origin.record_id`` is ``{ref_id}:absent``.

Record-level problems never stop a unit; each is a failure naming the file and the ref (``bad_ref``,
``duplicate_record`` for a ref_id an earlier ref of the split has, ``no_sentence``, ``no_image_info``,
``missing_annotation``, ``annotation_image_mismatch``, ``bad_segmentation`` (also for a polygon point far
outside the image, or RLE runs that do not cover it exactly), ``degenerate_polygons``, ``rle_size_mismatch``,
``empty_mask``, ``missing_image``, ``unreadable_image``, ``image_size_mismatch``, ``path_outside_root`` for a
``file_name`` that is no path under the images folder: not a string, ``..``, absolute, symlinked out;
:mod:`ieiw.schemas.paths`). File-level problems (a missing or unreadable refs or instances file, a split no
ref has) raise :class:`RefFormatError` or ``FileNotFoundError`` before any unit.
"""

from __future__ import annotations

import functools
import io
import json
import pickle
import reprlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from ieiw.builders.captions import OVERLAY_TASK, add_caption_rows, captions_fingerprint, captions_preflight, coco_id
from ieiw.builders.overlay import (
    ALPHA,
    mask_png,
    overlay,
    pick_colour,
    pick_index,
    read_source,
    templates_for,
    unit_interval,
)
from ieiw.builders.template_files import template_file_problems
from ieiw.imageio import encode, extension
from ieiw.samples.segmentation import GREFCOCO_MARKER, SampleSpec, ensure_refcoco_sample
from ieiw.schemas.config import BuilderConfig
from ieiw.schemas.lazy import locked_cached_property
from ieiw.schemas.paths import PATH_OUTSIDE_ROOT, PathOutsideRoot, path_under
from ieiw.schemas.registry import register_builder
from ieiw.schemas.rows import builder_cell, image_cell, origin_cell, row_id, text_field
from ieiw.schemas.source_image import SourceImage
from ieiw.schemas.units import BuildContext, CandidateBuilder, SourceRecordError, UnitResult, WorkUnit

REDRAW_FORMAT = 1  # builder.params["redraw"]: bump when what a trainer reads there changes
TASK = "refer-segment"
LICENSES = {
    "refcoco": "RefCOCO annotations as released (refer); COCO images under the Flickr terms of use",
    "grefcoco": "gRefCOCO annotations as released (GRES); COCO images under the Flickr terms of use",
}
# The official RefCOCO loader has no object-absent rows (only COCO-Stuff has empty classes, gRefCOCO its own
# no-target refs): extra absent rows are our option, off by default.
DEFAULT_ABSENT_SHARE = {"refcoco": 0.0, "grefcoco": 0.0}


class RefFormatError(ValueError):
    """A refs or instances file ieiw cannot use at all; the one-line message names the file."""


class RefCocoConfig(BuilderConfig):
    """RefCOCO / gRefCOCO referring segmentation rendered as colour overlays: the `refcoco:` section
    (and `grefcoco:`, the same with ``variant: grefcoco``, so one build can hold both)."""

    variant: Literal["refcoco", "grefcoco"] = "refcoco"
    root: Path = Field(description="the coco_2014 folder: refcoco/ or grefcoco/, and images/train2014/")
    refs: Path | None = Field(None, description="default: root/refcoco/refs({split_by}).p, or for gRefCOCO "
                                                "root/grefcoco/grefs({split_by}).json (else .p)")
    instances: Path | None = Field(None, description="default: root/{variant}/instances.json")
    images: Path | None = Field(None, description="default: root/images/train2014")
    split_by: str = "unc"
    split: str = Field("train", description="the refs' split to read: train, val, testA, ...")
    limit: int | None = Field(None, ge=1, description="read at most this many refs of the split")
    absent_share: float | None = Field(None, ge=0, lt=1, description="share of object-absent rows made from "
                                       "other refs' sentences; default 0.2 for RefCOCO, 0 for gRefCOCO "
                                       "(its own no-target refs are absent rows)")
    samples: SampleSpec | None = Field(None, description="make the synthetic sample at root if it is missing")
    seed: int = 0
    templates: Path | None = Field(None, description="a segmentation template file; default: the shipped one")
    captions: Path | None = Field(None, description="a COCO captions file (annotations/captions_{split}.json): "
                                  "also write adaptation rows, each rendered target with its image's caption")

    def absent(self) -> float:
        return DEFAULT_ABSENT_SHARE[self.variant] if self.absent_share is None else self.absent_share

    def refs_path(self) -> Path:
        if self.refs is not None:
            return Path(self.refs)
        if self.variant == "refcoco":
            return Path(self.root) / "refcoco" / f"refs({self.split_by}).p"
        pickled = Path(self.root) / "grefcoco" / f"grefs({self.split_by}).p"
        return pickled if pickled.exists() else pickled.with_suffix(".json")

    def instances_path(self) -> Path:
        return Path(self.instances) if self.instances is not None else Path(self.root) / self.variant / "instances.json"

    def images_dir(self) -> Path:
        return Path(self.images) if self.images is not None else Path(self.root) / "images" / "train2014"

    def preflight(self) -> list[str]:
        if not self.enabled:
            return []
        lines = template_file_problems(f"{self.variant}.templates", self.templates, templates_for)
        if self.samples is not None and not (Path(self.root) / GREFCOCO_MARKER).exists():
            return lines  # the sample is made by the build's prepare step
        try:
            RefSource.from_config(self).check()
        except (RefFormatError, FileNotFoundError) as exc:
            lines.append(f"{self.variant}: {exc}")
        return lines + captions_preflight(self.variant, self.captions)


class GRefCocoConfig(RefCocoConfig):
    """The `grefcoco:` section: RefCocoConfig with gRefCOCO's defaults."""

    variant: Literal["grefcoco"] = "grefcoco"


# -- reading -------------------------------------------------------------------------------------
_REFUSED_OPCODES = (pickle.GLOBAL, pickle.STACK_GLOBAL, pickle.INST, pickle.OBJ, pickle.NEWOBJ, pickle.NEWOBJ_EX,
                    pickle.REDUCE, pickle.BUILD, pickle.EXT1, pickle.EXT2, pickle.EXT4, pickle.PERSID,
                    pickle.BINPERSID, pickle.BYTEARRAY8, pickle.NEXT_BUFFER, pickle.READONLY_BUFFER)


def _refuse(opcode: bytes) -> Any:
    """A dispatch entry that stops the load at ``opcode``, naming it."""

    def refuse(unpickler: pickle._Unpickler) -> None:
        raise pickle.UnpicklingError(f"opcode {opcode!r} builds objects or buffers; a refs file holds plain lists "
                                     "and dicts")
    return refuse


class _PlainUnpickler(pickle._Unpickler):
    """Builds only what pickle makes without imports (dicts, lists, strings, numbers).

    Python's own unpickler, not the C one: its memo is a dict, where the C unpickler sizes an array by the
    largest memo index a file names (4 bytes changed in a refs file asked for 12 GB). The opcodes that build
    objects, call things or preallocate buffers are refused outright (a ``BYTEARRAY8`` of 2**40 bytes would
    be allocated before its bytes are read)."""

    dispatch: ClassVar[dict[int, Any]] = {**pickle._Unpickler.dispatch,
                                          **{opcode[0]: _refuse(opcode) for opcode in _REFUSED_OPCODES}}

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"the file asks for {module}.{name}; a refs file holds plain lists and dicts")

    def _decode_string(self, value: bytes) -> str:
        """A Python 2 byte string (the release's refs files are Python 2 pickles) as text: UTF-8, else
        Latin-1, string by string, so that one string that is not UTF-8 changes no other record's text."""
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.decode("latin-1")


def load_refs_file(path: Path) -> list[Any]:
    """A refs file (pickle, or JSON for ``.json``) as a list; :class:`RefFormatError` naming it otherwise."""
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        raise FileNotFoundError(f"{path}: not found") from None
    if path.suffix == ".json":
        try:
            refs = json.loads(data)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, a 5000-digit number
            raise RefFormatError(f"{path}: not valid JSON ({exc}); a truncated download? fetch it again") from None
    else:
        try:
            refs = _PlainUnpickler(io.BytesIO(data), fix_imports=True).load()
        except Exception as exc:  # noqa: BLE001 - damaged opcodes raise anything: struct.error, KeyError, ...
            raise RefFormatError(f"{path}: not a readable refs pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(refs, list):
        raise RefFormatError(f"{path}: expected a list of refs, found {type(refs).__name__}")
    return refs


def load_instances(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        raise FileNotFoundError(f"{path}: not found") from None
    try:
        instances = json.loads(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, a 5000-digit number
        raise RefFormatError(f"{path}: not valid JSON ({exc}); a truncated download? fetch it again") from None
    if not isinstance(instances, dict) or not all(isinstance(instances.get(k), list)
                                                  for k in ("images", "annotations", "categories")):
        raise RefFormatError(f"{path}: expected a COCO instances file with images, annotations and categories lists")
    return instances


ID_LIMIT = 2**64  # an id no 64-bit integer holds is no COCO id (and past 4300 digits str() refuses it)


def _id(value: Any) -> int | None:
    """A COCO id (:func:`~ieiw.builders.captions.coco_id`), None when missing, malformed or out of range."""
    try:
        number = coco_id(value)
    except ValueError:  # a digit string int() refuses: "²" (str.isdigit() takes it), or 5000 digits
        return None
    return number if number is not None and -ID_LIMIT < number < ID_LIMIT else None


def _shown(value: Any) -> str:
    """A record's value for a message: short, and safe for the cyclic and very deep lists a pickle can hold."""
    try:
        return reprlib.repr(value)
    except ValueError:  # an int of more than 4300 digits has no repr
        return f"<{type(value).__name__} too large to show>"


def _split_of(raw: dict[str, Any]) -> str | None:
    split = raw.get("split")
    return split if isinstance(split, str) else None


def _text(value: Any) -> str:
    """Text of a sentence or token as a row can hold it: bytes (Python 2 pickles) decoded, lone surrogates
    (valid in JSON and in pickles, unwritable in Arrow) mended, whitespace runs made one space."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return " ".join(text_field(value).split()) if isinstance(value, str) else ""


@dataclass(frozen=True)
class Ref:
    ref_id: str
    raw: dict[str, Any]
    split: str
    index: int = 0  # its place in the refs file
    repeat_of: int | None = None  # the place of an earlier ref with this ref_id: this one is a duplicate_record


class RefSource:
    """A refs file + an instances file + an image folder; loaded on first use, once per process."""

    def __init__(self, variant: str, refs_path: Path, instances_path: Path, images_dir: Path, split: str,
                 limit: int | None = None):
        self.variant, self.refs_path, self.instances_path = variant, Path(refs_path), Path(instances_path)
        self.images_dir, self.split, self.limit = Path(images_dir), split, limit

    @classmethod
    def from_config(cls, config: RefCocoConfig) -> RefSource:
        return cls(config.variant, config.refs_path(), config.instances_path(), config.images_dir(), config.split,
                   config.limit)

    @locked_cached_property
    def _loaded(self) -> dict[str, Any]:
        refs = load_refs_file(self.refs_path)
        instances = load_instances(self.instances_path)
        images = {_id(i.get("id")): i for i in instances["images"] if isinstance(i, dict)}
        anns = {_id(a.get("id")): a for a in instances["annotations"] if isinstance(a, dict)}
        categories_in_image: dict[int, set[int]] = defaultdict(set)
        for ann in anns.values():
            image, category = _id(ann.get("image_id")), _id(ann.get("category_id"))
            if image is not None and category is not None:
                categories_in_image[image].add(category)
        splits = sorted({split for r in refs if isinstance(r, dict) and (split := _split_of(r)) is not None})
        if self.split not in splits:
            shown = ", ".join(_shown(text_field(split))[1:-1] for split in splits[:20])
            raise RefFormatError(f"{self.refs_path}: no ref of split {self.split!r}; the file has {shown or 'none'}")
        chosen = []
        first: dict[str, int] = {}  # ref_id -> the place of its first ref: a row id is made of the ref_id
        for index, raw in enumerate(refs):
            if isinstance(raw, dict) and _split_of(raw) == self.split:
                ref_id = _id(raw.get("ref_id"))
                key = str(ref_id) if ref_id is not None else f"#{index}"
                chosen.append(Ref(key, raw, self.split, index, first.get(key)))
                first.setdefault(key, index)
        by_category: dict[int, list[Ref]] = defaultdict(list)  # donors for absent rows: all of the split
        for ref in chosen:
            if ref.repeat_of is not None:
                continue
            for category in _ids(ref.raw.get("category_id")):
                if category >= 0 and _sentences(ref.raw):
                    by_category[category].append(ref)
        return {"refs": chosen[: self.limit] if self.limit else chosen, "images": images, "anns": anns,
                "categories_in_image": categories_in_image, "by_category": dict(by_category)}

    def check(self) -> None:
        _ = self._loaded

    @property
    def refs(self) -> list[Ref]:
        self.check()
        return self._loaded["refs"]

    def image_info(self, image_id: int | None) -> dict[str, Any] | None:
        return self._loaded["images"].get(image_id)

    def annotation(self, ann_id: int) -> dict[str, Any] | None:
        return self._loaded["anns"].get(ann_id)

    def donor(self, image_id: int, *key: Any) -> Ref | None:
        """A ref of a category with no annotation in ``image_id``, picked by ``key``; None if none."""
        present = self._loaded["categories_in_image"].get(image_id, set())
        categories = sorted(c for c in self._loaded["by_category"] if c not in present)
        if not categories:
            return None
        category = categories[pick_index(len(categories), "donor-category", *key)]
        donors = self._loaded["by_category"][category]
        return donors[pick_index(len(donors), "donor-ref", *key)]


def _ids(value: Any) -> list[int]:
    values = value if isinstance(value, list | tuple) else [value]
    return [v for v in (_id(x) for x in values) if v is not None]


def _sentences(raw: dict[str, Any]) -> list[tuple[str, str]]:
    """(sent_id, text) of every usable sentence: ``sent``, else the tokens joined."""
    sentences = raw.get("sentences")
    if not isinstance(sentences, list | tuple):
        return []
    out = []
    for index, sentence in enumerate(sentences):
        if not isinstance(sentence, dict):
            continue
        tokens = sentence.get("tokens")
        text = _text(sentence.get("sent")) or (
            " ".join(filter(None, map(_text, tokens))) if isinstance(tokens, list | tuple) else "")
        if text:
            sent_id = sentence.get("sent_id", index)
            number = _id(sent_id)
            shown = text_field(sent_id) if isinstance(sent_id, str) else str(index if number is None else number)
            out.append((shown, text))
    return out


RLE_DIGITS_PER_COUNT = 7  # 35 bits: COCO's encoder (maskApi.c rleToString) needs at most 7 for a 32-bit count


def compressed_counts(text: bytes) -> list[int]:
    """A compressed RLE ``counts`` string as its run lengths, read as pycocotools' ``rleFrString`` reads it
    (5-bit digits from ``'0'``, a continuation bit, a sign bit, deltas from the third run on); ``ValueError``
    for a string that is not one. Read here, not by pycocotools, because its decoder trusts the string: one
    whose runs do not add up to the image decodes to whatever memory held (a mask that changes between
    runs), one cut inside a number is read past its end."""
    counts: list[int] = []
    value = shift = 0
    for position, byte in enumerate(text):
        digit = byte - 48
        if not 0 <= digit < 64:
            raise ValueError(f"byte {bytes([byte])!r} at {position} is no RLE digit")
        value |= (digit & 0x1F) << shift
        shift += 5
        if digit & 0x20:  # more digits of this count follow
            if shift >= 5 * RLE_DIGITS_PER_COUNT:
                raise ValueError(f"a count at {position} runs past {RLE_DIGITS_PER_COUNT} digits")
            continue
        if digit & 0x10:  # negative: sign-extend
            value -= 1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
        value = shift = 0
    if shift:
        raise ValueError("the string ends inside a count")
    return counts


def _coordinates_inside(values: list[Any], limit: int) -> bool:
    """Every value a finite number within ``limit`` of the image's side (``-limit .. 2*limit``). A point far
    outside is no annotation, and pycocotools rasterises every edge point by point: one coordinate of 1e12
    would take all the memory there is."""
    return all(isinstance(v, int | float) and not isinstance(v, bool) and -limit <= v <= 2 * limit for v in values)


def annotation_mask(ann: dict[str, Any], height: int, width: int, record_id: str, file: str) -> np.ndarray:
    """An annotation's ``segmentation`` as a 0/1 ``uint8`` (height, width) mask, parts unioned."""
    from pycocotools import mask as mask_utils

    seg = ann.get("segmentation")
    ann_id = ann.get("id")

    def fail(reason: str, message: str) -> SourceRecordError:
        return SourceRecordError(reason, record_id, file, f"annotation {ann_id}: {message}")

    if isinstance(seg, list):
        polygons = []
        for part in seg:
            if not isinstance(part, list) or not all(
                    isinstance(v, int | float) and not isinstance(v, bool) for v in part):
                raise fail("bad_segmentation", "a polygon is not a list of numbers")
            if len(part) % 2:
                raise fail("bad_segmentation", f"a polygon has an odd number of coordinates ({len(part)})")
            if not (_coordinates_inside(part[0::2], width) and _coordinates_inside(part[1::2], height)):
                raise fail("bad_segmentation", f"a polygon point is not a number near the {width}x{height} image")
            if len(part) >= 6:
                polygons.append([float(v) for v in part])
        if not polygons:
            raise fail("degenerate_polygons", "no polygon has 3 or more points")
        rles = mask_utils.frPyObjects(polygons, height, width)
    elif isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if not (isinstance(size, list | tuple) and len(size) == 2 and [_id(v) for v in size] == [height, width]):
            raise fail("rle_size_mismatch", f"RLE size {_shown(size)} is not the image's [{height}, {width}]")
        if isinstance(counts, str | bytes):
            try:
                counts = compressed_counts(counts.encode("ascii") if isinstance(counts, str) else counts)
            except ValueError as exc:  # UnicodeEncodeError included
                raise fail("bad_segmentation", f"compressed RLE counts: {exc}") from None
        elif not isinstance(counts, list):
            raise fail("bad_segmentation", f"RLE counts of type {type(counts).__name__}")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts):
            raise fail("bad_segmentation", "RLE counts are not non-negative integers")
        if sum(counts) != height * width:
            raise fail("bad_segmentation", f"RLE counts cover {sum(counts)} pixels, not {height * width}")
        rles = [mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)]
    else:
        raise fail("bad_segmentation", f"segmentation of type {type(seg).__name__}")
    try:
        decoded = mask_utils.decode(rles)
    except Exception as exc:  # noqa: BLE001 - pycocotools raises plain exceptions for a corrupt RLE
        raise fail("bad_segmentation", f"pycocotools cannot decode it: {exc}") from None
    return (decoded.reshape(height, width, -1).max(axis=2) > 0).astype(np.uint8)


# -- the builder ---------------------------------------------------------------------------------
class RefSkipped(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Target:
    mask: np.ndarray  # 0/1, all zero for a no-target ref
    ann_ids: list[int]
    crowd_skipped: list[int]
    no_target: bool


class RefCocoBuilder(CandidateBuilder):
    def __init__(self, config: RefCocoConfig, context: BuildContext, name: str = "refcoco"):
        self.name = name
        self.config = config
        self.unit_size = context.unit_size

    @functools.cached_property
    def source(self) -> RefSource:
        return RefSource.from_config(self.config)

    @functools.cached_property
    def templates(self):
        return templates_for(self.config.templates)

    @property
    def dataset(self) -> str:
        return self.config.variant

    def prepare(self) -> None:
        spec = self.config.samples
        if spec is not None:
            ensure_refcoco_sample(Path(self.config.root), spec.images, spec.seed, spec.width, spec.height)

    def params(self) -> dict[str, Any]:
        """What shapes a row's content (part of its id); which rows exist (absent_share, seed) is not."""
        return {"alpha": ALPHA, "target_format": "png", "union": "parts+targets", "skip_crowd": self.skip_crowd}

    @property
    def skip_crowd(self) -> bool:
        return self.config.variant == "grefcoco"

    def fingerprint(self) -> dict[str, Any]:
        c = self.config
        return {**self.params(), "variant": c.variant, "refs": str(c.refs_path().resolve()),
                "instances": str(c.instances_path().resolve()), "images": str(c.images_dir().resolve()),
                "split": c.split, "limit": c.limit, "absent_share": c.absent(), "seed": c.seed,
                "templates": self.templates.digest(), "captions": captions_fingerprint(c.captions),
                "redraw": REDRAW_FORMAT}

    def backends(self) -> dict[str, str]:
        return {"render": "overlay", "masks": "pycocotools"}

    def plan(self) -> list[WorkUnit]:
        total = len(self.source.refs)
        prefix = self.dataset if self.name == self.dataset else f"{self.name}-{self.dataset}"
        return [WorkUnit(key=f"{prefix}-{self.config.split}-{index:05d}",
                         payload={"start": start, "stop": min(start + self.unit_size, total)})
                for index, start in enumerate(range(0, total, self.unit_size))]

    def build_unit(self, unit: WorkUnit) -> UnitResult:
        refs = self.source.refs[unit.payload["start"]:unit.payload["stop"]]
        result = UnitResult(records=len(refs))
        images: dict[int, SourceImage] = {}
        for ref in refs:
            try:
                image_id, info, sentences = self._check_ref(ref)
                if image_id not in images:
                    images[image_id] = self._image(ref, image_id, info)
                image = images[image_id]
                target = self._target(ref, image_id, image.height, image.width)
            except SourceRecordError as err:
                result.failures.append(err.failure)
                continue
            except RefSkipped as skip:
                result.skipped[skip.reason] += 1
                continue
            result.rows += add_caption_rows([self._target_row(ref, image_id, image, target, sentences)],
                                            self.config.captions, OVERLAY_TASK, result.counters,
                                            rendered=lambda row, target=target: not target.no_target)
            result.counters["no_target_rows" if target.no_target else "target_rows"] += 1
            if target.crowd_skipped:
                result.counters["crowd_targets_skipped"] += len(target.crowd_skipped)
            share = self.config.absent()
            if share > 0 and unit_interval("absent", self.config.seed, ref.ref_id) < share / (1 - share):
                row = self._borrowed_row(ref, image_id, image)
                if row is None:
                    result.counters["no_absent_category"] += 1
                else:
                    result.rows.append(row)
                    result.counters["absent_rows"] += 1
        return result

    # -- one ref -------------------------------------------------------------------------------
    def _check_ref(self, ref: Ref) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        file = str(self.source.refs_path)
        if ref.repeat_of is not None:
            raise SourceRecordError("duplicate_record", ref.ref_id, file,
                                    f"ref {ref.index}: ref_id {ref.ref_id} is also ref {ref.repeat_of}'s")
        image_id = _id(ref.raw.get("image_id"))
        if image_id is None or "ann_id" not in ref.raw:
            raise SourceRecordError("bad_ref", ref.ref_id, file, "ref has no integer image_id or no ann_id")
        sentences = _sentences(ref.raw)
        if not sentences:
            raise SourceRecordError("no_sentence", ref.ref_id, file, "ref has no sentence with text")
        info = self.source.image_info(image_id)
        if info is None or not (_id(info.get("width")) and _id(info.get("height")) and info.get("file_name")):
            raise SourceRecordError("no_image_info", ref.ref_id, str(self.source.instances_path),
                                    f"image {image_id} has no entry with file_name, width and height")
        return image_id, info, sentences

    def _image(self, ref: Ref, image_id: int, info: dict[str, Any]) -> SourceImage:
        try:
            path = path_under(self.source.images_dir, info["file_name"])
        except PathOutsideRoot as exc:  # a file_name of ../x or /x, or symlinked out: nothing is read
            raise SourceRecordError(PATH_OUTSIDE_ROOT, ref.ref_id, str(self.source.instances_path),
                                    f"image {image_id}: file_name: {exc}") from None
        return read_source(path, (_id(info["width"]), _id(info["height"])), ref.ref_id,
                           f"{self.source.instances_path} image {image_id}")

    def _target(self, ref: Ref, image_id: int, height: int, width: int) -> Target:
        file = str(self.source.refs_path)
        raw_ids = ref.raw.get("ann_id")
        ann_ids = _ids(raw_ids)
        count = len(raw_ids) if isinstance(raw_ids, list | tuple) else 1
        if not ann_ids or len(ann_ids) != count:
            raise SourceRecordError("bad_ref", ref.ref_id, file,
                                    f"ann_id {_shown(raw_ids)} is not an id or a list of ids")
        if -1 in ann_ids:
            if ann_ids != [-1]:
                raise SourceRecordError("bad_ref", ref.ref_id, file,
                                        f"ann_id {_shown(raw_ids)} mixes -1 (no target) with ids")
            return Target(np.zeros((height, width), np.uint8), [], [], True)
        mask = np.zeros((height, width), np.uint8)
        used, crowds = [], []
        instances = str(self.source.instances_path)
        for ann_id in ann_ids:
            ann = self.source.annotation(ann_id)
            if ann is None:
                raise SourceRecordError("missing_annotation", ref.ref_id, instances, f"annotation {ann_id} is not there")
            if _id(ann.get("image_id")) != image_id:
                raise SourceRecordError("annotation_image_mismatch", ref.ref_id, instances,
                                        f"annotation {ann_id} belongs to image {_shown(ann.get('image_id'))}, "
                                        f"the ref to {image_id}")
            if self.skip_crowd and ann.get("iscrowd"):
                crowds.append(ann_id)
                continue
            mask |= annotation_mask(ann, height, width, ref.ref_id, instances)
            used.append(ann_id)
        if not used:
            raise RefSkipped("crowd_only")
        if not mask.any():
            raise SourceRecordError("empty_mask", ref.ref_id, instances, f"annotations {used} cover no pixel")
        return Target(mask, used, crowds, False)

    # -- rows ----------------------------------------------------------------------------------
    def _target_row(self, ref: Ref, image_id: int, image: SourceImage, target: Target,
                    sentences: list[tuple[str, str]]) -> dict[str, Any]:
        rid = row_id(self.dataset, ref.ref_id, self.name, self.params(), TASK)
        sent_id, sentence = sentences[pick_index(len(sentences), "sentence", rid)]
        colour = pick_colour(rid)
        source = image_cell(image.data, f"{image_id}.{extension(image.data)}")
        if target.no_target:
            target_cell, mask_cell = source, image_cell(mask_png(target.mask), f"{image_id}_{ref.ref_id}_mask.png")
        else:
            target_cell = image_cell(encode(overlay(image.pixels, target.mask, colour.rgb), "png"),
                                     f"{image_id}_{ref.ref_id}.png")
            mask_cell = image_cell(mask_png(target.mask), f"{image_id}_{ref.ref_id}_mask.png")
        extra = {"kind": "no_target" if target.no_target else "target", "colour": colour.word, "sent_id": sent_id,
                 "ann_ids": target.ann_ids, "crowd_skipped": target.crowd_skipped,
                 "redraw": self.redraw_material(sentences)}
        return self._row(rid, ref, ref.ref_id, image_id, image, sentence, colour, source, target_cell, mask_cell, extra)

    def _borrowed_row(self, ref: Ref, image_id: int, image: SourceImage) -> dict[str, Any] | None:
        record = f"{ref.ref_id}:absent"
        rid = row_id(self.dataset, record, self.name, self.params(), TASK)
        donor = self.source.donor(image_id, self.config.seed, rid)
        if donor is None:
            return None
        sentences = _sentences(donor.raw)
        sent_id, sentence = sentences[pick_index(len(sentences), "sentence", rid)]
        colour = pick_colour(rid)
        source = image_cell(image.data, f"{image_id}.{extension(image.data)}")
        empty = np.zeros((image.height, image.width), np.uint8)
        mask_cell = image_cell(mask_png(empty), f"{image_id}_{record}_mask.png")
        extra = {"kind": "absent", "colour": colour.word, "sent_id": sent_id, "donor_ref": donor.ref_id,
                 "donor_category": _ids(donor.raw.get("category_id")), "redraw": self.redraw_material(sentences)}
        return self._row(rid, ref, record, image_id, image, sentence, colour, source, source, mask_cell, extra)

    def redraw_material(self, sentences: list[tuple[str, str]]) -> dict[str, Any]:
        """What a trainer needs to draw the sample anew, as the official loader does per sample
        (:mod:`ieiw.training.redraw`): every sentence of the ref, lower-cased, and the templates; the pixels
        are the row's mask."""
        return {"kind": "refer", "sentences": [" ".join(text.lower().split()) for _, text in sentences],
                "segment": list(self.templates.segment)}

    def _row(self, rid: str, ref: Ref, record: str, image_id: int, image: SourceImage, sentence: str, colour,
             source: dict, target: dict, mask: dict, extra: dict[str, Any]) -> dict[str, Any]:
        info = self.source.image_info(image_id) or {}
        url = info.get("coco_url") or info.get("flickr_url")
        phrase = sentence.lower()
        return {
            "id": rid,
            "task": TASK,
            "instruction": self.templates.segment_instruction(rid, phrase, colour),
            "source_image": source,
            "target_image": target,
            "mask": mask,
            "width": image.width,
            "height": image.height,
            "origin": origin_cell(dataset=self.dataset, split=ref.split, record_id=record, image_id=str(image_id),
                                  phrase=phrase, url=text_field(url),
                                  license=LICENSES[self.dataset]),
            "exemplar": None,
            "scores": None,
            "builder": builder_cell(name=self.name, backend="overlay", embedded=False, seed=self.config.seed,
                                    params={**self.params(), **extra, "source_image": image.provenance()}),
            "drop_reason": None,
        }


@register_builder("refcoco", RefCocoConfig)
def refcoco_builder(config: RefCocoConfig, context: BuildContext) -> RefCocoBuilder:
    return RefCocoBuilder(config, context, "refcoco")


@register_builder("grefcoco", GRefCocoConfig)
def grefcoco_builder(config: GRefCocoConfig, context: BuildContext) -> RefCocoBuilder:
    return RefCocoBuilder(config, context, "grefcoco")
