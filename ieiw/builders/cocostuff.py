"""Semantic segmentation as an edit: COCO-Stuff stuffthingmaps -> ``segment`` rows (docs/multitask.md).

Layout (docs/formats.md, "COCO-Stuff"): ``images/{split}/*.jpg``, ``annotations/{split}/{stem}.png`` (one
8-bit label map per image: pixel value v is class ``v+1`` of ``labels.txt``, 255 unlabelled) and
``labels.txt`` (lines ``N: name``, ``0: unlabeled`` first). The image list is the sorted ``*.jpg`` of the
split, as InstructDiffusion's loader builds it.

Rows. InstructDiffusion picks one class per sample at training time, each epoch anew (from the classes in
the sample's crop; an absent one with probability ``empty_percentage``), and so does our trainer: each row's
``builder.params["redraw"]`` holds every present class's pixels (COCO RLE), the image's absent classes and the
templates (:mod:`ieiw.training.redraw`). The stored row is one such draw on the whole image, for every other
reader. A converter writes rows once, up to ``classes_per_image`` *slots* per image (default 1: with the
trainer's redraws, more rows per image would only raise COCO-Stuff's share of the mix). Each slot
is, with probability ``empty_share`` (0.2, the official ``empty_percentage``), an **absent** class (one of
``labels.txt``'s classes with no pixel in the image: the target is the input, the instruction still
names it), else the next **present** class; classes and draws are seeded by (``seed``, image), never
random between runs. An image with no labelled pixel gives one row "leave the picture as it is." (the
official sentence, or a ``nothing:`` template). ``classes_per_image: null`` makes one slot per present
class. Crops, resizes and flips are the trainer's (they apply to source and target alike), so rows keep
the full image; a class absent from the image is absent from any crop of it.

Target: the source with the class's pixels blended 50/50 with the row's colour
(:mod:`ieiw.builders.overlay`), stored as PNG; an absent or empty row's target is the source's own
bytes. Source: the stored bytes (re-encoded as PNG only when they would not decode to the annotated
pixels: a non-RGB mode, an EXIF orientation). Mask column: the class's pixels (0/255 PNG; all zero for
absent and empty rows).

Record-level problems never stop a unit; each is a failure naming the file and the image
(``missing_label_map``, ``unreadable_label_map``, ``bad_label_map`` for a map that is not one 8-bit
channel, ``unknown_label`` for a value that ``labels.txt`` does not name, ``missing_image``,
``unreadable_image``, ``image_size_mismatch`` when image and map differ in size, ``path_outside_root`` when
the image or its map is a symlink out of its folder, ``bad_file_name`` for a name that is not UTF-8; a
folder, FIFO or device where a file should be is missing, never read). File-level problems (no
``labels.txt``, a line that is not ``N: name``, no images) raise :class:`CocoStuffFormatError` before any
unit is built, and a config's preflight names them.
"""

from __future__ import annotations

import functools
import re
import warnings
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from pydantic import Field

from ieiw.builders.captions import OVERLAY_TASK, add_caption_rows, captions_fingerprint, captions_preflight
from ieiw.builders.overlay import (
    ALPHA,
    NotARegularFile,
    mask_png,
    overlay,
    pick_colour,
    read_regular_file,
    read_source,
    templates_for,
    unit_interval,
)
from ieiw.builders.template_files import template_file_problems
from ieiw.imageio import encode, extension
from ieiw.samples.segmentation import SampleSpec, ensure_cocostuff_sample
from ieiw.schemas.config import BuilderConfig
from ieiw.schemas.paths import PATH_OUTSIDE_ROOT, PathOutsideRoot, path_under
from ieiw.schemas.registry import register_builder
from ieiw.schemas.rows import builder_cell, image_cell, origin_cell, row_id, stable_hash, text_field
from ieiw.schemas.source_image import SourceImage
from ieiw.schemas.units import BuildContext, CandidateBuilder, SourceRecordError, UnitResult, WorkUnit

DATASET = "cocostuff"
TASK = "segment"
LICENSE = "COCO-Stuff annotations CC BY 4.0; COCO images under the Flickr terms of use"
UNLABELLED = 255
REDRAW_FORMAT = 1  # builder.params["redraw"]: bump when what a trainer reads there changes
LABEL_LINE = re.compile(r"^\s*(\d+)\s*:(.*)$")  # the name is stripped after: a lazy group before \s*$ backtracks
# quadratically (a crafted line of 40,000 spaces took 4 s, a megabyte of them would take the better part of an hour)


class CocoStuffFormatError(ValueError):
    """A COCO-Stuff folder or file ieiw cannot use at all; the one-line message names the file."""


class CocoStuffConfig(BuilderConfig):
    """COCO-Stuff semantic segmentation rendered as colour overlays: the `cocostuff:` section."""

    root: Path = Field(description="the coco-stuff folder: images/{split}/, annotations/{split}/, labels.txt")
    split: str = Field("train2017", description="the images/ and annotations/ subfolder")
    limit: int | None = Field(None, ge=1, description="read at most this many images (sorted by name)")
    samples: SampleSpec | None = Field(None, description="make the synthetic sample at root if it is missing")
    classes_per_image: int | None = Field(1, ge=1, description="rows (slots) per image; null: one per present "
                                          "class. One is enough for training: the trainer picks the class anew "
                                          "per sample, as the official loader does")
    empty_share: float = Field(0.2, ge=0, le=1, description="chance that a slot names an absent class "
                                                            "(target = input), the official empty_percentage")
    seed: int = 0
    templates: Path | None = Field(None, description="a segmentation template file; default: the shipped one")
    captions: Path | None = Field(None, description="a COCO captions file (annotations/captions_{split}.json): "
                                  "also write adaptation rows, each rendered target with its image's caption")

    def preflight(self) -> list[str]:
        if not self.enabled:
            return []
        lines = template_file_problems("cocostuff.templates", self.templates, templates_for)
        root = Path(self.root)
        if not (root / "labels.txt").exists() and self.samples is not None:
            return lines
        lines += captions_preflight("cocostuff", self.captions)
        try:
            CocoStuffSource(root, self.split, self.limit).check()
        except (CocoStuffFormatError, FileNotFoundError) as exc:
            lines.append(f"cocostuff: {exc}")
        return lines


def read_labels(path: Path) -> dict[int, str]:
    """``labels.txt`` as ``{id: name}``; a line that is not ``N: name`` raises, naming the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: not found; is {path.parent} a COCO-Stuff folder?") from None
    except UnicodeDecodeError as exc:
        raise CocoStuffFormatError(f"{path}: not text ({exc.reason} at byte {exc.start})") from None
    labels: dict[int, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = LABEL_LINE.match(line)
        name = match.group(2).strip() if match is not None else ""
        if not name:
            raise CocoStuffFormatError(f"{path}:{number}: expected 'N: name', found {line[:60]!r}")
        index = int(match.group(1))
        if index in labels:
            raise CocoStuffFormatError(f"{path}:{number}: id {index} listed twice")
        labels[index] = name
    if not any(index > 0 for index in labels):
        raise CocoStuffFormatError(f"{path}: no class with an id above 0")
    return labels


class CocoStuffSource:
    """``root/images/{split}/*.jpg`` + ``root/annotations/{split}/{stem}.png`` + ``root/labels.txt``.

    Files are listed and ``labels.txt`` parsed on first use, once per process."""

    def __init__(self, root: Path, split: str, limit: int | None = None):
        self.root, self.split, self.limit = Path(root), split, limit

    @property
    def labels_path(self) -> Path:
        return self.root / "labels.txt"

    @functools.cached_property
    def labels(self) -> dict[int, str]:
        return read_labels(self.labels_path)

    @functools.cached_property
    def stems(self) -> list[str]:
        folder = self.root / "images" / self.split
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: not found; is {self.root} a COCO-Stuff folder with split "
                                    f"{self.split!r}?")
        stems = sorted(path.stem for path in folder.glob("*.jpg"))
        if not stems:
            raise CocoStuffFormatError(f"{folder}: no *.jpg image")
        return stems[: self.limit] if self.limit else stems

    def check(self) -> None:
        """Parse ``labels.txt`` and list the images now: raises with one line naming the file."""
        _ = self.labels, self.stems

    def image_path(self, stem: str) -> Path:
        return self.root / "images" / self.split / f"{stem}.jpg"

    def label_path(self, stem: str) -> Path:
        return self.root / "annotations" / self.split / f"{stem}.png"

    def check_paths(self, stem: str) -> None:
        """``path_outside_root`` when the image or its label map leads out of its folder. The names come from
        listing ``images/{split}``, so only a symlink can (:mod:`ieiw.schemas.paths`).

        ``bad_file_name`` when the name is not UTF-8 (Python lists it with lone surrogates): a row's ids
        could not hold it, and a mended one could name another image."""
        if text_field(stem) != stem:
            raise SourceRecordError("bad_file_name", text_field(stem), text_field(str(self.image_path(stem))),
                                    f"the file name {stem!r} is not UTF-8 text")
        for path in (self.image_path(stem), self.label_path(stem)):
            try:
                path_under(path.parent, path.name)
            except PathOutsideRoot as exc:
                raise SourceRecordError(PATH_OUTSIDE_ROOT, stem, str(path), str(exc)) from None

    def label_map(self, stem: str) -> np.ndarray:
        """The image's label map (H x W uint8 values), or a :class:`SourceRecordError`.

        Grey (``L``) maps are read as stored; a palette (``P``) map by its indices (the values written);
        any other mode fails ``bad_label_map`` (its values would not be class numbers)."""
        path = self.label_path(stem)
        try:
            data = read_regular_file(path)
        except (FileNotFoundError, NotARegularFile):
            raise SourceRecordError("missing_label_map", stem, str(path), "no label map for this image") from None
        except OSError as exc:  # a symlink loop, no permission: this image's map only
            raise SourceRecordError("unreadable_label_map", stem, str(path), f"cannot read it: {exc}") from None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(BytesIO(data), formats=("PNG",)) as image:
                    image.load()
                    mode, values = image.mode, np.asarray(image)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError,
                Image.DecompressionBombWarning) as exc:
            raise SourceRecordError("unreadable_label_map", stem, str(path), f"not a readable PNG: {exc}") from None
        if mode not in ("L", "P"):
            raise SourceRecordError("bad_label_map", stem, str(path),
                                    f"mode {mode}: a stuffthingmap is one 8-bit channel of class values")
        return values.astype(np.uint8)


@register_builder("cocostuff", CocoStuffConfig)
class CocoStuffBuilder(CandidateBuilder):
    name = "cocostuff"

    def __init__(self, config: CocoStuffConfig, context: BuildContext):
        self.config = config
        self.unit_size = context.unit_size

    @functools.cached_property
    def source(self) -> CocoStuffSource:
        return CocoStuffSource(self.config.root, self.config.split, self.config.limit)

    @functools.cached_property
    def templates(self):
        return templates_for(self.config.templates)

    def prepare(self) -> None:
        spec = self.config.samples
        if spec is not None:
            ensure_cocostuff_sample(Path(self.config.root), spec.images, spec.seed, spec.width, spec.height,
                                    self.config.split)

    def params(self) -> dict[str, Any]:
        """What shapes a row's content, so part of its id. Which rows exist (``classes_per_image``,
        ``empty_share``, ``seed``) is not: the same (image, class) row is the same row in any selection."""
        return {"alpha": ALPHA, "target_format": "png"}

    def fingerprint(self) -> dict[str, Any]:
        c = self.config
        return {**self.params(), "root": str(Path(c.root).resolve()), "split": c.split, "limit": c.limit,
                "classes_per_image": c.classes_per_image, "empty_share": c.empty_share, "seed": c.seed,
                "templates": self.templates.digest(), "captions": captions_fingerprint(c.captions),
                "redraw": REDRAW_FORMAT}

    def backends(self) -> dict[str, str]:
        return {"render": "overlay"}

    def plan(self) -> list[WorkUnit]:
        stems = self.source.stems
        _ = self.source.labels  # a broken labels.txt is named before any unit runs
        units = []
        for index, start in enumerate(range(0, len(stems), self.unit_size)):
            units.append(WorkUnit(key=f"{DATASET}-{self.config.split}-{index:05d}",
                                  payload={"stems": stems[start:start + self.unit_size]}))
        return units

    def build_unit(self, unit: WorkUnit) -> UnitResult:
        stems = unit.payload["stems"]
        result = UnitResult(records=len(stems))
        for stem in stems:
            try:
                self.source.check_paths(stem)
                label = self.source.label_map(stem)
                self._check_values(stem, label)
                image = read_source(self.source.image_path(stem), (label.shape[1], label.shape[0]), stem,
                                    str(self.source.label_path(stem)))
            except SourceRecordError as err:
                result.failures.append(err.failure)
                continue
            rows = []
            for kind, row in self._rows(stem, image, label):
                rows.append(row)
                result.counters[f"{kind}_rows"] += 1
            result.rows += add_caption_rows(rows, self.config.captions, OVERLAY_TASK, result.counters,
                                            rendered=lambda row: row["target_image"] is not row["source_image"])
        return result

    def _check_values(self, stem: str, label: np.ndarray) -> None:
        labels = self.source.labels
        values = [int(v) for v in np.unique(label) if v != UNLABELLED]
        unknown = [v for v in values if v + 1 not in labels]
        if unknown:
            raise SourceRecordError(
                "unknown_label", stem, str(self.source.label_path(stem)),
                f"pixel value(s) {unknown[:8]} name no class of {self.source.labels_path} (value v is id v+1)")

    def choose(self, stem: str, present: list[int]) -> list[tuple[int, bool]]:
        """The image's rows as (label value, present?) in slot order: seeded, the same in every run."""
        c = self.config
        if not present:
            return []
        order = sorted(present, key=lambda v: stable_hash("class", c.seed, stem, v))
        known = {index - 1 for index in self.source.labels if 1 <= index <= UNLABELLED}
        pool = sorted(known - set(present), key=lambda v: stable_hash("absent", c.seed, stem, v))
        slots = len(present) if c.classes_per_image is None else min(c.classes_per_image, len(present))
        chosen: list[tuple[int, bool]] = []
        for slot in range(slots):
            if pool and unit_interval("empty", c.seed, stem, slot) < c.empty_share:
                chosen.append((pool.pop(0), False))
            else:
                chosen.append((order.pop(0), True))
        return chosen

    def redraw_material(self, label: np.ndarray, present: list[int]) -> dict[str, Any]:
        """What a trainer needs to pick the class anew per sample, as the official loader does
        (:mod:`ieiw.training.redraw`): every present class's pixels as COCO RLE, every other class of
        ``labels.txt`` by id and name, the templates and ``empty_share``."""
        from pycocotools import mask as rle  # the reference RLE codec (COCO's own), as for RefCOCO

        classes = []
        for value in present:
            encoded = rle.encode(np.asfortranarray((label == value).astype(np.uint8)))
            classes.append([value + 1, self.source.labels[value + 1], encoded["counts"].decode("ascii")])
        known = sorted(index for index in self.source.labels if 1 <= index <= UNLABELLED)
        there = {value + 1 for value in present}
        absent = [[index, self.source.labels[index]] for index in known if index not in there]
        return {"kind": "segment-classes", "size": list(label.shape), "classes": classes, "absent": absent,
                "empty_share": self.config.empty_share, "segment": list(self.templates.segment),
                "nothing": list(self.templates.nothing)}

    def _rows(self, stem: str, image: SourceImage, label: np.ndarray):
        present = [int(v) for v in np.unique(label) if v != UNLABELLED]
        redraw = self.redraw_material(label, present)
        source = image_cell(image.data, f"{stem}.{extension(image.data)}")
        height, width = label.shape
        empty_mask = image_cell(mask_png(np.zeros_like(label)), f"{stem}_mask.png")
        choices = self.choose(stem, present)
        if not choices:  # no labelled pixel at all
            rid = row_id(DATASET, f"{stem}:none", self.name, self.params(), TASK)
            yield "nothing", self._row(rid, stem, None, None, self.templates.nothing_instruction(rid), source,
                                       source, empty_mask, width, height, image, {"kind": "nothing", "redraw": redraw})
            return
        for value, is_present in choices:
            name = self.source.labels[value + 1]
            rid = row_id(DATASET, f"{stem}:{value + 1}", self.name, self.params(), TASK)
            colour = pick_colour(rid)
            instruction = self.templates.segment_instruction(rid, name, colour)
            extra = {"kind": "present" if is_present else "absent", "label_id": value + 1, "colour": colour.word,
                     "redraw": redraw}
            if is_present:
                mask = (label == value).astype(np.uint8)
                target = image_cell(encode(overlay(image.pixels, mask, colour.rgb), "png"), f"{stem}_{value + 1}.png")
                mask_cell = image_cell(mask_png(mask), f"{stem}_{value + 1}_mask.png")
            else:
                target, mask_cell = source, empty_mask
            yield extra["kind"], self._row(rid, stem, value + 1, name, instruction, source, target, mask_cell,
                                           width, height, image, extra)

    def _row(self, rid: str, stem: str, label_id: int | None, name: str | None, instruction: str,
             source: dict, target: dict, mask: dict, width: int, height: int, image: SourceImage,
             extra: dict[str, Any]) -> dict[str, Any]:
        c = self.config
        return {
            "id": rid,
            "task": TASK,
            "instruction": instruction,
            "source_image": source,
            "target_image": target,
            "mask": mask,
            "width": width,
            "height": height,
            "origin": origin_cell(dataset=DATASET, split=c.split,
                                  record_id=f"{stem}:{label_id if label_id is not None else 'none'}", image_id=stem,
                                  phrase=name, license=LICENSE),
            "exemplar": None,
            "scores": None,
            "builder": builder_cell(name=self.name, backend="overlay", embedded=False, seed=c.seed,
                                    params={**self.params(), **extra, "source_image": image.provenance()}),
            "drop_reason": None,
        }

