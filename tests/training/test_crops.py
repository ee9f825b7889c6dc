"""The official crop policy per source, checked on what samples show: SIDD keeps its noise (a native crop),
editing pairs show the whole picture (squashed), and a cropped IEIW row always shows its masked object."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from ieiw.imageio import encode
from ieiw.schemas.manifest import Manifest
from ieiw.schemas.rows import image_cell, row_id, rows_to_table
from ieiw.schemas.shards import write_shard
from ieiw.training.config import DataConfig
from ieiw.training.crops import OFFICIAL_CROP, crop_policy, crop_window
from ieiw.training.data import ShardPairs, index_shards

RESOLUTION = 64


def pair_row(index: int, source: np.ndarray, target: np.ndarray, dataset: str, task: str,
             mask: np.ndarray | None = None) -> dict:
    height, width = source.shape[:2]
    return {
        "id": row_id(dataset, str(index), "test", {}, task), "task": task, "instruction": f"pair {index}",
        "source_image": image_cell(encode(source, "png"), f"s{index}.png"),
        "target_image": image_cell(encode(target, "png"), f"t{index}.png"),
        "mask": image_cell(encode(mask * 255, "png"), f"m{index}.png") if mask is not None else None,
        "width": width, "height": height, "origin": {"dataset": dataset, "record_id": str(index)},
        "exemplar": None, "scores": None,
        "builder": {"name": "test", "backend": "test", "embedded": True, "model": None, "seed": 0, "params": "{}"},
    }


def stage(folder: Path, rows: list[dict]) -> Path:
    manifest = Manifest(folder, "pairs", {"unit_rows": "test"})
    shard = write_shard(rows_to_table(rows), folder / "rows-00000.parquet", row_group_size=8)
    manifest.record("rows-00000", shard, fingerprint="f", stats={"rows": len(rows)})
    return folder


def samples(folder: Path, epochs: int, **kwargs) -> list[dict]:
    return list(ShardPairs(index_shards(folder), resolution=RESOLUTION, shuffle_buffer=0, epochs=epochs, **kwargs))


def noise(image: np.ndarray) -> float:
    """High-frequency noise: the std of the image minus its 3x3 median."""
    image = np.ascontiguousarray(image)
    return float((image.astype(np.float32) - cv2.medianBlur(image, 3).astype(np.float32)).std())


def test_sidd_samples_keep_the_native_noise(tmp_path):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:600, 0:800]
    clean = np.stack([xx * 255 // 800, yy * 255 // 600, np.full_like(xx, 128)], -1).astype(np.uint8)
    noisy = np.clip(clean + rng.normal(0, 18, clean.shape), 0, 255).astype(np.uint8)
    folder = stage(tmp_path, [pair_row(0, noisy, clean, "sidd", "enhance")])
    native = np.mean([noise(noisy[y:y + RESOLUTION, x:x + RESOLUTION])
                      for y, x in rng.integers(0, 500, (20, 2))])
    drawn = [noise(s["source"].permute(1, 2, 0).numpy()) for s in samples(folder, epochs=20)]
    assert abs(np.mean(drawn) - native) <= 0.2 * native, (np.mean(drawn), native)
    shrunk = [noise(s["source"].permute(1, 2, 0).numpy())
              for s in samples(folder, epochs=5, crop_policies={}, random_flip=False)]
    assert np.mean(shrunk) < 0.5 * native, "the check must tell a shrunk sample apart"


def test_editing_pairs_are_squashed_whole(tmp_path):
    """A 4:1 picture with a red edge on the left and a blue one on the right: the squashed sample shows both."""
    image = np.full((60, 240, 3), 128, np.uint8)
    image[:, :12] = (255, 0, 0)
    image[:, -12:] = (0, 0, 255)
    folder = stage(tmp_path, [pair_row(0, image, image, "magicbrush", "edit")])
    red, blue = np.array([255, 0, 0]), np.array([0, 0, 255])
    for sample in samples(folder, epochs=10):
        pixels = sample["source"].permute(1, 2, 0).numpy().astype(int)
        left, right = pixels[:, 0], pixels[:, -1]
        edges = (np.abs(left - red).max() < 40 and np.abs(right - blue).max() < 40) or \
                (np.abs(left - blue).max() < 40 and np.abs(right - red).max() < 40)  # mirrored
        assert edges and sample["source"].shape[-2:] == (RESOLUTION, RESOLUTION)


@pytest.mark.parametrize("policy", ["squash", "short-side"])
def test_an_ieiw_row_always_shows_its_masked_object(tmp_path, policy):
    """A removal pair on a wide picture with the object at the far right: in every draw (random crops
    included) the object is in the sample."""
    rows = []
    for index in range(6):
        target = np.full((80, 320, 3), 90, np.uint8)
        source = target.copy()
        x = 250 + index * 8
        source[30:50, x:x + 16] = (255, 0, 0)
        mask = np.zeros((80, 320), np.uint8)
        mask[30:50, x:x + 16] = 1
        rows.append(pair_row(index, source, target, "phrasecut", "remove", mask))
    folder = stage(tmp_path, rows)
    drawn = samples(folder, epochs=30, crop_policies={"ieiw": policy})
    for sample in drawn:
        pixels = sample["source"].permute(1, 2, 0).numpy().astype(int)
        red = (pixels[..., 0] > 180) & (pixels[..., 1] < 80)
        assert red.sum() >= 4, f"{policy}: sample of row {sample['id']} lost the masked object"
    if policy == "short-side":
        blind = samples(folder, epochs=30, crop_policies={"ieiw": policy}, random_flip=False)
        windows = {crop_window(320, 80, RESOLUTION, np.random.default_rng(i), "short-side") for i in range(50)}
        assert len(windows) > 10 and blind, "random windows vary; only the mask box keeps them on the object"


def test_policies_default_to_the_official_loaders():
    assert DataConfig().crop == OFFICIAL_CROP == {"sidd": "native", "editing": "squash", "ieiw": "squash"}
    assert crop_policy(OFFICIAL_CROP, "short-side", "gopro", "enhance") == "short-side"
    assert crop_policy(OFFICIAL_CROP, "short-side", "instructpix2pix", "edit") == "squash"
    assert crop_policy(OFFICIAL_CROP, "short-side", "phrasecut", "remove") == "squash"
    assert crop_policy({**OFFICIAL_CROP, "phrasecut:remove": "short-side"}, "short-side", "phrasecut",
                       "remove") == "short-side"
