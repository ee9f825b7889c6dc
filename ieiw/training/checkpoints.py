"""Checkpoints: ``output_dir/checkpoint-{step}`` folders written by ``accelerator.save_state``.

Following diffusers' trainers, save/load hooks store the UNet (and its EMA) as ``save_pretrained``
folders, so a checkpoint's ``unet_ema/`` can seed the align stage or be inspected with diffusers;
accelerate stores the optimizer, LR scheduler, grad scaler and every process's RNG state beside them.
``trainer_state.json`` is written last: a checkpoint without it is incomplete (killed mid-save) and
is ignored by ``--resume latest``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from ieiw.schemas.storage import atomic_write_bytes

STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")


def checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if _NAME.match(p.name) and (p / STATE_FILE).exists()]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))  # type: ignore[union-attr]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = checkpoints(output_dir)
    return found[-1] if found else None


def resolve_resume(output_dir: str | Path, resume: str | None) -> Path | None:
    """``latest`` -> newest complete checkpoint (None on a fresh run); a path -> that checkpoint."""
    if not resume:
        return None
    if resume == "latest":
        return latest_checkpoint(output_dir)
    path = Path(resume)
    if not (path / STATE_FILE).exists():
        raise FileNotFoundError(f"--resume {resume}: not a complete checkpoint (no {STATE_FILE})")
    return path


def prune(output_dir: str | Path, total_limit: int | None, keep_room: int = 1) -> list[Path]:
    """Delete the oldest checkpoints so that, after the next save, at most ``total_limit`` remain."""
    if not total_limit:
        return []
    found = checkpoints(output_dir)
    excess = len(found) - (total_limit - keep_room)
    removed = found[: max(0, excess)]
    for path in removed:
        shutil.rmtree(path)
    return removed


def write_state(folder: Path, state: dict[str, Any]) -> None:
    """The "complete" marker: written atomically (temp file, fsync, rename), so a kill while writing it
    leaves no marker rather than a truncated one that ``--resume latest`` would trust."""
    atomic_write_bytes(folder / STATE_FILE, json.dumps(state, indent=1).encode())


def read_state(folder: Path) -> dict[str, Any]:
    return json.loads((folder / STATE_FILE).read_text())


def make_hooks(accelerator: Any, ema: Any, unet_cls: Any):
    """Save/load hooks that write/read ``unet/`` and ``unet_ema/`` as diffusers folders.

    Top-level functions returned as a pair (no closure over the CLI args, unlike the example script).
    """

    def save_hook(models: list, weights: list, output_dir: str) -> None:
        if accelerator.is_main_process:
            if ema is not None:
                # EMAModel.save_pretrained builds a fresh UNet (random init): keep the global RNG
                # untouched so a run that checkpoints draws the same noise as one resumed from it.
                with torch.random.fork_rng(devices=[]):
                    ema.save_pretrained(str(Path(output_dir) / "unet_ema"))
            for model in models:
                accelerator.unwrap_model(model).save_pretrained(str(Path(output_dir) / "unet"))
        # Empty `weights` on every process so accelerate does not also save the raw state dict.
        while weights:
            weights.pop()

    def load_hook(models: list, input_dir: str) -> None:
        if ema is not None:
            from diffusers.utils import logging as diffusers_logging

            # EMAModel's folder config carries decay/step keys the UNet class warns about: expected here.
            verbosity = diffusers_logging.get_verbosity()
            diffusers_logging.set_verbosity_error()
            folder = str(Path(input_dir) / "unet_ema")
            try:
                # What EMAModel.from_pretrained does, without its deprecated from_config(path) call (a
                # FutureWarning in every resumed run's log): the EMA counters are the folder config's extra keys.
                config = unet_cls.load_config(folder)
                loaded = unet_cls.from_pretrained(folder)
            finally:
                diffusers_logging.set_verbosity(verbosity)
            counters = {key: config[key] for key in ema.state_dict() if key != "shadow_params" and key in config}
            ema.load_state_dict({**counters, "shadow_params": [p.detach() for p in loaded.parameters()]})
            ema.to(accelerator.device)
            del loaded
        while models:
            model = models.pop()
            loaded = unet_cls.from_pretrained(input_dir, subfolder="unet")
            model.register_to_config(**loaded.config)
            model.load_state_dict(loaded.state_dict())
            del loaded

    return save_hook, load_hook
