"""Helpers the tests import: a build-config writer and the real `ieiw` command in a subprocess."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]


def write_config(path: Path, root: Path, out: Path, **top) -> Path:
    """A build config over ``root`` writing to ``out``; keyword arguments override top-level keys."""
    config = {
        "name": "test",
        "out_dir": str(out),
        "unit_size": 8,
        "workers": 2,
        "removal": {"source": {"root": str(root), "splits": ["train", "val"]}, "mask_dilation": 5},
        "selection": {"min_target_aesthetic": 2.0, "max_aesthetic_gap": 3.0},
    }
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    path.write_text(yaml.safe_dump(config))
    return path



def ieiw_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now, for a test's own server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_ieiw(*args: str, check: bool = True, timeout: float = 300, env: dict[str, str] | None = None,
             **kwargs) -> subprocess.CompletedProcess:
    """Run the real command line (``python -m ieiw``) and capture its output."""
    proc = subprocess.run(
        [sys.executable, "-m", "ieiw", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, env=env or ieiw_env(), cwd=REPO, **kwargs,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"ieiw {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def tiny_clip_folder(folder: Path, layers: int = 1, projection: int = 32) -> Path:
    """A tiny random CLIPModel (both towers) + CLIPImageProcessor + CLIPTokenizer saved as a folder."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from ieiw.training.tiny import tiny_tokenizer

    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    common = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": layers, "num_attention_heads": 4}
    text = {**common, "vocab_size": len(tokenizer), "max_position_embeddings": 77,
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id}
    CLIPModel(CLIPConfig(text_config=text, vision_config={**common, "image_size": 32, "patch_size": 8},
                         projection_dim=projection)).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_paint_by_example_pipeline():
    """A tiny random ``PaintByExamplePipeline`` in memory, diffusers' own test sizes (UNet in_channels 9,
    blocks (32, 64), a two-block VAE, a 5-layer 32-wide CLIP vision encoder, PNDM), seeded: the same
    weights on every call."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from diffusers.pipelines.deprecated.paint_by_example import PaintByExampleImageEncoder, PaintByExamplePipeline
    from transformers import CLIPImageProcessor, CLIPVisionConfig

    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=9,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32)
    vae = AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
                        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"])
    vision = CLIPVisionConfig(hidden_size=32, projection_dim=32, intermediate_size=37, layer_norm_eps=1e-05,
                              num_attention_heads=4, num_hidden_layers=5, image_size=32, patch_size=4)
    encoder = PaintByExampleImageEncoder(vision, proj_size=32)
    return PaintByExamplePipeline(vae=vae, image_encoder=encoder, unet=unet, scheduler=PNDMScheduler(skip_prk_steps=True),
                                  safety_checker=None, feature_extractor=CLIPImageProcessor(crop_size=32, size=32),
                                  requires_safety_checker=False)


def tiny_paint_by_example_folder(path: Path) -> Path:
    """:func:`tiny_paint_by_example_pipeline` saved with ``save_pretrained`` (the hub repository's layout:
    model_index.json, vae/, unet/, image_encoder/, scheduler/, feature_extractor/)."""
    tiny_paint_by_example_pipeline().save_pretrained(path)
    return Path(path)


def verify_names_a_corrupted_shard(fs: Any, folder: str, env: dict[str, str]) -> None:
    """Flip one byte in the middle of the first shard object under ``folder`` (``protocol://bucket/...``):
    `ieiw verify` must exit 1 naming its URL; with the object put back, it must pass again."""
    protocol, _, path = folder.partition("://")
    key = sorted(p for p in fs.find(path) if p.endswith(".parquet"))[0]
    original = fs.cat_file(key)
    broken = bytearray(original)
    broken[len(broken) // 2] ^= 0xFF
    fs.pipe_file(key, bytes(broken))
    try:
        proc = run_ieiw("verify", folder, check=False, env=env)
        assert proc.returncode == 1
        assert f"CORRUPT {protocol}://{key}" in proc.stderr and "1 shard(s) failed verification" in proc.stderr
    finally:
        fs.pipe_file(key, original)
    assert run_ieiw("verify", folder, env=env).returncode == 0


def verified_stats_like_local(folder: str, local: Path, env: dict[str, str]) -> dict:
    """`ieiw verify` passes on the remote stage ``folder`` and `ieiw stats --json` there counts what it
    counts for the same build's ``local`` folder; the remote stats."""
    proc = run_ieiw("verify", folder, env=env)
    assert proc.returncode == 0 and f"{folder}/manifest.json" in proc.stdout
    remote = json.loads(run_ieiw("stats", folder, "--json", env=env).stdout)
    expected = json.loads(run_ieiw("stats", local, "--json", env=env).stdout)
    assert remote["path"] == folder
    for key in ("rows", "by_task", "by_source", "by_split", "rejected", "failures", "shards"):
        assert remote[key] == expected[key], key
    assert remote["rows"] > 0
    return remote


# -- names that lead out of a dataset's root (docs/formats.md, "Names that become paths") ----------------
PLANTED = "planted-outside-root"


def plant_outside(folder: Path, size: tuple[int, int] = (64, 48), name: str = f"{PLANTED}.png") -> tuple[Path, bytes]:
    """A real image outside a dataset's root, where a crafted name (``../``, an absolute path, a symlink) points:
    the reader would read it if it did not check names. A plain RGB PNG (kept as stored by every reader) of
    ``size`` (width, height), magenta. Returns (its path, its bytes)."""
    import numpy as np

    from ieiw.imageio import encode

    folder.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((size[1], size[0], 3), np.uint8)
    pixels[..., 0] = pixels[..., 2] = 255
    data = encode(pixels, "png")
    path = folder / name
    path.write_bytes(data)
    return path, data


def assert_not_carried(rows: list[dict[str, Any]], planted: Path, data: bytes) -> None:
    """No row holds the planted image's bytes or names it (its path or its file name)."""
    import pickle

    for row in rows:
        blob = pickle.dumps(row)
        assert data not in blob, f"row {row.get('id')} carries the planted image's bytes"
        assert PLANTED.encode() not in blob and str(planted).encode() not in blob, \
            f"row {row.get('id')} names the planted image"


def run_stages(config_path: Path) -> tuple[Any, list[str], dict[str, Any]]:
    """A build through the real stages in order, without Prefect: every unit's candidates, features and
    scores, then calibration and selection. Returns the build, the unit keys and each unit's scores outcome."""
    from ieiw import stages
    from ieiw.schemas.config import load_config

    build = stages.build_for(load_config(config_path))
    build.prepare()
    keys, outcomes = [], {}
    for name, unit in build.plan():
        stages.make_candidates(build, name, unit)
        stages.extract_features(build, unit.key)
        outcomes[unit.key] = stages.score_unit(build, unit.key)
        keys.append(unit.key)
    stages.calibrate_build(build, keys)
    for key in keys:
        stages.select_unit(build, key)
    return build, keys, outcomes
