"""Export: a diffusers pipeline folder that ``from_pretrained`` loads as is.

edit/align stages -> ``StableDiffusionInstructPix2PixPipeline`` (8-channel UNet); adapt ->
``StableDiffusionPipeline``. The UNet carries the EMA weights when EMA is on (what the official
code samples with). The scheduler is Euler ancestral with linspace spacing, the official sampler.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any


def export_pipeline(
    folder: str | Path,
    unet: Any,
    vae: Any,
    text_encoder: Any,
    tokenizer: Any,
    noise_scheduler: Any,
    ema: Any | None = None,
    stage: str = "edit",
) -> Path:
    """Write the pipeline; ``unet`` is copied so the caller's training weights stay untouched."""
    from diffusers import (
        EulerAncestralDiscreteScheduler,
        StableDiffusionInstructPix2PixPipeline,
        StableDiffusionPipeline,
    )

    unet = copy.deepcopy(unet).to("cpu")
    if ema is not None:
        ema.copy_to(unet.parameters())
    scheduler = EulerAncestralDiscreteScheduler.from_config(noise_scheduler.config, timestep_spacing="linspace")
    cls = StableDiffusionPipeline if stage == "adapt" else StableDiffusionInstructPix2PixPipeline
    pipe = cls(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    folder = Path(folder)
    pipe.save_pretrained(folder)
    return folder
