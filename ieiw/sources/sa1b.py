"""SA-1B reader (docs/formats.md, "SA-1B and the SAM mask generator"; facebookresearch/segment-anything).

Layout: ``sa_<id>.jpg`` beside ``sa_<id>.json`` (one JSON per image)::

    {"image": {"image_id", "width", "height", "file_name"},
     "annotations": [{"id", "segmentation": {"size": [h, w], "counts": "<compressed COCO RLE>"},
                      "bbox": [x, y, w, h], "area", "predicted_iou", "stability_score",
                      "crop_box": [x, y, w, h], "point_coords": [[x, y]]}]}

The release ships them inside tar shards (``sa_000000.tar`` ...): extract them first; ``root`` is searched
recursively, so one folder per shard works. Images are ordered by the JSON files' paths relative to
``root`` (sorted), so units are ranges of images.

Regions: ``record_id`` is ``"<image_id>:<annotation id>"`` (``#<index>`` for an annotation without ``id``;
lone surrogates of a JSON ``\\ud800`` escape become U+FFFD, which a row can hold); ``predicted_iou`` and
``stability_score`` as stored (None when absent or null: unscored; present, they must be finite and in
:data:`SCORE_RANGES`); no label (``label_source`` None); the stored ``bbox``, ``area``, ``crop_box`` and
``point_coords`` stay in ``extra``, while ``bbox``/``area`` are computed exactly from the RLE.

Failure reasons (each names the JSON file and the record):

- whole image: ``bad_json`` (not JSON; with line, column and character), ``bad_layout`` (no ``image``
  object or ``annotations`` list), ``bad_image_info`` (width/height not positive integers, or more pixels
  than any image decodes (Pillow's ``MAX_IMAGE_PIXELS``), an ``image_id`` that is neither an integer nor
  text, a ``file_name`` with a folder in it, or one no file can have: not encodable, too long),
  ``path_outside_root`` (a ``file_name`` that is no path under the JSON's folder: ``..``, absolute, or
  symlinked out; :mod:`ieiw.schemas.paths`), ``missing_image`` (no image file beside the JSON);
- one annotation: ``bad_annotation`` (not an object, or an ``id`` that is neither an integer nor text),
  ``duplicate_id`` (an ``id`` an earlier annotation of the image has: the first keeps it),
  ``bad_segmentation`` (no ``segmentation`` with ``size`` and ``counts``), ``rle_size_mismatch`` (``size``
  is not the image's ``[height, width]``), ``bad_rle`` (counts that are no well-formed RLE of that size, or
  with a run longer than the image), ``empty_mask``, ``bad_score`` (a ``predicted_iou`` or
  ``stability_score`` that is NaN, infinite, not a number or outside :data:`SCORE_RANGES`),
  ``bad_geometry`` (a stored ``bbox``/``crop_box``/``area``/``point_coords`` that is not finite, has a
  negative side, or lies more than :data:`FAR` image sizes outside the image).

:meth:`SA1BSource.load_image` adds ``unreadable_image`` and ``image_size_mismatch``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ieiw.schemas.lazy import locked_cached_property
from ieiw.schemas.paths import PATH_OUTSIDE_ROOT, PathOutsideRoot, path_under
from ieiw.schemas.rows import text_field
from ieiw.sources.regions import BadRle, ImageRegions, Region, failure, load_source_image, rle_mask

DATASET = "sa-1b"
# The range a present score must lie in (else bad_score). SAM's IoU head is an unbounded regression (no
# sigmoid), so a predicted IoU a little outside [0, 1] is genuine output; a stability score is a ratio of mask
# areas, so it cannot leave [0, 1].
SCORE_RANGES = {"predicted_iou": (-0.5, 1.5), "stability_score": (0.0, 1.0)}
FAR = 2  # stored boxes and points may reach this many image sizes beyond each edge; farther is bad_geometry


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value > 0:
        return value
    if isinstance(value, float) and value.is_integer() and value > 0:
        return int(value)
    return None


def _finite(value: Any) -> bool:
    """A JSON number that is not NaN or infinite (any int is: ``math.isfinite`` would overflow on 10**400)."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _id_text(value: Any) -> str | None:
    """An ``image_id`` or annotation ``id`` as record-id text: an int, or text (lone surrogates, which a JSON
    ``\\ud800`` escape gives and Arrow cannot write, made U+FFFD); None for any other JSON value."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return text_field(value) if isinstance(value, str) and value else None


def _file_name_problem(file_name: Any) -> str | None:
    """Why an image ``file_name`` cannot name a file beside the JSON, or None. A name the file system cannot
    encode (a lone surrogate) would make ``stat`` raise ``UnicodeEncodeError``."""
    if not isinstance(file_name, str) or not file_name:
        return f"image file_name {file_name!r:.80} is not a bare file name"
    try:
        os.fsencode(file_name)
    except UnicodeEncodeError:
        return f"image file_name {file_name!r:.80} is not encodable as a file name"
    return None


def _score(value: Any, low: float, high: float) -> float | None:
    """A stored score as a float, None when absent or null (unscored: the policy's thresholds do not apply);
    ``ValueError`` for anything else that is not a finite number in [low, high] (JSON's NaN, Infinity, text)."""
    if value is None:
        return None
    if not (_finite(value) and low <= value <= high):
        raise ValueError(f"{value!r} is not a finite number in [{low:g}, {high:g}]")
    return float(value)


def _too_large(width: int, height: int) -> str | None:
    """Why an image of this stated size can never be used (more pixels than :func:`ieiw.imageio.decode`
    accepts), or None."""
    from ieiw.imageio import pixel_limit

    limit = pixel_limit()
    if limit is not None and width * height > limit:
        return (f"image {width}x{height} is {width * height} pixels, more than any image decodes ({limit}, "
                "Pillow's MAX_IMAGE_PIXELS): a wrong size or a decompression bomb")
    return None


def _geometry_problem(ann: dict[str, Any], width: int, height: int) -> str | None:
    """What is absurd in an annotation's stored ``bbox``, ``crop_box``, ``area`` and ``point_coords`` (kept in
    ``extra`` as stored, so they must be finite, JSON-safe numbers), or None. Each is optional; present, a box is
    ``[x, y, w, h]`` with ``w, h >= 0``, and boxes and points lie within :data:`FAR` image sizes of the image
    (generous: SA-1B's own values lie in it), the area within that extent's."""
    low_x, high_x, low_y, high_y = -FAR * width, (FAR + 1) * width, -FAR * height, (FAR + 1) * height
    extent = f"more than {FAR} image sizes outside the {width}x{height} image"
    for key in ("bbox", "crop_box"):
        if key not in ann:
            continue
        box = ann[key]
        if not (isinstance(box, list) and len(box) == 4 and all(_finite(v) for v in box)):
            return f"{key} {box!r} is not [x, y, w, h] of finite numbers"
        x, y, w, h = box
        if w < 0 or h < 0:
            return f"{key} {box!r} has a negative side"
        if x < low_x or y < low_y or x + w > high_x or y + h > high_y:
            return f"{key} {box!r} reaches {extent}"
    if "area" in ann:
        area, most = ann["area"], (2 * FAR + 1) ** 2 * width * height
        if not (_finite(area) and 0 <= area <= most):
            return f"area {area!r} is not a finite number in [0, {most}]"
    if "point_coords" in ann:
        points = ann["point_coords"]
        if not (isinstance(points, list) and all(isinstance(p, list) and len(p) == 2 and all(_finite(v) for v in p)
                                                 for p in points)):
            return f"point_coords {points!r} is not a list of [x, y] finite numbers"
        for x, y in points:
            if not (low_x <= x <= high_x and low_y <= y <= high_y):
                return f"point_coords [{x!r}, {y!r}] lies {extent}"
    return None


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
        image_id = _id_text(info.get("image_id", key))
        if image_id is None:
            return ImageRegions(**empty, failures=(failure(
                "bad_image_info", key, path, f"image_id {info.get('image_id')!r:.80} is not an integer or text"),))
        empty["image_id"] = image_id
        width, height = _positive_int(info.get("width")), _positive_int(info.get("height"))
        file_name = info.get("file_name", f"{key}.jpg")
        if width is None or height is None:
            return ImageRegions(**empty, failures=(failure(
                "bad_image_info", image_id, path,
                f"image width {info.get('width')!r} / height {info.get('height')!r} are not positive integers"),))
        too_large = _too_large(width, height)
        if too_large:
            return ImageRegions(**empty, failures=(failure("bad_image_info", image_id, path, too_large),))
        problem = _file_name_problem(file_name)
        if problem:
            return ImageRegions(**empty, failures=(failure("bad_image_info", image_id, path, problem),))
        try:
            image_path = path_under(path.parent, file_name)
        except PathOutsideRoot as exc:  # ../x, /x, or symlinked out: nothing outside the JSON's folder is read
            return ImageRegions(**dict(empty, image_path=path.parent), failures=(failure(
                PATH_OUTSIDE_ROOT, image_id, path, f"image file_name: {exc}"),))
        if Path(file_name).name != file_name:
            return ImageRegions(**empty, failures=(failure(
                "bad_image_info", image_id, path, f"image file_name {file_name!r} is not a bare file name"),))
        entry = dict(empty, image_path=image_path, width=width, height=height)
        try:
            found = image_path.is_file()
        except OSError as exc:  # a name too long for the file system, say
            return ImageRegions(**entry, failures=(failure(
                "bad_image_info", image_id, path, f"image file_name {file_name!r:.80}: {exc.strerror}"),))
        if not found:
            return ImageRegions(**entry, failures=(failure(
                "missing_image", image_id, path, f"image {image_path} not found beside the annotation file"),))
        regions, failures, seen = [], [], set()
        for index, ann in enumerate(annotations):
            try:
                region = self._region(ann, index, image_id, image_path, width, height, path)
                if region.record_id in seen:  # the first annotation with an id keeps it
                    raise _Bad("duplicate_id", region.record_id, f"annotation {index}: record id "
                               f"{region.record_id!r:.80} is an earlier annotation's of this image")
            except _Bad as bad:
                failures.append(failure(bad.reason, bad.record_id, path, bad.message))
                continue
            seen.add(region.record_id)
            regions.append(region)
        return ImageRegions(**entry, regions=tuple(regions), failures=tuple(failures))

    @staticmethod
    def _region(ann: Any, index: int, image_id: str, image_path: Path, width: int, height: int, path: Path) -> Region:
        if not isinstance(ann, dict):
            raise _Bad("bad_annotation", f"{image_id}:#{index}", f"annotation {index} is a {type(ann).__name__}")
        ann_id = _id_text(ann["id"]) if "id" in ann else f"#{index}"
        if ann_id is None:
            raise _Bad("bad_annotation", f"{image_id}:#{index}",
                       f"annotation {index}: id {ann['id']!r:.80} is not an integer or text")
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
        scores = {}
        for key, (low, high) in SCORE_RANGES.items():
            try:
                scores[key] = _score(ann.get(key), low, high)
            except ValueError as exc:
                raise _Bad("bad_score", record_id, f"annotation {index}: {key} {exc}") from None
        problem = _geometry_problem(ann, width, height)
        if problem:
            raise _Bad("bad_geometry", record_id, f"annotation {index}: {problem}")
        return Region(
            dataset=DATASET, record_id=record_id, image_id=image_id, image_path=image_path, width=width,
            height=height, mask_source=mask, bbox=bbox, area=area, label=None, label_source=None,
            predicted_iou=scores["predicted_iou"], stability_score=scores["stability_score"],
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
