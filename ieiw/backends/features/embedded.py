"""The embedded feature backend (``features.embedded``): ``embedded-v1``, 160 dimensions, CPU, no weights.

On the image resized to 64x64 (area filter):

- colour (64): joint RGB histogram, 4 bins per channel, square-rooted (Hellinger) and L2-normalised;
- texture (32): gradient-orientation histograms (8 unsigned orientations, magnitude-weighted) of the
  four quadrants of the grey image, L2-normalised;
- layout (64): the 8x8 grey thumbnail minus its mean, L2-normalised.

The three blocks are scaled by 0.5 / 0.3 / 0.2 (colour counts most, as it does for "is this the same
picture") and the whole vector is L2-normalised, so a dot product is a cosine similarity. It tells near-duplicates and re-edits of one photo from unrelated
photos; it knows nothing of objects or semantics, and it has no text tower.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import cv2
import numpy as np

from ieiw.backends.features.base import ImageFeatures
from ieiw.schemas.config import BackendConfig
from ieiw.schemas.registry import register_backend


class EmbeddedFeaturesConfig(BackendConfig):
    kind: ClassVar[str] = "features"
    embedded: ClassVar[bool] = True

    backend: Literal["embedded"] = "embedded"

    def label(self) -> str:
        return "embedded-v1"


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 1e-12 else vector


@register_backend("features", "embedded", EmbeddedFeaturesConfig)
class EmbeddedDescriptor(ImageFeatures):
    """The hand-made descriptor of the module docstring."""

    WEIGHTS = (0.5, 0.3, 0.2)

    @property
    def dim(self) -> int:
        return 160

    def describe(self, image: np.ndarray) -> np.ndarray:
        small = cv2.resize(np.ascontiguousarray(image), (64, 64), interpolation=cv2.INTER_AREA)
        bins = (small // 64).astype(np.int32)  # 4 levels per channel
        joint = bins[..., 0] * 16 + bins[..., 1] * 4 + bins[..., 2]
        colour = _unit(np.sqrt(np.bincount(joint.ravel(), minlength=64).astype(np.float32)))

        grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)
        gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
        magnitude = np.hypot(gx, gy)
        angle = (np.arctan2(gy, gx) % np.pi) / np.pi * 8  # unsigned orientation in [0, 8)
        orient = np.minimum(angle.astype(np.int32), 7)
        texture = np.concatenate(
            [
                np.bincount(orient[y : y + 32, x : x + 32].ravel(), magnitude[y : y + 32, x : x + 32].ravel(), 8)
                for y in (0, 32)
                for x in (0, 32)
            ]
        ).astype(np.float32)
        texture = _unit(texture)

        thumb = cv2.resize(grey, (8, 8), interpolation=cv2.INTER_AREA).ravel()
        layout = _unit(thumb - thumb.mean())

        w = self.WEIGHTS
        return _unit(np.concatenate([w[0] * colour, w[1] * texture, w[2] * layout])).astype(np.float32)

    def image_features(self, images: Sequence[np.ndarray]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self.describe(image) for image in images])
