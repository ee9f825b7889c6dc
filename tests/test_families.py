"""Rows of the full model's other tasks go to folders of their own beside ieiw/ (issue #13, item 3)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from ieiw_testing import run_ieiw


def rows(folder: Path, columns: list[str]) -> list[dict]:
    return [r for shard in sorted(folder.glob("*.parquet")) for r in pq.read_table(shard, columns=columns).to_pylist()]


def test_other_families_get_their_own_folder_keep_every_undropped_row_and_the_card_lists_them(sample_root, tmp_path):
    samples = {"images": 6, "width": 128, "height": 96}
    config = tmp_path / "mixed.yaml"
    config.write_text(yaml.safe_dump({
        "name": "mixed", "out_dir": str(tmp_path / "out"), "unit_size": 8, "workers": 2,
        "removal": {"source": {"root": str(sample_root), "splits": ["train"], "limit": 16}},
        "cocostuff": {"root": str(tmp_path / "coco-stuff"), "samples": samples},
        "keypoints": {"dataset": "coco", "root": str(tmp_path / "coco"), "samples": {"images": 4}},
        # strict enough that IEIW loses pairs to the rules: the other families must not
        "selection": {"min_target_aesthetic": 6.5, "max_aesthetic_gap": 0.5, "min_target_giqa": {"quantile": 0.3}},
    }))
    run_ieiw("build", config)
    out = tmp_path / "out"
    made = Counter(r["task"] for r in rows(out / "candidates", ["task"]))
    assert made["segment"] and made["keypoints"] and made["remove"]

    ieiw = Counter(r["task"] for r in rows(out / "ieiw", ["task"]))
    assert set(ieiw) <= {"remove", "add"}, "IEIW holds the paper's tasks only"
    segmentation = Counter(r["task"] for r in rows(out / "segmentation", ["task"]))
    keypoints = Counter(r["task"] for r in rows(out / "keypoints", ["task"]))
    assert segmentation == Counter({"segment": made["segment"]}), "every segment row kept: no IEIW rule applies"
    assert keypoints == Counter({"keypoints": made["keypoints"]})
    rejected = Counter(r["task"] for r in rows(out / "rejected", ["task"]))
    assert set(rejected) <= {"remove", "add"} and sum(rejected.values()) > 0

    # each folder's stats are its own: source records of a converter are counted in its folder
    seg_stats = json.loads(run_ieiw("stats", out / "segmentation", "--json").stdout)
    assert seg_stats["rows"] == made["segment"] and seg_stats["records"] > 0
    ieiw_stats = json.loads(run_ieiw("stats", out / "ieiw", "--json").stdout)
    assert set(ieiw_stats["by_task"]) <= {"remove", "add"} and ieiw_stats["records"] == 16
    card = (out / "README.md").read_text()
    assert "`segmentation/`" in card and "`keypoints/`" in card and "not part of IEIW" in card

    # a rerun changes nothing; a rerun with other thresholds leaves the other folders' rows alone
    run_ieiw("build", config)
    assert Counter(r["task"] for r in rows(out / "segmentation", ["task"])) == segmentation
    run_ieiw("select", "--config", config, "--set", "selection.min_target_aesthetic=1.0")
    assert Counter(r["task"] for r in rows(out / "segmentation", ["task"])) == segmentation
    assert sum(Counter(r["task"] for r in rows(out / "ieiw", ["task"])).values()) > sum(ieiw.values())
