"""Targets drawn anew per sample (ieiw.training.redraw, ieiw.training.pose_crop), checked on what the samples
show against what the source annotation says, read here from the rows without the loader's code: where each
named joint's disc sits (mirrored sides swapped), that the crop is the official HRNet affine, which class a
COCO-Stuff sample colours, that referring samples are never mirrored, and that the draws vary per epoch
while one (epoch, row) always gives the same sample."""

from __future__ import annotations

import json
import math
import warnings
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader
from trainkit import built, context, stage

from ieiw.builders.cocostuff import CocoStuffBuilder, CocoStuffConfig
from ieiw.builders.enhance import EnhanceBuilder, EnhanceConfig
from ieiw.builders.keypoints import COLOURS, KeypointsBuilder, KeypointsConfig
from ieiw.builders.overlay import PALETTE, overlay
from ieiw.builders.refcoco import GRefCocoConfig, RefCocoBuilder, RefCocoConfig
from ieiw.imageio import decode_image, decode_mask
from ieiw.samples.segmentation import make_refcoco_sample
from ieiw.training.data import ShardPairs, index_shards
from ieiw.training.flips import swap_sides
from ieiw.training.redraw import decode_rle, resize_window

RES = 256


def rows_by_id(folder: Path) -> dict[str, dict]:
    """The stage's rows as stored, read with pyarrow (not through the loader)."""
    table = pq.read_table(next(folder.glob("*.parquet")))
    return {row["id"]: row for row in table.to_pylist()}


def material(row: dict) -> dict:
    return json.loads(row["builder"]["params"])["redraw"]


def draw(folder: Path, epochs: int, resolution: int = RES, **kwargs) -> list[dict]:
    loader = ShardPairs(index_shards(folder), resolution=resolution, shuffle_buffer=0, epochs=epochs, explain=True,
                        **kwargs)
    return list(loader)


def official_affine(centre, scale: float, rotation: float, size: int) -> np.ndarray:
    """HRNet's get_affine_transform for a square output, re-derived from its three-point construction."""
    src_w = scale * 200.0
    rad = math.pi * rotation / 180
    sn, cs = math.sin(rad), math.cos(rad)
    src_dir = np.array([-(src_w * -0.5) * sn, (src_w * -0.5) * cs])  # get_dir([0, -w/2], rot)
    src = np.zeros((3, 2), np.float32)
    dst = np.zeros((3, 2), np.float32)
    src[0], src[1] = centre, np.asarray(centre) + src_dir
    dst[0], dst[1] = [size * 0.5, size * 0.5], [size * 0.5, size * 0.5 - size * 0.5]
    for points in (src, dst):
        direct = points[0] - points[1]
        points[2] = points[1] + np.array([-direct[1], direct[0]])
    return cv2.getAffineTransform(src, dst)


# -- keypoints -----------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["coco", "mpii"])
def keypoint_stage(request, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp(f"redraw-{request.param}")
    config = KeypointsConfig(dataset=request.param, root=tmp / request.param,
                             samples={"images": 8, "width": 320, "height": 240})
    rows = built(KeypointsBuilder(config, context(tmp)))
    assert len(rows) >= 8
    return stage(tmp / "stage", rows)


def test_keypoint_samples_put_each_named_disc_on_its_joint(keypoint_stage):
    rows = rows_by_id(keypoint_stage)
    photos = {rid: np.asarray(decode_image(row["source_image"]["bytes"])) for rid, row in rows.items()}
    samples = draw(keypoint_stage, epochs=-(-2000 // len(rows)))[:2000]
    assert len(samples) == 2000
    flipped = rotated = sided_flips = 0
    radii = []
    for sample in samples:
        details, row = sample["details"], rows[sample["id"]]
        assert details["kind"] == "keypoints"
        m = material(row)
        joints, names = np.asarray(m["joints"], float), m["names"]
        matrix = details["matrix"]
        mirrored = details["flipped"]
        flipped += mirrored
        rotated += details["rotation"] != 0
        # the crop is the official affine of the official centre/scale, mirrored first when flipped
        official = official_affine(details["centre"], details["scale"], details["rotation"], RES)
        if mirrored:
            width = photos[sample["id"]].shape[1]
            centre = (width - 1 - details["centre"][0], details["centre"][1])
            mirror = np.array([[-1, 0, width - 1], [0, 1, 0], [0, 0, 1]], float)
            official = official_affine(centre, details["scale"], details["rotation"], RES) @ mirror
        assert np.allclose(matrix, official, atol=1e-3)
        assert (np.linalg.det(matrix[:, :2]) < 0) == mirrored
        source = sample["source"].permute(1, 2, 0).numpy()
        warped = cv2.warpAffine(photos[sample["id"]], matrix, (RES, RES), flags=cv2.INTER_LINEAR)
        assert np.abs(source.astype(int) - warped).max() <= 1
        target = sample["target"].permute(1, 2, 0).numpy()
        text = sample["instruction"]
        position = 0
        for mark in details["marks"]:
            # a mirrored "left knee" sits where the annotated right knee lands after the mirror
            annotated = names.index(swap_sides(mark.name) if mirrored else mark.name)
            at = text.find(mark.name, position)
            assert at >= 0, (mark.name, text)
            position = at + len(mark.name)
            sided_flips += mirrored and swap_sides(mark.name) != mark.name
            if mark.centre is None:
                assert joints[annotated, 2] == 0, "only an unlabelled joint is named without a disc"
                continue
            assert joints[annotated, 2] > 0
            expected = matrix @ np.array([joints[annotated, 0], joints[annotated, 1], 1.0])
            assert np.abs(np.asarray(mark.centre) - expected).max() <= 1.0
            cx, cy = mark.centre
            assert 10 <= cx < RES - 10 and 10 <= cy < RES - 10, "a named joint's disc is wholly inside the crop"
        drawn = [mark for mark in details["marks"] if mark.centre is not None]
        if drawn:  # the last disc is drawn over the others: measure its radius on the target
            last = drawn[-1]
            cx, cy = last.centre
            colour = np.array(COLOURS[last.colour])
            assert (target[cy, cx] == colour).all()
            run = np.all(target[cy] == colour, axis=1)
            left = cx - np.argmin(run[cx::-1]) + 1 if not run[: cx + 1].all() else 0
            right = cx + np.argmin(run[cx:]) - 1 if not run[cx:].all() else RES - 1
            radii.append((right - left) / 2)
    assert 0.4 * len(samples) < flipped < 0.6 * len(samples)  # the official 0.5
    assert 0.5 * len(samples) < rotated < 0.7 * len(samples)  # the official 0.6
    assert sided_flips > 100
    assert np.mean([9 <= r <= 11 for r in radii]) > 0.9, Counter(radii).most_common(5)


def test_one_keypoint_row_gives_new_draws_each_epoch_and_one_draw_per_epoch_and_row(keypoint_stage):
    rid = min(rows_by_id(keypoint_stage))
    alone = ShardPairs(index_shards(keypoint_stage, include_ids={rid}), resolution=64, shuffle_buffer=0, epochs=40,
                       explain=True)
    draws = list(alone)
    kinds = {(tuple((m.index, m.colour) for m in s["details"]["marks"]), s["instruction"]) for s in draws}
    assert len(kinds) >= 20
    # the same row in the same epoch, read among all rows, through two workers, in another order: the same sample
    mixed = ShardPairs(index_shards(keypoint_stage), resolution=64, shuffle_buffer=5, seed=0, epochs=3)
    seen = {}
    for batch in DataLoader(mixed, batch_size=1, num_workers=2):
        if batch["id"][0] == rid:
            seen[int(batch["epoch"][0])] = batch
    assert set(seen) == {0, 1, 2}
    for epoch, batch in seen.items():
        assert batch["instruction"][0] == draws[epoch]["instruction"]
        assert torch.equal(batch["target"][0], draws[epoch]["target"])
        assert torch.equal(batch["source"][0], draws[epoch]["source"])


def test_resume_is_exact_with_redraws(keypoint_stage):
    groups = index_shards(keypoint_stage)

    def batches(skip: int, n: int) -> list[dict]:
        dataset = ShardPairs(groups, resolution=64, seed=3, shuffle_buffer=4)
        dataset.resume_from(skip, 2)
        loader = iter(DataLoader(dataset, batch_size=2, num_workers=2))
        return [next(loader) for _ in range(n)]

    full = batches(0, 12)
    resumed = batches(5, 7)
    for a, b in zip(full[5:], resumed, strict=True):
        assert a["id"] == b["id"] and a["instruction"] == b["instruction"]
        assert torch.equal(a["source"], b["source"]) and torch.equal(a["target"], b["target"])


def test_redraw_off_trains_on_the_stored_target(keypoint_stage):
    rows = rows_by_id(keypoint_stage)
    for sample in draw(keypoint_stage, epochs=1, redraw=False, random_flip=False):
        assert sample["instruction"] == rows[sample["id"]]["instruction"]
        assert "details" not in sample


# -- COCO-Stuff ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cocostuff_stage(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("redraw-cocostuff")
    config = CocoStuffConfig(root=tmp / "coco-stuff", samples={"images": 12, "width": 160, "height": 120})
    rows = built(CocoStuffBuilder(config, context(tmp)))
    assert len(rows) == 12, "one row per image (classes_per_image: 1)"
    return stage(tmp / "stage", rows)


def test_cocostuff_samples_colour_a_class_of_the_crop_or_name_an_absent_one(cocostuff_stage):
    from pycocotools import mask as coco_mask  # the reference codec, to read the material independently

    rows = rows_by_id(cocostuff_stage)
    samples = draw(cocostuff_stage, epochs=-(-2000 // len(rows)), resolution=64)[:2000]
    absent = named = 0
    for sample in samples:
        details, row = sample["details"], rows[sample["id"]]
        m = material(row)
        x0, y0, x1, y1 = details["window"]
        source = sample["source"].permute(1, 2, 0).numpy()
        target = sample["target"].permute(1, 2, 0).numpy()
        photo = np.asarray(decode_image(row["source_image"]["bytes"]))
        unflipped = source[:, ::-1] if details["flipped"] else source
        assert np.array_equal(unflipped, resize_window(photo[y0:y1, x0:x1], 64))
        in_window = {}
        for label_id, name, counts in m["classes"]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                full = coco_mask.decode({"size": m["size"], "counts": counts.encode()})
            window = cv2.resize(full[y0:y1, x0:x1], (64, 64), interpolation=cv2.INTER_NEAREST)
            if window.any():
                in_window[label_id] = (name, window)
        if details["label_id"] in in_window:
            named += 1
            name, window = in_window[details["label_id"]]
            assert name.lower() in sample["instruction"]
            colour = next(c for c in PALETTE if c.word == details["colour"])
            expected = overlay(unflipped, window, colour.rgb)
            assert np.array_equal(target[:, ::-1] if details["flipped"] else target, expected)
        else:
            absent += 1
            assert np.array_equal(target, source), "an absent class leaves the input as it is"
    assert 0.1 * len(samples) < absent < 0.3 * len(samples)  # the official empty_percentage 0.2
    assert named > 0.6 * len(samples)


def test_rle_reader_matches_pycocotools():
    from pycocotools import mask as coco_mask

    rng = np.random.default_rng(0)
    for shape in [(120, 160), (7, 5), (1, 1), (64, 3)]:
        mask = (rng.random(shape) < 0.4).astype(np.uint8)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            encoded = coco_mask.encode(np.asfortranarray(mask))
        assert np.array_equal(decode_rle(encoded["counts"].decode(), encoded["size"]), mask)
    with pytest.raises(ValueError):
        decode_rle(encoded["counts"].decode(), [shape[0] + 1, shape[1]])


# -- referring -----------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["refcoco", "grefcoco"])
def refcoco_stage(request, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp(f"redraw-{request.param}")
    root = make_refcoco_sample(tmp / "coco_2014", 12, 5, 160, 120)
    config = (RefCocoConfig if request.param == "refcoco" else GRefCocoConfig)(root=root)
    rows = built(RefCocoBuilder(config, context(tmp), request.param))
    assert len(rows) >= 10 and {row["origin"]["dataset"] for row in rows} == {request.param}
    return stage(tmp / "stage", rows)


def test_referring_samples_are_never_mirrored_and_colour_the_ref(refcoco_stage):
    rows = rows_by_id(refcoco_stage)
    samples = draw(refcoco_stage, epochs=-(-2000 // len(rows)), resolution=64)[:2000]
    sentences_seen: dict[str, set[str]] = {}
    for sample in samples:
        details, row = sample["details"], rows[sample["id"]]
        assert not details["flipped"]
        x0, y0, x1, y1 = details["window"]
        photo = np.asarray(decode_image(row["source_image"]["bytes"]))
        source = sample["source"].permute(1, 2, 0).numpy()
        assert np.array_equal(source, resize_window(photo[y0:y1, x0:x1], 64)), "the unmirrored render"
        mask = decode_mask(row["mask"]["bytes"])
        window = cv2.resize(mask[y0:y1, x0:x1], (64, 64), interpolation=cv2.INTER_NEAREST)
        colour = next(c for c in PALETTE if c.word == details["colour"])
        assert np.array_equal(sample["target"].permute(1, 2, 0).numpy(), overlay(source, window, colour.rgb))
        said = [s for s in material(row)["sentences"] if s in sample["instruction"]]
        assert said, sample["instruction"]
        sentences_seen.setdefault(sample["id"], set()).update(said)
    several = [rid for rid, row in rows.items() if len(set(material(row)["sentences"])) > 1]
    assert several and all(len(sentences_seen[rid]) > 1 for rid in several)


# -- enhancement prompts --------------------------------------------------------------------------
def test_enhancement_prompts_are_drawn_per_sample(tmp_path):
    config = EnhanceConfig(dataset="gopro", root=tmp_path / "GoPro", samples={"pairs": 4, "width": 96, "height": 72})
    rows = built(EnhanceBuilder(config, context(tmp_path)))
    folder = stage(tmp_path / "stage", rows)
    stored = {row["id"]: row for row in rows}
    said: dict[str, set[str]] = {}
    for sample in draw(folder, epochs=30, resolution=32):
        prompts = material(stored[sample["id"]])["prompts"]
        assert sample["instruction"] in prompts
        said.setdefault(sample["id"], set()).add(sample["instruction"])
    assert all(len(texts) >= 5 for texts in said.values())
    assert {s["instruction"] for s in draw(folder, epochs=3, resolution=32, redraw=False)} == {
        row["instruction"] for row in rows}


@pytest.mark.parametrize("damage", [
    {"joints": [[float("nan"), 1.0, 2.0]] * 17}, {"joints": [[1e300, 1.0, 2.0]] * 17}, {"joints": "x"},
    {"names": ["only one"]}, {"person": {"bbox": [0, 0, 1e308, 5]}}, {"person": {"center": [1, 2], "scale": -1}},
    {"person": None}, {"pieces": []}, {"pieces": [17]}, {"dataset": "nope"}, {"joints_per_row": [9, 1]},
])
def test_damaged_keypoint_material_falls_back_to_the_stored_row(keypoint_stage, tmp_path, damage):
    rows = list(rows_by_id(keypoint_stage).values())[:3]
    for row in rows:
        params = json.loads(row["builder"]["params"])
        params["redraw"].update(damage)
        row["builder"]["params"] = json.dumps(params)
    folder = stage(tmp_path / "stage", rows)
    got = draw(folder, epochs=2, resolution=64)
    assert len(got) == 2 * len(rows)
    for sample in got:
        assert sample["source"].shape == (3, 64, 64) and sample["instruction"]


def test_damaged_overlay_material_falls_back_to_the_stored_row(cocostuff_stage, tmp_path):
    rows = list(rows_by_id(cocostuff_stage).values())[:4]
    for index, row in enumerate(rows):
        params = json.loads(row["builder"]["params"])
        params["redraw"].update([{"classes": [[1, "x", "not an rle \x7f"]]}, {"size": [1, 1]},
                                 {"classes": [[1, "x", "00"]]}, {"segment": None}][index])
        row["builder"]["params"] = json.dumps(params)
    got = draw(stage(tmp_path / "stage", rows), epochs=2, resolution=64)
    assert len(got) == 2 * len(rows)
    assert all("details" not in sample for sample in got), "each damaged row trains as stored"
