"""The official pose loader's person crop and disc drawing, done per training sample.

InstructDiffusion's ``dataset/pose/pose.py`` (HRNet's ``JointsDataset``) never trains on the whole photo: each
sample is one person, cropped and warped to the training size, and the discs are drawn on that crop. Facts
carried over (the code is ours):

- **Box to centre and scale**: a COCO-style ``bbox`` is clipped to the image (``x1 = max(0, x)``,
  ``x2 = min(W-1, x1 + max(0, w-1))``), its centre taken, the shorter side grown to a square, and the square
  scaled by 1.25 (``scale`` is in units of 200 px, HRNet's ``pixel_std``). MPII gives ``center`` and ``scale``:
  the centre moves down by ``15 * scale`` and the scale grows by 1.25 (both before the 1-pixel shift the
  builder has already applied to the centre).
- **Half-body** (COCO only, probability 0.3, when more than 8 joints are labelled): the box of the upper or the
  lower body's labelled joints (upper when a standard normal draw is below 0.5 and it has more than 2 joints, as
  the official ``np.random.randn() < 0.5`` reads), squared, x 1.5.
- **Jitter**: scale x ``clip(N(0,1) * 0.35 + 1, 0.65, 1.35)``; rotation ``clip(N(0,1) * 45, -90, 90)`` degrees
  with probability 0.6, else 0.
- **Mirror** (with the row's flip probability): the image is mirrored, the centre with it
  (``c_x = W - c_x - 1``), and each left joint takes its right partner's mirrored position (``fliplr_joints``),
  so the disc named "left knee" sits where the mirrored photo shows a left knee.
- **Warp**: the similarity that maps the centre to the middle of the crop, ``scale * 200`` px to the crop's
  width and the rotation to upright; bilinear, black outside the photo (``cv2.warpAffine``, ``INTER_LINEAR``).
- **Discs**: 1-5 joints drawn from all of the dataset's joints, a colour each out of nine, one template piece
  each; radius 10 at 256 px (scaled with the resolution); pixels with ``dx^2 + dy^2 <= r^2 + 1`` around the
  joint rounded half up; opaque. An unlabelled joint is named and gets no disc.

One place where we differ on purpose: the official code names and draws a joint whose disc the crop cuts in
part (it leaves out only a disc wholly outside); here a labelled joint whose disc is not wholly inside the crop
is neither named nor drawn, so the instruction never asks for a disc the target shows in part.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ieiw.builders.keypoints import COLOURS, RADIUS_AT_256, REFERENCE_SIDE, disc_centre, join_pieces
from ieiw.sources.keypoints import JOINTS
from ieiw.training.flips import swap_sides

PIXEL_STD = 200.0
BOX_MARGIN = 1.25
HALF_BODY_MARGIN = 1.5
SCALE_FACTOR = 0.35
ROTATION_FACTOR = 45.0
ROTATION_PROBABILITY = 0.6
HALF_BODY_PROBABILITY: Mapping[str, float] = {"coco": 0.3}  # the others: -1 in the official classes (never)
HALF_BODY_MIN_JOINTS = 8
MPII_CENTRE_SHIFT = 15.0
UPPER_BODY: Mapping[str, frozenset[int]] = {
    "coco": frozenset(range(11)),
    "crowdpose": frozenset({0, 1, 2, 3, 4, 5, 12, 13}),
    "aic": frozenset({0, 1, 2, 3, 4, 5, 12, 13}),
    "mpii": frozenset({7, 8, 9, 10, 11, 12, 13, 14, 15}),
}


def disc_radius_at(resolution: int) -> int:
    """The official 10 px at 256, scaled to the training resolution (at least 1)."""
    return max(1, math.floor(RADIUS_AT_256 * resolution / REFERENCE_SIDE + 0.5))


@functools.lru_cache(maxsize=64)
def flip_partners(names: tuple[str, ...]) -> tuple[int, ...]:
    """For each joint, the index of its left/right partner (itself when it has none): "left knee" <->
    "right knee" by name, which gives the official ``flip_pairs`` of every dataset. Cached: a handful of name
    lists serve every sample."""
    index = {name: i for i, name in enumerate(names)}
    return tuple(index.get(swap_sides(name), i) for i, name in enumerate(names))


@dataclass(frozen=True)
class PersonCrop:
    """Where one sample's crop comes from: ``matrix`` maps photo pixels (x, y, 1) to crop pixels."""

    matrix: np.ndarray  # 2 x 3 float64
    centre: tuple[float, float]  # in the photo as stored (before any mirror)
    flipped: bool
    rotation: float
    scale: float  # the square's side / 200 after jitter
    half_body: bool


def box_centre_scale(person: Mapping[str, Any], width: int, height: int,
                     joints: np.ndarray) -> tuple[np.ndarray, float] | None:
    """The official centre and (square) scale of a person record; None when its box is empty after clipping.

    A COCO-style record without a ``bbox`` uses the box of its labelled joints (the official loader has a box
    for every person; ours may come from a file that lacks one)."""
    limit = 16.0 * max(width, height)  # a box this far out or this large is a damaged record
    if "center" in person:  # MPII: centre and scale as annotated (the builder already moved the centre by -1)
        scale = float(person["scale"])
        centre = np.array([float(person["center"][0]), float(person["center"][1]) + MPII_CENTRE_SHIFT * scale])
        if not (0 < scale * PIXEL_STD < limit and np.isfinite(centre).all() and np.abs(centre).max() < limit):
            return None
        return centre, scale * BOX_MARGIN
    box = person.get("bbox")
    if box is None:
        labelled = joints[joints[:, 2] > 0, :2]
        if not len(labelled):
            return None
        low, high = labelled.min(axis=0), labelled.max(axis=0)
        box = [low[0], low[1], high[0] - low[0] + 1, high[1] - low[1] + 1]
    x, y, w, h = (float(v) for v in box)
    if not all(math.isfinite(v) and abs(v) < limit for v in (x, y, w, h)):
        return None
    x1, y1 = max(0.0, x), max(0.0, y)
    x2, y2 = min(width - 1.0, x1 + max(0.0, w - 1)), min(height - 1.0, y1 + max(0.0, h - 1))
    if x2 < x1 or y2 < y1:
        return None
    w, h = x2 - x1, y2 - y1
    centre = np.array([x1 + w * 0.5, y1 + h * 0.5])
    return centre, max(w, h) / PIXEL_STD * BOX_MARGIN


def half_body(joints: np.ndarray, dataset: str, rng: np.random.Generator) -> tuple[np.ndarray, float] | None:
    """The official ``half_body_transform`` (aspect ratio 1): the upper or the lower body's labelled joints."""
    upper_ids = UPPER_BODY[dataset]
    labelled = [i for i in range(len(joints)) if joints[i, 2] > 0]
    upper = [joints[i, :2] for i in labelled if i in upper_ids]
    lower = [joints[i, :2] for i in labelled if i not in upper_ids]
    if rng.standard_normal() < 0.5 and len(upper) > 2:
        chosen = upper
    else:
        chosen = lower if len(lower) > 2 else upper
    if len(chosen) < 2:
        return None
    points = np.array(chosen, dtype=np.float64)
    centre = points.mean(axis=0)
    w, h = points.max(axis=0) - points.min(axis=0)
    return centre, max(w, h) / PIXEL_STD * HALF_BODY_MARGIN


def similarity(centre: np.ndarray, scale: float, rotation: float, resolution: int) -> np.ndarray:
    """The official ``get_affine_transform`` for a square output: centre -> middle, ``scale * 200`` px ->
    ``resolution`` px, the photo turned by ``-rotation`` degrees (the source direction rotated by ``rotation``
    comes out upright)."""
    k = resolution / (scale * PIXEL_STD)
    r = math.radians(rotation)
    cos, sin = math.cos(r), math.sin(r)
    linear = k * np.array([[cos, sin], [-sin, cos]])
    offset = np.array([resolution / 2.0, resolution / 2.0]) - linear @ centre
    return np.hstack([linear, offset[:, None]])


def person_crop(person: Mapping[str, Any], dataset: str, joints: np.ndarray, width: int, height: int,
                resolution: int, rng: np.random.Generator, flip_probability: float) -> PersonCrop | None:
    """One sample's crop of a person (module docstring), or None when the record has no usable box."""
    placed = box_centre_scale(person, width, height, joints)
    if placed is None:
        return None
    centre, scale = placed
    halved = False
    if (int((joints[:, 2] > 0).sum()) > HALF_BODY_MIN_JOINTS
            and rng.random() < HALF_BODY_PROBABILITY.get(dataset, -1.0)):
        half = half_body(joints, dataset, rng)
        if half is not None:
            (centre, scale), halved = half, True
    scale *= float(np.clip(rng.standard_normal() * SCALE_FACTOR + 1, 1 - SCALE_FACTOR, 1 + SCALE_FACTOR))
    rotation = 0.0
    if rng.random() <= ROTATION_PROBABILITY:
        rotation = float(np.clip(rng.standard_normal() * ROTATION_FACTOR, -2 * ROTATION_FACTOR, 2 * ROTATION_FACTOR))
    flipped = flip_probability > 0 and rng.random() < flip_probability
    placed_at = (float(centre[0]), float(centre[1]))
    matrix = similarity(centre, scale, rotation, resolution)
    if flipped:  # mirror the photo first (x -> W - 1 - x), its centre with it, then the same similarity
        centre = np.array([width - 1 - centre[0], centre[1]])
        mirror = np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        matrix = similarity(centre, scale, rotation, resolution) @ mirror
    return PersonCrop(matrix, placed_at, flipped, rotation, scale, halved)


def warp(pixels: np.ndarray, crop: PersonCrop, resolution: int) -> np.ndarray:
    """The crop's pixels: bilinear, black where the photo ends (the official ``warpAffine``)."""
    return cv2.warpAffine(pixels, crop.matrix, (resolution, resolution), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def crop_joints(joints: np.ndarray, crop: PersonCrop, partners: Sequence[int]) -> np.ndarray:
    """Each joint's (x, y, v) in the crop; when mirrored, joint i takes its partner's position and visibility."""
    order = list(partners) if crop.flipped else list(range(len(joints)))
    moved = joints[order].astype(np.float64)
    points = np.hstack([moved[:, :2], np.ones((len(moved), 1))])
    moved[:, :2] = points @ crop.matrix.T
    return moved


@dataclass(frozen=True)
class Mark:
    """One named joint of a sample: its index and name, its colour, and its disc's centre (None: unlabelled)."""

    index: int
    name: str
    colour: str
    centre: tuple[int, int] | None


def disc_inside(centre: tuple[int, int], radius: int, resolution: int) -> bool:
    cx, cy = centre
    return radius <= cx < resolution - radius and radius <= cy < resolution - radius


def choose_marks(joints: np.ndarray, names: Sequence[str], joints_per_row: Sequence[int], radius: int,
                 resolution: int, rng: np.random.Generator) -> list[Mark]:
    """The official ``generate_target`` choice on the crop: ``randint(min, max)`` joints out of all, a colour
    each out of nine; an unlabelled joint is named without a disc; a labelled one is kept only when its disc
    lies wholly inside the crop (module docstring)."""
    low, high = int(joints_per_row[0]), int(joints_per_row[1])
    want = min(int(rng.integers(low, high + 1)), len(joints))
    chosen = rng.choice(len(joints), size=want, replace=False)
    colours = rng.choice(list(COLOURS), size=want, replace=False)
    marks = []
    for index, colour in zip(chosen, colours, strict=True):
        index = int(index)
        if joints[index, 2] > 0:
            centre = disc_centre(float(joints[index, 0]), float(joints[index, 1]))
            if not disc_inside(centre, radius, resolution):
                continue
            marks.append(Mark(index, names[index], str(colour), centre))
        else:
            marks.append(Mark(index, names[index], str(colour), None))
    return marks


def draw_discs(pixels: np.ndarray, marks: Sequence[Mark], radius: int) -> np.ndarray:
    """``pixels`` with an opaque disc per labelled mark, later over earlier (a new array)."""
    target = pixels.copy()
    offsets = np.arange(-radius, radius + 1)
    inside = offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius * radius + 1
    for mark in marks:
        if mark.centre is None:
            continue
        cx, cy = mark.centre
        window = target[cy - radius: cy + radius + 1, cx - radius: cx + radius + 1]
        window[inside] = COLOURS[mark.colour]
    return target


@dataclass(frozen=True)
class PoseSample:
    source: np.ndarray  # resolution x resolution x 3 uint8
    target: np.ndarray
    instruction: str
    marks: tuple[Mark, ...]
    crop: PersonCrop


MAX_TRIES = 8  # crops drawn before a person whose joints all leave the crop falls back to its stored row


def pose_sample(pixels: np.ndarray, material: Mapping[str, Any], resolution: int, rng: np.random.Generator,
                flip_probability: float) -> PoseSample | None:
    """One training sample of a keypoint row drawn anew: person crop, joints, colours, instruction.

    ``material`` is the row's ``builder.params["redraw"]`` (:mod:`ieiw.builders.keypoints`). None when the
    person's box is unusable or no joint could be named in ``MAX_TRIES`` crops: the caller trains on the row as
    stored."""
    dataset = str(material["dataset"])
    joints = np.asarray(material["joints"], dtype=np.float64).reshape(-1, 3)
    names = [str(name) for name in material["names"]]
    pieces = [str(piece) for piece in material["pieces"]]
    height, width = pixels.shape[:2]
    limit = 16.0 * max(height, width)  # a joint this far out is a damaged record, not a pose
    if (dataset not in UPPER_BODY or len(names) != len(joints) or not pieces or not len(joints)
            or not np.isfinite(joints).all() or np.abs(joints[:, :2]).max() > limit):
        return None
    radius = disc_radius_at(resolution)
    partners = flip_partners(JOINTS[dataset] if len(JOINTS[dataset]) == len(names) else tuple(names))
    for _ in range(MAX_TRIES):
        crop = person_crop(material["person"], dataset, joints, width, height, resolution, rng, flip_probability)
        if crop is None:
            return None
        moved = crop_joints(joints, crop, partners)
        marks = choose_marks(moved, names, material.get("joints_per_row", (1, 5)), radius, resolution, rng)
        if not marks:
            continue
        source = warp(pixels, crop, resolution)
        target = draw_discs(source, marks, radius)
        filled = [pieces[int(rng.integers(len(pieces)))].format(color=m.colour, joint=m.name) for m in marks]
        return PoseSample(source, target, join_pieces(filled), tuple(marks), crop)
    return None
