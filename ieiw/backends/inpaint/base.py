"""Inpainting backends behind one small interface.

``Inpainter.inpaint(images, masks)`` takes RGB ``uint8`` HWC images and 0/1 ``uint8`` masks (1 =
fill) and returns RGB images of the same sizes. It is batched so GPU backends (LaMa TorchScript, an
IOPaint server) can batch; the embedded OpenCV backend loops.

A backend is a config model (its own fields only, registered under ``inpaint.<name>``) plus the class
its ``create()`` builds. The config alone answers what rows and fingerprints need (label, model id,
output parameters), so a run that only scores or selects never constructs an inpainter.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import numpy as np

from ieiw.schemas.config import BackendConfig


class Inpainter(abc.ABC):
    """Made from its config by ``config.create()``; loads its model (if any) in ``__init__``."""

    def __init__(self, config: BackendConfig):
        self.config = config
        self.name = config.label()
        self.embedded = config.embedded
        self.model = config.model_record()

    @abc.abstractmethod
    def inpaint(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Fill the masked pixels of each image."""
