"""VGPhraseCut reader and the official polygon rasterisation (docs/formats.md; the dataset's own code, ChenyunWu/PhraseCutDataset).

Records are read in file order, split by split, so work units are stable across runs. Reading a
record never raises for bad content: problems surface when the record is turned into a mask or its
image is opened, as :class:`SourceRecordError` naming the file and ``task_id``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ieiw.builders.base import SourceRecordError
from ieiw.imageio import ImageDecodeError, Orientation, SizeMismatch, decode, encode


@dataclass(frozen=True)
class PhraseCutRecord:
    task_id: str
    image_id: int
    split: str
    phrase: str
    raw: dict[str, Any]  # the record as stored, for the fields a builder may want later
    refer_file: str  # the JSON file the record came from, for error messages
    image_path: Path
    width: int
    height: int
    url: str | None


class PhraseCutSource:
    """``root`` holds ``image_data_split.json``, ``refer_{split}.json`` and ``images/{image_id}.jpg``."""

    def __init__(self, root: Path, splits: list[str], limit: int | None = None):
        self.root = Path(root)
        self.splits = list(splits)
        self.limit = limit
        info_path = self.root / "image_data_split.json"
        if not info_path.exists():
            raise FileNotFoundError(f"{info_path}: not found; is {self.root} a VGPhraseCut_v0 folder?")
        self._info = {int(entry["image_id"]): entry for entry in json.loads(info_path.read_text())}
        self._cache: dict[str, list[dict[str, Any]]] = {}

    def refer_path(self, split: str) -> Path:
        return self.root / f"refer_{split}.json"

    def _records(self, split: str) -> list[dict[str, Any]]:
        if split not in self._cache:
            path = self.refer_path(split)
            if not path.exists():
                raise FileNotFoundError(f"{path}: not found (split {split!r} is in the config)")
            records = json.loads(path.read_text())
            self._cache[split] = records[: self.limit] if self.limit else records
        return self._cache[split]

    def count(self, split: str) -> int:
        return len(self._records(split))

    def read(self, split: str, start: int, stop: int) -> list[PhraseCutRecord]:
        """Records ``[start, stop)`` of ``split`` in file order."""
        out = []
        refer_file = str(self.refer_path(split))
        for raw in self._records(split)[start:stop]:
            image_id = int(raw.get("image_id", -1))
            info = self._info.get(image_id, {})
            out.append(
                PhraseCutRecord(
                    task_id=str(raw.get("task_id", f"{image_id}__?")),
                    image_id=image_id,
                    split=split,
                    phrase=str(raw.get("phrase", "")),
                    raw=raw,
                    refer_file=refer_file,
                    image_path=self.root / "images" / f"{image_id}.jpg",
                    width=int(info.get("width", 0)),
                    height=int(info.get("height", 0)),
                    url=info.get("url"),
                )
            )
        return out


def polygons_to_mask(polygons: list, width: int, height: int) -> np.ndarray:
    """The official rule: flatten every instance's polygons, skip those with < 2 points, truncate
    coordinates with ``int()``, draw each with ``ImageDraw.polygon(outline=1, fill=1)``, take the union.
    Returns a ``uint8`` array of 0/1 with shape (height, width).
    """
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for instance in polygons:
        for polygon in instance:
            if len(polygon) < 2:
                continue
            draw.polygon([(int(x), int(y)) for x, y in polygon], outline=1, fill=1)
    return np.asarray(canvas, dtype=np.uint8)


def record_mask(record: PhraseCutRecord, width: int, height: int) -> np.ndarray:
    """The record's region as a 0/1 mask, or a :class:`SourceRecordError` saying what is wrong."""
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
    try:
        mask = polygons_to_mask(polygons, width, height)
    except (TypeError, ValueError) as exc:
        raise SourceRecordError("bad_polygons", record.task_id, record.refer_file, f"malformed: {exc}") from None
    if not mask.any():
        raise SourceRecordError("empty_mask", record.task_id, record.refer_file, "polygons cover no pixel")
    return mask


def load_image(record: PhraseCutRecord) -> tuple[bytes, np.ndarray]:
    """The image's bytes and RGB pixels, oriented as the annotation's size says.

    Polygons are in the coordinates of the image as annotated (``image_data_split.json`` gives its
    size): the EXIF orientation is applied only when that makes the size match. The file's bytes are
    kept as they are unless decoding had to change them (transposed, or not stored as RGB): then the
    source is re-encoded so that it and the target agree pixel for pixel in every viewer.
    """
    path = record.image_path
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SourceRecordError("missing_image", record.task_id, str(path), "image file not found") from None
    expect = (record.width, record.height) if record.width and record.height else None
    try:
        decoded = decode(data, Orientation.MATCH, expect)
    except SizeMismatch as exc:
        raise SourceRecordError("image_size_mismatch", record.task_id, str(path), str(exc)) from None
    except ImageDecodeError as exc:
        raise SourceRecordError("unreadable_image", record.task_id, str(path), str(exc)) from None
    if decoded.transposed or decoded.converted or decoded.orientation != 1:
        data = encode(decoded.pixels, "jpeg")
    return data, decoded.pixels
