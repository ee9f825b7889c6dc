"""Deterministic synthetic samples in the exact layouts of COCO-Stuff and RefCOCO / gRefCOCO.

Scenes are drawn like the PhraseCut sample's (:mod:`ieiw.samples.phrasecut`: a smooth background,
coloured shapes that do not overlap); the same arguments always give byte-identical files. Only the
pictures and names are made up: every file is in its dataset's real format (docs/formats.md), so the
converters read a sample through the same code as the real download.

**COCO-Stuff** (``make_cocostuff_sample(root)``): ``images/train2017/{id:012d}.jpg``,
``annotations/train2017/{id:012d}.png`` (8-bit grey stuffthingmaps: pixel value v is class ``v+1`` of
``labels.txt``, 255 unlabelled) and ``labels.txt`` (``0: unlabeled`` then ``N: name`` for COCO-Stuff's 182
classes, ids 1-91 things, 92-182 stuff). A scene is a sky and a ground stuff class split by an unlabelled
band, with 1-4 things drawn over it, each ringed by a 2 px unlabelled outline, as annotation boundaries
are. Every 7th image (the 6th, 13th, ...) is wholly unlabelled (all 255).

**RefCOCO / gRefCOCO** (``make_refcoco_sample(root)``, ``root`` playing ``coco_2014/``):
``images/train2014/COCO_train2014_{id:012d}.jpg``; ``refcoco/refs(unc).p`` (a pickled list of refs,
protocol 2 as the release's) and ``refcoco/instances.json``; ``grefcoco/grefs(unc).json`` and
``grefcoco/instances.json``. Objects are COCO annotations whose ``segmentation`` is, by turns, a polygon
list, a polygon list of two overlapping parts, or a compressed RLE; some images add a crowd annotation
(``iscrowd`` 1, uncompressed RLE, category person). RefCOCO has one ref per non-crowd object; gRefCOCO has
those, one multi-target ref per image with two or more objects (with the crowd annotation among its
targets when the image has one: skipped, as gRefCOCO's loader does), and one no-target ref
(``ann_id [-1]``) naming a colour and shape the image does not have. Every 5th image is in ``val``.
Some sentences are written with capitals, so the converters' lower-casing shows.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from pydantic import Field

from ieiw.samples.base import COLOURS, Shape, ensure_sample, place_shapes, smooth_background, write_sample_captions
from ieiw.schemas.config import StrictModel

COCO_THINGS = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "street sign", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse",
    "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "hat", "backpack", "umbrella", "shoe",
    "eye glasses", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle", "plate",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed",
    "mirror", "dining table", "window", "desk", "toilet", "door", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "blender", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush", "hair brush",
)
COCO_STUFF = (
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage", "cardboard",
    "carpet", "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds", "counter", "cupboard", "curtain",
    "desk-stuff", "dirt", "door-stuff", "fence", "floor-marble", "floor-other", "floor-stone", "floor-tile",
    "floor-wood", "flower", "fog", "food-other", "fruit", "furniture-other", "grass", "gravel",
    "ground-other", "hill", "house", "leaves", "light", "mat", "metal", "mirror-stuff", "moss", "mountain",
    "mud", "napkin", "net", "paper", "pavement", "pillow", "plant-other", "plastic", "platform",
    "playingfield", "railing", "railroad", "river", "road", "rock", "roof", "rug", "salad", "sand", "sea",
    "shelf", "sky-other", "skyscraper", "snow", "solid-other", "stairs", "stone", "straw",
    "structural-other", "table", "tent", "textile-other", "towel", "tree", "vegetable", "wall-brick",
    "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile", "wall-wood", "water-other",
    "waterdrops", "window-blind", "window-other", "wood",
)
LABELS = ("unlabeled", *COCO_THINGS, *COCO_STUFF)  # labels.txt ids 0..182
UNLABELLED = 255

# The sample's classes: the sky and ground stuff it draws, and the thing class each shape stands for.
SKIES = ("sky-other", "clouds", "fog")
GROUNDS = ("grass", "sand", "snow", "pavement", "sea", "dirt")
THING_OF_SHAPE = {"circle": "sports ball", "square": "tv", "triangle": "kite", "diamond": "frisbee"}
STUFF_COLOURS = {
    "sky-other": (120, 170, 230), "clouds": (215, 220, 230), "fog": (185, 190, 195), "grass": (70, 150, 60),
    "sand": (220, 200, 150), "snow": (240, 245, 250), "pavement": (120, 120, 125), "sea": (40, 90, 160),
    "dirt": (130, 95, 60),
}

REFCOCO_MARKER = "refcoco/refs(unc).p"
GREFCOCO_MARKER = "grefcoco/grefs(unc).json"  # written last: marks a finished RefCOCO sample
COCOSTUFF_MARKER = "labels.txt"  # written last: marks a finished COCO-Stuff sample


class SampleSpec(StrictModel):
    """Generate the bundled synthetic sample into the converter's ``root`` when it is missing."""

    images: int = Field(24, ge=1)
    seed: int = 0
    width: int = Field(320, ge=64)
    height: int = Field(240, ge=64)


def label_value(name: str) -> int:
    """The stuffthingmap pixel value of class ``name`` (its labels.txt id minus one)."""
    return LABELS.index(name) - 1


def labels_text() -> str:
    return "".join(f"{index}: {name}\n" for index, name in enumerate(LABELS))


def _tinted(rng: np.random.Generator, rgb: tuple[int, int, int], height: int, width: int) -> np.ndarray:
    noise = rng.normal(0, 6, size=(height, width, 3))
    return np.clip(np.asarray(rgb, np.float64) + noise, 0, 255).astype(np.uint8)


def make_cocostuff_sample(root: Path, images: int = 24, seed: int = 0, width: int = 320, height: int = 240,
                          split: str = "train2017") -> Path:
    """Write ``images`` synthetic scenes under ``root`` in COCO-Stuff's layout; returns ``root``."""
    root = Path(root)
    image_dir, label_dir = root / "images" / split, root / "annotations" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    captioned: list[tuple[int, str, list[str]]] = []
    for index in range(images):
        image_id = 139 + 17 * index  # COCO-like ids: sparse, zero-padded to 12 digits
        stem = f"{image_id:012d}"
        sky, ground = SKIES[int(rng.integers(len(SKIES)))], GROUNDS[int(rng.integers(len(GROUNDS)))]
        horizon = int(rng.integers(height // 3, 2 * height // 3))
        pixels = np.concatenate([_tinted(rng, STUFF_COLOURS[sky], horizon, width),
                                 _tinted(rng, STUFF_COLOURS[ground], height - horizon, width)])
        label = np.full((height, width), UNLABELLED, np.uint8)
        label[:horizon] = label_value(sky)
        label[horizon:] = label_value(ground)
        label[max(horizon - 2, 0):horizon + 2] = UNLABELLED  # the boundary nobody labelled
        canvas, label_image = Image.fromarray(pixels), Image.fromarray(label)
        draw, draw_label = ImageDraw.Draw(canvas), ImageDraw.Draw(label_image)
        shapes = place_shapes(rng, width, height, count=int(rng.integers(1, 5)))
        for shape in shapes:
            outline = [tuple(p) for p in shape.polygon()]
            draw.polygon(outline, fill=COLOURS[shape.colour])
            draw_label.polygon(outline, fill=label_value(THING_OF_SHAPE[shape.kind]))
            draw_label.line(outline + [outline[0]], fill=UNLABELLED, width=2)
        captioned.append((image_id, f"{stem}.jpg", [] if index % 11 == 3 else scene_captions(shapes, sky, ground)))
        if index % 7 == 5:  # an image nobody labelled
            label_image = Image.new("L", (width, height), UNLABELLED)
        canvas.save(image_dir / f"{stem}.jpg", quality=92)
        label_image.save(label_dir / f"{stem}.png")
    # COCO's captions of these images (COCO-Stuff ships none: real builds point `captions:` at COCO's own file)
    write_sample_captions(root / "annotations" / f"captions_{split}.json", captioned)
    (root / "labels.txt").write_text(labels_text())  # last: marks a finished sample
    return root


def scene_captions(shapes: list[Shape], sky: str, ground: str) -> list[str]:
    """Five COCO-style captions of a synthetic scene, from what was drawn."""
    things = [f"{shape.colour} {shape.kind}" for shape in shapes]
    first = things[0]
    several = ", ".join(things[:-1]) + f" and {things[-1]}" if len(things) > 1 else first
    sky_word = {"sky-other": "clear sky", "clouds": "cloudy sky", "fog": "foggy sky"}.get(sky, sky)
    return [
        f"a {first} floating above the {ground}",
        f"a view of {ground} under a {sky_word}",
        f"a {several} over {ground}",
        f"some shapes in front of a {sky_word}",
        f"a picture of the {ground} with a {first} in it",
    ]


def ensure_cocostuff_sample(root: Path, images: int = 24, seed: int = 0, width: int = 320, height: int = 240,
                            split: str = "train2017") -> bool:
    """Make the COCO-Stuff sample at ``root`` unless it is there; True when this call wrote it (atomic and
    race-safe: :func:`ieiw.samples.base.ensure_sample`)."""
    return ensure_sample(root, lambda folder: make_cocostuff_sample(folder, images, seed, width, height, split),
                         COCOSTUFF_MARKER)


# -- RefCOCO / gRefCOCO --------------------------------------------------------------------------
CATEGORIES = [
    {"supercategory": "person", "id": 1, "name": "person"},
    {"supercategory": "sports", "id": 34, "name": "frisbee"},
    {"supercategory": "sports", "id": 37, "name": "sports ball"},
    {"supercategory": "sports", "id": 38, "name": "kite"},
    {"supercategory": "electronic", "id": 72, "name": "tv"},
]
CATEGORY_OF_SHAPE = {"circle": 37, "square": 72, "triangle": 38, "diamond": 34}


def _flat(points: list[list[float]]) -> list[float]:
    return [round(float(v), 2) for point in points for v in point]


def _rasterise(polygons: list[list[float]], width: int, height: int) -> np.ndarray:
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for flat in polygons:
        draw.polygon([(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)], fill=1)
    return np.asarray(canvas, np.uint8)


def _bbox(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def _uncompressed_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO's uncompressed RLE (crowd annotations): column-major run lengths, starting with zeros."""
    flat = mask.flatten(order="F")
    counts, current, run = [], 0, 0
    for value in flat:
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    counts.append(run)
    return {"counts": [int(c) for c in counts], "size": [int(mask.shape[0]), int(mask.shape[1])]}


def _position(shape: Shape, width: int, height: int) -> str:
    if shape.cx < width / 3:
        return "left"
    if shape.cx > 2 * width / 3:
        return "right"
    return "top" if shape.cy < height / 2 else "bottom"


def _sentences(shape: Shape, width: int, height: int, start: int, capitals: bool) -> list[dict[str, Any]]:
    where = _position(shape, width, height)
    texts = [f"{shape.colour} {shape.kind}", f"the {shape.colour} {shape.kind} on the {where}", f"{where} {shape.kind}"]
    if capitals:
        texts[0] = texts[0].title()
    return [{"tokens": text.lower().split(), "raw": text, "sent_id": start + i, "sent": text}
            for i, text in enumerate(texts)]


def _sentence(text: str, sent_id: int) -> dict[str, Any]:
    return {"tokens": text.lower().split(), "raw": text, "sent_id": sent_id, "sent": text}


def make_refcoco_sample(root: Path, images: int = 24, seed: int = 0, width: int = 320, height: int = 240) -> Path:
    """Write ``images`` synthetic scenes under ``root`` (a ``coco_2014/`` folder) with RefCOCO's and
    gRefCOCO's files; returns ``root``."""
    from pycocotools import mask as mask_utils

    root = Path(root)
    image_dir = root / "images" / "train2014"
    image_dir.mkdir(parents=True, exist_ok=True)
    (root / "refcoco").mkdir(exist_ok=True)
    (root / "grefcoco").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    coco_images, annotations, refs, grefs = [], [], [], []
    captioned: list[tuple[int, str, list[str]]] = []
    ref_id, sent_id = 0, 0
    kinds = [(colour, kind) for colour in COLOURS for kind in THING_OF_SHAPE]
    for index in range(images):
        image_id = 9 + 31 * index
        file_name = f"COCO_train2014_{image_id:012d}.jpg"
        split = "val" if index % 5 == 4 else "train"
        canvas = Image.fromarray(smooth_background(rng, width, height))
        draw = ImageDraw.Draw(canvas)
        shapes = place_shapes(rng, width, height, count=int(rng.integers(2, 5)))
        objects: list[tuple[int, Shape]] = []
        for number, shape in enumerate(shapes):
            ann_id = image_id * 100 + number
            polygons = [_flat(shape.polygon())]
            style = (index + number) % 3
            if style == 1:  # two overlapping parts: the shape and a smaller copy sticking out of it
                part = Shape(shape.kind, shape.colour, shape.cx + shape.radius * 0.5, shape.cy, shape.radius * 0.6,
                             shape.angle)
                polygons.append(_flat(part.polygon()))
            for flat in polygons:
                draw.polygon([(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)], fill=COLOURS[shape.colour])
            mask = _rasterise(polygons, width, height)
            if style == 2:  # a compressed RLE, as COCO stores some objects
                rle = mask_utils.encode(np.asfortranarray(mask))
                segmentation: Any = {"size": [height, width], "counts": rle["counts"].decode("ascii")}
            else:
                segmentation = polygons
            annotations.append({
                "segmentation": segmentation, "area": float(mask.sum()), "iscrowd": 0, "image_id": image_id,
                "bbox": _bbox(mask), "category_id": CATEGORY_OF_SHAPE[shape.kind], "id": ann_id,
            })
            objects.append((ann_id, shape))
        crowd_id = None
        if index % 3 == 0:  # a crowd of people: a striped patch in a corner, uncompressed RLE
            crowd = np.zeros((height, width), np.uint8)
            crowd[2:height // 6, 2:width // 6:2] = 1
            pixels = np.asarray(canvas).copy()
            pixels[crowd > 0] = (90, 60, 40)
            canvas = Image.fromarray(pixels)
            crowd_id = image_id * 100 + 99
            annotations.append({
                "segmentation": _uncompressed_rle(crowd), "area": float(crowd.sum()), "iscrowd": 1,
                "image_id": image_id, "bbox": _bbox(crowd), "category_id": 1, "id": crowd_id,
            })
        canvas.save(image_dir / file_name, quality=92)
        captioned.append((image_id, file_name, [] if index % 11 == 3 else scene_captions(shapes, "clear sky", "ground")))
        coco_images.append({"license": 1, "file_name": file_name, "coco_url": f"http://images.example.invalid/{file_name}",
                            "height": height, "width": width, "date_captured": "2013-11-14 16:28:13",
                            "flickr_url": f"http://farm.example.invalid/{image_id}.jpg", "id": image_id})
        for number, (ann_id, shape) in enumerate(objects):
            sentences = _sentences(shape, width, height, sent_id, capitals=(index + number) % 4 == 0)
            sent_id += len(sentences)
            common = {"image_id": image_id, "split": split, "sentences": sentences,
                      "sent_ids": [s["sent_id"] for s in sentences], "ref_id": ref_id,
                      "file_name": file_name.replace(".jpg", f"_{ann_id}.jpg")}
            refs.append({**common, "ann_id": ann_id, "category_id": CATEGORY_OF_SHAPE[shape.kind]})
            grefs.append({**common, "ann_id": [ann_id], "category_id": [CATEGORY_OF_SHAPE[shape.kind]],
                          "no_target": False})
            ref_id += 1
        if len(objects) >= 2:  # several targets at once ("all shapes"), with the crowd among them
            targets = [ann_id for ann_id, _ in objects[:2]] + ([crowd_id] if crowd_id is not None else [])
            categories = [CATEGORY_OF_SHAPE[s.kind] for _, s in objects[:2]] + ([1] if crowd_id is not None else [])
            sentence = _sentence(f"the {objects[0][1].kind} and the {objects[1][1].kind}", sent_id)
            sent_id += 1
            grefs.append({"image_id": image_id, "split": split, "sentences": [sentence], "sent_ids": [sentence["sent_id"]],
                          "ref_id": ref_id, "file_name": file_name, "ann_id": targets, "category_id": categories,
                          "no_target": False})
            ref_id += 1
        present = {(s.colour, s.kind) for _, s in objects}
        missing = [k for k in kinds if k not in present]
        colour, kind = missing[int(rng.integers(len(missing)))]
        sentence = _sentence(f"the {colour} {kind}", sent_id)
        sent_id += 1
        grefs.append({"image_id": image_id, "split": split, "sentences": [sentence], "sent_ids": [sentence["sent_id"]],
                      "ref_id": ref_id, "file_name": file_name, "ann_id": [-1], "category_id": [-1],
                      "no_target": True})
        ref_id += 1
    instances = {"info": {"description": "synthetic sample (ieiw)"}, "licenses": [{"id": 1, "name": "synthetic"}],
                 "images": coco_images, "annotations": annotations, "categories": CATEGORIES}
    text = json.dumps(instances)
    (root / "refcoco" / "instances.json").write_text(text)
    (root / "grefcoco" / "instances.json").write_text(text)
    write_sample_captions(root / "annotations" / "captions_train2014.json", captioned)  # COCO's own file, 2014
    with open(root / REFCOCO_MARKER, "wb") as handle:
        pickle.dump(refs, handle, protocol=2)
    (root / GREFCOCO_MARKER).write_text(json.dumps(grefs))  # last: marks a finished sample
    return root


def ensure_refcoco_sample(root: Path, images: int = 24, seed: int = 0, width: int = 320, height: int = 240) -> bool:
    """Make the RefCOCO + gRefCOCO sample at ``root`` unless it is there; True when this call wrote it."""
    return ensure_sample(root, lambda folder: make_refcoco_sample(folder, images, seed, width, height),
                         GREFCOCO_MARKER)


def polygon_mask(polygons: list[list[float]], width: int, height: int) -> np.ndarray:
    """A plain PIL rasterisation of COCO flat polygons (for checks independent of pycocotools)."""
    return _rasterise(polygons, width, height)

