"""Open Images V7 segmentation reader (docs/formats.md, "Open Images V7 segmentation").

Files under ``root`` (each name configurable):

- the mask CSV, e.g. ``train-annotations-object-segmentation.csv``, with its header
  ``MaskPath,ImageID,LabelName,BoxID,BoxXMin,BoxXMax,BoxYMin,BoxYMax,PredictedIoU,Clicks`` (columns are
  found by name; a file without that header is refused);
- the class names, ``LabelName,DisplayName``: ``oidv7-class-descriptions.csv`` has that header, the older
  ``class-descriptions-boxable.csv`` has none and starts with a row such as ``/m/011k07,Tortoise``: both
  are read (a first row whose first cell is ``LabelName`` is the header);
- ``masks/``: the mask PNGs (``{ImageID}_{MID without slashes}_{BoxID}.png``), extracted, or the 16 zips
  as downloaded (``*-masks-<first hex char of ImageID>.zip``, read in place);
- ``images/{ImageID}.jpg``.

Masks: foreground is grey value > 122; a mask whose size differs from its image's is resized to it with
nearest-neighbour interpolation (``extra["mask_size"]`` keeps the stored size). Masks are decoded when an
image is read (an image has a few), so ``bbox``/``area`` are the mask's own, not the CSV's box (kept in
``extra["box"]``, normalised as stored). Images are used as stored (no EXIF transpose): whether Open
Images' masks follow a file's EXIF orientation is not confirmed; the masks are fitted to the stored size.

Regions: ``record_id`` = the MaskPath's stem; ``label`` = the class's DisplayName as written (e.g.
``Tortoise``), ``label_source`` = ``"open-images"``, ``extra["label_id"]`` = the MID; ``predicted_iou`` =
PredictedIoU (None when empty); no stability score. Images are ordered by ImageID (sorted), their masks in
file order.

Failure reasons (each names the CSV with its line, or the mask file): ``bad_row`` (missing ImageID or
MaskPath, a box value that is not a number), ``unknown_label`` (a LabelName the class file lacks),
``missing_image``, ``unreadable_image``, ``missing_mask``, ``unreadable_mask``, ``empty_mask``. File-level
problems (no CSV, no header, a class file that is not two columns) raise :class:`OpenImagesFormatError`
with one line naming the file.
"""

from __future__ import annotations

import csv
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ieiw.schemas.lazy import OncePerKey, locked_cached_property
from ieiw.sources.regions import ArrayMask, ImageRegions, Region, failure, load_source_image, mask_box

DATASET = "open-images"
LABEL_SOURCE = "open-images"
COLUMNS = ("MaskPath", "ImageID", "LabelName", "BoxID", "BoxXMin", "BoxXMax", "BoxYMin", "BoxYMax",
           "PredictedIoU", "Clicks")
THRESHOLD = 122  # foreground: value > 122


class OpenImagesFormatError(ValueError):
    """An Open Images file ieiw cannot use at all; the one-line message names the file."""


def _open_text(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found")
    return path.open(newline="", encoding="utf-8-sig")  # -sig: a BOM is not part of the first header


def read_class_descriptions(path: Path) -> dict[str, str]:
    """``{LabelName: DisplayName}`` from a class-description CSV, with or without its header row."""
    path = Path(path)
    out: dict[str, str] = {}
    with _open_text(path) as handle:
        for line, row in enumerate(csv.reader(handle), start=1):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if line == 1 and row[0].strip() == "LabelName":
                continue  # the v6+ header
            if len(row) != 2 or not row[0].strip():
                raise OpenImagesFormatError(
                    f"{path}: line {line}: expected LabelName,DisplayName (2 columns), found {len(row)}: "
                    f"{','.join(row)[:80]!r}")
            out[row[0].strip()] = row[1].strip()
    if not out:
        raise OpenImagesFormatError(f"{path}: no class rows")
    return out


@dataclass(frozen=True)
class _Row:
    line: int
    fields: dict[str, str]


def _float(text: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    return float(text)


class OpenImagesSource:
    """Open Images segmentation under ``root``; see the module docstring for the files."""

    dataset = DATASET

    def __init__(self, root: Path, annotations: str = "train-annotations-object-segmentation.csv",
                 classes: str = "oidv7-class-descriptions.csv", images: str = "images", image_ext: str = "jpg",
                 masks: str = "masks", limit: int | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: not found; put the Open Images segmentation files there, or "
                                    "set its samples")
        self.annotations = self.root / annotations
        self.classes_path = self.root / classes
        self.images = self.root / images
        self.image_ext = image_ext.lstrip(".")
        self.masks = self.root / masks
        self.limit = limit
        self._zips = OncePerKey()  # the mask archives of each first character of an image id, opened once

    # -- files ------------------------------------------------------------------------------------
    @locked_cached_property
    def classes(self) -> dict[str, str]:
        return read_class_descriptions(self.classes_path)

    @locked_cached_property
    def _grouped(self) -> list[tuple[str, list[_Row]]]:
        groups: dict[str, list[_Row]] = {}
        with _open_text(self.annotations) as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None or "ImageID" not in header or "MaskPath" not in header:
                raise OpenImagesFormatError(
                    f"{self.annotations}: line 1 is not the mask CSV header ({','.join(COLUMNS)}); found "
                    f"{','.join(header or [])[:100]!r}")
            missing = [c for c in COLUMNS[:4] if c not in header]
            if missing:
                raise OpenImagesFormatError(f"{self.annotations}: header lacks {', '.join(missing)}")
            for line, values in enumerate(reader, start=2):
                if not values:
                    continue
                fields = dict(zip(header, values, strict=False))
                image_id = fields.get("ImageID", "").strip()
                # A row without an ImageID is its own entry, so its failure is reported once, in order.
                key = image_id if image_id and len(values) == len(header) else f"<line {line}>"
                groups.setdefault(key, []).append(_Row(line, fields))
        ordered = sorted(groups.items())
        return ordered[: self.limit] if self.limit else ordered

    def problems(self) -> list[str]:
        found = []
        for member in ("classes", "_grouped"):
            try:
                getattr(self, member)
            except (OpenImagesFormatError, FileNotFoundError, UnicodeDecodeError, csv.Error) as exc:
                found.append(str(exc))
        if not self.images.is_dir():
            found.append(f"{self.images}: image folder not found ({{ImageID}}.{self.image_ext} files)")
        if not self.masks.is_dir():
            found.append(f"{self.masks}: mask folder not found (PNGs or the *-masks-<hex>.zip files)")
        return found

    def count(self) -> int:
        return len(self._grouped)

    def read(self, start: int, stop: int) -> list[ImageRegions]:
        classes = self.classes
        return [self._image(key, rows, classes) for key, rows in self._grouped[start:stop]]

    # -- one image --------------------------------------------------------------------------------
    def _image(self, key: str, rows: list[_Row], classes: dict[str, str]) -> ImageRegions:
        csv_file = str(self.annotations)
        image_path = self.images / f"{key}.{self.image_ext}"
        entry = dict(dataset=DATASET, image_id=key, image_path=image_path, width=0, height=0, source_file=csv_file)
        if key.startswith("<line"):
            row = rows[0]
            return ImageRegions(**entry, failures=(failure(
                "bad_row", key, f"{csv_file}:{row.line}", "no ImageID, or not as many fields as the header"),))
        if not image_path.is_file():
            return ImageRegions(**entry, failures=(failure(
                "missing_image", key, image_path, f"image not found (rows from {csv_file} line {rows[0].line})"),))
        try:
            width, height = _image_size(image_path)
        except OSError as exc:
            return ImageRegions(**entry, failures=(failure("unreadable_image", key, image_path, str(exc)),))
        entry.update(width=width, height=height)
        regions, failures = [], []
        for row in rows:
            mask_name = row.fields.get("MaskPath", "").strip()
            record_id = Path(mask_name).stem if mask_name else f"{key}:line {row.line}"
            where = f"{csv_file}:{row.line}"
            if not mask_name or Path(mask_name).name != mask_name:
                failures.append(failure("bad_row", record_id, where, f"MaskPath {mask_name!r} is not a file name"))
                continue
            try:
                box = [_float(row.fields.get(c, "")) for c in ("BoxXMin", "BoxXMax", "BoxYMin", "BoxYMax")]
                predicted_iou = _float(row.fields.get("PredictedIoU", ""))
            except ValueError as exc:
                failures.append(failure("bad_row", record_id, where, f"not a number: {exc}"))
                continue
            mid = row.fields.get("LabelName", "").strip()
            if mid not in classes:
                failures.append(failure("unknown_label", record_id, where,
                                        f"LabelName {mid!r} is not in {self.classes_path}"))
                continue
            try:
                data = self._mask_bytes(mask_name, key)
            except FileNotFoundError:
                failures.append(failure("missing_mask", record_id, self.masks / mask_name,
                                        f"mask not found (nor in a *-masks-{key[:1]}.zip), row at {where}"))
                continue
            try:
                mask, stored = decode_oi_mask(data, width, height)
            except ValueError as exc:
                failures.append(failure("unreadable_mask", record_id, self.masks / mask_name, str(exc)))
                continue
            if not mask.any():
                failures.append(failure("empty_mask", record_id, self.masks / mask_name,
                                        f"no pixel above {THRESHOLD}"))
                continue
            extra: dict[str, Any] = {"label_id": mid, "mask_path": mask_name, "box_id": row.fields.get("BoxID", ""),
                                     "box": box, "clicks": row.fields.get("Clicks", ""), "line": row.line}
            if stored != (width, height):
                extra["mask_size"] = stored
            regions.append(Region(
                dataset=DATASET, record_id=record_id, image_id=key, image_path=image_path, width=width,
                height=height, mask_source=ArrayMask(mask), bbox=mask_box(mask), area=int(mask.sum()),
                label=classes[mid], label_source=LABEL_SOURCE, predicted_iou=predicted_iou, stability_score=None,
                source_file=csv_file, extra=extra,
            ))
        return ImageRegions(**entry, regions=tuple(regions), failures=tuple(failures), orientation="match")

    def _mask_bytes(self, name: str, image_id: str) -> bytes:
        path = self.masks / name
        if path.is_file():
            return path.read_bytes()
        for archive in self._archives(image_id[:1].lower()):
            try:
                return archive.read(name)
            except KeyError:
                continue
        raise FileNotFoundError(name)

    def _archives(self, char: str) -> list[zipfile.ZipFile]:
        def open_archives() -> list[zipfile.ZipFile]:
            paths = sorted(self.masks.glob(f"*-masks-{char}.zip")) if self.masks.is_dir() else []
            return [zipfile.ZipFile(p) for p in paths]

        return self._zips.get(char, open_archives)

    def load_image(self, entry: ImageRegions, fmt: str | None = None, quality: int | None = None):
        """The image as ``SourceImage``, as stored (see :func:`ieiw.sources.regions.load_source_image`)."""
        return load_source_image(entry, fmt, quality)


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) as stored, from the header (no decode)."""
    from PIL import Image, UnidentifiedImageError

    from ieiw.imageio import ALLOWED_FORMATS

    try:
        with Image.open(path, formats=ALLOWED_FORMATS) as image:
            return image.size
    except (UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise OSError(f"not an image: {exc}") from None


def decode_oi_mask(data: bytes, width: int, height: int) -> tuple[np.ndarray, tuple[int, int]]:
    """A mask PNG as ``bool`` (height, width): grey > 122, resized nearest-neighbour to the image when its
    stored size differs. Returns the mask and the stored (width, height). Raises ``ValueError``."""
    from ieiw.imageio import ImageDecodeError, Orientation, decode

    try:
        pixels = decode(data, Orientation.IGNORE).pixels
    except ImageDecodeError as exc:
        raise ValueError(str(exc)) from None
    grey = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
    stored = (int(grey.shape[1]), int(grey.shape[0]))
    if stored != (width, height):
        grey = cv2.resize(grey, (width, height), interpolation=cv2.INTER_NEAREST)
    return grey > THRESHOLD, stored


def write_class_descriptions(path: Path, classes: dict[str, str], header: bool) -> None:
    """Write a class-description CSV as Open Images does (used by the sample generator and tests)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header:
        writer.writerow(["LabelName", "DisplayName"])
    writer.writerows(classes.items())
    Path(path).write_text(buffer.getvalue())
