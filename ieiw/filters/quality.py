"""Image quality scorers. The embedded one is a documented hand-made proxy, not an aesthetic model.

``ProxyQualityScorer`` ("proxy-v1") stands in for the LAION aesthetics predictor on machines without
CLIP weights. It scores an image on a 1-10 scale from four classical measures, each mapped to [0, 1]
on an image downscaled to at most 256 px on its long side:

- sharpness (weight 0.35): log(1 + variance of the Laplacian of the grey image) / log(1 + 1000);
- exposure (0.25): 1 - 2 |mean luminance - 0.5|, minus the fraction of clipped (<2 or >253) pixels;
- colourfulness (0.20): Hasler and Suesstrunk's M (2003) / 100;
- contrast (0.20): standard deviation of luminance / 0.25.

It ranks blurry, flat, badly exposed or grey images low, as the real predictor tends to, but it
knows nothing of composition or content: thresholds tuned on it do not transfer to LAION scores.
Every row it scores says ``scores.backend = "proxy-v1"`` and ``scores.embedded = true``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import cv2
import numpy as np

from ieiw.filters.scoring import ImageRef, ImageScorer, ScoreContext
from ieiw.imageio import downscale
from ieiw.schemas.config import BackendConfig
from ieiw.schemas.registry import register_backend


class ProxyScorerConfig(BackendConfig):
    """`scoring.scorers: [{backend: proxy}]`: the embedded stand-in for the LAION aesthetics head."""

    kind: ClassVar[str] = "scorer"
    embedded: ClassVar[bool] = True
    fills: ClassVar[tuple[str, ...]] = ("source_aesthetic", "target_aesthetic")

    backend: Literal["proxy"] = "proxy"

    def label(self) -> str:
        return "proxy-v1"


@register_backend("scorer", "proxy", ProxyScorerConfig)
class ProxyQualityScorer(ImageScorer):
    family = "aesthetic"

    def __init__(self, config: ProxyScorerConfig | None = None):
        super().__init__(config or ProxyScorerConfig())

    def components(self, pixels: np.ndarray) -> dict[str, float]:
        small = downscale(pixels, 256).astype(np.float32)
        grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        sharpness = np.log1p(cv2.Laplacian(grey, cv2.CV_32F).var()) / np.log1p(1000.0)
        luminance = grey / 255.0
        clipped = float(((grey < 2) | (grey > 253)).mean())
        exposure = 1.0 - 2.0 * abs(float(luminance.mean()) - 0.5) - clipped
        r, g, b = small[..., 0], small[..., 1], small[..., 2]
        rg, yb = r - g, 0.5 * (r + g) - b
        colourfulness = (np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())) / 100.0
        contrast = float(luminance.std()) / 0.25
        clip = lambda v: float(min(1.0, max(0.0, v)))  # noqa: E731
        return {
            "sharpness": clip(sharpness),
            "exposure": clip(exposure),
            "colourfulness": clip(colourfulness),
            "contrast": clip(contrast),
        }

    def score_pixels(self, pixels: np.ndarray) -> float:
        c = self.components(pixels)
        combined = 0.35 * c["sharpness"] + 0.25 * c["exposure"] + 0.20 * c["colourfulness"] + 0.20 * c["contrast"]
        return 1.0 + 9.0 * combined

    def score_image(self, image: ImageRef, context: ScoreContext) -> float:
        return self.score_pixels(context.pixels(image))
