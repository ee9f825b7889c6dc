"""The real `ieiw build` (Prefect flow, ephemeral API) end to end: resume after SIGKILL, outputs that
load in datasets / DuckDB / Polars, bad input counted in `ieiw stats`, selection-only reruns."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from ieiw_testing import REPO, ieiw_env, run_ieiw, write_config
from test_removal import corrupt_copy

from ieiw.samples.phrasecut import make_phrasecut_sample
from ieiw.schemas.manifest import load_manifest

pytestmark = pytest.mark.slow


def all_ids(folder: Path) -> list[str]:
    manifest = load_manifest(folder)
    ids: list[str] = []
    for entry in manifest["units"].values():
        ids += pq.read_table(folder / entry["shard"], columns=["id"])["id"].to_pylist()
    return ids


@pytest.fixture(scope="module")
def kill_sample(tmp_path_factory) -> Path:
    return make_phrasecut_sample(tmp_path_factory.mktemp("killsample") / "VGPhraseCut_v0", 40, 11, 160, 120)


@pytest.fixture(scope="module")
def built(tmp_path_factory, kill_sample) -> Path:
    """One uninterrupted build, shared by the tests that only read its output."""
    tmp = tmp_path_factory.mktemp("built")
    config = write_config(tmp / "build.yaml", kill_sample, tmp / "out", unit_size=4, workers=1)
    run_ieiw("build", config)
    return tmp / "out"


def test_sigkill_mid_run_then_rerun_equals_uninterrupted(built, kill_sample, tmp_path):
    config = write_config(tmp_path / "build.yaml", kill_sample, tmp_path / "out", unit_size=4, workers=1)
    candidates = tmp_path / "out" / "candidates"
    units_recorded = lambda folder: len(load_manifest(folder)["units"]) if (folder / "manifest.json").exists() else 0  # noqa: E731
    proc = subprocess.Popen(
        [sys.executable, "-m", "ieiw", "build", str(config)], cwd=REPO, env=ieiw_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if units_recorded(candidates) >= 3:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the build finished before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole group: the flow and its ephemeral API server
        proc.wait()
    before = load_manifest(candidates)["units"]
    total_units = len(load_manifest(built / "candidates")["units"])
    done_pairs = units_recorded(tmp_path / "out" / "ieiw")
    assert len(before) < total_units and done_pairs < total_units, "killed mid-run"

    run_ieiw("build", config)
    resumed_ids, reference_ids = all_ids(tmp_path / "out" / "ieiw"), all_ids(built / "ieiw")
    assert len(resumed_ids) == len(set(resumed_ids)), "no duplicate rows"
    assert sorted(resumed_ids) == sorted(reference_ids)
    after = load_manifest(candidates)["units"]
    for unit, entry in before.items():  # finished units were skipped, not rebuilt
        assert after[unit]["finished_at"] == entry["finished_at"] and after[unit]["sha256"] == entry["sha256"]
    assert not list((tmp_path / "out").glob("*/.tmp-*")), "temp files of the killed writer are gone"
    assert run_ieiw("verify", tmp_path / "out" / "ieiw").returncode == 0


def test_shards_load_with_datasets_duckdb_and_polars(built, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets
    import duckdb
    import polars as pl
    from PIL import Image

    files = sorted(glob.glob(str(built / "ieiw" / "*.parquet")))
    ds = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "hf"))
    assert isinstance(ds.features["source_image"], datasets.Image)
    first = ds[0]
    assert isinstance(first["source_image"], Image.Image) and isinstance(first["target_image"], Image.Image)
    assert first["source_image"].size == (first["width"], first["height"])

    counts = dict(duckdb.sql(
        f"SELECT task, count(*) FROM read_parquet({files!r}) GROUP BY task ORDER BY task").fetchall())
    stats = json.loads(run_ieiw("stats", built / "ieiw", "--json").stdout)
    assert counts == stats["by_task"] and set(counts) == {"add", "remove"}
    assert sum(counts.values()) == stats["rows"] == len(ds)
    frame = pl.read_parquet(files)
    assert frame.height == stats["rows"] and frame["origin"].struct.field("dataset").unique().to_list() == ["phrasecut"]


def test_stats_report_kept_rejected_and_backends(built):
    stats = json.loads(run_ieiw("stats", built / "ieiw", "--json").stdout)
    assert isinstance(stats["rows"], int) and stats["rows"] > 0
    assert stats["candidates"] == stats["rows"] + stats["rejected_total"]
    assert stats["scores"]["target_aesthetic"]["count"] == stats["rows"]
    assert stats["backends"]["removal: opencv-telea"] == stats["rows"]
    assert stats["embedded_rows"] == stats["rows"]
    text = run_ieiw("stats", built / "ieiw").stdout
    assert "by task" in text and "opencv-telea" in text and "embedded" in text


def test_bad_input_is_counted_in_stats(sample_root, tmp_path):
    root, refer = corrupt_copy(sample_root, tmp_path)
    config = write_config(tmp_path / "build.yaml", root, tmp_path / "out")
    run_ieiw("build", config)
    stats = json.loads(run_ieiw("stats", tmp_path / "out" / "ieiw", "--json").stdout)
    assert stats["failures"] == {"degenerate_polygons": 1, "missing_image": 1, "no_polygons": 1}
    assert stats["rows"] > 0
    examples = "\n".join(stats["failure_examples"])
    for record in refer[:3]:
        assert record["task_id"] in examples
    assert "999.jpg" in examples
    assert "failed records" in run_ieiw("stats", tmp_path / "out" / "ieiw").stdout


def test_threshold_change_reruns_selection_only(kill_sample, tmp_path):
    config = write_config(tmp_path / "build.yaml", kill_sample, tmp_path / "out", unit_size=16)
    run_ieiw("build", config)
    out = tmp_path / "out"
    manifests = {stage: load_manifest(out / stage)["units"]
                 for stage in ("candidates", "features", "scores", "ieiw")}
    strict = run_ieiw("build", config, "--set", "selection.min_target_aesthetic=9.5")
    assert "kept" in strict.stdout
    for stage in ("candidates", "features", "scores"):
        again = load_manifest(out / stage)["units"]
        finished = {u: e["finished_at"] for u, e in manifests[stage].items()}
        assert {u: e["finished_at"] for u, e in again.items()} == finished
    selected = load_manifest(out / "ieiw")["units"]
    assert all(selected[u]["finished_at"] > manifests["ieiw"][u]["finished_at"] for u in selected)
    stats = json.loads(run_ieiw("stats", out / "ieiw", "--json").stdout)
    assert stats["rows"] == 0 and stats["rejected"] == {"target_quality_low": stats["candidates"]}


def test_invalid_config_names_file_and_key(tmp_path, sample_root):
    config = write_config(tmp_path / "bad.yaml", sample_root, tmp_path / "out", unit_sise=3)
    proc = run_ieiw("build", config, check=False)
    assert proc.returncode == 2
    assert str(config) in proc.stderr and "unit_sise" in proc.stderr


def test_features_are_stored_once_per_distinct_image(built):
    """remove/add twins share two images: the features shard holds each once, float16, L2-normalised."""
    import numpy as np

    from ieiw.schemas.rows import image_key
    from ieiw.stages import load_embeddings

    manifest = load_manifest(built / "features")
    for unit, entry in manifest["units"].items():
        candidates = pq.read_table(built / "candidates" / f"{unit}.parquet", columns=["source_image", "target_image"])
        keys = {image_key(cell["bytes"]) for column in candidates.columns for cell in column.to_pylist()}
        embeddings = load_embeddings(built / "features" / entry["shard"])["embedded-v1"]
        assert set(embeddings) == keys and entry["stats"]["images"] == len(keys) < 2 * candidates.num_rows
        assert pq.read_schema(built / "features" / entry["shard"]).field("embedding").type.value_type == "halffloat"
        norms = np.linalg.norm(np.stack(list(embeddings.values())), axis=1)
        assert np.allclose(norms, 1.0, atol=2e-3)
        assert [e["extractor"] for e in entry["stats"]["extractors"]] == ["embedded-v1"]


def test_every_row_of_one_source_image_shares_its_split(built):
    manifest = load_manifest(built / "ieiw")
    rows = [r for e in manifest["units"].values()
            for r in pq.read_table(built / "ieiw" / e["shard"], columns=["split", "origin"]).to_pylist()]
    by_image: dict[str, set[str]] = {}
    for row in rows:
        by_image.setdefault(row["origin"]["image_id"], set()).add(row["split"])
    assert all(len(splits) == 1 for splits in by_image.values())
    assert {s for splits in by_image.values() for s in splits} <= {"train", "val"}


# -- a flow run's parameters cannot import code -----------------------------------------------------
def marker_plugin(folder: Path) -> tuple[Path, Path]:
    """A module whose import leaves a file behind: proof that something imported it."""
    marker = folder / "imported"
    (folder / "plug").mkdir()
    (folder / "plug" / "ieiw_marker_plugin.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    return folder / "plug", marker


@pytest.mark.slow
def test_a_flow_run_whose_parameters_name_plugins_is_refused_before_any_import(sample_root, tmp_path, monkeypatch):
    """`plugins:` imports modules; a deployment run's parameters (anyone who reaches the Prefect API) may not
    set it. The run fails before any import, naming the key."""
    from ieiw.flows.build import build_ieiw

    path, marker = marker_plugin(tmp_path)
    monkeypatch.syspath_prepend(str(path))
    config = write_config(tmp_path / "build.yaml", sample_root, tmp_path / "out")
    for overrides in ({"plugins": ["ieiw_marker_plugin"]}, {"plugins.0": "ieiw_marker_plugin"}):
        state = build_ieiw(str(config), overrides=overrides, return_state=True)
        assert state.is_failed() and "cannot name modules to import" in state.message, state.message
    assert not marker.exists() and "ieiw_marker_plugin" not in sys.modules
    assert not (tmp_path / "out").exists(), "refused before any work"


@pytest.mark.slow
def test_plugins_from_the_local_command_line_still_load(sample_root, tmp_path):
    path, marker = marker_plugin(tmp_path)
    config = write_config(tmp_path / "build.yaml", sample_root, tmp_path / "out")
    env = ieiw_env()
    env["PYTHONPATH"] = f"{path}{os.pathsep}{env['PYTHONPATH']}"
    run_ieiw("build", config, "--set", "plugins=[ieiw_marker_plugin]", env=env)
    assert marker.exists() and load_manifest(tmp_path / "out" / "ieiw")["units"]
