"""A deterministic synthetic source in the exact VGPhraseCut layout, bundled for `make build` and tests.

Scenes are coloured shapes drawn over a smooth background; the clean background is kept in
``backgrounds/{image_id}.png`` (not part of PhraseCut) so tests can measure removal against ground
truth. Shapes never overlap and keep a margin, so the background is the true content under every
region. Each image gets one referring record per (shape, colour) group; a group of two identical
shapes makes a two-instance record, as PhraseCut has.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw

COLOURS = {
    "red": (210, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 200),
    "yellow": (235, 210, 40),
    "purple": (130, 50, 160),
    "orange": (240, 130, 30),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
SHAPES = ("circle", "square", "triangle", "diamond")
SIZE_WORDS = {True: "large", False: "small"}


@dataclass
class Shape:
    kind: str
    colour: str
    cx: float
    cy: float
    radius: float
    angle: float

    def polygon(self) -> list[list[float]]:
        """Outline points ``[x, y]`` (x first, float pixels, as PhraseCut stores them)."""
        corners = {"circle": 28, "square": 4, "triangle": 3, "diamond": 4}[self.kind]
        offset = self.angle + (math.pi / 4 if self.kind == "square" else 0.0)
        return [
            [
                round(self.cx + self.radius * math.cos(offset + 2 * math.pi * i / corners), 2),
                round(self.cy + self.radius * math.sin(offset + 2 * math.pi * i / corners), 2),
            ]
            for i in range(corners)
        ]

    def box(self) -> list[float]:
        points = np.array(self.polygon())
        x0, y0 = points.min(axis=0)
        x1, y1 = points.max(axis=0)
        return [round(float(x0), 2), round(float(y0), 2), round(float(x1 - x0), 2), round(float(y1 - y0), 2)]


def smooth_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A gradient plus low-frequency colour noise: natural-looking, and inpaintable."""
    top, bottom = rng.uniform(60, 200, size=(2, 3))
    ramp = np.linspace(0.0, 1.0, height)[:, None, None]
    base = top * (1 - ramp) + bottom * ramp
    coarse = rng.normal(0, 18, size=(4, 5, 3)).astype(np.float32)
    noise = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    fine = rng.normal(0, 2.0, size=(height, width, 3))
    return np.clip(base + noise + fine, 0, 255).astype(np.uint8)


def place_shapes(rng: np.random.Generator, width: int, height: int, count: int, margin: float = 14.0) -> list[Shape]:
    """Non-overlapping shapes (circumcircles ``margin`` apart), with one duplicated group at times."""
    shapes: list[Shape] = []
    attempts = 0
    while len(shapes) < count and attempts < 500:
        attempts += 1
        radius = float(rng.uniform(min(width, height) * 0.08, min(width, height) * 0.17))
        cx = float(rng.uniform(radius + 4, width - radius - 4))
        cy = float(rng.uniform(radius + 4, height - radius - 4))
        if any(math.hypot(cx - s.cx, cy - s.cy) < radius + s.radius + margin for s in shapes):
            continue
        if shapes and rng.random() < 0.25:  # a second instance of an existing group
            kind, colour = shapes[0].kind, shapes[0].colour
        else:
            kind = str(rng.choice(SHAPES))
            colour = str(rng.choice(list(COLOURS)))
        shapes.append(Shape(kind, colour, cx, cy, radius, float(rng.uniform(0, math.pi))))
    return shapes


def _relation(a: Shape, b: Shape) -> str:
    dx, dy = b.cx - a.cx, b.cy - a.cy
    if abs(dx) > abs(dy):
        return "left of" if dx > 0 else "right of"
    return "above" if dy > 0 else "below"


def phrase_record(image_id: int, group: list[tuple[int, Shape]], others: list[Shape], kind: str) -> dict:
    """One referring record in PhraseCut's field layout; ``kind`` is the phrase_structure type."""
    first = group[0][1]
    name = first.kind + ("s" if len(group) > 1 else "")
    attributes = [] if kind == "name" else [first.colour]
    relations: list[list[str]] = []
    if kind in ("relation", "verbose") and others:
        other = others[0]
        relations = [[_relation(first, other), other.kind]]
    words = attributes + [name]
    if kind == "verbose":
        words = [SIZE_WORDS[first.radius > 30]] + words
    phrase = " ".join(words + ([f"{relations[0][0]} {relations[0][1]}"] if relations else []))
    ann_ids = [image_id * 100 + index for index, _ in group]
    return {
        "task_id": f"{image_id}__" + "_".join(str(a) for a in ann_ids),
        "image_id": image_id,
        "ann_ids": ann_ids,
        "instance_boxes": [shape.box() for _, shape in group],
        "Polygons": [[shape.polygon()] for _, shape in group],
        "phrase": phrase,
        "phrase_structure": {
            "name": name,
            "attributes": attributes,
            "relation_ids": list(range(len(relations))),
            "relation_descriptions": relations,
            "type": kind,
        },
        "iou": 1.0,
        "iob": 1.0,
        "iop": 1.0,
        "turk_id": "synthetic",
    }


def synthetic_scene(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """One scene drawn like the sample's (shapes over a smooth background), e.g. for a reference set."""
    canvas = Image.fromarray(smooth_background(rng, width, height))
    draw = ImageDraw.Draw(canvas)
    for shape in place_shapes(rng, width, height, count=int(rng.integers(2, 5))):
        draw.polygon([tuple(p) for p in shape.polygon()], fill=COLOURS[shape.colour])
    return np.asarray(canvas)


def make_phrasecut_sample(root: Path, images: int = 120, seed: int = 0, width: int = 320, height: int = 240) -> Path:
    """Write ``images`` synthetic scenes under ``root`` in VGPhraseCut_v0 layout; returns ``root``.

    The same arguments always give byte-identical files.
    """
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "backgrounds").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    infos, refer = [], {"train": [], "val": []}
    kinds = ("name", "attribute", "relation", "verbose")
    for index in range(images):
        image_id = index + 1
        split = "val" if index % 10 == 9 else "train"
        background = smooth_background(rng, width, height)
        shapes = place_shapes(rng, width, height, count=int(rng.integers(2, 5)))
        canvas = Image.fromarray(background)
        draw = ImageDraw.Draw(canvas)
        for shape in shapes:
            draw.polygon([tuple(p) for p in shape.polygon()], fill=COLOURS[shape.colour])
        canvas.save(root / "images" / f"{image_id}.jpg", quality=92)
        Image.fromarray(background).save(root / "backgrounds" / f"{image_id}.png")
        infos.append(
            {
                "width": width,
                "url": f"https://example.invalid/VG_100K/{image_id}.jpg",
                "height": height,
                "image_id": image_id,
                "split": split,
                "coco_id": None,
                "flickr_id": None,
            }
        )
        groups: dict[tuple[str, str], list[tuple[int, Shape]]] = {}
        for shape_index, shape in enumerate(shapes):
            groups.setdefault((shape.kind, shape.colour), []).append((shape_index, shape))
        for group_index, group in enumerate(groups.values()):
            others = [s for i, s in enumerate(shapes) if i not in {gi for gi, _ in group}]
            kind = kinds[(index + group_index) % len(kinds)]
            refer[split].append(phrase_record(image_id, group, others, kind))
    for split, records in refer.items():
        (root / f"refer_{split}.json").write_text(json.dumps(records))
    # Written last: its presence is what marks a finished sample (a killed generation is redone).
    (root / "image_data_split.json").write_text(json.dumps(infos))
    return root


MARKER = "image_data_split.json"


class IncompleteSample(RuntimeError):
    """A sample folder without its marker file: left by an older, non-atomic generator."""


def ensure_sample(root: Path, make: Callable[[Path], object], marker: str = MARKER) -> bool:
    """Make a sample at ``root`` with ``make(folder)`` unless it is there (its ``marker`` file, written
    last by ``make``, exists); True when this call wrote it.

    Safe when several processes (flow workers, two builds) call it at once: each writes into its own
    temporary sibling folder and renames it to ``root`` in one step; a loser finds ``root`` taken and
    discards its copy (identical: generators are deterministic). Readers therefore see no sample or a
    whole one, never a half-written file.
    """
    root = Path(root)
    if (root / marker).exists():
        return False
    if root.exists() and any(root.iterdir()):
        raise IncompleteSample(f"{root} exists but has no {marker}: delete it and the sample is made again")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{root.name}-", dir=root.parent))
    try:
        make(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; a sample is for everyone who reads the corpus
        try:
            if root.exists():  # an empty folder (e.g. made by hand) can be replaced
                root.rmdir()
            os.rename(tmp, root)
        except OSError:
            if (root / marker).exists():
                return False  # another process won the race: its copy is identical
            raise
        return True
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def ensure_phrasecut_sample(root: Path, images: int = 120, seed: int = 0, width: int = 320, height: int = 240) -> bool:
    """Make the PhraseCut-layout sample at ``root`` unless it is there (:func:`ensure_sample`)."""
    return ensure_sample(root, lambda folder: make_phrasecut_sample(folder, images, seed, width, height))
