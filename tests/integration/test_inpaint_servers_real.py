"""The server backends against the real servers (conftest.py starts them from their side venvs):

- server builds: the real `ieiw build` (Prefect flow) on the synthetic sample with
  ``removal.inpaint`` on lama-cleaner (``--model lama``, the tiny TorchScript model) and on IOPaint
  (``--model cv2``): pairs are built, rows name the server backend, pixels outside the mask are the
  source's;
- parity: the in-process ``inpaint.lama`` (LamaInpainter) and lama-cleaner's / IOPaint's LaMa code
  path on the same tiny model and inputs agree within one grey level: odd sizes, sizes not divisible
  by 8, an image over the crop trigger with two separate mask blobs (default hd settings), and the
  ``resize`` and ``original`` strategies.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from ieiw_testing import run_ieiw, write_config

from ieiw.backends.inpaint.servers import IOPaintConfig, LamaCleanerConfig
from ieiw.backends.inpaint.lama import LamaConfig
from ieiw.imageio import decode_mask, decode_rgb
from ieiw.schemas.manifest import load_manifest

pytestmark = pytest.mark.integration


def rows_of(folder: Path) -> list[dict]:
    manifest = load_manifest(folder)
    rows: list[dict] = []
    for entry in manifest["units"].values():
        rows += pq.read_table(folder / entry["shard"]).to_pylist()
    return rows


@pytest.mark.parametrize("server_fixture, inpaint, label, embedded", [
    ("lama_cleaner_server", {"backend": "lama-cleaner", "model": "lama"}, "lama-cleaner-lama", False),
    ("iopaint_server", {"backend": "iopaint", "model": "cv2"}, "iopaint-cv2", True),
])
def test_server_build(request, sample_root, tmp_path, server_fixture, inpaint, label, embedded):
    server = request.getfixturevalue(server_fixture)
    removal = {"source": {"root": str(sample_root), "splits": ["train", "val"], "limit": 6}, "mask_dilation": 5,
               "image_format": "png", "inpaint": {**inpaint, "urls": [server.url], "retries": 1, "timeout": 60}}
    config = write_config(tmp_path / "build.yaml", sample_root, tmp_path / "out", unit_size=4, removal=removal)
    run_ieiw("build", config, timeout=600)

    candidates = rows_of(tmp_path / "out" / "candidates")
    removes = [row for row in candidates if row["task"] == "remove"]
    assert len(removes) >= 8, f"{len(removes)} remove pairs from 12 records"
    assert {row["task"] for row in candidates} == {"remove", "add"}
    for row in removes:
        assert row["builder"]["backend"] == label and row["builder"]["embedded"] is embedded
        source, target = decode_rgb(row["source_image"]["bytes"]), decode_rgb(row["target_image"]["bytes"])
        mask = decode_mask(row["mask"]["bytes"]) > 0
        assert source.shape == target.shape and mask.any()
        assert np.array_equal(source[~mask], target[~mask]), "pixels outside the mask are the source's"
        assert not np.array_equal(source[mask], target[mask]), "the server filled the mask"
    kept, rejected = tmp_path / "out" / "ieiw", tmp_path / "out" / "rejected"
    assert len(rows_of(kept)) + (len(rows_of(rejected)) if (rejected / "manifest.json").exists() else 0) \
        == len(candidates)
    log = server.log_text()
    assert ("POST /inpaint" in log) if server.name == "lama-cleaner" else ("/api/v1/inpaint" in log)


def blob_mask(height: int, width: int, boxes) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    for top, left, bottom, right in boxes:
        mask[top:bottom, left:right] = 1
    yy, xx = np.mgrid[:height, :width]  # one round blob too, so contours are not only rectangles
    cy, cx, r = height // 2, width // 3, max(3, min(height, width) // 10)
    mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
    return mask


def photo(height: int, width: int, seed: int) -> np.ndarray:
    """A real photograph (scikit-image ships it) cut to size, so the model sees texture."""
    from skimage import data

    base = data.astronaut() if seed % 2 == 0 else data.coffee()
    reps = (-(-height // base.shape[0]), -(-width // base.shape[1]), 1)
    return np.ascontiguousarray(np.tile(base, reps)[:height, :width])


CASES = {  # (height, width): mask boxes (top, left, bottom, right)
    (97, 131): [(10, 12, 40, 50)],          # odd, not divisible by 8
    (61, 77): [(3, 3, 20, 30)],             # odd, small
    (128, 96): [(60, 40, 100, 90)],         # divisible by 8
    (700, 900): [(40, 60, 120, 200), (480, 620, 600, 820)],  # over the crop trigger, two separate blobs
}


def parity_inputs():
    images = [photo(h, w, i) for i, (h, w) in enumerate(CASES)]
    masks = [blob_mask(h, w, boxes) for (h, w), boxes in CASES.items()]
    return images, masks


def assert_parity(local: list[np.ndarray], remote: list[np.ndarray], images, masks) -> None:
    for out_local, out_remote, image, mask in zip(local, remote, images, masks, strict=True):
        assert out_local.shape == out_remote.shape == image.shape
        diff = np.abs(out_local.astype(np.int16) - out_remote.astype(np.int16))
        assert diff.max() <= 1, f"{image.shape}: max difference {diff.max()} grey levels"
        assert np.array_equal(out_remote[mask == 0], image[mask == 0])
        assert (out_remote[mask > 0] != image[mask > 0]).any(), "the model ran"


@pytest.mark.parametrize("hd", [
    {},  # the defaults: crop, trigger 800, margin 196
    {"hd_strategy": "resize", "hd_strategy_resize_limit": 512},
    {"hd_strategy": "original"},
], ids=["crop-default", "resize-512", "original"])
def test_parity_with_lama_cleaner(lama_cleaner_server, tiny_lama_path, hd):
    images, masks = parity_inputs()
    local = LamaConfig(checkpoint=tiny_lama_path, device="cpu", **hd).create().inpaint(images, masks)
    before = len(lama_cleaner_server.log_text())
    remote = LamaCleanerConfig(urls=[lama_cleaner_server.url], model="lama", **hd).create().inpaint(images, masks)
    assert_parity(local, remote, images, masks)
    log = lama_cleaner_server.log_text()[before:]
    strategy = hd.get("hd_strategy", "crop")
    assert f"hd_strategy: {strategy.capitalize()}" in log
    if strategy == "crop":
        assert log.count("Run crop strategy") == 1, "only the 900x700 image is over the trigger"
    if strategy == "resize":
        assert "Run resize strategy, origin size: (700, 900, 3) forward size: (398, 512, 3)" in log


def test_parity_with_iopaint_lama(iopaint_lama_server, tiny_lama_path):
    images, masks = parity_inputs()
    local = LamaConfig(checkpoint=tiny_lama_path, device="cpu").create().inpaint(images, masks)
    remote = IOPaintConfig(urls=[iopaint_lama_server.url], model="lama").create().inpaint(images, masks)
    assert_parity(local, remote, images, masks)
    assert "Run crop strategy" in iopaint_lama_server.log_text()
