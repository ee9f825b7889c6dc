"""The bundled replacement sample: synthetic scenes of labelled objects in SA-1B and Open Images layouts.

``ensure_replace_samples(root)`` writes, deterministically (same arguments, byte-identical files):

- ``root/sa1b/``: ``sa_<n>.jpg`` + ``sa_<n>.json`` (n = 1, 2, ...), field for field as SA-1B
  (docs/formats.md): one annotation per object plus one background ("stuff") mask, masks as compressed
  COCO RLE from ``pycocotools.mask.encode``, ``bbox``/``area`` from pycocotools, ``predicted_iou`` and
  ``stability_score`` drawn in SAM's usual range, ``point_coords`` inside the object, ``crop_box`` the whole
  image. No labels, as SA-1B has none.
- ``root/open-images/``: ``images/<ImageID>.jpg`` (16 hex digits), ``masks/<ImageID>_<MID>_<BoxID>.png``
  (0/255 grey, image size), ``train-annotations-object-segmentation.csv`` with its header, and
  ``class-descriptions-boxable.csv`` without one, as the boxable class file has (configure
  ``classes: class-descriptions-boxable.csv``). The MIDs are made up (``/m/0ieiw<nn>``).
- ``root/samples.json``: the generator's parameters and the planted objects per image (label, box,
  record id): ground truth for tests, part of neither format. Written last: it marks a finished sample.

Scenes are drawn like the PhraseCut sample's (:mod:`ieiw.samples.phrasecut`: smooth background,
non-overlapping shapes). Each object is a colour and a shape, named as "change the A to B" can name it:
``red circle``, ``blue square`` (Open Images DisplayNames are capitalised as that dataset writes them:
``Red circle``). Both formats use the same 32 kinds, so the labelled Open Images objects can label the
unlabelled SA-1B ones.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ieiw.imageio import encode
from ieiw.samples.base import COLOURS, SHAPES, Shape, ensure_sample, place_shapes, smooth_background
from ieiw.sources.openimages import write_class_descriptions

MARKER = "samples.json"
SA1B_DIR = "sa1b"
OPEN_IMAGES_DIR = "open-images"
OI_ANNOTATIONS = "train-annotations-object-segmentation.csv"
OI_CLASSES = "class-descriptions-boxable.csv"
OI_COLUMNS = ("MaskPath", "ImageID", "LabelName", "BoxID", "BoxXMin", "BoxXMax", "BoxYMin", "BoxYMax",
              "PredictedIoU", "Clicks")


def object_kinds() -> list[tuple[str, str]]:
    """(colour, shape) of every object kind, in a fixed order."""
    return [(colour, shape) for colour in COLOURS for shape in SHAPES]


def kind_label(colour: str, shape: str) -> str:
    return f"{colour} {shape}"


def kind_mid(index: int) -> str:
    return f"/m/0ieiw{index:02d}"


def open_images_classes() -> dict[str, str]:
    """``{MID: DisplayName}`` of the sample's classes (``/m/0ieiw00`` -> ``Red circle``)."""
    return {kind_mid(i): kind_label(c, s).capitalize() for i, (c, s) in enumerate(object_kinds())}


def _scene(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, list[Shape], list[np.ndarray]]:
    """Pixels, the shapes and each shape's exact mask (the pixels its fill covers)."""
    canvas = Image.fromarray(smooth_background(rng, width, height))
    draw = ImageDraw.Draw(canvas)
    shapes = place_shapes(rng, width, height, count=int(rng.integers(2, 5)))
    masks = []
    for shape in shapes:
        points = [tuple(p) for p in shape.polygon()]
        draw.polygon(points, fill=COLOURS[shape.colour])
        layer = Image.new("L", (width, height), 0)
        ImageDraw.Draw(layer).polygon(points, fill=1)
        masks.append(np.asarray(layer, dtype=np.uint8))
    return np.asarray(canvas), shapes, masks


def _rle(mask: np.ndarray) -> tuple[dict[str, Any], int, list[float]]:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    area = int(mask_utils.area(rle))
    bbox = [float(v) for v in mask_utils.toBbox(rle)]
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}, area, bbox


def _inside_point(mask: np.ndarray, rng: np.random.Generator) -> list[float]:
    ys, xs = np.nonzero(mask)
    pick = int(rng.integers(len(ys)))
    return [float(xs[pick]), float(ys[pick])]


def write_sa1b(root: Path, images: int, seed: int, width: int, height: int) -> list[dict[str, Any]]:
    """The SA-1B half; returns the planted objects per image."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 1])
    truth = []
    ann_id = 1000
    for number in range(1, images + 1):
        pixels, shapes, masks = _scene(rng, width, height)
        name = f"sa_{number}"
        (root / f"{name}.jpg").write_bytes(encode(pixels, "jpeg"))
        annotations, objects = [], []
        stuff = np.logical_not(np.logical_or.reduce(masks)).astype(np.uint8)
        for shape, mask in [*zip(shapes, masks, strict=True), (None, stuff)]:
            ann_id += 1
            segmentation, area, bbox = _rle(mask)
            annotations.append({
                "id": ann_id,
                "segmentation": segmentation,
                "bbox": bbox,
                "area": area,
                "predicted_iou": round(float(rng.uniform(0.86, 1.0)), 6),
                "stability_score": round(float(rng.uniform(0.92, 0.99)), 6),
                "crop_box": [0.0, 0.0, float(width), float(height)],
                "point_coords": [_inside_point(mask, rng)],
            })
            if shape is not None:
                objects.append({"record_id": f"{number}:{ann_id}", "label": kind_label(shape.colour, shape.kind),
                                "bbox": [int(v) for v in bbox], "area": area})
        doc = {"image": {"image_id": number, "width": width, "height": height, "file_name": f"{name}.jpg"},
               "annotations": annotations}
        (root / f"{name}.json").write_text(json.dumps(doc))
        truth.append({"image_id": str(number), "file": f"{SA1B_DIR}/{name}.json", "objects": objects,
                      "stuff_record_id": f"{number}:{ann_id}"})
    return truth


def _clicks(mask: np.ndarray, rng: np.random.Generator, width: int, height: int) -> str:
    """Open Images' ``Clicks``: ``x y label`` triples (normalised; 1 inside, 0 outside) joined by ``;``."""
    out = []
    for label in (1, 1, 0):
        if label:
            x, y = _inside_point(mask, rng)
        else:
            ys, xs = np.nonzero(mask == 0)
            pick = int(rng.integers(len(ys)))
            x, y = float(xs[pick]), float(ys[pick])
        out.append(f"{(x + 0.5) / width:.5f} {(y + 0.5) / height:.5f} {label}")
    return ";".join(out)


def write_open_images(root: Path, images: int, seed: int, width: int, height: int) -> list[dict[str, Any]]:
    """The Open Images half; returns the planted objects per image."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 2])
    mids = {kind: kind_mid(i) for i, kind in enumerate(object_kinds())}
    classes = open_images_classes()
    rows, truth = [], []
    for _ in range(images):
        pixels, shapes, masks = _scene(rng, width, height)
        image_id = rng.bytes(8).hex()
        (root / "images" / f"{image_id}.jpg").write_bytes(encode(pixels, "jpeg"))
        objects = []
        for shape, mask in zip(shapes, masks, strict=True):
            mid = mids[(shape.colour, shape.kind)]
            box_id = rng.bytes(4).hex()
            mask_path = f"{image_id}_{mid.replace('/', '')}_{box_id}.png"
            (root / "masks" / mask_path).write_bytes(encode((mask * 255).astype(np.uint8), "png"))
            _, area, (x, y, w, h) = _rle(mask)
            rows.append([mask_path, image_id, mid, box_id, f"{x / width:.6f}", f"{(x + w) / width:.6f}",
                         f"{y / height:.6f}", f"{(y + h) / height:.6f}", f"{rng.uniform(0.7, 0.98):.5f}",
                         _clicks(mask, rng, width, height)])
            objects.append({"record_id": mask_path[: -len(".png")], "label": classes[mid],
                            "bbox": [int(x), int(y), int(w), int(h)], "area": area})
        truth.append({"image_id": image_id, "file": f"{OPEN_IMAGES_DIR}/images/{image_id}.jpg", "objects": objects})
    rows.sort(key=lambda r: r[0])  # the release lists masks sorted by MaskPath
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(OI_COLUMNS)
    writer.writerows(rows)
    (root / OI_ANNOTATIONS).write_text(buffer.getvalue())
    write_class_descriptions(root / OI_CLASSES, classes, header=False)
    return truth


def make_replace_samples(root: Path, images: int = 30, seed: int = 0, width: int = 320, height: int = 240) -> Path:
    """Write both formats under ``root`` (``images`` scenes each); returns ``root``. Not atomic: use
    :func:`ensure_replace_samples`."""
    root = Path(root)
    sa1b = write_sa1b(root / SA1B_DIR, images, seed, width, height)
    oi = write_open_images(root / OPEN_IMAGES_DIR, images, seed, width, height)
    meta = {"images": images, "seed": seed, "width": width, "height": height,
            "open_images_classes": OI_CLASSES, "sa1b": sa1b, "open_images": oi}
    (root / MARKER).write_text(json.dumps(meta, indent=1))
    return root


def ensure_replace_samples(root: Path, images: int = 30, seed: int = 0, width: int = 320, height: int = 240) -> bool:
    """Make the sample at ``root`` unless it is there; True when this call wrote it (atomic and
    race-safe: :func:`ieiw.samples.base.ensure_sample`)."""
    return ensure_sample(root, lambda folder: make_replace_samples(folder, images, seed, width, height), MARKER)
