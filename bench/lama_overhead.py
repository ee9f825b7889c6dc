"""The in-process LaMa backend's own cost per image, against a bare decode + encode, measured in one run.

Everything the backend does around the model call (mask binarising, HD-strategy crops, padding to a
multiple of 8, batching, float conversion, unpadding, compositing) plus the decode of the source and
the encode of the result, with a zero-cost model: a TorchScript module whose ``forward(image, mask)``
returns ``image``, saved to a temporary file and loaded as the checkpoint. The floor is the decode +
encode of the same images alone (``ieiw.imageio``: JPEG 95, 4:4:4). Goal: backend <= 1.3x the floor.

Images: five scikit-image photos (astronaut, coffee, chelsea, rocket, stereo_motorcycle left) resized to
a long side of 512 and 1024 and stored as JPEG; masks: one smooth blob of ~10% of the image each. At 512
the default ``crop`` strategy does not trigger (long side <= 800): one model call per image; at 1024 it
does (one crop of the blob's box + 196 px margin), and ``original`` (the whole image) is shown too.
Timings are medians over ``--repeats`` interleaved runs (each: every image ``--passes`` times).

    python bench/lama_overhead.py [--repeats 7] [--passes 2] [--batch-size 4] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import math
import os
import pstats
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch
from skimage import data as skdata

from ieiw.backends.inpaint.lama import LamaConfig
from ieiw.imageio import decode, encode

GOAL = 1.3
# LaMa ships as TorchScript; torch >= 2.10 flags torch.jit as deprecated on every script/save/load.
warnings.filterwarnings("ignore", message=r".*torch\.jit", category=FutureWarning)
SIZES = (512, 1024)


class Identity(torch.nn.Module):
    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return image


def identity_checkpoint(path: Path) -> Path:
    torch.jit.save(torch.jit.script(Identity()), str(path))
    return path


def photos() -> list[np.ndarray]:
    return [skdata.astronaut(), skdata.coffee(), skdata.chelsea(), skdata.rocket(), skdata.stereo_motorcycle()[0]]


def resized(pixels: np.ndarray, long_side: int) -> np.ndarray:
    height, width = pixels.shape[:2]
    scale = long_side / max(height, width)
    size = (round(width * scale), round(height * scale))
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


def blob(height: int, width: int, rng: np.random.Generator, area: float = 0.10) -> np.ndarray:
    """A 0/1 mask: one smooth star-shaped blob covering about ``area`` of the image."""
    angles = np.linspace(0, 2 * math.pi, 32, endpoint=False)
    wobble = 1 + 0.25 * np.sin(angles * 3 + rng.uniform(0, 2 * math.pi)) + 0.1 * np.sin(angles * 5)
    radius = math.sqrt(area * height * width / (math.pi * float(np.mean(wobble ** 2))))
    cx = rng.uniform(radius * 1.3, width - radius * 1.3)
    cy = rng.uniform(radius * 1.3, height - radius * 1.3)
    points = np.stack([cx + radius * wobble * np.cos(angles), cy + radius * wobble * np.sin(angles)], axis=1)
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1)
    return mask


def floor(sources: list[bytes], masks: list[np.ndarray], inpainter) -> list[bytes]:
    return [encode(decode(data).pixels, "jpeg") for data in sources]


def backend(sources: list[bytes], masks: list[np.ndarray], inpainter) -> list[bytes]:
    """The removal builder's shape: decode a unit's images, one inpaint call for all, encode each."""
    pixels = [decode(data).pixels for data in sources]
    return [encode(out, "jpeg") for out in inpainter.inpaint(pixels, masks)]


def timed(fn, sources, masks, inpainter, passes: int) -> float:
    start = time.perf_counter()
    for _ in range(passes):
        fn(sources, masks, inpainter)
    return (time.perf_counter() - start) / (passes * len(sources))


def profile(sources, masks, inpainter, passes: int, label: str) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(passes):
        backend(sources, masks, inpainter)
    profiler.disable()
    stream = io.StringIO()
    pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(15)
    print(f"--- cProfile of the backend loop, {label}, {passes} passes (by own time) ---")
    print("\n".join(stream.getvalue().splitlines()[4:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--passes", type=int, default=2, help="passes over the images per timed run")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of each backend loop")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    base = photos()
    with tempfile.TemporaryDirectory(prefix="ieiw-bench-lama-") as name:
        checkpoint = identity_checkpoint(Path(name) / "identity.pt")
        inpainters = {
            strategy: LamaConfig(checkpoint=checkpoint, device="cpu", batch_size=args.batch_size,
                                 hd_strategy=strategy).create()
            for strategy in ("crop", "original")
        }
    cases = []
    for size in SIZES:
        images = [resized(p, size) for p in base]
        sources = [encode(image, "jpeg") for image in images]
        masks = [blob(*image.shape[:2], rng) for image in images]
        triggered = size > inpainters["crop"].config.hd_strategy_crop_trigger_size
        for strategy in ("crop", "original") if triggered else ("crop",):
            cases.append((size, strategy, sources, masks, inpainters[strategy]))
        shapes = ", ".join(f"{i.shape[1]}x{i.shape[0]}" for i in images)
        area = statistics.fmean(float(m.mean()) for m in masks)
        print(f"{size} px: {len(images)} photos ({shapes}), JPEG 95 4:4:4 sources, blob masks {area:.1%} of the"
              " image on average")
    print(f"zero-cost TorchScript model (returns its image input), CPU, torch {torch.__version__},"
          f" {torch.get_num_threads()} threads, batch_size {args.batch_size}; {os.cpu_count()} CPUs;"
          f" median of {args.repeats} interleaved runs x {args.passes} passes")

    for _, _, sources, masks, inpainter in cases:  # warm-up: TorchScript's profiling runs, allocator, caches
        for _ in range(3):
            backend(sources, masks, inpainter)
            floor(sources, masks, inpainter)
    print(f"{'size':>5} {'strategy':<9} {'floor ms/img':>13} {'backend ms/img':>15} {'ratio':>6}  goal")
    for size, strategy, sources, masks, inpainter in cases:
        floors, backends = [], []
        for _ in range(args.repeats):
            floors.append(timed(floor, sources, masks, inpainter, args.passes))
            backends.append(timed(backend, sources, masks, inpainter, args.passes))
        f, b = statistics.median(floors), statistics.median(backends)
        ratio = b / f
        verdict = "ok" if ratio <= GOAL else "OVER"
        print(f"{size:>5} {strategy:<9} {f * 1000:13.2f} {b * 1000:15.2f} {ratio:6.2f}  <= {GOAL} {verdict}")
    if args.profile:
        for size, strategy, sources, masks, inpainter in cases:
            profile(sources, masks, inpainter, args.passes * 3, f"{size} px {strategy}")


if __name__ == "__main__":
    main()
