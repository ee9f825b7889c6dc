"""A tiny, randomly initialised Stable Diffusion 1.5 look-alike, built offline from the real classes.

It is saved as an ordinary diffusers folder (model_index.json, unet/, vae/, text_encoder/,
tokenizer/, scheduler/) so the trainer loads it through exactly the code path that loads real
SD1.5 weights. Nothing is downloaded: the CLIP tokenizer is built from a byte-level vocabulary.
It reproduces the shapes and the plumbing, not the quality: the VAE downsamples 2x (SD: 8x) and
the text encoder knows no language.
"""

from __future__ import annotations

import json
from pathlib import Path

from ieiw.training.config import TinyModel

MARKER = "ieiw_tiny.json"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def tiny_tokenizer():
    """A CLIPTokenizer over the 256 byte characters (+ ``</w>`` forms) and a few merges: 518+ tokens."""
    from transformers import CLIPTokenizer

    chars = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    merges = [("t", "h"), ("th", "e</w>"), ("a", "d"), ("ad", "d</w>"), ("r", "e"), ("o", "v")]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def build_tiny_sd(folder: str | Path, spec: TinyModel = TinyModel()) -> Path:
    """Write a tiny SD1.5-shaped diffusers folder once; later calls with the same spec reuse it."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = Path(folder)
    wanted = spec.model_dump(mode="json", exclude={"cache_dir"})
    marker = folder / MARKER
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        return folder
    torch.manual_seed(spec.seed)
    tokenizer = tiny_tokenizer()
    n = len(spec.unet_channels)
    unet = UNet2DConditionModel(
        block_out_channels=spec.unet_channels,
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
        cross_attention_dim=spec.text_hidden,
        attention_head_dim=8,
        norm_num_groups=16,
    )
    vae = AutoencoderKL(
        block_out_channels=list(spec.vae_channels),
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * len(spec.vae_channels),
        up_block_types=["UpDecoderBlock2D"] * len(spec.vae_channels),
        latent_channels=4,
        norm_num_groups=16,
        sample_size=64,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            hidden_size=spec.text_hidden,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=spec.text_layers,
            vocab_size=len(tokenizer),
            max_position_embeddings=77,
        )
    )
    scheduler = DDPMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False
    )
    folder.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    text_encoder.save_pretrained(folder / "text_encoder")
    tokenizer.save_pretrained(folder / "tokenizer")
    scheduler.save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "StableDiffusionPipeline",
                "unet": ["diffusers", "UNet2DConditionModel"],
                "vae": ["diffusers", "AutoencoderKL"],
                "text_encoder": ["transformers", "CLIPTextModel"],
                "tokenizer": ["transformers", "CLIPTokenizer"],
                "scheduler": ["diffusers", "DDPMScheduler"],
            },
            indent=1,
        )
    )
    marker.write_text(json.dumps(wanted))
    return folder
