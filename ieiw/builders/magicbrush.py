"""MagicBrush -> ``edit`` rows: the ``magicbrush:`` section (docs/multitask.md, "Editing data importers").

Layout: the Hugging Face dataset ``osunlp/MagicBrush`` (CC BY 4.0), ``data/train-NNNNN-of-000NN-<hash>.parquet`` and
``data/dev-*.parquet`` (``split: train`` or ``dev``; a ``{split}/`` folder of Parquet files is read as well).
Columns: ``img_id`` (string), ``turn_index`` (int), ``source_img``, ``mask_img``, ``instruction``, ``target_img``
(image cells ``{bytes, path}``). One row per turn: ``origin.record_id`` is ``{img_id}:{turn_index}``,
``origin.image_id`` the ``img_id`` (every turn of a session lands in one split); a whole float there (``2.0``:
pandas writes an integer column holding a null as float64) is read as its integer, so such a file gives the same
rows. A later turn's source is the earlier turn's target, as the dataset stores it.

**The mask.** ``mask_img`` is the source with the region the annotator erased for DALL-E 2 made transparent, not a
binary mask, and at times at another resolution than the source. The ``mask`` column is that region: alpha below 128
(for a mask without alpha: a black-and-white image, white = region), resized to the source's size with nearest
neighbour when the sizes differ (``mask_resized_from`` in ``builder.params``), stored as a 0/255 PNG. No mask cell,
or one with no region at all, gives a null ``mask`` (counted: ``mask_absent``, ``mask_empty``); a colour image
without alpha says nothing about a region (``mask_unusable``, null ``mask``); an undecodable one (or a cell that is
no image cell at all) is a failure ``unreadable_mask``. ``masks: false`` leaves the column null.

Failures name the file and the row: ``unreadable_image``, ``missing_image``, ``empty_instruction``, ``missing_id``
(a null ``img_id`` or ``turn_index``), ``unreadable_row_group`` (:mod:`ieiw.builders.importers`),
``size_mismatch`` (MagicBrush's source and target have one size), ``duplicate_record`` (an ``img_id`` and
``turn_index`` seen before: the message names where), ``path_outside_root`` (an image or mask cell with no
bytes whose ``path`` is absolute, has a ``..`` or is symlinked out of the Parquet file's folder).
"""

from __future__ import annotations

import warnings
from io import BytesIO
from pathlib import Path
from typing import Any, ClassVar, Literal

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError
from pydantic import Field

from ieiw.builders.importers import (
    ParquetImportBuilder,
    ParquetImportConfig,
    ParquetImporter,
    UnreadableRowGroup,
    cell_bytes,
    check_same_size,
    edit_row,
    iter_rows,
    read_cell_image,
    read_cell_instruction,
)
from ieiw.imageio import encode
from ieiw.schemas.config import StrictModel
from ieiw.schemas.lazy import locked_cached_property
from ieiw.schemas.paths import PATH_OUTSIDE_ROOT, PathOutsideRoot
from ieiw.schemas.registry import register_builder
from ieiw.schemas.rows import text_field
from ieiw.schemas.units import BuildContext, SourceRecordError

NAME = "magicbrush"
DATASET = "magicbrush"
LICENSE = "CC BY 4.0 (MagicBrush dataset card); source images from MS COCO"
ROLES = {
    "img_id": ("img_id",),
    "turn_index": ("turn_index",),
    "source": ("source_img",),
    "mask": ("mask_img",),
    "instruction": ("instruction",),
    "target": ("target_img",),
}
REQUIRED = ("img_id", "turn_index", "source", "instruction", "target")
ALPHA_REGION = 128  # alpha below this is erased, so edited


class MagicBrushSampleSpec(StrictModel):
    """Write the bundled synthetic sample (both splits, Hugging Face layout) into ``root`` when it is missing."""

    sessions: int = Field(6, ge=1, description="editing sessions of 1-3 turns each, over the train and dev files")
    row_group: int = Field(4, ge=1)
    seed: int = 0
    width: int = Field(128, ge=32)
    height: int = Field(128, ge=32)
    bad: bool = Field(False, description="add the bad rows the tests name: an undecodable target, an empty "
                                         "instruction, a target of another size, a repeated img_id and turn")


class MagicBrushConfig(ParquetImportConfig):
    """The ``magicbrush:`` section."""

    columns: dict[Literal["img_id", "turn_index", "source", "mask", "instruction", "target"], str] = Field(
        default_factory=dict, description="role -> column name, where a file names them otherwise")
    masks: bool = Field(True, description="fill the mask column from mask_img")
    require_same_size: bool = True
    samples: MagicBrushSampleSpec | None = Field(None, description="make a synthetic sample at root if missing")

    section: ClassVar[str] = NAME

    def importer(self) -> ParquetImporter:
        return MagicBrushFiles(self, 1)


class MagicBrushFiles(ParquetImporter):
    name = NAME
    roles = ROLES
    required = REQUIRED


def region_of(data: bytes, size: tuple[int, int]) -> tuple[np.ndarray | None, dict[str, Any]]:
    """The edited region of a ``mask_img`` (0/1, ``size`` = (width, height) of the source) and what was done;
    ``(None, {"mask": why})`` when it names no region. ``ValueError`` when it does not decode."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(BytesIO(data)) as image:
                image.load()
                mode = image.mode
                if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
                    region, how = np.asarray(image.convert("RGBA"))[..., 3] < ALPHA_REGION, "alpha"
                elif mode in ("L", "1"):
                    region, how = np.asarray(image.convert("L")) > 127, "white"
                else:
                    rgb = np.asarray(image.convert("RGB"))
                    if not ((rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2])).all():
                        return None, {"mask": "unusable", "mask_mode": mode}
                    region, how = rgb[..., 0] > 127, "white"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:
        raise ValueError(f"cannot decode: {exc}") from None
    info: dict[str, Any] = {"mask": how, "mask_mode": mode}
    height, width = region.shape
    if (width, height) != tuple(size):
        info["mask_resized_from"] = [width, height]
        region = cv2.resize(region.astype(np.uint8), tuple(size), interpolation=cv2.INTER_NEAREST).astype(bool)
    if not region.any():
        return None, {"mask": "empty", "mask_mode": mode}
    return region.astype(np.uint8), info


def whole(value: Any) -> Any:
    """An id cell as the dataset meant it: a whole float (``3.0``; pandas writes an integer column that has a
    null as float64) is that integer, so such a column gives the rows an integer column gives."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def record_key(img_id: Any, turn: Any) -> str:
    """``{img_id}:{turn_index}``, the record id, as a row can hold it (text that was not UTF-8 made writable)."""
    return text_field(f"{whole(img_id)}:{whole(turn)}")


@register_builder(NAME, MagicBrushConfig)
class MagicBrushBuilder(ParquetImportBuilder):
    name = NAME

    def __init__(self, config: MagicBrushConfig, context: BuildContext):
        self.config = config
        self.files = MagicBrushFiles(config, context.unit_size)

    def prepare(self) -> None:
        spec = self.config.samples
        if spec is not None:
            from ieiw.samples.editing import ensure_magicbrush_sample

            ensure_magicbrush_sample(Path(self.config.root), **spec.model_dump())

    @locked_cached_property
    def _first_seen(self) -> dict[tuple[str, int], tuple[str, int]]:
        """(file, row) of the first row with the same ``{img_id}:{turn_index}``, keyed by (file, row) of each
        repeat: the two small key columns of every file, read once per process."""
        return self._scan_keys()

    def _scan_keys(self) -> dict[tuple[str, int], tuple[str, int]]:
        first: dict[str, tuple[str, int]] = {}
        repeats: dict[tuple[str, int], tuple[str, int]] = {}
        left = self.config.limit
        for part in self.files.parts:
            columns = self.files.columns(part)
            stop = part.rows if left is None else min(part.rows, left)
            for index, _, values in iter_rows(part.path, 0, stop, [columns["img_id"], columns["turn_index"]],
                                              errors="yield"):
                if isinstance(values, UnreadableRowGroup):
                    continue  # build_unit fails these rows
                key = record_key(values[columns["img_id"]], values[columns["turn_index"]])
                if key in first:
                    repeats[part.name, index] = first[key]
                else:
                    first[key] = (part.name, index)
            if left is not None:
                left -= stop
                if left <= 0:
                    break
        return repeats

    def params(self, columns: dict[str, str | None]) -> dict[str, Any]:
        return {"source_column": columns["source"], "target_column": columns["target"],
                "instruction_column": columns["instruction"],
                "mask_column": columns["mask"] if self.config.masks else None, "reencode": "png"}

    def extra_fingerprint(self) -> dict[str, Any]:
        return {"masks": self.config.masks}

    def _row(self, part, columns: dict[str, str | None], index: int, group: int, values: dict[str, Any],
             counters) -> dict[str, Any]:
        img_id, turn = whole(values[columns["img_id"]]), whole(values[columns["turn_index"]])
        record_id = record_key(img_id, turn)
        file = str(part.path)
        where = f"row {index} (row group {group})"
        if img_id is None or turn is None:
            raise SourceRecordError("missing_id", record_id, file, f"{where}: img_id {img_id!r}, turn_index {turn!r}")
        earlier = self._first_seen.get((part.name, index))
        if earlier is not None:
            raise SourceRecordError("duplicate_record", record_id, file,
                                    f"{where}: img_id {img_id} turn {turn} is also row {earlier[1]} of {earlier[0]}")
        instruction = read_cell_instruction(values[columns["instruction"]], record_id, file,
                                            f"{where}: column {columns['instruction']}")
        source = read_cell_image(values[columns["source"]], part.path.parent, record_id, file,
                                 f"{where}: column {columns['source']}")
        target = read_cell_image(values[columns["target"]], part.path.parent, record_id, file,
                                 f"{where}: column {columns['target']}")
        if self.config.require_same_size:
            check_same_size(source, target, record_id, file, where)
        counters["reencoded_images"] += int(source.reencoded) + int(target.reencoded)
        mask, info = self._mask(values.get(columns["mask"]) if columns["mask"] else None, part, source,
                                record_id, where, columns["mask"])
        counters[f"mask_{info['mask']}"] += 1
        extra = {"file": part.name, "row": index, "row_group": group, "turn_index": turn, **info}
        return edit_row(builder=NAME, dataset=DATASET, split=self.config.split, record_id=record_id,
                        image_id=text_field(str(img_id)), instruction=instruction, source=source, target=target,
                        mask=mask, license=LICENSE, params=self.params(columns), extra=extra, backend="parquet-import")

    def _mask(self, value: Any, part, source, record_id: str, where: str, column: str | None):
        if not self.config.masks:
            return None, {"mask": "off"}
        try:
            data, _ = cell_bytes(value, part.path.parent) if value is not None else (None, None)
        except PathOutsideRoot as exc:
            raise SourceRecordError(PATH_OUTSIDE_ROOT, record_id, str(part.path),
                                    f"{where}: column {column}: {exc}") from None
        except TypeError as exc:  # a cell of another type (a re-export wrote the paths as plain strings)
            raise SourceRecordError("unreadable_mask", record_id, str(part.path),
                                    f"{where}: column {column}: {exc}") from None
        if data is None:
            return None, {"mask": "absent"}
        try:
            region, info = region_of(data, (source.width, source.height))
        except ValueError as exc:
            raise SourceRecordError("unreadable_mask", record_id, str(part.path),
                                    f"{where}: column {column}: {exc}") from None
        return (encode(region * 255, "png") if region is not None else None), info
