"""SA-1B reader (docs/formats.md, "SA-1B and the SAM mask generator"; facebookresearch/segment-anything).

Layout: ``sa_<id>.jpg`` beside ``sa_<id>.json`` (one JSON per image)::

    {"image": {"image_id", "width", "height", "file_name"},
     "annotations": [{"id", "segmentation": {"size": [h, w], "counts": "<compressed COCO RLE>"},
                      "bbox": [x, y, w, h], "area", "predicted_iou", "stability_score",
                      "crop_box": [x, y, w, h], "point_coords": [[x, y]]}]}

The release ships them inside tar shards (``sa_000000.tar`` ...): extract them first; ``root`` is searched
recursively, so one folder per shard works. Images are ordered by the JSON files' paths relative to
``root`` (sorted), so units are ranges of images.

Regions: ``record_id`` is ``"<image_id>:<annotation id>"``; ``predicted_iou`` and ``stability_score`` as
stored; no label (``label_source`` None); the stored ``bbox``, ``area``, ``crop_box`` and
``point_coords`` stay in ``extra``, while ``bbox``/``area`` are computed exactly from the RLE.

Failure reasons (each names the JSON file and the record):

- whole image: ``bad_json`` (not JSON; with line, column and character), ``bad_layout`` (no ``image``
  object or ``annotations`` list), ``bad_image_info`` (width/height not positive integers, a
  ``file_name`` with a folder in it), ``missing_image`` (no image file beside the JSON);
- one annotation: ``bad_annotation`` (not an object), ``bad_segmentation`` (no ``segmentation`` with
  ``size`` and ``counts``), ``rle_size_mismatch`` (``size`` is not the image's ``[height, width]``),
  ``bad_rle`` (counts that are no well-formed RLE of that size), ``empty_mask``.

:meth:`SA1BSource.load_image` adds ``unreadable_image`` and ``image_size_mismatch``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ieiw.schemas.lazy import locked_cached_property
from ieiw.sources.regions import BadRle, ImageRegions, Region, failure, load_source_image, rle_mask

DATASET = "sa-1b"


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value > 0:
        return value
    if isinstance(value, float) and value.is_integer() and value > 0:
        return int(value)
    return None


def _score(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class SA1BSource:
    """The SA-1B images under ``root`` (recursively: ``**/sa_*.json``), sorted by relative path."""

    dataset = DATASET

    def __init__(self, root: Path, limit: int | None = None, pattern: str = "sa_*.json"):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: not found; extract SA-1B tar shards (sa_<id>.jpg + sa_<id>.json) "
                                    "into it, or set its samples")
        self.limit = limit
        self.pattern = pattern

    @locked_cached_property
    def files(self) -> list[Path]:
        found = sorted(self.root.rglob(self.pattern), key=lambda p: p.relative_to(self.root).as_posix())
        return found[: self.limit] if self.limit else found

    def problems(self) -> list[str]:
        if not self.files:
            return [f"{self.root}: no {self.pattern} files (SA-1B annotations) in it or below it"]
        return []

    def count(self) -> int:
        return len(self.files)

    def read(self, start: int, stop: int) -> list[ImageRegions]:
        """Images ``[start, stop)``, each with its regions and failures (never raises for bad content)."""
        return [self.read_file(path) for path in self.files[start:stop]]

    def read_file(self, path: Path) -> ImageRegions:
        key = path.stem
        empty = dict(dataset=DATASET, image_id=key, image_path=path.with_suffix(".jpg"), width=0, height=0,
                     source_file=str(path))
        data = path.read_bytes()
        try:
            doc = json.loads(data)
        except json.JSONDecodeError as exc:
            return ImageRegions(**empty, failures=(failure(
                "bad_json", key, path, f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}, "
                f"char {exc.pos} of {len(data)}); a truncated extraction?"),))
        except UnicodeDecodeError as exc:
            return ImageRegions(**empty, failures=(failure(
                "bad_json", key, path, f"not JSON text ({exc.reason} at byte {exc.start})"),))
        info = doc.get("image") if isinstance(doc, dict) else None
        annotations = doc.get("annotations") if isinstance(doc, dict) else None
        if not isinstance(info, dict) or not isinstance(annotations, list):
            return ImageRegions(**empty, failures=(failure(
                "bad_layout", key, path, "expected {\"image\": {...}, \"annotations\": [...]} (an SA-1B per-image "
                f"file), found {_shape(doc)}"),))
        image_id = str(info.get("image_id", key))
        empty["image_id"] = image_id
        width, height = _positive_int(info.get("width")), _positive_int(info.get("height"))
        file_name = info.get("file_name", f"{key}.jpg")
        if width is None or height is None:
            return ImageRegions(**empty, failures=(failure(
                "bad_image_info", image_id, path,
                f"image width {info.get('width')!r} / height {info.get('height')!r} are not positive integers"),))
        if not isinstance(file_name, str) or not file_name or Path(file_name).name != file_name:
            return ImageRegions(**empty, failures=(failure(
                "bad_image_info", image_id, path, f"image file_name {file_name!r} is not a bare file name"),))
        image_path = path.parent / file_name
        entry = dict(empty, image_path=image_path, width=width, height=height)
        if not image_path.is_file():
            return ImageRegions(**entry, failures=(failure(
                "missing_image", image_id, path, f"image {image_path} not found beside the annotation file"),))
        regions, failures = [], []
        for index, ann in enumerate(annotations):
            try:
                regions.append(self._region(ann, index, image_id, image_path, width, height, path))
            except _Bad as bad:
                failures.append(failure(bad.reason, bad.record_id, path, bad.message))
        return ImageRegions(**entry, regions=tuple(regions), failures=tuple(failures))

    @staticmethod
    def _region(ann: Any, index: int, image_id: str, image_path: Path, width: int, height: int, path: Path) -> Region:
        if not isinstance(ann, dict):
            raise _Bad("bad_annotation", f"{image_id}:#{index}", f"annotation {index} is a {type(ann).__name__}")
        ann_id = ann.get("id", f"#{index}")
        record_id = f"{image_id}:{ann_id}"
        seg = ann.get("segmentation")
        if not isinstance(seg, dict) or "size" not in seg or "counts" not in seg:
            raise _Bad("bad_segmentation", record_id, f"annotation {index}: segmentation must be "
                       "{\"size\": [h, w], \"counts\": \"...\"}, found " + _shape(seg))
        size = seg["size"]
        if isinstance(size, list) and len(size) == 2 and list(size) != [height, width]:
            raise _Bad("rle_size_mismatch", record_id, f"annotation {index}: segmentation size {size} [h, w] "
                       f"but image is {width}x{height} (image.width x image.height), i.e. [{height}, {width}]")
        try:
            mask, area, bbox = rle_mask(size, seg["counts"], height, width)
        except BadRle as exc:
            raise _Bad("bad_rle", record_id, f"annotation {index}: {exc}") from None
        if area == 0:
            raise _Bad("empty_mask", record_id, f"annotation {index}: the mask covers no pixel")
        return Region(
            dataset=DATASET, record_id=record_id, image_id=image_id, image_path=image_path, width=width,
            height=height, mask_source=mask, bbox=bbox, area=area, label=None, label_source=None,
            predicted_iou=_score(ann.get("predicted_iou")), stability_score=_score(ann.get("stability_score")),
            source_file=str(path),
            extra={k: ann[k] for k in ("id", "bbox", "area", "crop_box", "point_coords") if k in ann},
        )

    def load_image(self, entry: ImageRegions, fmt: str | None = None, quality: int | None = None):
        """The image as ``SourceImage`` in the annotation's coordinates (see :func:`load_source_image`)."""
        return load_source_image(entry, fmt, quality)


class _Bad(Exception):
    def __init__(self, reason: str, record_id: str, message: str):
        super().__init__(message)
        self.reason, self.record_id, self.message = reason, record_id, message


def _shape(value: Any) -> str:
    if isinstance(value, dict):
        return "an object with keys " + ", ".join(sorted(map(str, value))[:8]) if value else "an empty object"
    return f"a {type(value).__name__}"
