"""``cv2.inpaint``: the embedded inpainting backend (``inpaint.opencv``), CPU, no weights."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import cv2
import numpy as np
from pydantic import Field

from ieiw.backends.inpaint.base import Inpainter
from ieiw.schemas.config import BackendConfig
from ieiw.schemas.registry import register_backend


class OpenCVInpaintConfig(BackendConfig):
    """``cv2.inpaint``: the embedded stand-in for LaMa (CPU, no weights)."""

    kind: ClassVar[str] = "inpaint"
    embedded: ClassVar[bool] = True

    backend: Literal["opencv"] = "opencv"
    method: Literal["telea", "ns"] = Field("telea", description="Telea (fast marching) or Navier-Stokes")
    radius: int = Field(5, ge=1, description="neighbourhood radius in px")

    def label(self) -> str:
        return f"opencv-{self.method}"

    def row_params(self) -> dict[str, Any]:
        # The method is already in the label (and so in the id); keeping the v1 recipe keeps v1's ids.
        return {"radius": self.radius}


@register_backend("inpaint", "opencv", OpenCVInpaintConfig)
class OpenCVInpainter(Inpainter):
    """Good on smooth backgrounds, smears texture; rows it makes say ``embedded: true``."""

    def __init__(self, config: OpenCVInpaintConfig):
        super().__init__(config)
        self.flag = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}[config.method]
        self.radius = config.radius

    def inpaint(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> list[np.ndarray]:
        out = []
        for image, mask in zip(images, masks, strict=True):
            filled = cv2.inpaint(np.ascontiguousarray(image), (mask > 0).astype(np.uint8) * 255, self.radius, self.flag)
            out.append(filled)
        return out
