"""LaMa in process: where the checkpoint comes from, the download rule, and lama-cleaner's geometry.

Output parity with lama-cleaner itself (its real server, same tiny model) is in
tests/integration/, which needs lama-cleaner's own venv (`make test-integration`).
"""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

from ieiw.schemas.units import BuildContext
from ieiw.backends.inpaint.lama import (
    LamaConfig,
    boxes_from_mask,
    crop_box,
    default_checkpoint,
    pad_to_modulo,
    torch_hub_dir,
)
from ieiw.builders.removal import PhraseCutSourceConfig, RemovalBuilder, RemovalConfig
from tiny_lama import write_tiny_lama


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny_lama(tmp_path_factory.mktemp("lama") / "tiny.pt")


def scene(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), np.uint8)
    mask[height // 5: height // 3, width // 6: width // 3] = 1
    mask[height - height // 4: height - 5, width - width // 4: width - 7] = 1
    return image, mask


@pytest.mark.parametrize("env", [{"TORCH_HOME": "th"}, {"XDG_CACHE_HOME": "xdg"}, {}])
def test_hub_dir_is_torchs_own(monkeypatch, tmp_path, env):
    import torch

    for name in ("TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, str(tmp_path / value))
    assert torch_hub_dir() == Path(torch.hub.get_dir())


def test_checkpoint_comes_from_config_then_lama_model_url_then_the_tools_cache(monkeypatch, tmp_path, tiny):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("LAMA_MODEL_URL", raising=False)
    assert default_checkpoint() == tmp_path / "torch" / "hub" / "checkpoints" / "big-lama.pt"
    monkeypatch.setenv("LAMA_MODEL_URL", "https://example.org/models/other-lama.pt")
    assert default_checkpoint().name == "other-lama.pt", "a URL names the cached file, as lama-cleaner does"
    monkeypatch.setenv("LAMA_MODEL_URL", str(tiny))
    assert default_checkpoint() == tiny, "a local path is used as it is"
    assert LamaConfig(checkpoint=tmp_path / "mine.pt").checkpoint_path() == tmp_path / "mine.pt"


def test_missing_weights_are_named_and_never_downloaded_unless_allowed(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("LAMA_MODEL_URL", "http://127.0.0.1:9/big-lama.pt")  # nothing listens on port 9
    config = LamaConfig()
    [line] = config.preflight()
    expected = tmp_path / "torch" / "hub" / "checkpoints" / "big-lama.pt"
    assert str(expected) in line and "allow_download" in line
    with pytest.raises(FileNotFoundError, match="big-lama.pt"):
        config.create()
    assert not expected.exists()
    assert LamaConfig(allow_download=True).preflight() == []


class _Serve(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_allowed_download_checks_the_md5(monkeypatch, tmp_path, tiny):
    served = tmp_path / "www"
    served.mkdir()
    (served / "big-lama.pt").write_bytes(tiny.read_bytes())
    handler = lambda *a, **k: _Serve(*a, directory=str(served), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
        monkeypatch.setenv("LAMA_MODEL_URL", f"http://127.0.0.1:{server.server_port}/big-lama.pt")
        cached = tmp_path / "torch" / "hub" / "checkpoints" / "big-lama.pt"
        monkeypatch.setenv("LAMA_MODEL_MD5", "0" * 32)
        with pytest.raises(ValueError, match="md5"):
            LamaConfig(allow_download=True, device="cpu").create()
        assert not cached.exists() and not list(cached.parent.glob("*.partial"))
        monkeypatch.setenv("LAMA_MODEL_MD5", hashlib.md5(tiny.read_bytes()).hexdigest())
        inpainter = LamaConfig(allow_download=True, device="cpu").create()
        assert cached.read_bytes() == tiny.read_bytes()
        image, mask = scene(40, 56)
        assert inpainter.inpaint([image], [mask])[0].shape == image.shape
    finally:
        server.shutdown()


def test_padding_and_boxes_follow_lama_cleaner():
    array = np.arange(5 * 7).reshape(5, 7).astype(np.uint8)
    padded = pad_to_modulo(array)
    assert padded.shape == (8, 8)
    assert (padded[5, :7] == array[4]).all() and (padded[6, :7] == array[3]).all(), "symmetric: edge repeated, then mirrored"
    assert (padded[:5, 7] == array[:, 6]).all()
    assert pad_to_modulo(np.zeros((16, 24, 3))).shape == (16, 24, 3)
    mask = np.zeros((50, 60), np.uint8)
    mask[10:20, 5:15] = 255
    mask[30:40, 40:58] = 255
    assert sorted(boxes_from_mask(mask)) == [(5, 10, 15, 20), (40, 30, 58, 40)]
    # a box near the right edge: the crop keeps its size by reaching further left
    assert crop_box((40, 30, 58, 40), 60, 50, 10) == (22, 20, 60, 50)  # 38 wide as asked, 30 high


def test_outputs_keep_pixels_outside_the_mask_and_do_not_depend_on_batching(tiny):
    images, masks = zip(*(scene(h, w, seed) for seed, (h, w) in enumerate([(97, 131), (64, 64), (97, 131), (33, 250)])))
    one = LamaConfig(checkpoint=tiny, device="cpu", batch_size=1).create().inpaint(images, masks)
    many = LamaConfig(checkpoint=tiny, device="cpu", batch_size=4).create().inpaint(images, masks)
    for image, mask, a, b in zip(images, masks, one, many, strict=True):
        assert a.shape == image.shape and a.dtype == np.uint8
        assert (a[mask == 0] == image[mask == 0]).all()
        assert (a[mask == 1] != image[mask == 1]).mean() > 0.9
        assert np.abs(a.astype(int) - b).max() <= 1


def test_crop_strategy_inpaints_each_region_with_its_margin_only(tiny):
    image, mask = scene(700, 900)
    config = dict(checkpoint=tiny, device="cpu", hd_strategy_crop_margin=32)
    cropped = LamaConfig(**config).create().inpaint([image], [mask])[0]
    whole = LamaConfig(**config, hd_strategy="original").create().inpaint([image], [mask])[0]
    assert (cropped[mask == 0] == image[mask == 0]).all()
    # each region's crop (box + margin) is inpainted on its own: the result there is a direct call on that crop
    (l, t, r, b), _ = sorted(crop_box(box, 900, 700, 32) for box in boxes_from_mask(mask * 255))
    direct = LamaConfig(**config, hd_strategy="original").create().inpaint([image[t:b, l:r]], [mask[t:b, l:r]])[0]
    assert (cropped[t:b, l:r] == direct).all()
    small = LamaConfig(**config, hd_strategy_crop_trigger_size=1000).create().inpaint([image], [mask])[0]
    assert (small == whole).all(), "below the trigger size the crop strategy runs on the whole image"


def test_resize_strategy_keeps_original_pixels_outside_the_mask(tiny):
    image, mask = scene(300, 420)
    out = LamaConfig(checkpoint=tiny, device="cpu", hd_strategy="resize",
                     hd_strategy_resize_limit=128).create().inpaint([image], [mask])[0]
    assert out.shape == image.shape and (out[mask == 0] == image[mask == 0]).all()


def test_rows_name_lama_and_the_checkpoint_digest_enters_the_fingerprint(sample_root, tiny, tmp_path):
    config = RemovalConfig(source=PhraseCutSourceConfig(root=sample_root, splits=["train"], limit=4),
                           inpaint={"backend": "lama", "checkpoint": str(tiny), "device": "cpu"})
    builder = RemovalBuilder(config, BuildContext(root=Path.cwd(), out_dir=tmp_path, unit_size=4))
    rows = builder.build_unit(builder.plan()[0]).rows
    assert rows and {(r["builder"]["backend"], r["builder"]["embedded"], r["builder"]["model"]) for r in rows} == {
        ("lama", False, "big-lama")}
    other = write_tiny_lama(tmp_path / "other.pt", seed=1)
    config2 = config.model_copy(update={"inpaint": config.inpaint.model_copy(update={"checkpoint": other})})
    builder2 = RemovalBuilder(config2, BuildContext(root=Path.cwd(), out_dir=tmp_path, unit_size=4))
    assert builder2.fingerprint() != builder.fingerprint() and builder2.params() == builder.params()
