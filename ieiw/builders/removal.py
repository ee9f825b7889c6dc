"""Object removal on VGPhraseCut, plus the flipped "add" pair (docs/paper.md, IEIW's first source).

For each referring record: rasterise its polygons (official rule), dilate the mask so the object's
blurred or JPEG-ringed edge goes too (AnyEdit dilates 15x15 before LaMa), inpaint, and emit
(original -> inpainted, "remove the <phrase>") and, flipped, (inpainted -> original, "add the <phrase>").
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import Field

from ieiw.builders.base import BuildContext, CandidateBuilder, SourceRecordError, UnitResult, WorkUnit
from ieiw.builders.inpaint import Inpainter, OpenCVInpaintConfig
from ieiw.builders.instructions import instruction_for
from ieiw.builders.phrasecut import PhraseCutRecord, PhraseCutSource, load_image, record_mask
from ieiw.builders.samples import ensure_phrasecut_sample
from ieiw.imageio import encode, extension
from ieiw.schemas.config import BuilderConfig, StrictModel, backend_field
from ieiw.schemas.registry import register_builder
from ieiw.schemas.rows import canonical_json, image_cell, row_id

DATASET = "phrasecut"
LICENSE = "CC BY 4.0 (Visual Genome)"


class SampleSpec(StrictModel):
    """Generate the bundled synthetic PhraseCut-layout sample into ``root`` when it is missing."""

    images: int = Field(120, ge=1)
    seed: int = 0
    width: int = Field(320, ge=64)
    height: int = Field(240, ge=64)


class PhraseCutSourceConfig(StrictModel):
    root: Path = Field(description="folder holding image_data_split.json, refer_{split}.json and images/")
    splits: list[str] = ["train"]
    limit: int | None = Field(None, ge=1, description="read at most this many records per split")
    samples: SampleSpec | None = Field(None, description="make a synthetic sample here if root is missing")


class RemovalConfig(BuilderConfig):
    """PhraseCut removal (+ the flipped add pair): the `removal:` section."""

    source: PhraseCutSourceConfig
    inpaint: backend_field("inpaint") = Field(default_factory=OpenCVInpaintConfig)  # type: ignore[valid-type]
    mask_dilation: int = Field(7, ge=0, description="side of the square dilation kernel in px (0 = none)")
    min_mask_fraction: float = Field(0.002, ge=0, le=1)
    max_mask_fraction: float = Field(0.5, ge=0, le=1)
    flip_add: bool = True
    image_format: Literal["jpeg", "png"] = "jpeg"
    jpeg_quality: int = Field(95, ge=50, le=100)
    seed: int = 0

    def preflight(self) -> list[str]:
        root = Path(self.source.root)
        if not self.enabled or self.source.samples is not None or (root / "image_data_split.json").exists():
            return []
        return [f"removal: {root} is not a VGPhraseCut_v0 folder (no image_data_split.json); get VGPhraseCut"
                " (docs/formats.md) and Visual Genome images into it, or set removal.source.root"]


def dilate(mask: np.ndarray, size: int) -> np.ndarray:
    if size <= 1:
        return mask
    return cv2.dilate(mask, np.ones((size, size), np.uint8))


@register_builder("removal", RemovalConfig)
class RemovalBuilder(CandidateBuilder):
    name = "removal"

    def __init__(self, config: RemovalConfig, context: BuildContext):
        self.config = config
        self.unit_size = context.unit_size
        self._lock = threading.Lock()
        self._inpainter: Inpainter | None = None

    @functools.cached_property
    def source(self) -> PhraseCutSource:
        src = self.config.source
        return PhraseCutSource(src.root, src.splits, src.limit)

    @property
    def inpainter(self) -> Inpainter:
        """Constructed (and its model loaded) on first use, once per process."""
        with self._lock:
            if self._inpainter is None:
                self._inpainter = self.config.inpaint.create()
            return self._inpainter

    def prepare(self) -> None:
        spec = self.config.source.samples
        if spec is not None:
            ensure_phrasecut_sample(Path(self.config.source.root), spec.images, spec.seed, spec.width, spec.height)

    def params(self) -> dict[str, Any]:
        """The parameters that shape a row; part of every row id. Only the chosen inpaint backend's
        own parameters enter (the model file's digest does not: it enters the stage fingerprint)."""
        c = self.config
        return {
            "inpaint": c.inpaint.label(),
            "model": c.inpaint.model_id(),
            **c.inpaint.row_params(),
            "dilation": c.mask_dilation,
            "format": c.image_format,
            "quality": c.jpeg_quality if c.image_format == "jpeg" else None,
            "seed": c.seed,
        }

    def fingerprint(self) -> dict[str, Any]:
        c = self.config
        return {
            **self.params(),
            "inpaint_models": c.inpaint.model_digests(),
            "root": str(Path(c.source.root).resolve()),
            "min_mask_fraction": c.min_mask_fraction,
            "max_mask_fraction": c.max_mask_fraction,
            "flip_add": c.flip_add,
        }

    def backends(self) -> dict[str, str]:
        inpaint = self.config.inpaint
        return {"inpaint": inpaint.label() + (" (embedded)" if inpaint.embedded else "")}

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
            "authors": None,
            "edit_url": None,
            "created_utc": None,
        }
        inpaint = self.config.inpaint
        builder = {
            "name": self.name,
            "backend": inpaint.label(),
            "embedded": inpaint.embedded,
            "model": inpaint.model_id(),
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
