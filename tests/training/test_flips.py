"""Mirroring by the official rules, checked on what training samples show: referring rows are never mirrored, a
mirrored keypoint sample names the swapped side, a row whose instruction names a side is left as it is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from trainkit import built, context, make_row, stage

from ieiw.builders.keypoints import KeypointsBuilder, KeypointsConfig
from ieiw.builders.refcoco import RefCocoBuilder, RefCocoConfig
from ieiw.samples.segmentation import make_refcoco_sample
from ieiw.training.config import DataConfig
from ieiw.training.data import ShardPairs, index_shards
from ieiw.training.flips import OFFICIAL_FLIP, flip_rule, swap_sides

RESOLUTION = 32


def samples(folder: Path, epochs: int, **kwargs) -> list[dict]:
    kwargs.setdefault("redraw", False)  # the stored rows' flips; redrawn samples: tests/training/test_redraw.py
    loader = ShardPairs(index_shards(folder), resolution=RESOLUTION, shuffle_buffer=0, random_crop=False,
                        epochs=epochs, **kwargs)
    return list(loader)


def mirrored_or_not(sample: dict, plain: dict) -> str:
    """Whether a sample shows the unflipped render ("same") or its mirror ("mirrored")."""
    src, ref = sample["source"].numpy(), plain["source"].numpy()
    if np.array_equal(src, ref):
        return "same"
    assert np.array_equal(src, ref[..., ::-1]), "a sample is neither the plain render nor its mirror"
    return "mirrored"


def paired(folder: Path, epochs: int) -> list[tuple[dict, dict]]:
    """Each sample beside the same (epoch, position) drawn with flipping off: the same crop, never mirrored."""
    return list(zip(samples(folder, epochs), samples(folder, epochs, random_flip=False), strict=True))


@pytest.fixture(scope="module")
def refcoco_stage(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("flip-refcoco")
    root = make_refcoco_sample(tmp / "coco_2014", 12, 5, 96, 72)
    rows = built(RefCocoBuilder(RefCocoConfig(root=root), context(tmp), "refcoco"))
    assert len(rows) >= 10
    return stage(tmp / "stage", rows)


@pytest.fixture(scope="module")
def keypoint_stage(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("flip-keypoints")
    config = KeypointsConfig(dataset="coco", root=tmp / "coco", samples={"images": 10, "width": 128, "height": 96},
                             joints_per_row=(2, 4))
    rows = built(KeypointsBuilder(config, context(tmp)))
    assert len(rows) >= 8
    return stage(tmp / "stage", rows)


def test_referring_rows_are_never_mirrored(refcoco_stage):
    pairs = paired(refcoco_stage, epochs=40)
    assert len(pairs) >= 400
    assert {mirrored_or_not(sample, plain) for sample, plain in pairs} == {"same"}
    assert all(sample["instruction"] == plain["instruction"] for sample, plain in pairs)


def test_gier_rows_are_never_mirrored(tmp_path):
    from ieiw.builders.gier import GierBuilder, GierConfig

    rows = built(GierBuilder(GierConfig(root=tmp_path / "gier", samples={"pairs": 8}), context(tmp_path)))
    assert len(rows) == 8 and {row["origin"]["dataset"] for row in rows} == {"gier"}
    pairs = paired(stage(tmp_path / "stage", rows), epochs=250)
    assert len(pairs) == 2000
    assert {mirrored_or_not(sample, plain) for sample, plain in pairs} == {"same"}


def test_a_mirrored_keypoint_sample_names_the_swapped_side(keypoint_stage):
    pairs = paired(keypoint_stage, epochs=40)
    seen = {"same": 0, "mirrored": 0}
    sided = 0
    for sample, plain in pairs:
        how = mirrored_or_not(sample, plain)
        seen[how] += 1
        expected = swap_sides(plain["instruction"]) if how == "mirrored" else plain["instruction"]
        assert sample["instruction"] == expected
        sided += how == "mirrored" and sample["instruction"] != plain["instruction"]
    assert min(seen.values()) > 0.35 * len(pairs), seen  # the official 0.5
    assert sided > 0.2 * len(pairs), "some mirrored samples must have named a side, and had it swapped"


def test_a_row_whose_instruction_names_a_side_is_not_mirrored(tmp_path):
    rows = []
    for index in range(8):
        row = make_row(index, "phrasecut")
        if index % 2:
            row["instruction"] = f"remove the square on the {'left' if index % 4 == 1 else 'right'}"
        rows.append(row)
    folder = stage(tmp_path, rows)
    by_row: dict[str, set[str]] = {}
    for sample, plain in paired(folder, epochs=30):
        by_row.setdefault(sample["instruction"], set()).add(mirrored_or_not(sample, plain))
    for instruction, ways in by_row.items():
        assert ways == ({"same"} if ("left" in instruction or "right" in instruction) else {"same", "mirrored"}), \
            instruction


def test_the_rules_default_to_the_official_config_and_can_be_overridden():
    assert DataConfig().flip == OFFICIAL_FLIP == {"refcoco": 0.0, "grefcoco": 0.0, "gier": 0.0, "gqa-inpaint": 0.0}
    assert flip_rule(OFFICIAL_FLIP, 0.5, "cocostuff", "segment", "mark the sky").probability == 0.5
    assert flip_rule({"cocostuff": 0.0}, 0.5, "cocostuff", "segment", "mark the sky").probability == 0.0
    assert flip_rule({"refcoco": 0.5}, 0.5, "refcoco", "segment", "the man").probability == 0.5
    assert swap_sides("Left knee, RIGHT wrist, leftmost, left_ankle, leftover") == \
        "Right knee, LEFT wrist, rightmost, right_ankle, leftover"
