"""Bundled enhancement samples: synthetic clean scenes and their degraded partners in each dataset's layout.

``ensure_enhance_sample(root, dataset)`` writes, deterministically (same arguments, byte-identical files), one
of (docs/formats.md "Low-level tasks"; :mod:`ieiw.builders.enhance` for the layouts):

| dataset | ``training`` layout | ``release`` layout |
|---|---|---|
| ``gopro`` | ``{split}/input/<seq>_<frame>.png`` + ``{split}/target/`` | ``{split}/<seq>/{blur,blur_gamma,sharp}/<frame>.png`` |
| ``reds`` | ``{split}/{blur,sharp}/<seq>/<frame>.png`` | ``{split}/{split}_{blur,sharp}/<seq>/<frame>.png`` |
| ``sidd`` | ``{split}/{input,gt}/<name>.png`` | ``Data/<scene>/<id>_{NOISY,GT}_SRGB_<n>.PNG`` |
| ``clwd`` | ``{split}/{Watermarked_image,Watermark_free_image}/<n>.jpg`` | the same |
| ``synthetic`` | ``<n>.jpg`` / ``.png`` clean images, one in a subfolder | the same |

The degraded partner is the clean scene put through :func:`ieiw.builders.enhance.degrade` (GoPro/REDS blur,
SIDD noise, CLWD watermark) with a seed per file, so every pair is aligned pixel for pixel. ``orphans``
adds degraded files without a clean partner whose names sort before every other file: pairing by sorted
position (the official loaders) would then shift every pair by one, pairing by name does not. Every scene is
different, so a mis-pair shows. ``SAMPLE.json`` (the parameters; part of no format) is written last and marks a
finished sample.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ieiw.samples.base import ensure_sample, synthetic_scene
from ieiw.sources.degradations import DATASET_DEGRADATION, DATASETS, degrade

MARKER = "SAMPLE.json"
GOPRO_SEQS = ("GOPR0372_07_00", "GOPR0374_11_00")
SIDD_SCENES = ("0001_001_S6_00100_00060_3200_L", "0002_001_S6_00100_00020_3200_N")


def clean_scene(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A scene with edges and fine lines, so that blur, noise and a stamp all show."""
    canvas = Image.fromarray(synthetic_scene(rng, width, height))
    draw = ImageDraw.Draw(canvas)
    for _ in range(6):
        x0, y0 = (int(v) for v in rng.integers(0, [width, height]))
        x1, y1 = (int(v) for v in rng.integers(0, [width, height]))
        draw.line([(x0, y0), (x1, y1)], fill=tuple(int(c) for c in rng.integers(0, 256, size=3)), width=1)
    return np.asarray(canvas)


def _save(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        image.save(path, quality=92)
    else:
        image.save(path, format="PNG", compress_level=3)


def _names(dataset: str, layout: str, split: str, count: int, orphans: int) -> tuple[list, list]:
    """(pairs, orphans): (degraded path, clean path) per pair, then degraded paths without partner; relative."""
    pairs, lonely = [], []
    if dataset == "gopro":
        for index in range(count + orphans):
            seq = GOPRO_SEQS[0] if index < orphans else GOPRO_SEQS[(index - orphans) % 2]
            frame = 47 + index  # the orphans take the lowest frame numbers of the first sequence
            if layout == "training":
                deg = f"{split}/input/{seq}_{frame:06d}.png"
                cln = f"{split}/target/{seq}_{frame:06d}.png"
            else:
                deg = f"{split}/{seq}/blur/{frame:06d}.png"
                cln = f"{split}/{seq}/sharp/{frame:06d}.png"
            (lonely.append(deg) if index < orphans else pairs.append((deg, cln)))
    elif dataset == "reds":
        blur, sharp = ("blur", "sharp") if layout == "training" else (f"{split}_blur", f"{split}_sharp")
        for index in range(count + orphans):
            seq = 0 if index < orphans else (index - orphans) % 2
            frame = index
            deg, cln = f"{split}/{blur}/{seq:03d}/{frame:08d}.png", f"{split}/{sharp}/{seq:03d}/{frame:08d}.png"
            (lonely.append(deg) if index < orphans else pairs.append((deg, cln)))
    elif dataset == "sidd":
        for index in range(count + orphans):
            scene_no = 0 if index < orphans else (index - orphans) % 2
            scene = SIDD_SCENES[scene_no]
            number = 9 - index if index < orphans else 10 + index
            if layout == "training":
                name = f"{scene_no + 1:04d}_{number:03d}.png"
                deg, cln = f"{split}/input/{name}", f"{split}/gt/{name}"
            else:
                deg = f"Data/{scene}/{scene[:4]}_NOISY_SRGB_{number:03d}.PNG"
                cln = f"Data/{scene}/{scene[:4]}_GT_SRGB_{number:03d}.PNG"
            (lonely.append(deg) if index < orphans else pairs.append((deg, cln)))
    else:  # clwd: numbered jpgs; an orphan "0.jpg" sorts first ("0" < "1" < "10" < "2")
        for index in range(orphans):
            lonely.append(f"{split}/Watermarked_image/{index}.jpg" if index == 0 else
                          f"{split}/Watermarked_image/0{index}.jpg")
        for number in range(1, count + 1):
            pairs.append((f"{split}/Watermarked_image/{number}.jpg", f"{split}/Watermark_free_image/{number}.jpg"))
    return pairs, lonely


def make_enhance_sample(root: Path, dataset: str, pairs: int = 8, seed: int = 0, width: int = 160,
                        height: int = 120, orphans: int = 0, layout: str = "training", split: str = "train") -> Path:
    """Write the sample of ``dataset`` under ``root`` (module docstring); returns ``root``."""
    if dataset not in DATASETS:
        raise ValueError(f"no enhancement sample for {dataset!r}; datasets: {', '.join(DATASETS)}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    if dataset == "synthetic":
        for index in range(pairs):
            name = f"{index:04d}.png" if index % 3 == 2 else f"{index:04d}.jpg"
            _save(root / ("more" if index == pairs - 1 and pairs > 1 else "") / name, clean_scene(rng, width, height))
    else:
        kind = DATASET_DEGRADATION[dataset]
        listed, lonely = _names(dataset, layout, split, pairs, orphans)
        for index, (deg, cln) in enumerate(listed):
            clean = clean_scene(rng, width, height)
            degraded = degrade(clean, kind, int(rng.integers(0, 2**62))).pixels
            _save(root / cln, clean)
            _save(root / deg, degraded)
            if dataset == "gopro" and layout == "release":  # the release's gamma-space blur, not read
                _save(root / deg.replace("/blur/", "/blur_gamma/"), degraded)
        for deg in lonely:
            _save(root / deg, degrade(clean_scene(rng, width, height), kind, int(rng.integers(0, 2**62))).pixels)
    (root / MARKER).write_text(json.dumps({"dataset": dataset, "pairs": pairs, "seed": seed, "width": width,
                                           "height": height, "orphans": orphans, "layout": layout, "split": split},
                                          sort_keys=True))
    return root


def ensure_enhance_sample(root: Path, dataset: str, pairs: int = 8, seed: int = 0, width: int = 160,
                          height: int = 120, orphans: int = 0, layout: str = "training", split: str = "train") -> bool:
    """Make the sample at ``root`` unless it is there; True when this call wrote it (race-safe: written into a
    temporary sibling folder and renamed in one step, :func:`ieiw.samples.base.ensure_sample`)."""
    return ensure_sample(root, lambda folder: make_enhance_sample(folder, dataset, pairs, seed, width, height,
                                                                  orphans, layout, split), MARKER)
