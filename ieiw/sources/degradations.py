"""The degradations of the enhancement datasets, and the synthetic ones made from clean images.

Which degradation each dataset shows (GoPro and REDS blur, SIDD noise, CLWD watermarks), and the seeded
synthetic blur, noise and watermark that turn any clean image into an enhancement pair (the ``synthetic``
dataset, and the bundled samples of every layout). Every value drawn is returned with the pixels, so a
row records exactly what was done to its image.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ieiw.schemas.rows import stable_hash

DATASETS = ("gopro", "reds", "sidd", "clwd", "synthetic")
DEGRADATIONS = ("blur", "noise", "watermark")
DATASET_DEGRADATION = {"gopro": "blur", "reds": "blur", "sidd": "noise", "clwd": "watermark"}
WATERMARK_TEXTS = ("SAMPLE", "© stock photo", "PREVIEW", "watermark", "© ieiw", "DRAFT", "COPYRIGHT", "photo.example")
WATERMARK_COLOURS = {"white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128)}


@dataclass(frozen=True)
class Degraded:
    pixels: np.ndarray  # RGB uint8, the clean image's size
    details: dict[str, Any]  # the drawn values, for builder.params
    mask: np.ndarray | None = None  # 0/1 uint8 where the degradation is local (a watermark's footprint)


def _scale(pixels: np.ndarray) -> float:
    return max(min(pixels.shape[:2]) / 256.0, 0.5)


def motion_kernel(length: int, angle: float) -> np.ndarray:
    """A normalised ``length`` x ``length`` line kernel through the centre at ``angle`` degrees."""
    kernel = np.zeros((length, length), np.float32)
    centre = (length - 1) // 2  # length is odd
    dx, dy = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    for t in np.linspace(0.0, centre, 2 * length):  # one half, mirrored: the kernel is point-symmetric, so
        ox, oy = int(math.floor(t * dx + 0.5)), int(math.floor(t * dy + 0.5))  # the blur shifts nothing
        kernel[centre + oy, centre + ox] = kernel[centre - oy, centre - ox] = 1.0
    return kernel / kernel.sum()


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _blur(pixels: np.ndarray, rng: np.random.Generator) -> Degraded:
    scale = _scale(pixels)
    image = pixels.astype(np.float32)
    if rng.random() < 0.5:
        sigma = float(rng.uniform(1.0, 3.0)) * scale
        out = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)
        return Degraded(_to_uint8(out), {"kind": "gaussian", "sigma": round(sigma, 6)})
    length = max(3, int(round(float(rng.uniform(9, 25)) * scale)) | 1)  # odd
    angle = float(rng.uniform(0.0, 180.0))
    out = cv2.filter2D(image, -1, motion_kernel(length, angle), borderType=cv2.BORDER_REFLECT_101)
    return Degraded(_to_uint8(out), {"kind": "motion", "length": length, "angle": round(angle, 6)})


def _noise(pixels: np.ndarray, rng: np.random.Generator) -> Degraded:
    sigma = float(rng.uniform(5.0, 25.0))
    out = pixels.astype(np.float64) + rng.normal(0.0, sigma, size=pixels.shape)
    return Degraded(_to_uint8(out), {"kind": "gaussian", "sigma": round(sigma, 6)})


@functools.lru_cache(maxsize=64)
def _font(size: int) -> tuple[Any, str]:
    try:
        return ImageFont.load_default(size=size), "pillow-default"
    except (TypeError, ValueError, OSError, ImportError):  # no FreeType: the fixed-size bitmap font
        return ImageFont.load_default(), "pillow-bitmap"


def _watermark(pixels: np.ndarray, rng: np.random.Generator) -> Degraded:
    height, width = pixels.shape[:2]
    short = min(height, width)
    text = str(rng.choice(WATERMARK_TEXTS))
    size = max(8, int(round(short * float(rng.uniform(0.08, 0.16)))))
    opacity = float(rng.uniform(0.35, 0.65))
    colour_name = str(rng.choice(list(WATERMARK_COLOURS)))
    angle = float(rng.uniform(-35.0, 35.0))
    tiled = bool(rng.random() < 0.5)
    font, font_name = _font(size)
    left, top, right, bottom = font.getbbox(text)
    stamp = Image.new("L", (right - left + 4, bottom - top + 4), 0)
    ImageDraw.Draw(stamp).text((2 - left, 2 - top), text, fill=255, font=font)
    stamp = stamp.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    glyphs = np.asarray(stamp, np.float64) / 255.0
    sh, sw = glyphs.shape
    if tiled:
        step_x, step_y = max(sw + size, 1), max(sh + size, 1)
        off_x, off_y = int(rng.integers(0, step_x)), int(rng.integers(0, step_y))
        places = [(x, y) for y in range(off_y - step_y, height, step_y) for x in range(off_x - step_x, width, step_x)]
    else:
        x = int(rng.integers(0, max(1, width - sw + 1)))
        y = int(rng.integers(0, max(1, height - sh + 1)))
        places = [(x, y)]
    alpha = np.zeros((height, width), np.float64)
    for x, y in places:
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + sw, width), min(y + sh, height)
        if x0 >= x1 or y0 >= y1:
            continue
        alpha[y0:y1, x0:x1] = np.maximum(alpha[y0:y1, x0:x1], glyphs[y0 - y: y1 - y, x0 - x: x1 - x])
    alpha *= opacity
    colour = np.asarray(WATERMARK_COLOURS[colour_name], np.float64)
    out = pixels.astype(np.float64) * (1.0 - alpha[..., None]) + colour * alpha[..., None]
    details = {"text": text, "size": size, "opacity": round(opacity, 6), "color": colour_name,
               "angle": round(angle, 6), "tiled": tiled, "font": font_name}
    return Degraded(_to_uint8(out), details, (alpha > 0).astype(np.uint8))


DEGRADE = {"blur": _blur, "noise": _noise, "watermark": _watermark}


def degrade(pixels: np.ndarray, degradation: str, seed: int) -> Degraded:
    """``pixels`` (RGB uint8) degraded by ``degradation`` with everything drawn from ``seed``."""
    if degradation not in DEGRADE:
        raise ValueError(f"unknown degradation {degradation!r}; known: {', '.join(DEGRADATIONS)}")
    return DEGRADE[degradation](np.ascontiguousarray(pixels), np.random.default_rng(seed))


def image_seed(seed: int, path: str, degradation: str) -> int:
    """The seed of one image's degradation (63 bits, from the config seed, the image path and the kind)."""
    return int(stable_hash("enhance", seed, path, degradation, length=16), 16) >> 1
