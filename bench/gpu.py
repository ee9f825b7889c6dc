"""GPU truth: every model stage of the paper configuration and the trainer, at full size with random weights
of the real shapes, through ieiw's own backends; one table.

    python bench/gpu.py                 # on a GPU machine (make bench-gpu): full-size models, cuda:0
    python bench/gpu.py --tiny          # every part on the CPU with toy models, about a minute (make test runs it)
    python bench/gpu.py --tiny --device cuda:0                  # every CUDA path with toy models, a minute
    python bench/gpu.py --only pbe,vlm --json out/bench-gpu/pbe-vlm.json   # a part, and its rows as JSON

Per row: items/s (images, vectors or training pairs), the peak GPU memory (``torch.cuda.max_memory_allocated``
over the timed part, weights included), the share of the wall time the GPU is busy (CUDA events around each
model call: the rest is the stage's CPU data work, decode/resize/pad/encode/post-processing, and launch
gaps) and, for training, our step time over diffusers' ``train_instruct_pix2pix.py`` step on the same
models and batch in the same process (<= 1.0: ours is not slower). On the CPU the memory and busy
columns say ``n/a``; the notes under the table give the CPU share of model calls instead.

What runs (docs/PERFORMANCE.md, "GPU truth"):

- LaMa (``inpaint.lama``, bench/lama_ffc.py's FFC ResNet of big-lama's config, traced as ``to_jit.py`` does):
  512 px (one call per image), 1024 px with the default HD ``crop`` strategy, fp16, and two worker
  processes sharing one GPU (what ``runner: {kind: dask, n_workers: 2, gpus: [0], gpu_concurrency: 2}``
  allows). The traced file is checked at batch 8 against batch 1.
- SAM ViT-H automatic masks (``regions.sam``) at 1024 px, 32 x 32 points; random weights fail the default
  quality thresholds, so a second row keeps every mask (the per-mask post-processing a trained SAM pays).
- CLIP ViT-L/14 image features (``features.clip``), the LAION heads (``scorer laion``, on the CPU by
  design), FID Inception pool3 (``features.fid-inception``), Paint-by-Example at 512 px, 50 steps
  (``repaint.paint-by-example``), the VLM judge (``scorer vlm-judge``, Qwen2.5-VL-7B's shape, its
  defaults: 448 px images, batches of 8, constrained answers of up to 96 tokens).
- Host-to-device copies of a training batch, pageable against pinned memory.
- Training: the 8-channel SD 1.5 UNet at 256 px, configs/train.sd15.yaml's settings (fp16, EMA, AdamW),
  gradient checkpointing on and off, at the largest batch that fits (doubling from 8 up to
  ``--max-batch``), our step (``ieiw.training.model.edit_loss`` and the loop body of
  ``ieiw.training.train.train``) against diffusers' inner step, run on the same models and batch.
- ``torch.compile`` rows (CLIP, Paint-by-Example's UNet, the training UNet): measured against the same
  row uncompiled; ``--no-compile`` leaves them out. ``--tiny`` compiles with dynamo's ``eager`` backend (the
  code path, not the speed-up: inductor would spend the minute compiling).

Exit status 1 when a stage failed or a check did not hold; the table is printed either way.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import importlib.util
import json
import math
import os
import platform
import queue
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import gpu_models
import lama_ffc
import torch

REPO = Path(__file__).resolve().parents[1]
GIB = 1024 ** 3
INSTALL = {  # module -> how to get it (all in ieiw's train extra)
    "segment_anything": "segment-anything", "transformers": "transformers", "diffusers": "diffusers",
    "accelerate": "accelerate", "pytorch_fid": "pytorch-fid", "skimage": "scikit-image",
}
warnings.filterwarnings("ignore", message=r".*torch\.jit", category=FutureWarning)


# -- the table --------------------------------------------------------------------------------------
@dataclass
class Row:
    stage: str
    items_per_s: float | None = None
    unit: str = "images"
    peak_bytes: int | None = None
    busy: float | None = None  # GPU busy share (CUDA events); None on the CPU
    ratio: float | None = None  # training: our step time / diffusers' step time
    skipped: str | None = None
    failed: str | None = None
    seconds_per_item: float | None = None
    notes: list[str] = field(default_factory=list)

    def cells(self) -> list[str]:
        if self.skipped or self.failed:
            what = f"skipped: {self.skipped}" if self.skipped else f"FAILED: {self.failed}"
            return [self.stage, what, "", "", ""]
        rate = f"{rate_text(self.items_per_s)} {self.unit}/s" if self.items_per_s is not None else "n/a"
        peak = f"{self.peak_bytes / GIB:.2f} GiB" if self.peak_bytes is not None else "n/a"
        busy = f"{self.busy:.0%}" if self.busy is not None else "n/a"
        ratio = f"{self.ratio:.2f}" if self.ratio is not None else ""
        return [self.stage, rate, peak, busy, ratio]


def rate_text(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


HEADER = ["stage", "items/s", "peak memory", "GPU busy share", "ratio to diffusers (training)"]


def table(rows: list[Row]) -> str:
    cells = [HEADER] + [row.cells() for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(HEADER))]
    lines = ["| " + " | ".join(value.ljust(width) for value, width in zip(line, widths)) + " |" for line in cells]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines)


# -- settings and timing ----------------------------------------------------------------------------
@dataclass
class Bench:
    tiny: bool
    device: torch.device
    cache: Path
    compile: bool
    compile_backend: str
    mixed_precision: str
    max_batch: int
    train_steps: int
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def device_name(self) -> str:
        return str(self.device)

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        if self.cuda:
            self.sync()
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak(self) -> int | None:
        return torch.cuda.max_memory_allocated(self.device) if self.cuda else None

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()


class Meter:
    """Time inside model calls: CUDA events on the GPU (summed after one synchronise), ``perf_counter`` on
    the CPU. Calls made inside a metered call are not counted twice."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.spans: list[tuple[Any, Any]] = []
        self.cpu_s = 0.0
        self.depth = 0
        self.calls = 0

    def reset(self) -> None:
        self.spans, self.cpu_s, self.calls = [], 0.0, 0

    def wrap(self, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self.depth:
                return fn(*args, **kwargs)
            self.depth += 1
            self.calls += 1
            try:
                if self.cuda:
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    out = fn(*args, **kwargs)
                    end.record()
                    self.spans.append((start, end))
                    return out
                began = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    self.cpu_s += time.perf_counter() - began
            finally:
                self.depth -= 1

        return timed

    @contextlib.contextmanager
    def patched(self, *targets: tuple[Any, str]) -> Iterator[None]:
        """Meter ``obj.name`` for each ``(obj, name)`` (an instance attribute shadowing the method) while inside."""
        saved = []
        for obj, name in targets:
            saved.append((obj, name, name in vars(obj), vars(obj).get(name)))
            setattr(obj, name, self.wrap(getattr(obj, name)))
        try:
            yield
        finally:
            for obj, name, had, old in reversed(saved):
                if had:
                    setattr(obj, name, old)
                else:
                    delattr(obj, name)

    def seconds(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            return sum(start.elapsed_time(end) for start, end in self.spans) / 1000
        return self.cpu_s


def measure(bench: Bench, stage: str, run: Callable[[], int], meter: Meter, *, unit: str = "images",
            repeats: int = 1, warmup: int = 1) -> Row:
    """``run()`` does one pass and returns its item count: ``warmup`` passes untimed (lazy loading, cuDNN's
    autotuning, compilation), then ``repeats`` timed ones."""
    began = time.perf_counter()
    for _ in range(warmup):
        run()
    bench.sync()
    first = time.perf_counter() - began
    bench.reset_peak()
    meter.reset()
    items = 0
    began = time.perf_counter()
    for _ in range(repeats):
        items += run()
    bench.sync()
    wall = time.perf_counter() - began
    model_s = meter.seconds()
    row = Row(stage, items / wall, unit, bench.peak(), model_s / wall if bench.cuda else None,
              seconds_per_item=wall / items)
    share = min(model_s / wall, 1.0)
    if bench.cuda:
        row.notes.append(f"GPU busy {share:.0%} inside model calls, {1 - share:.0%} waiting on the CPU's data work")
    else:
        row.notes.append(f"model calls {share:.0%} of the time, CPU data work around them {1 - share:.0%}")
    row.notes.append(f"{items} {unit} in {wall:.2f} s (+ warm-up {first:.1f} s)")
    return row


def attempt(name: str, fn: Callable[[], Row]) -> Row:
    """``fn()``'s row, or a failed row naming the error (its traceback on stderr): one row's failure keeps
    the stage's other rows."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc(file=sys.stderr)
        return Row(name, failed=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")


def missing(*modules: str) -> str | None:
    for module in modules:
        if importlib.util.find_spec(module) is None:
            name = INSTALL.get(module, module)
            return f"{name} not installed (pip install {name}, or pip install -e '.[train]')"
    return None


def cuda_only(bench: Bench, what: str) -> str | None:
    return None if bench.cuda else f"{what} needs CUDA (n/a on the CPU)"


# -- inputs -----------------------------------------------------------------------------------------
def photos(side: int, count: int) -> list[np.ndarray]:
    """scikit-image's bundled photographs, resized to ``side`` x ``side``, cycled to ``count``."""
    import cv2
    from lama_overhead import photos as bundled
    from lama_overhead import resized

    base = [cv2.resize(resized(p, side), (side, side), interpolation=cv2.INTER_AREA) for p in bundled()]
    return [base[i % len(base)] for i in range(count)]


def blobs(side: int, count: int, seed: int = 0) -> list[np.ndarray]:
    from lama_overhead import blob

    rng = np.random.default_rng(seed)
    return [blob(side, side, rng) for _ in range(count)]


# -- LaMa -------------------------------------------------------------------------------------------
def lama_checkpoint(bench: Bench) -> Path:
    spec = lama_ffc.TINY_LAMA if bench.tiny else lama_ffc.BIG_LAMA
    folder = gpu_models.cached_folder(bench.cache / ("lama-tiny" if bench.tiny else "lama-big"), {"lama": spec},
                                      lambda path: lama_ffc.trace_to_file(lama_ffc.lama_shaped(spec), path / "lama.pt"))
    return folder / "lama.pt"


def lama_sizes(bench: Bench) -> dict[str, Any]:
    if bench.tiny:  # the HD crop strategy triggers above 96 px here, as above 800 px in the real settings
        return {"small": 64, "large": 128, "hd": {"hd_strategy_crop_trigger_size": 96, "hd_strategy_crop_margin": 16},
                "count": 8, "large_count": 4}
    return {"small": 512, "large": 1024, "hd": {}, "count": 32, "large_count": 16}


def lama_inpainter(checkpoint: Path, device: str, fp16: bool = False, **hd: Any) -> Any:
    from ieiw.backends.inpaint.lama import LamaConfig

    return LamaConfig(checkpoint=str(checkpoint), device=device, fp16=fp16, batch_size=4, **hd).create()


def lama_pass(inpainter: Any, images: list[np.ndarray], masks: list[np.ndarray]) -> int:
    inpainter.inpaint(images, masks)
    return len(images)


class MeteredModule:
    """Stands in for a TorchScript module (whose ``forward`` cannot be shadowed) and meters its calls."""

    def __init__(self, module: Any, meter: Meter):
        self.module, self.call = module, meter.wrap(module)

    def __call__(self, *args: Any) -> Any:
        return self.call(*args)


@contextlib.contextmanager
def exact_float32() -> Iterator[None]:
    """No TF32 in convolutions and matrix products while inside: a comparison of batch 8 with batch 1 must
    see batching, not TF32's rounding under two cuDNN algorithms."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def check_lama_batching(bench: Bench, checkpoint: Path) -> None:
    traced = lama_ffc.load_traced(checkpoint, bench.device)
    side = 64 if bench.tiny else 512
    with exact_float32():
        difference = lama_ffc.batch_consistency(traced, batch=8, size=side, device=bench.device)
    bench.checks.append((f"lama traced at batch 1, run at batch 8 = 8 runs at batch 1 ({side} px, float32)",
                         difference < 1e-3, f"max |difference| {difference:.2e} (outputs in [0, 1]; limit 1e-3)"))


def lama_row(bench: Bench, name: str, checkpoint: Path, images: list[np.ndarray], masks: list[np.ndarray],
             fp16: bool = False, **hd: Any) -> Row:
    meter = Meter(bench.device)
    inpainter = lama_inpainter(checkpoint, bench.device_name, fp16=fp16, **hd)
    inpainter.net = MeteredModule(inpainter.net, meter)
    try:
        return measure(bench, name, lambda: lama_pass(inpainter, images, masks), meter, repeats=2)
    except RuntimeError as exc:  # cuFFT takes power-of-2 sizes only in half precision
        if not fp16:
            raise
        return Row(name, skipped=f"not supported: {str(exc).splitlines()[0][:160]}")
    finally:
        bench.free()


def stage_lama(bench: Bench) -> list[Row]:
    sizes = lama_sizes(bench)
    small, large = sizes["small"], sizes["large"]
    names = ["lama-512", "lama-512 fp16", "lama-1024 (HD crop)", "lama-512, 2 workers on 1 GPU"]
    if bench.tiny:
        names = [f"{names[0]} (tiny: {small} px)", f"{names[1]} (tiny: {small} px)", f"{names[2]} (tiny: {large} px)",
                 f"{names[3]} (tiny: {small} px)"]
    checkpoint = lama_checkpoint(bench)
    check_lama_batching(bench, checkpoint)
    params = lama_ffc.parameter_count(lama_ffc.lama_shaped(lama_ffc.TINY_LAMA if bench.tiny else lama_ffc.BIG_LAMA))
    images, masks = photos(small, sizes["count"]), blobs(small, sizes["count"])
    rows = [attempt(names[0], lambda: lama_row(bench, names[0], checkpoint, images, masks))]
    if reason := cuda_only(bench, "fp16 (LamaConfig.fp16 is ignored on the CPU)"):
        rows.append(Row(names[1], skipped=reason))
    else:
        rows.append(attempt(names[1], lambda: lama_row(bench, names[1], checkpoint, images, masks, fp16=True)))
    for row in rows:
        row.notes.append(f"{params / 1e6:.1f} M parameters, batch 4, one model call per image (the HD strategy "
                         f"starts above {96 if bench.tiny else 800} px)")
    big_images, big_masks = photos(large, sizes["large_count"]), blobs(large, sizes["large_count"])
    rows.append(attempt(names[2], lambda: lama_row(bench, names[2], checkpoint, big_images, big_masks, **sizes["hd"])))
    rows[-1].notes.append("the HD crop strategy at a toy size (trigger 96 px, margin 16 px)" if bench.tiny else
                          "the default HD strategy: each mask's box + 196 px margin inpainted alone, pasted back")
    rows.append(attempt(names[3], lambda: two_workers(bench, names[3], checkpoint, small, sizes["count"], rows[0])))
    return rows


def _lama_worker(checkpoint: str, device: str, side: int, count: int, barrier: Any, results: Any) -> None:
    """One of two processes sharing the GPU: the lama-512 pass, started together with the other."""
    try:
        cuda = device.startswith("cuda")
        if cuda:
            torch.cuda.set_device(device)
        else:
            torch.set_num_threads(max(1, min(4, os.cpu_count() or 2) // 2))
            torch.set_flush_denormal(True)  # as the parent process (main)
        inpainter = lama_inpainter(Path(checkpoint), device)
        images, masks = photos(side, count), blobs(side, count)
        lama_pass(inpainter, images, masks)  # warm-up
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        barrier.wait(timeout=600)
        began = time.time()
        items = lama_pass(inpainter, images, masks) + lama_pass(inpainter, images, masks)
        if cuda:
            torch.cuda.synchronize()
        results.put({"items": items, "began": began, "ended": time.time(),
                     "peak": torch.cuda.max_memory_allocated() if cuda else None})
    except BaseException as exc:  # noqa: BLE001 - reported by the parent
        results.put({"error": f"{type(exc).__name__}: {exc}"})


def two_workers(bench: Bench, name: str, checkpoint: Path, side: int, count: int, single: Row | None) -> Row:
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # CUDA cannot be used in forked children
    barrier, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_lama_worker, args=(str(checkpoint), bench.device_name, side, count, barrier,
                                                         results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    outcomes: list[dict[str, Any]] = []
    deadline = time.monotonic() + 900
    while len(outcomes) < len(workers) and time.monotonic() < deadline:
        try:
            outcomes.append(results.get(timeout=5))
        except queue.Empty:
            if not any(worker.is_alive() for worker in workers) and results.empty():
                break  # a worker died without a word (killed, or a crash in native code)
    for worker in workers:
        worker.join(timeout=60)
        if worker.is_alive():
            worker.kill()
    if len(outcomes) < len(workers):
        return Row(name, failed=f"a worker gave no result (exit codes {[w.exitcode for w in workers]})")
    errors = [o["error"] for o in outcomes if "error" in o]
    if errors:
        return Row(name, failed=errors[0])
    wall = max(o["ended"] for o in outcomes) - min(o["began"] for o in outcomes)
    items = sum(o["items"] for o in outcomes)
    peaks = [o["peak"] for o in outcomes if o["peak"] is not None]
    row = Row(name, items / wall, "images", sum(peaks) if peaks else None, seconds_per_item=wall / items)
    if single is not None and single.items_per_s:
        row.notes.append(f"{row.items_per_s / single.items_per_s:.2f}x one worker's rate (same images, batch 4); "
                         "peak memory: both processes together")
    row.notes.append("what runner: {kind: dask, n_workers: 2, gpus: [0], gpu_concurrency: 2} lets run at once")
    return row


# -- SAM --------------------------------------------------------------------------------------------
def stage_sam(bench: Bench) -> list[Row]:
    names = ["sam-amg-1024 vit_h, 32x32 points", "sam-amg-1024, every mask kept"]
    if bench.tiny:
        names = [n + " (tiny: toy SAM, 256 px, 8x8)" for n in names]
    if reason := missing("segment_anything"):
        return [Row(n, skipped=reason) for n in names]
    from ieiw.backends.regions import SamRegionProposer, SamRegionsConfig

    side, count = (256, 2) if bench.tiny else (1024, 2)
    model = gpu_models.sam_model(bench.tiny, bench.device_name)
    images = photos(side, count)
    grid = {"points_per_side": 8} if bench.tiny else {}

    def one(name: str, thresholds: dict[str, float]) -> Row:
        proposer = SamRegionProposer.from_model(SamRegionsConfig(device=bench.device_name, **grid, **thresholds), model)
        kept: list[int] = []

        def run() -> int:
            for index, image in enumerate(images):
                regions = proposer.propose(image, dataset="bench", image_id=str(index), image_path=Path("b.png"))
                kept.append(len(regions))
            return len(images)

        meter = Meter(bench.device)
        with meter.patched((model.image_encoder, "forward"), (model.prompt_encoder, "forward"),
                           (model.mask_decoder, "forward")):
            row = measure(bench, name, run, meter)
        row.notes.append(f"{sum(kept) / len(kept):.0f} regions per image; SAM's defaults otherwise (points_per_batch "
                         "64, coco_rle output); GPU busy: encoder, prompt encoder, decoder")
        return row

    rows = [attempt(names[0], lambda: one(names[0], {})),
            attempt(names[1], lambda: one(names[1], {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}))]
    rows[0].notes.append("random weights fail pred_iou_thresh 0.88 / stability 0.95, so this row is the network and "
                         "the point grid; the next keeps the masks a 0 threshold passes: per-mask post-processing")
    return rows


# -- CLIP, LAION heads, FID -------------------------------------------------------------------------
def compiled_note(rows: list[Row], bench: Bench) -> None:
    """The compiled row (last) against the uncompiled one (first)."""
    if len(rows) == 2 and rows[0].items_per_s and rows[1].items_per_s:
        rows[1].notes.append(f"{rows[1].items_per_s / rows[0].items_per_s:.2f}x uncompiled (backend "
                             f"{bench.compile_backend}; the warm-up includes compiling)")


def stage_clip(bench: Bench) -> list[Row]:
    names = ["clip-vit-l14 image features"] + (["clip-vit-l14 image features, compiled"] if bench.compile else [])
    if bench.tiny:
        names = [n + " (tiny: toy CLIP)" for n in names]
    if reason := missing("transformers"):
        return [Row(n, skipped=reason) for n in names]
    from ieiw.backends.features.clip import ClipFeaturesConfig

    folder = gpu_models.clip_folder(bench.cache / ("clip-tiny" if bench.tiny else "clip-l14"), bench.tiny,
                                    bench.device_name)
    side, count, batch = (64, 32, 4) if bench.tiny else (512, 128, 32)
    images = photos(side, count)
    features = ClipFeaturesConfig(model=str(folder), device=bench.device_name, batch_size=batch).create()

    def one(name: str, compiled: bool) -> Row:
        if compiled:  # the vision tower, in place
            features.model.vision_model.compile(backend=bench.compile_backend)
        meter = Meter(bench.device)
        with meter.patched((features.model, "get_image_features")):
            row = measure(bench, name, lambda: len(features.image_features(images)), meter, repeats=2)
        row.notes.append(f"batch {batch}, {features.dtype}; data work: CLIPImageProcessor on the CPU")
        return row

    rows = [attempt(name, functools.partial(one, name, index == 1)) for index, name in enumerate(names)]
    compiled_note(rows, bench)
    return rows


def stage_laion(bench: Bench) -> list[Row]:
    from ieiw.filters.aesthetics import LaionHeadConfig

    weights = gpu_models.laion_weights(bench.cache / "laion")
    scorers = [LaionHeadConfig(head=head, weights=str(path)).create() for head, path in weights.items()]
    vectors = np.random.default_rng(0).standard_normal((512 if bench.tiny else 8192, 768)).astype(np.float32)
    meter = Meter(torch.device("cpu"))
    heads = [meter.wrap(scorer.score_vectors) for scorer in scorers]
    cpu = replace(bench, device=torch.device("cpu"))

    def run() -> int:
        for head in heads:
            head(vectors)
        return len(vectors)

    row = measure(cpu, "laion heads v1 + improved (CPU by design)", run, meter, unit="vectors", repeats=3)
    row.notes.append("both heads per vector; ieiw runs them on the CPU: a few small matrix products per image")
    return [row]


def stage_fid(bench: Bench) -> list[Row]:
    name = "fid-inception pool3" + (" (tiny: the real network, 4 images)" if bench.tiny else "")
    if reason := missing("pytorch_fid"):
        return [Row(name, skipped=reason)]
    from ieiw.backends.features.inception import FidInceptionConfig

    weights = gpu_models.fid_weights(bench.cache / "fid")
    side, count, batch = (64, 4, 4) if bench.tiny else (512, 128, 32)
    features = FidInceptionConfig(weights=str(weights), device=bench.device_name, batch_size=batch).create()
    images = photos(side, count)
    meter = Meter(bench.device)
    with meter.patched((features.model, "forward")):
        row = measure(bench, name, lambda: len(features.image_features(images)), meter, repeats=1 if bench.tiny else 2)
    row.notes.append(f"batch {batch}, float32; data work: per-image upload and 299 px resize")
    return [row]


# -- Paint-by-Example -------------------------------------------------------------------------------
def stage_paint_by_example(bench: Bench) -> list[Row]:
    names = ["paint-by-example-512, 50 steps"] + (["paint-by-example-512, compiled UNet"] if bench.compile else [])
    if bench.tiny:
        names = [n + " (tiny: toy pipeline, 64 px, 2 steps)" for n in names]
    if reason := missing("diffusers", "transformers"):
        return [Row(n, skipped=reason) for n in names]
    from ieiw.backends.repaint import PaintByExampleConfig

    folder = gpu_models.paint_by_example_folder(bench.cache / ("pbe-tiny" if bench.tiny else "pbe"), bench.tiny,
                                                bench.device_name)
    side, steps, count, batch = (64, 2, 2, 2) if bench.tiny else (512, 50, 8, 4)
    config = PaintByExampleConfig(model=str(folder), device=bench.device_name, steps=steps, resolution=side,
                                  batch_size=batch)
    repainter = config.create()
    pipe = repainter.pipe
    images, masks = photos(side, count), blobs(side, count)
    exemplars = [image[side // 4: 3 * side // 4, side // 4: 3 * side // 4] for image in photos(side, count)[::-1]]

    def one(name: str, compiled: bool) -> Row:
        if compiled:
            pipe.unet.compile(backend=bench.compile_backend)
        meter = Meter(bench.device)
        with meter.patched((pipe.unet, "forward"), (pipe.vae, "encode"), (pipe.vae, "decode"),
                           (pipe.image_encoder, "forward")):
            row = measure(bench, name, lambda: len(repainter.repaint(images, masks, exemplars, list(range(count)))),
                          meter)
        row.notes.append(f"batch {batch}, {repainter.dtype}, guidance {config.guidance_scale} (two UNet passes per "
                         "step); data work: resizes, the exemplar's CLIPImageProcessor, the composite")
        return row

    rows = [attempt(name, functools.partial(one, name, index == 1)) for index, name in enumerate(names)]
    compiled_note(rows, bench)
    return rows


def stage_vlm(bench: Bench) -> list[Row]:
    name = "vlm judge qwen2.5-vl-7b, 448 px, batch 8" + (" (tiny: toy Qwen2.5-VL, 64 px)" if bench.tiny else "")
    if reason := missing("transformers", "tokenizers"):
        return [Row(name, skipped=reason)]
    from ieiw.filters.scoring import ImageRef, PairView, ScoreContext
    from ieiw.filters.vlm_judge import VlmJudgeConfig
    from ieiw.imageio import encode

    folder = gpu_models.vlm_folder(bench.cache / ("vlm-tiny" if bench.tiny else "qwen2.5-vl-7b"), bench.tiny,
                                   bench.device_name)
    side, count, batch, image_size = (128, 4, 2, 64) if bench.tiny else (512, 16, 8, 448)
    config = VlmJudgeConfig(model=str(folder), device=bench.device_name, batch_size=batch, image_size=image_size)
    judge = config.create()
    chat = judge.model  # loads the model (bfloat16 on CUDA)
    images = [encode(image) for image in photos(side, count + 1)]
    pairs = [PairView(id=str(i), task="replace", instruction="replace the dog with a cat",
                      source=ImageRef(f"source-{i}", images[i]), target=ImageRef(f"target-{i}", images[i + 1]),
                      mask=None, upstream={}) for i in range(count)]
    meter = Meter(bench.device)
    with meter.patched((chat.model, "forward")):  # one call per generated token (the first: the prompt)
        row = measure(bench, name, lambda: len(judge.score(pairs, ScoreContext(features=None))), meter, unit="pairs")
    steps = meter.calls / math.ceil(count / batch)
    row.notes.append(f"{steps:.0f} forward calls per batch of {batch} (max_new_tokens {config.max_new_tokens}; random "
                     "weights rarely stop early, a trained judge stops after its one-sentence reason)")
    row.notes.append(f"constrained decoding over {len(chat.tokenizer):,} tokens, {chat.dtype}; GPU busy: the model's "
                     "forward calls; the rest: JPEG decoding, the processor, the constraint's per-token work")
    return [row]


# -- pinned memory ----------------------------------------------------------------------------------
def copy_row(bench: Bench, name: str, pinned: bool, pairs: int = 64, side: int = 256) -> Row:
    host = torch.randint(0, 255, (pairs, 2, 3, side, side), dtype=torch.uint8)
    host = host.pin_memory() if pinned else host
    meter = Meter(bench.device)
    copy = meter.wrap(lambda: host.to(bench.device, non_blocking=pinned))

    def run() -> int:
        for _ in range(10):
            copy()
        return pairs * 10

    row = measure(bench, name, run, meter, unit="pairs", repeats=3)
    row.notes.append(f"{host.numel() / GIB * row.items_per_s / pairs:.1f} GiB/s (uint8 source + target at {side} px: "
                     "what the training loader hands over)")
    return row


def stage_copies(bench: Bench) -> list[Row]:
    names = ["h2d copy of a 64-pair batch, pageable", "h2d copy of a 64-pair batch, pinned"]
    if reason := cuda_only(bench, "a host-to-device copy"):
        return [Row(n, skipped=reason) for n in names]
    return [attempt(name, functools.partial(copy_row, bench, name, pinned))
            for name, pinned in zip(names, (False, True))]


# -- training ---------------------------------------------------------------------------------------
@dataclass
class TrainSetup:
    accelerator: Any
    config: Any
    comps: Any
    unet: Any
    weight_dtype: Any
    resolution: int


def train_setup(bench: Bench, folder: Path | None) -> TrainSetup:
    """configs/train.sd15.yaml's settings, the components through ``load_components`` (a random SD 1.5 folder,
    or the trainer's own tiny model), an Accelerator made as ``train()`` makes it."""
    from accelerate import Accelerator
    from accelerate.utils import GradScalerKwargs, set_seed

    from ieiw.training.config import load_config
    from ieiw.training.model import freeze, load_components

    overrides = [f"train.mixed_precision={bench.mixed_precision}", "model.require_gpu=false"]
    if folder is None:
        overrides += [f"model.tiny.cache_dir={bench.cache / 'sd15-tiny'}", "data.resolution=32"]
    else:
        overrides.append(f"model.pretrained={folder}")
    config = load_config(REPO / "configs" / "train.sd15.yaml", overrides)
    t = config.train
    accelerator = Accelerator(gradient_accumulation_steps=t.gradient_accumulation_steps,
                              mixed_precision=t.mixed_precision, cpu=not bench.cuda,
                              kwargs_handlers=[GradScalerKwargs(init_scale=t.fp16_initial_scale)])
    set_seed(config.seed)
    if t.allow_tf32 and bench.cuda:
        torch.backends.cuda.matmul.allow_tf32 = True  # for both steps: diffusers' example with --allow_tf32
    comps = load_components(config)
    freeze(comps.vae, comps.text_encoder)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
    for frozen in (comps.vae, comps.text_encoder):
        frozen.to(accelerator.device, dtype=weight_dtype)
    comps.unet.train()
    unet = accelerator.prepare(comps.unet)
    return TrainSetup(accelerator, config, comps, unet, weight_dtype, config.data.resolution)


class Step:
    """One optimizer step of a kind (ours or diffusers'), its optimizer, LR schedule and EMA, on shared models."""

    def __init__(self, setup: TrainSetup, kind: str):
        from diffusers import UNet2DConditionModel
        from diffusers.optimization import get_scheduler
        from diffusers.training_utils import EMAModel

        from ieiw.training.dropout import dropout_probs
        from ieiw.training.model import make_ema, null_text_embedding

        self.setup, self.kind = setup, kind
        s, t = setup, setup.config.train
        unet = s.unet
        if kind == "ieiw":  # train(): AdamW with the config's betas, weight decay and eps; EMA from the config
            optimizer = torch.optim.AdamW(unet.parameters(), lr=t.learning_rate, betas=(t.adam_beta1, t.adam_beta2),
                                          weight_decay=t.weight_decay, eps=t.adam_epsilon)
            self.ema = make_ema(s.config.ema, unet)
            self.probs = dropout_probs(s.config.dropout)
            self.null_text = null_text_embedding(s.comps.text_encoder, s.comps.tokenizer)
        else:  # the example's defaults: AdamW(lr 1e-4, wd 1e-2, eps 1e-8), EMAModel's defaults, clip at 1.0
            optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
            self.ema = EMAModel(unet.parameters(), model_cls=UNet2DConditionModel, model_config=unet.config)
            self.dropout = 0.05  # --conditioning_dropout_prob in the example's README
        if self.ema is not None:
            self.ema.to(s.accelerator.device)
        scheduler = get_scheduler("constant", optimizer=optimizer)
        self.optimizer, self.lr_scheduler = s.accelerator.prepare(optimizer, scheduler)

    def close(self) -> None:
        self.setup.accelerator.free_memory()
        self.optimizer = self.lr_scheduler = self.ema = None

    def batch(self, size: int, pin: bool) -> dict[str, torch.Tensor]:
        """What each loop gets from its loader: ours uint8 pairs + ids on the host (pinned on CUDA, as
        train()'s DataLoader); diffusers' float pixels in [-1, 1] (its collate_fn), moved by the step."""
        from ieiw.training.data import ClipTokenize

        s = self.setup
        generator = torch.Generator().manual_seed(size)
        pixels = torch.randint(0, 256, (2, size, 3, s.resolution, s.resolution), generator=generator, dtype=torch.uint8)
        ids = torch.stack([ClipTokenize(s.comps.tokenizer)("make the sky snowy")] * size)
        if self.kind == "ieiw":
            out = {"source": pixels[0], "target": pixels[1], "input_ids": ids}
        else:
            floats = pixels.float() / 127.5 - 1
            out = {"original_pixel_values": floats[0], "edited_pixel_values": floats[1], "input_ids": ids}
        return {key: value.pin_memory() if pin else value for key, value in out.items()}

    def __call__(self, batch: dict[str, torch.Tensor]) -> float:
        return self._ieiw(batch) if self.kind == "ieiw" else self._diffusers(batch)

    def _ieiw(self, batch: dict[str, torch.Tensor]) -> float:
        """train()'s step (``ieiw.training.train.train_step``) and its EMA update, minus logging and checkpoints."""
        from ieiw.training.model import edit_loss
        from ieiw.training.train import train_step

        s, t = self.setup, self.setup.config.train
        accelerator, unet, comps = s.accelerator, s.unet, s.comps
        step_loss = train_step(accelerator, unet, self.optimizer, self.lr_scheduler, t, edit_loss,
                               (batch, unet, comps.vae, comps.text_encoder, comps.noise_scheduler, self.null_text,
                                self.probs, s.weight_dtype))
        if accelerator.sync_gradients and self.ema is not None:
            self.ema.step(unet.parameters())
        return step_loss

    def _diffusers(self, batch: dict[str, torch.Tensor]) -> float:
        """diffusers' examples/instruct_pix2pix/train_instruct_pix2pix.py inner step, as written there (its
        prepared DataLoader moves the batch to the device first)."""
        import torch.nn.functional as F

        s = self.setup
        accelerator, unet, vae, text_encoder = s.accelerator, s.unet, s.comps.vae, s.comps.text_encoder
        scheduler, tokenizer, dtype, p = s.comps.noise_scheduler, s.comps.tokenizer, s.weight_dtype, self.dropout
        batch = {key: value.to(accelerator.device) for key, value in batch.items()}
        with accelerator.accumulate(unet):
            latents = vae.encode(batch["edited_pixel_values"].to(dtype)).latent_dist.sample()
            latents = latents * vae.config.scaling_factor
            noise = torch.randn_like(latents)
            bsz = latents.shape[0]
            timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (bsz,), device=latents.device).long()
            noisy_latents = scheduler.add_noise(latents, noise, timesteps)
            encoder_hidden_states = text_encoder(batch["input_ids"])[0]
            original_image_embeds = vae.encode(batch["original_pixel_values"].to(dtype)).latent_dist.mode()
            random_p = torch.rand(bsz, device=latents.device)
            prompt_mask = (random_p < 2 * p).reshape(bsz, 1, 1)
            null_ids = tokenizer([""], max_length=tokenizer.model_max_length, padding="max_length", truncation=True,
                                 return_tensors="pt").input_ids
            null_conditioning = text_encoder(null_ids.to(accelerator.device))[0]
            encoder_hidden_states = torch.where(prompt_mask, null_conditioning, encoder_hidden_states)
            image_mask_dtype = original_image_embeds.dtype
            image_mask = 1 - ((random_p >= p).to(image_mask_dtype) * (random_p < 3 * p).to(image_mask_dtype))
            original_image_embeds = image_mask.reshape(bsz, 1, 1, 1) * original_image_embeds
            concatenated = torch.cat([noisy_latents, original_image_embeds], dim=1)
            model_pred = unet(concatenated, timesteps, encoder_hidden_states).sample
            loss = F.mse_loss(model_pred.float(), noise.float(), reduction="mean")
            avg_loss = accelerator.gather(loss.repeat(bsz)).mean()
            step_loss = avg_loss.item()
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(unet.parameters(), 1.0)  # --max_grad_norm's default
            self.optimizer.step()
            self.lr_scheduler.step()
            self.optimizer.zero_grad()
        if accelerator.sync_gradients:
            self.ema.step(unet.parameters())
        loss.detach().item()  # the example's progress-bar log
        return step_loss

    def metered(self, meter: Meter) -> contextlib.AbstractContextManager:
        """Our forward is ``edit_loss`` (VAE, text encoder, UNet: metered as one, so a compiled UNet is not
        wrapped); diffusers' step calls the models itself. Then backward, the optimizer and the EMA."""
        from ieiw.training import model

        s = self.setup
        forward = [(model, "edit_loss")] if self.kind == "ieiw" else [
            (s.comps.vae, "encode"), (s.comps.text_encoder, "forward"), (s.unet, "forward")]
        return meter.patched(*forward, (s.accelerator, "backward"), (self.optimizer, "step"),
                             *([(self.ema, "step")] if self.ema is not None else []))


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc)


def fitting_batch(bench: Bench, step: Step) -> tuple[int, list[str]]:
    """The largest batch, doubling from 8 up to ``--max-batch``, for which two steps run (CUDA); 2 on the CPU."""
    if not bench.cuda:
        return 2, ["batch 2 (the batch search runs on CUDA only)"]
    best, tried = 0, []
    size = 8
    while size <= bench.max_batch:
        try:
            batch = step.batch(size, pin=True)
            step(batch)
            step(batch)
            bench.sync()
            best = size
            tried.append(f"{size} ok")
        except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:
            if not is_oom(exc):
                raise
            tried.append(f"{size} out of memory")
            step.optimizer.zero_grad(set_to_none=True)
            break
        finally:
            batch = None
            bench.free()
        size *= 2
    if not best:
        raise RuntimeError("batch 8 does not fit")
    return best, [f"batch {best} (tried {', '.join(tried)}; --max-batch {bench.max_batch})"]


def time_steps(bench: Bench, name: str, step: Step, size: int, warmup: int) -> Row:
    batch = step.batch(size, pin=bench.cuda)
    meter = Meter(bench.device)
    with step.metered(meter):
        row = measure(bench, name, lambda: (step(batch), size)[1], meter, unit="pairs", repeats=bench.train_steps,
                      warmup=warmup)
    row.notes.append(f"{row.seconds_per_item * size * 1000:.0f} ms per step of {size} pairs at "
                     f"{step.setup.resolution} px, {bench.mixed_precision}")
    return row


def train_rows(bench: Bench, setup: TrainSetup, checkpointing: bool, names: tuple[str, str]) -> tuple[list[Row], int]:
    """Ours at the largest batch that fits, then diffusers' step at that batch; the ratio on our row."""
    unet = setup.comps.unet
    unet.enable_gradient_checkpointing() if checkpointing else unet.disable_gradient_checkpointing()
    warmup = 2 if bench.tiny else 3
    step = Step(setup, "ieiw")
    try:
        size, notes = fitting_batch(bench, step)
        ours = time_steps(bench, names[0], step, size, warmup)
        ours.notes += notes + ["EMA (foreach), no clipping, InstructDiffusion's dropout: configs/train.sd15.yaml"]
    finally:
        step.close()
        step = None
        bench.free()
    step = Step(setup, "diffusers")
    try:
        theirs = time_steps(bench, names[1], step, size, warmup)
        theirs.notes.append("EMA (EMAModel's defaults), clip_grad_norm 1.0, conditioning dropout 0.05, the text "
                            "encoder run on the empty prompt every step")
        ours.ratio = ours.seconds_per_item / theirs.seconds_per_item
    except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:
        if not is_oom(exc):
            raise
        theirs = Row(names[1], skipped=f"out of memory at batch {size}, which ieiw's step fits")
        ours.notes.append(f"ratio n/a: diffusers' step does not fit batch {size}")
    finally:
        step.close()
        step = None
        bench.free()
    return [ours, theirs], size


def compiled_train_row(bench: Bench, setup: TrainSetup, name: str, reference: Row, size: int) -> Row:
    setup.comps.unet.enable_gradient_checkpointing()
    setup.unet.compile(backend=bench.compile_backend)
    step = Step(setup, "ieiw")
    try:
        row = time_steps(bench, name, step, size, (2 if bench.tiny else 3) + 1)
    finally:
        step.close()
        bench.free()
    if reference.items_per_s:
        row.notes.append(f"{row.items_per_s / reference.items_per_s:.2f}x uncompiled (backend {bench.compile_backend};"
                         " the warm-up includes compiling)")
    return row


def stage_train(bench: Bench) -> list[Row]:
    suffix = " (tiny: toy SD, 32 px)" if bench.tiny else ""
    pairs = [(f"train ieiw, 8-ch SD 1.5 UNet 256 px, grad ckpt {state}{suffix}",
              f"train diffusers' ip2p step, same, grad ckpt {state}{suffix}") for state in ("on", "off")]
    compiled = f"train ieiw, grad ckpt on, compiled UNet{suffix}"
    names = [name for pair in pairs for name in pair] + ([compiled] if bench.compile else [])
    if reason := missing("diffusers", "transformers", "accelerate"):
        return [Row(n, skipped=reason) for n in names]
    if bench.mixed_precision == "fp16" and not bench.cuda:
        return [Row(n, skipped="fp16 training needs CUDA (use --mixed-precision bf16 or no)") for n in names]
    folder = None if bench.tiny else gpu_models.sd15_folder(bench.cache / "sd15", bench.device_name)
    setup = train_setup(bench, folder)
    rows: list[Row] = []
    sizes: dict[bool, int] = {}
    for checkpointing, pair in zip((True, False), pairs):
        try:
            got, sizes[checkpointing] = train_rows(bench, setup, checkpointing, pair)
            rows += got
        except Exception as exc:  # noqa: BLE001 - both rows of this setting fail; the others still run
            traceback.print_exc(file=sys.stderr)
            rows += [Row(name, failed=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}") for name in pair]
    if bench.compile:
        if True in sizes:
            rows.append(attempt(compiled, lambda: compiled_train_row(bench, setup, compiled, rows[0], sizes[True])))
        else:
            rows.append(Row(compiled, skipped="the uncompiled row failed"))
    return rows


# -- main -------------------------------------------------------------------------------------------
STAGES: list[tuple[str, Callable[[Bench], list[Row]]]] = [
    ("lama", stage_lama), ("sam", stage_sam), ("clip", stage_clip), ("laion", stage_laion), ("fid", stage_fid),
    ("pbe", stage_paint_by_example), ("vlm", stage_vlm), ("copy", stage_copies), ("train", stage_train),
]


def run(bench: Bench, only: set[str] | None) -> list[Row]:
    rows: list[Row] = []
    for key, stage in STAGES:
        if only and key not in only:
            continue
        began = time.perf_counter()
        try:
            rows += stage(bench)
        except Exception as exc:  # noqa: BLE001 - one stage's failure is a row; the rest still run
            traceback.print_exc(file=sys.stderr)
            rows.append(Row(key, failed=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"))
        bench.free()
        print(f"[bench-gpu] {key}: {time.perf_counter() - began:.1f} s", file=sys.stderr, flush=True)
    return rows


# (row name prefix, work items at paper scale, what they are): docs/PERFORMANCE.md's counts for 159k pairs
PAPER_SCALE = [
    ("lama-1024 (HD crop)", 43_000, "LaMa inpaints (one per removal region)"),
    ("paint-by-example-512, 50 steps", 51_000, "Paint-by-Example repaints (one per kept replacement row)"),
    ("clip-vit-l14 image features", 500_000, "CLIP ViT-L/14 embeddings (about 3 per pair)"),
    ("vlm judge", 159_000, "VLM judge answers (one per pair; the candidates are more)"),
    ("train ieiw, 8-ch SD 1.5 UNet 256 px, grad ckpt on", 20_000 * 64,
     "training pairs (configs/train.sd15.yaml: 20,000 steps x 64)"),
]


def paper_scale(rows: list[Row]) -> list[str]:
    """GPU-hours of the paper configuration's big items at the measured rates, one GPU."""
    lines = []
    for prefix, count, what in PAPER_SCALE:
        row = next((r for r in rows if r.stage.startswith(prefix) and r.items_per_s), None)
        if row is not None:
            lines.append(f"{count:,} {what}: {count / row.items_per_s / 3600:.3g} GPU-hours at "
                         f"{rate_text(row.items_per_s)}/s")
    return lines


def describe(bench: Bench) -> str:
    if bench.cuda:
        props = torch.cuda.get_device_properties(bench.device)
        where = f"{props.name}, {props.total_memory / GIB:.0f} GiB"
    else:
        where = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    mode = "full size"
    if bench.tiny:
        mode = f"TINY: toy models on the {'GPU' if bench.cuda else 'CPU'}; figures test the code, not the hardware"
    return f"{mode}; {where}; torch {torch.__version__}; compile: {bench.compile_backend if bench.compile else 'off'}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="toy models on the CPU, about a minute (make test)")
    parser.add_argument("--device", default=None, help="default: cuda:0 (full) or cpu (--tiny)")
    parser.add_argument("--only", default=None, help=f"comma-separated stages of: {', '.join(k for k, _ in STAGES)}")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="leave out the torch.compile rows")
    parser.add_argument("--compile-backend", default=None, help="default: inductor (full), eager (--tiny)")
    parser.add_argument("--mixed-precision", choices=["fp16", "bf16", "no"], default=None,
                        help="training's autocast: default fp16 (full, configs/train.sd15.yaml), bf16 (--tiny)")
    parser.add_argument("--max-batch", type=int, default=256, help="largest training batch tried (doubling from 8)")
    parser.add_argument("--train-steps", type=int, default=None,
                        help="timed training steps per row (default 10; 4 with --tiny)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="where the random-weight models are written once (default out/bench-gpu/models; "
                             "--tiny: a temporary folder)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows and checks as JSON here")
    args = parser.parse_args(argv)

    device = torch.device(args.device or ("cpu" if args.tiny else "cuda:0"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA device here; the CPU check of every code path is: python bench/gpu.py --tiny",
              file=sys.stderr)
        return 2
    if device.type == "cuda":
        torch.cuda.set_device(device)  # accelerate and the spawned workers place on the current device
    else:
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
        # Toy models with random weights drift into denormal activations, which cost x86 CPUs 10-200x per
        # operation (toy CLIP: 9 ms per 32-wide linear layer): flushed, the figures measure the code.
        torch.set_flush_denormal(True)
    only = {part.strip() for part in args.only.split(",")} if args.only else None
    if only and (unknown := only - {k for k, _ in STAGES}):
        parser.error(f"unknown stage(s) {sorted(unknown)}")
    with contextlib.ExitStack() as stack:
        cache = args.cache
        if cache is None:
            cache = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-gpu-"))) if args.tiny \
                else REPO / "out" / "bench-gpu" / "models"
        bench = Bench(tiny=args.tiny, device=device, cache=cache, compile=args.compile,
                      compile_backend=args.compile_backend or ("eager" if args.tiny else "inductor"),
                      mixed_precision=args.mixed_precision or ("bf16" if args.tiny else "fp16"),
                      max_batch=args.max_batch, train_steps=args.train_steps or (4 if args.tiny else 10))
        began = time.perf_counter()
        rows = run(bench, only)
        total = time.perf_counter() - began
    print(f"bench/gpu.py: {describe(bench)}; {total:.0f} s")
    print(table(rows))
    print()
    for row in rows:
        for note in row.notes:
            print(f"- {row.stage}: {note}")
    for name, ok, detail in bench.checks:
        print(f"check {'ok' if ok else 'FAILED'}: {name}: {detail}")
    for line in paper_scale(rows):
        print(f"paper scale{' (tiny: meaningless)' if bench.tiny else ''}: {line}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"setup": describe(bench), "seconds": total, "rows": [asdict(r) for r in rows],
                                         "checks": [{"name": n, "ok": ok, "detail": d} for n, ok, d in bench.checks]},
                                        indent=1, default=str))
    failed = any(row.failed for row in rows) or not all(ok for _, ok, _ in bench.checks)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
