"""Inpainting backends behind one small interface.

``Inpainter.inpaint(images, masks)`` takes RGB ``uint8`` HWC images and 0/1 ``uint8`` masks (1 =
fill) and returns RGB images of the same sizes. It is batched so GPU backends (LaMa TorchScript, an
IOPaint server) can slot in later; the embedded OpenCV backend loops.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import cv2
import numpy as np

from ieiw.schemas.config import InpaintConfig


class Inpainter(abc.ABC):
    name: str  # recorded in every row's builder.backend
    embedded: bool  # True for a CPU stand-in for the paper's model
    model: str | None = None

    @abc.abstractmethod
    def inpaint(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Fill the masked pixels of each image."""


class OpenCVInpainter(Inpainter):
    """``cv2.inpaint`` (Telea or Navier-Stokes): the embedded stand-in for LaMa. Good on smooth
    backgrounds, smears texture; rows it makes say ``embedded: true``."""

    embedded = True

    def __init__(self, method: str = "telea", radius: int = 5):
        self.flag = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}[method]
        self.radius = radius
        self.name = f"opencv-{method}"

    def inpaint(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> list[np.ndarray]:
        out = []
        for image, mask in zip(images, masks, strict=True):
            filled = cv2.inpaint(np.ascontiguousarray(image), (mask > 0).astype(np.uint8) * 255, self.radius, self.flag)
            out.append(filled)
        return out


def make_inpainter(config: InpaintConfig) -> Inpainter:
    if config.backend == "opencv":
        return OpenCVInpainter(config.method, config.radius)
    raise ValueError(f"unknown inpaint backend {config.backend!r}")
