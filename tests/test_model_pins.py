"""``sha256:`` beside a model path: a swapped checkpoint (TorchScript and pickle files are code) never loads, the
preflight names it, and rows record the pinned digest in ``builder.model`` without changing their ids."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from tiny_lama import write_tiny_lama

from ieiw.backends.features.clip import ClipFeaturesConfig
from ieiw.backends.inpaint.lama import LamaConfig
from ieiw.backends.inpaint.opencv import OpenCVInpaintConfig
from ieiw.backends.regions import SamRegionsConfig
from ieiw.builders.removal import PhraseCutSourceConfig, RemovalBuilder, RemovalConfig
from ieiw.schemas.config import ConfigError, ModelDigestError, load_config
from ieiw.schemas.filehash import path_digest
from ieiw.schemas.units import BuildContext


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny_lama(tmp_path_factory.mktemp("pins") / "big-lama.pt")


def test_a_swapped_checkpoint_is_refused_before_it_loads(tmp_path, tiny):
    """The pin is checked before torch.jit.load runs the file: a file that is not TorchScript at all fails on
    the digest, not in torch."""
    swapped = tmp_path / "big-lama.pt"
    swapped.write_bytes(b"import os; os.system('echo pwned')  # not what was pinned")
    config = LamaConfig(checkpoint=swapped, device="cpu", sha256=sha(tiny))
    with pytest.raises(ModelDigestError, match=r"big-lama\.pt has sha256 .* but the config pins"):
        config.create()
    assert any("pins" in line for line in config.preflight())
    assert LamaConfig(checkpoint=tiny, device="cpu", sha256=f"sha256:{sha(tiny).upper()}").preflight() == []


def test_rows_record_the_pinned_digest_and_keep_their_ids(sample_root, tiny, tmp_path):
    def rows(**pin):
        config = RemovalConfig(source=PhraseCutSourceConfig(root=sample_root, splits=["train"], limit=3),
                               inpaint={"backend": "lama", "checkpoint": str(tiny), "device": "cpu", **pin})
        builder = RemovalBuilder(config, BuildContext(root=Path.cwd(), out_dir=tmp_path, unit_size=3))
        return builder.build_unit(builder.plan()[0]).rows

    plain, pinned = rows(), rows(sha256=sha(tiny))
    assert {r["builder"]["model"] for r in plain} == {"big-lama"}
    assert {r["builder"]["model"] for r in pinned} == {f"big-lama@sha256:{sha(tiny)}"}
    assert [r["id"] for r in plain] == [r["id"] for r in pinned], "a pin checks the model; it changes no pixel"


def test_a_pinned_hub_model_folder_is_its_content_digest(tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights")
    good = ClipFeaturesConfig(model=str(folder), sha256=path_digest(folder))
    good.check_model_digests()
    assert good.model_record() == f"{folder}@sha256:{path_digest(folder)}"
    (folder / "model.safetensors").write_bytes(b"other weights")
    with pytest.raises(ModelDigestError, match="model"):
        ClipFeaturesConfig(model=str(folder), sha256=good.sha256).create()


def test_pins_that_cannot_mean_anything_are_config_errors(tmp_path, tiny):
    with pytest.raises(ValueError, match="64 hex digits"):
        LamaConfig(checkpoint=tiny, sha256="abc")
    with pytest.raises(ModelDigestError, match="names weights, which it does not load"):
        LamaConfig(checkpoint=tiny, sha256={"weights": sha(tiny)}).check_model_digests()
    opencv = OpenCVInpaintConfig(sha256="0" * 64)
    with pytest.raises(ModelDigestError, match="loads 0 model files"):
        opencv.create()
    sam = SamRegionsConfig(checkpoint=tiny, sha256={"checkpoint": "0" * 64})
    assert any("pins" in line for line in sam.preflight())


def test_a_config_file_pin_reaches_the_preflight(tmp_path, tiny):
    config = tmp_path / "pinned.yaml"
    pin = "ab" * 32
    config.write_text(f"removal:\n  source: {{root: {tmp_path}}}\n  inpaint:\n    backend: lama\n"
                      f"    checkpoint: {tiny}\n    sha256: {pin}\n")
    loaded = load_config(config)
    assert any(f"pins {pin}" in line for line in loaded.removal.inpaint.preflight())
    with pytest.raises(ConfigError):
        load_config(config, {"removal": {"inpaint": {"sha256": 12}}})
