"""Training configuration: one YAML file validated by pydantic (unknown keys are errors).

Every knob the trainer reads lives here, so a run is fully described by its config file plus the
command-line overrides (``--set train.max_steps=10``), and the resolved config is written next to
the checkpoints. Models are frozen: the trainer never mutates its config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, field_validator, model_validator

from ieiw.schemas.config import StrictModel, load_yaml_model, parse_overrides
from ieiw.training.crops import DEFAULT_CROP, OFFICIAL_CROP, CropPolicy
from ieiw.training.flips import DEFAULT_FLIP, OFFICIAL_FLIP

Stage = Literal["edit", "align", "adapt"]


class TinyModel(StrictModel):
    """Sizes of the randomly initialised stand-in for SD1.5 (CPU smoke runs and tests)."""

    seed: int = 0
    unet_channels: tuple[int, ...] = (32, 64)
    vae_channels: tuple[int, ...] = (32, 64)
    text_hidden: int = 32
    text_layers: int = 2
    cache_dir: str = "out/tiny-sd15"


class ModelConfig(StrictModel):
    # A local diffusers folder (model_index.json + unet/ vae/ text_encoder/ tokenizer/ scheduler/) or a hub id.
    pretrained: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    revision: str | None = None
    # Build tiny random components into tiny.cache_dir and load them from there instead of `pretrained`.
    tiny: TinyModel | None = None
    # align stage: the edit-stage result to start from (an exported pipeline folder, or a training
    # output_dir whose latest checkpoint is used). Its 8-channel UNet replaces SD's.
    # edit stage (optional): the adapt-stage result; its 4-channel UNet is widened to 8 instead of SD's.
    init_from: str | None = None
    # Refuse to start without CUDA (the SD1.5 config sets this; the tiny config does not).
    require_gpu: bool = False


# InstructDiffusion's `sample_weight`s (configs/instruct_diffusion.yaml), keyed by the `origin.dataset`
# names ieiw's converters and importers write; every other dataset weighs 1.
OFFICIAL_SOURCE_WEIGHTS = {"aic": 0.1, "gopro": 2.0, "reds": 0.2, "sidd": 20.0, "clwd": 0.2,
                           "instructpix2pix": 0.2, "gier": 2.0}


# The adaptation rows' domain suffixes (ieiw.builders.captions.DEFAULT_SUFFIXES, repeated here so the
# trainer does not import the converters), keyed by task.
DEFAULT_CAPTION_SUFFIXES = {"caption-overlay": "with a few different color patches here and there",
                            "caption-keypoints": "with a few different color circles here and there"}


class DataConfig(StrictModel):
    # One stage folder, or several mixed (a list, or comma-separated: `--data out/ieiw,out/segmentation`).
    folder: str | list[str] = "out/ieiw"
    resolution: int = 256
    # Shorter side is resized to resolution * U(1, max_zoom) before the shared random crop.
    max_zoom: float = 1.0
    random_crop: bool = True
    random_flip: bool = True  # false: never mirror; true: by the per-source rules below
    # Flip probability keyed like source_weights; the official zeros (RefCOCO, gRefCOCO, GIER, GQA-Inpaint)
    # by default. A row whose instruction names a side is never mirrored unless its family swaps sides
    # (keypoints: "left knee" <-> "right knee"); ieiw.training.flips.
    flip: dict[str, float] = Field(default_factory=lambda: dict(OFFICIAL_FLIP))
    default_flip: float = Field(DEFAULT_FLIP, ge=0, le=1)
    # Crop policy keyed like source_weights, then by task family: short-side | squash | native; the official
    # loaders' by default (editing and IEIW squashed to the square, SIDD cropped at native size); ieiw.training.crops.
    crop: dict[str, CropPolicy] = Field(default_factory=lambda: dict(OFFICIAL_CROP))
    default_crop: CropPolicy = DEFAULT_CROP
    # Draw keypoint, COCO-Stuff, referring and enhancement targets anew per sample from the material the
    # converters keep (the official loaders' per-sample draws, the HRNet person crop); false: train on the
    # stored target. ieiw.training.redraw.
    redraw: bool = True
    shuffle_buffer: int = 1000
    num_workers: int = 4
    # Like the official `sample_weight`: per-epoch expected repeats of a row, keyed by
    # "dataset:task", then "dataset" (origin.dataset), then "task"; anything else gets `default_weight`.
    source_weights: dict[str, float] = Field(default_factory=lambda: dict(OFFICIAL_SOURCE_WEIGHTS))
    default_weight: float = 1.0
    # Subset selection (align stage, smoke runs): all given filters must pass.
    include_datasets: list[str] | None = None
    include_tasks: list[str] | None = None
    include_ids_file: str | None = None
    limit: int | None = None
    # adapt stage: the instruction column holds the caption; the domain suffix keyed like source_weights
    # ("dataset:task", dataset, task) is appended once. Default: by the converters' caption tasks.
    caption_suffixes: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_CAPTION_SUFFIXES))

    def folders(self) -> list[str]:
        """The stage folders to mix, in order."""
        items = self.folder if isinstance(self.folder, list) else [self.folder]
        return [part.strip() for item in items for part in str(item).split(",") if part.strip()]


class TrainConfig(StrictModel):
    batch_size: int = 64  # per device
    gradient_accumulation_steps: int = 1
    max_steps: int | None = 10000  # optimizer steps; `epochs` wins when set
    epochs: float | None = None
    learning_rate: float = 1e-4
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    weight_decay: float = 0.01
    adam_epsilon: float = 1e-8
    # official: no clipping (trainer.clip_grad: 0.0) and an fp16 loss scale starting at 2^13 (initial_scale: 13)
    max_grad_norm: float = Field(0.0, ge=0, description="0: no gradient clipping (the official setting)")
    mixed_precision: Literal["no", "fp16", "bf16"] = "fp16"
    fp16_initial_scale: float = Field(2.0**13, gt=0, description="the fp16 loss scaler's first scale (official 2^13)")

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_no(cls, value: Any) -> Any:
        return "no" if value is False else value  # `mixed_precision: no` in YAML 1.1 is False
    gradient_checkpointing: bool = True
    allow_tf32: bool = True
    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012


class DropoutConfig(StrictModel):
    """Conditioning dropout, the three probabilities of one categorical draw per sample."""

    scheme: Literal["instructdiffusion", "instructpix2pix", "custom"] = "instructdiffusion"
    text_only: float | None = None
    image_only: float | None = None
    both: float | None = None

    @model_validator(mode="after")
    def _custom_complete(self) -> DropoutConfig:
        given = [p for p in (self.text_only, self.image_only, self.both) if p is not None]
        if self.scheme == "custom" and len(given) != 3:
            raise ValueError("dropout.scheme=custom needs text_only, image_only and both")
        if self.scheme != "custom" and given:
            raise ValueError("dropout probabilities are only read with scheme: custom")
        return self


class EmaConfig(StrictModel):
    """diffusers ``EMAModel``. Warm-up ``official`` = ldm's LitEma, decay min(decay, (1+n)/(10+n)), which is
    EMAModel without ``use_ema_warmup``; ``power`` = 1 - (1 + n/inv_gamma)^-power (diffusers' scripts)."""

    enabled: bool = True
    decay: float = 0.9999
    warmup: Literal["official", "power"] = "official"
    inv_gamma: float = 1.0
    power: float = 0.75
    update_after_step: int = 0
    foreach: bool = True  # torch._foreach updates: one fused kernel per step on GPU


class CheckpointConfig(StrictModel):
    every_steps: int = 1000
    total_limit: int | None = 3


class ValidationConfig(StrictModel):
    every_steps: int = 500  # 0 disables
    num_pairs: int = 4
    num_inference_steps: int = 20
    text_guidance: float = 5.0
    image_guidance: float = 1.25


class LoggingConfig(StrictModel):
    every_steps: int = 10
    report_to: Literal["tensorboard", "none"] = "tensorboard"
    # Audit trail: every rank appends the ids of the rows it trained on to sample_ids/rank-N.txt.
    sample_ids: bool = False


class Config(StrictModel):
    stage: Stage = "edit"
    output_dir: str = "out/train/sd15"
    seed: int = 42
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    dropout: DropoutConfig = Field(default_factory=DropoutConfig)
    ema: EmaConfig = Field(default_factory=EmaConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @model_validator(mode="after")
    def _stage_needs(self) -> Config:
        if self.stage == "align" and not self.model.init_from:
            raise ValueError("stage align needs model.init_from (the edit-stage pipeline or output folder)")
        if self.train.max_steps is None and self.train.epochs is None:
            raise ValueError("set train.max_steps or train.epochs")
        return self


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or the defaults when ``path`` is None) and apply ``overrides``; a bad file
    raises ``ieiw.schemas.config.ConfigError`` in the same format as a bad build config."""
    return load_yaml_model(path, Config, parse_overrides(overrides or []))


def dump_config(config: Config) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
