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
nearest-neighbour interpolation (``extra["mask_size"]`` keeps the stored size) when it has the image's shape,
i.e. it is the image scaled by one factor with each side rounded by at most 1 px
(``|mask_w * height - mask_h * width| <= width + height``); another shape would be stretched, so it fails
``mask_aspect_mismatch``. A mask file (loose or a zip member) is read only up to :data:`MAX_MASK_BYTES`
uncompressed, by its declared size and by what is read; a bigger one fails ``mask_too_large``. Masks are decoded when an
image is read (an image has a few), so ``bbox``/``area`` are the mask's own, not the CSV's box (kept in
``extra["box"]``, normalised as stored). Images are used as stored (no EXIF transpose): whether Open
Images' masks follow a file's EXIF orientation is not confirmed; the masks are fitted to the stored size.

Regions: ``record_id`` = the MaskPath's stem; ``label`` = the class's DisplayName as written (e.g.
``Tortoise``), ``label_source`` = ``"open-images"``, ``extra["label_id"]`` = the MID; ``predicted_iou`` =
PredictedIoU (None when empty); no stability score. Images are ordered by ImageID (sorted), their masks in
file order.

Failure reasons (each names the CSV with its line, or the mask file): ``bad_row`` (missing ImageID or
MaskPath; not as many fields as the header; bytes that are not UTF-8; an ImageID that can name no file, e.g.
too long; a box value that is not a finite number within [0, 1] give or take :data:`BOX_SLACK`; a
PredictedIoU that is not a finite number in [0, 1]; an empty box value or PredictedIoU is None, as the
format allows), ``unknown_label`` (a LabelName the class file lacks), ``missing_image``,
``unreadable_image`` (also an image whose header declares more pixels than :func:`ieiw.imageio.decode`
accepts, a decompression bomb: that image alone fails, the unit goes on), ``missing_mask``,
``unreadable_mask`` (also a zip member that does not inflate), ``mask_too_large``, ``mask_aspect_mismatch``,
``empty_mask``,
``path_outside_root`` (an ImageID or MaskPath that is no path under ``images/`` or ``masks/``: ``..``, absolute,
or symlinked out; :mod:`ieiw.schemas.paths`). File-level
problems (no CSV, no header, a class file that is not two columns, a CSV that stops parsing: an unclosed quote
past the field size limit) raise :class:`OpenImagesFormatError` with one line naming the file, from ``count()``
(so a builder's ``plan()`` refuses the source before any unit runs). Bytes of the class file that are not UTF-8
read as U+FFFD: a broken LabelName then matches no mask row (``unknown_label``).
"""

from __future__ import annotations

import csv
import io
import math
import re
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ieiw.schemas.lazy import OncePerKey, locked_cached_property
from ieiw.schemas.paths import PATH_OUTSIDE_ROOT, PathOutsideRoot, path_under
from ieiw.sources.regions import ArrayMask, ImageRegions, Region, failure, load_source_image, mask_box

DATASET = "open-images"
LABEL_SOURCE = "open-images"
COLUMNS = ("MaskPath", "ImageID", "LabelName", "BoxID", "BoxXMin", "BoxXMax", "BoxYMin", "BoxYMax",
           "PredictedIoU", "Clicks")
THRESHOLD = 122  # foreground: value > 122
BOX_COLUMNS = ("BoxXMin", "BoxXMax", "BoxYMin", "BoxYMax")
BOX_SLACK = 0.01  # a normalised box value may stray this far outside [0, 1] (rounding); farther is bad_row
# The most bytes one mask PNG may hold uncompressed (a loose file's size, a zip member's file_size and what
# is read): real masks are tens of KB; an 8-bit 4096x4096 mask stored with no compression at all is 16 MiB.
MAX_MASK_BYTES = 32 * 1024 * 1024


class MaskTooLarge(Exception):
    """A mask file or zip member over :data:`MAX_MASK_BYTES` (``mask_too_large``)."""


class MaskAspectMismatch(ValueError):
    """A mask whose shape is not its image's at any scale (``mask_aspect_mismatch``)."""


class OpenImagesFormatError(ValueError):
    """An Open Images file ieiw cannot use at all; the one-line message names the file."""


def _open_text(path: Path, errors: str = "strict"):
    """A CSV file as text (``-sig``: a BOM is not part of the first header). ``errors``: what bytes that are not
    UTF-8 become (``surrogateescape`` in the mask CSV, where :func:`_not_utf8` finds them per row; ``replace`` in
    the class file, where a broken name only fails its class's rows, as ``unknown_label``)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found")
    return path.open(newline="", encoding="utf-8-sig", errors=errors)


def _not_utf8(values: list[str]) -> bool:
    """Whether a row read with ``surrogateescape`` held bytes that are not UTF-8."""
    return any(_ESCAPED.search(value) for value in values)


_ESCAPED = re.compile("[\udc80-\udcff]")


def _rows(handle: Any, path: Path) -> Iterator[tuple[int, list[str]]]:
    """``(first line, cells)`` of each CSV record (a quoted cell may span lines); ``csv.Error`` (an unclosed
    quote that runs past the field size limit, say) becomes :class:`OpenImagesFormatError` naming the file and
    the line: nothing after it can be read."""
    reader = csv.reader(handle)
    line = 1
    try:
        for values in reader:
            yield line, values
            line = reader.line_num + 1
    except csv.Error as exc:
        raise OpenImagesFormatError(f"{path}: line {line}: not CSV ({exc})") from None


def read_class_descriptions(path: Path) -> dict[str, str]:
    """``{LabelName: DisplayName}`` from a class-description CSV, with or without its header row."""
    path = Path(path)
    out: dict[str, str] = {}
    with _open_text(path, errors="replace") as handle:
        for line, row in _rows(handle, path):
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


def _number(fields: dict[str, str], column: str, low: float, high: float) -> float | None:
    """A CSV cell as a float in [low, high], None when empty; ``ValueError`` naming the column for text that is
    no number, NaN, an infinity or a value outside the range (``float`` itself takes "nan" and "inf")."""
    text = (fields.get(column) or "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{column} {text!r} is not a number") from None
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{column} {text!r} is not a finite number in [{low:g}, {high:g}]")
    return value


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
        with _open_text(self.annotations, errors="surrogateescape") as handle:
            rows = _rows(handle, self.annotations)
            header = next(rows, (1, None))[1]
            if header is None or "ImageID" not in header or "MaskPath" not in header:
                raise OpenImagesFormatError(
                    f"{self.annotations}: line 1 is not the mask CSV header ({','.join(COLUMNS)}); found "
                    f"{','.join(header or [])[:100]!r}")
            missing = [c for c in COLUMNS[:4] if c not in header]
            if missing:
                raise OpenImagesFormatError(f"{self.annotations}: header lacks {', '.join(missing)}")
            for line, values in rows:
                if not values:
                    continue
                fields = dict(zip(header, values, strict=False))
                image_id = fields.get("ImageID", "").strip()
                # A row without an ImageID (or not as many fields as the header, or bytes that are not UTF-8)
                # is its own entry, so its failure is reported once, in order.
                whole = image_id and len(values) == len(header) and not _not_utf8(values)
                key = image_id if whole else f"<line {line}>"
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
        self.classes  # noqa: B018 - a class file that cannot be read is refused here, by plan(), naming the file
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
            why = ("bytes that are not UTF-8" if _not_utf8(list(row.fields.values()))
                   else "no ImageID, or not as many fields as the header")
            return ImageRegions(**entry, failures=(failure("bad_row", key, f"{csv_file}:{row.line}", why),))
        try:
            path_under(self.images, f"{key}.{self.image_ext}")
        except PathOutsideRoot as exc:  # an ImageID such as ../../x or /x: nothing outside images/ is read
            return ImageRegions(**dict(entry, image_path=self.images), failures=(failure(
                PATH_OUTSIDE_ROOT, key, f"{csv_file}:{rows[0].line}", f"ImageID: {exc}"),))
        try:
            found = image_path.is_file()
        except OSError as exc:  # an ImageID too long for a file name, say
            return ImageRegions(**entry, failures=(failure(
                "bad_row", key, f"{csv_file}:{rows[0].line}", f"ImageID {key!r:.80} names no file: {exc.strerror}"),))
        if not found:
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
            record_id = (Path(mask_name).stem if mask_name else "") or f"{key}:line {row.line}"  # "/" has no stem
            where = f"{csv_file}:{row.line}"
            if not mask_name or Path(mask_name).name != mask_name:
                failures.append(failure("bad_row", record_id, where, f"MaskPath {mask_name!r} is not a file name"))
                continue
            try:
                path_under(self.masks, mask_name)  # a ".." or a mask symlinked out of masks/
            except PathOutsideRoot as exc:
                failures.append(failure(PATH_OUTSIDE_ROOT, record_id, where, f"MaskPath: {exc}"))
                continue
            try:
                box = [_number(row.fields, c, -BOX_SLACK, 1 + BOX_SLACK) for c in BOX_COLUMNS]
                predicted_iou = _number(row.fields, "PredictedIoU", 0.0, 1.0)
            except ValueError as exc:
                failures.append(failure("bad_row", record_id, where, str(exc)))
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
            except MaskTooLarge as exc:
                failures.append(failure("mask_too_large", record_id, self.masks / mask_name, str(exc)))
                continue
            except (OSError, ValueError) as exc:  # a zip member that does not inflate, a file that cannot be read
                failures.append(failure("unreadable_mask", record_id, self.masks / mask_name, str(exc)))
                continue
            try:
                mask, stored = decode_oi_mask(data, width, height)
            except MaskAspectMismatch as exc:
                failures.append(failure("mask_aspect_mismatch", record_id, self.masks / mask_name, str(exc)))
                continue
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
        """The mask's bytes from ``masks/`` or the image's zips, at most :data:`MAX_MASK_BYTES`. Raises
        ``FileNotFoundError`` (in neither), :class:`MaskTooLarge`, ``OSError`` / ``ValueError`` (unreadable)."""
        path = self.masks / name
        if path.is_file():
            with path.open("rb") as handle:
                return _read_capped(handle, path.stat().st_size, str(path))
        broken = []
        for archive in self._archives(image_id[:1].lower()):
            if isinstance(archive, str):
                broken.append(archive)
                continue
            try:
                info = archive.getinfo(name)
            except KeyError:
                continue
            where = f"{archive.filename}: member {name}"
            try:
                with archive.open(info) as handle:
                    return _read_capped(handle, info.file_size, where)
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
                # bad CRC, truncated or corrupt data, an unsupported compression method, an encrypted member
                raise ValueError(f"{where}: {exc}") from None
        if broken:  # the mask may be in the archive that cannot be read
            raise ValueError(f"not in masks/ nor in a readable archive; {'; '.join(broken)}")
        raise FileNotFoundError(name)

    def _archives(self, char: str) -> list[zipfile.ZipFile | str]:
        """The ``*-masks-<char>.zip`` archives, opened once; one that cannot be opened (cut short, not a zip)
        is the text of why, so only the masks that would be looked up in it fail (``unreadable_mask``)."""
        def open_archive(path: Path) -> zipfile.ZipFile | str:
            try:
                return zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
                return f"{path}: not a readable zip ({exc})"

        def open_archives() -> list[zipfile.ZipFile | str]:
            paths = sorted(self.masks.glob(f"*-masks-{char}.zip")) if self.masks.is_dir() else []
            return [open_archive(p) for p in paths]

        return self._zips.get(char, open_archives)

    def load_image(self, entry: ImageRegions, fmt: str | None = None, quality: int | None = None):
        """The image as ``SourceImage``, as stored (see :func:`ieiw.sources.regions.load_source_image`)."""
        return load_source_image(entry, fmt, quality)


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) as stored, from the header (no decode). ``OSError`` for a file that is no image, or one
    declaring more pixels than :func:`ieiw.imageio.decode` accepts (a decompression bomb: Pillow's own error
    would otherwise escape ``read`` and fail the whole unit)."""
    from ieiw.imageio import ImageDecodeError, header_size

    try:
        return header_size(path)
    except ImageDecodeError as exc:
        raise OSError(str(exc)) from None


def _read_capped(handle: Any, declared: int, where: str) -> bytes:
    """At most :data:`MAX_MASK_BYTES` from ``handle``: :class:`MaskTooLarge` when the declared size (a file's
    size, a zip member's ``file_size``) or the bytes actually read are more."""
    cap = MAX_MASK_BYTES
    if declared > cap:
        raise MaskTooLarge(f"{where}: {declared} bytes uncompressed, over the {cap}-byte cap on a mask PNG")
    data = handle.read(cap + 1)
    if len(data) > cap:
        raise MaskTooLarge(f"{where}: more than {cap} bytes uncompressed (declared {declared}), over the cap "
                           "on a mask PNG")
    return data


def decode_oi_mask(data: bytes, width: int, height: int) -> tuple[np.ndarray, tuple[int, int]]:
    """A mask PNG as ``bool`` (height, width): grey > 122, resized nearest-neighbour to the image when its
    stored size differs but its shape is the image's (each side within 1 px of the image scaled by one
    factor). Returns the mask and the stored (width, height). Raises :class:`MaskAspectMismatch` for another
    shape (it would be stretched), ``ValueError`` for bytes that are no image."""
    from ieiw.imageio import ImageDecodeError, Orientation, decode

    try:
        pixels = decode(data, Orientation.IGNORE).pixels
    except ImageDecodeError as exc:
        raise ValueError(str(exc)) from None
    grey = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
    stored = (int(grey.shape[1]), int(grey.shape[0]))
    if stored != (width, height):
        # mask side = s * image side + e, |e| <= 1 px, gives |mask_w * height - mask_h * width| <= width + height
        if abs(stored[0] * height - stored[1] * width) > width + height:
            raise MaskAspectMismatch(
                f"mask is {stored[0]}x{stored[1]} (aspect {stored[0] / stored[1]:.4f}), its image "
                f"{width}x{height} (aspect {width / height:.4f}): not the image's shape at any scale, even "
                "allowing 1 px of rounding per side; resizing would stretch it")
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
