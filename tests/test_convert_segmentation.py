"""Segmentation converters (COCO-Stuff, RefCOCO, gRefCOCO): overlays land on the annotated pixels, absent
rows leave the picture alone, bad records are named, the samples read back, and a real build runs them."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from ieiw_testing import assert_not_carried, plant_outside, run_ieiw
from PIL import Image
from pycocotools import mask as mask_utils

from ieiw.schemas.units import BuildContext
from ieiw.phrases import TemplateError
from ieiw.builders.cocostuff import CocoStuffBuilder, CocoStuffConfig, CocoStuffFormatError, read_labels
from ieiw.builders.overlay import PALETTE, default_seg_templates, load_seg_templates, overlay, pick_colour
from ieiw.builders.refcoco import (
    GRefCocoConfig,
    RefCocoBuilder,
    RefCocoConfig,
    RefFormatError,
    load_refs_file,
)
from ieiw.samples.segmentation import (
    ensure_cocostuff_sample,
    make_cocostuff_sample,
    make_refcoco_sample,
    polygon_mask,
)
from ieiw.imageio import decode_mask, decode_rgb
from ieiw.schemas.rows import rows_to_table

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
    rows, failures = stuff_rows(stuff_root)
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
    one, _ = stuff_rows(stuff_root, classes_per_image=1)
    assert max(Counter(r["origin"]["image_id"] for r in one).values()) == 1
    first, _ = stuff_rows(stuff_root)
    again, _ = stuff_rows(stuff_root, unit_size=3)
    assert [(r["id"], r["instruction"], r["target_image"]["bytes"]) for r in first] == \
           [(r["id"], r["instruction"], r["target_image"]["bytes"]) for r in again]
    assert max(Counter(r["origin"]["image_id"] for r in first).values()) == 3
    # the same (image, class) row keeps its id, colour and instruction whatever the selection
    by_id = {r["id"]: r for r in first}
    shared = [r for r in one if r["id"] in by_id]
    assert shared and all(r["instruction"] == by_id[r["id"]]["instruction"] for r in shared)
    reseeded, _ = stuff_rows(stuff_root, seed=1)
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
    stem = sorted(p.stem for p in (root / "images" / "train2017").glob("*.jpg"))[0]
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


def test_refcoco_absent_rows_borrow_a_sentence_of_a_category_not_in_the_image(ref_root):
    rows, _ = ref_rows(ref_root)
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
