"""What every model backend shares: where its weights are, which device it runs on, what a missing model says.

Models are named by a local folder or a Hugging Face hub id that must already be cached (never downloaded).

One mixin for every backend config that loads a ``transformers`` / ``diffusers`` model (CLIP, Paint-by-
Example): the same rules for telling a folder from a hub id, naming the model in rows and labels, and
fingerprinting it (a folder's content digest, or the hub revision / cached snapshot commit).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from ieiw.schemas.filehash import path_digest


def looks_like_path(model: str) -> bool:
    """Absolute, home or dot-relative names, or names that exist on disk, are folders, not hub ids."""
    return Path(model).exists() or model.startswith(("/", "./", "../", "~", ".\\")) or model.count("/") > 1


def cached_snapshot(model: str, revision: str | None) -> Path | None:
    """The locally cached snapshot folder of hub id ``model``, without touching the network; None if absent."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, revision=revision, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (or not a valid id)
        return None


def cached_commit(model: str, revision: str | None) -> str | None:
    """The commit of the locally cached snapshot of hub id ``model`` (its folder's name), or None."""
    snapshot = cached_snapshot(model, revision)
    return snapshot.name if snapshot is not None else None


class HubModelFields(BaseModel):
    """``model`` (a folder or a cached hub id) and ``revision``, with the naming and digest rules."""

    model: str = Field(description="a local model folder, or a hub id already in the local HF cache")
    revision: str | None = Field(None, description="hub revision (branch, tag or commit); hub ids only")

    def is_local(self) -> bool:
        return Path(self.model).expanduser().exists()

    def model_name(self) -> str:
        name = Path(self.model).expanduser().name if self.is_local() else self.model.rstrip("/").split("/")[-1]
        return name + (f"@{self.revision}" if self.revision else "")

    def model_id(self) -> str | None:
        return self.model + (f"@{self.revision}" if self.revision else "")

    def model_digests(self) -> dict[str, str | None]:
        """A local folder's content digest; for a hub id its revision (or the cached snapshot's commit),
        so replacing the weights by either route changes the fingerprint."""
        if self.is_local():
            return {"model": path_digest(Path(self.model).expanduser())}
        return {"model": self.revision or cached_commit(self.model, None)}

    def model_files(self) -> dict[str, Path | None]:
        """The folder the weights load from (a pinned ``sha256:`` is its content digest, as ``ieiw`` computes
        it: ``docs/config.md``, "Pinning model files")."""
        return {"model": self.model_folder()}

    def model_folder(self) -> Path | None:
        """The local folder the model loads from, or None when it is nowhere on this machine."""
        if self.is_local():
            return Path(self.model).expanduser()
        if looks_like_path(self.model):
            return None
        return cached_snapshot(self.model, self.revision)


class ModelNotFoundError(FileNotFoundError):
    """A model that is neither a local folder nor in the local Hugging Face cache."""


def torch_device(name: str) -> Any:
    """The torch device a model backend's ``device`` setting names; ``auto`` = CUDA when there is one."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else torch.device(name)
