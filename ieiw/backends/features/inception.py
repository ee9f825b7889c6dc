"""FID Inception pool3 features: what KNN-GIQA measures distances on (``backend: fid-inception``).

pytorch-fid's ``InceptionV3([3])`` with the TensorFlow FID weights ported to PyTorch
(``pt_inception-2015-12-05-6726825d.pth``, the state dict ``pytorch_fid.inception.fid_inception_v3``
loads). As in pytorch-fid, images become [0, 1] tensors, are resized bilinearly to 299x299
(``resize_input``) and scaled to [-1, 1] (``normalize_input``); the output is the 2048-d average-pool
feature of each image.

Rows are the raw pool3 activations, float32, **not** L2-normalised: GIQA compares them with L1
distances (docs/formats.md, "KNN-GIQA"), and the pool3 scale is part of what it measures.

The weights come from a local file (``weights:``); nothing is downloaded.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from ieiw.backends.features.base import ImageFeatures
from ieiw.backends.models import torch_device
from ieiw.schemas.config import BackendConfig, ModelPath
from ieiw.schemas.registry import register_backend

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
POOL3_DIM = 2048
INPUT_SIZE = 299

# The patch below swaps a module global of pytorch_fid.inception; two threads building at once must
# not see each other's file.
_build_lock = threading.Lock()


class FidInceptionConfig(BackendConfig):
    """``{backend: fid-inception, weights: models/pt_inception-2015-12-05-6726825d.pth}``."""

    kind: ClassVar[str] = "features"
    embedded: ClassVar[bool] = False
    runtime_fields: ClassVar[frozenset[str]] = frozenset({"device", "batch_size"})

    backend: Literal["fid-inception"] = "fid-inception"
    weights: ModelPath = Field(description=f"pytorch-fid's {FID_WEIGHTS_FILE} (its FID Inception state dict)")
    device: str = Field("auto", description="'auto' (cuda when available), 'cpu', 'cuda', ...")
    batch_size: int = Field(32, ge=1)

    def label(self) -> str:
        return "fid-inception-pool3"

    def model_id(self) -> str | None:
        return str(self.weights) if self.weights is not None else None


def build_fid_inception(weights: Path) -> Any:
    """pytorch-fid's ``InceptionV3([3])`` (pool3, FID weights) with its state dict read from ``weights``.

    ``fid_inception_v3()`` only knows how to fetch its weights, with ``load_state_dict_from_url``
    (a download, or torch hub's cache). For the duration of construction that name is replaced by a
    function returning the local file's state dict, so the network is never touched and the real
    pytorch-fid structure (its patched FID Inception blocks) is used unchanged.
    """
    import torch
    from pytorch_fid import inception as fid

    if weights is None or not Path(weights).is_file():
        raise FileNotFoundError(f"FID Inception weights file {weights} not found (pytorch-fid's {FID_WEIGHTS_FILE})")

    def local_state_dict(*_args: Any, **_kwargs: Any) -> Any:
        return torch.load(weights, map_location="cpu", weights_only=True)

    with _build_lock:
        original = fid.load_state_dict_from_url
        fid.load_state_dict_from_url = local_state_dict
        try:
            model = fid.InceptionV3([fid.InceptionV3.BLOCK_INDEX_BY_DIM[POOL3_DIM]], resize_input=True,
                                    normalize_input=True)
        finally:
            fid.load_state_dict_from_url = original
    return model.eval()


@register_backend("features", "fid-inception", FidInceptionConfig)
class FidInceptionFeatures(ImageFeatures):
    """Raw 2048-d pool3 features (see the module docstring); no text tower."""

    has_text = False

    def __init__(self, config: FidInceptionConfig):
        super().__init__(config)
        import torch

        self.torch = torch
        self.device = torch_device(config.device)
        self.batch_size = config.batch_size
        self.model = build_fid_inception(Path(config.weights)).to(self.device)  # type: ignore[arg-type]

    @property
    def dim(self) -> int:
        return POOL3_DIM

    def _prepare(self, image: np.ndarray) -> Any:
        """One RGB uint8 HWC image -> (3, 299, 299) float in [0, 1], resized as pytorch-fid's forward does
        (bilinear, align_corners=False); done per image so images of any size batch together."""
        torch = self.torch
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div(255.0)
        tensor = tensor.unsqueeze(0).to(self.device)
        resized = torch.nn.functional.interpolate(tensor, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear",
                                                  align_corners=False)
        return resized[0]

    def image_features(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """RGB uint8 HWC images -> (N, 2048) float32 raw pool3 features (not normalised)."""
        torch = self.torch
        out = [np.zeros((0, POOL3_DIM), np.float32)]
        for start in range(0, len(images), self.batch_size):
            with torch.inference_mode():
                batch = torch.stack([self._prepare(image) for image in images[start : start + self.batch_size]])
                # The model's own resize is then 299 -> 299, an identity.
                pool3 = self.model(batch)[0]
            out.append(pool3.reshape(len(batch), POOL3_DIM).float().cpu().numpy())
        return np.concatenate(out).astype(np.float32, copy=False)
