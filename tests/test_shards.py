"""Atomic shard writes, the manifest, resume bookkeeping and `ieiw verify`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from ieiw_testing import run_ieiw

from ieiw.schemas import shards, storage
from ieiw.schemas.manifest import LayoutChanged, Manifest, ManifestError, load_manifest, verify_folder
from ieiw.schemas.rows import SCHEMA_VERSION, SCHEMA_VERSION_KEY, image_cell, row_id, rows_to_table


def pair_row(index: int, task: str = "remove") -> dict:
    rid = row_id("phrasecut", f"1__{index}", "removal", {"dilation": 5}, task)
    return {
        "id": rid,
        "task": task,
        "instruction": f"remove the thing {index}",
        "source_image": image_cell(b"\xff\xd8\xff source %d" % index, "s.jpg"),
        "target_image": image_cell(b"\xff\xd8\xff target %d" % index, "t.jpg"),
        "mask": None,
        "width": 8,
        "height": 8,
        "origin": {"dataset": "phrasecut", "record_id": f"1__{index}"},
        "exemplar": None,
        "scores": None,
        "builder": {"name": "removal", "backend": "opencv-telea", "embedded": True, "seed": 0, "params": "{}"},
    }


def test_row_ids_are_deterministic_and_depend_on_every_part():
    base = row_id("phrasecut", "1__2", "removal", {"dilation": 5}, "remove")
    assert base == row_id("phrasecut", "1__2", "removal", {"dilation": 5}, "remove")
    variants = {
        row_id("phrasecut", "1__3", "removal", {"dilation": 5}, "remove"),
        row_id("phrasecut", "1__2", "removal", {"dilation": 7}, "remove"),
        row_id("phrasecut", "1__2", "removal", {"dilation": 5}, "add"),
        row_id("sa1b", "1__2", "removal", {"dilation": 5}, "remove"),
    }
    assert base not in variants and len(variants) == 4


def test_rows_to_table_rejects_unknown_task_and_missing_required_field():
    with pytest.raises(ValueError, match="task 'explode'"):
        rows_to_table([pair_row(0, task="explode")])
    broken = pair_row(1)
    broken["builder"] = None
    with pytest.raises(ValueError, match="required column 'builder' is null"):
        rows_to_table([broken])


def test_a_row_arrow_cannot_hold_fails_its_record_not_the_unit():
    """The candidates stage's backstop: a lone surrogate or a list where text belongs (what a reader let through
    on odd input) costs that row, named, and the unit's other rows are written."""
    from ieiw.schemas.units import UnitResult

    surrogate, listed = pair_row(1), pair_row(2)
    surrogate["instruction"] = "remove the \ud800 thing"
    listed["origin"] = {"dataset": "phrasecut", "record_id": "1__2", "url": [["x"]]}
    result = UnitResult(rows=[pair_row(0), surrogate, listed, pair_row(3)])
    table = result.writable_table()
    assert table.column("id").to_pylist() == [pair_row(0)["id"], pair_row(3)["id"]]
    assert [(f.reason, f.record_id, f.file) for f in result.failures] == [
        ("unwritable_row", "1__1", "phrasecut"), ("unwritable_row", "1__2", "phrasecut")]
    assert result.stats()["failures"] == {"unwritable_row": 2}


def test_a_row_made_twice_is_written_once_and_counted():
    from ieiw.schemas.units import UnitResult

    result = UnitResult(rows=[pair_row(0), pair_row(1), pair_row(0)])
    assert result.writable_table().column("id").to_pylist() == [pair_row(0)["id"], pair_row(1)["id"]]
    assert [(f.reason, f.record_id) for f in result.failures] == [("duplicate_row", "1__0")]


def test_write_shard_is_atomic_and_records_hash(tmp_path, monkeypatch):
    table = rows_to_table([pair_row(i) for i in range(5)])
    info = shards.write_shard(table, tmp_path / "a.parquet")
    assert info.rows == 5 and info.sha256 == storage.sha256_file(tmp_path / "a.parquet")
    meta = pq.read_schema(tmp_path / "a.parquet").metadata
    assert int(meta[SCHEMA_VERSION_KEY]) == SCHEMA_VERSION and b"huggingface" in meta

    # A writer that dies after writing its temp file, before the rename, leaves neither file behind.
    def dying_replace(src, dst):
        assert Path(src).stat().st_size == info.bytes, "the temp file was fully written"
        raise OSError("disk full")

    monkeypatch.setattr(storage.os, "replace", dying_replace)
    with pytest.raises(OSError, match="disk full"):
        shards.write_shard(table, tmp_path / "b.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.parquet"]


def test_encoding_into_a_presized_buffer_gives_pyarrows_file_and_falls_back_when_short():
    """write_shard encodes into a buffer sized up front; the bytes must be exactly what pyarrow's own
    growing stream gives, with incompressible images (snappy's worst case) and when the size is short."""
    import pyarrow as pa

    rows = [pair_row(i) for i in range(130)]  # three row groups of 64
    for i, row in enumerate(rows):
        row["source_image"] = image_cell(os.urandom(3000 + i), "s.jpg")  # random bytes: snappy cannot shrink them
    table = rows_to_table(rows)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=64, compression="snappy")
    expected = sink.getvalue().to_pybytes()
    assert shards.encode_parquet(table, 64).to_pybytes() == expected
    assert shards.encode_parquet(table, 64, capacity=1000).to_pybytes() == expected  # short: the growing stream


def test_tables_gathered_from_many_shards_are_compacted_and_keep_every_row_in_order(tmp_path):
    """Stats and the report gather light columns from every shard; one chunk per shard holds ~40 KB
    each whatever its rows, so concat_compact combines them every ``every`` tables. Rows, order and a
    column's type (null in one shard, typed in another) must come through as a plain concat gives them."""
    import pyarrow as pa

    parts = []
    for number in range(10):
        rows = [pair_row(number * 3 + i) for i in range(3)]
        if number == 4:  # a shard whose scores are all null: typed null there, a struct elsewhere
            table = rows_to_table(rows).select(["id", "instruction"]).append_column("scores", pa.nulls(3))
        else:
            for row in rows:
                row["scores"] = {"backend": "proxy", "embedded": True, "target_aesthetic": 5.0 + len(parts)}
            table = rows_to_table(rows).select(["id", "instruction", "scores"])
        parts.append(table)
    gathered = shards.concat_compact(iter(parts), every=4)
    plain = pa.concat_tables(parts, promote_options="permissive")
    assert gathered.to_pylist() == plain.to_pylist()
    assert gathered.schema == plain.schema
    assert gathered.column("id").num_chunks == 3  # 4 + 4 + 2 shards, where a plain concat keeps 10
    assert plain.column("id").num_chunks == 10
    assert shards.concat_compact(iter([])) is None


def test_reading_an_unknown_column_names_the_file(tmp_path):
    """ParquetFile.read drops unknown column names and struct paths silently; ieiw's reader refuses them
    by name, as a ValueError (pyarrow's ArrowInvalid was one)."""
    path = tmp_path / "unit.parquet"
    shards.write_shard(rows_to_table([pair_row(0)]), path)
    table = shards.read_shard(path, columns=["id", "origin.dataset"])
    assert table.column_names == ["id", "origin"] and table["origin"].to_pylist() == [{"dataset": "phrasecut"}]
    for wrong in ("nope", "origin.nope", "id.part"):
        with pytest.raises(ValueError, match=rf"unit\.parquet: no column {wrong}"):
            shards.read_shard(path, columns=["id", wrong])


def test_manifest_resume_and_layout_guard(tmp_path):
    manifest = Manifest(tmp_path, "candidates", {"unit_size": 8})
    manifest.prepare("cfg1", {"inpaint": "opencv-telea"})
    info = shards.write_shard(rows_to_table([pair_row(0)]), tmp_path / "u0.parquet")
    assert manifest.finished("u0", "fp1") is None
    manifest.record("u0", info, "fp1", {"records": 1})
    assert manifest.finished("u0", "fp1")["sha256"] == info.sha256
    assert manifest.finished("u0", "fp2") is None, "a changed fingerprint must force a rebuild"
    (tmp_path / "u0.parquet").unlink()
    assert manifest.finished("u0", "fp1") is None, "a vanished shard must force a rebuild"
    with pytest.raises(LayoutChanged, match="unit_size"):
        Manifest(tmp_path, "candidates", {"unit_size": 16}).prepare("cfg2", {})
    assert load_manifest(tmp_path)["units"]["u0"]["rows"] == 1


def test_temp_cleanup_removes_only_files_no_live_build_owns(tmp_path):
    """A killed writer's temp file goes; a live writer's (a concurrent build on this host, or a recent one
    of another host) stays; an old one of another host, or an unnamed old one, goes."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = storage.HOST
    names = {
        "killed": f".tmp-{host}-{dead.pid}-x1.parquet",
        "live": f"{storage.temp_prefix()}x2.parquet",                 # this process: a live writer
        "other_recent": ".tmp-otherhost-123-x3.parquet",
        "other_old": ".tmp-otherhost-456-x4.parquet",
        "unnamed_old": ".tmp-abc.parquet",                           # a writer of an older ieiw
        "unnamed_recent": ".tmp-def.parquet",
    }
    for name in names.values():
        (tmp_path / name).write_bytes(b"half")
    (tmp_path / "units").mkdir()
    (tmp_path / "units" / names["killed"].replace(".parquet", ".json")).write_bytes(b"{")
    old = time.time() - storage.STALE_AFTER_S - 60
    for key in ("other_old", "unnamed_old"):
        os.utime(tmp_path / names[key], (old, old))
    (tmp_path / "keep.parquet").write_bytes(b"whole")
    removed = {p.relative_to(tmp_path).as_posix() for p in storage.remove_stale_temp_files(tmp_path)}
    assert removed == {names["killed"], names["other_old"], names["unnamed_old"],
                       "units/" + names["killed"].replace(".parquet", ".json")}
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == sorted(
        ["keep.parquet", names["live"], names["other_recent"], names["unnamed_recent"]])
    # atomic writes name their writer, so a concurrent build's cleanup leaves them alone
    fd, tmp = __import__("tempfile").mkstemp(prefix=storage.temp_prefix(), dir=tmp_path)
    os.close(fd)
    assert not storage.temp_owner_gone(Path(tmp))


def test_recording_a_unit_is_one_small_file_and_compaction_folds_records_in(tmp_path):
    from ieiw.schemas.manifest import compact

    manifest = Manifest(tmp_path, "ieiw", {"unit_size": 2})
    manifest.prepare("cfg", {"inpaint": "opencv"})
    info = shards.write_shard(rows_to_table([pair_row(0)]), tmp_path / "u0.parquet")
    manifest.record("u0", info, "fp0", {"rows": 1})
    assert (tmp_path / "units" / "u0.json").exists()
    assert json.loads((tmp_path / "manifest.json").read_text())["units"] == {}, "the snapshot is not rewritten"
    assert load_manifest(tmp_path)["units"]["u0"]["fingerprint"] == "fp0"
    assert load_manifest(tmp_path)["builds"]["cfg"] == {"backends": {"inpaint": "opencv"}}
    assert manifest.finished("u0", "fp0")["rows"] == 1
    assert compact(tmp_path) == 2 and not list((tmp_path / "units").iterdir())
    assert json.loads((tmp_path / "manifest.json").read_text())["units"]["u0"]["fingerprint"] == "fp0"
    assert manifest.finished("u0", "fp0")["rows"] == 1 and compact(tmp_path) == 0
    manifest.record("u0", info, "fp1", {"rows": 1})  # a rebuilt unit: its record overrides the snapshot
    assert load_manifest(tmp_path)["units"]["u0"]["fingerprint"] == "fp1" and manifest.finished("u0", "fp0") is None
    (tmp_path / "units" / "u%2F1.json").write_text("{")  # a broken record is named
    with pytest.raises(ManifestError, match="u%2F1.json: not valid JSON"):
        load_manifest(tmp_path)


def test_compact_all_leaves_other_kinds_of_manifest_alone(tmp_path):
    from ieiw.schemas.manifest import compact_all

    _two_shard_folder(tmp_path / "ieiw")
    (tmp_path / "index-replacement").mkdir()  # the exemplar index's own manifest.json
    (tmp_path / "index-replacement" / "manifest.json").write_text(json.dumps({"format": "ieiw-exemplar-index"}))
    assert compact_all(tmp_path) == {"ieiw": 3}
    assert set(load_manifest(tmp_path / "ieiw")["units"]) == {"u0", "u1"}


def _two_shard_folder(folder: Path) -> Manifest:
    manifest = Manifest(folder, "ieiw", {"unit_size": 2})
    manifest.prepare("cfg", {})
    for unit in ("u0", "u1"):
        info = shards.write_shard(rows_to_table([pair_row(0), pair_row(1)]), folder / f"{unit}.parquet")
        manifest.record(unit, info, "fp", {})
    return manifest


def test_verify_names_a_shard_with_one_flipped_byte(tmp_path):
    _two_shard_folder(tmp_path)
    ok = run_ieiw("verify", tmp_path)
    assert "ok" in ok.stdout
    shard = tmp_path / "u1.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    bad = run_ieiw("verify", tmp_path, check=False)
    assert bad.returncode == 1
    assert "u1.parquet" in bad.stderr and "CORRUPT" in bad.stderr
    assert "u0.parquet" not in bad.stderr


def test_verify_reports_missing_shard_and_missing_manifest(tmp_path):
    _two_shard_folder(tmp_path / "f")
    (tmp_path / "f" / "u0.parquet").unlink()
    bad = run_ieiw("verify", tmp_path / "f", check=False)
    assert bad.returncode == 1 and "MISSING" in bad.stderr and "u0.parquet" in bad.stderr
    assert verify_folder(tmp_path / "f") == [f"MISSING {tmp_path / 'f' / 'u0.parquet'} (unit u0)"]
    none = run_ieiw("verify", tmp_path / "nothing", check=False)
    assert none.returncode == 2 and "no manifest" in none.stderr


def test_manifest_is_json_with_hashes(tmp_path):
    _two_shard_folder(tmp_path)
    data = load_manifest(tmp_path)
    assert data["schema_version"] == SCHEMA_VERSION and set(data["units"]) == {"u0", "u1"}
    for entry in data["units"].values():
        assert len(entry["sha256"]) == 64 and entry["rows"] == 2


def test_shards_and_manifests_are_readable_by_the_team(tmp_path):
    """Written with the usual umask (022): group and others can read (mkstemp alone would give 0600)."""
    manifest = Manifest(tmp_path, "ieiw", {"t": 1})
    info = shards.write_shard(rows_to_table([pair_row(0)]), tmp_path / "u0.parquet")
    manifest.record("u0", info, "fp", {})
    for path in (tmp_path / "u0.parquet", tmp_path / "manifest.json"):
        assert path.stat().st_mode & 0o044 == 0o044, oct(path.stat().st_mode)


def test_a_takedown_check_of_a_malformed_url_does_not_raise():
    """`make fuzz` find: a post whose image URL is "https://[host..." (an unclosed IPv6 bracket) made the
    takedown check raise ValueError out of the crawl unit."""
    from ieiw.schemas.takedown import Takedown

    listed = Takedown.load([], ["https://www.example.com/a/", "https://[broken"])
    assert listed.blocks("https://[preview.redd.it/x.jpg") is None
    assert listed.blocks("https://[BROKEN") == "https://[BROKEN"
    assert listed.blocks("https://example.com/a") == "https://example.com/a"


def test_v2_shards_stay_readable_and_newer_ones_are_refused(tmp_path):
    """Schema v3 added ``edit_kind``; a v2 shard (without it) still reads, a shard of a future version does not."""
    table = rows_to_table([pair_row(i) for i in range(3)])
    assert "edit_kind" in table.column_names and SCHEMA_VERSION == 3
    v2 = table.drop_columns(["edit_kind"])
    for version, name in ((2, "v2.parquet"), (SCHEMA_VERSION + 1, "future.parquet")):
        meta = {**v2.schema.metadata, SCHEMA_VERSION_KEY: str(version).encode()}
        pq.write_table(v2.replace_schema_metadata(meta), tmp_path / name)
    assert shards.read_shard(tmp_path / "v2.parquet").column("id").to_pylist() == table.column("id").to_pylist()
    with pytest.raises(ValueError, match="newer than this ieiw"):
        shards.read_shard(tmp_path / "future.parquet")
