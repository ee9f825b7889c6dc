"""Removal with the embedded backend: it really removes, bad records fail cleanly, instructions vary."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from ieiw.schemas.units import BuildContext
from ieiw.imageio import decode_mask, decode_rgb
from ieiw.builders.instructions import ADD_TEMPLATES, REMOVE_TEMPLATES, instruction_for
from ieiw.builders.removal import RemovalBuilder, RemovalConfig
from ieiw.builders.removal import PhraseCutSourceConfig, RemovalConfig


def builder_for(root, unit_size=8, **kwargs) -> RemovalBuilder:
    config = RemovalConfig(source=PhraseCutSourceConfig(root=root, splits=["train", "val"]), **kwargs)
    return RemovalBuilder(config, BuildContext(root=Path.cwd(), out_dir=Path("out"), unit_size=unit_size))


def test_removal_recovers_the_true_background(sample_root):
    builder = builder_for(sample_root, unit_size=64)
    source_errors, target_errors = [], []
    for unit in builder.plan():
        for row in builder.build_unit(unit).rows:
            if row["task"] != "remove":
                continue
            source = decode_rgb(row["source_image"]["bytes"]).astype(np.float32)
            target = decode_rgb(row["target_image"]["bytes"]).astype(np.float32)
            mask = decode_mask(row["mask"]["bytes"]) > 0
            truth = decode_rgb((sample_root / "backgrounds" / f"{row['origin']['image_id']}.png").read_bytes())
            truth = truth.astype(np.float32)
            source_errors.append(np.abs(source - truth)[mask].mean())
            target_errors.append(np.abs(target - truth)[mask].mean())
            outside = ~mask
            assert np.abs(target - source)[outside].mean() < 3.0, "pixels outside the mask must stay put"
    assert len(source_errors) >= 40
    source_mae, target_mae = float(np.mean(source_errors)), float(np.mean(target_errors))
    assert target_mae <= 0.5 * source_mae, (source_mae, target_mae)


def test_remove_and_add_rows_mirror_each_other(sample_root):
    builder = builder_for(sample_root)
    result = builder.build_unit(builder.plan()[0])
    by_record: dict[str, dict[str, dict]] = {}
    for row in result.rows:
        by_record.setdefault(row["origin"]["record_id"], {})[row["task"]] = row
    assert result.records == 8 and len(by_record) == 8
    for pair in by_record.values():
        remove, add = pair["remove"], pair["add"]
        assert remove["source_image"] == add["target_image"] and remove["target_image"] == add["source_image"]
        assert remove["id"] != add["id"]
        assert remove["builder"]["embedded"] is True and remove["builder"]["backend"] == "opencv-telea"
        assert remove["origin"]["phrase"].split()[-1] in remove["instruction"]
    again = builder.build_unit(builder.plan()[0])
    assert [r["id"] for r in again.rows] == [r["id"] for r in result.rows]
    assert [r["instruction"] for r in again.rows] == [r["instruction"] for r in result.rows]


def corrupt_copy(sample_root, tmp_path):
    """A copy whose first train records are broken in the three ways the issue names."""
    root = tmp_path / "VGPhraseCut_v0"
    shutil.copytree(sample_root, root)
    refer = json.loads((root / "refer_train.json").read_text())
    del refer[0]["Polygons"]
    refer[1]["Polygons"] = [[[[5.0, 5.0]]]]
    # Point record 2 at an image id whose file does not exist (other records keep their images).
    refer[2]["image_id"] = 999
    (root / "refer_train.json").write_text(json.dumps(refer))
    return root, refer


def test_bad_records_fail_with_file_and_task_id_and_the_unit_still_builds(sample_root, tmp_path):
    root, refer = corrupt_copy(sample_root, tmp_path)
    builder = builder_for(root)
    result = builder.build_unit(builder.plan()[0])
    failures = {f.record_id: f for f in result.failures}
    assert set(failures) == {refer[0]["task_id"], refer[1]["task_id"], refer[2]["task_id"]}
    assert failures[refer[0]["task_id"]].reason == "no_polygons"
    assert failures[refer[1]["task_id"]].reason == "degenerate_polygons"
    assert failures[refer[2]["task_id"]].reason == "missing_image"
    assert str(root / "refer_train.json") in str(failures[refer[0]["task_id"]])
    assert str(root / "images" / "999.jpg") in str(failures[refer[2]["task_id"]])
    assert all(refer[i]["task_id"] in str(failures[refer[i]["task_id"]]) for i in range(3))
    built = {row["origin"]["record_id"] for row in result.rows}
    assert built == {r["task_id"] for r in refer[3:8]}
    assert result.stats()["failures"] == {"no_polygons": 1, "degenerate_polygons": 1, "missing_image": 1}


def test_region_policy_skips_are_counted_by_reason_not_as_failures(sample_root, tmp_path):
    builder = builder_for(sample_root, regions={"min_area": 0.9, "max_area": 1.0})
    result = builder.build_unit(builder.plan()[0])
    assert not result.rows and not result.failures
    assert result.skipped == {"region_too_small": 8} and result.stats()["skipped"] == {"region_too_small": 8}
    # v1 configs' key names are accepted and mean the same bound
    old = builder_for(sample_root, min_mask_fraction=0.00001, max_mask_fraction=0.0001).build_unit(builder.plan()[0])
    assert old.skipped == {"region_too_large": 8}

    # A copy where record 0 touches the left border; the sample has two-instance phrases of its own.
    root = tmp_path / "VGPhraseCut_v0"
    shutil.copytree(sample_root, root)
    refer = json.loads((root / "refer_train.json").read_text())
    refer[0]["Polygons"] = [[[[0.0, 30.0], [40.0, 30.0], [40.0, 70.0], [0.0, 70.0]]]]
    (root / "refer_train.json").write_text(json.dumps(refer))
    multi = {r["task_id"] for r in refer[:8] if len(r["Polygons"]) > 1}
    assert multi, "the sample has multi-instance phrases in its first unit"

    kept_all = builder_for(root).build_unit(builder.plan()[0])
    assert not kept_all.skipped and {r["origin"]["record_id"] for r in kept_all.rows} >= multi | {refer[0]["task_id"]}
    strict = builder_for(root, regions={"multi_instance": "skip", "border": "skip"}).build_unit(builder.plan()[0])
    assert strict.skipped == {"multi_instance": len(multi), "touches_border": 1}
    built = {r["origin"]["record_id"] for r in strict.rows}
    assert not built & (multi | {refer[0]["task_id"]}) and len(built) == 8 - len(multi) - 1


def test_default_dilation_is_anyedits_15(sample_root):
    assert RemovalConfig(source=PhraseCutSourceConfig(root=sample_root)).mask_dilation == 15


def test_instruction_templates_are_many_and_deterministic():
    assert len(REMOVE_TEMPLATES) >= 10 and len(ADD_TEMPLATES) >= 10
    ids = [f"{i:08x}" + "0" * 24 for i in range(0, 2**32, 2**32 // 240)]
    chosen = Counter(instruction_for("remove", "red circle", rid) for rid in ids)
    assert len(chosen) == len(REMOVE_TEMPLATES), "ids spread over every template"
    # Pins which shipped template a row id picks: a change rewords the instructions of existing row ids.
    assert [instruction_for("add", "the blue square", rid) for rid in ids[2:5]] == [
        "Put a blue square into the scene.",
        "Insert a blue square where it fits naturally.",
        "Place a blue square in the picture while keeping everything else unchanged.",
    ]
    assert "the the" not in " ".join(instruction_for("add", "the blue square", rid) for rid in ids)


def test_converted_and_exif_rotated_sources_line_up_with_mask_and_target_and_rows_say_so(sample_root, tmp_path):
    """A CMYK file and a sideways-stored file with EXIF orientation 6, in a copy of the sample."""
    from PIL import Image

    root = tmp_path / "VGPhraseCut_v0"
    shutil.copytree(sample_root, root)
    refer = json.loads((root / "refer_train.json").read_text())
    cmyk_id, rotated_id = refer[0]["image_id"], next(r["image_id"] for r in refer if r["image_id"] != refer[0]["image_id"])
    upright = {i: decode_rgb((root / "images" / f"{i}.jpg").read_bytes()) for i in (cmyk_id, rotated_id)}
    Image.fromarray(upright[cmyk_id]).convert("CMYK").save(root / "images" / f"{cmyk_id}.jpg", quality=98)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the pixels are stored turned 90 degrees CCW
    Image.fromarray(np.rot90(upright[rotated_id])).save(root / "images" / f"{rotated_id}.jpg", quality=98, exif=exif)

    builder = builder_for(root, unit_size=64)
    rows = [r for r in builder.build_unit(builder.plan()[0]).rows if r["origin"]["image_id"] in {str(cmyk_id), str(rotated_id)}]
    assert {r["origin"]["image_id"] for r in rows} == {str(cmyk_id), str(rotated_id)}
    for row in rows:
        made = json.loads(row["builder"]["params"])["source_image"]
        image_id = int(row["origin"]["image_id"])
        expected = ("CMYK", "as-stored") if image_id == cmyk_id else ("RGB", "exif-applied")
        assert (made["stored_mode"], made["orientation"], made["reencoded"]) == (*expected, True)
        source = decode_rgb(row["source_image"]["bytes"])
        target = decode_rgb(row["target_image"]["bytes"])
        mask = decode_mask(row["mask"]["bytes"]) > 0
        assert source.shape == target.shape == upright[image_id].shape == (*mask.shape, 3)
        assert np.abs(source.astype(int) - upright[image_id]).mean() < 8, "the source is shown upright (CMYK costs a few levels)"
        changed = np.abs(source.astype(int) - target).max(axis=2) > 40
        assert changed.any() and (changed <= mask).all(), "what changed lies inside the mask"


def test_removal_refuses_a_region_policy_whose_bounds_cross():
    """One region policy for removal and replacement: its bounds are checked for both."""
    with pytest.raises(ValueError, match="min_area 0.9 is above max_area 0.5"):
        RemovalConfig.model_validate({"source": {"root": "x"}, "regions": {"min_area": 0.9}})
    with pytest.raises(ValueError, match="regions.max_per_image: replacement's keys"):
        RemovalConfig.model_validate({"source": {"root": "x"}, "regions": {"max_per_image": 3}})
    partial = RemovalConfig.model_validate({"source": {"root": "x"}, "regions": {"border": "skip"}})
    assert (partial.regions.min_area, partial.regions.max_per_image) == (0.002, None), "removal's own defaults"

