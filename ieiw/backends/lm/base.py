"""One interface for a chat model, local or behind HTTP, and the settings that name one.

``chat(conversations, ...)`` takes OpenAI-style message lists (``{"role": "user", "content": "..."}``; for a
vision-language model ``content`` may be a list of ``{"type": "text", "text": ...}`` and ``{"type":
"image"}`` parts, the images passed alongside) and returns ``n`` answers per conversation. ``seed`` makes
sampling repeatable: a local model seeds torch before each call; an endpoint gets OpenAI's ``seed``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from ieiw.backends.lm.constrain import Pattern
from ieiw.backends.models import cached_commit, looks_like_path
from ieiw.schemas.config import StrictModel
from ieiw.schemas.filehash import path_digest

Messages = list[dict[str, Any]]


class ChatModel(abc.ABC):
    """A model that answers chats; :meth:`describe` is its provenance (what rows and files record)."""

    @abc.abstractmethod
    def chat(self, conversations: Sequence[Messages], *, n: int = 1, max_new_tokens: int = 64,
             temperature: float = 0.0, top_p: float = 1.0, seed: int = 0, pattern: Pattern | None = None,
             images: Sequence[Sequence[np.ndarray]] | None = None) -> list[list[str]]:
        """``n`` answers for each conversation (``images``: each conversation's images, RGB uint8)."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """{model, revision (a folder's content digest, a hub commit), endpoint}."""


class LanguageModelSettings(StrictModel):
    """Which model answers: a local one (``model``: a folder or a hub id already in the local Hugging Face
    cache; never downloaded) or an OpenAI-compatible ``endpoint`` (``model`` is then the served model's
    name, and the key, if any, is read from the environment variable ``api_key_env``)."""

    model: str = Field(description="a local model folder or cached hub id; with endpoint: the served model's name")
    revision: str | None = Field(None, description="hub revision (local hub ids only)")
    endpoint: str | None = Field(None, description="base URL of an OpenAI-compatible server, e.g. http://gpu1:8000/v1")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the endpoint's key")
    device: str = Field("auto", description="local models: 'auto' (cuda when available), 'cpu', 'cuda:1', ...")
    dtype: str = Field("auto", description="local models: auto (bfloat16 on CUDA, else float32), float16, ...")
    timeout_s: float = Field(300.0, gt=0, description="endpoint: seconds per request")

    @model_validator(mode="after")
    def _endpoint_url(self) -> LanguageModelSettings:
        if self.endpoint is not None and not self.endpoint.startswith(("http://", "https://")):
            raise ValueError(f"endpoint {self.endpoint!r}: expected an http:// or https:// URL")
        return self

    def is_local_folder(self) -> bool:
        return self.endpoint is None and Path(self.model).expanduser().exists()

    def revision_id(self) -> str | None:
        """What identifies the weights: a local folder's content digest, a hub revision or cached commit;
        None for an endpoint (the server names its model; record ``model`` and ``endpoint``)."""
        if self.endpoint is not None:
            return None
        if self.is_local_folder():
            return "sha256:" + path_digest(Path(self.model).expanduser())
        return self.revision or cached_commit(self.model, None)

    def describe(self) -> dict[str, Any]:
        return {"model": self.model, "revision": self.revision_id(), "endpoint": self.endpoint}

    def problems(self) -> list[str]:
        """Why this model cannot be used here (checked before any work starts)."""
        if self.endpoint is not None:
            return []
        if self.is_local_folder():
            return []
        if looks_like_path(self.model) or cached_commit(self.model, self.revision) is None:
            return [(f"model {self.model!r} is neither a local folder nor in the local Hugging Face cache "
                     "(weights are never downloaded: `huggingface-cli download` it, or save_pretrained a folder)")]
        return []
