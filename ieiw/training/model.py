"""The InstructDiffusion model: SD1.5 components, the 8-channel UNet, and the training losses.

Parity with the official code (docs/formats.md, "InstructDiffusion's training-code conventions"):
scaled-linear DDPM betas 0.00085..0.012 over 1000 steps, epsilon prediction with MSE, source latent = VAE ``latent_dist.mode()`` unscaled, target latent
= a posterior sample times the VAE scaling factor (0.18215 for SD1.5).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ieiw.training.config import Config, EmaConfig, ModelConfig
from ieiw.training.data import normalize
from ieiw.training.dropout import DropoutProbs, draw_dropout


class TrainingSetupError(RuntimeError):
    """A problem the user fixes (missing weights, no GPU, no data): printed as one line, no traceback."""


TINY_HINT = "for a CPU smoke run use CONFIG=configs/train.tiny.yaml"


@dataclass
class Components:
    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    noise_scheduler: Any


def _looks_local(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or Path(name).exists() or name.count("/") != 1


def resolve_pretrained(model: ModelConfig) -> str:
    """The diffusers folder or hub id to load; builds the tiny model when the config asks for it."""
    if model.tiny is not None:
        from ieiw.training.tiny import build_tiny_sd

        return str(build_tiny_sd(model.tiny.cache_dir, model.tiny))
    name = model.pretrained
    if _looks_local(name):
        path = Path(name).expanduser()
        if not (path / "model_index.json").exists() and not (path / "unet").is_dir():
            raise TrainingSetupError(
                f"no Stable Diffusion 1.5 weights at {name} (want a diffusers folder with unet/ vae/ text_encoder/ "
                f"tokenizer/ scheduler/); set model.pretrained, or {TINY_HINT}"
            )
        return str(path)
    return name


def check_weights(model: ModelConfig) -> str:
    """Before launching: a local folder must hold SD, a hub id must already be in the local HF cache.

    Failing here, in one line, beats a launcher stack trace or a hub timeout on every rank.
    """
    if model.tiny is not None:
        return "tiny"
    source = resolve_pretrained(model)
    if Path(source).is_dir():
        return source
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(source, "model_index.json", revision=model.revision)
    if not isinstance(cached, str):
        raise TrainingSetupError(
            f"Stable Diffusion 1.5 weights missing: {source} is not in the Hugging Face cache; run "
            f"`hf download {source}` or set model.pretrained to a local diffusers folder; {TINY_HINT}"
        )
    return source


def _load(cls: Any, source: str, subfolder: str, revision: str | None) -> Any:
    try:
        return cls.from_pretrained(source, subfolder=subfolder, revision=revision)
    except (OSError, ValueError) as exc:  # hub unreachable, repo or file missing
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrainingSetupError(f"cannot load {subfolder} from {source}: {first}; {TINY_HINT}") from exc


def load_components(config: Config) -> Components:
    """Tokenizer, text encoder, VAE, UNet and the DDPM noise scheduler, as the stage needs them.

    edit: SD's 4-channel UNet widened to 8, or the adapt stage's (``init_from``) widened. align: the edit
    stage's 8-channel UNet (``init_from``). adapt: SD's 4-channel UNet as is.
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    source = resolve_pretrained(config.model)
    rev = config.model.revision
    tokenizer = _load(CLIPTokenizer, source, "tokenizer", rev)
    text_encoder = _load(CLIPTextModel, source, "text_encoder", rev)
    vae = _load(AutoencoderKL, source, "vae", rev)
    if config.stage == "align":
        unet = UNet2DConditionModel.from_pretrained(resolve_init_unet(config.model.init_from or ""))
        if unet.config.in_channels != 8:
            raise TrainingSetupError(f"{config.model.init_from}: UNet has {unet.config.in_channels} input channels, align needs the 8-channel edit model")
    elif config.stage == "edit" and config.model.init_from:
        unet = UNet2DConditionModel.from_pretrained(resolve_init_unet(config.model.init_from))
        if unet.config.in_channels != 4:
            raise TrainingSetupError(f"{config.model.init_from}: UNet has {unet.config.in_channels} input channels, "
                                     "edit starts from the 4-channel adapt-stage model")
        unet = widen_conv_in(unet, 8)
    else:
        unet = _load(UNet2DConditionModel, source, "unet", rev)
        if config.stage == "edit":
            unet = widen_conv_in(unet, 8)
    t = config.train
    noise_scheduler = DDPMScheduler(
        num_train_timesteps=t.num_train_timesteps,
        beta_start=t.beta_start,
        beta_end=t.beta_end,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        clip_sample=False,
    )
    return Components(unet, vae, text_encoder, tokenizer, noise_scheduler)


def resolve_init_unet(init_from: str) -> str:
    """The UNet folder of an exported pipeline, or of the latest checkpoint of a training output dir."""
    path = Path(init_from).expanduser()
    if (path / "unet" / "config.json").exists() and (path / "model_index.json").exists():
        return str(path / "unet")
    if (path / "config.json").exists():
        return str(path)
    from ieiw.training.checkpoints import latest_checkpoint

    ckpt = latest_checkpoint(path) if path.is_dir() else None
    if ckpt is not None:
        for name in ("unet_ema", "unet"):
            if (ckpt / name / "config.json").exists():
                return str(ckpt / name)
    raise TrainingSetupError(f"model.init_from={init_from}: no exported pipeline, UNet folder or checkpoint there")


def widen_conv_in(unet: Any, in_channels: int = 8) -> Any:
    """InstructPix2Pix's 8-channel input: new channels' weights zero, the first 4 copied.

    With zeros on the source-latent channels the widened UNet computes exactly what SD computed,
    whatever the source latent is, so training starts from SD's behaviour.
    """
    old = unet.conv_in
    if old.in_channels == in_channels:
        return unet
    new = torch.nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels].copy_(old.weight)
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=in_channels)
    return unet


def make_ema(config: EmaConfig, unet: Any) -> Any | None:
    """diffusers' EMAModel over the trainable UNet (None when EMA is off)."""
    if not config.enabled:
        return None
    from diffusers import UNet2DConditionModel
    from diffusers.training_utils import EMAModel

    return EMAModel(
        unet.parameters(), decay=config.decay, use_ema_warmup=config.warmup == "power", inv_gamma=config.inv_gamma,
        power=config.power, update_after_step=config.update_after_step, foreach=config.foreach,
        model_cls=UNet2DConditionModel, model_config=unet.config,
    )


def freeze(*modules: Any) -> None:
    for module in modules:
        module.requires_grad_(False)
        module.eval()


@torch.no_grad()
def encode_text(text_encoder: Any, input_ids: torch.Tensor) -> torch.Tensor:
    return text_encoder(input_ids.to(text_encoder.device))[0]


def diffusion_loss(
    batch: dict[str, torch.Tensor],
    unet: Any,
    vae: Any,
    text_encoder: Any,
    noise_scheduler: Any,
    null_text: torch.Tensor,
    probs: DropoutProbs,
    weight_dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None,
    with_source: bool = True,
) -> torch.Tensor:
    """One epsilon-MSE loss on a batch of uint8 pairs: InstructDiffusion's (``with_source``) or plain SD's.

    With ``with_source`` the source latent (VAE mode, unscaled, as the official code) is concatenated
    to the noisy target latent and dropped per ``probs``; without it (adapt stage) only the text is
    dropped, at the scheme's total text rate. ``generator`` pins every random choice (evaluation on a
    fixed subset); training passes None and uses the global RNG, which accelerate's checkpoints
    save and restore. Random draws happen in the same order on both paths.
    """
    device = unet.device
    target = normalize(batch["target"].to(device), weight_dtype)
    with torch.no_grad():
        latents = vae.encode(target).latent_dist.sample(generator) * vae.config.scaling_factor
        if with_source:
            source_latents = vae.encode(normalize(batch["source"].to(device), weight_dtype)).latent_dist.mode()
        text = encode_text(text_encoder, batch["input_ids"])
    bsz = latents.shape[0]
    noise = torch.randn(latents.shape, generator=generator, device=device, dtype=latents.dtype)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (bsz,), generator=generator, device=device)
    model_input = noise_scheduler.add_noise(latents, noise, timesteps)
    drop_text, drop_image = draw_dropout(bsz, probs, device, generator)
    text = torch.where(drop_text[:, None, None], null_text.to(text.dtype).expand_as(text), text)
    if with_source:
        source_latents = source_latents * (~drop_image).to(source_latents.dtype)[:, None, None, None]
        model_input = torch.cat([model_input, source_latents], dim=1)
    pred = unet(model_input, timesteps, text, return_dict=False)[0]
    return F.mse_loss(pred.float(), noise.float(), reduction="mean")


def edit_loss(*args: Any, **kwargs: Any) -> torch.Tensor:
    """Edit and align stages: the 8-channel InstructDiffusion loss."""
    return diffusion_loss(*args, **kwargs, with_source=True)


def t2i_loss(*args: Any, **kwargs: Any) -> torch.Tensor:
    """Adapt stage: plain SD text-to-image loss on (caption + suffix, target image)."""
    return diffusion_loss(*args, **kwargs, with_source=False)


def null_text_embedding(text_encoder: Any, tokenizer: Any) -> torch.Tensor:
    """The embedding of the empty prompt: the official and diffusers' "null" text condition."""
    from ieiw.training.data import ClipTokenize

    return encode_text(text_encoder, ClipTokenize(tokenizer)("")[None])
