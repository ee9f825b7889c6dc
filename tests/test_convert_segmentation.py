"""Segmentation converters (COCO-Stuff, RefCOCO, gRefCOCO): overlays land on the annotated pixels, absent
rows leave the picture alone, bad records are named, the samples read back, and a real build runs them."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import struct
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from ieiw_testing import assert_not_carried, plant_outside, run_ieiw
from PIL import Image
from pycocotools import mask as mask_utils

from ieiw.builders.cocostuff import CocoStuffBuilder, CocoStuffConfig, CocoStuffFormatError, read_labels
from ieiw.builders.overlay import PALETTE, default_seg_templates, load_seg_templates, overlay, pick_colour
from ieiw.builders.refcoco import (
    GRefCocoConfig,
    RefCocoBuilder,
    RefCocoConfig,
    RefFormatError,
    load_refs_file,
)
from ieiw.imageio import decode_mask, decode_rgb
from ieiw.phrases import TemplateError
from ieiw.samples.segmentation import (
    ensure_cocostuff_sample,
    make_cocostuff_sample,
    make_refcoco_sample,
    polygon_mask,
)
from ieiw.schemas.rows import rows_to_table
from ieiw.schemas.units import BuildContext

COLOUR = {c.name.lower(): c.rgb for c in PALETTE}


@pytest.fixture(scope="module")
def stuff_root(tmp_path_factory) -> Path:
    return make_cocostuff_sample(tmp_path_factory.mktemp("cocostuff") / "coco-stuff", 14, 3, 160, 120)


@pytest.fixture(scope="module")
def ref_root(tmp_path_factory) -> Path:
    return make_refcoco_sample(tmp_path_factory.mktemp("refcoco") / "coco_2014", 15, 5, 160, 120)


def context(unit_size: int = 64) -> BuildContext:
    return BuildContext(root=Path.cwd(), out_dir=Path("out"), unit_size=unit_size)


def stuff_rows(root: Path, unit_size: int = 64, **kwargs):
    builder = CocoStuffBuilder(CocoStuffConfig(root=root, **kwargs), context(unit_size))
    results = [builder.build_unit(unit) for unit in builder.plan()]
    return [row for r in results for row in r.rows], [f for r in results for f in r.failures]


def ref_builder(root: Path, variant: str = "refcoco", unit_size: int = 64, **kwargs) -> RefCocoBuilder:
    model = RefCocoConfig if variant == "refcoco" else GRefCocoConfig
    return RefCocoBuilder(model(root=root, **kwargs), context(unit_size), variant)


def ref_rows(root: Path, variant: str = "refcoco", **kwargs):
    builder = ref_builder(root, variant, **kwargs)
    results = [builder.build_unit(unit) for unit in builder.plan()]
    return [row for r in results for row in r.rows], results


def params(row) -> dict:
    return json.loads(row["builder"]["params"])


def assert_overlay(row, expected_mask: np.ndarray) -> None:
    """The row's mask is ``expected_mask``; the target is 0.5*source + 0.5*colour there (+-1), the source
    exactly elsewhere."""
    source = decode_rgb(row["source_image"]["bytes"]).astype(int)
    target = decode_rgb(row["target_image"]["bytes"]).astype(int)
    mask = decode_mask(row["mask"]["bytes"]).astype(bool)
    assert row["target_image"]["path"].endswith(".png")
    assert np.array_equal(mask, expected_mask.astype(bool)), row["origin"]
    assert mask.any()
    colour = np.array(COLOUR[params(row)["colour"]])
    assert np.abs(target[mask] - (0.5 * source[mask] + 0.5 * colour)).max() <= 1
    assert np.array_equal(target[~mask], source[~mask]), "every pixel outside the mask is the source's"
    assert (row["width"], row["height"]) == (source.shape[1], source.shape[0])


def assert_unchanged(row) -> None:
    assert np.array_equal(decode_rgb(row["source_image"]["bytes"]), decode_rgb(row["target_image"]["bytes"]))
    assert not decode_mask(row["mask"]["bytes"]).any()


# -- the overlay ---------------------------------------------------------------------------------
def test_overlay_blends_half_and_half_inside_and_copies_outside():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
    mask = np.zeros((40, 50), np.uint8)
    mask[5:20, 10:45] = 1
    for colour in PALETTE:
        out = overlay(pixels, mask, colour.rgb)
        inside = mask.astype(bool)
        assert np.array_equal(out[inside], (pixels[inside].astype(int) + np.array(colour.rgb)) // 2)
        assert np.array_equal(out[~inside], pixels[~inside])
    assert [(c.name, c.rgb) for c in PALETTE] == [
        ("Red", (255, 0, 0)), ("Purple", (128, 0, 128)), ("Blue", (0, 0, 255)), ("Green", (0, 128, 0)),
        ("Yellow", (255, 255, 0)), ("White", (255, 255, 255)), ("Black", (0, 0, 0)), ("Gray", (128, 128, 128))]
    ids = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(400)]
    counts = Counter(pick_colour(i).word for i in ids)
    assert set(counts) == set(COLOUR) and min(counts.values()) > 25, "uniform over the palette"
    # Pins the colour of each row id above: a change recolours the overlays (target bytes) and rewords the
    # instructions of existing row ids.
    words = [pick_colour(i).word for i in ids]
    assert words[:6] == ["black", "blue", "blue", "gray", "black", "red"]
    assert hashlib.sha256(" ".join(words).encode()).hexdigest() == \
        "7f041460a7637a1bf1eb9c39135e9ff4393af696e313a3a49159b06eed2cc0a2"


def test_templates_are_the_official_kind_and_a_bad_file_is_named(tmp_path):
    templates = default_seg_templates()
    assert len(templates.segment) == 11 and templates.nothing[0] == "leave the picture as it is."
    assert templates.segment[0] == "Mark the pixels of {object} in {color} and leave the rest unchanged."
    ids = [f"{i:08x}" + "0" * 24 for i in range(0, 2**32, 2**32 // 220)]
    texts = {templates.segment_instruction(rid, "The Man on the LEFT", PALETTE[1]) for rid in ids}
    assert len(texts) == 11 and all("the man on the left" in t and "purple" in t for t in texts)
    assert not any("the the" in t for t in texts)
    bad = tmp_path / "bad.yaml"
    for content, message in (
        ({"segment": ["Mark {thing} in {color}."], "nothing": ["as is"]}, r"bad.yaml: segment\[0\].*unknown placeholder \{thing\}"),
        ({"segment": ["Mark {object}."], "nothing": ["as is"]}, r"segment\[0\].*uses \{color\}, \{object\}"),
        ({"segment": ["Mark {object} {color}."]}, "nothing: missing"),
        ({"segment": ["Mark {object} {color}."], "nothing": ["x"], "extra": []}, "unknown key"),
    ):
        bad.write_text(yaml.safe_dump(content))
        with pytest.raises(TemplateError, match=message):
            load_seg_templates(bad)
    config = CocoStuffConfig(root=tmp_path / "none", templates=bad)
    assert any("cocostuff.templates" in line and "bad.yaml" in line for line in config.preflight())


# -- COCO-Stuff ----------------------------------------------------------------------------------
def label_map(root: Path, stem: str) -> np.ndarray:
    return np.asarray(Image.open(root / "annotations" / "train2017" / f"{stem}.png"))


def test_cocostuff_masks_land_on_the_label_map_pixels(stuff_root):
    rows, failures = stuff_rows(stuff_root, classes_per_image=3)
    assert not failures
    labels = read_labels(stuff_root / "labels.txt")
    present = [r for r in rows if params(r)["kind"] == "present"]
    assert len(present) >= 20
    for row in present:
        label_id = params(row)["label_id"]
        expected = label_map(stuff_root, row["origin"]["image_id"]) == label_id - 1  # value v is id v+1
        assert_overlay(row, expected)
        assert row["origin"]["phrase"] == labels[label_id] and labels[label_id] in row["instruction"]
        assert params(row)["colour"] in row["instruction"]
        assert row["task"] == "segment" and row["origin"]["dataset"] == "cocostuff"
    rows_to_table(rows)  # the schema takes them


def test_cocostuff_absent_classes_and_unlabelled_images_leave_the_picture_alone(stuff_root):
    rows, _ = stuff_rows(stuff_root, classes_per_image=None)
    kinds = Counter(params(r)["kind"] for r in rows)
    assert kinds["absent"] and kinds["nothing"] == 2 and kinds["present"]  # images 6 and 13 are unlabelled
    for row in rows:
        label = label_map(stuff_root, row["origin"]["image_id"])
        if params(row)["kind"] == "absent":
            assert_unchanged(row)
            assert not (label == params(row)["label_id"] - 1).any(), "the named class has no pixel"
            assert row["origin"]["phrase"] in row["instruction"]
        elif params(row)["kind"] == "nothing":
            assert_unchanged(row)
            assert (label == 255).all() and row["instruction"] in default_seg_templates().nothing
    # one slot per present class; each slot is absent with the configured share
    for stem in {r["origin"]["image_id"] for r in rows}:
        label = label_map(stuff_root, stem)
        slots = [r for r in rows if r["origin"]["image_id"] == stem]
        assert len(slots) == max(1, len(set(np.unique(label)) - {255}))
    share = kinds["absent"] / (kinds["absent"] + kinds["present"])
    assert 0.05 < share < 0.45, share
    none, _ = stuff_rows(stuff_root, empty_share=0.0)
    assert not any(params(r)["kind"] == "absent" for r in none)
    everything, _ = stuff_rows(stuff_root, empty_share=1.0)
    assert {params(r)["kind"] for r in everything} == {"absent", "nothing"}


def test_cocostuff_rows_per_image_are_bounded_and_deterministic(stuff_root):
    one, _ = stuff_rows(stuff_root)  # the default: one row per image, the trainer redraws the class
    assert max(Counter(r["origin"]["image_id"] for r in one).values()) == 1
    first, _ = stuff_rows(stuff_root, classes_per_image=3)
    again, _ = stuff_rows(stuff_root, unit_size=3, classes_per_image=3)
    assert [(r["id"], r["instruction"], r["target_image"]["bytes"]) for r in first] == \
           [(r["id"], r["instruction"], r["target_image"]["bytes"]) for r in again]
    assert max(Counter(r["origin"]["image_id"] for r in first).values()) == 3
    # the same (image, class) row keeps its id, colour and instruction whatever the selection
    by_id = {r["id"]: r for r in first}
    shared = [r for r in one if r["id"] in by_id]
    assert shared and all(r["instruction"] == by_id[r["id"]]["instruction"] for r in shared)
    reseeded, _ = stuff_rows(stuff_root, seed=1, classes_per_image=3)
    assert {r["id"] for r in reseeded} != {r["id"] for r in first}


def test_cocostuff_bad_records_are_named_and_the_unit_still_builds(stuff_root, tmp_path):
    root = tmp_path / "coco-stuff"
    shutil.copytree(stuff_root, root)
    labels_dir, images_dir = root / "annotations" / "train2017", root / "images" / "train2017"
    stems = sorted(p.stem for p in images_dir.glob("*.jpg"))
    (labels_dir / f"{stems[0]}.png").unlink()
    Image.fromarray(np.zeros((120, 160, 3), np.uint8)).save(labels_dir / f"{stems[1]}.png")
    bad_value = label_map(root, stems[2]).copy()
    bad_value[:4, :4] = 250
    Image.fromarray(bad_value).save(labels_dir / f"{stems[2]}.png")
    (images_dir / f"{stems[3]}.jpg").write_bytes(b"<html>not a picture</html>")
    Image.fromarray(label_map(root, stems[4])[:100]).save(labels_dir / f"{stems[4]}.png")
    (labels_dir / f"{stems[7]}.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    rows, failures = stuff_rows(root)
    reasons = {f.record_id: (f.reason, f.file) for f in failures}
    assert reasons == {
        stems[0]: ("missing_label_map", str(labels_dir / f"{stems[0]}.png")),
        stems[1]: ("bad_label_map", str(labels_dir / f"{stems[1]}.png")),
        stems[2]: ("unknown_label", str(labels_dir / f"{stems[2]}.png")),
        stems[3]: ("unreadable_image", str(images_dir / f"{stems[3]}.jpg")),
        stems[4]: ("image_size_mismatch", str(images_dir / f"{stems[4]}.jpg")),
        stems[7]: ("unreadable_label_map", str(labels_dir / f"{stems[7]}.png")),
    }
    assert all(f.record_id in str(f) and f.file in str(f) for f in failures)
    assert "250" in next(str(f) for f in failures if f.reason == "unknown_label")
    assert {r["origin"]["image_id"] for r in rows} == set(stems) - {stems[i] for i in (0, 1, 2, 3, 4, 7)}


def test_cocostuff_files_symlinked_out_of_the_root_are_failures(stuff_root, tmp_path):
    """COCO-Stuff's names come from listing images/{split}, so a symlink is the only way out: an image or a
    label map that leads out of its folder is a ``path_outside_root`` failure (docs/formats.md, "Names that
    become paths")."""
    root = tmp_path / "coco-stuff"
    shutil.copytree(stuff_root, root)
    labels_dir, images_dir = root / "annotations" / "train2017", root / "images" / "train2017"
    stems = sorted(p.stem for p in images_dir.glob("*.jpg"))
    planted, data = plant_outside(tmp_path / "elsewhere", (160, 120))
    (images_dir / f"{stems[0]}.jpg").unlink()
    (images_dir / f"{stems[0]}.jpg").symlink_to(planted)
    outside_map = tmp_path / "elsewhere" / "map.png"
    shutil.move(labels_dir / f"{stems[1]}.png", outside_map)
    (labels_dir / f"{stems[1]}.png").symlink_to(outside_map)
    rows, failures = stuff_rows(root)
    assert {f.record_id: (f.reason, f.file) for f in failures} == {
        stems[0]: ("path_outside_root", str(images_dir / f"{stems[0]}.jpg")),
        stems[1]: ("path_outside_root", str(labels_dir / f"{stems[1]}.png")),
    }
    assert {r["origin"]["image_id"] for r in rows} == set(stems[2:])
    assert_not_carried(rows, planted, data)


def test_cocostuff_file_level_problems_are_one_line(stuff_root, tmp_path):
    root = tmp_path / "coco-stuff"
    shutil.copytree(stuff_root, root)
    (root / "labels.txt").write_text("0: unlabeled\n1: person\nperson two\n")
    with pytest.raises(CocoStuffFormatError, match=r"labels.txt:3: expected 'N: name'"):
        CocoStuffBuilder(CocoStuffConfig(root=root), context()).plan()
    assert any("labels.txt:3" in line for line in CocoStuffConfig(root=root).preflight())
    missing = CocoStuffConfig(root=tmp_path / "nowhere").preflight()
    assert len(missing) == 1 and "nowhere" in missing[0]
    assert CocoStuffConfig(root=tmp_path / "nowhere", samples={"images": 2}).preflight() == []


def test_cocostuff_reencoded_sources_still_match_their_overlay(stuff_root, tmp_path):
    """A CMYK JPEG is re-encoded losslessly, so the source column decodes to the overlay's own pixels."""
    root = tmp_path / "coco-stuff"
    shutil.copytree(stuff_root, root)
    stem = min(p.stem for p in (root / "images" / "train2017").glob("*.jpg"))
    path = root / "images" / "train2017" / f"{stem}.jpg"
    Image.open(path).convert("CMYK").save(path, quality=95)
    rows, failures = stuff_rows(root, limit=1)
    assert not failures and rows
    for row in rows:
        assert params(row)["source_image"]["reencoded"] and row["source_image"]["path"].endswith(".png")
        if params(row)["kind"] == "present":
            assert_overlay(row, label_map(root, stem) == params(row)["label_id"] - 1)


# -- RefCOCO / gRefCOCO --------------------------------------------------------------------------
def instances(root: Path, variant: str = "refcoco") -> dict:
    return json.loads((root / variant / "instances.json").read_text())


def coco_mask(ann: dict, height: int, width: int) -> np.ndarray:
    """The annotation rasterised the pycocotools way (merge of the parts' RLEs, then decode)."""
    seg = ann["segmentation"]
    if isinstance(seg, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    elif isinstance(seg["counts"], list):
        rle = mask_utils.frPyObjects(seg, height, width)
    else:
        rle = seg
    return mask_utils.decode(rle).astype(bool)


def grow(mask: np.ndarray) -> np.ndarray:
    """``mask`` dilated by one pixel (3x3)."""
    padded = np.pad(mask, 1)
    out = np.zeros_like(mask)
    for dy in range(3):
        for dx in range(3):
            out |= padded[dy:dy + mask.shape[0], dx:dx + mask.shape[1]]
    return out


def test_refcoco_masks_match_the_rasterised_annotations(ref_root):
    rows, results = ref_rows(ref_root, absent_share=0.0)
    data = instances(ref_root)
    anns = {a["id"]: a for a in data["annotations"]}
    refs = {str(r["ref_id"]): r for r in load_refs_file(ref_root / "refcoco" / "refs(unc).p")}
    assert not [f for r in results for f in r.failures]
    assert {r["origin"]["record_id"] for r in rows} == {k for k, v in refs.items() if v["split"] == "train"}
    kinds = Counter()
    for row in rows:
        ann = anns[refs[row["origin"]["record_id"]]["ann_id"]]
        expected = coco_mask(ann, row["height"], row["width"])
        assert_overlay(row, expected)
        seg = ann["segmentation"]
        kind = "rle" if isinstance(seg, dict) else f"polygons{len(seg)}"
        kinds[kind] += 1
        if isinstance(seg, list):  # pycocotools and a plain polygon fill agree on where the object is
            plain = polygon_mask(seg, row["width"], row["height"]).astype(bool)
            # within 2 px of each other's edge (a triangle's sharp tip differs the most)
            assert (plain <= grow(grow(expected))).all() and (expected <= grow(grow(plain))).all()
        sentences = [s["sent"].lower() for s in refs[row["origin"]["record_id"]]["sentences"]]
        assert row["origin"]["phrase"] in sentences and row["origin"]["phrase"] in row["instruction"]
        assert row["task"] == "refer-segment" and row["origin"]["dataset"] == "refcoco"
    assert kinds["rle"] and kinds["polygons1"] and kinds["polygons2"], kinds
    assert any(p != p.lower() for r in refs.values() for p in [s["sent"] for s in r["sentences"]])
    rows_to_table(rows)


def test_refcoco_absent_rows_are_off_as_in_the_official_loader(ref_root):
    rows, _ = ref_rows(ref_root)
    assert rows and not [r for r in rows if params(r)["kind"] == "absent"]


def test_refcoco_absent_rows_borrow_a_sentence_of_a_category_not_in_the_image(ref_root):
    rows, _ = ref_rows(ref_root, absent_share=0.2)
    data = instances(ref_root)
    in_image = defaultdict(set)
    for ann in data["annotations"]:
        in_image[str(ann["image_id"])].add(ann["category_id"])
    refs = {str(r["ref_id"]): r for r in load_refs_file(ref_root / "refcoco" / "refs(unc).p")}
    absent = [r for r in rows if params(r)["kind"] == "absent"]
    assert absent and 0.08 < len(absent) / len(rows) < 0.4, (len(absent), len(rows))
    for row in absent:
        assert row["origin"]["record_id"].endswith(":absent")
        assert_unchanged(row)
        donor = refs[params(row)["donor_ref"]]
        assert donor["image_id"] != int(row["origin"]["image_id"])
        assert donor["category_id"] not in in_image[row["origin"]["image_id"]]
        assert row["origin"]["phrase"] in [s["sent"].lower() for s in donor["sentences"]]
        assert row["origin"]["phrase"] in row["instruction"]
    every, results = ref_rows(ref_root, absent_share=0.5)  # an extra absent row for every ref that has a donor
    kinds = Counter(params(r)["kind"] for r in every)
    no_donor = sum(r.counters["no_absent_category"] for r in results)
    assert kinds["absent"] + no_donor == kinds["target"] and kinds["absent"] > 0.7 * kinds["target"]


def test_grefcoco_no_target_and_multi_target_refs(ref_root):
    rows, results = ref_rows(ref_root, "grefcoco")
    data = instances(ref_root, "grefcoco")
    anns = {a["id"]: a for a in data["annotations"]}
    grefs = {str(r["ref_id"]): r for r in json.loads((ref_root / "grefcoco" / "grefs(unc).json").read_text())}
    assert not [f for r in results for f in r.failures]
    kinds = Counter(params(r)["kind"] for r in rows)
    assert kinds["no_target"] >= 10 and "absent" not in kinds, "gRefCOCO's absent rows are its own no-target refs"
    multi = crowd = 0
    for row in rows:
        ref = grefs[row["origin"]["record_id"]]
        if ref["ann_id"] == [-1]:
            assert params(row)["kind"] == "no_target"
            assert_unchanged(row)
            assert row["origin"]["phrase"] == ref["sentences"][0]["sent"].lower() and row["origin"]["phrase"] in row["instruction"]
            continue
        targets = [anns[a] for a in ref["ann_id"] if not anns[a]["iscrowd"]]
        expected = np.zeros((row["height"], row["width"]), bool)
        for ann in targets:
            expected |= coco_mask(ann, row["height"], row["width"])
        assert_overlay(row, expected)
        multi += len(targets) > 1
        crowds = [a for a in ref["ann_id"] if anns[a]["iscrowd"]]
        if crowds:
            crowd += 1
            assert params(row)["crowd_skipped"] == crowds
            only_crowd = coco_mask(anns[crowds[0]], row["height"], row["width"]) & ~expected
            assert only_crowd.any() and not decode_mask(row["mask"]["bytes"])[only_crowd].any()
    assert multi >= 3 and crowd >= 2


def test_sentences_colours_and_samples_are_deterministic(ref_root, tmp_path):
    first, _ = ref_rows(ref_root)
    again, _ = ref_rows(ref_root, unit_size=4)
    assert [(r["id"], r["instruction"], r["target_image"]["bytes"]) for r in first] == \
           [(r["id"], r["instruction"], r["target_image"]["bytes"]) for r in again]
    assert all(r["origin"]["phrase"] == r["origin"]["phrase"].lower() for r in first)

    def tree(root: Path) -> dict[str, str]:
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    assert tree(make_refcoco_sample(tmp_path / "a", 4, 1, 96, 80)) == tree(make_refcoco_sample(tmp_path / "b", 4, 1, 96, 80))
    assert tree(make_cocostuff_sample(tmp_path / "c", 4, 1, 96, 80)) == tree(make_cocostuff_sample(tmp_path / "d", 4, 1, 96, 80))
    assert ensure_cocostuff_sample(tmp_path / "e", 3, 0, 96, 80) is True
    assert ensure_cocostuff_sample(tmp_path / "e", 3, 0, 96, 80) is False


def test_refcoco_bad_records_are_named_and_the_unit_still_builds(ref_root, tmp_path):
    root = tmp_path / "coco_2014"
    shutil.copytree(ref_root, root)
    refs_path, instances_path = root / "refcoco" / "refs(unc).p", root / "refcoco" / "instances.json"
    refs = load_refs_file(refs_path)
    data = json.loads(instances_path.read_text())
    train = [r for r in refs if r["split"] == "train"]
    anns = {a["id"]: a for a in data["annotations"]}
    train[0]["ann_id"] = 123456789
    train[1]["sentences"] = []
    train[2]["image_id"] = 424242
    # refs 3-5: their annotations go bad; 6: its image file goes missing (pick refs of distinct images)
    by_image = {}
    for ref in train[3:]:
        by_image.setdefault(ref["image_id"], ref)
    chosen = list(by_image.values())[:4]
    anns[chosen[0]["ann_id"]]["segmentation"] = [[1.0, 2.0, 3.0, 4.0, 5.0]]
    anns[chosen[1]["ann_id"]]["segmentation"] = {"size": [10, 10], "counts": "abc"}
    anns[chosen[2]["ann_id"]]["segmentation"] = [[1.0, 2.0, 3.0, 4.0]]
    image = next(i for i in data["images"] if i["id"] == chosen[3]["image_id"])
    (root / "images" / "train2014" / image["file_name"]).unlink()
    with open(refs_path, "wb") as handle:
        pickle.dump(refs, handle, protocol=2)
    instances_path.write_text(json.dumps(data))
    rows, results = ref_rows(root, absent_share=0.0)
    failures = {f.record_id: f for r in results for f in r.failures}
    expect = {
        str(train[0]["ref_id"]): ("missing_annotation", str(instances_path)),
        str(train[1]["ref_id"]): ("no_sentence", str(refs_path)),
        str(train[2]["ref_id"]): ("no_image_info", str(instances_path)),
        str(chosen[0]["ref_id"]): ("bad_segmentation", str(instances_path)),
        str(chosen[1]["ref_id"]): ("rle_size_mismatch", str(instances_path)),
        str(chosen[2]["ref_id"]): ("degenerate_polygons", str(instances_path)),
    }
    missing_image = {str(r["ref_id"]) for r in train if r["image_id"] == chosen[3]["image_id"]}
    expect.update({ref_id: ("missing_image", str(root / "images" / "train2014" / image["file_name"]))
                   for ref_id in missing_image})
    assert {k: (f.reason, f.file) for k, f in failures.items()} == expect
    assert all(k in str(f) for k, f in failures.items())
    assert str(chosen[0]["ann_id"]) in str(failures[str(chosen[0]["ref_id"])])
    built = {r["origin"]["record_id"] for r in rows}
    assert built == {str(r["ref_id"]) for r in train} - set(expect)


@pytest.mark.parametrize("variant", ["refcoco", "grefcoco"])
def test_refcoco_file_names_outside_the_images_folder_are_failures(ref_root, tmp_path, variant):
    """A ``file_name`` in instances.json of ../x, /x, or one symlinked out of images/train2014: every ref of
    that image is a ``path_outside_root`` failure naming instances.json; the rest builds."""
    root = tmp_path / "coco_2014"
    shutil.copytree(ref_root, root)
    images_dir = root / "images" / "train2014"
    instances_path = root / variant / "instances.json"
    data = json.loads(instances_path.read_text())
    planted, planted_bytes = plant_outside(tmp_path / "elsewhere", (160, 120))
    (images_dir / "linked.jpg").symlink_to(planted)
    crafted = {image["id"]: name for image, name in
               zip(data["images"], [os.path.relpath(planted, images_dir), str(planted), "linked.jpg"])}
    for image in data["images"]:
        image["file_name"] = crafted.get(image["id"], image["file_name"])
    instances_path.write_text(json.dumps(data))
    rows, results = ref_rows(root, variant, absent_share=0.0)
    builder = ref_builder(root, variant)
    train = {ref.ref_id: ref for ref in builder.source.refs}
    hit = {ref_id for ref_id, ref in train.items() if ref.raw.get("image_id") in crafted}
    assert hit
    failures = {f.record_id: f for r in results for f in r.failures}
    assert {k: (f.reason, f.file) for k, f in failures.items() if k in hit} == {
        k: ("path_outside_root", str(instances_path)) for k in hit}
    assert all(str(images_dir) in failures[k].message for k in hit)
    assert not {r["origin"]["record_id"] for r in rows} & hit and rows
    assert_not_carried(rows, planted, planted_bytes)


def test_refcoco_file_level_problems_are_one_line(ref_root, tmp_path):
    root = tmp_path / "coco_2014"
    shutil.copytree(ref_root, root)

    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    (root / "refcoco" / "refs(unc).p").write_bytes(pickle.dumps([Evil()], protocol=2))
    with pytest.raises(RefFormatError, match=r"refs\(unc\).p: not a readable refs pickle.*plain lists"):
        ref_builder(root).plan()
    (root / "refcoco" / "refs(unc).p").write_bytes(b"\x80\x02]q\x00(")  # truncated
    assert any("refs(unc).p" in line for line in RefCocoConfig(root=root).preflight())
    lines = RefCocoConfig(root=ref_root, split="testB").preflight()
    assert len(lines) == 1 and "no ref of split 'testB'" in lines[0] and "train, val" in lines[0]
    assert RefCocoConfig(root=tmp_path / "none", samples={"images": 2}).preflight() == []
    assert "not found" in RefCocoConfig(root=tmp_path / "none").preflight()[0]


# -- hostile inputs (found by tests/fuzz/test_fuzz_coco_segmentation.py) -----------------------------------
@contextmanager
def unblocking(fifo: Path) -> Iterator[None]:
    """Feeds ``fifo`` a few junk bytes whenever a reader waits on it, so that a reader which opens a FIFO and
    blocks (the code before the fix) reads junk instead of hanging the test run."""
    stop = threading.Event()

    def feed() -> None:
        while not stop.is_set():
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # no reader waiting
                stop.wait(0.05)
                continue
            try:
                os.write(fd, b"junk")
            except OSError:  # the reader has gone
                pass
            finally:
                os.close(fd)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def test_cocostuff_a_fifo_where_a_file_should_be_is_missing_never_read(stuff_root, tmp_path):
    """A crafted archive can hold a FIFO named like a label map or an image: opening it blocks for ever."""
    root = tmp_path / "coco-stuff"
    shutil.copytree(stuff_root, root)
    labels_dir, images_dir = root / "annotations" / "train2017", root / "images" / "train2017"
    stems = sorted(p.stem for p in images_dir.glob("*.jpg"))
    label, image = labels_dir / f"{stems[0]}.png", images_dir / f"{stems[1]}.jpg"
    for path in (label, image):
        path.unlink()
        os.mkfifo(path)
    with unblocking(label), unblocking(image):
        rows, failures = stuff_rows(root)
    assert {f.record_id: (f.reason, f.file) for f in failures} == {
        stems[0]: ("missing_label_map", str(label)), stems[1]: ("missing_image", str(image))}
    assert {r["origin"]["image_id"] for r in rows} == set(stems[2:])


def test_cocostuff_a_file_name_that_is_not_utf8_fails_alone(stuff_root, tmp_path):
    """Names come from listing the folder: one that is not UTF-8 reaches Python with lone surrogates, which
    no row can hold (Arrow refuses the whole shard)."""
    root = tmp_path / "coco-stuff"
    shutil.copytree(stuff_root, root)
    labels_dir, images_dir = root / "annotations" / "train2017", root / "images" / "train2017"
    stems = sorted(p.stem for p in images_dir.glob("*.jpg"))
    latin1 = os.fsdecode(b"caf\xe9")
    shutil.copy(images_dir / f"{stems[0]}.jpg", images_dir / f"{latin1}.jpg")
    shutil.copy(labels_dir / f"{stems[0]}.png", labels_dir / f"{latin1}.png")
    rows, failures = stuff_rows(root)
    assert [(f.reason, f.record_id) for f in failures] == [("bad_file_name", "caf\ufffd")]
    assert "caf\\udce9" in failures[0].message
    assert {r["origin"]["image_id"] for r in rows} == set(stems)
    rows_to_table(rows)


def test_cocostuff_a_long_labels_line_is_read_in_linear_time(tmp_path):
    """``\\s*(.*?)\\s*$`` backtracked quadratically: 60,000 spaces inside a name took seconds."""
    path = tmp_path / "labels.txt"
    path.write_text("0: unlabeled\n1: x" + " " * 60_000 + "y\n2:   sky-other  \n", encoding="utf-8")
    start = time.perf_counter()
    labels = read_labels(path)
    assert time.perf_counter() - start < 1.0
    assert labels[2] == "sky-other" and labels[1] == "x" + " " * 60_000 + "y"


def copied_refs(ref_root: Path, tmp_path: Path) -> tuple[Path, list, dict, list]:
    """A copy of the RefCOCO sample: (root, its refs, its instances, the train refs of distinct images)."""
    root = tmp_path / "coco_2014"
    shutil.copytree(ref_root, root)
    refs = load_refs_file(root / "refcoco" / "refs(unc).p")
    data = json.loads((root / "refcoco" / "instances.json").read_text())
    by_image: dict[int, dict] = {}
    for ref in refs:
        if ref["split"] == "train":
            by_image.setdefault(ref["image_id"], ref)
    return root, refs, data, list(by_image.values())


def write_refs_and_instances(root: Path, refs: list | bytes, data: dict) -> None:
    path = root / "refcoco" / "refs(unc).p"
    path.write_bytes(refs if isinstance(refs, bytes) else pickle.dumps(refs, protocol=2))
    (root / "refcoco" / "instances.json").write_text(json.dumps(data))


def failure_reasons(results) -> dict[str, str]:
    return {f.record_id: f.reason for r in results for f in r.failures}


def bad_segmentations(ref_root: Path, tmp_path: Path, make) -> None:
    """Each chosen ref's annotation given ``make(size)[i]`` as its segmentation: each is ``bad_segmentation``."""
    root, refs, data, chosen = copied_refs(ref_root, tmp_path)
    anns = {a["id"]: a for a in data["annotations"]}
    bad = make([data["images"][0]["height"], data["images"][0]["width"]])
    for ref, segmentation in zip(chosen, bad, strict=False):
        anns[ref["ann_id"]]["segmentation"] = segmentation
    write_refs_and_instances(root, refs, data)
    rows, results = ref_rows(root, absent_share=0.0)
    assert failure_reasons(results) == {str(ref["ref_id"]): "bad_segmentation" for ref in chosen[:len(bad)]}
    assert rows and not {r["origin"]["record_id"] for r in rows} & {str(ref["ref_id"]) for ref in chosen[:len(bad)]}


def test_refcoco_polygons_far_outside_the_image_are_bad_segmentations(ref_root, tmp_path):
    """pycocotools rasterises every polygon edge point by point: a point at 1e12 took all the memory there
    was (a segfault under a memory limit); a coordinate no float holds made np.isfinite raise TypeError."""
    bad_segmentations(ref_root, tmp_path, lambda size: [[[0, 0, 2e5, 0, 0, 10]], [[0, 0, 2**70, 0, 0, 10]],
                                                        [[0, 0, 10, 0, 0, -1e9]]])


def test_refcoco_compressed_rles_that_do_not_cover_the_image_are_bad_segmentations(ref_root, tmp_path):
    """pycocotools' decoder trusts a compressed string: runs short of the image decoded uninitialised memory
    into the mask (a different mask each run), a string cut inside a count was read past its end, and text
    that is not ASCII raised UnicodeEncodeError."""
    bad_segmentations(ref_root, tmp_path, lambda size: [{"size": size, "counts": "0"}, {"size": size, "counts": ""},
                                                        {"size": size, "counts": "o"},
                                                        {"size": size, "counts": "caf\u00e9"}])


def test_refcoco_hostile_text_is_mended_and_odd_sentences_fail_alone(ref_root, tmp_path):
    """Lone surrogates (valid in a pickle and in JSON) in a sentence or a URL made rows Arrow cannot write;
    ``sentences`` or ``tokens`` that are not lists raised TypeError."""
    root, refs, data, chosen = copied_refs(ref_root, tmp_path)
    chosen[0]["sentences"] = [{"sent": "the \ud800 cup", "tokens": ["the", "cup"], "sent_id": 1}]
    image = next(i for i in data["images"] if i["id"] == chosen[0]["image_id"])
    image["coco_url"] = "http://images.example.invalid/\udcff.jpg"
    chosen[1]["sentences"] = 5
    chosen[2]["sentences"] = [{"tokens": 5, "sent_id": 3}]
    write_refs_and_instances(root, refs, data)
    rows, results = ref_rows(root, absent_share=0.0)
    assert failure_reasons(results) == {str(chosen[1]["ref_id"]): "no_sentence",
                                        str(chosen[2]["ref_id"]): "no_sentence"}
    row = next(r for r in rows if r["origin"]["record_id"] == str(chosen[0]["ref_id"]))
    assert row["origin"]["phrase"] == "the \ufffd cup" and row["origin"]["url"].endswith("\ufffd.jpg")
    rows_to_table(rows)


def test_refcoco_a_repeated_ref_id_is_a_duplicate_record(ref_root, tmp_path):
    """Two refs with one ref_id made two rows with one row id; the later one is a failure."""
    root, refs, data, chosen = copied_refs(ref_root, tmp_path)
    first, later = chosen[0], chosen[1]
    later["ref_id"] = first["ref_id"]
    write_refs_and_instances(root, refs, data)
    rows, results = ref_rows(root, absent_share=0.0)
    failures = [f for r in results for f in r.failures]
    assert [(f.reason, f.record_id) for f in failures] == [("duplicate_record", str(first["ref_id"]))]
    assert f"ref {refs.index(later)}" in failures[0].message and f"ref {refs.index(first)}'s" in failures[0].message
    same = [r for r in rows if r["origin"]["record_id"] == str(first["ref_id"])]
    assert len(same) == 1 and params(same[0])["ann_ids"] == [first["ann_id"]]


def test_refcoco_file_names_the_os_cannot_open_are_failures(ref_root, tmp_path):
    """A file_name too long for the file system, or one that goes through a file as if it were a folder,
    raised OSError out of the unit; one that is not a string was made one with str()."""
    root, refs, data, chosen = copied_refs(ref_root, tmp_path)
    images = {i["id"]: i for i in data["images"]}
    existing = images[chosen[3]["image_id"]]["file_name"]
    names = {chosen[0]["image_id"]: "a" * 300 + ".jpg", chosen[1]["image_id"]: f"{existing}/inner.jpg",
             chosen[2]["image_id"]: 5}
    for image_id, name in names.items():
        images[image_id]["file_name"] = name
    write_refs_and_instances(root, refs, data)
    rows, results = ref_rows(root, absent_share=0.0)
    reasons = failure_reasons(results)
    by_image = {image_id: {reasons.get(str(r["ref_id"])) for r in refs
                           if r["split"] == "train" and r["image_id"] == image_id} for image_id in names}
    assert by_image == {chosen[0]["image_id"]: {"unreadable_image"}, chosen[1]["image_id"]: {"unreadable_image"},
                        chosen[2]["image_id"]: {"path_outside_root"}}
    assert rows


class Python2Pickler(pickle._Pickler):
    """Pickles ``bytes`` as Python 2 ``str`` (``SHORT_BINSTRING``), as the release's refs files hold text."""

    dispatch: ClassVar[dict[type, Any]] = dict(pickle._Pickler.dispatch)

    def save_python2_str(self, value: bytes) -> None:
        self.write(pickle.SHORT_BINSTRING + bytes([len(value)]) + value)
        self.memoize(value)

    dispatch[bytes] = save_python2_str


def test_refcoco_a_python2_string_that_is_not_utf8_changes_no_other_ref(ref_root, tmp_path):
    """One Python 2 string that was not UTF-8 made the reader decode the whole file as Latin-1, so every other
    ref's UTF-8 text ("café") came out garbled ("cafÃ©"); now each string is decoded on its own."""
    root, refs, data, chosen = copied_refs(ref_root, tmp_path)
    for sentence in chosen[0]["sentences"]:
        sentence["sent"] = f"café {sentence['sent']}".encode()
    for sentence in chosen[1]["sentences"]:
        sentence["sent"] = b"\xff\xfe " + sentence["sent"].encode()
    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump(refs)
    write_refs_and_instances(root, buffer.getvalue(), data)
    rows, results = ref_rows(root, absent_share=0.0)
    assert not failure_reasons(results)
    phrase = {r["origin"]["record_id"]: r["origin"]["phrase"] for r in rows}
    assert phrase[str(chosen[0]["ref_id"])].startswith("café ")
    assert phrase[str(chosen[1]["ref_id"])].startswith("\u00ff\u00fe ")


DEEP = "\x00deep\x00"  # swapped in the pickle's bytes for a list nested 5,000 deep (pickle.dumps would recurse)


def test_refcoco_values_only_a_pickle_can_hold_fail_alone(ref_root, tmp_path):
    """A ref_id of 5,000 digits (str() refuses it: plan() raised), and an ann_id or split nested deeper than
    Python recurses (repr() and str() raised RecursionError)."""
    root, refs, data, chosen = copied_refs(ref_root, tmp_path)
    chosen[0]["ref_id"] = 10**5000
    chosen[1]["ann_id"] = DEEP
    chosen[2]["split"] = DEEP
    encoded = DEEP.encode()
    deep = b"]" * 5000 + b"a" * 4999
    write_refs_and_instances(root, pickle.dumps(refs, protocol=2).replace(
        b"X" + struct.pack("<I", len(encoded)) + encoded, deep), data)
    rows, results = ref_rows(root, absent_share=0.0)
    assert failure_reasons(results) == {str(chosen[1]["ref_id"]): "bad_ref"}
    built = {r["origin"]["record_id"] for r in rows}
    assert f"#{refs.index(chosen[0])}" in built and str(chosen[2]["ref_id"]) not in built


def test_refcoco_ids_int_refuses_are_no_ids(ref_root, tmp_path):
    """"²" is a digit to ``str.isdigit()`` but not to ``int()``, and ``int()`` refuses 5,000 digits: either, as
    an id, raised ValueError out of plan() or the unit."""
    root, refs, data, chosen = copied_refs(ref_root, tmp_path)
    chosen[0]["image_id"] = "\u00b2"
    chosen[1]["ref_id"] = "1" * 5000
    image = next(i for i in data["images"] if i["id"] == chosen[2]["image_id"])
    image["width"] = "\u00b2"
    write_refs_and_instances(root, refs, data)
    rows, results = ref_rows(root, absent_share=0.0)
    reasons = failure_reasons(results)
    assert reasons[str(chosen[0]["ref_id"])] == "bad_ref" and reasons[str(chosen[2]["ref_id"])] == "no_image_info"
    assert f"#{refs.index(chosen[1])}" in {r["origin"]["record_id"] for r in rows}


def test_refcoco_pickles_that_ask_for_all_the_memory_are_cheap_or_refused(tmp_path):
    """The C unpickler sized an array by the largest memo index a file names (4 bytes changed asked for 12
    GB), allocated a BYTEARRAY8 before reading it, and raised OverflowError, not a named error."""
    path = tmp_path / "refs(unc).p"
    path.write_bytes(b"\x80\x02]r\xff\xff\xff\x7f.")  # [] memoised at index 2**31 - 1
    start = time.perf_counter()
    assert load_refs_file(path) == [] and time.perf_counter() - start < 5
    for data in (b"\x80\x05\x96" + struct.pack("<Q", 2**40) + b"x.", b"\x80\x04\x8d" + struct.pack("<Q", 2**64 - 1)):
        path.write_bytes(data)
        with pytest.raises(RefFormatError, match=r"refs\(unc\).p: not a readable refs pickle"):
            load_refs_file(path)


# -- through the real flow -----------------------------------------------------------------------
@pytest.mark.slow
def test_segmentation_converters_build_through_the_cli(tmp_path):
    samples = {"images": 6, "width": 128, "height": 96}
    config = tmp_path / "seg.yaml"
    config.write_text(yaml.safe_dump({
        "name": "seg", "out_dir": str(tmp_path / "out"), "unit_size": 8, "workers": 2,
        "cocostuff": {"root": str(tmp_path / "coco-stuff"), "samples": samples},
        "refcoco": {"root": str(tmp_path / "coco_2014"), "samples": samples},
        "grefcoco": {"root": str(tmp_path / "coco_2014"), "samples": samples},
        "selection": {"min_target_aesthetic": 1.0, "max_aesthetic_gap": 9.0},
    }))
    run_ieiw("build", config)
    rows = []
    for shard in sorted((tmp_path / "out" / "candidates").glob("*.parquet")):
        rows += pq.read_table(shard, columns=["id", "task", "origin", "instruction"]).to_pylist()
    by_dataset = Counter((r["origin"]["dataset"], r["task"]) for r in rows)
    assert set(by_dataset) == {("cocostuff", "segment"), ("refcoco", "refer-segment"), ("grefcoco", "refer-segment")}
    assert all(by_dataset.values()) and len({r["id"] for r in rows}) == len(rows)


def test_a_ref_with_a_5000_digit_ann_id_fails_alone(tmp_path):
    """`make fuzz` find: an ann_id of 10**5000 in a refs pickle failed its ref, but building the failure's
    message (repr of the value) raised ValueError out of the unit."""
    from ieiw.builders.refcoco import _shown

    assert _shown(10**5000) == "<int too large to show>" and _shown([1, 2]) == "[1, 2]"


def test_cocostuff_rows_keep_every_class_of_the_image_for_the_trainer(stuff_root):
    """builder.params["redraw"]: each present class's RLE decodes (with pycocotools) to exactly its label-map
    pixels, every other class of labels.txt is listed as absent, and the templates come along."""
    rows, _ = stuff_rows(stuff_root)
    labels = read_labels(stuff_root / "labels.txt")
    assert rows
    for row in rows:
        material = params(row)["redraw"]
        stem = row["origin"]["image_id"]
        label = np.asarray(Image.open(stuff_root / "annotations" / "train2017" / f"{stem}.png"))
        present = {int(v) + 1 for v in np.unique(label) if v != 255}
        assert {c[0] for c in material["classes"]} == present
        for label_id, name, counts in material["classes"]:
            mask = mask_utils.decode({"size": material["size"], "counts": counts.encode()})
            assert name == labels[label_id] and np.array_equal(mask, label == label_id - 1)
        assert {a[0] for a in material["absent"]} == {i for i in labels if 1 <= i <= 255} - present
        assert material["segment"] == list(default_seg_templates().segment) and material["empty_share"] == 0.2
