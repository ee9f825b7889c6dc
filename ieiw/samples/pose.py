"""Bundled keypoint samples: synthetic stick-figure people in each pose dataset's own layout and fields.

``ensure_pose_sample(root, dataset)`` writes, deterministically (same arguments, byte-identical files), one of
(docs/formats.md "Keypoint datasets"):

- ``coco``: ``annotations/person_keypoints_{split}.json`` (``info``, ``licenses``, ``images`` with
  ``file_name`` = ``%012d.jpg``, ``annotations`` with ``segmentation``, ``num_keypoints``, ``area``,
  ``iscrowd``, ``keypoints`` (17 x ``x, y, v``), ``image_id``, ``bbox``, ``category_id``, ``id``, and
  ``categories`` with the keypoint names and skeleton) + ``images/{split}/%012d.jpg``. The first image also
  has a crowd annotation (``iscrowd`` 1, uncompressed RLE, no keypoints), the second a person with no
  labelled joint (all zeros), as COCO has both.
- ``crowdpose``: ``json/crowdpose_{split}.json`` (COCO-style, 14 joints, images with ``crowdIndex``,
  annotations without ``area``, as CrowdPose's) + ``images/{image_id}.jpg``.
- ``aic``: ``annotations/aic_{split}.json`` (COCO-style, 14 joints, images named by a 40-hex-digit
  ``file_name``) + ``ai_challenger_keypoint_train_20170902/keypoint_train_images_20170902/{file_name}``.
- ``mpii``: ``annot/{split}.json``, a list of ``{joints_vis, joints, image, scale, center}`` with 1-based
  ``joints`` (unlabelled ones ``[-1, -1]``, ``joints_vis`` 0) and ``center``/``scale`` (box height / 200),
  as HRNet's file + ``images/{image}`` (``%09d.jpg``).

Joints are labelled v=2 mostly, some v=1 (occluded: drawn the same, a limb passes behind) and some v=0
(unlabelled: x = y = 0, or MPII's ``[-1, -1]``). ``SAMPLE.json`` (the generator's parameters; part of no
format) is written last and marks a finished sample.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ieiw.samples.base import ensure_sample, smooth_background, write_sample_captions
from ieiw.sources.keypoints import JOINTS, default_split

MARKER = "SAMPLE.json"

# A standing person, facing the camera: (x across the body, -0.5..0.5 of its width; y down, 0..1 of its
# height), per joint name of any dataset (snake_case keys; COCO's words map onto them).
BODY = {
    "nose": (0.0, 0.07), "left_eye": (0.05, 0.05), "right_eye": (-0.05, 0.05), "left_ear": (0.1, 0.07),
    "right_ear": (-0.1, 0.07), "left_shoulder": (0.24, 0.2), "right_shoulder": (-0.24, 0.2),
    "left_elbow": (0.34, 0.37), "right_elbow": (-0.34, 0.37), "left_wrist": (0.4, 0.53),
    "right_wrist": (-0.4, 0.53), "left_hip": (0.14, 0.55), "right_hip": (-0.14, 0.55),
    "left_knee": (0.16, 0.76), "right_knee": (-0.16, 0.76), "left_ankle": (0.17, 0.96),
    "right_ankle": (-0.17, 0.96), "top_head": (0.0, 0.0), "head_top": (0.0, 0.0), "neck": (0.0, 0.15),
    "upper_neck": (0.0, 0.13), "thorax": (0.0, 0.2), "pelvis": (0.0, 0.55),
}
LIMBS = [("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"), ("right_shoulder", "right_elbow"),
         ("right_elbow", "right_wrist"), ("left_shoulder", "right_shoulder"), ("left_hip", "right_hip"),
         ("left_shoulder", "left_hip"), ("right_shoulder", "right_hip"), ("left_hip", "left_knee"),
         ("left_knee", "left_ankle"), ("right_hip", "right_knee"), ("right_knee", "right_ankle")]
COCO_SKELETON = [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8], [7, 9],
                 [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7]]


def _key(name: str) -> str:
    return name.replace(" ", "_")


def _person(rng: np.random.Generator, slot: tuple[float, float], height: int) -> dict[str, tuple[float, float]]:
    """Joint positions (0-based pixels, 2 decimals) of one figure standing in the x range ``slot``."""
    x0, x1 = slot
    tall = float(rng.uniform(0.6, 0.82)) * height
    wide = min(tall * 0.45, (x1 - x0) * 0.9)
    cx = float(rng.uniform(x0 + wide / 2 + 2, x1 - wide / 2 - 2))
    margin = 0.07 * height  # every joint stays a disc radius inside the image, so the discs are whole
    top = float(rng.uniform(margin, height - tall - margin))
    out = {}
    for name, (u, v) in BODY.items():
        jx, jy = rng.normal(0, 0.015, size=2)
        out[name] = (round(cx + (u + jx) * wide, 2), round(top + (v + jy) * tall, 2))
    return out


def _draw_person(draw: ImageDraw.ImageDraw, joints: dict[str, tuple[float, float]], colour: tuple[int, ...],
                 thickness: int) -> None:
    for a, b in LIMBS:
        draw.line([joints[a], joints[b]], fill=colour, width=thickness)
    hx, hy = joints["nose"]
    size = abs(joints["left_ear"][0] - joints["right_ear"][0]) * 0.8 + 3
    draw.ellipse([hx - size, hy - size * 1.2, hx + size, hy + size * 1.1], fill=colour)
    draw.line([joints["neck"], joints["pelvis"]], fill=colour, width=thickness)


def _visibility(rng: np.random.Generator) -> int:
    return int(rng.choice([2, 1, 0], p=[0.65, 0.15, 0.2]))


def make_pose_sample(root: Path, dataset: str, images: int = 12, seed: int = 0, width: int = 320,
                     height: int = 240, split: str | None = None) -> Path:
    """Write the sample of ``dataset`` under ``root`` (module docstring); returns ``root``."""
    if dataset not in JOINTS:
        raise ValueError(f"no pose sample for {dataset!r}; datasets: {', '.join(JOINTS)}")
    root = Path(root)
    split = split or default_split(dataset)
    rng = np.random.default_rng(seed)
    names = [_key(n) for n in JOINTS[dataset]]
    image_entries: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    mpii: list[dict[str, Any]] = []
    next_ann = 1001
    for index in range(images):
        canvas = Image.fromarray(smooth_background(rng, width, height))
        draw = ImageDraw.Draw(canvas)
        count = int(rng.integers(1, 4))
        slots = [(width * k / count, width * (k + 1) / count) for k in range(count)]
        people = [_person(rng, slot, height) for slot in slots]
        thickness = max(2, round(min(width, height) / 60))
        for joints in people:
            _draw_person(draw, joints, tuple(int(c) for c in rng.integers(20, 235, size=3)), thickness)
        if dataset == "coco":
            image_id = 1000 + 7 * index
            file_name = f"{image_id:012d}.jpg"
            path = root / "images" / split / file_name
        elif dataset == "crowdpose":
            image_id = 100000 + index
            file_name = f"{image_id}.jpg"
            path = root / "images" / file_name
        elif dataset == "aic":
            image_id = index + 1
            file_name = rng.bytes(20).hex() + ".jpg"
            path = root / "ai_challenger_keypoint_train_20170902" / "keypoint_train_images_20170902" / file_name
        else:
            image_id = index + 1
            file_name = f"{15601864 + 1013 * index:09d}.jpg"
            path = root / "images" / file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        canvas.save(path, quality=92)
        entry: dict[str, Any] = {"file_name": file_name, "id": image_id, "height": height, "width": width}
        if dataset == "coco":
            entry = {"license": 4, "file_name": file_name, "coco_url": f"https://example.invalid/{split}/{file_name}",
                     "height": height, "width": width, "date_captured": "2013-11-14 16:28:13",
                     "flickr_url": f"https://example.invalid/flickr/{file_name}", "id": image_id}
        elif dataset == "crowdpose":
            entry["crowdIndex"] = round(float(rng.uniform(0, 1)), 2)
        image_entries.append(entry)
        for number, joints in enumerate(people):
            empty = dataset != "mpii" and index == 1 and number == 0  # a person with no labelled joint
            vis = [0 if empty else _visibility(rng) for _ in names]
            if not empty and sum(1 for v in vis if v) < 3:
                vis = [v or 2 for v in vis]
            points = [joints[n] for n in names]
            xs = [p[0] for p in points]
            ys = [p[1] for p in points]
            box = [round(min(xs) - 4, 2), round(min(ys) - 8, 2), round(max(xs) - min(xs) + 8, 2),
                   round(max(ys) - min(ys) + 12, 2)]
            if dataset == "mpii":
                mpii.append({
                    "joints_vis": [1 if v else 0 for v in vis],
                    "joints": [[round(p[0] + 1, 2), round(p[1] + 1, 2)] if v else [-1.0, -1.0]
                               for p, v in zip(points, vis, strict=True)],
                    "image": file_name,
                    "scale": round(box[3] / 200.0, 4),
                    "center": [round(box[0] + box[2] / 2 + 1, 2), round(box[1] + box[3] / 2 + 1, 2)],
                })
                continue
            keypoints: list[float] = []
            for (x, y), v in zip(points, vis, strict=True):
                keypoints += [x, y, v] if v else [0, 0, 0]
            x0, y0, bw, bh = box
            ann: dict[str, Any] = {
                "num_keypoints": sum(1 for v in vis if v),
                "iscrowd": 0,
                "keypoints": keypoints,
                "image_id": image_id,
                "bbox": box,
                "category_id": 1,
                "id": next_ann,
            }
            if dataset != "crowdpose":
                ann = {"segmentation": [[x0, y0, x0 + bw, y0, x0 + bw, y0 + bh, x0, y0 + bh]],
                       "area": round(bw * bh * 0.6, 2), **ann}
            annotations.append(ann)
            next_ann += 1
        if dataset == "coco" and index == 0:  # a crowd region: RLE, no keypoints
            cw, ch = width // 4, height // 4
            annotations.append({"segmentation": {"counts": _crowd_rle(width, height, cw, ch), "size": [height, width]},
                                "num_keypoints": 0, "area": float(cw * ch), "iscrowd": 1,
                                "keypoints": [0] * (3 * len(names)), "image_id": image_id,
                                "bbox": [0.0, 0.0, float(cw), float(ch)], "category_id": 1, "id": 900000001})
    if dataset == "mpii":
        ann_path = root / "annot" / f"{split}.json"
        payload: Any = mpii
    else:
        category = {"supercategory": "person", "id": 1, "name": "person", "keypoints": names,
                    "skeleton": COCO_SKELETON if dataset == "coco" else []}
        payload = {"images": image_entries, "annotations": annotations, "categories": [category]}
        if dataset == "coco":
            payload = {"info": {"description": "ieiw synthetic COCO keypoints sample", "version": "1.0",
                                "year": 2017, "contributor": "ieiw", "date_created": "2017/09/01"},
                       "licenses": [{"url": "http://creativecommons.org/licenses/by/2.0/", "id": 4,
                                     "name": "Attribution License"}], **payload}
        ann_path = root / {"coco": f"annotations/person_keypoints_{split}.json",
                           "crowdpose": f"json/crowdpose_{split}.json", "aic": f"annotations/aic_{split}.json"}[dataset]
    ann_path.parent.mkdir(parents=True, exist_ok=True)
    ann_path.write_text(json.dumps(payload))
    if dataset == "coco":  # COCO's captions of the same images (annotations/captions_{split}.json)
        people_of: dict[int, list[Any]] = {e["id"]: [] for e in image_entries}
        for ann in annotations:
            if not ann["iscrowd"]:
                people_of[ann["image_id"]].append(ann)
        write_sample_captions(root / "annotations" / f"captions_{split}.json", [
            (entry["id"], entry["file_name"], [] if index % 11 == 3 else [
                (f"{len(people_of[entry['id']])} people standing in a field" if len(people_of[entry["id"]]) > 1
                 else "a person standing in a field"),
                "a group of stick figures posing for a photo" if len(people_of[entry["id"]]) > 1
                else "a stick figure standing alone",
                "people with their arms out",
                "a drawing of some figures on a plain background",
                "figures standing next to each other"])
            for index, entry in enumerate(image_entries)])
    (root / MARKER).write_text(json.dumps({"dataset": dataset, "images": images, "seed": seed, "width": width,
                                           "height": height, "split": split}, sort_keys=True))
    return root


def _crowd_rle(width: int, height: int, cw: int, ch: int) -> list[int]:
    """Uncompressed COCO RLE (column-major runs, starting with zeros) of the box [0, cw) x [0, ch)."""
    mask = np.zeros((height, width), np.uint8)
    mask[:ch, :cw] = 1
    flat = mask.flatten(order="F")
    counts, current, run = [], 0, 0
    for value in flat:
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    counts.append(run)
    return [int(c) for c in counts]


def ensure_pose_sample(root: Path, dataset: str, images: int = 12, seed: int = 0, width: int = 320,
                       height: int = 240, split: str | None = None) -> bool:
    """Make the sample at ``root`` unless it is there; True when this call wrote it (race-safe: written into a
    temporary sibling folder and renamed in one step, :func:`ieiw.samples.base.ensure_sample`)."""
    return ensure_sample(root, lambda folder: make_pose_sample(folder, dataset, images, seed, width, height, split),
                         MARKER)
