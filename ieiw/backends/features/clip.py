"""CLIP through ``transformers``: the paper's feature extractor (``scoring.features: {backend: clip}``).

The LAION aesthetics heads, removal verification, zero-shot labels and the exemplar database read
OpenAI CLIP ViT-L/14 embeddings (``openai/clip-vit-large-patch14``). This backend loads any CLIP
checkpoint in the ``transformers`` layout, image and text towers both, so text prompts and images
share one space.

Weights are never downloaded: ``model`` is a local folder (``save_pretrained`` layout) or a hub id
that must already be in the local Hugging Face cache (``local_files_only=True`` everywhere). A build
that names a missing model fails at first use with one error naming it.

Embeddings are the projected pooled outputs (what OpenAI's ``encode_image`` / ``encode_text``
return), L2-normalised, as float32. Since transformers 5 (PR huggingface/transformers#42564)
``CLIPModel.get_image_features`` / ``get_text_features`` return a ``BaseModelOutputWithPooling``
whose ``pooler_output`` is the projected embedding; older releases return the tensor itself.
:func:`_pooled` accepts both.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from ieiw.backends.features.base import ImageFeatures
from ieiw.backends.models import HubModelFields, ModelNotFoundError, cached_commit, looks_like_path, torch_device
from ieiw.schemas.config import BackendConfig
from ieiw.schemas.registry import register_backend


class ClipFeaturesConfig(HubModelFields, BackendConfig):
    """``scoring.features: {backend: clip, model: openai/clip-vit-large-patch14}``."""

    kind: ClassVar[str] = "features"
    embedded: ClassVar[bool] = False
    runtime_fields: ClassVar[frozenset[str]] = frozenset({"device", "batch_size", "dtype"})

    backend: Literal["clip"] = "clip"
    device: str = Field("auto", description="'auto' (cuda when available), 'cpu', 'cuda', 'cuda:1', ...")
    batch_size: int = Field(32, ge=1)
    dtype: Literal["auto", "float32", "float16"] = Field("auto", description="auto: float16 on CUDA, else float32")

    def label(self) -> str:
        return f"clip:{self.model_name()}"

    def preflight(self) -> list[str]:
        if self.is_local() or cached_commit(self.model, self.revision) is not None:
            return self.digest_problems()
        return [f"features backend clip: model {self.model} is neither a local folder nor in the local Hugging Face"
                " cache (weights are never downloaded: `huggingface-cli download` it, or save_pretrained a folder)"]


@register_backend("features", "clip", ClipFeaturesConfig)
class ClipFeatures(ImageFeatures):
    """CLIP image and text towers; loads the model here (``config.create()`` runs on first use)."""

    has_text = True

    def __init__(self, config: ClipFeaturesConfig):
        super().__init__(config)
        import torch
        from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

        self.torch = torch
        self.device = torch_device(config.device)
        if config.dtype == "auto":
            self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        else:
            self.dtype = getattr(torch, config.dtype)
        self.batch_size = config.batch_size

        source = str(Path(config.model).expanduser()) if config.is_local() else config.model
        if not config.is_local() and looks_like_path(config.model):
            raise self._missing(None)
        kwargs: dict[str, Any] = {"local_files_only": True}
        if config.revision and not config.is_local():
            kwargs["revision"] = config.revision
        try:
            self.model = CLIPModel.from_pretrained(source, dtype=self.dtype, **kwargs)
            self.processor = CLIPImageProcessor.from_pretrained(source, **kwargs)
            self.tokenizer = CLIPTokenizer.from_pretrained(source, **kwargs)
        except (OSError, ValueError) as exc:  # OSError: not found; ValueError: not a valid hub id
            if config.is_local() and not isinstance(exc, OSError):
                raise  # a local folder that exists but does not load: its own error says why
            raise self._missing(exc) from exc
        self.model.to(self.device).eval()
        self._dim = int(self.model.config.projection_dim)
        text_positions = self.model.config.text_config.max_position_embeddings
        self.max_length = int(min(self.tokenizer.model_max_length, text_positions))

    def _missing(self, exc: Exception | None) -> ModelNotFoundError:
        config = self.config
        where = f"{config.model!r}" + (f" (revision {config.revision})" if config.revision else "")
        detail = f": {exc}" if exc is not None else ""
        return ModelNotFoundError(
            f"CLIP model {where} not found: it must be a local model folder (save_pretrained layout) or a hub id "
            f"already in the local Hugging Face cache (weights are never downloaded){detail}"
        )

    @property
    def dim(self) -> int:
        return self._dim

    def _normalised(self, output: Any) -> np.ndarray:
        vectors = _pooled(output).float()
        vectors = vectors / vectors.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return vectors.cpu().numpy().astype(np.float32)

    def image_features(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """RGB uint8 HWC images -> (N, dim) float32, L2-normalised, in batches of ``batch_size``."""
        torch = self.torch
        out = [np.zeros((0, self.dim), np.float32)]
        for start in range(0, len(images), self.batch_size):
            # Decoded shard images may be read-only views; torch.from_numpy warns on those, so copy them.
            batch = [image if image.flags.writeable and image.flags.c_contiguous else np.array(image)
                     for image in images[start : start + self.batch_size]]
            pixels = self.processor(images=batch, return_tensors="pt")["pixel_values"]
            with torch.inference_mode():
                output = self.model.get_image_features(pixel_values=pixels.to(self.device, self.dtype))
            out.append(self._normalised(output))
        return np.concatenate(out)

    def text_features(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> (N, dim) float32, L2-normalised, in the image space (truncated to the text tower's length)."""
        torch = self.torch
        out = [np.zeros((0, self.dim), np.float32)]
        texts = list(texts)
        for start in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(texts[start : start + self.batch_size], padding=True, truncation=True,
                                    max_length=self.max_length, return_tensors="pt")
            with torch.inference_mode():
                output = self.model.get_text_features(input_ids=tokens["input_ids"].to(self.device),
                                                      attention_mask=tokens["attention_mask"].to(self.device))
            out.append(self._normalised(output))
        return np.concatenate(out)


def _pooled(output: Any) -> Any:
    """The projected embedding from ``get_*_features``: a tensor (transformers 4) or its ``pooler_output``
    (transformers 5 returns ``BaseModelOutputWithPooling``)."""
    pooled = getattr(output, "pooler_output", None)
    return output if pooled is None else pooled
