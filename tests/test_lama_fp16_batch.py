"""LaMa settings the traced model must honour or refuse at load (issue #23, part 5), on a traced model of
LaMa's own FFC architecture (bench/lama_ffc.py at tiny width, traced at batch 1 as ``bin/to_jit.py`` does).

fp16: half-precision cuFFT takes only power-of-two sizes. The CPU has no half FFT at all, so on the CPU
a half FFT fails at every size: a model that runs in half on the CPU ran its FFTs in float32."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ieiw.backends.inpaint.lama import LamaConfig, float32_fft, prepare_lama

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import lama_ffc


@pytest.fixture(scope="module")
def ffc_path(tmp_path_factory) -> Path:
    return lama_ffc.trace_to_file(lama_ffc.lama_shaped(lama_ffc.TINY_LAMA), tmp_path_factory.mktemp("lama") / "ffc.pt")


class FFTDtypes(TorchDispatchMode):
    """Records the dtype of every FFT kernel's input."""

    def __init__(self):
        super().__init__()
        self.seen: list[torch.dtype] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if "_fft_" in str(func):
            self.seen.append(args[0].dtype)
        return func(*args, **(kwargs or {}))


def inputs(batch: int = 2, side: int = 72):
    generator = torch.Generator().manual_seed(1)
    image = torch.rand(batch, 3, side, side + 16, generator=generator)
    mask = (torch.rand(batch, 1, side, side + 16, generator=generator) > 0.7).float()
    return image, mask


def test_fp16_runs_the_ffts_in_float32(ffc_path):
    image, mask = inputs()
    reference = lama_ffc.load_traced(ffc_path)(image, mask)
    plain = lama_ffc.load_traced(ffc_path).half()
    with pytest.raises(RuntimeError, match="Unsupported dtype Half"):
        plain(image.half(), mask.half())  # a plain .half(): the FFT in half precision
    net = lama_ffc.load_traced(ffc_path).half()
    assert float32_fft(net) == 8  # rfftn + irfftn in each of the 4 FourierUnits (2 blocks x 2 FFCs)
    assert float32_fft(net) == 0, "idempotent: a graph shared by submodules is cast once"
    with FFTDtypes() as fft, torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="ComplexHalf support is experimental")  # torch warns once
        out = net(image.half(), mask.half())
    assert out.dtype == torch.float16 and fft.seen and set(fft.seen) <= {torch.float32, torch.complex64}
    assert (out.float() - reference).abs().max() < 2e-2, "half weights, float32 FFTs: close to the float32 model"


def test_the_fp16_load_probe_passes_or_refuses_with_the_reason(ffc_path, tmp_path):
    prepare_lama(lama_ffc.load_traced(ffc_path), torch.device("cpu"), half=True, batch_size=4)

    class ComplexFFT(torch.nn.Module):  # a full complex FFT, which float32_fft does not rewrite
        def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return image * (1 - mask) + mask * torch.fft.fft2(image).real

    traced = torch.jit.trace(ComplexFFT(), (torch.rand(1, 3, 16, 16), torch.zeros(1, 1, 16, 16)))
    with pytest.raises(RuntimeError, match=r"cannot run in fp16 .*fp16: false"):
        prepare_lama(traced, torch.device("cpu"), half=True, batch_size=1)


def scenes(count: int, height: int = 88, width: int = 120):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]
    masks = []
    for i in range(count):
        mask = np.zeros((height, width), np.uint8)
        mask[10 + 5 * i: 50 + 5 * i, 20 + 7 * i: 70 + 7 * i] = 1
        masks.append(mask)
    return images, masks


def test_batch_of_4_equals_four_batch_1_calls_on_the_traced_ffc_generator(ffc_path):
    images, masks = scenes(4)
    one = LamaConfig(checkpoint=ffc_path, device="cpu", batch_size=1).create()
    four = LamaConfig(checkpoint=ffc_path, device="cpu", batch_size=4).create()
    calls = []
    net = four.net
    four.net = lambda image, mask: calls.append(image.shape[0]) or net(image, mask)
    batched = four.inpaint(images, masks)
    assert calls == [4], "one model call for the four images"
    alone = [one.inpaint([image], [mask])[0] for image, mask in zip(images, masks, strict=True)]
    for a, b, image, mask in zip(batched, alone, images, masks, strict=True):
        assert (a[mask == 1] != image[mask == 1]).mean() > 0.5
        assert np.abs(a.astype(int) - b).max() <= 1


class MixesItems(torch.nn.Module):  # what a batch-wide statistic frozen into a trace does
    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return image * (1 - mask) + mask * image.mean()


class FrozenBatch(torch.nn.Module):  # a reshape with the batch size written in as a constant
    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        flat = (image * (1 - mask)).reshape(1, -1)
        return flat.reshape(1, *image.shape[1:])


@pytest.mark.parametrize("model, message", [(MixesItems, "other pixels than one image at a time"),
                                            (FrozenBatch, "fails on a batch of 4")])
def test_a_model_that_cannot_batch_is_refused_at_load(tmp_path, model, message):
    path = tmp_path / "bad.pt"
    torch.jit.trace(model(), (torch.rand(1, 3, 16, 16), torch.zeros(1, 1, 16, 16))).save(str(path))
    with pytest.raises(RuntimeError, match=f"{message}.*batch_size: 1"):
        LamaConfig(checkpoint=path, device="cpu", batch_size=8).create()
    images, masks = scenes(2)
    out = LamaConfig(checkpoint=path, device="cpu", batch_size=1).create().inpaint(images, masks)
    assert all(o.shape == i.shape for o, i in zip(out, images, strict=True))
