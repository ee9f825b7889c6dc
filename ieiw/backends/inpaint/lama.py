"""LaMa in process: the TorchScript ``big-lama.pt`` that lama-cleaner and IOPaint run, with their pre-
and post-processing, so a build needs no server (docs/removal.md).

Matching lama-cleaner 1.2.5 (``lama_cleaner/model/{base,lama}.py``, ``helper.py``) step for step:

- the mask is binarised as its server does (``> 127`` -> fill), the image is RGB;
- each image (or crop) is padded bottom/right to a multiple of 8 with numpy's ``symmetric`` mode,
  scaled to [0, 1] CHW float, run as ``model(image[B,3,H,W], mask[B,1,H,W])``, clipped, truncated to
  ``uint8`` (``astype``, not rounding) and cropped back;
- the result is composited with the original outside the mask;
- HD strategies: ``crop`` (when the long side exceeds the trigger size, each external contour's box
  plus a margin is inpainted on its own and pasted back, in contour order), ``resize`` (when the long
  side exceeds the limit, inpaint a bicubic downscale, upscale bicubic, keep original pixels where the
  full-size mask is off) and ``original``. Defaults are lama-cleaner 1.2.5's web-app settings for
  LaMa: crop, trigger 800 px, margin 196 px, resize limit 2048 px.

Where the checkpoint comes from: the config's ``checkpoint``; else ``LAMA_MODEL_URL`` when it names an
existing file (as lama-cleaner does); else the torch-hub cache file those tools download to
(``$TORCH_HOME/hub/checkpoints/big-lama.pt``, ``TORCH_HOME`` defaulting to ``$XDG_CACHE_HOME/torch``).
A download happens only with ``allow_download: true``, and its md5 (``LAMA_MODEL_MD5``) is checked.

Checked when the model loads (:func:`prepare_lama`), so a setting the model cannot honour fails there,
loudly, instead of giving silently different pixels:

- ``fp16`` (CUDA only): the model's weights and activations go to half precision, but its FFTs do
  not. LaMa's ``FourierUnit`` (``saicinpainting/training/modules/ffc.py``) calls ``torch.fft.rfftn`` /
  ``irfftn`` on its input's dtype, and half-precision cuFFT takes only power-of-two sizes, so a plain
  ``.half()`` fails on most images. :func:`float32_fft` rewrites the TorchScript graphs: every
  ``aten::fft_rfftn`` gets its input cast to float32 and its spectrum cast back to complex half,
  every ``aten::fft_irfftn`` its spectrum cast to complex64 and its output back to half. A probe call
  at a size whose FFT is not a power of two must then pass, or fp16 is refused with the reason.
- ``batch_size > 1``: big-lama.pt was traced at batch 1 (``bin/to_jit.py``); a trace can freeze the
  batch size or mix items. :func:`batch_consistency` compares one call on ``min(batch_size, 4)``
  images with one call per image; an error or a difference above :data:`BATCH_TOLERANCE` refuses the
  batch size, naming ``batch_size: 1`` as the way out.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlparse

import cv2
import numpy as np
from pydantic import Field

from ieiw.backends.inpaint.base import Inpainter
from ieiw.schemas.config import BackendConfig, ModelPath, StrictModel
from ieiw.schemas.filehash import path_digest
from ieiw.schemas.registry import register_backend

DEFAULT_LAMA_URL = "https://github.com/Sanster/models/releases/download/add_big_lama/big-lama.pt"
DEFAULT_LAMA_MD5 = "e3aa4aaa15225a33ec84f9f4bc47e500"
PAD_MOD = 8
PROBE_SIDE = 72  # a multiple of 8 whose FFT sizes (72 / 8 = 9 at the bottleneck) are not powers of two
BATCH_TOLERANCE = {False: 1 / 255, True: 4 / 255}  # by half: the largest |batched - alone| accepted, in [0, 1]
MASK_THRESHOLD = 127  # lama-cleaner's server: cv2.threshold(mask, 127, 255, THRESH_BINARY)


class HDStrategyFields(StrictModel):
    """How large images are handled (lama-cleaner's / IOPaint's ``hd_strategy`` settings)."""

    hd_strategy: Literal["crop", "resize", "original"] = Field(
        "crop", description="crop: inpaint each mask box with a margin; resize: inpaint a downscale; original: as is")
    hd_strategy_crop_trigger_size: int = Field(800, ge=1, description="crop only when the long side is larger")
    hd_strategy_crop_margin: int = Field(196, ge=0, description="context around each mask box, px")
    hd_strategy_resize_limit: int = Field(2048, ge=8, description="resize only when the long side is larger")

    def hd_params(self) -> dict[str, Any]:
        return {
            "hd_strategy": self.hd_strategy,
            "hd_strategy_crop_trigger_size": self.hd_strategy_crop_trigger_size,
            "hd_strategy_crop_margin": self.hd_strategy_crop_margin,
            "hd_strategy_resize_limit": self.hd_strategy_resize_limit,
        }


def torch_hub_dir() -> Path:
    """``torch.hub.get_dir()`` without importing torch (pre-flight runs before any model loads and
    must stay fast); tests check it agrees with torch's own under the same environment."""
    if os.environ.get("TORCH_HOME"):
        return Path(os.path.expanduser(os.environ["TORCH_HOME"])) / "hub"
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(os.path.expanduser(cache)) / "torch" / "hub"


def lama_model_url() -> str:
    return os.environ.get("LAMA_MODEL_URL", DEFAULT_LAMA_URL)


def lama_model_md5() -> str:
    return os.environ.get("LAMA_MODEL_MD5", DEFAULT_LAMA_MD5)


def default_checkpoint() -> Path:
    """Where lama-cleaner / IOPaint look: ``LAMA_MODEL_URL`` if it is a local file, else the hub cache."""
    url = lama_model_url()
    if os.path.exists(url):
        return Path(url)
    return torch_hub_dir() / "checkpoints" / os.path.basename(urlparse(url).path)


def md5_file(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class LamaConfig(HDStrategyFields, BackendConfig):
    """LaMa (TorchScript big-lama.pt) in this process, on CPU or CUDA."""

    kind: ClassVar[str] = "inpaint"
    runtime_fields: ClassVar[frozenset[str]] = frozenset({"device", "batch_size", "allow_download"})

    backend: Literal["lama"] = "lama"
    checkpoint: ModelPath = Field(None, description="big-lama.pt; default: the file lama-cleaner/IOPaint use")
    device: str = Field("auto", description="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    fp16: bool = Field(False, description="half precision on CUDA, FFTs in float32 (ignored on CPU)")
    batch_size: int = Field(4, ge=1, description="images per model call, grouped by padded size")
    allow_download: bool = Field(False, description="download big-lama.pt when missing (md5-checked)")

    def label(self) -> str:
        return "lama"

    def model_id(self) -> str:
        return "big-lama"

    def row_params(self) -> dict[str, Any]:
        return {**self.hd_params(), "fp16": self.fp16}

    def checkpoint_path(self) -> Path:
        return Path(self.checkpoint) if self.checkpoint is not None else default_checkpoint()

    def model_files(self) -> dict[str, Path | None]:
        return {"checkpoint": self.checkpoint_path()}

    def model_digests(self) -> dict[str, str | None]:
        path = self.checkpoint_path()
        return {"checkpoint": path_digest(path) if path.exists() else None}

    def preflight(self) -> list[str]:
        path = self.checkpoint_path()
        if path.exists() or self.allow_download:
            return self.digest_problems()
        return [f"inpaint backend lama: checkpoint {path} does not exist; download big-lama.pt "
                f"({lama_model_url()}, md5 {lama_model_md5()}) to that path, set removal.inpaint.checkpoint, "
                "or set removal.inpaint.allow_download: true"]


# -- lama-cleaner's geometry, the same integer arithmetic ------------------------------------------
def pad_to_modulo(array: np.ndarray, mod: int = PAD_MOD) -> np.ndarray:
    """Pad bottom/right to a multiple of ``mod`` with numpy's ``symmetric`` mode (lama-cleaner's rule)."""
    height, width = array.shape[:2]
    pad_h, pad_w = -height % mod, -width % mod
    if not pad_h and not pad_w:
        return array
    widths = ((0, pad_h), (0, pad_w)) + ((0, 0),) * (array.ndim - 2)
    return np.pad(array, widths, mode="symmetric")


def boxes_from_mask(mask255: np.ndarray) -> list[tuple[int, int, int, int]]:
    """``(left, top, right, bottom)`` of each external contour of the binarised mask, in OpenCV's order."""
    height, width = mask255.shape[:2]
    _, thresh = cv2.threshold(mask255, MASK_THRESHOLD, 255, 0)
    contours, _ = cv2.findContours(thresh, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    boxes = []
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        boxes.append((min(max(x, 0), width), min(max(y, 0), height),
                      min(max(x + w, 0), width), min(max(y + h, 0), height)))
    return boxes


def crop_box(box: tuple[int, int, int, int], width: int, height: int, margin: int) -> tuple[int, int, int, int]:
    """The crop lama-cleaner inpaints for one mask box: the box plus ``margin`` each side, shifted
    inward at the image edge to keep the context size."""
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
    w, h = (x2 - x1) + margin * 2, (y2 - y1) + margin * 2
    _l, _r, _t, _b = cx - w // 2, cx + w // 2, cy - h // 2, cy + h // 2
    left, right, top, bottom = max(_l, 0), min(_r, width), max(_t, 0), min(_b, height)
    if _l < 0:
        right += abs(_l)
    if _r > width:
        left -= _r - width
    if _t < 0:
        bottom += abs(_t)
    if _b > height:
        top -= _b - height
    return max(left, 0), max(top, 0), min(right, width), min(bottom, height)


def resize_max_size(array: np.ndarray, size_limit: int) -> np.ndarray:
    """Bicubic shrink so the long side is ``size_limit`` (lama-cleaner's rounding)."""
    height, width = array.shape[:2]
    if max(height, width) <= size_limit:
        return array
    ratio = size_limit / max(height, width)
    return cv2.resize(array, dsize=(int(width * ratio + 0.5), int(height * ratio + 0.5)),
                      interpolation=cv2.INTER_CUBIC)


def pad_into(target: np.ndarray, array: np.ndarray) -> None:
    """Write ``pad_to_modulo(array)`` into ``target`` (a slot of a batch) without the intermediate copy:
    the bottom rows, then the right columns (of the padded rows), mirrored as numpy's ``symmetric``."""
    height, width = array.shape[:2]
    pad_h, pad_w = target.shape[0] - height, target.shape[1] - width
    if pad_h > height or pad_w > width:  # tiny images reflect more than once: let numpy do it
        target[...] = pad_to_modulo(array)
        return
    target[:height, :width] = array
    if pad_h:
        target[height:, :width] = array[::-1][:pad_h]
    if pad_w:
        target[:, width:] = target[:, :width][:, ::-1][:, :pad_w]


class _Job:
    """One model call's worth of pixels: an image or a crop of one, with its 0..255 mask. Only the
    model's output inside the mask's bounding box is kept (the composite throws the rest away)."""

    __slots__ = ("image", "mask255", "box", "result")

    def __init__(self, image: np.ndarray, mask255: np.ndarray):
        self.image, self.mask255 = image, mask255
        x, y, w, h = cv2.boundingRect(mask255)  # of the non-zero pixels; (0, 0, 0, 0) when none
        self.box = (x, y, x + w, y + h) if w and h else None
        self.result: np.ndarray | None = None  # uint8 RGB of the model's output inside ``box``


@register_backend("inpaint", "lama", LamaConfig)
class LamaInpainter(Inpainter):
    """big-lama.pt through TorchScript. Jobs (whole images or HD crops) are grouped by padded size and
    sent ``batch_size`` at a time. Around the model call the steps are lama-cleaner's own, in the same
    float32 arithmetic, but done once per batch and only where they matter: the composite of a binary
    mask picks one side exactly, so it is a masked copy of the box (``bench/lama_overhead.py``)."""

    def __init__(self, config: LamaConfig):
        super().__init__(config)
        import torch

        from ieiw.backends.models import torch_device

        self.config: LamaConfig = config
        self.torch = torch
        self.device = torch_device(config.device)
        self.half = bool(config.fp16 and self.device.type == "cuda")
        path = self._checkpoint()
        with warnings.catch_warnings():
            # torch 2.13+ flags TorchScript as deprecated; big-lama.pt is TorchScript, so this is the way in
            warnings.simplefilter("ignore", FutureWarning)
            net = torch.jit.load(str(path), map_location="cpu")
        self.net = prepare_lama(net, self.device, self.half, config.batch_size, name=str(path))

    def _checkpoint(self) -> Path:
        path = self.config.checkpoint_path()
        if path.exists():
            return path
        if not self.config.allow_download:
            raise FileNotFoundError(self.config.preflight()[0])
        from torch.hub import download_url_to_file

        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        download_url_to_file(lama_model_url(), str(partial), progress=False)
        if (found := md5_file(partial)) != lama_model_md5():
            partial.unlink(missing_ok=True)
            raise ValueError(f"downloaded {lama_model_url()}: md5 {found}, expected {lama_model_md5()}; deleted")
        partial.replace(path)
        self.config.check_model_digests()  # a pinned sha256 holds for a downloaded file too
        return path

    # -- the strategies -------------------------------------------------------------------------------
    def inpaint(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> list[np.ndarray]:
        plans = [self._plan(np.ascontiguousarray(image), mask) for image, mask in zip(images, masks, strict=True)]
        self._run([job for _, jobs in plans for job in jobs])
        return [finish(jobs) for finish, jobs in plans]

    def _plan(self, image: np.ndarray, mask: np.ndarray):
        """(finish, jobs): the jobs to run for one image and how to assemble their results."""
        # 0/255, what lama-cleaner's server makes of a 0/255 mask PNG (cv2.threshold: several times
        # faster than np.where at 1024 px)
        mask255 = cv2.threshold(np.ascontiguousarray(mask, dtype=np.uint8), 0, 255, cv2.THRESH_BINARY)[1]
        c = self.config
        height, width = image.shape[:2]
        long_side = max(image.shape)  # lama-cleaner compares max(image.shape), channels included
        if c.hd_strategy == "crop" and long_side > c.hd_strategy_crop_trigger_size:
            crops = [crop_box(box, width, height, c.hd_strategy_crop_margin) for box in boxes_from_mask(mask255)]
            jobs = [_Job(image[t:b, l:r], mask255[t:b, l:r]) for l, t, r, b in crops]

            def finish(jobs: list[_Job]) -> np.ndarray:
                out = image.copy()
                for (l, t, _, _), job in zip(crops, jobs, strict=True):
                    _paste(job, out[t:, l:])  # each crop's composite pasted back, in contour order
                return out

            return finish, jobs
        if c.hd_strategy == "resize" and long_side > c.hd_strategy_resize_limit:
            job = _Job(resize_max_size(image, c.hd_strategy_resize_limit),
                       resize_max_size(mask255, c.hd_strategy_resize_limit))

            def finish(jobs: list[_Job]) -> np.ndarray:
                small = _blend(jobs[0])  # float64, as lama-cleaner keeps it (the small mask is not binary)
                big = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
                keep = mask255 < MASK_THRESHOLD
                big[keep] = image[keep]
                return big.astype(np.uint8)

            return finish, [job]

        def whole(jobs: list[_Job]) -> np.ndarray:
            out = image.copy()
            _paste(jobs[0], out)
            return out

        return whole, [_Job(image, mask255)]

    def _run(self, jobs: list[_Job]) -> None:
        """Pad each job to a multiple of 8 into its batch slot, group by padded size, call the model
        ``batch_size`` at a time. On CPU the conversions are numpy's (as lama-cleaner's), on CUDA uint8
        goes up and the conversions run on the device."""
        torch = self.torch
        buckets: dict[tuple[int, int], list[_Job]] = {}
        for job in jobs:
            if job.box is not None:  # an empty mask leaves the image as it is: no model call
                height, width = job.image.shape[:2]
                buckets.setdefault((height + (-height % PAD_MOD), width + (-width % PAD_MOD)), []).append(job)
        on_cpu = self.device.type == "cpu"
        dtype = torch.float16 if self.half else torch.float32
        with torch.inference_mode():
            for (height, width), members in buckets.items():
                for start in range(0, len(members), self.config.batch_size):
                    chunk = members[start:start + self.config.batch_size]
                    images = np.empty((len(chunk), height, width, 3), np.uint8)
                    masks = np.empty((len(chunk), height, width), np.uint8)
                    for slot, job in enumerate(chunk):
                        pad_into(images[slot], job.image)
                        pad_into(masks[slot], job.mask255)
                    if on_cpu:
                        image = np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32)
                        np.divide(image, 255, out=image)  # lama-cleaner: astype(float32) / 255
                        mask = (masks > 0)[:, None].astype(np.float32)  # then `> 0` on mask / 255
                        out = self.net(torch.from_numpy(image), torch.from_numpy(mask)).float().numpy()
                    else:
                        image = torch.from_numpy(images).to(self.device).permute(0, 3, 1, 2).float().div_(255)
                        mask = (torch.from_numpy(masks).to(self.device) > 0).unsqueeze(1)
                        out = self.net(image.to(dtype), mask.to(dtype)).float().cpu().numpy()
                    for job, result in zip(chunk, out, strict=True):
                        x0, y0, x1, y1 = job.box
                        box = result[:, y0:y1, x0:x1].transpose(1, 2, 0)
                        job.result = np.clip(box * 255, 0, 255).astype(np.uint8)  # truncates, as lama-cleaner


def _paste(job: _Job, out: np.ndarray) -> None:
    """lama-cleaner's ``result * m + image * (1 - m)``, ``m = mask / 255``, for a binary mask: the model's
    pixels where the mask is on, ``out``'s own elsewhere (``out`` starts where the job's image does)."""
    if job.box is None:
        return
    x0, y0, x1, y1 = job.box
    cv2.copyTo(job.result, job.mask255[y0:y1, x0:x1], out[y0:y1, x0:x1])


def _blend(job: _Job) -> np.ndarray:
    """The same composite in float64 for a mask that is not binary (the resize strategy's downscale)."""
    out = job.image.astype(np.float64)
    if job.box is not None:
        x0, y0, x1, y1 = job.box
        alpha = job.mask255[y0:y1, x0:x1, None] / 255
        out[y0:y1, x0:x1] = job.result * alpha + job.image[y0:y1, x0:x1] * (1 - alpha)
    return out


# -- what the loaded model can honour ---------------------------------------------------------------
_FFT_CASTS = {  # op: (its input's dtype for the call, its output's dtype after it), in half mode
    "aten::fft_rfftn": ("float32", "complex32"),
    "aten::fft_irfftn": ("complex64", "float16"),
}


def _graphs(module: Any):
    for _, child in module.named_modules():
        try:
            yield child._c._get_method("forward").graph
        except RuntimeError:  # a submodule without its own forward (a shared activation, say)
            continue


def _insert_cast(graph: Any, value: Any, dtype: Any) -> Any:
    """An ``aten::to(value, dtype)`` node (not yet placed; its constants are placed before it by the caller)."""
    constants = [graph.insertConstant(dtype), graph.insertConstant(False), graph.insertConstant(False),
                 graph.insertConstant(None)]
    node = graph.create("aten::to", [value, constants[0], constants[1], constants[2], constants[3]])
    return node, [c.node() for c in constants]


def _rewritten(node: Any) -> bool:
    """Already cast on both sides (a graph shared by several submodules is visited once per submodule)."""
    users = [use.user.kind() for use in node.output().uses()]
    return node.inputsAt(0).node().kind() == "aten::to" and users == ["aten::to"]


def float32_fft(module: Any) -> int:
    """Rewrite a TorchScript module (already ``.half()``) so its FFTs run in float32 (module docstring);
    returns how many FFT calls were rewritten. Must run before the module's first call."""
    import torch

    # torch flags every complex-half tensor as experimental; the casts make them on purpose. A process-wide
    # filter (not catch_warnings, which is not thread-safe and the build's unit tasks run in threads).
    warnings.filterwarnings("ignore", message="ComplexHalf support is experimental")
    count = 0
    for graph in _graphs(module):
        for node in list(graph.nodes()):
            if node.kind() not in _FFT_CASTS or _rewritten(node):
                continue
            before, after = (getattr(torch, name) for name in _FFT_CASTS[node.kind()])
            up, constants = _insert_cast(graph, node.inputsAt(0), before)
            up.insertBefore(node)
            for constant in constants:
                constant.moveBefore(up)
            node.replaceInput(0, up.output())
            output = node.output()
            down, constants = _insert_cast(graph, output, after)
            down.insertAfter(node)
            for constant in constants:
                constant.moveBefore(down)
            output.replaceAllUsesWith(down.output())
            down.replaceInput(0, output)  # the line above pointed the cast at itself
            count += 1
    return count


def batch_consistency(model: Any, batch: int = 8, size: int = 64, device: Any = "cpu", seed: int = 0,
                      dtype: Any = None) -> float:
    """Largest absolute difference between the outputs of one call on ``batch`` images and of ``batch`` calls
    on one image each (same images, each at its own brightness, binary masks of random boxes, inputs in
    ``dtype``, float32 by default).
    0 up to float rounding when batching is safe: a model whose trace froze the batch size (a ValueError
    naming the shapes, or the model's own error) or mixed items shows up here."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    # each item at its own brightness: a statistic over the batch differs from the item's own
    images = torch.rand(batch, 3, size, size, generator=generator) * torch.linspace(1, 0.25, batch).view(-1, 1, 1, 1)
    masks = torch.zeros(batch, 1, size, size)
    for i in range(batch):
        top, left = (torch.randint(0, size // 2, (2,), generator=generator)).tolist()
        masks[i, :, top:top + size // 3, left:left + size // 3] = 1
    dtype = dtype or torch.float32
    images, masks = images.to(device, dtype), masks.to(device, dtype)
    with torch.inference_mode():
        together = model(images, masks).float()
        alone = torch.cat([model(images[i:i + 1], masks[i:i + 1]).float() for i in range(batch)])
    if together.shape != alone.shape:
        raise ValueError(f"batch of {batch} gave {tuple(together.shape)}, one by one {tuple(alone.shape)}")
    if not torch.isfinite(together).all():
        raise ValueError("non-finite output")
    return float((together - alone).abs().max())


def prepare_lama(net: Any, device: Any, half: bool, batch_size: int, name: str = "the LaMa model") -> Any:
    """``net`` (a loaded TorchScript LaMa) on ``device`` in eval mode, in half precision with float32
    FFTs when ``half``; then, when ``half`` or ``batch_size > 1``, one probe: ``min(batch_size, 4)``
    images of :data:`PROBE_SIDE` px in one call against one call each. Raises with the setting to change
    when the model cannot take it (module docstring)."""
    import torch

    net = net.to(device).eval()
    dtype = torch.float16 if half else torch.float32
    if half:
        net = net.half()
        float32_fft(net)
        try:
            batch_consistency(net, batch=1, size=PROBE_SIDE, device=device, dtype=dtype)
        except Exception as exc:  # any failure of the probe is the model refusing fp16
            raise RuntimeError(f"inpaint backend lama: {name} cannot run in fp16 with its FFTs in float32 here "
                               f"({_reason(exc)}); set removal.inpaint.fp16: false") from exc
    if batch_size <= 1:
        return net
    batch = min(batch_size, 4)
    try:
        difference = batch_consistency(net, batch=batch, size=PROBE_SIDE, device=device, dtype=dtype)
    except Exception as exc:  # any failure of the probe is the model refusing the batch
        raise RuntimeError(f"inpaint backend lama: {name} fails on a batch of {batch} ({_reason(exc)}); it was "
                           "traced at batch 1: set removal.inpaint.batch_size: 1") from exc
    if difference > BATCH_TOLERANCE[half]:
        raise RuntimeError(f"inpaint backend lama: {name} gives a batch of {batch} other pixels than one image at "
                           f"a time (max |difference| {difference:.3g} > {BATCH_TOLERANCE[half]:.3g}); "
                           "set removal.inpaint.batch_size: 1")
    return net


def _reason(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else repr(exc)}"
