"""Low-level enhancement phrased as edits: deblurring (GoPro, REDS), denoising (SIDD), watermark removal
(CLWD), and synthetic degradations of any clean image (docs/formats.md "Low-level tasks"; docs/multitask.md
"Enhancement").

A row's source is the degraded image, its target the clean one, its task ``enhance``; the instruction comes
from the task's templates (``templates/deblur.yaml``, ``denoise.yaml``, ``dewatermark.yaml``), picked by the
row id; ``origin.dataset`` is the dataset's name and ``builder.params`` names the ``degradation`` (``blur``,
``noise``, ``watermark``).

**Pairing by name, never by position.** The official loaders pair the i-th file of one sorted folder with the
i-th of the other, so one missing file shifts every pair after it. Here each file gets a key from its dataset's
naming rule and files pair by key; a file whose partner is missing is a failure ``no_partner`` naming the file
and the partner path expected, two files with one key are ``duplicate_name``, partners of different sizes are
``size_mismatch``, an undecodable one ``unreadable_image``, a file symlinked out of ``root``
``path_outside_root`` (names come from listing the folders, so a symlink is the only way out). Layouts
(``root`` is the dataset's folder, ``split`` defaults to ``train``; ``layout: auto`` takes whichever is there):

| dataset | ``training`` layout (docs/formats.md, the official loaders) | ``release`` layout (as downloaded) | key |
|---|---|---|---|
| ``gopro`` | ``{split}/input/<name>`` + ``{split}/target/<name>`` | ``{split}/<seq>/blur/<frame>`` + ``{split}/<seq>/sharp/<frame>`` (GOPRO_Large) | name / seq+frame |
| ``reds`` | ``{split}/blur/<seq>/<frame>`` + ``{split}/sharp/<seq>/<frame>`` | ``{split}/{split}_blur/...`` + ``{split}/{split}_sharp/...`` | seq+frame |
| ``sidd`` | ``{split}/input/<name>`` + ``{split}/gt/<name>`` | ``Data/<scene>/<id>_NOISY_SRGB_<n>.PNG`` + ``Data/<scene>/<id>_GT_SRGB_<n>.PNG`` (SIDD Medium sRGB) | name / scene+id+n |
| ``clwd`` | ``{split}/Watermarked_image/<name>`` + ``{split}/Watermark_free_image/<name>`` | the same | name |

Keys leave out the file extension, so ``a.png`` pairs with ``a.PNG``. Only image files count (``.png``,
``.jpg``, ``.jpeg``, ``.bmp``, ``.tif``, ``.tiff``, ``.webp``, any case); the rest of a release (GoPro's
``blur_gamma``, SIDD's ``.MAT`` raw files, CLWD's ``Mask``/``Alpha``/``Watermark``) is not read. Both images are
kept as stored (bytes unchanged) unless a viewer would show other pixels (not RGB, an EXIF orientation tag):
then they are re-encoded as PNG in stored pixel order, so the pair stays aligned.

**Synthetic** (``dataset: synthetic``, the embedded mode): every image under ``root`` (recursively, sorted by
path) gives one row per entry of ``degradations``. Each degradation is drawn from a seed made of ``seed``, the
image's path and the degradation, and recorded in ``builder.params`` (``image_seed`` and the drawn values), so
``degrade(clean_pixels, degradation, image_seed)`` reproduces the source exactly:

- ``blur``: Gaussian (sigma 1-3 px) or linear motion blur (length 9-25 px, any angle), each with probability
  1/2; sizes at 256 px on the short side, scaled with the image (at least half of them).
- ``noise``: additive Gaussian noise, sigma 5-25 (of 255), per pixel and channel.
- ``watermark``: a text stamp (one of a few stock-photo words) rendered with Pillow's ImageDraw in Pillow's
  default font, 8-16% of the short side, rotated -35..35 degrees, once or tiled, white/black/gray at opacity
  0.35-0.65. The mask column holds the stamp's footprint.

The source (degraded) is PNG (lossless, so re-degrading the target reproduces it bit for bit); the target is
the clean file as stored. These rows say ``builder.embedded: true``: a stand-in for the real paired sets.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import PIL
from pydantic import Field, field_validator

from ieiw.builders.template_files import load_packaged_template_file, load_template_file, template_file_problems
from ieiw.imageio import ImageDecodeError, Orientation, decode, encode, extension
from ieiw.schemas.config import BuilderConfig, StrictModel
from ieiw.schemas.lazy import locked_cached_property
from ieiw.schemas.paths import PATH_OUTSIDE_ROOT, PathOutsideRoot, path_under
from ieiw.schemas.registry import register_builder
from ieiw.schemas.rows import builder_cell, image_cell, origin_cell, row_id, stable_hash, text_field
from ieiw.schemas.source_image import SourceImage
from ieiw.schemas.units import BuildContext, CandidateBuilder, Failure, SourceRecordError, UnitResult, WorkUnit
from ieiw.sources.degradations import DATASET_DEGRADATION, DEGRADATIONS, degrade, image_seed

NAME = "enhance"
TASK = "enhance"
REDRAW_FORMAT = 1  # builder.params["redraw"]: bump when what a trainer reads there changes
TEMPLATE_TASKS = ("deblur", "denoise", "dewatermark")
TEMPLATE_FOR = {"blur": "deblur", "noise": "denoise", "watermark": "dewatermark"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
LICENSES = {  # the datasets' own terms; a synthetic row's licence is its source image's, unknown here
    "gopro": "GoPro deblurring dataset terms (Nah et al.)",
    "reds": "REDS terms (NTIRE 2019)",
    "sidd": "SIDD terms",
    "clwd": "CLWD terms",
    "synthetic": None,
}


# -- templates -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskTemplates:
    task: str
    sentences: tuple[str, ...]
    source: str

    def pick(self, rid: str) -> str:
        """The template for ``rid``: its first 8 hex digits modulo the number of templates."""
        return self.sentences[int(rid[:8], 16) % len(self.sentences)]

    def digest(self) -> str:
        return hashlib.sha256(repr(self.sentences).encode()).hexdigest()[:16]


def _task_templates(task: str, lists: dict[str, tuple[str, ...]], source: str) -> TaskTemplates:
    """A task's file holds one list, ``{task}:``, of sentences without placeholders; runs of white space
    in a sentence become one space."""
    return TaskTemplates(task, tuple(" ".join(t.split()) for t in lists[task]), source)


def load_task_templates(task: str, path: str | Path | None = None) -> TaskTemplates:
    """The shipped ``templates/{task}.yaml`` (``path`` None) or a file of that form."""
    if task not in TEMPLATE_TASKS:
        raise ValueError(f"no templates for {task!r}; tasks: {', '.join(TEMPLATE_TASKS)}")
    if path is None:
        return _default_task_templates(task)
    return _task_templates(task, load_template_file(path, {task: ()}), str(Path(path)))


@functools.cache
def _default_task_templates(task: str) -> TaskTemplates:
    name = f"templates/{task}.yaml"
    return _task_templates(task, load_packaged_template_file(name, {task: ()}), name)


# -- config --------------------------------------------------------------------------------------
class EnhanceSampleSpec(StrictModel):
    """Write the bundled synthetic sample, in ``dataset``'s own layout, into ``root`` when it is missing."""

    pairs: int = Field(8, ge=1, description="pairs (synthetic: clean images) to write")
    seed: int = 0
    width: int = Field(160, ge=32)
    height: int = Field(120, ge=32)
    orphans: int = Field(0, ge=0, description="degraded files without a clean partner, named to sort first "
                                              "(a positional pairing would shift every pair)")
    layout: Literal["training", "release"] = "training"


class EnhanceConfig(BuilderConfig):
    """The ``enhance:`` section: one low-level dataset (or synthetic degradations) as enhancement rows."""

    dataset: Literal["gopro", "reds", "sidd", "clwd", "synthetic"]
    root: Path = Field(description="the dataset folder (synthetic: a folder of clean images)")
    split: str = "train"
    layout: Literal["auto", "training", "release"] = "auto"
    limit: int | None = Field(None, ge=1, description="read at most this many records (pairs, or synthetic "
                                                      "image x degradation)")
    samples: EnhanceSampleSpec | None = Field(None, description="make a synthetic sample at root if it is missing")
    degradations: tuple[Literal["blur", "noise", "watermark"], ...] = Field(
        DEGRADATIONS, description="synthetic: one row per clean image and degradation")
    templates: dict[Literal["deblur", "denoise", "dewatermark"], Path] = Field(
        default_factory=dict, description="task -> a template file of your own (default: the shipped ones)")
    seed: int = 0

    @field_validator("degradations")
    @classmethod
    def _distinct(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("give at least one degradation")
        if len(set(value)) != len(value):
            raise ValueError(f"degradations {list(value)}: one is listed twice")
        return value

    def preflight(self) -> list[str]:
        if not self.enabled:
            return []
        lines = [line for task, path in self.templates.items()
                 for line in template_file_problems(f"enhance.templates.{task}", path,
                                                    functools.partial(load_task_templates, task))]
        if not Path(self.root).exists():
            if self.samples is None:
                lines.append(f"enhance: {self.root}: not found; get {self.dataset} (docs/multitask.md, Enhancement) "
                             "or set enhance.root (enhance.samples writes a synthetic sample there)")
            return lines
        try:
            listing(self)
        except (FileNotFoundError, ValueError) as exc:
            lines.append(f"enhance: {exc}")
        return lines


# -- listing ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Record:
    key: str  # the pair key (paired) or "<relative path>#<degradation>" (synthetic)
    degraded: Path | None  # paired: the degraded file; None for a clean file without partner
    clean: Path | None  # paired: the clean file; synthetic: the clean image
    expected: Path | None = None  # an orphan's missing partner, as the naming rule places it
    degradation: str = ""
    duplicate: Path | None = None  # a second file with the same key ...
    duplicate_of: Path | None = None  # ... as this one


@dataclass(frozen=True)
class Listing:
    layout: str
    rule: str  # the naming rule, for messages
    records: list[Record]

    def digest(self) -> str:
        return stable_hash([(r.key, str(r.degraded), str(r.clean)) for r in self.records], length=16)


def _images(folder: Path) -> list[Path]:
    """The image files under ``folder``, sorted by relative path; hidden names (and what is under them) left
    out, symlinked folders not entered (a symlinked file is listed: :meth:`EnhanceBuilder._inside` checks
    where it leads), folders that cannot be listed skipped. Walked with a stack, not recursion (``rglob``,
    ``os.walk``), so that a crafted tree a few thousand folders deep cannot exhaust Python's stack."""
    found: list[tuple[str, Path]] = []
    stack: list[tuple[str, str]] = [(str(folder), "")]
    while stack:
        current, prefix = stack.pop()
        try:
            with os.scandir(current) as entries:
                listed = list(entries)
        except OSError:  # unreadable, gone, a name too long for the system
            continue
        for entry in listed:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, f"{prefix}{entry.name}/"))
                elif entry.is_file() and Path(entry.name).suffix.lower() in IMAGE_SUFFIXES:
                    found.append((prefix + entry.name, folder / (prefix + entry.name)))
            except OSError:  # a symlink loop, a name too long to stat
                continue
    return [path for _, path in sorted(found, key=lambda item: item[0])]


def _keyed(files: list[tuple[str, Path]]) -> tuple[dict[str, Path], dict[str, Path]]:
    """key -> file, and key -> a second file with that key."""
    first: dict[str, Path] = {}
    twice: dict[str, Path] = {}
    for key, path in files:
        if key in first:
            twice.setdefault(key, path)
        else:
            first[key] = path
    return first, twice


def _stem_key(folder: Path, path: Path) -> str:
    return path.relative_to(folder).with_suffix("").as_posix()


def _same_name(degraded_dir: Path, clean_dir: Path, layout: str, rule: str) -> tuple:
    """Folders whose partners have the same relative name (extension aside)."""
    deg = [(_stem_key(degraded_dir, p), p) for p in _images(degraded_dir)]
    cln = [(_stem_key(clean_dir, p), p) for p in _images(clean_dir)]

    def expect_clean(key: str, path: Path) -> Path:
        return clean_dir / path.relative_to(degraded_dir)

    def expect_degraded(key: str, path: Path) -> Path:
        return degraded_dir / path.relative_to(clean_dir)

    return layout, rule, deg, cln, expect_clean, expect_degraded


def _seq_frames(root: Path, deg_name: str, clean_name: str, layout: str, rule: str) -> tuple:
    """GoPro release: ``<seq>/blur/<frame>`` + ``<seq>/sharp/<frame>``, keyed ``seq/frame``."""
    deg, cln = [], []
    for seq in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in _images(seq / deg_name) if (seq / deg_name).is_dir() else []:
            deg.append((f"{seq.name}/{_stem_key(seq / deg_name, path)}", path))
        for path in _images(seq / clean_name) if (seq / clean_name).is_dir() else []:
            cln.append((f"{seq.name}/{_stem_key(seq / clean_name, path)}", path))

    def swap(path: Path, old: str, new: str) -> Path:
        rel = path.relative_to(root)
        return root / rel.parts[0] / new / Path(*rel.parts[2:])

    return (layout, rule, deg, cln, lambda k, p: swap(p, deg_name, clean_name),
            lambda k, p: swap(p, clean_name, deg_name))


SIDD_NOISY, SIDD_GT = "_NOISY_SRGB_", "_GT_SRGB_"


def _sidd_release(data: Path) -> tuple:
    deg, cln = [], []
    for path in _images(data):
        rel = _stem_key(data, path)
        if SIDD_NOISY in path.name:
            deg.append((rel.replace(SIDD_NOISY, "_SRGB_"), path))
        elif SIDD_GT in path.name:
            cln.append((rel.replace(SIDD_GT, "_SRGB_"), path))
    rule = "Data/<scene>/<id>_NOISY_SRGB_<n> pairs with Data/<scene>/<id>_GT_SRGB_<n>"
    return ("release", rule, deg, cln, lambda k, p: p.with_name(p.name.replace(SIDD_NOISY, SIDD_GT)),
            lambda k, p: p.with_name(p.name.replace(SIDD_GT, SIDD_NOISY)))


def _layout_candidates(config: EnhanceConfig) -> list[tuple[str, Path, Any]]:
    """(layout, the folder whose presence marks it, a function making the listing parts) per layout."""
    root, split = Path(config.root), config.split
    base = root / split
    ds = config.dataset
    if ds == "gopro":
        return [
            ("training", base / "input", lambda: _same_name(base / "input", base / "target", "training",
                                                            f"{split}/input/<name> pairs with {split}/target/<name>")),
            ("release", base, lambda: _seq_frames(base, "blur", "sharp", "release",
                                                  f"{split}/<seq>/blur/<frame> pairs with {split}/<seq>/sharp/<frame>")),
        ]
    if ds == "reds":
        return [
            ("training", base / "blur", lambda: _same_name(base / "blur", base / "sharp", "training",
                                                           f"{split}/blur/<seq>/<frame> pairs with {split}/sharp/<seq>/<frame>")),
            ("release", base / f"{split}_blur", lambda: _same_name(
                base / f"{split}_blur", base / f"{split}_sharp", "release",
                f"{split}/{split}_blur/<seq>/<frame> pairs with {split}/{split}_sharp/<seq>/<frame>")),
        ]
    if ds == "sidd":
        return [
            ("training", base / "input", lambda: _same_name(base / "input", base / "gt", "training",
                                                            f"{split}/input/<name> pairs with {split}/gt/<name>")),
            ("release", root / "Data", lambda: _sidd_release(root / "Data")),
        ]
    clwd = ("training", base / "Watermarked_image", lambda: _same_name(
        base / "Watermarked_image", base / "Watermark_free_image", "training",
        f"{split}/Watermarked_image/<name> pairs with {split}/Watermark_free_image/<name>"))
    return [clwd, ("release", clwd[1], clwd[2])]


def listing(config: EnhanceConfig) -> Listing:
    """Every record of the configured source in key order (``limit`` applied); raises ``FileNotFoundError``
    naming the layouts looked for when none is there."""
    root = Path(config.root)
    if config.dataset == "synthetic":
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no folder of clean images")
        records = [Record(f"{path.relative_to(root).as_posix()}#{deg}", None, path, degradation=deg)
                   for path in _images(root) for deg in config.degradations]
        return Listing("folder", "every image under root", records[: config.limit] if config.limit else records)
    candidates = _layout_candidates(config)
    chosen = None
    for layout, marker, make in candidates:
        if config.layout in ("auto", layout) and marker.is_dir():
            if config.dataset == "gopro" and layout == "release" and not any(
                    (p / "blur").is_dir() for p in marker.iterdir() if p.is_dir()):
                continue
            chosen = make()
            break
    if chosen is None:
        wanted = [f"{layout}: {marker}" for layout, marker, _ in candidates if config.layout in ("auto", layout)]
        raise FileNotFoundError(f"{root}: no {config.dataset} layout found (looked for {'; '.join(wanted)}; see "
                                "docs/multitask.md, Enhancement)")
    layout, rule, deg, cln, expect_clean, expect_degraded = chosen
    deg_map, deg_twice = _keyed(deg)
    cln_map, cln_twice = _keyed(cln)
    degradation = DATASET_DEGRADATION[config.dataset]
    records = []
    for key in sorted(set(deg_map) | set(cln_map)):
        d, c = deg_map.get(key), cln_map.get(key)
        twice = deg_twice.get(key) or cln_twice.get(key)
        records.append(Record(
            key, d, c,
            expected=expect_clean(key, d) if c is None else (expect_degraded(key, c) if d is None else None),
            degradation=degradation, duplicate=twice,
            duplicate_of=(d if key in deg_twice else c) if twice is not None else None,
        ))
    return Listing(layout, rule, records[: config.limit] if config.limit else records)


# -- reading ---------------------------------------------------------------------------------------
def read_stored(path: Path, record_id: str, orientation: Orientation) -> SourceImage:
    """An image's bytes, kept as stored unless a viewer would show other pixels than ``pixels`` (not RGB, an
    EXIF tag not applied here, or applied here): then PNG. ``SourceRecordError`` on trouble."""
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise SourceRecordError("missing_image", record_id, str(path), "image file not found") from None
    try:
        decoded = decode(data, orientation)
    except ImageDecodeError as exc:
        raise SourceRecordError("unreadable_image", record_id, str(path), str(exc)) from None
    return SourceImage.from_decoded(data, decoded, fmt="png")


def _writable(failure: Failure) -> Failure:
    """``failure`` as the stats, the manifest and the report can write it: a file name that is not UTF-8 comes
    as lone surrogates, which no UTF-8 writer takes (:func:`text_field`)."""
    return dataclasses.replace(failure, record_id=text_field(failure.record_id) or "?",
                               file=text_field(failure.file), message=text_field(failure.message) or "")


# -- the builder -----------------------------------------------------------------------------------
@register_builder(NAME, EnhanceConfig)
class EnhanceBuilder(CandidateBuilder):
    name = NAME

    def __init__(self, config: EnhanceConfig, context: BuildContext):
        self.config = config
        self.unit_size = context.unit_size

    @locked_cached_property
    def listing(self) -> Listing:
        return listing(self.config)

    @functools.cached_property
    def templates(self) -> dict[str, TaskTemplates]:
        return {task: load_task_templates(task, self.config.templates.get(task)) for task in TEMPLATE_TASKS}

    def prepare(self) -> None:
        spec = self.config.samples
        if spec is not None:
            from ieiw.samples.enhance import ensure_enhance_sample

            ensure_enhance_sample(Path(self.config.root), self.config.dataset, pairs=spec.pairs, seed=spec.seed,
                                  width=spec.width, height=spec.height, orphans=spec.orphans, layout=spec.layout,
                                  split=self.config.split)

    @property
    def synthetic(self) -> bool:
        return self.config.dataset == "synthetic"

    def params(self, degradation: str) -> dict[str, Any]:
        """The id-shaping parameters of a row with ``degradation``."""
        c = self.config
        out: dict[str, Any] = {"dataset": c.dataset, "degradation": degradation,
                               "instruction_task": TEMPLATE_FOR[degradation]}
        if self.synthetic:
            out.update(seed=c.seed, source_format="png")
        return out

    def fingerprint(self) -> dict[str, Any]:
        c = self.config
        listed = self.listing
        out = {
            "dataset": c.dataset,
            "root": str(Path(c.root).resolve()),
            "split": c.split,
            "layout": listed.layout,
            "records": listed.digest(),
            "templates": {task: t.digest() for task, t in self.templates.items()},
            "redraw": REDRAW_FORMAT,
        }
        if self.synthetic:  # the degradations are re-drawn by these libraries
            out.update(seed=c.seed, degradations=list(c.degradations), pillow=PIL.__version__, opencv=cv2.__version__)
        return out

    def backends(self) -> dict[str, str]:
        return {"pairs": "synthetic-degradation" if self.synthetic else f"paired-folders ({self.listing.layout})"}

    def plan(self) -> list[WorkUnit]:
        total = len(self.listing.records)
        c = self.config
        return [
            WorkUnit(key=f"{NAME}-{c.dataset}-{c.split}-{index:05d}",
                     payload={"start": start, "stop": min(start + self.unit_size, total)})
            for index, start in enumerate(range(0, total, self.unit_size))
        ]

    def build_unit(self, unit: WorkUnit) -> UnitResult:
        records = self.listing.records[unit.payload["start"]: unit.payload["stop"]]
        result = UnitResult(records=len(records))
        for record in records:
            try:
                row = self._synthetic_row(record) if self.synthetic else self._paired_row(record)
            except SourceRecordError as err:
                result.failures.append(_writable(err.failure))
                continue
            result.rows.append(row)
            result.counters[record.degradation] += 1
        return result

    # -- paired datasets --------------------------------------------------------------------------
    def _paired_row(self, record: Record) -> dict[str, Any]:
        rule = self.listing.rule
        if record.duplicate is not None:
            raise SourceRecordError("duplicate_name", record.key, str(record.duplicate),
                                    f"has the same pair key {record.key!r} as {record.duplicate_of} (extensions "
                                    "aside); rename or remove one")
        if record.degraded is None or record.clean is None:
            present = record.degraded or record.clean
            side = "clean" if record.clean is None else "degraded"
            raise SourceRecordError("no_partner", record.key, str(present),
                                    f"no {side} partner: expected {record.expected} ({rule})")
        degraded = read_stored(self._inside(record.degraded, record.key), record.key, Orientation.IGNORE)
        clean = read_stored(self._inside(record.clean, record.key), record.key, Orientation.IGNORE)
        if degraded.pixels.shape != clean.pixels.shape:
            (dh, dw), (ch, cw) = degraded.pixels.shape[:2], clean.pixels.shape[:2]
            raise SourceRecordError("size_mismatch", record.key, str(record.degraded),
                                    f"{dw}x{dh}, but its partner {record.clean} is {cw}x{ch}")
        extra = {"layout": self.listing.layout, "degraded_file": text_field(self._relative(record.degraded)),
                 "clean_file": text_field(self._relative(record.clean)), "source_image": degraded.provenance(),
                 "target_image": clean.provenance()}
        return self._row(record, record.key, degraded.data, clean.data, clean.pixels, None, extra, embedded=False)

    def _inside(self, path: Path, key: str) -> Path:
        """``path`` (from listing ``root``) when it stays under ``root``; ``path_outside_root`` for a file or folder
        symlinked out of it, the only way a listed name can lead out (:mod:`ieiw.schemas.paths`)."""
        root = Path(self.config.root)
        try:
            return path_under(root, path.relative_to(root).as_posix())
        except PathOutsideRoot as exc:
            raise SourceRecordError(PATH_OUTSIDE_ROOT, key, str(path), str(exc)) from None

    def _relative(self, path: Path) -> str:
        """``path`` relative to ``root``, as the file system spells it (bytes that are not UTF-8 as lone
        surrogates); a row holds it through :func:`text_field`."""
        try:
            return path.relative_to(self.config.root).as_posix()
        except ValueError:
            return str(path)

    # -- synthetic ---------------------------------------------------------------------------------
    def _synthetic_row(self, record: Record) -> dict[str, Any]:
        assert record.clean is not None
        relative = self._relative(record.clean)
        clean = read_stored(self._inside(record.clean, record.key), record.key, Orientation.APPLY)
        seed = image_seed(self.config.seed, relative, record.degradation)
        made = degrade(clean.pixels, record.degradation, seed)
        extra = {"image_seed": seed, **made.details, "clean_file": text_field(relative),
                 "target_image": clean.provenance()}
        return self._row(record, relative, encode(made.pixels, "png"), clean.data, clean.pixels, made.mask, extra,
                         embedded=True)

    def _row(self, record: Record, image_id: str, source: bytes, target: bytes, pixels: np.ndarray,
             mask: np.ndarray | None, extra: dict[str, Any], embedded: bool) -> dict[str, Any]:
        c = self.config
        params = self.params(record.degradation)
        rid = row_id(c.dataset, record.key, NAME, params, TASK)  # the name as stored: distinct names, distinct ids
        task = TEMPLATE_FOR[record.degradation]
        height, width = pixels.shape[:2]
        # Keys are file names: bytes that are not UTF-8 come as lone surrogates, which Arrow cannot write.
        key, image_id = text_field(record.key) or "", text_field(image_id)
        stem = key.replace("/", "_").replace("#", "_")
        return {
            "id": rid,
            "task": TASK,
            "instruction": self.templates[task].pick(rid),
            "source_image": image_cell(source, f"{stem}_degraded.{extension(source)}"),
            "target_image": image_cell(target, f"{stem}_clean.{extension(target)}"),
            "mask": image_cell(encode(mask * 255, "png"), f"{stem}_mask.png") if mask is not None else None,
            "width": width,
            "height": height,
            "origin": origin_cell(dataset=c.dataset, split=c.split if not self.synthetic else None,
                                  record_id=key, image_id=image_id, license=LICENSES[c.dataset]),
            "exemplar": None,
            "scores": None,
            "builder": builder_cell(name=NAME, backend="synthetic-degradation" if self.synthetic else "paired-folders",
                                    embedded=embedded, seed=c.seed if self.synthetic else None,
                                    params={**params, **extra,
                                            "redraw": {"kind": "prompts", "prompts": list(self.templates[task].sentences)}}),
            "drop_reason": None,
        }
