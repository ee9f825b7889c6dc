"""Random-weight models of the real shapes (and toy ones for ``--tiny``), for bench/gpu.py.

Throughput does not depend on weight values, so every model the paper configuration runs is built from
its library's own classes and configs, with seeded random weights, and saved where ieiw's backends load
it from (a ``save_pretrained`` folder, a weights file, a TorchScript file). Nothing is downloaded.

- SAM ViT-H: ``segment_anything.sam_model_registry["vit_h"](checkpoint=None)``, for
  ``SamRegionProposer.from_model``.
- CLIP ViT-L/14: ``CLIPModel``, a vision tower 1024 wide (24 layers, 16 heads, patch 14 at 224 px) and a text
  tower 768 wide (12 layers), projection 768; a folder for ``ClipFeaturesConfig(model=...)``.
- LAION heads: v1 ``Linear(768, 1)``, improved 768-1024-128-64-16-1; files for ``LaionHeadConfig(weights=...)``.
- FID Inception: pytorch-fid's own ``fid_inception_v3()`` structure; a file for ``FidInceptionConfig(weights=...)``.
- Paint-by-Example: the SD 1.x UNet (in_channels 9, cross-attention 768), the SD VAE, ``PaintByExampleImageEncoder``
  over CLIP ViT-L/14's vision tower, PNDM with the hub repository's scheduler settings, ``CLIPImageProcessor`` at
  224 px; a folder for ``PaintByExampleConfig(model=...)``.
- SD 1.5 for training: ``UNet2DConditionModel``'s defaults (320/640/1280/1280, 2 layers per block, heads of 8)
  with cross-attention 768, the SD VAE (128/256/512/512), CLIP ViT-L/14's text encoder (768 wide, 12 layers,
  49408 tokens); a diffusers folder for ``ieiw.training.model.load_components``.
- LaMa: bench/lama_ffc.py.

The tokenizers are ieiw's byte-level stand-in (``ieiw.training.tiny.tiny_tokenizer``): CLIP's vocabulary is a
download, and a prompt's token count, not its ids, is what costs time (prompts are padded to 77 anyway).
Folders are written once per spec (a marker file holds it) and reused by later runs.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from functools import partial
from itertools import pairwise
from pathlib import Path
from typing import Any

MARKER = "bench_spec.json"

CLIP_L14_VISION = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
                   "image_size": 224, "patch_size": 14, "projection_dim": 768, "hidden_act": "quick_gelu"}
CLIP_L14_TEXT = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
                 "max_position_embeddings": 77, "projection_dim": 768, "hidden_act": "quick_gelu"}
TINY_VISION = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
               "image_size": 32, "patch_size": 8, "projection_dim": 32}
TINY_TEXT = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
             "max_position_embeddings": 77, "projection_dim": 32}
SD_VAE = {"block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "sample_size": 512}
TINY_VAE = {"block_out_channels": [32, 64], "layers_per_block": 1, "sample_size": 64, "norm_num_groups": 16}
SD_UNET = {"sample_size": 64, "cross_attention_dim": 768}  # everything else: UNet2DConditionModel's defaults = SD 1.x
TINY_UNET = {"sample_size": 32, "block_out_channels": [32, 64], "layers_per_block": 1, "cross_attention_dim": 32,
             "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"], "norm_num_groups": 16,
             "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"]}
# Fantasy-Studio/Paint-by-Example's scheduler/scheduler_config.json
PBE_SCHEDULER = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
                 "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1}


def cached_folder(folder: Path, spec: dict[str, Any], build: Callable[[Path], None]) -> Path:
    """``folder`` built by ``build(folder)`` unless it already holds this ``spec`` (then reused)."""
    folder = Path(folder)
    marker = folder / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    build(folder)
    marker.write_text(json.dumps(spec))  # written last: a folder without it is rebuilt
    return folder


def _vae(tiny: bool) -> Any:
    from diffusers import AutoencoderKL

    sizes = TINY_VAE if tiny else SD_VAE
    blocks = len(sizes["block_out_channels"])
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, **sizes,
                         down_block_types=["DownEncoderBlock2D"] * blocks, up_block_types=["UpDecoderBlock2D"] * blocks)


def _unet(tiny: bool, in_channels: int) -> Any:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(in_channels=in_channels, out_channels=4, **(TINY_UNET if tiny else SD_UNET))


def _text_config(tokenizer: Any, tiny: bool) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=len(tokenizer) if tiny else 49408, bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                          **(TINY_TEXT if tiny else CLIP_L14_TEXT))


def _build_on(device: str) -> Any:
    """Initialise big models on the GPU (seconds) rather than the CPU (minutes for SD's UNet)."""
    import contextlib

    import torch

    return torch.device(device) if device.startswith("cuda") else contextlib.nullcontext()


# -- SAM --------------------------------------------------------------------------------------------
def sam_model(tiny: bool, device: str = "cpu", seed: int = 0) -> Any:
    """SAM ViT-H from segment-anything's own builder without a checkpoint, or a toy SAM of the same classes."""
    import torch

    torch.manual_seed(seed)
    if not tiny:
        from segment_anything import sam_model_registry

        try:
            with _build_on(device):
                model = sam_model_registry["vit_h"](checkpoint=None)
        except RuntimeError:  # a constructor that refuses the device context: build on the CPU, then move
            model = sam_model_registry["vit_h"](checkpoint=None)
        return model.to(device).eval()
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    size, embed = 256, 32
    return Sam(
        image_encoder=ImageEncoderViT(img_size=size, embed_dim=64, depth=2, num_heads=2, patch_size=16, out_chans=embed,
                                      window_size=4, global_attn_indexes=[1], use_rel_pos=True, qkv_bias=True,
                                      norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), mlp_ratio=2),
        prompt_encoder=PromptEncoder(embed_dim=embed, image_embedding_size=(size // 16, size // 16),
                                     input_image_size=(size, size), mask_in_chans=4),
        mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(
            depth=2, embedding_dim=embed, mlp_dim=64, num_heads=2), transformer_dim=embed, iou_head_depth=2,
            iou_head_hidden_dim=32),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375],
    ).to(device).eval()


# -- CLIP ViT-L/14 ----------------------------------------------------------------------------------
def clip_folder(folder: Path, tiny: bool, device: str = "cpu", seed: int = 0) -> Path:
    """CLIPModel (both towers) + CLIPImageProcessor + tokenizer in the ``save_pretrained`` layout."""

    def build(path: Path) -> None:
        import torch
        from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

        from ieiw.training.tiny import tiny_tokenizer

        torch.manual_seed(seed)
        tokenizer = tiny_tokenizer()
        text = _text_config(tokenizer, tiny).to_dict()
        vision = TINY_VISION if tiny else CLIP_L14_VISION
        with _build_on(device):
            config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=vision["projection_dim"])
            model = CLIPModel(config)
        model.to(torch.float32 if tiny else torch.float16).save_pretrained(path)
        side = vision["image_size"]
        processor = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
        processor.save_pretrained(path)
        tokenizer.save_pretrained(path)

    return cached_folder(folder, {"model": "clip", "tiny": tiny, "seed": seed}, build)


# -- LAION aesthetics heads -------------------------------------------------------------------------
def laion_weights(folder: Path, seed: int = 0) -> dict[str, Path]:
    """Both heads' official key layouts (ieiw/filters/aesthetics.py) at their real sizes (small either way)."""
    import torch

    sizes = [768, 1024, 128, 64, 16, 1]

    def build(path: Path) -> None:
        generator = torch.Generator().manual_seed(seed)

        def linear(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor]:
            bound = n_in ** -0.5
            return (torch.rand(n_out, n_in, generator=generator) * 2 - 1) * bound, torch.zeros(n_out)

        weight, bias = linear(768, 1)
        torch.save({"weight": weight, "bias": bias}, path / "v1.pth")
        state = {}
        for index, (n_in, n_out) in zip((0, 2, 4, 6, 7), pairwise(sizes)):
            state[f"layers.{index}.weight"], state[f"layers.{index}.bias"] = linear(n_in, n_out)
        torch.save(state, path / "improved.pth")

    folder = cached_folder(folder, {"model": "laion", "seed": seed}, build)
    return {"v1": folder / "v1.pth", "improved": folder / "improved.pth"}


# -- FID Inception ----------------------------------------------------------------------------------
def fid_weights(folder: Path, seed: int = 0) -> Path:
    """A state dict for pytorch-fid's ``fid_inception_v3()``, made by that function itself: its weight fetch is
    pointed at the freshly built network's own (random) state dict."""

    def build(path: Path) -> None:
        import torch
        from pytorch_fid import inception as fid

        torch.manual_seed(seed)
        built: list[Any] = []
        original_build, original_fetch = fid._inception_v3, fid.load_state_dict_from_url

        def keep(*args: Any, **kwargs: Any) -> Any:
            built.append(original_build(*args, **kwargs))
            return built[-1]

        fid._inception_v3 = keep
        fid.load_state_dict_from_url = lambda *args, **kwargs: built[-1].state_dict()
        try:
            model = fid.fid_inception_v3()
        finally:
            fid._inception_v3, fid.load_state_dict_from_url = original_build, original_fetch
        torch.save(model.state_dict(), path / "pt_inception-random.pth")

    return cached_folder(folder, {"model": "fid-inception", "seed": seed}, build) / "pt_inception-random.pth"


# -- Paint-by-Example -------------------------------------------------------------------------------
def paint_by_example_folder(folder: Path, tiny: bool, device: str = "cpu", seed: int = 0) -> Path:
    """The hub repository's layout: model_index.json, unet/, vae/, image_encoder/, scheduler/, feature_extractor/."""

    def build(path: Path) -> None:
        import torch
        from diffusers import PNDMScheduler
        from diffusers.pipelines.deprecated.paint_by_example import PaintByExampleImageEncoder, PaintByExamplePipeline
        from transformers import CLIPImageProcessor, CLIPVisionConfig

        torch.manual_seed(seed)
        vision = TINY_VISION if tiny else CLIP_L14_VISION
        with _build_on(device):
            unet, vae = _unet(tiny, 9), _vae(tiny)
            encoder = PaintByExampleImageEncoder(CLIPVisionConfig(**vision), proj_size=vision["projection_dim"])
        side = vision["image_size"]
        processor = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
        pipe = PaintByExamplePipeline(vae=vae, image_encoder=encoder, unet=unet, safety_checker=None,
                                      scheduler=PNDMScheduler(**PBE_SCHEDULER), feature_extractor=processor,
                                      requires_safety_checker=False)
        pipe.to(dtype=torch.float32 if tiny else torch.float16)
        pipe.save_pretrained(path)

    return cached_folder(folder, {"model": "paint-by-example", "tiny": tiny, "seed": seed}, build)


# -- SD 1.5 for training ----------------------------------------------------------------------------
def sd15_folder(folder: Path, device: str = "cpu", seed: int = 0) -> Path:
    """A diffusers SD 1.5 folder of the real shapes (float32, as the hub's), for ``load_components``. The toy
    version is the trainer's own ``model.tiny`` (ieiw/training/tiny.py)."""

    def build(path: Path) -> None:
        import torch
        from diffusers import DDPMScheduler
        from transformers import CLIPTextModel

        from ieiw.training.tiny import tiny_tokenizer

        torch.manual_seed(seed)
        tokenizer = tiny_tokenizer()
        with _build_on(device):
            unet, vae = _unet(False, 4), _vae(False)
            text_encoder = CLIPTextModel(_text_config(tokenizer, False))
        unet.save_pretrained(path / "unet")
        vae.save_pretrained(path / "vae")
        text_encoder.save_pretrained(path / "text_encoder")
        tokenizer.save_pretrained(path / "tokenizer")
        DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      clip_sample=False).save_pretrained(path / "scheduler")
        (path / "model_index.json").write_text(json.dumps({
            "_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", "DDPMScheduler"]}))

    return cached_folder(folder, {"model": "sd15", "seed": seed}, build)


# -- the VLM judge ----------------------------------------------------------------------------------
# Qwen2.5-VL-7B-Instruct's config.json (the model configs/ieiw.paper.yaml names for the vlm-judge scorer)
QWEN25_VL_7B_TEXT = {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                     "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
                     "max_position_embeddings": 128000, "rope_parameters": {
                         "rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}}
QWEN25_VL_7B_VISION = {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
                       "fullatt_block_indexes": [7, 15, 23, 31]}
TINY_VL_TEXT = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                "num_key_value_heads": 2, "max_position_embeddings": 4096,
                "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [4, 2, 2]}}
TINY_VL_VISION = {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 4, "fullatt_block_indexes": [1]}
QWEN_TOKENIZER_SIZE = 151665  # len() of Qwen2.5-VL's tokenizer: what a constrained answer's free tail ranges over
VL_SPECIALS = ["<|im_start|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
# Qwen2-VL's chat template, reduced to what the judge sends (text and images)
VL_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
               "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}"
               "<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
               "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def chat_tokenizer(size: int | None = None) -> Any:
    """A byte-level BPE tokenizer with Qwen's chat and vision special tokens; ``size`` pads its vocabulary with
    tokens no text encodes to, so ``len(tokenizer)`` (what constrained decoding ranges over) is the real one's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from ieiw.training.tiny import _bytes_to_unicode

    symbols = list(_bytes_to_unicode().values())
    vocab = {symbol: index for index, symbol in enumerate(symbols)}
    padding = (size or 0) - len(vocab) - len(VL_SPECIALS) - 2
    for index in range(max(padding, 0)):
        vocab[symbols[index % 94] + f"{index:06d}"] = len(vocab)  # unreachable by encoding, decodable
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": VL_SPECIALS})
    tokenizer.chat_template = VL_TEMPLATE
    return tokenizer


def vlm_folder(folder: Path, tiny: bool, device: str = "cpu", seed: int = 0) -> Path:
    """Qwen2.5-VL (7B-Instruct's shape, or a toy one) + its processor, for ``VlmJudgeConfig(model=folder)``."""

    def build(path: Path) -> None:
        import torch
        from transformers import (
            Qwen2_5_VLConfig,
            Qwen2_5_VLForConditionalGeneration,
            Qwen2_5_VLProcessor,
            Qwen2VLImageProcessor,
            Qwen2VLVideoProcessor,
        )

        tokenizer = chat_tokenizer(None if tiny else QWEN_TOKENIZER_SIZE)
        ids = {token: tokenizer.convert_tokens_to_ids(token) for token in VL_SPECIALS + ["<|im_end|>", "<|endoftext|>"]}
        text = {**(TINY_VL_TEXT if tiny else QWEN25_VL_7B_TEXT), "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
                "eos_token_id": ids["<|im_end|>"], "pad_token_id": ids["<|endoftext|>"], "bos_token_id": None}
        if tiny:
            text["vocab_size"] = len(tokenizer)
        vision = {**(TINY_VL_VISION if tiny else QWEN25_VL_7B_VISION), "out_hidden_size": text["hidden_size"],
                  "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112,
                  "tokens_per_second": 2}
        config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                                  video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                                  vision_end_token_id=ids["<|vision_end|>"])
        torch.manual_seed(seed)
        with _build_on(device):
            model = Qwen2_5_VLForConditionalGeneration(config)
        model.generation_config.eos_token_id = ids["<|im_end|>"]
        model.to(torch.float32 if tiny else torch.bfloat16).save_pretrained(path)
        Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(), tokenizer=tokenizer, chat_template=VL_TEMPLATE,
                            video_processor=Qwen2VLVideoProcessor()).save_pretrained(path)

    return cached_folder(folder, {"model": "qwen2.5-vl", "tiny": tiny, "seed": seed}, build)
