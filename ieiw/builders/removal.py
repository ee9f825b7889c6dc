"""Object removal on VGPhraseCut, plus the flipped "add" pair (docs/paper.md, IEIW's first source).

For each referring record: rasterise its polygons (official rule), apply the region policy (area
bounds, multi-instance phrases, regions touching the border: each skip counted with its reason),
dilate the mask so the object's blurred or JPEG-ringed edge goes too (AnyEdit dilates 15x15 before
LaMa), inpaint, verify the object is gone (:mod:`ieiw.backends.verify`), and emit (original ->
inpainted, "remove the <phrase>") and, flipped, (inpainted -> original, "add the <phrase>"). A region
that fails verification still yields both rows, with ``drop_reason``, so ``rejected/`` shows them.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import Field, model_validator

from ieiw.backends.inpaint.base import Inpainter
from ieiw.backends.inpaint.opencv import OpenCVInpaintConfig
from ieiw.backends.verify import DROP_REASON, EmbeddedVerifyConfig, RemovalVerifier
from ieiw.builders.instructions import Templates, default_templates, instruction_for, load_templates
from ieiw.builders.region_policy import REMOVAL_DEFAULTS, RegionPolicy, removal_policy, with_defaults
from ieiw.builders.template_files import template_file_problems
from ieiw.imageio import encode, extension
from ieiw.samples.phrasecut import ensure_phrasecut_sample
from ieiw.schemas.config import BuilderConfig, StrictModel, backend_field
from ieiw.schemas.lazy import locked_cached_property
from ieiw.schemas.registry import register_builder
from ieiw.schemas.rows import builder_cell, image_cell, origin_cell, row_id
from ieiw.schemas.source_image import SourceImage
from ieiw.schemas.units import BuildContext, CandidateBuilder, SourceRecordError, UnitResult, WorkUnit
from ieiw.sources.phrasecut import PhraseCutRecord, PhraseCutSource, load_image, record_mask

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
    regions: RegionPolicy = Field(default_factory=removal_policy)
    mask_dilation: int = Field(15, ge=0, description="side of the square dilation kernel in px (0 = none); "
                                                     "15 as AnyEdit before LaMa")
    verify: backend_field("verify") | None = Field(  # type: ignore[valid-type]
        default_factory=EmbeddedVerifyConfig, description="is the object gone? null = keep every region")
    flip_add: bool = True
    templates: Path | None = Field(None, description="a paraphrase file (docs/removal.md); default: the shipped one")
    image_format: Literal["jpeg", "png"] = "jpeg"
    jpeg_quality: int = Field(95, ge=50, le=100)
    seed: int = 0

    @model_validator(mode="after")
    def _phrasecut_regions(self) -> RemovalConfig:
        """Removal makes one pair per record, and PhraseCut regions have no scores: the policy keys that rank
        or cap an image's regions, or read scores, would do nothing here, so they are refused."""
        unused = [key for key in ("max_per_image", "min_predicted_iou", "min_stability_score")
                  if getattr(self.regions, key) is not None]
        unused += ["rank"] if self.regions.rank != "area" else []
        if unused:
            raise ValueError(f"regions.{', regions.'.join(unused)}: replacement's keys; removal makes one pair per "
                             "PhraseCut record and its regions have no scores (leave them out)")
        return self

    @model_validator(mode="before")
    @classmethod
    def _old_area_keys(cls, data: Any) -> Any:
        """A v1 config's ``min_mask_fraction`` / ``max_mask_fraction`` are read as ``regions.min_area`` /
        ``max_area`` (measured on the region itself, before dilation), so v1 configs load unchanged."""
        if isinstance(data, dict) and ({"min_mask_fraction", "max_mask_fraction"} & data.keys()):
            data = dict(data)
            regions = dict(data.get("regions") or {})
            for old, new in (("min_mask_fraction", "min_area"), ("max_mask_fraction", "max_area")):
                if old in data:
                    regions.setdefault(new, data.pop(old))
            data["regions"] = regions
        if isinstance(data, dict) and "regions" in data:  # a partial section keeps removal's own defaults
            data = {**data, "regions": with_defaults(data["regions"], REMOVAL_DEFAULTS)}
        return data

    def preflight(self) -> list[str]:
        """The source folder, every configured refer file (parsed: a broken one is named before any work
        starts) and the paraphrase file."""
        if not self.enabled:
            return []
        lines = template_file_problems("removal.templates", self.templates, load_templates)
        root = Path(self.source.root)
        if not (root / "image_data_split.json").exists():
            if self.source.samples is None:
                lines.append(f"removal: {root} is not a VGPhraseCut_v0 folder (no image_data_split.json); get "
                             "VGPhraseCut (docs/formats.md) and Visual Genome images into it, or set removal.source.root")
            return lines
        try:
            lines += [f"removal: {line}" for line in
                      PhraseCutSource(root, self.source.splits, self.source.limit).problems()]
        except (ValueError, FileNotFoundError) as exc:
            lines.append(f"removal: {exc}")
        return lines


class RegionSkipped(Exception):
    """A region the policy leaves out (not bad input: counted under ``skipped``, not ``failures``)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


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

    @functools.cached_property
    def source(self) -> PhraseCutSource:
        src = self.config.source
        return PhraseCutSource(src.root, src.splits, src.limit)

    @locked_cached_property
    def inpainter(self) -> Inpainter:
        """Constructed (and its model loaded) on first use, once per process."""
        return self.config.inpaint.create()

    @functools.cached_property
    def templates(self) -> Templates:
        return load_templates(self.config.templates) if self.config.templates else default_templates()

    @locked_cached_property
    def verifier(self) -> RemovalVerifier | None:
        return self.config.verify.create() if self.config.verify is not None else None

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
            "regions": c.regions.model_dump(),
            "verify": c.verify.fingerprint() if c.verify else None,
            "flip_add": c.flip_add,
            "templates": self.templates.digest_for(("remove", "add")),
        }

    def backends(self) -> dict[str, str]:
        out = {}
        for kind, backend in (("inpaint", self.config.inpaint), ("verify", self.config.verify)):
            if backend is not None:
                out[kind] = backend.label() + (" (embedded)" if backend.embedded else "")
        return out

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
        c = self.config
        prepared: list[tuple[PhraseCutRecord, SourceImage, np.ndarray]] = []
        images: dict[int, SourceImage] = {}  # records of one image share it
        for record in records:
            try:
                if record.image_id not in images:
                    images[record.image_id] = load_image(record, fmt=c.image_format, quality=c.jpeg_quality)
                image = images[record.image_id]
                mask = self._mask(record, image.pixels)
            except SourceRecordError as err:
                result.failures.append(err.failure)
                continue
            except RegionSkipped as skip:
                result.skipped[skip.reason] += 1
                continue
            prepared.append((record, image, mask))
        pixels, masks = [p[1].pixels for p in prepared], [p[2] for p in prepared]
        filled = self.inpainter.inpaint(pixels, masks)
        verifier = self.verifier
        if verifier is not None and prepared:
            scores = verifier.score(pixels, filled, masks, [p[0].phrase for p in prepared])
        else:
            scores = [None] * len(prepared)
        for (record, image, mask), target, score in zip(prepared, filled, scores, strict=True):
            gone = verifier is None or verifier.gone(score)
            result.counters["verified_gone" if gone else "verified_not_gone"] += verifier is not None
            result.rows.extend(self._rows(record, image, mask, target, score, gone))
        result.counters["inpainted"] = len(prepared)
        return result

    def _mask(self, record: PhraseCutRecord, pixels: np.ndarray) -> np.ndarray:
        """The dilated fill mask of the record's region, or :class:`RegionSkipped` by the policy."""
        height, width = pixels.shape[:2]
        policy = self.config.regions
        polygons = record.raw.get("Polygons")  # not a list: record_mask fails it as bad_polygons
        instances = sum(1 for instance in polygons if instance) if isinstance(polygons, list) else 0
        if instances > 1 and policy.multi_instance == "skip":  # before rasterising: a skip, not a failure
            raise RegionSkipped("multi_instance")
        region = record_mask(record, width, height)
        reason = policy.skip_reason(float(region.mean()), lambda m: bool(
            region[:m].any() or region[-m:].any() or region[:, :m].any() or region[:, -m:].any()))
        if reason is not None:
            raise RegionSkipped(reason)
        return dilate(region, self.config.mask_dilation)

    def _rows(self, record: PhraseCutRecord, image: SourceImage, mask: np.ndarray, target: np.ndarray,
              score: float | None, gone: bool):
        c = self.config
        params = self.params()
        data, pixels = image.data, image.pixels
        original = image_cell(data, f"{record.image_id}.{extension(data)}")
        inpainted_bytes = encode(target, c.image_format, c.jpeg_quality)
        inpainted = image_cell(inpainted_bytes, f"{record.image_id}_inpainted.{extension(inpainted_bytes)}")
        mask_cell = image_cell(encode(mask * 255, "png"), f"{record.image_id}_mask.png")
        height, width = pixels.shape[:2]
        origin = origin_cell(dataset=DATASET, split=record.split, record_id=record.task_id,
                             image_id=str(record.image_id), phrase=record.phrase, url=record.url, license=LICENSE)
        inpaint = self.config.inpaint
        # params: the id's parameters, plus how the source image was read (converted, EXIF-transposed:
        # then re-encoded so source and target agree in every viewer)
        builder = builder_cell(name=self.name, backend=inpaint.label(), embedded=inpaint.embedded,
                               model=inpaint.model_record(), seed=c.seed,
                               params={**params, "source_image": image.provenance(),
                                       "templates": self.templates.record(("remove", "add"))})
        verify = self.config.verify
        scores = {"verification": score, "verification_backend": verify.label()} if verify is not None else None
        pairs = [("remove", original, inpainted)]
        if c.flip_add:
            pairs.append(("add", inpainted, original))
        for task, source, target_cell in pairs:
            rid = row_id(DATASET, record.task_id, self.name, params, task)
            yield {
                "id": rid,
                "task": task,
                "instruction": instruction_for(task, record.phrase, rid, self.templates, head=record.name),
                "source_image": source,
                "target_image": target_cell,
                "mask": mask_cell,
                "width": width,
                "height": height,
                "origin": origin,
                "exemplar": None,
                "scores": scores,
                "builder": builder,
                "drop_reason": None if gone else DROP_REASON,
            }
