"""bench/gpu.py stays runnable: its ``--tiny`` mode runs every stage's code path on the CPU with toy models
(the real backends, the real trainer pieces, diffusers' step) and prints one table; and the LaMa-shaped
network it traces keeps big-lama's shape and survives batching."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from ieiw_testing import REPO

sys.path.insert(0, str(REPO / "bench"))

# Every row the table must have, as the start of its stage cell; tiny mode runs each on the CPU or says why not.
ROWS = [
    "lama-512 (tiny", "lama-512 fp16", "lama-1024 (HD crop)", "lama-512, 2 workers on 1 GPU",
    "sam-amg-1024 vit_h, 32x32 points", "sam-amg-1024, every mask kept",
    "clip-vit-l14 image features (tiny", "clip-vit-l14 image features, compiled",
    "laion heads v1 + improved", "fid-inception pool3",
    "paint-by-example-512, 50 steps", "paint-by-example-512, compiled UNet", "vlm judge qwen2.5-vl-7b",
    "h2d copy of a 64-pair batch, pageable", "h2d copy of a 64-pair batch, pinned",
    "train ieiw, 8-ch SD 1.5 UNet 256 px, grad ckpt on", "train diffusers' ip2p step, same, grad ckpt on",
    "train ieiw, 8-ch SD 1.5 UNet 256 px, grad ckpt off", "train diffusers' ip2p step, same, grad ckpt off",
    "train ieiw, grad ckpt on, compiled UNet",
]
# Rows that only a GPU (or a component ieiw does not have) can fill: on the CPU they must say so.
CPU_SKIPS = {"lama-512 fp16": ("needs CUDA",), "h2d copy": ("needs CUDA",)}
NUMBER = re.compile(r"^[0-9][0-9.,]* (images|vectors|pairs)/s$")


@pytest.mark.slow
def test_tiny_mode_prints_every_row_with_a_figure_or_a_reason(tmp_path):
    result = tmp_path / "result.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu.py"), "--tiny", "--json", str(result)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| stage"))
    assert [c.strip() for c in lines[header].strip("|").split("|")] == [
        "stage", "items/s", "peak memory", "GPU busy share", "ratio to diffusers (training)"]
    table = []
    for line in lines[header + 2:]:
        if not line.startswith("|"):
            break
        table.append([c.strip() for c in line.strip("|").split("|")])
    assert len(table) == len(ROWS), [row[0] for row in table]
    for prefix in ROWS:
        matches = [row for row in table if row[0].startswith(prefix)]
        assert len(matches) == 1, (prefix, [row[0] for row in table])
        stage, rate, peak, busy, ratio = matches[0]
        skip = next((why for key, why in CPU_SKIPS.items() if stage.startswith(key)), None)
        if skip:
            assert rate.startswith("skipped: ") and any(why in rate for why in skip), (stage, rate)
            continue
        assert NUMBER.match(rate) and float(rate.split()[0].replace(",", "")) > 0, (stage, rate)
        assert peak == "n/a" and busy == "n/a", (stage, peak, busy)  # CUDA-only columns on the CPU
        if stage.startswith("train ieiw, 8-ch"):
            assert float(ratio) > 0, (stage, ratio)  # our step against diffusers', same models and batch
    assert "FAILED" not in proc.stdout
    checked = r"^check ok: lama traced at batch 1, run at batch 8 = 8 runs at batch 1"
    assert re.search(checked, proc.stdout, re.MULTILINE)

    data = json.loads(result.read_text())
    assert len(data["rows"]) == len(ROWS) and all(check["ok"] for check in data["checks"])
    by_stage = {row["stage"]: row for row in data["rows"]}
    sam = next(row for stage, row in by_stage.items() if stage.startswith("sam-amg-1024 vit_h"))
    assert any("regions per image" in note for note in sam["notes"])


def test_the_lama_shaped_network_has_big_lamas_size():
    """LaMa's paper gives Big LaMa 51M parameters; the generator of configs/training/big-lama.yaml built here
    (on the meta device: no memory, no time) has them."""
    import lama_ffc
    import torch

    with torch.device("meta"):
        generator = lama_ffc.FFCResNetGenerator(**lama_ffc.BIG_LAMA)
    assert sum(p.numel() for p in generator.parameters()) == 50_975_875
    blocks = [m for m in generator.modules() if isinstance(m, lama_ffc.FFCResnetBlock)]
    assert len(blocks) == 18
    spectral = blocks[0].conv1.ffc.convg2g
    assert isinstance(spectral, lama_ffc.SpectralTransform)  # 0.75 of the 512 channels go through the FFT
    assert spectral.conv1[0].in_channels == 384 and blocks[0].conv1.ffc.convl2l.in_channels == 128


@pytest.mark.filterwarnings("ignore:.*torch.jit.trace:FutureWarning")
def test_batch_check_passes_a_traced_lama_and_catches_a_model_that_mixes_items(tmp_path):
    import lama_ffc
    import torch

    path = lama_ffc.trace_to_file(lama_ffc.lama_shaped(lama_ffc.TINY_LAMA), tmp_path / "lama.pt")
    traced = lama_ffc.load_traced(path)
    assert lama_ffc.batch_consistency(traced, batch=8, size=64) < 1e-5  # traced at batch 1 (to_jit.py's 120 px)
    assert lama_ffc.batch_consistency(traced, batch=3, size=96) < 1e-5  # other batch and size: not frozen

    class MixesItems(torch.nn.Module):  # what a bad trace or a batch-wide statistic does
        def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return image * (1 - mask) + mask * image.mean()

    mixing = torch.jit.trace(MixesItems(), (torch.rand(1, 3, 16, 16), torch.zeros(1, 1, 16, 16)))
    assert lama_ffc.batch_consistency(mixing, batch=8, size=32) > 1e-3

    class FrozenBatch(torch.nn.Module):  # a reshape with the batch written in as a constant
        def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return (image * (1 - mask)).reshape(1, -1)[:, : 3 * 16 * 16].reshape(1, 3, 16, 16)

    frozen = torch.jit.trace(FrozenBatch(), (torch.rand(1, 3, 16, 16), torch.zeros(1, 1, 16, 16)))
    with pytest.raises(ValueError, match="batch of 8 gave"):
        lama_ffc.batch_consistency(frozen, batch=8, size=16)


def test_the_training_batch_search_stops_at_the_first_out_of_memory():
    """The GPU run's search for the batch that fits (doubling from 8), with a step that runs out of memory
    above 32 pairs: the CUDA-only logic, checked without a GPU."""
    import gpu
    import torch

    class GpuLike(gpu.Bench):
        cuda = True  # the property, as a GPU run sees it

        def sync(self) -> None:
            pass

        def free(self) -> None:
            pass

    class Step:
        def __init__(self, fits: int, error: type[BaseException] = torch.cuda.OutOfMemoryError):
            self.fits, self.error, self.calls = fits, error, []
            self.optimizer = type("Optimizer", (), {"zero_grad": lambda self, set_to_none: None})()

        def batch(self, size: int, pin: bool) -> int:
            return size

        def __call__(self, size: int) -> None:
            self.calls.append(size)
            if size > self.fits:
                raise self.error("CUDA out of memory. Tried to allocate 2.00 GiB")

    def bench(max_batch: int) -> gpu.Bench:
        return GpuLike(tiny=False, device=torch.device("cpu"), cache=REPO, compile=False, compile_backend="inductor",
                       mixed_precision="fp16", max_batch=max_batch, train_steps=1)

    step = Step(fits=32)
    size, notes = gpu.fitting_batch(bench(256), step)
    assert size == 32 and step.calls == [8, 8, 16, 16, 32, 32, 64]
    assert notes == ["batch 32 (tried 8 ok, 16 ok, 32 ok, 64 out of memory; --max-batch 256)"]
    assert gpu.fitting_batch(bench(16), Step(fits=32))[0] == 16  # capped
    with pytest.raises(RuntimeError, match="batch 8 does not fit"):
        gpu.fitting_batch(bench(256), Step(fits=4))
    with pytest.raises(ValueError):  # anything but running out of memory is an error, not a batch size
        gpu.fitting_batch(bench(256), Step(fits=8, error=ValueError))
