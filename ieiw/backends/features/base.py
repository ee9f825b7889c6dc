"""The one image-feature interface: embeddings every later consumer shares.

Removal verification, the exemplar database, zero-shot labels, the aesthetic heads, GIQA and dedup all
read image (and, where the backend has a text tower, text) embeddings through :class:`ImageFeatures`.
The ``features`` stage computes them once per distinct image of a unit and stores them (float16) in
``features/<unit>.parquet``, so changing a head or a threshold never recomputes them.

Backends are chosen by ``scoring.features: {backend: NAME, ...}``. The embedded one is a documented
hand-made descriptor (:mod:`ieiw.backends.features.embedded`); the paper's is CLIP ViT-L/14 through ``transformers`` (``clip``, in
ieiw/backends/features/clip.py); GIQA's is pytorch-fid's Inception pool3 (``fid-inception``, ieiw/backends/features/inception.py).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

import numpy as np

from ieiw.schemas.config import BackendConfig


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


def describe_backend(features: ImageFeatures) -> dict[str, Any]:
    """What a features manifest entry records about the extractor."""
    return {"extractor": features.name, "dim": features.dim, "embedded": features.embedded}
