"""Keypoints phrased as edits: COCO, CrowdPose, MPII and AIC people with 1-5 joints marked by coloured discs
(docs/formats.md "Keypoint datasets", "Keypoint triples"; docs/multitask.md "Keypoints").

One row per person: the source is the dataset's image as stored, the target the same pixels with a filled,
opaque disc on each chosen joint, the instruction one template piece per disc ("Put red circles on the left
knee of the people, ..."), the mask column the union of the discs. Task ``keypoints``.

**Layouts** (``root`` is the dataset's own folder; ``split`` defaults to ``train2017`` for COCO, ``train``
otherwise):

| dataset | annotations | images |
|---|---|---|
| ``coco`` | ``annotations/person_keypoints_{split}.json`` | ``images/{split}/%012d.jpg`` (image id) |
| ``crowdpose`` | ``json/crowdpose_{split}.json`` | ``images/{image_id}.jpg`` |
| ``aic`` | ``annotations/aic_{split}.json`` (COCO-style) | ``ai_challenger_keypoint_train_20170902/keypoint_train_images_20170902/{file_name}`` |
| ``mpii`` | ``annot/{split}.json``: list of ``{image, center, scale, joints, joints_vis}`` | ``images/{image}`` |

The image paths are the ones the official loader builds (COCO and CrowdPose from the image id, AIC from
``file_name``). COCO-style ``keypoints`` are ``3 * J`` numbers ``x, y, v`` with ``v`` 0 (unlabelled), 1
(labelled, occluded) or 2 (visible); MPII's ``joints`` are 1-based ``[x, y]`` (1 is subtracted, as the
official code does) with ``joints_vis`` 0/1 (1 is read as v=2; a joint at a negative position after the shift
is unlabelled whatever ``joints_vis`` says).

**Which people make rows** (everything left out is counted under ``skipped`` with its reason):
``crowd`` (``iscrowd`` set), ``zero_area`` (COCO/AIC ``area`` <= 0; CrowdPose, whose records carry no area,
uses the box's ``w*h``; MPII ``scale`` <= 0), ``not_person`` (a category without keypoints),
``no_labelled_joints`` (every v is 0), ``no_joint_in_image`` (no labelled joint lies inside the image).
A person whose image name (MPII's ``image``, a ``file_name``) is no path under the image folder (``..``,
absolute, symlinked out) fails ``path_outside_root`` and nothing is read (:mod:`ieiw.schemas.paths`).
Other bad records fail alone, naming the annotation file and the record: ``bad_record`` (an entry that is no
object), ``bad_keypoints`` (not ``3 * J`` numbers / ``J`` joints, a coordinate that is no finite number, a
``v`` not 0, 1 or 2), ``bad_box`` (a ``bbox`` that is not 4 finite numbers, an MPII ``center`` that is not 2 or
a ``scale`` that is no finite number), ``no_image_info``, ``missing_image``, ``unreadable_image``,
``image_size_mismatch``.

**Drawing**: the radius is ``r = round(10 * short_side / 256)`` px (at least 1): InstructDiffusion's 10 px on
its 256 px crops, scaled to the stored image, since the trainer's crop of a person spans about its short side.
As in the official code the disc's centre is the joint rounded half up to a pixel (``int(x + 0.5)``) and the
disc is the pixels with ``dx^2 + dy^2 <= r^2 + 1``; it is opaque (transparency 0). Joints with v=1 and v=2
are drawn alike, as the official code draws them. Joints with v=0 are never drawn.

**Choice** (seeded per person from ``seed``, the dataset and the record id, so a row never changes between
runs): the number of joints is drawn uniformly from ``joints_per_row`` (``[1, 5]``, as the official
``randint(1, 5)``), each joint gets its own colour out of nine (red, green, blue, yellow, cyan, magenta with
channels 0/255, gray 128, white, black). ``joint_choice: official`` (the default, the official
``generate_target``): the joints are drawn from all of the dataset's joints; an unlabelled one (v=0) is named
in the instruction and gets no disc (the model learns not to invent joints), a labelled one whose disc lies
wholly outside the image is left out (not named). ``labelled``: only labelled joints whose centre is inside
the image are candidates, so every named joint has a disc. ``overlap: allow`` (the default) draws later discs
over earlier ones, as the official code does; ``avoid`` passes over a joint whose disc would touch one
already placed, so every disc is whole (biased against close joints: the face).

**Joint names** in instructions: ``joint_names: words`` (default) writes them as words: COCO's as the
official code ("left eye"), the others' snake_case with spaces ("left shoulder", "upper neck") and
``top_head`` / ``head_top`` as "top of the head"; ``official`` writes them as the official code does (COCO
words, the others' snake_case as is).

**Instruction**: one template piece per disc (``templates/keypoints.yaml``, ``{color}`` and ``{joint}``; a
piece ends in ``", "`` as the official ones do), each picked by a hash of the row id and the joint; pieces
after the first start lower case, and the last one's ``", "`` becomes ``"."``.

``builder.params`` records, beyond the parameters in the row id, what was drawn: per disc the joint's index,
name, ``x``/``y`` as annotated (0-based), ``v``, the colour and the integer centre; plus the radius and the
person's box (COCO-style ``bbox``, or MPII's 0-based ``center`` and ``scale``). Its ``redraw`` entry holds what
the trainer needs to draw the person's sample anew each epoch, as the official loader does (every joint as
annotated ``[x, y, v]``, the joint names, the box, the template pieces; :mod:`ieiw.training.pose_crop`); the
stored target is one such draw on the whole photo, for every other reader.
"""

from __future__ import annotations

import errno
import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from ieiw.builders.captions import KEYPOINTS_TASK, add_caption_rows, captions_fingerprint, captions_preflight
from ieiw.builders.template_files import load_packaged_template_file, load_template_file, template_file_problems
from ieiw.imageio import ImageDecodeError, Orientation, SizeMismatch, decode, encode, extension
from ieiw.schemas.config import BuilderConfig, StrictModel
from ieiw.schemas.lazy import locked_cached_property
from ieiw.schemas.paths import PATH_OUTSIDE_ROOT
from ieiw.schemas.registry import register_builder
from ieiw.schemas.rows import builder_cell, image_cell, origin_cell, row_id, stable_hash, text_field
from ieiw.schemas.source_image import SourceImage
from ieiw.schemas.units import BuildContext, CandidateBuilder, SourceRecordError, UnitResult, WorkUnit
from ieiw.sources.keypoints import JOINTS, LICENSES, WORDS, Person, PoseSource, default_split

NAME = "keypoints"
TASK = "keypoints"

# The nine marker colours of the official pose code, in its order.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "cyan": (0, 255, 255),
    "magenta": (255, 0, 255),
    "gray": (128, 128, 128),
    "white": (255, 255, 255),
    "black": (0, 0, 0),
}
RADIUS_AT_256 = 10
REFERENCE_SIDE = 256

DEFAULT_TEMPLATES = "templates/keypoints.yaml"
REDRAW_FORMAT = 1  # builder.params["redraw"]: bump when what a trainer reads there changes
TEMPLATE_KINDS = {NAME: {"color", "joint"}}  # one list of pieces; each piece uses {color} and {joint}


def joint_words(dataset: str, mode: str = "words") -> tuple[str, ...]:
    """The joint names a prompt uses (module docstring, "Joint names")."""
    names = JOINTS[dataset]
    if mode == "official" or dataset == "coco":
        return names
    return tuple(WORDS.get(name, name.replace("_", " ")) for name in names)


def disc_radius(width: int, height: int) -> int:
    """``round(10 * short_side / 256)``, at least 1."""
    return max(1, math.floor(RADIUS_AT_256 * min(width, height) / REFERENCE_SIDE + 0.5))


def disc_centre(x: float, y: float) -> tuple[int, int]:
    """The official rounding: ``int(x + 0.5)`` (coordinates >= -0.5 round half up)."""
    return math.floor(x + 0.5), math.floor(y + 0.5)


def disc_mask(width: int, height: int, cx: int, cy: int, radius: int) -> np.ndarray:
    """0/1 ``uint8`` (height x width): pixels with ``dx^2 + dy^2 <= r^2 + 1`` around ``(cx, cy)``."""
    ys, xs = np.ogrid[:height, :width]
    return (((xs - cx) ** 2 + (ys - cy) ** 2) <= radius * radius + 1).astype(np.uint8)


# -- templates -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PoseTemplates:
    pieces: tuple[str, ...]
    source: str

    def digest(self) -> str:
        return stable_hash(list(self.pieces), length=16)

    def piece(self, rid: str, joint_index: int) -> str:
        return self.pieces[int(stable_hash("piece", rid, joint_index, length=16), 16) % len(self.pieces)]

    def instruction(self, rid: str, marks: list[tuple[int, str, str]]) -> str:
        """``marks`` = (joint index, joint name, colour name) in drawing order."""
        return join_pieces([self.piece(rid, index).format(color=colour, joint=joint)
                            for index, joint, colour in marks])


def join_pieces(filled: list[str]) -> str:
    """Filled template pieces as one instruction: each piece's trailing ", " dropped, pieces after the first
    lower-cased at the start (unless an acronym), joined by ", ", ended by "."."""
    parts = []
    for position, piece in enumerate(filled):
        text = piece.strip().rstrip(",").rstrip()
        if position and text[:1].isupper() and not text[1:2].isupper():
            text = text[0].lower() + text[1:]
        parts.append(text)
    return ", ".join(parts) + "."


def load_pose_templates(path: str | Path | None = None) -> PoseTemplates:
    """The shipped pieces (``path`` None) or a file of the same form; :class:`TemplateError` names the file."""
    if path is None:
        return _default_templates()
    return PoseTemplates(load_template_file(path, TEMPLATE_KINDS)[NAME], str(Path(path)))


@functools.lru_cache(maxsize=1)
def _default_templates() -> PoseTemplates:
    return PoseTemplates(load_packaged_template_file(DEFAULT_TEMPLATES, TEMPLATE_KINDS)[NAME], DEFAULT_TEMPLATES)


# -- config --------------------------------------------------------------------------------------
class PoseSampleSpec(StrictModel):
    """Write the bundled synthetic sample, in ``dataset``'s own layout, into ``root`` when it is missing."""

    images: int = Field(12, ge=1)
    seed: int = 0
    width: int = Field(320, ge=96)
    height: int = Field(240, ge=96)


class KeypointsConfig(BuilderConfig):
    """The ``keypoints:`` section: one pose dataset's people as keypoint-marking rows."""

    dataset: Literal["coco", "crowdpose", "mpii", "aic"] = "coco"
    root: Path = Field(description="the dataset folder (coco/, crowdpose/, mpii/ or aic/; see docs/multitask.md)")
    split: str | None = Field(None, description="annotation split; default train2017 (COCO) or train")
    annotations: Path | None = Field(None, description="the annotation file, if not where the layout puts it")
    images: Path | None = Field(None, description="the image folder, if not where the layout puts it")
    limit: int | None = Field(None, ge=1, description="read at most this many person records")
    samples: PoseSampleSpec | None = Field(None, description="make a synthetic sample at root if it is missing")
    joints_per_row: tuple[int, int] = Field((1, 5), description="[min, max] joints per row (1-5); one number "
                                                                "fixes it")
    joint_choice: Literal["official", "labelled"] = Field(
        "official", description="official: the joints are drawn from all of the dataset's joints and an unlabelled "
        "one is named without a disc (the model learns not to invent joints); labelled: only labelled joints")
    overlap: Literal["avoid", "allow"] = Field(
        "allow", description="allow: later discs over earlier ones, as the official code draws them; avoid: pass "
        "over a joint whose disc would touch one already drawn (biased against close joints: the face)")
    joint_names: Literal["words", "official"] = "words"
    templates: Path | None = Field(None, description="a keypoints.yaml of your own; default: the shipped one")
    seed: int = 0
    captions: Path | None = Field(None, description="a COCO captions file (annotations/captions_{split}.json): "
                                  "also write adaptation rows, each rendered target with its image's caption")

    @field_validator("joints_per_row", mode="before")
    @classmethod
    def _one_number(cls, value: Any) -> Any:
        return (value, value) if isinstance(value, int) else value

    @field_validator("joints_per_row")
    @classmethod
    def _range(cls, value: tuple[int, int]) -> tuple[int, int]:
        low, high = value
        if not 1 <= low <= high <= 5:
            raise ValueError(f"joints_per_row {list(value)}: need 1 <= min <= max <= 5")
        return value

    @property
    def split_name(self) -> str:
        return self.split or default_split(self.dataset)

    def annotation_path(self) -> Path:
        if self.annotations is not None:
            return Path(self.annotations)
        root, split = Path(self.root), self.split_name
        return {
            "coco": root / "annotations" / f"person_keypoints_{split}.json",
            "crowdpose": root / "json" / f"crowdpose_{split}.json",
            "aic": root / "annotations" / f"aic_{split}.json",
            "mpii": root / "annot" / f"{split}.json",
        }[self.dataset]

    def image_folder(self) -> Path:
        if self.images is not None:
            return Path(self.images)
        root = Path(self.root)
        return {
            "coco": root / "images" / self.split_name,
            "crowdpose": root / "images",
            "aic": root / "ai_challenger_keypoint_train_20170902" / "keypoint_train_images_20170902",
            "mpii": root / "images",
        }[self.dataset]

    def preflight(self) -> list[str]:
        if not self.enabled:
            return []
        lines = template_file_problems("keypoints.templates", self.templates, load_pose_templates)
        if not Path(self.root).exists() and self.samples is not None:
            return lines  # the sample is written by prepare()
        ann, images = self.annotation_path(), self.image_folder()
        if not ann.is_file():
            lines.append(f"keypoints: {ann}: annotation file not found; is {self.root} a {self.dataset} folder "
                         f"(docs/multitask.md, Keypoints)? set keypoints.root, .split or .annotations")
        if not images.is_dir():
            lines.append(f"keypoints: {images}: image folder not found; set keypoints.images")
        return lines + captions_preflight("keypoints", self.captions)


# -- reading -------------------------------------------------------------------------------------
class PersonSkipped(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Joint:
    index: int
    x: float  # 0-based, as annotated (MPII: after subtracting 1)
    y: float
    v: int  # 0 unlabelled, 1 occluded, 2 visible


def finite_number(value: Any, what: str) -> float:
    """``value`` as a float when the file holds a finite number there (not text, not a bool, not NaN or
    1e999: a crafted one would reach ``floor`` or the row's params); ``ValueError`` naming ``what`` otherwise."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an integer beyond any float
            number = math.inf
        if math.isfinite(number):
            return number
    raise ValueError(f"{what}: {value!r:.40} is not a finite number")


def person_joints(dataset: str, person: Person, ann_file: str) -> list[Joint]:
    """The person's joints (all of them, any v), or :class:`SourceRecordError` ``bad_keypoints``."""
    count = len(JOINTS[dataset])
    raw = person.raw
    try:
        if dataset == "mpii":
            coords, vis = raw.get("joints"), raw.get("joints_vis")
            if not isinstance(coords, list) or not isinstance(vis, list) or len(coords) != count or len(vis) != count:
                raise ValueError(f"expected {count} joints and {count} joints_vis")
            out = []
            for index, (point, flag) in enumerate(zip(coords, vis, strict=True)):
                if not isinstance(point, list) or len(point) != 2:
                    raise ValueError(f"joint {index}: {point!r:.40} is not [x, y]")
                x = finite_number(point[0], f"joint {index} x") - 1.0
                y = finite_number(point[1], f"joint {index} y") - 1.0
                labelled = finite_number(flag, f"joints_vis {index}") > 0 and x >= 0 and y >= 0
                out.append(Joint(index, x, y, 2 if labelled else 0))
            return out
        values = raw.get("keypoints")
        if not isinstance(values, list) or len(values) != 3 * count:
            found = len(values) if isinstance(values, list) else type(values).__name__
            raise ValueError(f"expected {3 * count} keypoint numbers (x, y, v for {count} joints), found {found}")
        out = []
        for index in range(count):
            x, y, v = (finite_number(values[3 * index + k], f"joint {index} {'xyv'[k]}") for k in range(3))
            if v not in (0, 1, 2):
                raise ValueError(f"joint {index}: visibility {v} is not 0, 1 or 2")
            out.append(Joint(index, x, y, int(v)))
        return out
    except ValueError as exc:
        raise SourceRecordError("bad_keypoints", person.record_id, ann_file, text_field(str(exc)) or "") from None


def person_box(dataset: str, person: Person, ann_file: str) -> dict[str, Any]:
    """The person's box for the row's params, as annotated: COCO-style ``bbox`` (None when the record has
    none), or MPII's 0-based ``center`` and ``scale``; :class:`SourceRecordError` ``bad_box`` when it is there
    but not finite numbers (NaN or a string there would reach a trainer's crop)."""
    raw = person.raw
    try:
        if dataset == "mpii":
            center, scale = raw.get("center"), raw.get("scale")
            if not isinstance(center, list) or len(center) != 2:
                raise ValueError(f"center {center!r:.40} is not [x, y]")
            finite_number(scale, "scale")
            return {"center": [finite_number(v, "center") - 1.0 for v in center], "scale": scale}
        box = raw.get("bbox")
        if box is not None:
            if not isinstance(box, list) or len(box) != 4:
                raise ValueError(f"bbox {box!r:.40} is not [x, y, width, height]")
            for value in box:
                finite_number(value, "bbox")
        return {"bbox": box}
    except ValueError as exc:
        raise SourceRecordError("bad_box", person.record_id, ann_file, text_field(str(exc)) or "") from None


def check_person(dataset: str, person: Person, categories: set[Any]) -> None:
    """:class:`PersonSkipped` for a person the policy leaves out before its joints are read."""
    raw = person.raw
    if dataset == "mpii":
        try:
            scale = float(raw.get("scale", 0))
        except (TypeError, ValueError):
            scale = 0.0
        if not scale > 0:
            raise PersonSkipped("zero_area")
        return
    category = raw.get("category_id")
    try:
        if category not in categories:
            raise PersonSkipped("not_person")
    except TypeError:  # a list or an object as the category: no category at all
        raise PersonSkipped("not_person") from None
    if raw.get("iscrowd"):
        raise PersonSkipped("crowd")
    area = raw.get("area")
    if area is None:  # CrowdPose records carry no area: the official code sets it to 1; use the box's
        box = raw.get("bbox")
        try:
            area = float(box[2]) * float(box[3]) if isinstance(box, list) and len(box) == 4 else 0.0
        except (TypeError, ValueError):
            area = 0.0
    try:
        if not float(area) > 0:
            raise PersonSkipped("zero_area")
    except (TypeError, ValueError):
        raise PersonSkipped("zero_area") from None


def read_image(person: Person, ann_file: str) -> SourceImage:
    """The person's image in the annotation's coordinates; bytes kept as stored unless they would show other
    pixels (not RGB, an EXIF orientation tag), then re-encoded as PNG. ``SourceRecordError`` on trouble."""
    path = person.image_path
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise SourceRecordError("missing_image", person.record_id, str(path), "image file not found") from None
    except OSError as exc:
        if exc.errno not in (errno.ENAMETOOLONG, errno.ELOOP):  # a name no file can have: the record's trouble
            raise
        raise SourceRecordError("missing_image", person.record_id, str(path)[:300],
                                f"image file not found ({exc.strerror})") from None
    expect = (person.width, person.height) if person.width and person.height else None
    try:
        decoded = decode(data, Orientation.MATCH if expect else Orientation.IGNORE, expect)
    except SizeMismatch as exc:
        raise SourceRecordError("image_size_mismatch", person.record_id, str(path),
                                f"{exc} (from {ann_file})") from None
    except ImageDecodeError as exc:
        raise SourceRecordError("unreadable_image", person.record_id, str(path), str(exc)) from None
    return SourceImage.from_decoded(data, decoded, fmt="png")


def person_seed(seed: int, dataset: str, record_id: str) -> int:
    return int(stable_hash("keypoints", seed, dataset, record_id, length=16), 16)


def choose_official(joints: list[Joint], width: int, height: int, radius: int, joints_per_row: tuple[int, int],
                    seed: int) -> tuple[list[tuple[Joint, str]], int]:
    """The official ``generate_target``: ``randint(min, max)`` joints out of all of the dataset's joints, a
    colour each out of nine; a labelled joint whose disc lies wholly outside the image is left out (not named);
    an unlabelled one (v = 0) is named and not drawn. Returns the named joints with their colours (draw those
    with v > 0) and how many were left out."""
    rng = np.random.default_rng(seed)
    low, high = joints_per_row
    want = min(int(rng.integers(low, high + 1)), len(joints))
    chosen = [joints[i] for i in rng.choice(len(joints), size=want, replace=False)]
    colours = [str(n) for n in rng.choice(list(COLOURS), size=want, replace=False)]
    marks, outside = [], 0
    for joint, colour in zip(chosen, colours, strict=True):
        if joint.v > 0:
            cx, cy = disc_centre(joint.x, joint.y)
            if cx - radius >= width or cy - radius >= height or cx + radius + 1 < 0 or cy + radius + 1 < 0:
                outside += 1
                continue
        marks.append((joint, colour))
    return marks, outside


def choose_marks(joints: list[Joint], width: int, height: int, radius: int, joints_per_row: tuple[int, int],
                 overlap: str, seed: int) -> tuple[list[tuple[Joint, str]], int]:
    """``joint_choice: labelled``: the drawn joints with their colours, and how many labelled joints lay outside
    the image. Only labelled joints (v > 0) whose disc centre is inside the image are candidates."""
    labelled = [j for j in joints if j.v > 0]
    inside = []
    for joint in labelled:
        cx, cy = disc_centre(joint.x, joint.y)
        if 0 <= cx < width and 0 <= cy < height:
            inside.append(joint)
    outside = len(labelled) - len(inside)
    if not inside:
        return [], outside
    rng = np.random.default_rng(seed)
    low, high = joints_per_row
    want = int(rng.integers(low, high + 1))
    order = [inside[i] for i in rng.permutation(len(inside))]
    chosen: list[Joint] = []
    limit = (2 * radius + 2) ** 2  # discs of radius r (pixels within sqrt(r^2+1)) overlap or touch (8-connected)
    # when their centres are up to about 2r+1.5 apart: keep them more than 2r+2 apart
    for joint in order:
        if len(chosen) == want:
            break
        if overlap == "avoid":
            c = disc_centre(joint.x, joint.y)
            if any((c[0] - d[0]) ** 2 + (c[1] - d[1]) ** 2 <= limit
                   for d in (disc_centre(o.x, o.y) for o in chosen)):
                continue
        chosen.append(joint)
    names = [str(n) for n in rng.choice(list(COLOURS), size=len(chosen), replace=False)]
    return list(zip(chosen, names, strict=True)), outside


def draw_marks(pixels: np.ndarray, marks: list[tuple[Joint, str]], radius: int) -> tuple[np.ndarray, np.ndarray]:
    """(target, union mask): ``pixels`` with an opaque disc of each labelled mark's colour, later over earlier
    (an unlabelled joint the official choice names gets no disc)."""
    height, width = pixels.shape[:2]
    target = pixels.copy()
    union = np.zeros((height, width), np.uint8)
    for joint, colour in marks:
        if joint.v <= 0:
            continue
        cx, cy = disc_centre(joint.x, joint.y)
        disc = disc_mask(width, height, cx, cy, radius).astype(bool)
        target[disc] = COLOURS[colour]
        union |= disc
    return target, union


# -- the builder ---------------------------------------------------------------------------------
@register_builder(NAME, KeypointsConfig)
class KeypointsBuilder(CandidateBuilder):
    name = NAME

    def __init__(self, config: KeypointsConfig, context: BuildContext):
        self.config = config
        self.unit_size = context.unit_size

    @locked_cached_property
    def source(self) -> PoseSource:
        return PoseSource.load(self.config.dataset, self.config.annotation_path(), self.config.image_folder(),
                               self.config.limit)

    @functools.cached_property
    def templates(self) -> PoseTemplates:
        return load_pose_templates(self.config.templates)

    def prepare(self) -> None:
        spec = self.config.samples
        if spec is not None:
            from ieiw.samples.pose import ensure_pose_sample

            ensure_pose_sample(Path(self.config.root), self.config.dataset, spec.images, spec.seed, spec.width,
                               spec.height, split=self.config.split_name)

    def params(self) -> dict[str, Any]:
        c = self.config
        return {
            "dataset": c.dataset,
            "joints_per_row": list(c.joints_per_row),
            "radius_at_256": RADIUS_AT_256,
            "overlap": c.overlap,
            "joint_choice": c.joint_choice,
            "joint_names": c.joint_names,
            "seed": c.seed,
        }

    def fingerprint(self) -> dict[str, Any]:
        c = self.config
        return {
            **self.params(),
            "annotations": str(c.annotation_path().resolve()),
            "images": str(c.image_folder().resolve()),
            "split": c.split_name,
            "limit": c.limit,
            "templates": self.templates.digest(),
            "captions": captions_fingerprint(c.captions),
            "redraw": REDRAW_FORMAT,
        }

    def backends(self) -> dict[str, str]:
        return {"draw": "discs"}

    def plan(self) -> list[WorkUnit]:
        total = len(self.source.people)
        c = self.config
        return [
            WorkUnit(key=f"{NAME}-{c.dataset}-{c.split_name}-{index:05d}",
                     payload={"start": start, "stop": min(start + self.unit_size, total)})
            for index, start in enumerate(range(0, total, self.unit_size))
        ]

    def build_unit(self, unit: WorkUnit) -> UnitResult:
        source = self.source
        c = self.config
        people = source.people[unit.payload["start"]: unit.payload["stop"]]
        result = UnitResult(records=len(people))
        ann_file = str(source.ann_path)
        # an image read once per (file, stated size): a crafted entry that names another image's file with
        # another size fails its own people, not the people who state the right size
        images: dict[tuple[Path, int, int], SourceImage | SourceRecordError] = {}
        for person in people:
            try:
                if person.record_error is not None:
                    raise SourceRecordError("bad_record", person.record_id, ann_file, person.record_error)
                check_person(c.dataset, person, source.person_category)
                joints = person_joints(c.dataset, person, ann_file)
                if not any(j.v > 0 for j in joints):
                    raise PersonSkipped("no_labelled_joints")
                box = person_box(c.dataset, person, ann_file)
                if c.dataset != "mpii" and not person.has_image:
                    raise SourceRecordError("no_image_info", person.record_id, ann_file,
                                            f"image_id {person.image_id:.80} is not in the file's images list")
                if person.path_error is not None:
                    raise SourceRecordError(PATH_OUTSIDE_ROOT, person.record_id, ann_file, person.path_error)
                key = (person.image_path, person.width, person.height)
                if key not in images:
                    try:
                        images[key] = read_image(person, ann_file)
                    except SourceRecordError as err:
                        images[key] = err
                image = images[key]
                if isinstance(image, SourceRecordError):
                    raise SourceRecordError(image.failure.reason, person.record_id, image.failure.file,
                                            image.failure.message)
                row = self._row(person, image, joints, box, result)
            except PersonSkipped as skip:
                result.skipped[skip.reason] += 1
                continue
            except SourceRecordError as err:
                result.failures.append(err.failure)
                continue
            result.rows += add_caption_rows([row], c.captions, KEYPOINTS_TASK, result.counters)
            result.counters["discs"] += len(json.loads(row["builder"]["params"])["marks"])
        return result

    def redraw_material(self, joints: list[Joint], names: tuple[str, ...], box: dict[str, Any]) -> dict[str, Any]:
        """What a trainer needs to draw this person's sample anew (:mod:`ieiw.training.pose_crop`): every joint
        as annotated (``[x, y, v]``, 0-based), the joint names, the person's box, the template pieces."""
        return {"kind": "keypoints", "dataset": self.config.dataset, "joints": [[j.x, j.y, j.v] for j in joints],
                "names": list(names), "person": box, "pieces": list(self.templates.pieces),
                "joints_per_row": list(self.config.joints_per_row)}

    def _row(self, person: Person, image: SourceImage, joints: list[Joint], box: dict[str, Any],
             result: UnitResult) -> dict[str, Any]:
        c = self.config
        height, width = image.pixels.shape[:2]
        radius = disc_radius(width, height)
        seed = person_seed(c.seed, c.dataset, person.record_id)
        if c.joint_choice == "official":
            marks, outside = choose_official(joints, width, height, radius, c.joints_per_row, seed)
        else:
            marks, outside = choose_marks(joints, width, height, radius, c.joints_per_row, c.overlap, seed)
        result.counters["joints_outside_image"] += outside
        if not marks:
            raise PersonSkipped("no_joint_in_image")
        target, union = draw_marks(image.pixels, marks, radius)
        names = joint_words(c.dataset, c.joint_names)
        params = self.params()
        rid = row_id(c.dataset, person.record_id, NAME, params, TASK)
        instruction = self.templates.instruction(rid, [(j.index, names[j.index], colour) for j, colour in marks])
        stem = Path(person.image_path.name).stem or person.image_id
        drawn = [
            {"index": j.index, "joint": names[j.index], "x": j.x, "y": j.y, "v": j.v, "color": colour,
             "centre": list(disc_centre(j.x, j.y)), "drawn": j.v > 0}
            for j, colour in marks
        ]
        return {
            "id": rid,
            "task": TASK,
            "instruction": instruction,
            "source_image": image_cell(image.data, f"{stem}.{extension(image.data)}"),
            "target_image": image_cell(encode(target, "png"), f"{stem}_{person.tag}_keypoints.png"),
            "mask": image_cell(encode(union * 255, "png"), f"{stem}_{person.tag}_mask.png"),
            "width": width,
            "height": height,
            "origin": origin_cell(dataset=c.dataset, split=c.split_name, record_id=person.record_id,
                                  image_id=person.image_id, phrase=", ".join(d["joint"] for d in drawn), url=person.url,
                                  license=person.license if c.dataset == "coco" else LICENSES[c.dataset]),
            "exemplar": None,
            "scores": None,
            "builder": builder_cell(name=NAME, backend="discs", embedded=False, seed=c.seed,
                                    params={**params, "radius": radius, "marks": drawn, "person": box,
                                            "source_image": image.provenance(),
                                            "redraw": self.redraw_material(joints, names, box)}),
            "drop_reason": None,
        }
