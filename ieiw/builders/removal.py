"""Object removal on VGPhraseCut, plus the flipped "add" pair (PAPER.md, IEIW's first source).

For each referring record: rasterise its polygons (official rule), dilate the mask so the object's
blurred or JPEG-ringed edge goes too (AnyEdit dilates 15x15 before LaMa), inpaint, and emit
(original -> inpainted, "remove the <phrase>") and, flipped, (inpainted -> original, "add the <phrase>").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ieiw.builders.base import CandidateBuilder, SourceRecordError, UnitResult, WorkUnit
from ieiw.builders.imageio import encode, extension
from ieiw.builders.inpaint import Inpainter, make_inpainter
from ieiw.builders.instructions import instruction_for
from ieiw.builders.phrasecut import PhraseCutRecord, PhraseCutSource, load_image, record_mask
from ieiw.builders.samples import make_phrasecut_sample
from ieiw.schemas.config import RemovalConfig
from ieiw.schemas.rows import canonical_json, image_cell, row_id

DATASET = "phrasecut"
LICENSE = "CC BY 4.0 (Visual Genome)"


def dilate(mask: np.ndarray, size: int) -> np.ndarray:
    if size <= 1:
        return mask
    return cv2.dilate(mask, np.ones((size, size), np.uint8))


class RemovalBuilder(CandidateBuilder):
    name = "removal"

    def __init__(self, config: RemovalConfig, unit_size: int, inpainter: Inpainter | None = None):
        self.config = config
        self.unit_size = unit_size
        self.inpainter = inpainter or make_inpainter(config.inpaint)
        src = config.source
        if src.samples is not None and not (Path(src.root) / "image_data_split.json").exists():
            spec = src.samples
            make_phrasecut_sample(Path(src.root), spec.images, spec.seed, spec.width, spec.height)
        self.source = PhraseCutSource(src.root, src.splits, src.limit)

    def params(self) -> dict[str, Any]:
        """The parameters that shape a row; part of every row id."""
        c = self.config
        return {
            "inpaint": self.inpainter.name,
            "model": self.inpainter.model,
            "radius": c.inpaint.radius,
            "dilation": c.mask_dilation,
            "format": c.image_format,
            "quality": c.jpeg_quality if c.image_format == "jpeg" else None,
            "seed": c.seed,
        }

    def fingerprint(self) -> dict[str, Any]:
        c = self.config
        return {
            **self.params(),
            "root": str(Path(c.source.root).resolve()),
            "min_mask_fraction": c.min_mask_fraction,
            "max_mask_fraction": c.max_mask_fraction,
            "flip_add": c.flip_add,
        }

    def backends(self) -> dict[str, str]:
        return {"inpaint": self.inpainter.name + (" (embedded)" if self.inpainter.embedded else "")}

    def plan(self) -> list[WorkUnit]:
        units = []
        for split in self.config.source.splits:
            total = self.source.count(split)
            for index, start in enumerate(range(0, total, self.unit_size)):
                payload = {"split": split, "start": start, "stop": min(start + self.unit_size, total)}
                units.append(WorkUnit(key=f"{DATASET}-{split}-{index:05d}", payload=payload))
        return units

    def build_unit(self, unit: WorkUnit) -> UnitResult:
        p = unit.payload
        records = self.source.read(p["split"], p["start"], p["stop"])
        result = UnitResult(records=len(records))
        prepared: list[tuple[PhraseCutRecord, bytes, np.ndarray, np.ndarray]] = []
        images: dict[int, tuple[bytes, np.ndarray]] = {}  # records of one image share it
        for record in records:
            try:
                if record.image_id not in images:
                    images[record.image_id] = load_image(record)
                data, pixels = images[record.image_id]
                mask = self._mask(record, pixels)
            except SourceRecordError as err:
                result.failures.append(err.failure)
                continue
            prepared.append((record, data, pixels, mask))
        filled = self.inpainter.inpaint([p[2] for p in prepared], [p[3] for p in prepared])
        for (record, data, pixels, mask), target in zip(prepared, filled, strict=True):
            result.rows.extend(self._rows(record, data, pixels, mask, target))
        result.counters["inpainted"] = len(prepared)
        return result

    def _mask(self, record: PhraseCutRecord, pixels: np.ndarray) -> np.ndarray:
        height, width = pixels.shape[:2]
        mask = dilate(record_mask(record, width, height), self.config.mask_dilation)
        fraction = float(mask.mean())
        if fraction < self.config.min_mask_fraction:
            raise SourceRecordError(
                "mask_too_small", record.task_id, record.refer_file,
                f"region covers {fraction:.4f} of the image (< {self.config.min_mask_fraction})",
            )
        if fraction > self.config.max_mask_fraction:
            raise SourceRecordError(
                "mask_too_large", record.task_id, record.refer_file,
                f"region covers {fraction:.4f} of the image (> {self.config.max_mask_fraction})",
            )
        return mask

    def _rows(self, record: PhraseCutRecord, data: bytes, pixels: np.ndarray, mask: np.ndarray, target: np.ndarray):
        c = self.config
        params = self.params()
        original = image_cell(data, f"{record.image_id}.{extension(data)}")
        inpainted_bytes = encode(target, c.image_format, c.jpeg_quality)
        inpainted = image_cell(inpainted_bytes, f"{record.image_id}_inpainted.{extension(inpainted_bytes)}")
        mask_cell = image_cell(encode(mask * 255, "png"), f"{record.image_id}_mask.png")
        height, width = pixels.shape[:2]
        origin = {
            "dataset": DATASET,
            "split": record.split,
            "record_id": record.task_id,
            "image_id": str(record.image_id),
            "phrase": record.phrase,
            "url": record.url,
            "license": LICENSE,
            "author": None,
            "created_utc": None,
        }
        builder = {
            "name": self.name,
            "backend": self.inpainter.name,
            "embedded": self.inpainter.embedded,
            "model": self.inpainter.model,
            "seed": c.seed,
            "params": canonical_json(params),
        }
        pairs = [("remove", original, inpainted)]
        if c.flip_add:
            pairs.append(("add", inpainted, original))
        for task, source, target_cell in pairs:
            rid = row_id(DATASET, record.task_id, self.name, params, task)
            yield {
                "id": rid,
                "task": task,
                "instruction": instruction_for(task, record.phrase, rid),
                "source_image": source,
                "target_image": target_cell,
                "mask": mask_cell,
                "width": width,
                "height": height,
                "origin": origin,
                "exemplar": None,
                "scores": None,
                "builder": builder,
            }
