"""Targets and instructions drawn anew for every training sample, as the official loaders draw them.

InstructDiffusion's dataset classes pick, for every sample, which joints to mark and in which colours, which
COCO-Stuff class, which referring sentence, which template and which enhancement prompt. Our converters write
one such draw per row (the stored target: what ``datasets``, the report and other trainers see) and keep in
``builder.params["redraw"]`` what it takes to draw again. The trainer draws from that material per sample:

| ``kind`` | rows | what is drawn per sample |
|---|---|---|
| ``keypoints`` | ``keypoints`` | the HRNet person crop, 1-5 joints, colours, pieces (:mod:`ieiw.training.pose_crop`) |
| ``segment-classes`` | COCO-Stuff ``segment`` | the crop; one class present in the crop, or with probability ``empty_share`` one that is not (target = input); colour; template |
| ``refer`` | RefCOCO / gRefCOCO ``refer-segment`` | the crop (keeping the mask's box); one of the ref's sentences; colour; template |
| ``prompts`` | ``enhance`` | one of the task's prompts |

The overlay kinds follow the official order: the crop is cut and resized first, the label resized with nearest
neighbours, and the colour blended into the resized crop (50/50, :func:`ieiw.builders.overlay.overlay`).
Every choice comes from the generator the caller passes (seeded by seed, epoch, row and repeat), so a resumed
run draws the same samples.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch

from ieiw.builders.overlay import PALETTE, fill_segment, overlay
from ieiw.builders.refcoco import compressed_counts
from ieiw.training.crops import Box, crop_window
from ieiw.training.flips import names_a_side
from ieiw.training.pose_crop import pose_sample

REDRAW_TASKS: Mapping[str, frozenset[str]] = {
    "keypoints": frozenset({"keypoints"}),
    "segment-classes": frozenset({"segment"}),
    "refer": frozenset({"refer-segment"}),
    "prompts": frozenset({"enhance"}),
}
OVERLAY_KINDS = frozenset({"segment-classes", "refer"})


def redraw_material(params: str | None, task: str | None) -> dict[str, Any] | None:
    """A row's redraw material from its ``builder.params`` JSON, when its kind is one the trainer knows and
    fits the row's task; None otherwise (the row trains as stored)."""
    if not params or '"redraw"' not in params:
        return None
    try:
        material = json.loads(params).get("redraw")
    except (ValueError, AttributeError):
        return None
    if not isinstance(material, dict) or task not in REDRAW_TASKS.get(material.get("kind"), ()):
        return None
    return material


@dataclass
class Drawn:
    """One redrawn sample: uint8 CHW tensors at the training resolution, its instruction, whether mirrored."""

    source: torch.Tensor
    target: torch.Tensor
    instruction: str
    flipped: bool
    details: dict[str, Any] = field(default_factory=dict)


def to_chw(pixels: np.ndarray) -> torch.Tensor:
    """H x W x 3 -> a contiguous 3 x H x W tensor; NumPy's copy (torch's strided uint8 copy is several
    times slower at this size)."""
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))


def resize_window(window: np.ndarray, resolution: int) -> np.ndarray:
    """An H x W x 3 window resized to the square with torch's antialiased bicubic (the loader's one filter)."""
    if window.shape[:2] == (resolution, resolution):
        return np.ascontiguousarray(window)
    tensor = torch.from_numpy(np.ascontiguousarray(window)).permute(2, 0, 1)[None]
    out = torch.nn.functional.interpolate(tensor, size=(resolution, resolution), mode="bicubic", antialias=True)
    return out[0].permute(1, 2, 0).numpy()


def resize_label(window: np.ndarray, resolution: int) -> np.ndarray:
    """A 0/1 window resized with nearest neighbours, as the official loaders resize their labels."""
    return cv2.resize(np.ascontiguousarray(window), (resolution, resolution), interpolation=cv2.INTER_NEAREST)


def decode_rle(counts: str, size: Sequence[int]) -> np.ndarray:
    """A COCO compressed RLE (``size`` = [height, width]) as a 0/1 ``uint8`` mask. Read with the builders'
    checked reader (:func:`ieiw.builders.refcoco.compressed_counts`) instead of pycocotools, whose decoder
    trusts the string and, under NumPy 2, warns on every call (a training log should carry no such line)."""
    height, width = int(size[0]), int(size[1])
    runs = np.asarray(compressed_counts(counts.encode("ascii")), dtype=np.int64)
    if runs.sum() != height * width or (runs < 0).any():
        raise ValueError(f"RLE runs cover {int(runs.sum())} pixels, not {height} x {width}")
    values = np.arange(len(runs), dtype=np.uint8) & 1  # runs alternate 0, 1, 0, ... from a 0 run
    return np.repeat(values, runs).reshape(width, height).T  # column-major, as COCO stores masks


def keypoint_sample(pixels: np.ndarray, material: Mapping[str, Any], resolution: int, rng: np.random.Generator,
                    flip_probability: float) -> Drawn | None:
    drawn = pose_sample(pixels, material, resolution, rng, flip_probability)
    if drawn is None:
        return None
    details = {"kind": "keypoints", "matrix": drawn.crop.matrix, "marks": drawn.marks, "centre": drawn.crop.centre,
               "scale": drawn.crop.scale, "rotation": drawn.crop.rotation, "half_body": drawn.crop.half_body}
    return Drawn(to_chw(drawn.source), to_chw(drawn.target), drawn.instruction, drawn.crop.flipped, details)


def overlay_sample(pixels: np.ndarray, material: Mapping[str, Any], row_mask: np.ndarray | None, resolution: int,
                   rng: np.random.Generator, flip_probability: float, max_zoom: float = 1.0,
                   random_crop: bool = True, keep: Box | None = None) -> Drawn | None:
    """A COCO-Stuff or referring sample drawn anew (module docstring); None when the material is unusable."""
    height, width = pixels.shape[:2]
    x0, y0, x1, y1 = crop_window(width, height, resolution, rng, "short-side", max_zoom, random_crop, keep)
    source = resize_window(pixels[y0:y1, x0:x1], resolution)
    segment = list(material.get("segment") or ())
    if not segment:
        return None
    kind = material["kind"]
    details: dict[str, Any] = {"kind": kind, "window": (x0, y0, x1, y1)}
    label: np.ndarray | None = None
    if kind == "refer":
        sentences = list(material.get("sentences") or ())
        if not sentences or row_mask is None or row_mask.shape[:2] != (height, width):
            return None
        obj = sentences[int(rng.integers(len(sentences)))]
        label = resize_label(row_mask[y0:y1, x0:x1], resolution)
    else:
        if [int(v) for v in material.get("size", ())] != [height, width]:
            return None
        in_window, outside = [], []
        for label_id, name, counts in material.get("classes", ()):
            window = decode_rle(counts, material["size"])[y0:y1, x0:x1]
            resized = resize_label(window, resolution)
            (in_window if resized.any() else outside).append((label_id, name, resized))
        if not in_window:
            nothing = list(material.get("nothing") or ()) or ["leave the picture as it is."]
            text = nothing[int(rng.integers(len(nothing)))]
            details.update(label_id=None, mask=np.zeros((resolution, resolution), np.uint8))
            return _finish(source, source, text, rng, flip_probability, details)
        label_id, obj, label = in_window[int(rng.integers(len(in_window)))]
        absent = [(int(i), str(n)) for i, n in material.get("absent", ())] + [(i, n) for i, n, _ in outside]
        if absent and rng.random() < float(material.get("empty_share", 0.0)):
            label_id, obj = absent[int(rng.integers(len(absent)))]
            label = np.zeros((resolution, resolution), np.uint8)
        details["label_id"] = label_id
    colour = PALETTE[int(rng.integers(len(PALETTE)))]
    text = fill_segment(segment[int(rng.integers(len(segment)))], obj, colour)
    if names_a_side(text):  # "the man on the left": never mirrored (ieiw.training.flips)
        flip_probability = 0.0
    target = overlay(source, label, colour.rgb) if label.any() else source
    details.update(colour=colour.word, mask=label)
    return _finish(source, target, text, rng, flip_probability, details)


def _finish(source: np.ndarray, target: np.ndarray, text: str, rng: np.random.Generator, flip_probability: float,
            details: dict[str, Any]) -> Drawn:
    flipped = flip_probability > 0 and rng.random() < flip_probability
    if flipped:
        source, target = source[:, ::-1], target[:, ::-1]
        if "mask" in details:
            details["mask"] = details["mask"][:, ::-1]
    return Drawn(to_chw(source), to_chw(target), text, flipped, details)


def pick_prompt(material: Mapping[str, Any], rng: np.random.Generator) -> str | None:
    prompts = [p for p in material.get("prompts", ()) if isinstance(p, str) and p.strip()]
    return prompts[int(rng.integers(len(prompts)))] if prompts else None
