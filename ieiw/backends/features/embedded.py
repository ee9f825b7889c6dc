"""The one image-feature interface: embeddings every later consumer shares.

Removal verification, the exemplar database, zero-shot labels, the aesthetic heads, GIQA and dedup all
read image (and, where the backend has a text tower, text) embeddings through :class:`ImageFeatures`.
The ``features`` stage computes them once per distinct image of a unit and stores them (float16) in
``features/<unit>.parquet``, so changing a head or a threshold never recomputes them.

Backends are chosen by ``scoring.features: {backend: NAME, ...}``. The embedded one is a documented
hand-made descriptor (below); the paper's is CLIP ViT-L/14 through ``transformers`` (``clip``, in
ieiw/backends/features/clip.py); GIQA's is pytorch-fid's Inception pool3 (``fid-inception``, ieiw/backends/features/inception.py).

``embedded-v1`` (160 dimensions, CPU, no weights), on the image resized to 64x64 (area filter):

- colour (64): joint RGB histogram, 4 bins per channel, square-rooted (Hellinger) and L2-normalised;
- texture (32): gradient-orientation histograms (8 unsigned orientations, magnitude-weighted) of the
  four quadrants of the grey image, L2-normalised;
- layout (64): the 8x8 grey thumbnail minus its mean, L2-normalised.

The three blocks are scaled by 0.5 / 0.3 / 0.2 (colour counts most, as it does for "is this the same
picture") and the whole vector is L2-normalised, so a dot product is a cosine similarity. It tells near-duplicates and re-edits of one photo from unrelated
photos; it knows nothing of objects or semantics, and it has no text tower.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import cv2
import numpy as np

from ieiw.schemas.config import BackendConfig
from ieiw.schemas.registry import register_backend


class ImageFeatures(abc.ABC):
    """Embeds images (and text, when the model has a text tower) into one space per backend.

    Each backend documents how its rows are normalised: ``embedded`` and ``clip`` rows are
    L2-normalised (a dot product is a cosine similarity); ``fid-inception`` rows are raw pool3
    activations (GIQA takes L1 distances on them)."""

    has_text: bool = False

    def __init__(self, config: BackendConfig):
        self.config = config
        self.name = config.label()
        self.embedded = config.embedded

    @property
    @abc.abstractmethod
    def dim(self) -> int:
        """Length of one embedding."""

    @abc.abstractmethod
    def image_features(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """RGB ``uint8`` HWC images -> ``float32`` array (N, dim), rows normalised as the backend documents."""

    def text_features(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> ``float32`` (N, dim) in the image space; only backends with a text tower have it."""
        raise NotImplementedError(f"feature backend {self.name} has no text tower")


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


def torch_device(name: str) -> Any:
    """The torch device a model backend's ``device`` setting names; ``auto`` = CUDA when there is one."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else torch.device(name)


def describe_backend(features: ImageFeatures) -> dict[str, Any]:
    """What a features manifest entry records about the extractor."""
    return {"extractor": features.name, "dim": features.dim, "embedded": features.embedded}
