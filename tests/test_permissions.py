"""#24: what ieiw writes for a team (an export, a sample, an index folder) gets the modes the process
umask allows, as ``mkdir`` and ``open`` would give: 0755 folders and 0644 files under the usual 022, and
0700 / 0600 under a stricter 077 (before, mkdtemp folders were chmod-ed to 0755 and atomic files to the
umask read once at import, whatever the umask was when they were written)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from ieiw.builders.exemplars import ExemplarIndex, ExemplarIndexConfig
from ieiw.exports import export
from ieiw.samples.base import ensure_sample
from ieiw.schemas import storage
from ieiw.schemas.manifest import Manifest
from ieiw.schemas.rows import image_cell, row_id, rows_to_table
from ieiw.schemas.shards import write_shard

MODES = {0o077: (0o700, 0o600), 0o022: (0o755, 0o644)}


@pytest.fixture(params=sorted(MODES), ids=lambda mask: f"umask{mask:03o}")
def umask(request):
    """Run the test under this umask (and restore the old one after)."""
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def modes(folder: Path) -> tuple[set[int], set[int]]:
    """The permission bits of ``folder`` and every folder under it, and of every file under it."""
    folders = {stat.S_IMODE(folder.stat().st_mode)}
    files = set()
    for path in folder.rglob("*"):
        (folders if path.is_dir() else files).add(stat.S_IMODE(path.stat().st_mode))
    assert files, f"{folder}: no files"
    return folders, files


def check(folder: Path, mask: int) -> None:
    folder_mode, file_mode = MODES[mask]
    assert modes(folder) == ({folder_mode}, {file_mode}), {oct(m) for m in set().union(*modes(folder))}


def test_the_modes_follow_the_umask_of_the_moment(umask):
    assert (storage.folder_mode(), storage.file_mode()) == MODES[umask]


def pair_row(index: int) -> dict:
    return {
        "id": row_id("phrasecut", f"1__{index}", "removal", {"dilation": 5}, "remove"),
        "task": "remove",
        "instruction": f"remove the thing {index}",
        "source_image": image_cell(b"\xff\xd8\xff source %d" % index, "s.jpg"),
        "target_image": image_cell(b"\xff\xd8\xff target %d" % index, "t.jpg"),
        "mask": None, "width": 8, "height": 8,
        "origin": {"dataset": "phrasecut", "record_id": f"1__{index}"},
        "exemplar": None, "scores": None,
        "builder": {"name": "removal", "backend": "opencv-telea", "embedded": True, "seed": 0, "params": "{}"},
    }


@pytest.mark.parametrize("fmt", ["webdataset", "hf-instructpix2pix"])
def test_an_export_folder_follows_the_umask(umask, fmt, tmp_path):
    pairs = tmp_path / "out" / "ieiw"
    manifest = Manifest(pairs, "ieiw", {"t": 1})
    manifest.record("u0", write_shard(rows_to_table([pair_row(i) for i in range(3)]), pairs / "u0.parquet"), "fp", {})
    result = export(tmp_path / "out", tmp_path / "export", fmt)
    assert result.written == 3
    check(tmp_path / "export", umask)


def test_a_sample_folder_follows_the_umask(umask, tmp_path):
    def make(folder: Path) -> None:
        (folder / "images").mkdir()
        (folder / "images" / "1.jpg").write_bytes(b"\xff\xd8\xff")
        storage.atomic_write_bytes(folder / "done.json", b"{}")

    assert ensure_sample(tmp_path / "sample", make, "done.json")
    check(tmp_path / "sample", umask)


def test_an_index_folder_follows_the_umask(umask, tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((64, 8)).astype(np.float32)
    meta = {"image_id": [f"i{i // 4}" for i in range(64)], "record_id": [f"r{i // 4}" for i in range(64)],
            "label": ["cat"] * 64}
    folder = ExemplarIndex.build(vectors, meta, ExemplarIndexConfig()).save(tmp_path / "index")
    storage.atomic_write_bytes(folder / "fingerprint.json", b'{"fingerprint": "x"}')  # as build_index does
    check(folder, umask)
