"""The LAION aesthetics predictors: the paper's aesthetic filter (``scoring.scorers: [{backend: laion}]``).

Both heads map an OpenAI CLIP ViT-L/14 image embedding (L2-normalised, float32) to a score of roughly
1-10 (docs/formats.md, "LAION aesthetics heads"):

- ``v1``: ``nn.Linear(768, 1)``, state-dict keys ``weight``, ``bias`` (``sa_0_4_vit_l_14_linear.pth``);
- ``improved``: Linear(768, 1024) - Dropout(0.2) - Linear(1024, 128) - Dropout(0.2) - Linear(128, 64) -
  Dropout(0.1) - Linear(64, 16) - Linear(16, 1), no activations, keys ``layers.{0,2,4,6,7}.{weight,bias}``
  (``sac+logos+ava1-l14-linearMSE.pth``, whose tensors were saved on ``cuda:0``).

The head reads the embedding the features stage stored for the main extractor (``scoring.features``),
so that must be CLIP ViT-L/14 (768-d): the first score checks the dimensions. The stored embedding is
float16, so it is L2-normalised again in float32 before the head. Layer sizes are read from the
weights file (a tiny test head works the same way), and the head runs on CPU: it is a few small
matrix products per image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from ieiw.filters.scoring import ImageRef, ImageScorer, PairView, ScoreContext, distinct_images
from ieiw.schemas.config import BackendConfig, ModelPath
from ieiw.schemas.lazy import locked_cached_property
from ieiw.schemas.registry import register_backend

# Layers of the improved head that hold weights (the others are Dropout), in order.
IMPROVED_LINEAR = (0, 2, 4, 6, 7)
IMPROVED_DROPOUT = {1: 0.2, 3: 0.2, 5: 0.1}
OFFICIAL_FILES = {"v1": "sa_0_4_vit_l_14_linear.pth", "improved": "sac+logos+ava1-l14-linearMSE.pth"}


class LaionHeadConfig(BackendConfig):
    """``{backend: laion, head: improved, weights: models/sac+logos+ava1-l14-linearMSE.pth}``."""

    kind: ClassVar[str] = "scorer"
    embedded: ClassVar[bool] = False
    fills: ClassVar[tuple[str, ...]] = ("source_aesthetic", "target_aesthetic")

    backend: Literal["laion"] = "laion"
    head: Literal["v1", "improved"]
    weights: ModelPath

    def label(self) -> str:
        return f"laion-{self.head}"

    def model_id(self) -> str | None:
        return str(self.weights) if self.weights is not None else None


class HeadLoadError(ValueError):
    """A weights file that is missing or not in the head's official key layout."""


def load_head(head: str, path: Path) -> Any:
    """The head as a CPU ``torch.nn.Module`` in eval mode, its layer sizes read from ``path``."""
    import torch
    from torch import nn

    if not path.is_file():
        raise HeadLoadError(f"LAION {head} head: weights file {path} not found (expected {OFFICIAL_FILES[head]})")
    # The official improved head was saved from cuda:0: map_location makes it load on a CPU-only machine.
    state = torch.load(path, map_location="cpu", weights_only=True)
    if head == "v1":
        expected = {"weight", "bias"}
    else:
        expected = {f"layers.{i}.{p}" for i in IMPROVED_LINEAR for p in ("weight", "bias")}
    if not isinstance(state, dict) or set(state) != expected:
        found = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise HeadLoadError(f"LAION {head} head: {path} does not hold the keys {sorted(expected)}; found {found}")

    if head == "v1":
        out_dim, in_dim = state["weight"].shape
        module: nn.Module = nn.Linear(in_dim, out_dim)
    else:
        layers: list[nn.Module] = []
        for index in range(max(IMPROVED_LINEAR) + 1):
            if index in IMPROVED_DROPOUT:
                layers.append(nn.Dropout(IMPROVED_DROPOUT[index]))
            else:
                out_dim, in_dim = state[f"layers.{index}.weight"].shape
                layers.append(nn.Linear(in_dim, out_dim))
        module = nn.Sequential(*layers)
        # The official MLP keeps this Sequential as its `layers` attribute; the keys differ by that prefix.
        state = {key.removeprefix("layers."): value for key, value in state.items()}
    module.load_state_dict({key: value.float() for key, value in state.items()})
    return module.eval()


def head_input_dim(module: Any) -> int:
    """The embedding length the head takes (its first Linear's input)."""
    first = module[0] if hasattr(module, "__getitem__") else module
    return int(first.in_features)


@register_backend("scorer", "laion", LaionHeadConfig)
class LaionAestheticScorer(ImageScorer):
    """Scores every distinct image of a call with one batched forward pass of the head."""

    family = "aesthetic"

    @locked_cached_property
    def head(self) -> Any:
        """The head, loaded on first score."""
        if self.config.weights is None:
            raise HeadLoadError(f"LAION {self.config.head} head: no `weights:` file given")
        return load_head(self.config.head, Path(self.config.weights))

    def score_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """(N, dim) embeddings -> (N,) scores; rows are L2-normalised here in float32."""
        import torch

        head = self.head
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise ValueError(f"expected (N, dim) embeddings, got shape {vectors.shape}")
        expected = head_input_dim(head)
        if vectors.shape[1] != expected:
            raise ValueError(
                f"LAION {self.config.head} head expects {expected}-d embeddings but the stored embeddings are "
                f"{vectors.shape[1]}-d: the head needs CLIP ViT-L/14 features (scoring.features: "
                "{backend: clip, model: openai/clip-vit-large-patch14})"
            )
        if len(vectors) == 0:
            return np.zeros(0, np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.maximum(norms, 1e-12)
        with torch.inference_mode():
            out = head(torch.from_numpy(vectors))
        return out.reshape(len(vectors)).numpy().astype(np.float32)

    def score_image(self, image: ImageRef, context: ScoreContext) -> float:
        return float(self.score_vectors(context.embedding(image)[None, :])[0])

    def score(self, pairs: Sequence[PairView], context: ScoreContext) -> list[dict[str, float | None]]:
        images = distinct_images(pairs)
        if not images:
            return []
        values = self.score_vectors(np.stack([context.embedding(image) for image in images]))
        by_key = {image.key: float(value) for image, value in zip(images, values, strict=True)}
        return [
            {f"source_{self.family}": by_key[p.source.key], f"target_{self.family}": by_key[p.target.key]}
            for p in pairs
        ]
