"""The GQA-Inpaint importer (``gqa_inpaint:``) on its bundled sample: InstructDiffusion's ``meta_info.json`` read
with the official prefix mapping, the source (the photo with the object) and target (the photo without it) the
right way round, bad records named by file and index, names outside the root refused, the config composed from
the registry and preflight lines."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from ieiw_testing import assert_not_carried, plant_outside
from test_importers import build as build_with
from test_importers import params, pixels

from ieiw.builders.gqa_inpaint import DATASET, GqaInpaintBuilder, GqaInpaintConfig, mapped
from ieiw.imageio import decode
from ieiw.samples.base import COLOURS
from ieiw.samples.editing import GQA_BAD, ensure_gqa_inpaint_sample, make_gqa_inpaint_sample
from ieiw.schemas.config import validate_build_config
from ieiw.schemas.rows import rows_to_table
from ieiw.training.flips import OFFICIAL_FLIP

PAIRS = 8


def build(config, unit_size: int = 4):
    return build_with(GqaInpaintBuilder, config, unit_size)


def official_path(written: str, prefix: str, root: Path) -> Path:
    """What InstructDiffusion's GQAInpaintDataset opens: the prefix replaced by its ``path`` (our root)."""
    return Path(written.replace(prefix, str(root)))


@pytest.fixture(scope="module")
def gqa(tmp_path_factory):
    root = tmp_path_factory.mktemp("gqa") / "gqa-inpaint"
    config = GqaInpaintConfig(root=root, samples={"pairs": PAIRS, "bad": True})
    return (config, *build(config))


def test_reads_the_official_layout_source_to_target(gqa):
    config, rows, failures, counters, records = gqa
    meta = json.loads((config.root / "meta_info.json").read_text())
    assert records == len(meta) == PAIRS + len(GQA_BAD) and len(rows) == PAIRS and len(failures) == len(GQA_BAD)
    assert counters["size_differs"] == 1
    for row in rows:
        index = params(row)["record"]
        record = meta[index]
        assert row["origin"]["record_id"] == f"meta_info:{index}"
        assert row["origin"]["dataset"] == DATASET == "gqa-inpaint"
        assert row["task"] == "edit" and row["mask"] is None
        # the bytes of exactly the files the official loader opens: source_image_path with ../datasets replaced,
        # target_image_path with ../datasets/gqa-inpaint replaced
        source_file = official_path(record["source_image_path"], "../datasets", config.root)
        target_file = official_path(record["target_image_path"], "../datasets/gqa-inpaint", config.root)
        assert source_file.parent == config.root / "images" and "images_inpainted" in target_file.parts
        assert row["source_image"]["bytes"] == source_file.read_bytes()
        assert row["target_image"]["bytes"] == target_file.read_bytes()
        assert row["instruction"] == record["instruction"] and row["instruction"].startswith("remove the ")
        assert row["origin"]["image_id"] == source_file.stem  # the GQA photo: all its objects in one split
        # direction: the source still shows the object the instruction names, the target no longer does
        source, target = pixels(row["source_image"]), pixels(row["target_image"])
        if "target_size" in params(row):  # the sample's one inpainted image stored at half the size
            assert params(row)["target_size"] == [target.shape[1], target.shape[0]] == [row["width"] // 2,
                                                                                         row["height"] // 2]
            continue
        assert source.shape == target.shape == (row["height"], row["width"], 3)
        mask = decode((config.root / "masks" / source_file.stem / target_file.name).read_bytes()).pixels[..., 0] > 127
        colour = np.array(COLOURS[row["instruction"].split()[2]])  # "remove the red circle ..."

        def near(image, mask=mask, colour=colour):  # pixels of the named colour in the object's mask
            return int((np.abs(image[mask].astype(int) - colour).sum(axis=1) < 60).sum())

        assert near(source) > 100 and near(target) < near(source) / 4, row["instruction"]
    photos = Counter(row["origin"]["image_id"] for row in rows)
    assert max(photos.values()) == 2  # two objects removed from one photo: one image id
    rows_to_table(rows)
    assert OFFICIAL_FLIP[rows[0]["origin"]["dataset"]] == 0.0  # the trainer's flip table knows the name


def test_bad_records_are_named_by_file_and_index(gqa):
    config, _, failures, _, _ = gqa
    meta_file = str(config.root / "meta_info.json")
    got = [(f.reason, f.record_id) for f in failures]
    assert got == [(reason, f"meta_info:{PAIRS + offset}") for offset, reason in sorted(GQA_BAD.items())]
    for failure in failures:
        index = int(failure.record_id.split(":")[1])
        assert f"record {index}" in failure.message
        assert failure.file == meta_file or (failure.reason == "unreadable_image"
                                             and failure.file.startswith(str(config.root / "images")))
    by_reason = {f.reason: f for f in failures}
    assert "target_image_path is missing" in failures[1].message
    assert "'..' component" in by_reason["path_outside_root"].message
    assert "is not there" in by_reason["missing_image"].message


def test_size_policy_and_unit_size_do_not_shape_rows(gqa, tmp_path):
    config, rows, _, _, _ = gqa
    strict, failures, _, _ = build(GqaInpaintConfig(root=config.root, require_same_size=True), unit_size=3)
    assert [f.reason for f in failures if f.reason == "size_mismatch"] == ["size_mismatch"]
    assert {r["id"] for r in strict} == {r["id"] for r in rows if "target_size" not in params(r)}
    limited, _, _, records = build(GqaInpaintConfig(root=config.root, limit=3), unit_size=2)
    assert records == 3 and [r["id"] for r in limited] == [r["id"] for r in rows[:3]]


def test_prefix_mapping_and_names_outside_the_root(tmp_path):
    """A path with the official prefix loses it; one without is read under the root as written; absolute,
    ``..`` and symlinked-out names are path_outside_root and nothing is read."""
    root = make_gqa_inpaint_sample(tmp_path / "gqa-inpaint", pairs=2)
    planted, data = plant_outside(tmp_path / "outside")
    meta = json.loads((root / "meta_info.json").read_text())
    good = meta[0]
    (root / "images" / "linked.jpg").symlink_to(planted)
    plain = good["target_image_path"].replace("../datasets/gqa-inpaint/", "")
    records = [
        dict(good, target_image_path=plain),  # no prefix: under the root as it is
        dict(good, source_image_path=str(planted)),
        dict(good, source_image_path="../datasets/images/linked.jpg"),
        dict(good, target_image_path=os.path.relpath(planted, root)),
        dict(good, source_image_path="../datasets/gqa-inpaint/images/../../outside/x.jpg"),
        dict(good, target_image_path="../datasetsX/images/a.jpg"),  # not the prefix and a '/': a '..' name
    ]
    (root / "meta_info.json").write_text(json.dumps(records))
    rows, failures, _, _ = build(GqaInpaintConfig(root=root))
    assert [r["origin"]["record_id"] for r in rows] == ["meta_info:0"]
    assert rows[0]["target_image"]["bytes"] == (root / plain).read_bytes()
    assert [(f.reason, f.record_id) for f in failures] == [("path_outside_root", f"meta_info:{i}") for i in range(1, 6)]
    assert_not_carried(rows, planted, data)
    (root / "meta_info.json").write_text(json.dumps([dict(good, source_image_path="../datasets/"),
                                                     dict(good, target_image_path="../datasets/gqa-inpaint//")]))
    _, failures, _, _ = build(GqaInpaintConfig(root=root))  # the prefix alone: no file named, not a path out
    assert [(f.reason, f.message) for f in failures] == [
        ("bad_record", "record 0: source_image_path '../datasets/' names no file"),
        ("bad_record", "record 1: target_image_path '../datasets/gqa-inpaint//' names no file")]
    assert mapped("../datasets/images/1.jpg", "../datasets") == "images/1.jpg"
    assert mapped("../datasets/gqa-inpaint/a/1.jpg", "../datasets/gqa-inpaint/") == "a/1.jpg"
    assert mapped("../datasets/gqa-inpaint/a/1.jpg", "../datasets") == "gqa-inpaint/a/1.jpg"  # as the official
    # configured prefixes: a meta_info.json written elsewhere
    (root / "meta_info.json").write_text(json.dumps([
        {"source_image_path": "/mnt/x/" + good["source_image_path"].removeprefix("../datasets/"),
         "target_image_path": "/mnt/y/" + plain, "instruction": "remove it"}]))
    rows, failures, _, _ = build(GqaInpaintConfig(root=root, source_prefix="/mnt/x", target_prefix="/mnt/y/"))
    assert not failures and len(rows) == 1 and rows[0]["instruction"] == "remove it"


def test_config_section_preflight_and_sample(tmp_path):
    config = validate_build_config({"name": "t", "out_dir": str(tmp_path / "out"),
                                    "gqa_inpaint": {"root": str(tmp_path / "gqa"), "samples": {"pairs": 3}}})
    assert isinstance(config.gqa_inpaint, GqaInpaintConfig) and config.gqa_inpaint.preflight() == []
    assert "meta_info.json: not found" in GqaInpaintConfig(root=tmp_path / "nowhere").preflight()[0]
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "meta_info.json").write_text('{"source_image_path": "a"}')
    assert "is a JSON list" in GqaInpaintConfig(root=tmp_path / "odd").preflight()[0]
    (tmp_path / "odd" / "meta_info.json").write_bytes(b'[{"instruction": "\xff"}]')
    assert "not JSON" in GqaInpaintConfig(root=tmp_path / "odd").preflight()[0]
    a = make_gqa_inpaint_sample(tmp_path / "a", pairs=4, bad=True)
    b = make_gqa_inpaint_sample(tmp_path / "b", pairs=4, bad=True)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert ensure_gqa_inpaint_sample(tmp_path / "c") is True and ensure_gqa_inpaint_sample(tmp_path / "c") is False


@pytest.mark.slow
def test_build_through_the_real_flow(tmp_path):
    """GQA-Inpaint and InstructPix2Pix's original release (zips, filter list) from their samples through
    `ieiw build`: their rows land in out/editing beside each other, bad records as named failures, and the
    trainer's dataset reads them."""
    import pyarrow.parquet as pq
    import yaml
    from ieiw_testing import run_ieiw

    from ieiw.samples.editing import IP2P_FILTER_FILE, IP2P_ORIGINAL_BAD
    from ieiw.schemas.manifest import load_manifest
    from ieiw.training.data import ShardPairs, index_shards

    ip2p_root = tmp_path / "clip-filtered-dataset"
    config = tmp_path / "build.yaml"
    config.write_text(yaml.safe_dump({
        "name": "gqa-ip2p-test", "out_dir": str(tmp_path / "out"), "unit_size": 4, "workers": 2,
        "gqa_inpaint": {"root": str(tmp_path / "gqa-inpaint"), "samples": {"pairs": 5, "bad": True}},
        "instructpix2pix": {"root": str(ip2p_root), "filter_list": str(ip2p_root / IP2P_FILTER_FILE),
                            "samples": {"layout": "original", "rows": 12, "shards": 2, "bad": True}},
        "selection": {"min_target_aesthetic": 1.0, "max_aesthetic_gap": 9.0},
    }))
    run_ieiw("build", config)
    candidates = tmp_path / "out" / "candidates"
    manifest = load_manifest(candidates)
    seeds = json.loads((ip2p_root / "seeds.json").read_text())
    train_pairs = [f"{name}/{seed}" for name, values in seeds[:int(0.9 * len(seeds))]
                   for seed in (values if isinstance(values, list) else [values])]
    assert len(seeds) == 11 and len(train_pairs) == 12  # 9 names: 7 good pairs and 5 bad
    assert Counter(key.rsplit("-", 1)[0] for key in manifest["units"]) == {"gqa_inpaint": 3, "instructpix2pix-train": 3}
    rows = [r for entry in manifest["units"].values()
            for r in pq.read_table(candidates / entry["shard"], columns=["task", "origin"]).to_pylist()]
    listed = set(json.loads((ip2p_root / IP2P_FILTER_FILE).read_text()))
    ip2p_ids = {r["origin"]["record_id"] for r in rows if r["origin"]["dataset"] == "instructpix2pix"}
    assert ip2p_ids and ip2p_ids <= listed
    assert Counter(r["origin"]["dataset"] for r in rows) == {"gqa-inpaint": 5, "instructpix2pix": len(ip2p_ids)}
    failures = [f for e in manifest["units"].values() for f in e["stats"]["failure_messages"]]
    assert len(failures) == len(GQA_BAD) + len(IP2P_ORIGINAL_BAD)
    skipped = sum(e["stats"]["skipped"].get("not_in_filter_list", 0) for e in manifest["units"].values())
    assert skipped == len([k for k in train_pairs if k not in listed]) == 2  # each train name's second seed
    kept = index_shards(tmp_path / "out" / "editing")
    assert sum(len(g.rows) for g in kept) == len(rows)
    samples = list(ShardPairs(kept, resolution=32, epochs=1, shuffle_buffer=1))
    assert len(samples) == len(rows) and {s["source"].shape for s in samples} == {(3, 32, 32)}
