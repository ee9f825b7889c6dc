"""The editing-data importers on their bundled samples: InstructPix2Pix (both Parquet layouts), MagicBrush (the
hub's layout, masks from mask_img) and GIER (the release's JSON and image folders) read into ``edit`` rows with
the images as stored; bad rows named by file and row; Parquet read by row groups, never whole; the rows feed
the trainer's dataset; a run through the real flow."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from ieiw_testing import PLANTED, assert_not_carried, plant_outside, run_ieiw
from PIL import Image

from ieiw.builders.gier import GierBuilder, GierConfig, instructions_of
from ieiw.builders.importers import ImportFormatError, iter_rows, parquet_parts, row_ranges
from ieiw.builders.ip2p import InstructPix2PixBuilder, InstructPix2PixConfig, split_bounds
from ieiw.builders.magicbrush import MagicBrushBuilder, MagicBrushConfig, region_of
from ieiw.imageio import decode, decode_mask, encode
from ieiw.samples.editing import (
    IP2P_BAD,
    IP2P_FILTER_FILE,
    IP2P_ORIGINAL_BAD,
    ensure_gier_sample,
    ensure_ip2p_sample,
    ensure_magicbrush_sample,
    make_gier_sample,
    make_ip2p_sample,
    make_magicbrush_sample,
)
from ieiw.schemas.manifest import Manifest, load_manifest
from ieiw.schemas.registry import REGISTRY
from ieiw.schemas.rows import rows_to_table
from ieiw.schemas.shards import write_shard
from ieiw.schemas.units import BuildContext


def build(builder_class, config, unit_size: int = 4):
    builder = builder_class(config, BuildContext(root=Path("."), out_dir=Path("unused"), unit_size=unit_size))
    builder.prepare()
    results = [builder.build_unit(unit) for unit in builder.plan()]
    counters = Counter()
    for r in results:
        counters.update(r.counters)
    return ([row for r in results for row in r.rows], [f for r in results for f in r.failures], counters,
            sum(r.records for r in results))


def pixels(cell) -> np.ndarray:
    return decode(cell["bytes"]).pixels


def params(row) -> dict:
    return json.loads(row["builder"]["params"])


def file_rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


@pytest.fixture(scope="module")
def ip2p(tmp_path_factory):
    out = {}
    for layout in ("clip-filtered", "short"):
        root = tmp_path_factory.mktemp(f"ip2p-{layout}") / "instructpix2pix"
        config = InstructPix2PixConfig(root=root, samples={"rows": 10, "layout": layout, "bad": True})
        out[layout] = (config, *build(InstructPix2PixBuilder, config))
    return out


@pytest.fixture(scope="module")
def magicbrush(tmp_path_factory):
    root = tmp_path_factory.mktemp("magicbrush") / "MagicBrush"
    out = {}
    for split in ("train", "dev"):
        config = MagicBrushConfig(root=root, split=split, samples={"sessions": 6, "bad": True})
        out[split] = (config, *build(MagicBrushBuilder, config))
    return out


@pytest.fixture(scope="module")
def gier(tmp_path_factory):
    root = tmp_path_factory.mktemp("gier") / "GIER_editing_data"
    config = GierConfig(root=root, samples={"pairs": 8, "bad": True})
    return (config, *build(GierBuilder, config))


# -- InstructPix2Pix ------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["clip-filtered", "short"])
def test_ip2p_reads_its_sample_as_stored(ip2p, layout):
    config, rows, failures, _, records = ip2p[layout]
    assert records == 10 and len(rows) == 10 - len(IP2P_BAD) and len(failures) == len(IP2P_BAD)
    files = sorted((config.root / "data").glob("train-*-of-00002-*.parquet"))
    assert len(files) == 2
    source_column = "original_image" if layout == "clip-filtered" else "input_image"
    stored = {f"data/{f.stem}:{i}": r for f in files for i, r in enumerate(file_rows(f))}
    for row in rows:
        record = stored[row["origin"]["record_id"]]
        assert row["task"] == "edit" and row["origin"]["dataset"] == "instructpix2pix"
        assert row["source_image"]["bytes"] == record[source_column]["bytes"]  # bytes as stored
        assert row["target_image"]["bytes"] == record["edited_image"]["bytes"]
        assert row["source_image"]["path"].endswith(".jpg") and row["mask"] is None
        assert row["instruction"] == record["edit_prompt"] and row["instruction"].startswith("add a ")
        source, target = pixels(row["source_image"]), pixels(row["target_image"])
        assert source.shape == target.shape == (row["height"], row["width"], 3)
        changed = np.abs(source.astype(int) - target.astype(int)).max(axis=2) > 30
        assert changed.sum() > 50  # the added shape
        if layout == "clip-filtered":
            assert params(row)["input_prompt"] == record["original_prompt"]
            assert params(row)["output_prompt"] == record["edited_prompt"]
            assert row["origin"]["image_id"].startswith("prompt-")
        else:
            assert row["origin"]["image_id"].startswith("image-")
    if layout == "clip-filtered":  # the release has several seeds per caption: they share a split
        by_caption = {}
        for row in rows:
            by_caption.setdefault(params(row)["input_prompt"], set()).add(row["origin"]["image_id"])
        assert all(len(ids) == 1 for ids in by_caption.values()) and len(by_caption) < len(rows)
    table = rows_to_table(rows)
    assert table.num_rows == len(rows) and len(set(table["id"].to_pylist())) == len(rows)
    assert REGISTRY.task("edit").family == "editing"


@pytest.mark.parametrize("layout", ["clip-filtered", "short"])
def test_ip2p_bad_rows_are_named_by_file_and_row(ip2p, layout):
    config, _, failures, _, _ = ip2p[layout]
    files = sorted((config.root / "data").glob("*.parquet"))
    offsets = dict(zip(map(str, files), np.cumsum([0] + [pq.ParquetFile(f).metadata.num_rows for f in files])))
    assert sorted(f.reason for f in failures) == sorted(IP2P_BAD.values())
    for failure in failures:
        path = Path(failure.file)
        row = int(failure.record_id.rsplit(":", 1)[1])
        assert path in files and f"row {row} " in failure.message and failure.record_id == f"data/{path.stem}:{row}"
        assert IP2P_BAD[offsets[failure.file] + row] == failure.reason  # the sample's bad rows, found where they are
        record = file_rows(path)[row]
        if failure.reason == "unreadable_image":
            assert b"html" in record["original_image" if layout == "clip-filtered" else "input_image"]["bytes"]
        elif failure.reason == "empty_instruction":
            assert not record["edit_prompt"].strip()
        else:
            assert "target 64x64" in failure.message


def test_ip2p_units_are_row_ranges_and_do_not_shape_rows(tmp_path):
    root = make_ip2p_sample(tmp_path / "ip2p", rows=10, files=2, row_group=3)
    ids = {}
    for unit_rows in (2, 4, 100):
        builder = InstructPix2PixBuilder(InstructPix2PixConfig(root=root, unit_rows=unit_rows),
                                         BuildContext(root=Path("."), out_dir=Path("x"), unit_size=7))
        units = builder.plan()
        assert all(u.payload["stop"] - u.payload["start"] <= unit_rows for u in units)
        assert len({u.key for u in units}) == len(units)
        ids[unit_rows] = [r["id"] for u in units for r in builder.build_unit(u).rows]
    assert ids[2] == ids[4] == ids[100] and len(ids[2]) == 10
    rows, _, _, _ = build(InstructPix2PixBuilder, InstructPix2PixConfig(root=root, limit=3))
    assert [r["origin"]["record_id"].rsplit(":")[1] for r in rows] == ["0", "1", "2"]


def test_parquet_is_read_one_row_group_at_a_time(tmp_path, monkeypatch):
    """A unit touches only the row groups its range covers; no whole-file read."""
    root = make_ip2p_sample(tmp_path / "ip2p", rows=12, files=1, row_group=3)
    path = next((root / "data").glob("*.parquet"))
    calls = []
    original = pq.ParquetFile.read_row_group
    monkeypatch.setattr(pq.ParquetFile, "read_row_group",
                        lambda self, i, *a, **k: calls.append(i) or original(self, i, *a, **k))
    monkeypatch.setattr(pq.ParquetFile, "read", lambda *a, **k: pytest.fail("a whole file was read"))
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: pytest.fail("a whole file was read"))
    got = [(index, group) for index, group, _ in iter_rows(path, 4, 8, ["edit_prompt"])]
    assert got == [(4, 1), (5, 1), (6, 2), (7, 2)] and calls == [1, 2]
    builder = InstructPix2PixBuilder(InstructPix2PixConfig(root=root, unit_rows=2),
                                     BuildContext(root=Path("."), out_dir=Path("x"), unit_size=2))
    units = builder.plan()  # groups of 3 rows cut into 2 + 1
    assert [(u.payload["start"], u.payload["stop"]) for u in units][:4] == [(0, 2), (2, 3), (3, 5), (5, 6)]
    calls.clear()
    assert len(builder.build_unit(units[3]).rows) == 1 and calls == [1]


def test_units_follow_row_groups():
    from ieiw.builders.importers import ParquetPart

    def part(*groups):
        return ParquetPart(Path("f.parquet"), "f", 0, groups, (), pa.schema([]))

    assert row_ranges([part(3, 3, 3, 3)], 7) == [(0, 0, 6), (0, 6, 12)]  # whole groups, packed
    assert row_ranges([part(3, 3, 3, 3)], 4) == [(0, 0, 3), (0, 3, 6), (0, 6, 9), (0, 9, 12)]
    assert row_ranges([part(2, 10, 2)], 4) == [(0, 0, 2), (0, 2, 6), (0, 6, 10), (0, 10, 12), (0, 12, 14)]
    assert row_ranges([part(3, 3), part(5)], 100, limit=7) == [(0, 0, 6), (1, 0, 1)]
    assert row_ranges([part(3, 3), part(5)], 100, limit=4) == [(0, 0, 4)]
    assert row_ranges([part(), part(0)], 4) == [] == row_ranges([], 4)


def test_ip2p_columns_are_mapped_per_file_and_checked(tmp_path):
    folder = tmp_path / "custom" / "data"
    folder.mkdir(parents=True)
    scene = np.zeros((40, 50, 3), np.uint8)
    scene[10:20, 10:30] = (200, 30, 30)
    Image.fromarray(scene).save(folder / "a.png")
    Image.fromarray(255 - scene).save(folder / "b.png")
    # plain binary columns under other names, and a struct with only a path (read next to the file)
    table = pa.table({"before": [(folder / "a.png").read_bytes()], "prompt": ["invert it"],
                      "after": [{"bytes": None, "path": "b.png"}]})
    pq.write_table(table, folder / "train-00000-of-00001.parquet")
    config = InstructPix2PixConfig(root=tmp_path / "custom", columns={"source": "before", "instruction": "prompt",
                                                                       "target": "after"})
    rows, failures, _, _ = build(InstructPix2PixBuilder, config)
    assert not failures and len(rows) == 1
    assert rows[0]["target_image"]["bytes"] == (folder / "b.png").read_bytes()
    assert params(rows[0])["source_column"] == "before" and rows[0]["origin"]["image_id"].startswith("image-")
    bad = InstructPix2PixConfig(root=tmp_path / "custom")
    with pytest.raises(ImportFormatError, match=r"train-00000-of-00001.parquet: no source column \(looked for "
                                                r"original_image, input_image; the file has before, prompt, after\)"):
        InstructPix2PixBuilder(bad, BuildContext(root=Path("."), out_dir=Path("x"), unit_size=4)).plan()
    assert "no source column" in bad.preflight()[0]
    lines = InstructPix2PixConfig(root=tmp_path / "nowhere").preflight()
    assert lines and "not found" in lines[0]
    (tmp_path / "empty").mkdir()
    lines = InstructPix2PixConfig(root=tmp_path / "empty", split="validation").preflight()
    assert "data/validation-*.parquet" in lines[0]
    assert InstructPix2PixConfig(root=tmp_path / "nowhere", samples={}).preflight() == []


# -- InstructPix2Pix, the original release (seeds.json, prompt folders or shard zips) -------------------------
def build_with_skips(config, unit_size: int = 4):
    builder = InstructPix2PixBuilder(config, BuildContext(root=Path("."), out_dir=Path("unused"), unit_size=unit_size))
    builder.prepare()
    results = [builder.build_unit(unit) for unit in builder.plan()]
    return ([row for r in results for row in r.rows], [f for r in results for f in r.failures],
            sum((r.skipped for r in results), Counter()), sum(r.records for r in results))


def official_train_names(seeds: list) -> list[str]:
    """What InstructDiffusion's FilteredIP2PDataset keeps for split train: seeds[floor(0.0 n):floor(0.9 n)]."""
    import math

    return [name for name, _ in seeds[math.floor(0.0 * len(seeds)):math.floor(0.9 * len(seeds))]]


def member_bytes(root: Path, member: str) -> bytes:
    """A member of the original release, from its folder or from whichever shard lists it."""
    import zipfile

    if (root / member).is_file():
        return (root / member).read_bytes()
    for shard in sorted(root.glob("shard-*.zip")):
        with zipfile.ZipFile(shard) as archive:
            if member in archive.namelist():
                return archive.read(member)
    raise FileNotFoundError(member)


@pytest.fixture(scope="module", params=[0, 3], ids=["folders", "zips"])
def ip2p_original(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"ip2p-original-{request.param}") / "clip-filtered-dataset"
    config = InstructPix2PixConfig(root=root, samples={"layout": "original", "rows": 12, "shards": request.param,
                                                       "bad": True})
    return (config, *build_with_skips(config))


def test_ip2p_original_reads_the_train_names_as_stored(ip2p_original):
    config, rows, failures, skipped, records = ip2p_original
    root = config.root
    assert sorted(p.name for p in root.glob("shard-*.zip")) == ([] if (root / "0000011").is_dir() else
                                                                 ["shard-00.zip", "shard-01.zip", "shard-02.zip"])
    seeds = json.loads((root / "seeds.json").read_text())
    assert len(seeds) == 11  # 6 names (12 pairs) and the 5 bad ones
    train = official_train_names(seeds)
    assert len(train) == 9 and train == [name for name, _ in seeds[:9]]  # floor(0.9 * 11): the last 2 names held out
    good = [f"{name}/{seed}" for position, (name, values) in enumerate(seeds[:9]) if position not in IP2P_ORIGINAL_BAD
            for seed in values]
    assert sorted(r["origin"]["record_id"] for r in rows) == sorted(good) and len(rows) == 7
    assert records == len(good) + len(IP2P_ORIGINAL_BAD) and not skipped
    held_out = {f"{name}/{seed}" for name, values in seeds[9:] for seed in values}
    assert held_out and not held_out & ({f.record_id for f in failures} | {r["origin"]["record_id"] for r in rows})
    for row in rows:
        name, seed = row["origin"]["record_id"].split("/")
        prompt = json.loads(member_bytes(root, f"{name}/prompt.json"))
        assert row["instruction"] == prompt["edit"] and row["instruction"].startswith("add a ")
        assert row["source_image"]["bytes"] == member_bytes(root, f"{name}/{seed}_0.jpg")  # _0 is the source
        assert row["target_image"]["bytes"] == member_bytes(root, f"{name}/{seed}_1.jpg")  # _1 the target
        assert row["origin"]["split"] == "train" and row["origin"]["dataset"] == "instructpix2pix"
        assert row["origin"]["image_id"].startswith("prompt-") and params(row)["input_prompt"] == prompt["input"]
    by_name = {}
    for row in rows:  # every seed of one prompt lands in the same train/val split
        by_name.setdefault(row["origin"]["record_id"].split("/")[0], set()).add(row["origin"]["image_id"])
    assert all(len(ids) == 1 for ids in by_name.values())
    rows_to_table(rows)


def test_ip2p_original_bad_pairs_are_named(ip2p_original):
    config, _, failures, _, _ = ip2p_original
    seeds = json.loads((config.root / "seeds.json").read_text())
    expected = []
    for position, reason in sorted(IP2P_ORIGINAL_BAD.items()):
        name, values = seeds[position]
        expected.append((reason, name if reason == "bad_record" else f"{name}/{values[0]}"))
    assert [(f.reason, f.record_id) for f in failures] == expected
    by_reason = {f.reason: f for f in failures}
    assert by_reason["bad_record"].file == str(config.root / "seeds.json")
    assert "seeds.json entry 3: an entry is [name, [seed, ...]]" in by_reason["bad_record"].message
    assert "_1.jpg is neither a file under the root nor in" in by_reason["missing_image"].message
    zipped = not (config.root / seeds[0][0]).is_dir()
    assert by_reason["unreadable_image"].file.endswith(".zip" if zipped else "_0.jpg")


def test_ip2p_original_split_is_the_official_slice_of_names(tmp_path):
    root = make_ip2p_sample(tmp_path / "ip2p", layout="original", rows=12, bad=True)
    seeds = json.loads((root / "seeds.json").read_text())
    got = {}
    for split in ("val", "test", "all"):
        rows, failures, _, _ = build_with_skips(InstructPix2PixConfig(root=root, split=split))
        got[split] = {r["origin"]["record_id"].split("/")[0] for r in rows} | {f.record_id.split("/")[0]
                                                                              for f in failures}
    names = [name for name, _ in seeds]
    assert got["val"] == {names[9]} and got["test"] == {names[10]} and got["all"] == set(names)
    for n in (1, 7, 10, 11, 19, 20, 21, 100, 313):  # the official arithmetic: floor of float shares
        import math

        assert split_bounds(n, "train", (0.9, 0.05, 0.05)) == (0, math.floor(0.9 * n))
        assert split_bounds(n, "val", (0.9, 0.05, 0.05)) == (math.floor(0.9 * n), math.floor((0.9 + 0.05) * n))
        assert split_bounds(n, "test", (0.9, 0.05, 0.05)) == (math.floor((0.9 + 0.05) * n), n)
    with pytest.raises(ImportFormatError, match="splits are train, val, test, all"):
        build_with_skips(InstructPix2PixConfig(root=root, split="validation"))
    with pytest.raises(ValueError, match="add up to 1"):
        InstructPix2PixConfig(root=root, splits=(0.9, 0.1, 0.1))


def test_ip2p_filter_list_keeps_the_listed_pairs(ip2p_original, tmp_path):
    """InstructDiffusion's list is a keep-list (np.isin(ids, filtered_ids)): a pair is built when its
    "<name>/<seed>" is on it, skipped otherwise; a listed pair outside the split or nowhere builds nothing."""
    config, rows, failures, _, _ = ip2p_original
    listed = set(json.loads((config.root / IP2P_FILTER_FILE).read_text()))
    filtered = config.model_copy(update={"filter_list": config.root / IP2P_FILTER_FILE})
    kept, kept_failures, skipped, _ = build_with_skips(filtered)
    everything = {r["origin"]["record_id"] for r in rows}
    assert {r["origin"]["record_id"] for r in kept} == everything & listed
    assert everything - listed and skipped == {"not_in_filter_list": len(everything - listed)}
    assert {r["id"] for r in kept} <= {r["id"] for r in rows}  # the same rows, fewer of them
    assert [f.record_id for f in kept_failures] == [f.record_id for f in failures]  # the bad pairs are listed
    # not a list, or no file: the build stops naming it; items that are no text match nothing
    bad = tmp_path / "filter.json"
    bad.write_text('{"0000011/1": true}')
    with pytest.raises(ImportFormatError, match="filter.json: a filter list"):
        build_with_skips(config.model_copy(update={"filter_list": bad}))
    assert "filter.json: a filter list" in config.model_copy(update={"filter_list": bad}).preflight()[0]
    assert "not found" in config.model_copy(update={"filter_list": tmp_path / "none.json"}).preflight()[0]
    bad.write_text(json.dumps([1, None, ["x"], *sorted(listed)]))
    again, _, _, _ = build_with_skips(config.model_copy(update={"filter_list": bad}))
    assert [r["id"] for r in again] == [r["id"] for r in kept]


def test_ip2p_filter_list_on_parquet_needs_name_and_seed(tmp_path):
    """The Hugging Face release has no name or seed column: a filter list cannot be matched to its rows, and the
    build says so; a Parquet export that carries them is filtered by id."""
    root = make_ip2p_sample(tmp_path / "hub", rows=4, files=1, row_group=2)
    listing = tmp_path / "keep.json"
    listing.write_text(json.dumps(["0000002/7", "0000003/8"]))
    config = InstructPix2PixConfig(root=root, filter_list=listing)
    with pytest.raises(ImportFormatError, match=r"cannot be matched to it: it has no name and seed columns"):
        build_with_skips(config)
    assert "layout: original" in config.preflight()[0]
    path = next((root / "data").glob("*.parquet"))
    table = pq.read_table(path)
    table = table.append_column("name", pa.array([f"{i:07d}" for i in range(4)]))
    table = table.append_column("seed", pa.array([5, 6, 7, 8], pa.int64()))
    pq.write_table(table, path, row_group_size=2)
    before, _, _, _ = build_with_skips(InstructPix2PixConfig(root=root))
    rows, failures, skipped, _ = build_with_skips(config)
    assert not failures and skipped == {"not_in_filter_list": 2}
    assert [r["origin"]["record_id"].rsplit(":")[1] for r in rows] == ["2", "3"]
    assert [r["id"] for r in rows] == [r["id"] for r in before[2:]]  # the rows are the unfiltered ones


def test_ip2p_original_zips_and_names(tmp_path):
    """Members are read from shard-NN.zip of the range (a name in two zips from the last, as the official
    mapping keeps it), a zip whose directory is damaged stops the build naming it, a damaged member is that
    pair's failure, and names or seeds leading out of the root read nothing."""
    import zipfile

    root = make_ip2p_sample(tmp_path / "ip2p", layout="original", rows=6, shards=2)
    seeds = json.loads((root / "seeds.json").read_text())
    rows, failures, _, _ = build_with_skips(InstructPix2PixConfig(root=root, split="all"))
    assert not failures and len(rows) == 6
    only_first, failures, _, _ = build_with_skips(InstructPix2PixConfig(root=root, split="all", shards=(0, 1)))
    assert {f.reason for f in failures} == {"missing_prompt"} and len(only_first) == 4  # names 0, 2: shard-00
    name, values = seeds[0]
    replacement = (tmp_path / "other.jpg")
    Image.fromarray(np.full((128, 128, 3), 90, np.uint8)).save(replacement, format="JPEG")
    with zipfile.ZipFile(root / "shard-07.zip", "w") as archive:
        archive.write(replacement, f"{name}/{values[0]}_1.jpg")
    later, _, _, _ = build_with_skips(InstructPix2PixConfig(root=root, split="all", shards=(0, 8)))
    first = next(r for r in later if r["origin"]["record_id"] == f"{name}/{values[0]}")
    assert first["target_image"]["bytes"] == replacement.read_bytes()
    (root / "shard-07.zip").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(ImportFormatError, match="shard-07.zip: not a readable zip"):
        build_with_skips(InstructPix2PixConfig(root=root, split="all", shards=(0, 8)))
    (root / "shard-07.zip").unlink()
    data = bytearray((root / "shard-00.zip").read_bytes())
    with zipfile.ZipFile(root / "shard-00.zip") as archive:
        info = archive.getinfo(f"{name}/{values[0]}_0.jpg")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 20
    data[start:start + 8] = b"\x00" * 8  # inside the compressed bytes: the CRC no longer matches
    (root / "shard-00.zip").write_bytes(bytes(data))
    rows, failures, _, _ = build_with_skips(InstructPix2PixConfig(root=root, split="all"))
    assert [(f.reason, f.record_id, f.file) for f in failures] == [
        ("unreadable_image", f"{name}/{values[0]}", str(root / "shard-00.zip"))]
    planted, data = plant_outside(tmp_path / "outside")
    (root / "linked").symlink_to(planted.parent)  # a prompt folder that is a symlink out of the root
    crafted = [["../outside", ["1"]], [str(tmp_path / "outside"), ["1"]], ["linked", ["1"]], [name, ["../../x"]],
               seeds[1], seeds[1], [name, [3.5, True, None, ""]]]
    (root / "seeds.json").write_text(json.dumps(crafted))
    rows, failures, _, _ = build_with_skips(InstructPix2PixConfig(root=root, split="all"))
    assert [r["origin"]["record_id"] for r in rows] == [f"{seeds[1][0]}/{s}" for s in seeds[1][1]]
    assert [f.reason for f in failures] == (["path_outside_root"] * 4 + ["duplicate_record"] * len(seeds[1][1])
                                            + ["bad_record"] * 4)
    assert_not_carried(rows, planted, data)


def test_ip2p_layout_is_chosen_by_seeds_json(tmp_path):
    root = make_ip2p_sample(tmp_path / "ip2p", layout="original", rows=3)
    assert InstructPix2PixConfig(root=root).resolved_layout() == "original"
    assert InstructPix2PixConfig(root=make_ip2p_sample(tmp_path / "hub", rows=2)).resolved_layout() == "parquet"
    assert InstructPix2PixConfig(root=tmp_path / "new", samples={"layout": "original"}).resolved_layout() == "original"
    lines = InstructPix2PixConfig(root=root, layout="parquet").preflight()
    assert "no Parquet file of split 'train'" in lines[0]
    (tmp_path / "empty").mkdir()
    lines = InstructPix2PixConfig(root=tmp_path / "empty", layout="original").preflight()
    assert "seeds.json: not found" in lines[0] and "original release" in lines[0]
    with pytest.raises(ValueError, match="the original layout's splits"):
        InstructPix2PixConfig(root=root, layout="original", split="validation")


# -- MagicBrush -------------------------------------------------------------------------------------
def test_magicbrush_reads_its_sample_with_masks(magicbrush):
    _, rows, failures, counters, records = magicbrush["train"]
    dev = magicbrush["dev"][1]
    assert len(dev) == 1 + 3 % 3 and {r["origin"]["split"] for r in dev} == {"dev"}
    assert records == len(rows) + 4 and len(failures) == 4
    by_id = {r["origin"]["record_id"]: r for r in rows}
    assert len(by_id) == len(rows)
    sessions = Counter(r["origin"]["image_id"] for r in rows)
    assert sorted(sessions.values()) == [1, 2, 2, 3, 3]  # session s has 1 + s % 3 turns; session 3 is dev
    resized = 0
    for row in rows:
        img_id, turn = row["origin"]["record_id"].split(":")
        assert row["origin"]["image_id"] == img_id and row["origin"]["dataset"] == "magicbrush"
        assert row["origin"]["license"].startswith("CC BY 4.0")
        if int(turn) > 1:  # a later turn starts from the earlier turn's target, byte for byte
            assert row["source_image"]["bytes"] == by_id[f"{img_id}:{int(turn) - 1}"]["target_image"]["bytes"]
        source, target = pixels(row["source_image"]), pixels(row["target_image"])
        mask = decode_mask(row["mask"]["bytes"]).astype(bool)
        assert mask.shape == source.shape[:2]
        changed = (source != target).any(axis=2)
        assert changed.any() and not (changed & ~mask).any()  # the edit lies inside the erased region
        assert changed.sum() > 0.15 * mask.sum()  # and fills a good part of it (a triangle: 40% of its disc)
        resized += "mask_resized_from" in params(row)
        assert params(row)["mask"] == "alpha" and row["source_image"]["path"].endswith(".png")
    assert resized == 2 and counters["mask_alpha"] == len(rows)  # session 1: two turns, masks at 2x
    rows_to_table(rows + dev)


def test_magicbrush_bad_rows_are_named(magicbrush):
    config, _, failures, _, _ = magicbrush["train"]
    first = min((config.root / "data").glob("train-*.parquet"))
    by_reason = {f.reason: f for f in failures}
    assert set(by_reason) == {"unreadable_image", "empty_instruction", "size_mismatch", "duplicate_record"}
    assert all(f.file == str(first) for f in failures)
    total = pq.ParquetFile(first).metadata.num_rows
    rows = {f.reason: int(f.message.split(" ", 2)[1]) for f in failures}
    assert sorted(rows.values()) == list(range(total - 4, total))
    unreadable = by_reason["unreadable_image"]
    assert unreadable.record_id == "900001:1" and "target_img" in unreadable.message
    assert "target 144x128" in by_reason["size_mismatch"].message
    duplicate = by_reason["duplicate_record"]
    assert f"is also row 0 of data/{first.stem}" in duplicate.message


def test_magicbrush_mask_forms():
    def png(array, mode):
        from io import BytesIO
        buffer = BytesIO()
        Image.fromarray(array, mode).save(buffer, format="PNG")
        return buffer.getvalue()

    rgba = np.full((20, 30, 4), 255, np.uint8)
    rgba[5:10, 5:15, 3] = 0
    region, info = region_of(png(rgba, "RGBA"), (30, 20))
    assert info["mask"] == "alpha" and region.sum() == 50 and region[5:10, 5:15].all()
    region, info = region_of(png(rgba, "RGBA"), (60, 40))  # a mask at another size: resized, nearest
    assert info["mask_resized_from"] == [30, 20] and region.shape == (40, 60) and region.sum() == 200
    grey = np.zeros((20, 30), np.uint8)
    grey[:4] = 255
    region, info = region_of(png(grey, "L"), (30, 20))
    assert info["mask"] == "white" and region.sum() == 120
    colour = np.zeros((20, 30, 3), np.uint8)
    colour[..., 0] = 90
    assert region_of(png(colour, "RGB"), (30, 20)) == (None, {"mask": "unusable", "mask_mode": "RGB"})
    opaque = np.full((20, 30, 4), 255, np.uint8)
    assert region_of(png(opaque, "RGBA"), (30, 20))[1]["mask"] == "empty"
    with pytest.raises(ValueError, match="cannot decode"):
        region_of(b"not a png", (30, 20))


# -- GIER ---------------------------------------------------------------------------------------------
def test_gier_reads_its_sample(gier):
    config, rows, failures, counters, records = gier
    pairs = json.loads((config.root / "GIER.json").read_text())
    urls = json.loads((config.root / "url_dict.json").read_text())
    assert records == len(pairs) == 12 and len(rows) == 8 and len(failures) == 4
    assert counters["size_differs"] == 1
    folders = Counter()
    for row in rows:
        p = params(row)
        pair = pairs[p["pair"]]
        assert row["origin"]["record_id"] == Path(pair["output"]).stem
        assert row["origin"]["image_id"] == Path(pair["input"]).stem
        assert row["origin"]["url"] == urls[pair["input"]] and row["origin"]["edit_url"] == urls[pair["output"]]
        assert row["instruction"] in pair["expert_summary"] + pair["amateur_summary"]
        assert row["source_image"]["bytes"] == (config.root / "images" / pair["input"]).read_bytes()
        assert row["target_image"]["bytes"] == (config.root / p["output_folder"] / pair["output"]).read_bytes()
        assert p["operators"] == sorted(pair["operator"]) and p["gier_dataset"] == pair["dataset"]
        folders[p["output_folder"]] += 1
        source, target = pixels(row["source_image"]), pixels(row["target_image"])
        if "target_size" in p:  # an edit that changed the size: kept, the trainer fits it to the source
            assert p["target_size"] == [target.shape[1], target.shape[0]] != [row["width"], row["height"]]
        else:
            assert source.shape == target.shape and np.abs(source.astype(int) - target.astype(int)).mean() > 1
    assert folders == {"images": 7, "warped": 1}
    rows_to_table(rows)


def test_gier_bad_pairs_are_named(gier):
    config, _, failures, _, _ = gier
    assert [f.reason for f in failures] == ["missing_image", "unreadable_image", "empty_instruction",
                                            "duplicate_record"]
    missing, unreadable, empty, duplicate = failures
    assert "pair 8: output" in missing.message and str(config.root / "warped") in missing.message
    assert str(config.root / "images") in missing.message
    assert unreadable.file.endswith("_" + Path(unreadable.file).stem.split("_")[0] + ".jpg")
    assert "pair 9: input" in unreadable.message
    assert empty.file == str(config.root / "GIER.json") and "pair 10" in empty.message
    assert "pair 11" in duplicate.message and "is also pair 0's" in duplicate.message


def test_gier_instruction_choice_and_prompts_variant(gier, tmp_path):
    config, rows, _, _, _ = gier
    everything, _, _, _ = build(GierBuilder, GierConfig(root=config.root, instructions="all"))
    pairs = json.loads((config.root / "GIER.json").read_text())
    assert len(everything) == sum(len(instructions_of(p)[0]) for p in pairs[:8]) == 24
    assert len({r["id"] for r in everything}) == 24
    assert {r["id"] for r in rows} <= {r["id"] for r in everything}  # the one kept is one of all
    again, _, _, _ = build(GierBuilder, GierConfig(root=config.root), unit_size=3)
    assert [r["id"] for r in again] == [r["id"] for r in rows]
    other_seed, _, _, _ = build(GierBuilder, GierConfig(root=config.root, seed=5))
    assert [r["instruction"] for r in other_seed] != [r["instruction"] for r in rows]
    # InstructDiffusion's GIER_new.json: `prompts` instead of the summaries
    root = tmp_path / "GIER_editing_data"
    shutil.copytree(config.root / "images", root / "images")
    shutil.copytree(config.root / "warped", root / "warped")
    (root / "GIER_new.json").write_text(json.dumps([{"input": p["input"], "output": p["output"],
                                                      "prompts": [f"do edit {i}", f"  do\nedit {i} "]}
                                                     for i, p in enumerate(pairs[:8])]))
    rows2, failures2, _, _ = build(GierBuilder, GierConfig(root=root, instructions="all"))
    assert not failures2 and [r["instruction"] for r in rows2] == [f"do edit {i}" for i in range(8)]
    assert {params(r)["instruction_field"] for r in rows2} == {"prompts"} and rows2[0]["origin"]["url"] is None
    assert instructions_of({"request": " make it pop "}) == (["make it pop"], "request")
    (root / "GIER_new.json").write_text(json.dumps([{"input": "../../GIER.json", "output": "x.jpg", "prompts": ["a"]},
                                                     ["not", "a", "pair"]]))
    _, failures3, _, _ = build(GierBuilder, GierConfig(root=root))
    assert [f.reason for f in failures3] == ["bad_record", "bad_record"]
    assert "is not a name under" in failures3[0].message  # nothing outside the image folders is read
    (tmp_path / "nothing").mkdir()
    lines = GierConfig(root=tmp_path / "nothing").preflight()
    assert "no pairs file (looked for GIER.json, GIER_new.json, IER2.json)" in lines[0]
    (tmp_path / "nothing" / "GIER.json").write_text('{"input": "a"}')
    assert "a GIER pairs file is a JSON list" in GierConfig(root=tmp_path / "nothing").preflight()[0]


# -- names that lead out of the dataset (docs/formats.md, "Names that become paths") ------------------
def test_ip2p_image_cell_paths_outside_the_parquet_folder_are_failures(tmp_path):
    """An image cell with null bytes is read from its ``path`` under the Parquet file's folder; a path of ../x,
    /x, or one symlinked out of the folder is a ``path_outside_root`` failure naming the file and row."""
    folder = tmp_path / "custom" / "data"
    folder.mkdir(parents=True)
    planted, data = plant_outside(tmp_path / "elsewhere", (50, 40))
    scene = np.zeros((40, 50, 3), np.uint8)
    scene[10:20, 10:30] = (200, 30, 30)
    Image.fromarray(scene).save(folder / "a.png")
    Image.fromarray(255 - scene).save(folder / "b.png")
    (folder / "linked.png").symlink_to(planted)
    names = ["b.png", os.path.relpath(planted, folder), str(planted), "linked.png"]
    table = pa.table({"before": [(folder / "a.png").read_bytes()] * 4, "prompt": ["invert it"] * 4,
                      "after": [{"bytes": None, "path": name} for name in names]})
    parquet = folder / "train-00000-of-00001.parquet"
    pq.write_table(table, parquet)
    config = InstructPix2PixConfig(root=tmp_path / "custom", columns={"source": "before", "instruction": "prompt",
                                                                       "target": "after"})
    rows, failures, _, records = build(InstructPix2PixBuilder, config)
    assert records == 4 and len(rows) == 1 and rows[0]["target_image"]["bytes"] == (folder / "b.png").read_bytes()
    assert [(f.reason, f.record_id, f.file) for f in failures] == [
        ("path_outside_root", f"data/{parquet.stem}:{i}", str(parquet)) for i in (1, 2, 3)]
    assert all(f"row {i} " in f.message and "column after" in f.message for i, f in zip((1, 2, 3), failures))
    assert_not_carried(rows, planted, data)


def test_magicbrush_mask_cell_paths_outside_the_parquet_folder_are_failures(tmp_path):
    folder = tmp_path / "MagicBrush" / "data"
    folder.mkdir(parents=True)
    scene = np.zeros((40, 50, 3), np.uint8)
    scene[10:20, 10:30] = (200, 30, 30)
    mask = np.zeros((40, 50), np.uint8)
    mask[10:20, 10:30] = 255
    Image.fromarray(mask, "L").save(folder / "m.png")
    (tmp_path / "elsewhere").mkdir()
    outside = tmp_path / "elsewhere" / "mask.png"
    Image.fromarray(mask, "L").save(outside)
    (folder / "linked.png").symlink_to(outside)
    names = ["m.png", os.path.relpath(outside, folder), str(outside), "linked.png"]
    image = {"bytes": encode(scene, "png"), "path": None}
    table = pa.table({"img_id": [1, 2, 3, 4], "turn_index": [1] * 4, "source_img": [image] * 4,
                      "mask_img": [{"bytes": None, "path": name} for name in names],
                      "instruction": ["make it blue"] * 4,
                      "target_img": [{"bytes": encode(255 - scene, "png"), "path": None}] * 4})
    parquet = folder / "train-00000-of-00001.parquet"
    pq.write_table(table, parquet)
    rows, failures, counters, _ = build(MagicBrushBuilder, MagicBrushConfig(root=tmp_path / "MagicBrush"))
    assert [r["origin"]["record_id"] for r in rows] == ["1:1"] and counters["mask_white"] == 1
    assert [(f.reason, f.record_id, f.file) for f in failures] == [
        ("path_outside_root", f"{i}:1", str(parquet)) for i in (2, 3, 4)]
    assert all("column mask_img" in f.message for f in failures)


def test_gier_names_outside_the_image_folders_are_failures(tmp_path):
    """GIER keeps its own reason, ``bad_record``, for a name that is no path under the image folders: ../x,
    /x (besides test_gier_instruction_choice_and_prompts_variant's ../../GIER.json) and a symlink out."""
    root = tmp_path / "GIER_editing_data"
    (root / "images").mkdir(parents=True)
    planted, data = plant_outside(tmp_path / "elsewhere", (64, 48))
    rng = np.random.default_rng(0)
    for name in ("p_p.jpg", "p_e1.jpg", "p_e2.jpg", "p_e3.jpg"):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(root / "images" / name)
    (root / "images" / "linked.jpg").symlink_to(planted)
    pairs = [{"input": "p_p.jpg", "output": "p_e1.jpg", "request": "brighten it"},
             {"input": str(planted), "output": "p_e2.jpg", "request": "brighten it"},
             {"input": "linked.jpg", "output": "p_e3.jpg", "request": "brighten it"},
             {"input": "p_p.jpg", "output": os.path.relpath(planted, root / "images"), "request": "brighten it"}]
    (root / "GIER.json").write_text(json.dumps(pairs))
    rows, failures, _, _ = build(GierBuilder, GierConfig(root=root))
    assert [r["origin"]["record_id"] for r in rows] == ["p_e1"]
    assert [(f.reason, f.record_id, f.file) for f in failures] == [
        ("bad_record", "p_e2", str(root / "GIER.json")), ("bad_record", "p_e3", str(root / "GIER.json")),
        ("bad_record", PLANTED, str(root / "GIER.json"))]
    assert all("is not a name under warped, images" in f.message for f in failures)
    assert_not_carried(rows, planted, data)


# -- all three --------------------------------------------------------------------------------------
def test_samples_are_deterministic_and_made_once(tmp_path):
    makers = [(make_ip2p_sample, {"rows": 7, "bad": True}), (make_ip2p_sample, {"layout": "short", "rows": 3}),
              (make_ip2p_sample, {"layout": "original", "rows": 5, "bad": True}),
              (make_ip2p_sample, {"layout": "original", "rows": 5, "shards": 2}),
              (make_magicbrush_sample, {"sessions": 4, "bad": True}), (make_gier_sample, {"pairs": 5, "bad": True})]
    for index, (make, kwargs) in enumerate(makers):
        a = make(tmp_path / "a" / str(index), **kwargs)
        b = make(tmp_path / "b" / str(index), **kwargs)
        files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
        assert files and files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
        assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    for ensure in (ensure_ip2p_sample, ensure_magicbrush_sample, ensure_gier_sample):
        assert ensure(tmp_path / "c" / ensure.__name__) is True
        assert ensure(tmp_path / "c" / ensure.__name__) is False
    assert not [p for p in (tmp_path / "c").iterdir() if p.name.startswith(".tmp-")]


def test_the_trainer_consumes_the_rows(ip2p, magicbrush, gier, tmp_path):
    """Shards of the imported rows, read back by the trainer's own index and dataset: decoded, resized,
    paired, with the instruction."""
    from torch.utils.data import DataLoader

    from ieiw.training.data import ShardPairs, index_shards

    manifest = Manifest(tmp_path, "pairs", {"unit_rows": "test"})
    expected = {}
    for name, rows in (("instructpix2pix", ip2p["clip-filtered"][1]), ("magicbrush", magicbrush["train"][1]),
                       ("gier", gier[1])):
        shard = write_shard(rows_to_table(rows), tmp_path / f"{name}-00000.parquet", row_group_size=4)
        manifest.record(f"{name}-00000", shard, fingerprint="f", stats={"rows": len(rows)})
        expected.update({r["id"]: r["instruction"] for r in rows})
    groups = index_shards(tmp_path, include_tasks=["edit"])
    assert sum(len(g.rows) for g in groups) == len(expected)
    dataset = ShardPairs(groups, resolution=64, epochs=1, shuffle_buffer=8, seed=1)
    samples = list(DataLoader(dataset, batch_size=None, num_workers=0))
    assert sorted(s["id"] for s in samples) == sorted(expected)
    for sample in samples:
        assert sample["instruction"] == expected[sample["id"]]
        assert sample["source"].shape == sample["target"].shape == (3, 64, 64)
        assert sample["source"].dtype == sample["target"].dtype and sample["source"].dtype.is_floating_point is False
    weighted = ShardPairs(index_shards(tmp_path), epochs=1, decode=False, source_weights={"gier": 2.0})
    counts = Counter(s["id"] for s in weighted)
    assert all(counts[r["id"]] == 2 for r in gier[1])


@pytest.mark.slow
def test_build_through_the_real_flow(tmp_path):
    config = tmp_path / "build.yaml"
    config.write_text(yaml.safe_dump({
        "name": "importers-test",
        "out_dir": str(tmp_path / "out"),
        "unit_size": 4,
        "workers": 2,
        "instructpix2pix": {"root": str(tmp_path / "instructpix2pix"), "samples": {"rows": 8, "bad": True}},
        "magicbrush": {"root": str(tmp_path / "MagicBrush"), "samples": {"sessions": 4}},
        "gier": {"root": str(tmp_path / "GIER_editing_data"), "samples": {"pairs": 4}},
        "selection": {"min_target_aesthetic": 1.0, "max_aesthetic_gap": 9.0},
    }))
    run_ieiw("build", config)
    candidates = tmp_path / "out" / "candidates"
    manifest = load_manifest(candidates)
    prefixes = Counter(key.rsplit("-", 1)[0] for key in manifest["units"])
    assert prefixes == {"instructpix2pix-train": 2, "magicbrush-train": 2, "gier": 1}
    rows = [r for entry in manifest["units"].values()
            for r in pq.read_table(candidates / entry["shard"], columns=["task", "origin", "instruction"]).to_pylist()]
    by_dataset = Counter(r["origin"]["dataset"] for r in rows)
    assert by_dataset == {"instructpix2pix": 5, "magicbrush": 6, "gier": 4}  # 8 - 3 bad; 1 + 2 + 3 turns (train)
    assert {r["task"] for r in rows} == {"edit"} and all(r["instruction"] for r in rows)
    failures = [f for e in manifest["units"].values() for f in e["stats"]["failure_messages"]]
    assert len(failures) == 3 and all(".parquet: record data/train-0000" in f and ": row " in f for f in failures)
    assert {f.split(": ")[2] for f in failures} == set(IP2P_BAD.values())
    # selection keeps every imported row (IEIW's quality rules are not theirs) in out/editing, beside
    # out/ieiw, and that folder feeds the trainer as it is
    from ieiw.training.data import ShardPairs, index_shards

    assert not list((tmp_path / "out" / "ieiw").glob("*.parquet")) or not index_shards(
        tmp_path / "out" / "ieiw", include_tasks=["edit"])
    kept = index_shards(tmp_path / "out" / "editing")
    assert sum(len(g.rows) for g in kept) == len(rows)
    samples = list(ShardPairs(kept, resolution=32, epochs=1, shuffle_buffer=1))
    assert samples and {s["source"].shape for s in samples} == {(3, 32, 32)}
    shutil.rmtree(tmp_path / "out")


# -- hostile inputs the fuzz found (tests/fuzz/test_fuzz_importers.py); each failed on the code before ------------
def _with_raw_text(path: Path, column: str, row: int, raw: bytes) -> None:
    """Rewrite ``path`` with ``raw`` (bytes that are not UTF-8) in a string cell: Parquet writers do not check."""
    handle = pq.ParquetFile(path)
    table = handle.read()
    values = [v.encode() if v is not None else None for v in table.column(column).to_pylist()]
    values[row] = raw
    index = table.column_names.index(column)
    table = table.set_column(index, column, pa.array(values, pa.binary()).view(pa.string()))
    pq.write_table(table, path, row_group_size=handle.metadata.row_group(0).num_rows)


def test_ip2p_text_that_is_not_utf8_is_that_rows_trouble(tmp_path):
    """A string cell holding bytes that are not UTF-8 made pyarrow's to_pylist raise for the whole row group,
    out of build_unit; now the row builds with U+FFFD where the bytes were, the others as before."""
    root = make_ip2p_sample(tmp_path / "ip2p", rows=4, files=1, row_group=2, width=48, height=32)
    path = next((root / "data").glob("*.parquet"))
    before, _, _, _ = build(InstructPix2PixBuilder, InstructPix2PixConfig(root=root))
    _with_raw_text(path, "edit_prompt", 1, b"add a \xff\xfe red circle")
    rows, failures, _, _ = build(InstructPix2PixBuilder, InstructPix2PixConfig(root=root))
    assert not failures and len(rows) == 4
    assert rows[1]["instruction"] == "add a \ufffd\ufffd red circle"
    assert [r["id"] for i, r in enumerate(rows) if i != 1] == [r["id"] for i, r in enumerate(before) if i != 1]
    rows_to_table(rows)


def test_a_damaged_row_group_fails_its_rows_only(tmp_path):
    """A data page pyarrow cannot read raised out of build_unit (the whole unit lost); now each row of that row
    group is an ``unreadable_row_group`` failure naming the file and row, and the other groups build."""
    root = make_ip2p_sample(tmp_path / "ip2p", rows=4, files=1, row_group=2, width=48, height=32)
    path = next((root / "data").glob("*.parquet"))
    meta = pq.ParquetFile(path).metadata
    column = [meta.row_group(0).column(i).path_in_schema for i in range(meta.num_columns)].index("edit_prompt")
    offset = meta.row_group(0).column(column).data_page_offset
    data = bytearray(path.read_bytes())
    data[offset:offset + 8] = b"\xff" * 8
    path.write_bytes(bytes(data))
    rows, failures, _, records = build(InstructPix2PixBuilder, InstructPix2PixConfig(root=root), unit_size=4)
    name = f"data/{path.stem}"
    assert records == 4 and [r["origin"]["record_id"] for r in rows] == [f"{name}:2", f"{name}:3"]
    assert [(f.reason, f.record_id, f.file) for f in failures] == [
        ("unreadable_row_group", f"{name}:{i}", str(path)) for i in (0, 1)]
    assert all(f.message.startswith(f"row {i} (row group 0): ") for i, f in zip((0, 1), failures))


def test_a_column_name_that_is_not_utf8_is_named_by_file(tmp_path):
    """A footer whose column name is not UTF-8 raised a bare UnicodeDecodeError from plan(); now the file's
    ImportFormatError."""
    root = make_ip2p_sample(tmp_path / "ip2p", rows=2, files=1, row_group=2, width=48, height=32)
    path = next((root / "data").glob("*.parquet"))
    path.write_bytes(path.read_bytes().replace(b"edited_prompt", b"edited_promp\xff"))
    builder = InstructPix2PixBuilder(InstructPix2PixConfig(root=root),
                                     BuildContext(root=Path("."), out_dir=Path("unused"), unit_size=4))
    with pytest.raises(ImportFormatError, match=path.name):
        builder.plan()


def test_a_footer_claiming_rows_it_cannot_hold_is_refused(tmp_path):
    """Seven bytes of 0x80 over a row group's row count made the footer claim 3.6e16 rows: planning units from
    it would never end. Now a footer whose counts disagree (or claim more rows than its file can hold) is the
    file's ImportFormatError, before any unit is planned."""
    root = make_ip2p_sample(tmp_path / "ip2p", rows=6, files=1, row_group=2, width=48, height=32)
    path = next((root / "data").glob("*.parquet"))
    data = path.read_bytes()
    damaged = tmp_path / "damaged.parquet"
    footer = range(len(data) - 8 - int.from_bytes(data[-8:-4], "little"), len(data) - 8)
    for at in [at + 1 for at in footer if data[at] == 0x16]:  # after a compact-thrift i64 field header
        damaged.write_bytes(data[:at] + b"\x80" * 7 + data[at + 7:])
        try:
            meta = pq.ParquetFile(damaged).metadata
            counts = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
        except (OSError, ValueError):
            continue
        if max(counts) > 10**9:
            break
    else:
        pytest.fail("no damage of the footer claims a huge row group")
    with pytest.raises(ImportFormatError, match=f"{damaged.name}: a damaged footer"):
        parquet_parts([damaged], tmp_path)


def test_a_value_python_cannot_hold_is_that_rows_trouble(tmp_path):
    """A timestamp past year 9999 made to_pylist raise OverflowError out of build_unit; now the cell is null
    (here an optional column: the row builds without it) and the other rows are as they were."""
    root = make_ip2p_sample(tmp_path / "ip2p", rows=3, files=1, row_group=3, width=48, height=32)
    path = next((root / "data").glob("*.parquet"))
    before, _, _, _ = build(InstructPix2PixBuilder, InstructPix2PixConfig(root=root))
    table = pq.read_table(path)
    far = pa.array([0, 0, 2**62], pa.int64()).cast(pa.timestamp("us"))
    pq.write_table(table.set_column(table.column_names.index("edited_prompt"), "edited_prompt", far), path)
    rows, failures, _, _ = build(InstructPix2PixBuilder, InstructPix2PixConfig(root=root))
    assert not failures and [r["id"] for r in rows] == [r["id"] for r in before]
    assert params(rows[2])["output_prompt"] is None
    rows_to_table(rows)


def _magicbrush_table(img_ids: pa.Array, turns: pa.Array, masks: pa.Array | None = None) -> pa.Table:
    """Three MagicBrush rows of one 48x32 scene, with the key columns (and the mask column) given."""
    scene = np.zeros((32, 48, 3), np.uint8)
    scene[5:20, 5:30] = (200, 30, 30)
    image = {"bytes": encode(scene, "png"), "path": None}
    return pa.table({"img_id": img_ids, "turn_index": turns, "source_img": [image] * 3,
                     "mask_img": masks if masks is not None else [None] * 3, "instruction": ["make it blue"] * 3,
                     "target_img": [{"bytes": encode(255 - scene, "png"), "path": None}] * 3})


def _build_magicbrush(tmp_path: Path, table: pa.Table):
    folder = tmp_path / "MagicBrush" / "data"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / "train-00000-of-00001.parquet")
    return build(MagicBrushBuilder, MagicBrushConfig(root=tmp_path / "MagicBrush"))


def test_magicbrush_an_img_id_that_is_not_utf8(tmp_path):
    """The key scan raised UnicodeDecodeError out of build_unit; now the row builds, U+FFFD in its ids."""
    ids = pa.array([b"7", b"8\xff", b"9"], pa.binary()).view(pa.string())
    rows, failures, _, _ = _build_magicbrush(tmp_path, _magicbrush_table(ids, pa.array([1, 1, 1], pa.int32())))
    assert not failures and [r["origin"]["record_id"] for r in rows] == ["7:1", "8\ufffd:1", "9:1"]
    assert rows[1]["origin"]["image_id"] == "8\ufffd"
    rows_to_table(rows)


def test_magicbrush_a_mask_column_of_plain_strings(tmp_path):
    """A mask column of path strings (no struct) raised TypeError out of build_unit; now ``unreadable_mask``."""
    table = _magicbrush_table(pa.array(["7", "8", "9"]), pa.array([1, 1, 1], pa.int32()), pa.array(["m.png"] * 3))
    rows, failures, _, records = _build_magicbrush(tmp_path, table)
    assert records == 3 and not rows
    assert [(f.reason, f.record_id) for f in failures] == [("unreadable_mask", f"{i}:1") for i in (7, 8, 9)]


def test_magicbrush_a_float_turn_column_gives_the_integer_columns_rows(tmp_path):
    """pandas writes an integer column holding a null as float64: record ids became ``7:1.0``; now a whole
    float is its integer, so the rows are those of an int column (the null is still ``missing_id``)."""
    ids = pa.array(["7", "8", "9"])
    floats, _, _, _ = _build_magicbrush(tmp_path / "a", _magicbrush_table(ids, pa.array([1.0, 2.0, None])))
    ints, failures, _, _ = _build_magicbrush(tmp_path / "b", _magicbrush_table(ids, pa.array([1, 2, None])))
    assert [r["origin"]["record_id"] for r in floats] == ["7:1", "8:2"] and len(failures) == 1
    assert [r["id"] for r in floats] == [r["id"] for r in ints]
    assert params(floats[0])["turn_index"] == 1


def _gier_with(tmp_path: Path, **changes):
    """The GIER sample (two pairs) plus a third pair: pair 0 with ``changes``."""
    root = make_gier_sample(tmp_path / "gier", pairs=2, width=48, height=32)
    pairs = json.loads((root / "GIER.json").read_text())
    (root / "GIER.json").write_text(json.dumps([*pairs, dict(pairs[0], **changes)]))
    return root, pairs


def test_gier_an_image_name_with_a_lone_surrogate(tmp_path):
    """path_under raised UnicodeEncodeError (``\\ud800`` is no file name); now the pair is ``bad_record``."""
    root, _ = _gier_with(tmp_path, input="\ud800.jpg", output="x_1.jpg")
    rows, failures, _, _ = build(GierBuilder, GierConfig(root=root))
    assert len(rows) == 2 and [(f.reason, f.record_id) for f in failures] == [("bad_record", "x_1")]
    assert "cannot be encoded as a file name" in failures[0].message


def test_gier_an_image_name_too_long_for_the_file_system(tmp_path):
    """is_file raised OSError (ENAMETOOLONG) out of build_unit; now ``missing_image``, the name cut short."""
    root, _ = _gier_with(tmp_path, input="a" * 5000, output="x_2.jpg")
    rows, failures, _, _ = build(GierBuilder, GierConfig(root=root))
    assert len(rows) == 2 and [(f.reason, f.record_id) for f in failures] == [("missing_image", "x_2")]
    assert len(failures[0].message) < 1500


def test_gier_an_output_without_a_stem_still_names_its_record(tmp_path):
    """An output of ``\\`` (or ``.``) gave the record id ``""``: a failure naming no record; now the pair's index."""
    root, _ = _gier_with(tmp_path, output="\\")
    _, failures, _, _ = build(GierBuilder, GierConfig(root=root))
    assert [(f.reason, f.record_id) for f in failures] == [("bad_record", "2")]


def test_gier_lone_surrogates_in_an_instruction_and_a_url(tmp_path):
    """Valid JSON (``"\\ud800"``) in an instruction or url_dict.json made rows Arrow cannot write (the whole
    shard failed); now U+FFFD stands in."""
    root = make_gier_sample(tmp_path / "gier", pairs=2, width=48, height=32)
    pairs = json.loads((root / "GIER.json").read_text())
    urls = json.loads((root / "url_dict.json").read_text())
    urls[pairs[0]["input"]] = "https://example.invalid/\ud800"
    (root / "url_dict.json").write_text(json.dumps(urls))
    pairs[0] = dict(pairs[0], expert_summary=["brighten \ud800 it"], amateur_summary=[])
    (root / "GIER.json").write_text(json.dumps(pairs))
    rows, failures, _, _ = build(GierBuilder, GierConfig(root=root))
    assert not failures and rows[0]["instruction"] == "brighten \ufffd it"
    assert rows[0]["origin"]["url"] == "https://example.invalid/\ufffd"
    rows_to_table(rows)
