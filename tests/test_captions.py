"""Adaptation-stage rows (issue #13 item 4): each rendered target paired with a caption of its image, read
from COCO captions files as they really are, written to out/adaptation, the suffix added once by the trainer."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

from ieiw.schemas.units import BuildContext
from ieiw.builders.captions import (
    DEFAULT_SUFFIXES,
    KEYPOINTS_TASK,
    OVERLAY_TASK,
    CaptionsFormatError,
    captions_preflight,
    load_captions,
    tidy,
)
from ieiw.builders.cocostuff import CocoStuffBuilder, CocoStuffConfig
from ieiw.builders.keypoints import KeypointsBuilder, KeypointsConfig
from ieiw.builders.refcoco import RefCocoBuilder, RefCocoConfig
from ieiw.samples.pose import make_pose_sample
from ieiw.samples.segmentation import make_cocostuff_sample, make_refcoco_sample
from ieiw.schemas.registry import REGISTRY
from ieiw.schemas.rows import rows_to_table
from ieiw.training.config import DEFAULT_CAPTION_SUFFIXES
from ieiw_testing import run_ieiw


def run(builder):
    results = [builder.build_unit(unit) for unit in builder.plan()]
    counters = sum((r.counters for r in results), Counter())
    return [row for r in results for row in r.rows], counters, [f for r in results for f in r.failures]


def context() -> BuildContext:
    return BuildContext(root=Path.cwd(), out_dir=Path("out"), unit_size=5)


def caption_file(root: Path, name: str) -> dict:
    return json.loads((root / "annotations" / name).read_text())


def test_tidy_handles_the_blemishes_of_real_coco_captions():
    assert tidy("A man riding a horse . \n") == "A man riding a horse"
    assert tidy(" A  kitchen\twith a stove.\n") == "A kitchen with a stove"
    assert tidy("Two dogs playing,") == "Two dogs playing"
    assert tidy("  .  ") == ""


def test_captions_file_by_id_or_file_name_with_repeats_and_unusable_entries(tmp_path):
    path = tmp_path / "captions.json"
    path.write_text("\ufeff" + json.dumps({
        "images": [{"id": 139, "file_name": "000000000139.jpg"}, {"id": 7, "file_name": "COCO_train2014_000000000007.jpg"}],
        "annotations": [
            {"image_id": 139, "id": 5, "caption": "A room with a TV. "},
            {"image_id": 139, "id": 2, "caption": "a living room\n"},
            {"image_id": 139, "id": 9, "caption": "A room with a TV."},  # a repeat once tidied
            {"image_id": "7", "id": 3, "caption": "A cat on a mat"},     # an id written as a string
            {"image_id": 139, "id": 4, "caption": "   "},                 # unusable: no text
            {"image_id": None, "id": 6, "caption": "orphan"},             # unusable: no image
            {"id": 8, "caption": "no image id at all"},
        ],
    }))
    captions = load_captions(path)
    assert [(c.id, c.text) for c in captions.for_image(139)] == [(2, "a living room"), (5, "A room with a TV")]
    assert [c.text for c in captions.for_image("000000000139")] == ["a living room", "A room with a TV"]
    assert [c.text for c in captions.for_image(7)] == ["A cat on a mat"]
    assert [c.text for c in captions.for_image(None, "sub/COCO_train2014_000000000007.jpg")] == ["A cat on a mat"]
    assert captions.for_image(12345) == [] and captions.unusable == 3
    for text, message in [("{", "captions.json:1:2: not JSON"), ("[]", "an 'annotations' list"),
                          ('{"annotations": [{"caption": "x"}]}', "no annotation with an image_id")]:
        path.write_text(text)
        with pytest.raises(CaptionsFormatError, match=message):
            load_captions(path)
    assert captions_preflight("cocostuff", tmp_path / "nope.json") == [
        f"cocostuff.captions: {tmp_path / 'nope.json'}: captions file not found"]


def test_cocostuff_caption_rows_hold_the_rendered_target_and_one_caption_of_the_image(tmp_path):
    root = make_cocostuff_sample(tmp_path / "coco-stuff", 12, 2, 128, 96)
    captions = root / "annotations" / "captions_train2017.json"
    rows, counters, failures = run(CocoStuffBuilder(CocoStuffConfig(root=root, captions=captions), context()))
    assert not failures
    edit = {r["id"]: r for r in rows if r["task"] == "segment"}
    adapt = [r for r in rows if r["task"] == OVERLAY_TASK]
    texts: dict[int, set[str]] = {}
    for ann in caption_file(root, "captions_train2017.json")["annotations"]:
        texts.setdefault(ann["image_id"], set()).add(tidy(ann["caption"]))
    rendered = [r for r in edit.values() if json.loads(r["builder"]["params"])["kind"] == "present"]
    uncaptioned = [r for r in rendered if int(r["origin"]["image_id"]) not in texts]
    assert adapt and uncaptioned, "the sample has captioned and uncaptioned images"
    assert len(adapt) == len(rendered) - len(uncaptioned) == counters["caption_rows"]
    assert counters["uncaptioned_rows"] == len(uncaptioned)
    for row in adapt:
        of = edit[json.loads(row["builder"]["params"])["caption_of"]]
        assert json.loads(of["builder"]["params"])["kind"] == "present", "absent rows show no overlay"
        assert row["target_image"]["bytes"] == of["target_image"]["bytes"] != row["source_image"]["bytes"]
        assert row["source_image"] == of["source_image"] and row["mask"] == of["mask"]
        assert row["instruction"] in texts[int(row["origin"]["image_id"])]
        assert not row["instruction"].endswith(".") and "  " not in row["instruction"]
        assert DEFAULT_SUFFIXES[OVERLAY_TASK] not in row["instruction"], "the trainer adds the suffix, not the row"
        assert row["origin"]["record_id"] == of["origin"]["record_id"] + ":caption" and row["id"] != of["id"]
    rows_to_table(rows)  # the schema takes them
    again, _, _ = run(CocoStuffBuilder(CocoStuffConfig(root=root, captions=captions), context()))
    assert [(r["id"], r["instruction"]) for r in again] == [(r["id"], r["instruction"]) for r in rows]
    plain, plain_counters, _ = run(CocoStuffBuilder(CocoStuffConfig(root=root), context()))
    assert [r["id"] for r in plain] == list(edit) and not plain_counters["caption_rows"], "captions add rows only"


def test_refcoco_no_target_and_absent_rows_get_no_caption_row(tmp_path):
    root = make_refcoco_sample(tmp_path / "coco_2014", 8, 1, 128, 96)
    captions = root / "annotations" / "captions_train2014.json"
    rows, counters, _ = run(RefCocoBuilder(RefCocoConfig(root=root, captions=captions, absent_share=0.2), context(), "refcoco"))
    kinds = {r["id"]: json.loads(r["builder"]["params"])["kind"] for r in rows if r["task"] == "refer-segment"}
    adapt = [r for r in rows if r["task"] == OVERLAY_TASK]
    assert adapt and "absent" in kinds.values()
    assert {kinds[json.loads(r["builder"]["params"])["caption_of"]] for r in adapt} == {"target"}
    assert counters["caption_rows"] + counters["uncaptioned_rows"] == list(kinds.values()).count("target")


def test_keypoint_caption_rows_match_their_discs(tmp_path):
    root = make_pose_sample(tmp_path / "coco", "coco", 6)
    config = KeypointsConfig(dataset="coco", root=root, captions=root / "annotations" / "captions_train2017.json")
    rows, counters, _ = run(KeypointsBuilder(config, context()))
    edit = {r["id"]: r for r in rows if r["task"] == "keypoints"}
    adapt = [r for r in rows if r["task"] == KEYPOINTS_TASK]
    assert adapt and counters["caption_rows"] == len(adapt) and counters["uncaptioned_rows"] > 0
    for row in adapt:
        assert row["target_image"] == edit[json.loads(row["builder"]["params"])["caption_of"]]["target_image"]


def test_caption_tasks_are_the_adaptation_family_and_the_trainer_knows_their_suffixes():
    assert {REGISTRY.task(t).family for t in (OVERLAY_TASK, KEYPOINTS_TASK)} == {"adaptation"}
    assert DEFAULT_CAPTION_SUFFIXES == DEFAULT_SUFFIXES


def test_a_build_writes_caption_rows_to_adaptation_and_a_bad_captions_file_stops_preflight(tmp_path):
    out = tmp_path / "out"
    config = tmp_path / "build.yaml"
    section = {"root": str(tmp_path / "coco-stuff"), "samples": {"images": 6, "width": 96, "height": 96},
               "captions": str(tmp_path / "coco-stuff/annotations/captions_train2017.json")}
    config.write_text(yaml.safe_dump({"name": "captions", "out_dir": str(out), "unit_size": 8, "workers": 1,
                                      "cocostuff": section}))
    run_ieiw("build", config)
    adaptation = json.loads(run_ieiw("stats", out / "adaptation", "--json").stdout)
    segmentation = json.loads(run_ieiw("stats", out / "segmentation", "--json").stdout)
    assert set(adaptation["by_task"]) == {OVERLAY_TASK} and adaptation["rows"] > 0
    assert segmentation["records"] == 6 and adaptation["records"] == 0, "source records counted once, with the edit rows"
    assert "`adaptation/`" in (out / "README.md").read_text()
    (tmp_path / "coco-stuff/annotations/captions_train2017.json").write_text('{"annotations": 3}')
    failed = run_ieiw("build", config, check=False)
    assert failed.returncode != 0 and "cocostuff.captions:" in failed.stderr and "captions_train2017.json" in failed.stderr


def test_coco_ids_that_only_look_like_numbers_are_no_ids():
    """Found by the fuzz suite: "²" passes str.isdigit() and a 5,000-digit string passes it too; int() raised
    ValueError for both, out of whatever reader asked."""
    from ieiw.builders.captions import coco_id

    assert coco_id("000000000139") == 139 and coco_id(" -7 ") == -7
    assert coco_id("²") is None and coco_id("9" * 5000) is None
