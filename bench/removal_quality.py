"""How well each inpainting backend removes an object, against the true background, in one run.

The synthetic PhraseCut-layout sample (ieiw/samples/phrasecut.py) keeps each scene's clean background,
so removal has a ground truth. For every referring record the mask is made by the removal builder itself
(``RemovalBuilder._mask``: official rasterisation, the default region policy, a square dilation) and the
image is filled by:

- cv2 Telea and cv2 Navier-Stokes (radius 5: the embedded backend's default),
- a mean-colour fill (the mean of a ring of pixels just outside the mask): the floor any method should beat,
- LaMa in process, only with ``--lama-checkpoint PATH`` (a real big-lama.pt).

Score: mean absolute error (0-255, over the masked pixels and the three channels) between the filled and
the true background, per record, then its mean and median over records. Lower is better. Seconds per
image count the inpaint call alone (no decoding, masks or scoring).

    python bench/removal_quality.py [--images 100] [--size 320x240] [--dilation 15] [--ring 5]
                                    [--lama-checkpoint big-lama.pt --lama-device cpu --lama-batch 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from ieiw.schemas.units import BuildContext
from ieiw.backends.inpaint.opencv import OpenCVInpainter, OpenCVInpaintConfig
from ieiw.sources.phrasecut import PhraseCutSource, load_image
from ieiw.builders.removal import RegionSkipped, RemovalBuilder, RemovalConfig
from ieiw.samples.phrasecut import make_phrasecut_sample
from ieiw.imageio import decode_rgb

SPLITS = ["train", "val"]
# LaMa ships as TorchScript; torch >= 2.10 flags torch.jit as deprecated on every load.
warnings.filterwarnings("ignore", message=r".*torch\.jit", category=FutureWarning)


def mean_fill(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], ring: int) -> list[np.ndarray]:
    """Each masked region filled with the mean colour of the ``ring`` px just outside it."""
    out = []
    kernel = np.ones((2 * ring + 1, 2 * ring + 1), np.uint8)
    for image, mask in zip(images, masks, strict=True):
        band = (cv2.dilate(mask, kernel) > 0) & (mask == 0)
        colour = image[band].mean(axis=0) if band.any() else image[mask == 0].mean(axis=0)
        filled = image.copy()
        filled[mask > 0] = np.round(colour).astype(np.uint8)
        out.append(filled)
    return out


def load_cases(root: Path, dilation: int) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], int, Counter]:
    """(images, masks, true backgrounds) per record, each mask made by the removal builder itself (its
    default region policy, then the dilation); and the number of images and the skips by reason."""
    config = RemovalConfig(source={"root": root, "splits": SPLITS}, mask_dilation=dilation, verify=None)
    builder = RemovalBuilder(config, BuildContext(root=root, out_dir=root, unit_size=16))
    source = PhraseCutSource(root, SPLITS)
    images, masks, truths = [], [], []
    seen: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    skipped: Counter = Counter()
    for split in SPLITS:
        for record in source.read(split, 0, source.count(split)):
            if record.image_id not in seen:
                background = decode_rgb((root / "backgrounds" / f"{record.image_id}.png").read_bytes())
                seen[record.image_id] = (load_image(record).pixels, background)
            pixels, background = seen[record.image_id]
            try:
                mask = builder._mask(record, pixels)
            except RegionSkipped as skip:
                skipped[skip.reason] += 1
                continue
            images.append(pixels)
            masks.append(mask)
            truths.append(background)
    return images, masks, truths, len(seen), skipped


def masked_mae(filled: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    inside = mask > 0
    return float(np.abs(filled[inside].astype(np.int16) - truth[inside].astype(np.int16)).mean())


def evaluate(method: Callable[[list[np.ndarray], list[np.ndarray]], list[np.ndarray]], images, masks, truths,
             batch: int) -> tuple[list[float], float]:
    """Per-record MAE and seconds per image (the method's calls only, in batches of ``batch``)."""
    errors, elapsed = [], 0.0
    for start in range(0, len(images), batch):
        chunk_images, chunk_masks = images[start:start + batch], masks[start:start + batch]
        began = time.perf_counter()
        filled = method(chunk_images, chunk_masks)
        elapsed += time.perf_counter() - began
        for out, truth, mask in zip(filled, truths[start:start + batch], chunk_masks, strict=True):
            errors.append(masked_mae(out, truth, mask))
    return errors, elapsed / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--size", default="320x240", help="WxH of the synthetic scenes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dilation", type=int, default=15,
                        help="side of the square dilation kernel in px (the builder's default and AnyEdit's: 15)")
    parser.add_argument("--ring", type=int, default=5, help="width in px of the ring the mean-colour fill averages")
    parser.add_argument("--lama-checkpoint", type=Path, default=None, help="big-lama.pt: adds the in-process LaMa row")
    parser.add_argument("--lama-device", default="cpu")
    parser.add_argument("--lama-batch", type=int, default=4)
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))

    methods: list[tuple[str, Callable, int]] = [
        ("mean-colour fill", lambda i, m: mean_fill(i, m, args.ring), 1),
        ("cv2 Telea (r=5)", OpenCVInpainter(OpenCVInpaintConfig(method="telea", radius=5)).inpaint, 1),
        ("cv2 Navier-Stokes (r=5)", OpenCVInpainter(OpenCVInpaintConfig(method="ns", radius=5)).inpaint, 1),
    ]
    if args.lama_checkpoint is not None:
        from ieiw.backends.inpaint.lama import LamaConfig

        lama = LamaConfig(checkpoint=args.lama_checkpoint, device=args.lama_device, batch_size=args.lama_batch).create()
        methods.append((f"LaMa (in process, {args.lama_device})", lama.inpaint, args.lama_batch))

    with tempfile.TemporaryDirectory(prefix="ieiw-bench-removal-") as name:
        root = make_phrasecut_sample(Path(name) / "VGPhraseCut_v0", args.images, args.seed, width, height)
        images, masks, truths, image_count, skipped = load_cases(root, args.dilation)
    fractions = [float(m.mean()) for m in masks]
    skips = ", ".join(f"{reason} {count}" for reason, count in sorted(skipped.items())) or "none"
    print(f"setup: {image_count} synthetic images at {width}x{height} (seed {args.seed}), {len(images)} referring"
          f" records (skipped by the builder's region policy: {skips}), dilation {args.dilation}x{args.dilation},"
          f" dilated mask {statistics.median(fractions):.1%} of the image (median), ring {args.ring} px,"
          f" {os.cpu_count()} CPUs")
    print("MAE: mean |filled - true background| over the masked pixels (0-255, lower is better), per record")
    print(f"{'method':<30} {'MAE mean':>9} {'MAE median':>11} {'s/image':>9}")
    for label, method, batch in methods:
        errors, seconds = evaluate(method, images, masks, truths, batch)
        print(f"{label:<30} {statistics.fmean(errors):9.2f} {statistics.median(errors):11.2f} {seconds:9.4f}")


if __name__ == "__main__":
    main()
