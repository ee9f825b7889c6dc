"""VGPhraseCut reader and the official polygon rasterisation (docs/formats.md; the dataset's own code, ChenyunWu/PhraseCutDataset).

Layout (``VGPhraseCut_v0/``): ``image_data_split.json`` (one entry per image, with its annotated
``width``/``height`` and its ``split``), ``refer_{split}.json`` (the full referring records, with
``Polygons``), ``refer_input_{split}.json`` (the evaluation inputs: no ``Polygons``, ``instance_boxes`` or
``ann_ids``; useless for building) and ``images/{image_id}.jpg``.

Splits are named as the dataset's own loader names them: ``train``, ``val``, ``test``, ``miniv``, and
``_``-joined unions such as ``val_miniv`` (records of ``refer_val.json`` then ``refer_miniv.json``). A
record's ``split`` is the one whose file it came from, and ``image_data_split.json`` must list its image
under that same split (the dataset's loader keeps only images of the chosen splits; a mismatch would
leak e.g. a test image into training rows).

Two kinds of error, on purpose:

- **File-level** problems (a refer file that is not JSON, not a list of records, a ``refer_input`` file,
  a split named after a file) raise :class:`PhraseCutFormatError` with one line naming the file, from
  :meth:`PhraseCutSource.check` / :meth:`PhraseCutSource.count`, before any unit is built.
- **Record-level** problems never raise out of :meth:`PhraseCutSource.read`: they surface when the
  record is turned into a mask or its image is opened, as :class:`SourceRecordError` naming the file and
  ``task_id`` with a short reason (``bad_image_id``, ``no_phrase``, ``split_mismatch``, ``missing_image``,
  ``no_image_info``, ``unreadable_image``, ``image_size_mismatch``, ``no_polygons``, ``bad_polygons``,
  ``degenerate_polygons``, ``empty_mask``).

Images: polygons are in the coordinates of the image as annotated, whose size ``image_data_split.json``
gives. The stored pixels are used as they are when they have that size; when they have it only after
the EXIF orientation transpose (a phone photo stored sideways), the transpose is applied; a size that
matches neither fails the record. Any stored mode (grey, palette, CMYK, 16-bit, alpha) and any allowed
format (the file is named ``.jpg`` whatever it holds) becomes RGB through :mod:`ieiw.imageio`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ieiw.imageio import JPEG_QUALITY, ImageDecodeError, Orientation, SizeMismatch, decode
from ieiw.phrases import phrase_forms
from ieiw.schemas.rows import text_field
from ieiw.schemas.source_image import SourceImage
from ieiw.schemas.units import SourceRecordError

INFO_FILE = "image_data_split.json"
OFFICIAL_SPLITS = ("train", "val", "test", "miniv")
# Keys only the full refer files have: a file whose records have none of them is a refer_input file.
ANNOTATION_KEYS = ("Polygons", "instance_boxes", "ann_ids")
# Polygon points may lie this many image sizes beyond each edge (clipped); farther is bad_polygons.
FAR = 2


NOT_AN_OBJECT = "__not_an_object__"  # marks a refer-file record that is not a JSON object (see read())


class PhraseCutFormatError(ValueError):
    """A VGPhraseCut file or split ieiw cannot use at all; the one-line message names the file."""


@dataclass(frozen=True)
class PhraseCutRecord:
    task_id: str
    image_id: int  # -1 when the record's image_id is missing or not a non-negative integer
    split: str  # the split whose refer file the record came from ("miniv" for a record of "val_miniv")
    phrase: str  # as stored ("" when missing)
    raw: dict[str, Any]  # the record as stored, for the fields a builder may want later
    refer_file: str  # the JSON file the record came from, for error messages
    image_path: Path
    width: int  # the annotated size from image_data_split.json; 0 when the image is not listed
    height: int
    url: str | None
    name: str = ""  # phrase_structure.name: the head noun phrase ("man", "trees"), "" when absent
    relations: tuple[tuple[str, str], ...] = ()  # (predicate, object name), from either key (see below)
    image_split: str | None = None  # the image's split in image_data_split.json; None when not listed

    @property
    def info_file(self) -> str:
        return str(self.image_path.parent.parent / INFO_FILE)


def _json_file(path: Path) -> Any:
    """Parsed JSON, or a one-line :class:`PhraseCutFormatError` naming the file and the position."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: not found") from None
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise PhraseCutFormatError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}, char {exc.pos} of "
            f"{len(data)}); a truncated or interrupted download? fetch the file again"
        ) from None
    except UnicodeDecodeError as exc:
        raise PhraseCutFormatError(f"{path}: not JSON text ({exc.reason} at byte {exc.start})") from None


MAX_ID = 2**63 - 1  # Visual Genome ids are small; a larger "id" (1e308 as a float) names no image


def _image_id(value: Any) -> int:
    """A record's ``image_id`` as an int, -1 when it is not a non-negative 64-bit integer (``"12"`` is fine)."""
    if isinstance(value, bool):
        return -1
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, str) and value.strip().isdecimal() and len(value.strip()) <= 19:
        value = int(value.strip())
    if isinstance(value, int) and 0 <= value <= MAX_ID:
        return value
    return -1


def normalise_relations(phrase: str, structure: Any) -> tuple[tuple[str, str], ...]:
    """``phrase_structure`` relations as ``(predicate, object_name)`` pairs, whichever key holds them.

    Current files have ``relation_descriptions``: a list of ``[predicate, object_name]``. Older dumps
    have ``relations``: Visual Genome relationship dicts (``predicate``, ``object_id``, ...) without the
    object's name; there the object is the phrase's text after the predicate, up to the next predicate, as
    the dataset's old loader read it (``""`` when the predicate is not in the phrase). A ``relations``
    list of pairs is taken as is.
    """
    if not isinstance(structure, dict):
        return ()
    entries = structure.get("relation_descriptions")
    if entries is None:
        entries = structure.get("relations")
    if not isinstance(entries, list):
        return ()
    pairs: list[tuple[str, str | None]] = []  # None: the object's name is to be read off the phrase
    for entry in entries:
        if isinstance(entry, (list, tuple)) and entry and entry[0]:
            obj = entry[1] if len(entry) > 1 and entry[1] is not None else ""
            pairs.append((str(entry[0]), str(obj)))
        elif isinstance(entry, dict) and entry.get("predicate"):
            name = entry.get("object_name")
            pairs.append((str(entry["predicate"]), name if isinstance(name, str) else None))
    from_phrase = [index for index, (_, obj) in enumerate(pairs) if obj is None]
    rest = f" {' '.join(phrase.split())} "
    for position, index in enumerate(from_phrase):
        predicate = f" {' '.join(pairs[index][0].split())} "
        obj = ""
        if predicate in rest:
            rest = " " + rest.split(predicate, 1)[1]
            obj = rest
            if position + 1 < len(from_phrase):
                following = f" {' '.join(pairs[from_phrase[position + 1]][0].split())} "
                obj = obj.split(following, 1)[0]
        pairs[index] = (pairs[index][0], obj)
    return tuple((" ".join(p.split()), " ".join((o or "").split())) for p, o in pairs)


class PhraseCutSource:
    """``root`` holds ``image_data_split.json``, ``refer_{split}.json`` and ``images/{image_id}.jpg``.

    ``splits`` are split names (``train``, ``val_miniv``, ...), checked here; the refer files are read on
    first use (:meth:`check`, :meth:`count` or :meth:`read`), once per process. ``limit`` caps the records
    read per configured split.
    """

    def __init__(self, root: Path, splits: list[str], limit: int | None = None):
        self.root = Path(root)
        self.splits = list(splits)
        self.limit = limit
        info_path = self.root / INFO_FILE
        if not info_path.exists():
            raise FileNotFoundError(f"{info_path}: not found; is {self.root} a VGPhraseCut_v0 folder?")
        self._parts = {split: self.split_files(split) for split in self.splits}
        self._info = self._read_info(info_path)
        self._cache: dict[str, list[tuple[str, str, int, Any]]] = {}  # (part, refer file, index, record)

    @staticmethod
    def _read_info(path: Path) -> dict[int, dict[str, Any]]:
        entries = _json_file(path)
        if not isinstance(entries, list):
            raise PhraseCutFormatError(f"{path}: expected a list of image entries, found {type(entries).__name__}")
        info: dict[int, dict[str, Any]] = {}
        for entry in entries:
            image_id = _image_id(entry.get("image_id")) if isinstance(entry, dict) else -1
            if image_id >= 0:  # an entry without one names no image: that image's records fail no_image_info
                info[image_id] = entry
        return info

    def refer_path(self, split: str) -> Path:
        return self.root / f"refer_{split}.json"

    def split_files(self, split: str) -> list[tuple[str, Path]]:
        """The ``(split, refer file)`` pairs a configured split name reads, in order.

        ``val_miniv`` -> ``refer_val.json``, ``refer_miniv.json`` (the dataset loader's ``split.split('_')``),
        unless a ``refer_val_miniv.json`` exists. Names that point at a refer_input file or name a file
        instead of a split raise :class:`PhraseCutFormatError` saying what to write instead.
        """
        name = split.strip()
        if not name:
            raise PhraseCutFormatError(f"{self.root}: empty split name; use one of {', '.join(OFFICIAL_SPLITS)}")
        stem = name[: -len(".json")] if name.endswith(".json") else name
        if stem.startswith("refer_") or name.endswith(".json") or "/" in name:
            inner = Path(stem).name
            inner = inner[len("refer_"):] if inner.startswith("refer_") else inner
            if inner.startswith("input_"):
                inner = inner[len("input_"):]
            raise PhraseCutFormatError(
                f"{self.root}: split {split!r} names a file; splits are names such as 'train': use split "
                f"{inner!r}, which reads refer_{inner}.json (the full annotations with Polygons)"
            )
        parts = [p for p in name.split("_") if p]
        if "input" in parts:
            rest = "_".join(p for p in parts if p != "input") or "train"  # a bare "input": the usual one
            raise PhraseCutFormatError(
                f"{self.root / ('refer_' + name + '.json')}: split {split!r} is a refer_input file, the "
                f"evaluation inputs without Polygons; use split {rest!r}, which reads refer_{rest}.json "
                "(the full annotations)"
            )
        if self.refer_path(name).exists() or len(parts) == 1:
            return [(name, self.refer_path(name))]
        seen: list[str] = []
        for part in parts:
            if part not in seen:
                seen.append(part)
        return [(part, self.refer_path(part)) for part in seen]

    def _load_refer(self, part: str, path: Path, split: str) -> list[dict[str, Any]]:
        if not path.exists():
            alternative = self.root / f"refer_input_{part}.json"
            if alternative.exists():
                raise PhraseCutFormatError(
                    f"{path}: not found; only {alternative.name} is here, the evaluation inputs without "
                    f"Polygons: get refer_{part}.json (the full annotations) from the VGPhraseCut download"
                )
            raise FileNotFoundError(f"{path}: not found (split {split!r} is in the config)")
        records = _json_file(path)
        if not isinstance(records, list):
            raise PhraseCutFormatError(
                f"{path}: expected a list of referring records, found {type(records).__name__}"
            )
        objects = [record for record in records if isinstance(record, dict)]
        if records and not objects:
            raise PhraseCutFormatError(
                f"{path}: no record is an object (record 0 is a {type(records[0]).__name__}); is this a refer file?"
            )
        if objects and not any(key in record for record in objects for key in ANNOTATION_KEYS):
            raise PhraseCutFormatError(
                f"{path}: no record has Polygons, instance_boxes or ann_ids: this is a refer_input file "
                f"(evaluation inputs); put the full refer_{part}.json from the VGPhraseCut download here"
            )
        return records

    def _records(self, split: str) -> list[tuple[str, str, int, Any]]:
        if split not in self._cache:
            parts = self._parts.get(split) or self.split_files(split)
            rows: list[tuple[str, str, int, Any]] = []
            for part, path in parts:
                rows.extend((part, str(path), index, raw)
                            for index, raw in enumerate(self._load_refer(part, path, split)))
                if self.limit and len(rows) >= self.limit:
                    break
            self._cache[split] = rows[: self.limit] if self.limit else rows
        return self._cache[split]

    def check(self) -> None:
        """Read and check every configured split's refer files now (they stay cached for :meth:`count`
        and :meth:`read`): raises :class:`PhraseCutFormatError` or ``FileNotFoundError`` with one line
        naming the file. Call it before planning any work."""
        for split in self.splits:
            self._records(split)

    def problems(self) -> list[str]:
        """:meth:`check`'s findings as one-line messages, all splits (for a config's preflight)."""
        found = []
        for split in self.splits:
            try:
                self._records(split)
            except (PhraseCutFormatError, FileNotFoundError) as exc:
                found.append(str(exc))
        return found

    def count(self, split: str) -> int:
        return len(self._records(split))

    def read(self, split: str, start: int, stop: int) -> list[PhraseCutRecord]:
        """Records ``[start, stop)`` of ``split`` in file order (never raises for bad record content)."""
        out = []
        for part, refer_file, index, raw in self._records(split)[start:stop]:
            if not isinstance(raw, dict):  # check_record fails it, naming its place in the file
                raw = {NOT_AN_OBJECT: type(raw).__name__, "task_id": f"{Path(refer_file).name}#{index}"}
            image_id = _image_id(raw.get("image_id"))
            info = self._info.get(image_id, {}) if image_id >= 0 else {}
            phrase = text_field(raw.get("phrase")) or ""  # text: lone surrogates made writable
            structure = raw.get("phrase_structure")
            name = text_field(structure.get("name")) if isinstance(structure, dict) else None
            out.append(
                PhraseCutRecord(
                    task_id=_task_id(raw.get("task_id"), refer_file, index),
                    image_id=image_id,
                    split=part,
                    phrase=phrase,
                    raw=raw,
                    refer_file=refer_file,
                    image_path=self.root / "images" / f"{image_id}.jpg",
                    width=_int(info.get("width")),
                    height=_int(info.get("height")),
                    url=text_field(info.get("url")),
                    name=" ".join(name.split()) if name else "",
                    relations=tuple((text_field(p) or "", text_field(o) or "")
                                    for p, o in normalise_relations(phrase, structure)),
                    image_split=text_field(info.get("split")),
                )
            )
        return out


def _task_id(value: Any, refer_file: str, index: int) -> str:
    """The record's ``task_id`` as text; its place in the file when it has none that is usable."""
    if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
        return text_field(str(value)) or ""
    return f"{Path(refer_file).name}#{index}"


def _int(value: Any) -> int:
    try:
        return max(int(value), 0)
    except (TypeError, ValueError, OverflowError):
        return 0


def check_record(record: PhraseCutRecord) -> None:
    """The record-level checks that need no file: a usable image id, a phrase, the image's split.
    Raises :class:`SourceRecordError`; :func:`load_image` and :func:`record_mask` call it."""
    if NOT_AN_OBJECT in record.raw:
        raise SourceRecordError(
            "bad_record", record.task_id, record.refer_file,
            f"record is a {record.raw[NOT_AN_OBJECT]}, not an object",
        )
    if record.image_id < 0:
        raise SourceRecordError(
            "bad_image_id", record.task_id, record.refer_file,
            f"image_id {record.raw.get('image_id')!r} is not a non-negative integer",
        )
    if not record.phrase.strip():
        raise SourceRecordError("no_phrase", record.task_id, record.refer_file, "record has no phrase")
    try:
        phrase_forms(record.phrase)  # the instruction templates need a word to name the object by
    except ValueError:
        raise SourceRecordError("no_phrase", record.task_id, record.refer_file,
                                f"phrase {record.phrase[:60]!r} has no word") from None
    if record.image_split is not None and record.image_split not in record.split.split("_"):
        raise SourceRecordError(
            "split_mismatch", record.task_id, record.refer_file,
            f"image {record.image_id} is in split {record.image_split!r} in {INFO_FILE}, but the record is "
            f"in refer_{record.split}.json",
        )


def polygons_to_mask(polygons: list, width: int, height: int) -> np.ndarray:
    """The official rule: flatten every instance's polygons, skip those with < 2 points, truncate
    coordinates with ``int()``, draw each with ``ImageDraw.polygon(outline=1, fill=1)``, take the union.
    Returns a ``uint8`` array of 0/1 with shape (height, width). Points outside the image are fine:
    Pillow clips what it draws to the canvas (negative and too-large coordinates included).
    """
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for instance in polygons:
        for polygon in instance:
            if len(polygon) < 2:
                continue
            draw.polygon([(int(x), int(y)) for x, y in polygon], outline=1, fill=1)
    return np.asarray(canvas, dtype=np.uint8)


def _far_point(polygons: list, width: int, height: int) -> str | None:
    """Why a point of the (drawn) polygons is unusable: not a finite number, or more than :data:`FAR` image
    sizes beyond an edge (Pillow's rasteriser overflows on such coordinates: on a 64x48 canvas a triangle with a
    vertex at 1e12 draws 331 of its 1001 pixels, a square at +-1e12 none); None when every point is fine.
    Malformed points are left to the rasteriser's checks."""
    low_x, high_x, low_y, high_y = -FAR * width, (FAR + 1) * width, -FAR * height, (FAR + 1) * height
    for polygon in polygons:
        for point in polygon:
            try:
                x, y = (float(v) for v in point)
            except (TypeError, ValueError, OverflowError):
                continue  # not a pair of numbers: polygons_to_mask fails it as malformed
            if not (math.isfinite(x) and math.isfinite(y)):
                return f"point [{x!r}, {y!r}] is not finite"
            if not (low_x <= x <= high_x and low_y <= y <= high_y):
                return (f"point [{x:g}, {y:g}] lies more than {FAR} image sizes outside the {width}x{height} "
                        "image: not a real outline")
    return None


def record_mask(record: PhraseCutRecord, width: int, height: int) -> np.ndarray:
    """The record's region as a 0/1 mask, or a :class:`SourceRecordError` saying what is wrong.

    Polygons partly outside the image are clipped to it; wholly outside, the record fails ``empty_mask``; a
    point that is not finite or lies more than :data:`FAR` image sizes beyond an edge fails ``bad_polygons``.
    """
    check_record(record)
    polygons = record.raw.get("Polygons")
    if not polygons:
        raise SourceRecordError("no_polygons", record.task_id, record.refer_file, "record has no Polygons")
    try:
        usable = [p for instance in polygons for p in instance if len(p) >= 2]
    except TypeError as exc:
        raise SourceRecordError("bad_polygons", record.task_id, record.refer_file, f"malformed: {exc}") from None
    if not usable:
        raise SourceRecordError(
            "degenerate_polygons", record.task_id, record.refer_file, "no polygon has 2 or more points"
        )
    far = _far_point(usable, width, height)
    if far is not None:
        raise SourceRecordError("bad_polygons", record.task_id, record.refer_file, far)
    try:
        mask = polygons_to_mask(polygons, width, height)
    except (TypeError, ValueError, OverflowError) as exc:
        raise SourceRecordError("bad_polygons", record.task_id, record.refer_file, f"malformed: {exc}") from None
    if not mask.any():
        raise SourceRecordError("empty_mask", record.task_id, record.refer_file, "polygons cover no pixel")
    return mask


def load_image(record: PhraseCutRecord, fmt: str | None = None, quality: int = JPEG_QUALITY) -> SourceImage:
    """The record's image as :class:`SourceImage`, oriented as the annotation's size says.

    The EXIF transpose is applied only when that is what makes the stored size equal the size in
    ``image_data_split.json`` (stored-size matches win, so tags 2-4, which keep the size, are never
    applied); a size matching neither fails ``image_size_mismatch``. The file's bytes are kept unless
    decoding changed the pixels (transposed, or not stored as RGB) or an EXIF tag other than 1 would make
    a viewer show them differently: then ``pixels`` are re-encoded, as ``fmt`` (``"jpeg"``/``"png"``;
    by default JPEG for a stored JPEG, PNG otherwise) at ``quality``.
    """
    check_record(record)
    path = record.image_path
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SourceRecordError("missing_image", record.task_id, str(path), "image file not found") from None
    except OSError as exc:  # a folder, a name too long to open, no permission
        raise SourceRecordError("unreadable_image", record.task_id, str(path), exc.strerror or str(exc)) from None
    if not (record.width and record.height):
        raise SourceRecordError(
            "no_image_info", record.task_id, record.info_file,
            f"image {record.image_id} has no entry with width and height, so its polygons cannot be placed",
        )
    expect = (record.width, record.height)
    try:
        decoded = decode(data, Orientation.MATCH, expect)
    except SizeMismatch as exc:
        raise SourceRecordError(
            "image_size_mismatch", record.task_id, str(path), f"{exc} (from {INFO_FILE})"
        ) from None
    except ImageDecodeError as exc:
        raise SourceRecordError("unreadable_image", record.task_id, str(path), str(exc)) from None
    return SourceImage.from_decoded(data, decoded, fmt, quality)
