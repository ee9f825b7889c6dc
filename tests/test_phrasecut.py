"""The synthetic sample follows VGPhraseCut's layout field for field; the rasterisation is the official rule."""

from __future__ import annotations

import filecmp
import json

import numpy as np

from ieiw.builders.phrasecut import PhraseCutSource, polygons_to_mask
from ieiw.builders.samples import make_phrasecut_sample

RECORD_KEYS = {"task_id", "image_id", "ann_ids", "instance_boxes", "Polygons", "phrase", "phrase_structure",
               "iou", "iob", "iop", "turk_id"}
STRUCTURE_KEYS = {"name", "attributes", "relation_ids", "relation_descriptions", "type"}
INFO_KEYS = {"width", "url", "height", "image_id", "split", "coco_id", "flickr_id"}


def test_sample_layout_matches_phrasecut(sample_root):
    infos = json.loads((sample_root / "image_data_split.json").read_text())
    assert len(infos) == 30 and all(set(i) == INFO_KEYS for i in infos)
    records = [r for split in ("train", "val") for r in json.loads((sample_root / f"refer_{split}.json").read_text())]
    assert records and all(set(r) == RECORD_KEYS for r in records)
    assert all(set(r["phrase_structure"]) == STRUCTURE_KEYS for r in records)
    assert {r["phrase_structure"]["type"] for r in records} == {"name", "attribute", "relation", "verbose"}
    for record in records:
        image_id, ann_part = record["task_id"].split("__")
        assert int(image_id) == record["image_id"]
        assert [int(a) for a in ann_part.split("_")] == record["ann_ids"]
        assert len(record["Polygons"]) == len(record["ann_ids"]) == len(record["instance_boxes"])
        for instance in record["Polygons"]:
            for polygon in instance:
                assert all(len(point) == 2 and isinstance(point[0], float) for point in polygon)
        assert (sample_root / "images" / f"{record['image_id']}.jpg").exists()
    assert any(len(r["ann_ids"]) > 1 for r in records), "some phrases must refer to two instances"
    per_image = {}
    for record in records:
        per_image[record["image_id"]] = per_image.get(record["image_id"], 0) + len(record["ann_ids"])
    assert min(per_image.values()) >= 2, "every scene has at least two objects"


def test_sample_is_deterministic(tmp_path):
    a = make_phrasecut_sample(tmp_path / "a", 4, seed=3, width=96, height=80)
    b = make_phrasecut_sample(tmp_path / "b", 4, seed=3, width=96, height=80)
    c = make_phrasecut_sample(tmp_path / "c", 4, seed=4, width=96, height=80)
    for name in ("image_data_split.json", "refer_train.json", "images/1.jpg", "backgrounds/2.png"):
        assert filecmp.cmp(a / name, b / name, shallow=False)
    assert not filecmp.cmp(a / "images/1.jpg", c / "images/1.jpg", shallow=False)


def test_official_rasterisation_rule():
    # A 10x10 square with float corners: int() truncation, outline included -> 11x11 pixels.
    square = [[10.9, 10.2], [20.7, 10.0], [20.1, 20.9], [10.0, 20.5]]
    mask = polygons_to_mask([[square]], 40, 30)
    assert mask.dtype == np.uint8 and mask.shape == (30, 40)
    assert mask.sum() == 121 and mask[10:21, 10:21].all()
    # Polygons with fewer than 2 points are skipped, other instances still drawn (union).
    mask = polygons_to_mask([[[[5.0, 5.0]]], [square]], 40, 30)
    assert mask.sum() == 121
    two = polygons_to_mask([[square], [[[0, 0], [3, 0], [3, 3], [0, 3]]]], 40, 30)
    assert two.sum() == 121 + 16


def test_reader_keeps_file_order_and_limits(sample_root):
    source = PhraseCutSource(sample_root, ["train"], limit=5)
    records = source.read("train", 0, 10)
    raw = json.loads((sample_root / "refer_train.json").read_text())[:5]
    assert [r.task_id for r in records] == [r["task_id"] for r in raw]
    assert records[0].width == 160 and records[0].height == 120
