"""Which window of a pair becomes the training sample: the official loaders' crop policy per source.

The official InstructDiffusion loaders differ by dataset (``dataset/*``):

- ``short-side``: the shorter side resized to the resolution, then a random square crop (GoPro, REDS, CLWD in
  ``dataset/low_level``; RefCOCO / gRefCOCO / COCO-Stuff crop a random full-height square and resize it: the
  same window). The default for every source not named below.
- ``squash``: both images resized straight to resolution x resolution, nothing cropped (every editing loader in
  ``dataset/editing/edit_zip_dataset.py``: InstructPix2Pix, GIER, GQA-Inpaint, MagicBrush and IEIW itself), so
  the edited object is always in the sample, at the cost of the aspect ratio.
- ``native``: a random resolution-sized crop at the stored resolution, nothing resized (SIDD: its noise is
  per-pixel; shrinking a 3000x5000 photo twelvefold to 256 px averages the noise away and leaves a near
  identity pair). An image smaller than the crop falls back to ``short-side``.

Policies are keyed like ``source_weights`` with the task family as a last resort: "dataset:task", dataset,
task, family. A row with a mask (IEIW remove / add / replace) cropped ``short-side`` keeps the mask's box in
the window whenever the box fits, so the instruction never names an object the sample does not show.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

import numpy as np

from ieiw.schemas.layout import task_family
from ieiw.training.keys import lookup_by_source

CropPolicy = Literal["short-side", "squash", "native"]
CROP_POLICIES: tuple[str, ...] = ("short-side", "squash", "native")
OFFICIAL_CROP: dict[str, str] = {"sidd": "native", "editing": "squash", "ieiw": "squash"}
DEFAULT_CROP = "short-side"

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 as shares of the image's width and height


def crop_policy(policies: Mapping[str, str], default: str, dataset: str | None, task: str | None) -> str:
    return lookup_by_source(policies, dataset, task, default, task_family(task) if task else None)


def _offset(rng: np.random.Generator, span: int, random_crop: bool, low: int = 0, high: int | None = None) -> int:
    """A window offset in [low, high] (default: [0, span]); the centre of [0, span] when not random."""
    high = span if high is None else high
    if not random_crop:
        return min(max(span // 2, low), high)
    return int(rng.integers(low, high + 1))


def _range_keeping(box_low: float, box_high: float, window: int, size: int) -> tuple[int, int] | None:
    """The window offsets (in resized pixels) whose window holds [box_low, box_high]; None if none does."""
    low, high = max(0, math.ceil(box_high - window)), min(size - window, math.floor(box_low))
    return (low, high) if low <= high else None


def crop_window(width: int, height: int, resolution: int, rng: np.random.Generator, policy: str,
                max_zoom: float = 1.0, random_crop: bool = True, keep: Box | None = None) -> tuple[int, int, int, int]:
    """The window ``(x0, y0, x1, y1)`` of a ``width`` x ``height`` image that is resized to resolution x
    resolution to make the sample (``squash``: the whole image; ``native``: a resolution-sized window)."""
    if policy == "squash":
        return 0, 0, width, height
    if policy == "native" and width >= resolution and height >= resolution:
        x = _offset(rng, width - resolution, random_crop)
        y = _offset(rng, height - resolution, random_crop)
        return x, y, x + resolution, y + resolution
    zoom = rng.uniform(1.0, max_zoom) if max_zoom > 1.0 else 1.0
    short = max(resolution, round(resolution * zoom))
    scale = short / min(width, height)
    size = (max(short, round(width * scale)), max(short, round(height * scale)))
    offsets = []
    for axis, span in enumerate(size):
        allowed = None
        if keep is not None:
            allowed = _range_keeping(keep[axis] * span, keep[axis + 2] * span, resolution, span)
            if allowed is None:  # the box is wider than the window: centre the window on it
                centre = (keep[axis] + keep[axis + 2]) / 2 * span
                offsets.append(min(max(round(centre - resolution / 2), 0), span - resolution))
                continue
        low, high = allowed if allowed is not None else (0, span - resolution)
        offsets.append(_offset(rng, span - resolution, random_crop, low, high))
    x, y = offsets
    sx, sy = width / size[0], height / size[1]
    x0, y0 = round(x * sx), round(y * sy)
    return x0, y0, max(x0 + 1, round((x + resolution) * sx)), max(y0 + 1, round((y + resolution) * sy))


def mask_box(mask: np.ndarray) -> Box | None:
    """The box of a 0/1 mask's set pixels, as shares of its width and height; None for an empty mask."""
    rows, columns = mask.any(axis=1), mask.any(axis=0)  # two reductions: several times faster than nonzero()
    if not rows.any():
        return None
    height, width = mask.shape[:2]
    y0, y1 = int(rows.argmax()), height - int(rows[::-1].argmax())
    x0, x1 = int(columns.argmax()), width - int(columns[::-1].argmax())
    return x0 / width, y0 / height, x1 / width, y1 / height
