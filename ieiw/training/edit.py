"""Editing an image with a trained model: the official three-pass guidance, or diffusers' pipeline.

The official InstructDiffusion sampler runs the UNet three times per step, on (text, image),
(null text, image) and (text, zero image), and combines the noise predictions as

    0.5 * (img_cond + txt_cond) + t * (full - img_cond) + i * (full - txt_cond)

with t = text guidance (5.0) and i = image guidance (1.25), over Euler-ancestral steps (100). The
official code combines denoised images (k-diffusion); the weights sum to 1, so combining epsilon
predictions, as here, is the same thing. diffusers' ``StableDiffusionInstructPix2PixPipeline`` uses
InstructPix2Pix's formula instead (``sampler="diffusers"``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from ieiw.imageio import decode_rgb
from ieiw.training.data import ClipTokenize


def official_size(width: int, height: int, resolution: int) -> tuple[int, int]:
    """The official edit CLI's resize: longer side ~resolution, both sides multiples of 64."""
    factor = resolution / max(width, height)
    factor = math.ceil(min(width, height) * factor / 64) * 64 / min(width, height)
    return max(64, int((width * factor) // 64) * 64), max(64, int((height * factor) // 64) * 64)


def fit_official(image: Image.Image, resolution: int) -> Image.Image:
    """The official ``edit_cli.py`` input: ``ImageOps.fit`` (centre crop to the target aspect, then LANCZOS) to
    :func:`official_size` -- never a stretch, which would change the picture's proportions."""
    return ImageOps.fit(image, official_size(*image.size, resolution), method=Image.LANCZOS)


def fit_back(result: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The official output: the edit fitted back to the input's own size (``ImageOps.fit``, LANCZOS)."""
    return result if result.size == size else ImageOps.fit(result, size, method=Image.LANCZOS)


def load_pipeline(folder: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> Any:
    """An exported folder, loaded by diffusers as is."""
    from diffusers import StableDiffusionInstructPix2PixPipeline

    folder = Path(folder)
    if not (folder / "model_index.json").exists():
        raise FileNotFoundError(f"{folder}: not an exported pipeline folder (no model_index.json)")
    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(folder, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def _to_tensor(image: Image.Image, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)[None].to(device=device, dtype=dtype)


def _to_image(decoded: torch.Tensor) -> Image.Image:
    array = ((decoded[0].float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array)


@torch.no_grad()
def edit_official(
    unet: Any,
    vae: Any,
    text_encoder: Any,
    tokenizer: Any,
    scheduler_config: Any,
    image: Image.Image,
    instruction: str,
    steps: int = 100,
    text_guidance: float = 5.0,
    image_guidance: float = 1.25,
    seed: int = 0,
) -> Image.Image:
    """Edit ``image`` (already at a size the VAE and UNet accept) with the three-pass formula."""
    from diffusers import EulerAncestralDiscreteScheduler

    device, dtype = unet.device, unet.dtype
    # Euler ancestral with linspace spacing = k-diffusion's sample_euler_ancestral over CompVis sigmas.
    scheduler = EulerAncestralDiscreteScheduler.from_config(scheduler_config, timestep_spacing="linspace")
    scheduler.set_timesteps(steps, device=device)
    tokenize = ClipTokenize(tokenizer)
    ids = torch.stack([tokenize(instruction), tokenize("")]).to(text_encoder.device)
    cond, null = text_encoder(ids)[0].to(dtype).chunk(2)
    source = vae.encode(_to_tensor(image, vae.device, vae.dtype)).latent_dist.mode().to(dtype)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    latents = torch.randn(source.shape, generator=generator, dtype=torch.float32).to(device, dtype)
    latents = latents * scheduler.init_noise_sigma
    text_in = torch.cat([cond, null, cond])
    image_in = torch.cat([source, source, torch.zeros_like(source)])
    for t in scheduler.timesteps:
        scaled = scheduler.scale_model_input(latents, t)
        model_in = torch.cat([scaled.repeat(3, 1, 1, 1), image_in], dim=1)
        full, img_cond, txt_cond = unet(model_in, t, text_in, return_dict=False)[0].chunk(3)
        eps = 0.5 * (img_cond + txt_cond) + text_guidance * (full - img_cond) + image_guidance * (full - txt_cond)
        latents = scheduler.step(eps, t, latents, generator=generator, return_dict=False)[0]
    decoded = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
    return _to_image(decoded)


def edit_file(
    model: str | Path,
    image_path: str | Path,
    instruction: str,
    out_path: str | Path,
    steps: int = 100,
    text_guidance: float = 5.0,
    image_guidance: float = 1.25,
    seed: int = 0,
    resolution: int = 512,
    sampler: str = "official",
    device: str | None = None,
) -> Path:
    """Load an exported pipeline, edit one image file, write the result; returns the output path."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    pipe = load_pipeline(model, device, dtype)
    original = Image.fromarray(decode_rgb(Path(image_path).read_bytes()))  # a user's photo: shown upright
    image = fit_official(original, resolution)
    if sampler == "official":
        result = edit_official(
            pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.scheduler.config,
            image, instruction, steps, text_guidance, image_guidance, seed,
        )
    elif sampler == "diffusers":
        generator = torch.Generator(device="cpu").manual_seed(seed)
        result = pipe(
            instruction, image=image, num_inference_steps=steps, guidance_scale=text_guidance,
            image_guidance_scale=image_guidance, generator=generator,
        ).images[0]
    else:
        raise ValueError(f"sampler {sampler!r}: use official or diffusers")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fit_back(result, original.size).save(out_path)
    return out_path
