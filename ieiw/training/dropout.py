"""Conditioning dropout: which samples train without their instruction, their source image, or both.

One uniform draw per sample is cut into intervals [text only | both | image only | keep], so the three
cases are exclusive and their rates are exactly the configured probabilities. Dropping makes the
model learn the unconditional branches that classifier-free guidance needs at inference.

- ``instructdiffusion`` (official code, default): 7.5% null text, 7.5% zeroed source latent, never both.
- ``instructpix2pix`` (diffusers' example): 5% text only, 5% both, 5% image only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ieiw.training.config import DropoutConfig


@dataclass(frozen=True)
class DropoutProbs:
    text_only: float
    image_only: float
    both: float

    def __post_init__(self) -> None:
        if min(self.text_only, self.image_only, self.both) < 0 or self.text_only + self.image_only + self.both > 1:
            raise ValueError(f"dropout probabilities {self} must be >= 0 and sum to <= 1")


SCHEMES = {
    "instructdiffusion": DropoutProbs(text_only=0.075, image_only=0.075, both=0.0),
    "instructpix2pix": DropoutProbs(text_only=0.05, image_only=0.05, both=0.05),
}


def dropout_probs(config: DropoutConfig) -> DropoutProbs:
    if config.scheme == "custom":
        return DropoutProbs(config.text_only, config.image_only, config.both)  # type: ignore[arg-type]
    return SCHEMES[config.scheme]


def draw_dropout(
    batch_size: int, probs: DropoutProbs, device: torch.device | str = "cpu", generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean masks ``(drop_text, drop_image)`` of shape ``[batch_size]``.

    Uses the global torch RNG unless ``generator`` is given, so accelerate's checkpoint restores it.
    """
    u = torch.rand(batch_size, generator=generator, device=device)
    a = probs.text_only
    b = a + probs.both
    c = b + probs.image_only
    drop_text = u < b
    drop_image = (u >= a) & (u < c)
    return drop_text, drop_image
