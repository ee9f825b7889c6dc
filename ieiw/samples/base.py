"""What every sample generator shares: shapes and colours on a smooth background, COCO captions with real
blemishes, and :func:`ensure_sample`, which makes a sample once, atomically, even when processes race.
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

from ieiw.schemas.storage import folder_mode

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


def synthetic_scene(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """One scene drawn like the sample's (shapes over a smooth background), e.g. for a reference set."""
    canvas = Image.fromarray(smooth_background(rng, width, height))
    draw = ImageDraw.Draw(canvas)
    for shape in place_shapes(rng, width, height, count=int(rng.integers(2, 5))):
        draw.polygon([tuple(p) for p in shape.polygon()], fill=COLOURS[shape.colour])
    return np.asarray(canvas)


class IncompleteSample(RuntimeError):
    """A sample folder without its marker file: left by an older, non-atomic generator."""


def ensure_sample(root: Path, make: Callable[[Path], object], marker: str) -> bool:
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
        # mkdtemp makes it 0700; a sample is for everyone who reads the corpus: 0755 under the usual umask
        # 022, while a stricter one (077) is honoured
        os.chmod(tmp, folder_mode())
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


MESSY = ("{}", "{}.", "{} .", " {}.\n", "{}  ", "{}.")


def write_sample_captions(path: Path, images: list[tuple[int, str, list[str]]]) -> Path:
    """A COCO captions file for a sample: per image ``(id, file_name, captions)``, with the blemishes real
    COCO captions have (final full stops, a space before one, trailing newlines, double spaces, a repeat);
    an image given no captions stays uncaptioned. Written last-but-atomic by the caller's sample maker."""
    entries, annotations = [], []
    next_id = 1
    for image_id, file_name, texts in images:
        entries.append({"id": image_id, "file_name": file_name, "license": 4})
        for number, text in enumerate(texts):
            words = text.replace(" ", "  ", 1) if number == 2 else text
            caption = MESSY[(image_id + number) % len(MESSY)].format(words[:1].upper() + words[1:])
            annotations.append({"image_id": image_id, "id": next_id, "caption": caption})
            next_id += 1
        if texts:  # COCO has a few exact repeats
            annotations.append({"image_id": image_id, "id": next_id, "caption": texts[0][:1].upper() + texts[0][1:]})
            next_id += 1
    payload = {"info": {"description": "ieiw synthetic COCO captions sample", "version": "1.0", "year": 2017},
               "licenses": [{"url": "http://creativecommons.org/licenses/by/2.0/", "id": 4,
                             "name": "Attribution License"}],
               "images": entries, "annotations": annotations}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))
    return path
