"""The keypoint converter on its bundled samples (COCO, CrowdPose, MPII, AIC layouts): discs centred on the
annotated joints within 1 px (measured on target - source), v=0 joints neither drawn nor named, v=1 drawn,
crowd and unlabelled people skipped with reasons, bad records named, and a run through the real flow."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from ieiw_testing import assert_not_carried, plant_outside, run_ieiw

from ieiw.builders.keypoints import (
    COLOURS,
    KeypointsBuilder,
    KeypointsConfig,
    disc_mask,
    disc_radius,
    joint_words,
    load_pose_templates,
)
from ieiw.imageio import decode, decode_mask
from ieiw.phrases import TemplateError
from ieiw.samples.pose import ensure_pose_sample, make_pose_sample
from ieiw.schemas.manifest import load_manifest
from ieiw.schemas.rows import rows_to_table
from ieiw.schemas.units import BuildContext
from ieiw.sources.keypoints import DATASETS, JOINTS, PoseFormatError


def build(config: KeypointsConfig, unit_size: int = 8):
    builder = KeypointsBuilder(config, BuildContext(root=Path("."), out_dir=Path("unused"), unit_size=unit_size))
    builder.prepare()
    results = [builder.build_unit(unit) for unit in builder.plan()]
    rows = [row for r in results for row in r.rows]
    failures = [f for r in results for f in r.failures]
    skipped: dict[str, int] = {}
    for r in results:
        for reason, count in r.skipped.items():
            skipped[reason] = skipped.get(reason, 0) + count
    return rows, failures, skipped


def annotated_joints(config: KeypointsConfig) -> dict[str, list[tuple[float, float, int]]]:
    """record id -> (x, y, v) per joint, read straight from the annotation file (0-based)."""
    data = json.loads(config.annotation_path().read_text())
    out = {}
    if config.dataset == "mpii":
        for index, entry in enumerate(data):
            out[f"{index}:{entry['image']}"] = [
                (x - 1, y - 1, 2 if vis and x - 1 >= 0 else 0) for (x, y), vis in zip(entry["joints"], entry["joints_vis"])
            ]
        return out
    for ann in data["annotations"]:
        k = ann["keypoints"]
        out[str(ann["id"])] = [(k[i], k[i + 1], k[i + 2]) for i in range(0, len(k), 3)]
    return out


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> dict[str, tuple[KeypointsConfig, list, list, dict]]:
    """Each dataset's sample built with 5 labelled joints per row, discs apart (our option: every disc whole,
    so each can be measured; most pressure on the v=0 rule)."""
    out = {}
    for dataset in DATASETS:
        root = tmp_path_factory.mktemp(dataset) / dataset
        config = KeypointsConfig(dataset=dataset, root=root, samples={"images": 12}, joints_per_row=5,
                                 joint_choice="labelled", overlap="avoid")
        out[dataset] = (config, *build(config))
    return out


def discs(row) -> list[tuple[tuple[int, int, int], float, float, int]]:
    """(colour, centroid x, centroid y, pixels) of each connected region where target differs from source."""
    source = decode(row["source_image"]["bytes"]).pixels
    target = decode(row["target_image"]["bytes"]).pixels
    changed = (source != target).any(axis=2).astype(np.uint8)
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(changed, connectivity=8)
    found = []
    for label in range(1, count):
        colours = {tuple(int(c) for c in px) for px in target[labels == label]}
        assert len(colours) == 1, f"row {row['id']}: a changed region holds several colours {colours}"
        found.append((colours.pop(), float(centroids[label][0]), float(centroids[label][1]),
                      int(stats[label, cv2.CC_STAT_AREA])))
    return found


@pytest.mark.parametrize("dataset", DATASETS)
def test_discs_centred_on_the_joints_within_1px(samples, dataset):
    config, rows, failures, _ = samples[dataset]
    assert rows and not failures
    truth = annotated_joints(config)
    by_colour = {rgb: name for name, rgb in COLOURS.items()}
    checked = 0
    for row in rows:
        marks = json.loads(row["builder"]["params"])["marks"]
        found = discs(row)
        assert len(found) == len(marks), f"{len(found)} discs for {len(marks)} marked joints"
        radius = disc_radius(row["width"], row["height"])
        mask = decode_mask(row["mask"]["bytes"])
        target = decode(row["target_image"]["bytes"]).pixels
        for mark in marks:
            colour = mark["color"]
            (x, y, v) = truth[row["origin"]["record_id"]][mark["index"]]
            assert v > 0
            hits = [d for d in found if by_colour.get(d[0]) == colour]
            assert len(hits) == 1, f"one {colour} disc expected"
            _, cx, cy, area = hits[0]
            assert abs(cx - x) <= 1.0 and abs(cy - y) <= 1.0, f"{mark['joint']} disc at ({cx:.2f}, {cy:.2f}), joint at ({x}, {y})"
            assert abs(area - np.pi * radius * radius) < 0.2 * np.pi * radius * radius
            expected = disc_mask(row["width"], row["height"], int(np.floor(x + 0.5)), int(np.floor(y + 0.5)), radius)
            assert int(expected.sum()) == area  # the whole disc, as the official mask draws it
            # the mask column is the union of the discs: every mask pixel carries a disc colour
            checked += 1
        assert set(map(tuple, target[mask.astype(bool)].tolist())) <= {tuple(COLOURS[m["color"]]) for m in marks}
        assert int(mask.sum()) == sum(d[3] for d in found)
    assert checked >= 20


@pytest.mark.parametrize("dataset", DATASETS)
def test_v0_joints_are_neither_drawn_nor_named(samples, dataset):
    config, rows, _, _ = samples[dataset]
    truth = annotated_joints(config)
    names = joint_words(dataset)
    unlabelled_seen = 0
    for row in rows:
        joints = truth[row["origin"]["record_id"]]
        marks = json.loads(row["builder"]["params"])["marks"]
        drawn = {m["joint"] for m in marks}
        assert all(joints[m["index"]][2] > 0 for m in marks)
        for mark in marks:  # every drawn joint is named, with its colour
            assert mark["joint"] in row["instruction"] and mark["color"] in row["instruction"]
        for index, (_, _, v) in enumerate(joints):
            if v == 0:
                unlabelled_seen += 1
                name = names[index]
                if any(name in other for other in drawn):  # "neck" inside a drawn "upper neck"
                    continue
                assert not re.search(rf"\b{re.escape(name)}\b", row["instruction"]), \
                    f"unlabelled {name!r} named in {row['instruction']!r}"
        assert len(discs(row)) == len(marks)  # nothing drawn beyond the named joints
    assert unlabelled_seen >= 5, "the sample must give people with unlabelled joints rows"


def test_v1_joints_are_drawn(samples):
    drawn_v1 = 0
    for dataset in DATASETS:
        config, rows, _, _ = samples[dataset]
        truth = annotated_joints(config)
        for row in rows:
            for mark in json.loads(row["builder"]["params"])["marks"]:
                if truth[row["origin"]["record_id"]][mark["index"]][2] == 1:
                    assert mark["v"] == 1
                    drawn_v1 += 1
    assert drawn_v1 >= 3


def test_crowd_and_unlabelled_people_give_no_rows_and_are_counted(samples):
    config, rows, _, skipped = samples["coco"]
    data = json.loads(config.annotation_path().read_text())
    crowd = {str(a["id"]) for a in data["annotations"] if a["iscrowd"]}
    empty = {str(a["id"]) for a in data["annotations"] if not a["iscrowd"] and max(a["keypoints"]) == 0}
    assert crowd and empty
    assert skipped == {"crowd": len(crowd), "no_labelled_joints": len(empty)}
    made = {row["origin"]["record_id"] for row in rows}
    assert not made & (crowd | empty)
    assert len(made) == len(data["annotations"]) - len(crowd) - len(empty)
    for dataset in ("crowdpose", "aic"):  # their samples have one unlabelled person too
        assert samples[dataset][3] == {"no_labelled_joints": 1}


def test_rows_fit_the_schema_and_say_where_they_came_from(samples):
    for dataset in DATASETS:
        config, rows, _, _ = samples[dataset]
        table = rows_to_table(rows)
        assert set(table["task"].to_pylist()) == {"keypoints"}
        row = rows[0]
        assert row["origin"]["dataset"] == dataset
        assert row["target_image"]["path"].endswith(".png") and row["mask"]["path"].endswith(".png")
        image = config.image_folder() / Path(row["source_image"]["path"]).name
        assert row["source_image"]["bytes"] == image.read_bytes()  # the source bytes as stored
        assert 1 <= len(json.loads(row["builder"]["params"])["marks"]) <= 5
    coco_row = samples["coco"][1][0]
    assert coco_row["origin"]["license"] == "Attribution License"
    assert coco_row["origin"]["url"].endswith(f"{int(coco_row['origin']['image_id']):012d}.jpg")


def test_joint_names_words_or_official():
    assert joint_words("coco")[1] == "left eye"
    assert joint_words("crowdpose")[12:] == ("top of the head", "neck")
    assert joint_words("mpii")[8] == "upper neck"
    assert joint_words("mpii", "official")[8] == "upper_neck"
    assert joint_words("aic", "official") == JOINTS["aic"]


def test_radius_scales_with_the_short_side():
    assert disc_radius(256, 256) == 10
    assert disc_radius(640, 480) == 19  # 10 * 480 / 256 = 18.75
    assert disc_radius(100, 12) == 1


def test_rows_are_deterministic_and_joints_per_row_is_respected(tmp_path):
    root = make_pose_sample(tmp_path / "coco", "coco", images=6, seed=3)
    config = KeypointsConfig(dataset="coco", root=root, joints_per_row=(2, 3))
    first, _, _ = build(config)
    again, _, _ = build(config, unit_size=3)
    assert [(r["id"], r["instruction"], r["target_image"]["bytes"]) for r in first] == \
        [(r["id"], r["instruction"], r["target_image"]["bytes"]) for r in again]
    counts = {len(json.loads(r["builder"]["params"])["marks"]) for r in first}
    assert counts <= {1, 2, 3} and 3 in counts  # fewer only where every other joint's disc would overlap


def test_bad_records_are_named_failures(tmp_path):
    root = make_pose_sample(tmp_path / "coco", "coco", images=4)
    config = KeypointsConfig(dataset="coco", root=root)
    path = config.annotation_path()
    data = json.loads(path.read_text())
    people = [a for a in data["annotations"] if not a["iscrowd"] and max(a["keypoints"]) > 0]
    people[0]["keypoints"] = people[0]["keypoints"][:-3]
    path.write_text(json.dumps(data))
    gone = config.image_folder() / f"{data['images'][-1]['id']:012d}.jpg"
    gone.unlink()
    _, failures, _ = build(config)
    reasons = {f.reason: f for f in failures}
    assert reasons["bad_keypoints"].record_id == str(people[0]["id"])
    assert "expected 51 keypoint numbers" in reasons["bad_keypoints"].message
    assert reasons["missing_image"].file == str(gone)


@pytest.mark.parametrize("dataset", ["mpii", "aic"])
def test_image_names_outside_the_image_folder_are_failures(tmp_path, dataset):
    """MPII's ``image`` and a COCO-style ``file_name`` of ../x, /x, or a name symlinked out of the image
    folder: each such person is a ``path_outside_root`` failure naming the annotation file, and no row carries
    the file outside (docs/formats.md, "Names that become paths")."""
    root = make_pose_sample(tmp_path / dataset, dataset, images=6)
    config = KeypointsConfig(dataset=dataset, root=root)
    baseline, _, _ = build(config)
    planted, data = plant_outside(tmp_path / "elsewhere", (320, 240))
    folder = config.image_folder()
    (folder / "linked.jpg").symlink_to(planted)
    crafted = [os.path.relpath(planted, folder), str(planted), "linked.jpg"]
    path = config.annotation_path()
    annotations = json.loads(path.read_text())
    if dataset == "mpii":  # one person each; the record id is "<index>:<image>"
        before = {f"{i}:{annotations[i]['image']}": f"{i}:{name}" for i, name in enumerate(crafted)}
        for entry, name in zip(annotations, crafted):
            entry["image"] = name
    else:  # every person of three images (not image 1, whose first person is skipped as unlabelled)
        chosen = [annotations["images"][i] for i in (0, 2, 3)]
        ids = {str(e["id"]) for e in chosen}
        before = {r["origin"]["record_id"]: r["origin"]["record_id"] for r in baseline
                  if r["origin"]["image_id"] in ids}
        for entry, name in zip(chosen, crafted):
            entry["file_name"] = name
    path.write_text(json.dumps(annotations))
    affected = {before[r["origin"]["record_id"]] for r in baseline if r["origin"]["record_id"] in before}
    assert len(affected) >= 3
    rows, failures, _ = build(config)
    refused = {f.record_id: f for f in failures if f.reason == "path_outside_root"}
    assert set(refused) == affected and {f.file for f in refused.values()} == {str(path)}
    assert all(str(folder) in f.message for f in refused.values())
    kept = {r["origin"]["record_id"] for r in baseline} - set(before)
    assert kept and {r["origin"]["record_id"] for r in rows} == kept  # everything else still builds
    assert_not_carried(rows, planted, data)


def test_templates_are_checked(tmp_path):
    assert len(load_pose_templates().pieces) == 10
    bad = tmp_path / "kp.yaml"
    bad.write_text(yaml.safe_dump({"keypoints": ["Put {colour} circles on the {joint}, "]}))
    with pytest.raises(TemplateError, match=r"kp.yaml: keypoints\[0\]"):
        load_pose_templates(bad)
    config = KeypointsConfig(dataset="coco", root=tmp_path / "nowhere", templates=bad)
    lines = config.preflight()
    assert any("keypoints.templates" in line for line in lines)
    assert any("annotation file not found" in line for line in lines)


def test_sample_is_deterministic_and_made_once(tmp_path):
    for dataset in DATASETS:
        a = make_pose_sample(tmp_path / "a" / dataset, dataset, images=3)
        b = make_pose_sample(tmp_path / "b" / dataset, dataset, images=3)
        files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
        assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert ensure_pose_sample(tmp_path / "c", "mpii", images=2) is True
    assert ensure_pose_sample(tmp_path / "c", "mpii", images=2) is False
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.slow
def test_build_through_the_real_flow(tmp_path):
    config = tmp_path / "build.yaml"
    config.write_text(yaml.safe_dump({
        "name": "keypoints-test",
        "out_dir": str(tmp_path / "out"),
        "unit_size": 8,
        "workers": 2,
        "keypoints": {"dataset": "mpii", "root": str(tmp_path / "mpii"), "samples": {"images": 5}},
        "selection": {"min_target_aesthetic": 1.0, "max_aesthetic_gap": 9.0},
    }))
    run_ieiw("build", config)
    candidates = tmp_path / "out" / "candidates"
    manifest = load_manifest(candidates)
    assert manifest["units"] and all(key.startswith("keypoints-mpii-train-") for key in manifest["units"])
    rows = [r for entry in manifest["units"].values()
            for r in pq.read_table(candidates / entry["shard"], columns=["task", "origin", "instruction"]).to_pylist()]
    assert rows and {r["task"] for r in rows} == {"keypoints"}
    assert {r["origin"]["dataset"] for r in rows} == {"mpii"}
    assert sum(e["stats"]["records"] for e in manifest["units"].values()) == len(
        json.loads((tmp_path / "mpii" / "annot" / "train.json").read_text()))
    shutil.rmtree(tmp_path / "out")


# -- hostile records (found by tests/fuzz/test_fuzz_keypoints.py): each fails alone ---------------------------


def _first_image_people(doc) -> set[str]:
    """The record ids of the people of a COCO-style file's first image."""
    first = doc["images"][0]["id"]
    return {str(a["id"]) for a in doc["annotations"] if a["image_id"] == first}


def _set(path: tuple, value):
    """A damage that sets ``doc[path...] = value`` and touches the records ``touched(doc)`` names."""
    def damage(doc):
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = value
    return damage


def _ann0(doc) -> set[str]:
    return {str(doc["annotations"][0]["id"])}


def _mpii0(doc) -> set[str]:
    return {f"0:{doc[0]['image']}"}


def _everyone(doc) -> set[str]:
    return {str(a["id"]) for a in doc["annotations"]}


def _name_too_long(doc):
    doc[0]["image"] = "a" * 300


def _empty_id_and_bad_keypoints(doc):
    doc["annotations"][0]["id"] = ""
    doc["annotations"][0]["keypoints"] = doc["annotations"][0]["keypoints"][:-3]


def _image0_names_image2_with_another_size(doc):
    doc["images"][0]["file_name"] = doc["images"][2]["file_name"]
    doc["images"][0]["width"] = 50


HOSTILE = {  # id: (dataset, damage, records it may change, the failure reasons expected, what the code did before)
    "mpii-entry-null": (
        "mpii", _set((0,), None), _mpii0, {"bad_record"}, "PoseFormatError: the whole file refused"),
    "coco-annotation-list": (
        "coco", _set(("annotations", 0), [1]), _ann0, {"bad_record"}, "PoseFormatError: the whole file refused"),
    "aic-image-id-list": (
        "aic", _set(("images", 0, "id"), [1]), _first_image_people, {"no_image_info"}, "TypeError: unhashable"),
    "coco-image_id-object": (
        "coco", _set(("annotations", 0, "image_id"), {"a": 1}), _ann0, {"no_image_info"}, "TypeError: unhashable"),
    "coco-category_id-list": (
        "coco", _set(("annotations", 0, "category_id"), [1]), _ann0, set(), "TypeError: unhashable (not_person)"),
    "coco-license-id-list": (
        "coco", _set(("licenses", 0, "id"), [4]), _everyone, set(), "TypeError: unhashable"),
    "coco-categories-number": (
        "coco", _set(("categories",), 5), _everyone, set(), "TypeError: int is not iterable"),
    "coco-width-inf": (
        "coco", _set(("images", 0, "width"), math.inf), _first_image_people, set(), "OverflowError out of plan()"),
    "coco-x-nan": (
        "coco", _set(("annotations", 0, "keypoints", 15), math.nan), _ann0, {"bad_keypoints"},
        "ValueError out of build_unit (floor of NaN)"),
    "crowdpose-v-inf": (
        "crowdpose", _set(("annotations", 0, "keypoints", 2), math.inf), _ann0, {"bad_keypoints"},
        "OverflowError out of build_unit (int of 1e999)"),
    "mpii-joint-inf": (
        "mpii", _set((0, "joints", 9), [math.inf, 5]), _mpii0, {"bad_keypoints"},
        "OverflowError out of build_unit (floor of inf)"),
    "mpii-center-text": (
        "mpii", _set((0, "center"), "ab"), _mpii0, {"bad_box"}, "ValueError out of build_unit"),
    "mpii-center-number": (
        "mpii", _set((0, "center"), 5), _mpii0, {"bad_box"}, "TypeError out of build_unit"),
    "coco-url-list": (
        "coco", _set(("images", 0, "coco_url"), ["x"]), _first_image_people, set(), "the shard unwritable"),
    "coco-license-name-surrogate": (
        "coco", _set(("licenses", 0, "name"), "\ud800"), _everyone, set(), "the shard unwritable"),
    "coco-id-surrogate": (
        "coco", _set(("annotations", 0, "id"), "\ud800"), _ann0, set(), "the shard unwritable"),
    "coco-id-empty": (
        "coco", _empty_id_and_bad_keypoints, _ann0, {"bad_keypoints"}, "a failure with record id ''"),
    "mpii-image-surrogate": (
        "mpii", _set((0, "image"), "\ud800.jpg"), _mpii0, {"path_outside_root"}, "UnicodeEncodeError out of plan()"),
    "mpii-image-too-long": (
        "mpii", _name_too_long, _mpii0, {"missing_image"}, "OSError (ENAMETOOLONG) out of build_unit"),
    "aic-file_name-of-another-image": (
        "aic", _image0_names_image2_with_another_size, _first_image_people, {"image_size_mismatch"},
        "image 2's people failed image_size_mismatch: the image was read once per path, with image 0's size"),
}


@pytest.mark.parametrize(("dataset", "damage", "touched", "reasons", "before"), HOSTILE.values(), ids=HOSTILE)
def test_a_hostile_record_fails_alone(tmp_path, dataset, damage, touched, reasons, before):
    """One crafted record: a named failure (or a row as lenient as before), the others' rows unchanged, the
    rows writable; ``before`` is what the code did before the fix."""
    root = make_pose_sample(tmp_path / dataset, dataset, images=3, width=96, height=48)
    config = KeypointsConfig(dataset=dataset, root=root)
    baseline, failures, _ = build(config)
    assert baseline and not failures
    path = config.annotation_path()
    doc = json.loads(path.read_text())
    keys = touched(doc)
    damage(doc)
    path.write_text(json.dumps(doc))
    rows, failures, _ = build(config)
    rows_to_table(rows)
    assert {f.reason for f in failures} == reasons, [str(f) for f in failures]
    for failure in failures:
        assert failure.record_id not in ("", "None") and failure.file
        assert failure.file == str(path) or failure.file.startswith(str(config.image_folder()))

    before_ids = {r["origin"]["record_id"] for r in baseline}
    assert len({r["origin"]["record_id"] for r in rows} - before_ids) <= len(keys)  # a touched record renamed

    def untouched(rows_):
        return sorted((r["id"], r["target_image"]["bytes"], json.dumps(r["origin"], sort_keys=True))
                      for r in rows_ if r["origin"]["record_id"] in before_ids - keys)

    assert untouched(rows) == untouched(baseline)


def test_an_annotation_file_that_is_no_utf8_is_named(tmp_path):
    """Found by the fuzz suite: a file starting ``\\xff\\xfe`` (which json reads as UTF-16) raised a bare
    UnicodeDecodeError that named no file."""
    root = make_pose_sample(tmp_path / "coco", "coco", images=2, width=96, height=48)
    config = KeypointsConfig(dataset="coco", root=root)
    path = config.annotation_path()
    data = path.read_bytes()
    path.write_bytes(b"\xff\xfe" + data + b" " * (1 - len(data) % 2))  # an odd length: UTF-16 cut mid-character
    with pytest.raises(PoseFormatError, match=re.escape(str(path))):
        build(config)


@pytest.mark.parametrize("dataset", DATASETS)
def test_the_official_choice_names_unlabelled_joints_without_a_disc(tmp_path, dataset):
    """The default, as the official generate_target: joints drawn from all of the dataset's joints; an
    unlabelled one is named (colour and joint in the instruction) and its colour appears nowhere; every labelled
    named joint's colour covers its disc's centre (later discs may cover parts of earlier ones)."""
    config = KeypointsConfig(dataset=dataset, root=tmp_path / dataset, samples={"images": 12})
    assert (config.joint_choice, config.overlap) == ("official", "allow")
    rows, failures, _ = build(config)
    assert rows and not failures
    truth = annotated_joints(config)
    unlabelled_named = 0
    for row in rows:
        marks = json.loads(row["builder"]["params"])["marks"]
        assert 1 <= len(marks) <= 5 and len({m["color"] for m in marks}) == len(marks)
        source = decode(row["source_image"]["bytes"]).pixels
        target = decode(row["target_image"]["bytes"]).pixels
        changed = target[(source != target).any(axis=2)]
        colours_drawn = {tuple(int(c) for c in px) for px in changed}
        for mark in marks:
            assert mark["joint"] in row["instruction"] and mark["color"] in row["instruction"]
            v = truth[row["origin"]["record_id"]][mark["index"]][2]
            assert mark["drawn"] == (v > 0)
            if v == 0:
                unlabelled_named += 1
                assert tuple(COLOURS[mark["color"]]) not in colours_drawn, "an unlabelled joint got a disc"
        radius = disc_radius(row["width"], row["height"])
        drawn = [m for m in marks if m["drawn"]]
        for position, mark in enumerate(drawn):  # a disc shows at its centre unless a later disc covers it
            (cx, cy) = mark["centre"]
            covered = any((cx - later["centre"][0]) ** 2 + (cy - later["centre"][1]) ** 2 <= radius * radius + 1
                          for later in drawn[position + 1:])
            if not covered and 0 <= cx < row["width"] and 0 <= cy < row["height"]:
                assert tuple(int(c) for c in target[cy, cx]) == tuple(COLOURS[mark["color"]])
    assert unlabelled_named > 0, "the samples have unlabelled joints; some must be named"
