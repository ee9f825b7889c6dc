"""Is the object really gone? The check behind "verified add-by-flip" (docs/removal.md).

A removal pair is only as good as its inpainting: when the object is still visible in the filled
image, "remove the dog" is wrong, and so is its flip "add the dog" (the dog is already there). So the
removal builder scores every region after inpainting, in the candidates stage, and both rows of a
region that fails carry ``drop_reason = object_not_removed`` (selection files them under
``rejected/``). The score goes to ``scores.verification``: higher = more surely gone.

Two backends (``removal.verify: {backend: ...}``):

- ``clip`` (the real path): CLIP image-text similarity of a square crop around the region against the
  phrase, before vs after; score = similarity before - similarity after.
- ``embedded`` (CPU, no weights): how far the region's colour and texture statistics (CIELAB mean and
  spread, gradient energy) sit from those of a ring of context around it, after vs before; score =
  1 - d_after / d_before, so 0 = nothing changed, 1 = the region now looks like its surroundings.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import cv2
import numpy as np
from pydantic import Field

from ieiw.schemas.config import BackendConfig
from ieiw.schemas.registry import register_backend

DROP_REASON = "object_not_removed"


class RemovalVerifier(abc.ABC):
    """``score(before, after, masks, phrases)`` -> one score per region (None = cannot tell)."""

    def __init__(self, config: VerifyConfig):
        self.config = config
        self.name = config.label()
        self.min_score = config.min_score

    @abc.abstractmethod
    def score(self, before: Sequence[np.ndarray], after: Sequence[np.ndarray], masks: Sequence[np.ndarray],
              phrases: Sequence[str]) -> list[float | None]:
        """RGB uint8 images before/after inpainting and the 0/1 fill masks."""

    def gone(self, score: float | None) -> bool:
        """A region nobody can judge (no context around it) is kept: no evidence against it."""
        return score is None or score >= self.min_score


class VerifyConfig(BackendConfig):
    kind: ClassVar[str] = "verify"
    min_score: float = 0.5


# -- embedded -------------------------------------------------------------------------------------
class EmbeddedVerifyConfig(VerifyConfig):
    """Region vs surrounding context, in colour and texture statistics (CPU, no weights)."""

    embedded: ClassVar[bool] = True

    backend: Literal["embedded"] = "embedded"
    min_score: float = Field(0.5, ge=0, le=1, description="keep a region when 1 - d_after/d_before reaches this")
    ring: float = Field(0.25, gt=0, description="context ring width as a share of sqrt(region area)")
    floor: float = Field(4.0, gt=0, description="d_before below this (CIELAB units) counts as this: an object "
                                                "that already matched its surroundings cannot be judged finely")

    def label(self) -> str:
        return "embedded-context-v1"


def _descriptor(lab: np.ndarray, gradient: np.ndarray, where: np.ndarray) -> np.ndarray:
    pixels = lab[where]
    return np.concatenate([pixels.mean(0), pixels.std(0), [gradient[where].mean()]])


def _lab_and_gradient(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lab = cv2.cvtColor(pixels, cv2.COLOR_RGB2LAB).astype(np.float32)
    grey = lab[..., 0]
    gx, gy = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    return lab, np.sqrt(gx * gx + gy * gy) / 4  # /4: Sobel's gain, so it reads in CIELAB-L units per px


def context_distances(before: np.ndarray, after: np.ndarray, mask: np.ndarray, ring_share: float = 0.25
                      ) -> tuple[float, float] | None:
    """(d_before, d_after): descriptor distance between the region and its context ring, or None when
    the region has no context (it covers the image)."""
    area = int(mask.sum())
    if area == 0:
        return None
    width = int(np.clip(ring_share * np.sqrt(area), 3, 32))
    ys, xs = np.nonzero(mask)
    height, full_width = mask.shape
    top, bottom = max(ys.min() - width, 0), min(ys.max() + width + 1, height)
    left, right = max(xs.min() - width, 0), min(xs.max() + width + 1, full_width)
    region = mask[top:bottom, left:right] > 0
    grown = cv2.dilate(region.astype(np.uint8), np.ones((2 * width + 1, 2 * width + 1), np.uint8)) > 0
    ring = grown & ~region
    if ring.sum() < 8:
        return None
    distances = []
    for image in (before, after):
        lab, gradient = _lab_and_gradient(np.ascontiguousarray(image[top:bottom, left:right]))
        distances.append(float(np.linalg.norm(_descriptor(lab, gradient, region) - _descriptor(lab, gradient, ring))))
    return distances[0], distances[1]


@register_backend("verify", "embedded", EmbeddedVerifyConfig)
class EmbeddedVerifier(RemovalVerifier):
    def score(self, before, after, masks, phrases):
        out: list[float | None] = []
        for b, a, m in zip(before, after, masks, strict=True):
            found = context_distances(b, a, m, self.config.ring)
            if found is None:
                out.append(None)
                continue
            d_before, d_after = found
            out.append(float(np.clip(1.0 - d_after / max(d_before, self.config.floor), 0.0, 1.0)))
        return out


# -- CLIP -----------------------------------------------------------------------------------------
class ClipVerifyConfig(VerifyConfig):
    """CLIP (transformers) similarity of the region's crop to the phrase, before vs after."""

    runtime_fields: ClassVar[frozenset[str]] = frozenset({"device", "batch_size", "dtype"})

    backend: Literal["clip"] = "clip"
    model: str = Field(description="a local CLIP folder, or a hub id already in the local HF cache")
    revision: str | None = None
    device: str = "auto"
    batch_size: int = Field(32, ge=1)
    dtype: Literal["auto", "float32", "float16"] = "auto"
    prompt: str = Field("a photo of {a_phrase}", description="the text the crop is compared with (the "
                                                               "placeholders of instruction templates)")
    min_score: float = Field(0.02, description="keep a region when similarity drops by at least this")
    margin: float = Field(0.15, ge=0, description="context around the region's box, as a share of its side")

    def features_config(self) -> Any:
        from ieiw.backends.features.clip import ClipFeaturesConfig

        return ClipFeaturesConfig(model=self.model, revision=self.revision, device=self.device,
                                  batch_size=self.batch_size, dtype=self.dtype, sha256=self.sha256)

    def label(self) -> str:
        return f"clip-drop:{self.features_config().model_name()}"

    def model_id(self) -> str | None:
        return self.features_config().model_id()

    def model_digests(self) -> dict[str, str | None]:
        return self.features_config().model_digests()

    def model_files(self) -> dict[str, Path | None]:
        return self.features_config().model_files()

    def preflight(self) -> list[str]:
        return [line.replace("features backend clip", "removal.verify backend clip")
                for line in self.features_config().preflight()]


def square_crop(image: np.ndarray, mask: np.ndarray, margin: float) -> np.ndarray:
    """A square around the region's box (plus ``margin``), clipped to the image: CLIP's processor
    centre-crops to a square, so a square crop keeps the whole region in view."""
    ys, xs = np.nonzero(mask)
    height, width = mask.shape
    cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
    side = max(ys.max() - ys.min(), xs.max() - xs.min()) * (1 + 2 * margin) + 1
    top, left = int(max(cy - side / 2, 0)), int(max(cx - side / 2, 0))
    bottom, right = int(min(cy + side / 2 + 1, height)), int(min(cx + side / 2 + 1, width))
    return np.ascontiguousarray(image[top:bottom, left:right])


@register_backend("verify", "clip", ClipVerifyConfig)
class ClipVerifier(RemovalVerifier):
    def __init__(self, config: ClipVerifyConfig):
        super().__init__(config)
        self.clip = config.features_config().create()

    def score(self, before, after, masks, phrases):
        from ieiw.phrases import render

        usable = [i for i, m in enumerate(masks) if m.any()]
        if not usable:
            return [None] * len(masks)
        crops = [square_crop(before[i], masks[i], self.config.margin) for i in usable]
        crops += [square_crop(after[i], masks[i], self.config.margin) for i in usable]
        images = self.clip.image_features(crops)
        texts = self.clip.text_features([render(self.config.prompt, phrases[i]) for i in usable])
        n = len(usable)
        drop = np.sum(images[:n] * texts, axis=1) - np.sum(images[n:] * texts, axis=1)
        out: list[float | None] = [None] * len(masks)
        for index, value in zip(usable, drop, strict=True):
            out[index] = float(value)
        return out
