"""A deterministic synthetic source in the exact VGPhraseCut layout, bundled for `make build` and tests.

Scenes are coloured shapes drawn over a smooth background (:mod:`ieiw.samples.base`); the clean background is kept in
``backgrounds/{image_id}.png`` (not part of PhraseCut) so tests can measure removal against ground
truth. Shapes never overlap and keep a margin, so the background is the true content under every
region. Each image gets one referring record per (shape, colour) group; a group of two identical
shapes makes a two-instance record, as PhraseCut has.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ieiw.samples.base import COLOURS, SIZE_WORDS, Shape, ensure_sample, place_shapes, smooth_background


def _relation(a: Shape, b: Shape) -> str:
    dx, dy = b.cx - a.cx, b.cy - a.cy
    if abs(dx) > abs(dy):
        return "left of" if dx > 0 else "right of"
    return "above" if dy > 0 else "below"


def phrase_record(image_id: int, group: list[tuple[int, Shape]], others: list[Shape], kind: str) -> dict:
    """One referring record in PhraseCut's field layout; ``kind`` is the phrase_structure type."""
    first = group[0][1]
    name = first.kind + ("s" if len(group) > 1 else "")
    attributes = [] if kind == "name" else [first.colour]
    relations: list[list[str]] = []
    if kind in ("relation", "verbose") and others:
        other = others[0]
        relations = [[_relation(first, other), other.kind]]
    words = attributes + [name]
    if kind == "verbose":
        words = [SIZE_WORDS[first.radius > 30]] + words
    phrase = " ".join(words + ([f"{relations[0][0]} {relations[0][1]}"] if relations else []))
    ann_ids = [image_id * 100 + index for index, _ in group]
    return {
        "task_id": f"{image_id}__" + "_".join(str(a) for a in ann_ids),
        "image_id": image_id,
        "ann_ids": ann_ids,
        "instance_boxes": [shape.box() for _, shape in group],
        "Polygons": [[shape.polygon()] for _, shape in group],
        "phrase": phrase,
        "phrase_structure": {
            "name": name,
            "attributes": attributes,
            "relation_ids": list(range(len(relations))),
            "relation_descriptions": relations,
            "type": kind,
        },
        "iou": 1.0,
        "iob": 1.0,
        "iop": 1.0,
        "turk_id": "synthetic",
    }


def make_phrasecut_sample(root: Path, images: int = 120, seed: int = 0, width: int = 320, height: int = 240) -> Path:
    """Write ``images`` synthetic scenes under ``root`` in VGPhraseCut_v0 layout; returns ``root``.

    The same arguments always give byte-identical files.
    """
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "backgrounds").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    infos, refer = [], {"train": [], "val": []}
    kinds = ("name", "attribute", "relation", "verbose")
    for index in range(images):
        image_id = index + 1
        split = "val" if index % 10 == 9 else "train"
        background = smooth_background(rng, width, height)
        shapes = place_shapes(rng, width, height, count=int(rng.integers(2, 5)))
        canvas = Image.fromarray(background)
        draw = ImageDraw.Draw(canvas)
        for shape in shapes:
            draw.polygon([tuple(p) for p in shape.polygon()], fill=COLOURS[shape.colour])
        canvas.save(root / "images" / f"{image_id}.jpg", quality=92)
        Image.fromarray(background).save(root / "backgrounds" / f"{image_id}.png")
        infos.append(
            {
                "width": width,
                "url": f"https://example.invalid/VG_100K/{image_id}.jpg",
                "height": height,
                "image_id": image_id,
                "split": split,
                "coco_id": None,
                "flickr_id": None,
            }
        )
        groups: dict[tuple[str, str], list[tuple[int, Shape]]] = {}
        for shape_index, shape in enumerate(shapes):
            groups.setdefault((shape.kind, shape.colour), []).append((shape_index, shape))
        for group_index, group in enumerate(groups.values()):
            others = [s for i, s in enumerate(shapes) if i not in {gi for gi, _ in group}]
            kind = kinds[(index + group_index) % len(kinds)]
            refer[split].append(phrase_record(image_id, group, others, kind))
    for split, records in refer.items():
        (root / f"refer_{split}.json").write_text(json.dumps(records))
    # Written last: its presence is what marks a finished sample (a killed generation is redone).
    (root / "image_data_split.json").write_text(json.dumps(infos))
    return root


MARKER = "image_data_split.json"


def ensure_phrasecut_sample(root: Path, images: int = 120, seed: int = 0, width: int = 320, height: int = 240) -> bool:
    """Make the PhraseCut-layout sample at ``root`` unless it is there (:func:`ensure_sample`)."""
    return ensure_sample(root, lambda folder: make_phrasecut_sample(folder, images, seed, width, height), MARKER)
