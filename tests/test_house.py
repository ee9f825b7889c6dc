"""The house rules: plugins through the registry, only the chosen backend in ids, lazy models, one
sample however many planners, the one writer of ieiw/ + rejected/, v1 shards readable, configs
with one error format, model-file digests cached."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path
from typing import Any, ClassVar, Literal

import pyarrow.parquet as pq
import pytest
import yaml
from ieiw_testing import REPO, ieiw_env, run_ieiw, write_config

from ieiw.schemas.units import BuildContext
from ieiw.backends.inpaint.base import Inpainter
from ieiw.builders.removal import RemovalBuilder, RemovalConfig
from ieiw.samples.phrasecut import make_phrasecut_sample
from ieiw.schemas import filehash
from ieiw.schemas.config import BackendConfig, ConfigError, ModelPath, load_config, load_yaml_model
from ieiw.schemas.registry import REGISTRY, register_backend
from ieiw.schemas.rows import PAIR_SCHEMA, REJECTED_SCHEMA, assign_split, upgrade_table
from ieiw.schemas.shards import read_shard
from ieiw.schemas.manifest import load_manifest

PLUGINS = REPO / "tests" / "plugins"
V1 = REPO / "tests" / "data" / "v1" / "ieiw"


def shard_rows(folder: Path, columns: list[str] | None = None) -> list[dict[str, Any]]:
    manifest = load_manifest(folder)
    rows: list[dict[str, Any]] = []
    for entry in manifest["units"].values():
        rows += pq.read_table(folder / entry["shard"], columns=columns).to_pylist()
    return rows


# -- a plugin outside ieiw/, found through its entry point, built by the real flow ------------------
@pytest.mark.slow
def test_plugin_builder_runs_through_the_real_flow_and_its_drops_reach_rejected(tmp_path):
    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump({
        "name": "toy", "out_dir": str(tmp_path / "out"), "unit_size": 4, "workers": 2,
        "toy": {"count": 10, "drop_every": 3},
        "selection": {"min_target_aesthetic": 1.0, "max_aesthetic_gap": 9.0},
    }))
    env = ieiw_env()
    env["PYTHONPATH"] = f"{PLUGINS}{os.pathsep}{env['PYTHONPATH']}"
    run_ieiw("build", config, env=env)

    kept = shard_rows(tmp_path / "out" / "ieiw")
    rejected = shard_rows(tmp_path / "out" / "rejected")
    dropped = {str(i) for i in range(10) if i % 3 == 0}
    assert {r["origin"]["record_id"] for r in kept} == {str(i) for i in range(10)} - dropped
    assert {r["task"] for r in kept} == {"toy-recolour"} and all(r["split"] in ("train", "val") for r in kept)
    assert {r["origin"]["record_id"]: (r["reason"], r["rejected_by"]) for r in rejected} == {
        i: ("toy_unusable", "builder") for i in dropped
    }
    assert all(r["scores"]["source_aesthetic"] is not None for r in rejected), "drops keep their scores"
    stats = json.loads(run_ieiw("stats", tmp_path / "out" / "ieiw", "--json").stdout)
    assert stats["rejected"] == {"toy_unusable": len(dropped)} and stats["by_task"] == {"toy-recolour": 10 - len(dropped)}

    # Without the plugin on the path the same config fails before any work, naming the section.
    proc = run_ieiw("build", config, check=False)
    assert proc.returncode == 2 and "toy" in proc.stderr and "removal" in proc.stderr


def test_no_file_under_ieiw_names_the_plugin():
    for path in (REPO / "ieiw").rglob("*.py"):
        assert "toy_ieiw_plugin" not in path.read_text(), path


# -- only the chosen backend's parameters enter ids and fingerprints --------------------------------
class FlatFillConfig(BackendConfig):
    """A second inpaint backend, registered by the test: fills the mask with one colour."""

    kind: ClassVar[str] = "inpaint"
    backend: Literal["flat-fill"] = "flat-fill"
    grey: int = 128
    weights: ModelPath = None


@register_backend("inpaint", "flat-fill", FlatFillConfig)
class FlatFill(Inpainter):
    def inpaint(self, images, masks):
        out = []
        for image, mask in zip(images, masks, strict=True):
            filled = image.copy()
            filled[mask > 0] = self.config.grey
            out.append(filled)
        return out


def removal_builder(sample_root: Path, inpaint: dict[str, Any]) -> RemovalBuilder:
    config = RemovalConfig.model_validate({"source": {"root": str(sample_root)}, "inpaint": inpaint})
    return RemovalBuilder(config, BuildContext(root=REPO, out_dir=Path("out"), unit_size=4))


def unit_ids(builder: RemovalBuilder) -> list[str]:
    return [row["id"] for row in builder.build_unit(builder.plan()[0]).rows]


def test_only_the_chosen_backend_enters_row_ids(sample_root):
    flat = unit_ids(removal_builder(sample_root, {"backend": "flat-fill"}))
    assert flat == unit_ids(removal_builder(sample_root, {"backend": "flat-fill", "grey": 128}))
    assert flat != unit_ids(removal_builder(sample_root, {"backend": "flat-fill", "grey": 90}))
    params = removal_builder(sample_root, {"backend": "flat-fill"}).params()
    assert "radius" not in params and params["grey"] == 128
    # opencv's own parameters cannot even be given to another backend, so they cannot leak into its ids
    with pytest.raises(ValueError, match="radius"):
        removal_builder(sample_root, {"backend": "flat-fill", "radius": 9})
    # and with opencv chosen, its radius does shape the ids
    assert unit_ids(removal_builder(sample_root, {"backend": "opencv", "radius": 5})) != unit_ids(
        removal_builder(sample_root, {"backend": "opencv", "radius": 9}))


def test_unknown_backend_names_the_known_ones(sample_root):
    with pytest.raises(ValueError, match="unknown inpaint backend 'lama-9000'.*opencv"):
        removal_builder(sample_root, {"backend": "lama-9000"})


def test_model_file_change_changes_fingerprint_not_ids(sample_root, tmp_path, monkeypatch):
    monkeypatch.setenv("IEIW_CACHE_DIR", str(tmp_path / "cache"))
    weights = tmp_path / "flat.bin"
    weights.write_bytes(b"v1" * 1000)
    before = removal_builder(sample_root, {"backend": "flat-fill", "weights": str(weights)})
    fingerprint, ids = before.fingerprint(), unit_ids(before)
    weights.write_bytes(b"v2" * 1001)
    after = removal_builder(sample_root, {"backend": "flat-fill", "weights": str(weights)})
    assert after.fingerprint() != fingerprint, "a new checkpoint rebuilds what the old one made"
    assert unit_ids(after) == ids, "row ids name the recipe, not the checkpoint (docs/ARCHITECTURE.md)"


def test_file_digest_is_computed_once_per_path_size_and_mtime(tmp_path, monkeypatch):
    monkeypatch.setenv("IEIW_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "model.pt"
    path.write_bytes(os.urandom(1 << 16))
    calls = []
    real = filehash.sha256_of
    monkeypatch.setattr(filehash, "sha256_of", lambda p: calls.append(p) or real(p))
    first = filehash.file_digest(path)
    assert filehash.file_digest(path) == first and len(calls) == 1, "second lookup comes from the cache"
    path.write_bytes(os.urandom(1 << 16))
    assert filehash.file_digest(path) != first and len(calls) == 2, "an edited file is hashed again"


# -- lazy models ---------------------------------------------------------------------------------
COUNT_INPAINTERS = """
import json, sys
from ieiw.backends.inpaint.opencv import OpenCVInpainter
from ieiw.flows.build import build_ieiw

made = []
real_init = OpenCVInpainter.__init__
def counting_init(self, config):
    made.append(1)
    real_init(self, config)
OpenCVInpainter.__init__ = counting_init

counts = []
for overrides in ({}, {"selection.min_target_aesthetic": 9.0}):
    made.clear()
    build_ieiw(config_path=sys.argv[1], overrides=overrides)
    counts.append(len(made))
print("COUNTS", json.dumps(counts))
"""


@pytest.mark.slow
def test_selection_only_rerun_constructs_no_inpainter(make_config, tmp_path):
    """The real flow in a fresh process, twice: a build, then a rerun with only a threshold changed."""
    import subprocess
    import sys

    config = make_config(unit_size=16)
    proc = subprocess.run([sys.executable, "-c", COUNT_INPAINTERS, str(config)], capture_output=True, text=True,
                          env=ieiw_env(), cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, rerun = json.loads(proc.stdout.split("COUNTS", 1)[1])
    assert first >= 1, "the first build inpaints, so it must construct an inpainter"
    assert rerun == 0, "a selection-only rerun must not construct (or load) an inpainter"
    manifest = load_manifest(tmp_path / "out" / "features")
    assert manifest["units"], "the features stage ran and recorded its units"


# -- the sample is written once, whole, however many processes plan at once ----------------------
def _plan(config_path: str, barrier: Any, cwd: str) -> None:
    os.chdir(cwd)
    from ieiw import stages

    build = stages.build_for(load_config(config_path))
    barrier.wait()
    build.prepare()


def test_two_processes_planning_at_once_make_one_intact_sample(tmp_path):
    root = tmp_path / "sample" / "VGPhraseCut_v0"
    config = tmp_path / "b.yaml"
    config.write_text(yaml.safe_dump({
        "out_dir": str(tmp_path / "out"),
        "removal": {"source": {"root": str(root), "samples": {"images": 30, "seed": 4, "width": 160, "height": 120}}},
    }))
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_plan, args=(str(config), barrier, str(REPO))) for _ in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    reference = make_phrasecut_sample(tmp_path / "reference", 30, 4, 160, 120)
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(reference) for p in reference.rglob("*") if p.is_file())
    assert all((root / f).read_bytes() == (reference / f).read_bytes() for f in files)
    assert not list(root.parent.glob(".tmp-*")), "the losing copy is cleaned up"


def test_constructing_a_builder_writes_nothing(tmp_path):
    config = RemovalConfig.model_validate({"source": {"root": str(tmp_path / "s"), "samples": {"images": 2}}})
    RemovalBuilder(config, BuildContext(root=REPO, out_dir=tmp_path, unit_size=4))
    assert not (tmp_path / "s").exists()


# -- schema v1 shards are readable ----------------------------------------------------------------
def test_v1_shards_read_in_stats_and_verify():
    assert run_ieiw("verify", V1).returncode == 0
    stats = json.loads(run_ieiw("stats", V1, "--json").stdout)
    assert stats["schema_version"] == 1 and stats["rows"] == 32 and stats["by_task"] == {"add": 16, "remove": 16}
    assert "rows 32" in run_ieiw("stats", V1).stdout


def test_v1_table_upgrades_to_v2_columns():
    path = sorted(V1.glob("*.parquet"))[0]
    table = upgrade_table(read_shard(path))
    # columns added later (v2: split, drop_reason, duplicate_of; v3: edit_kind) stay absent: readers take null
    assert set(PAIR_SCHEMA.names) - {"split", "drop_reason", "duplicate_of", "edit_kind"} <= set(table.column_names)
    origin = table["origin"].to_pylist()[0]
    assert "authors" in origin and "author" not in origin and origin["dataset"] == "phrasecut"
    assert table["scores"].to_pylist()[0]["verification"] is None


# -- one writer, split, schema --------------------------------------------------------------------
def test_split_is_a_function_of_the_source_image():
    # Pins the split of phrasecut images 0..39 at val_fraction 0.5 (v = val, t = train). A change here
    # moves images between train and val for users: every row id's split differs from earlier releases.
    pinned = "".join("v" if assign_split("phrasecut", str(i), 0.5) == "val" else "t" for i in range(40))
    assert pinned == "ttvvtvtvttvtvvvvtvtvttttvtttvvtvvvvtvvvt"
    shares = [assign_split("phrasecut", str(i), 0.2) for i in range(4000)]
    assert 0.17 < shares.count("val") / len(shares) < 0.23
    assert {assign_split("x", str(i), 0.0) for i in range(50)} == {"train"}


def test_rejected_schema_keeps_what_threshold_tuning_needs():
    assert {"reason", "rejected_by", "scores", "instruction", "split"} <= set(REJECTED_SCHEMA.names)


def test_unregistered_task_is_refused_and_registered_ones_are_known():
    assert REGISTRY.task("keypoints").family == "keypoints" and REGISTRY.task("remove").family == "ieiw"
    assert REGISTRY.task("explode") is None


# -- configs: one base, one loader, one error format ------------------------------------------------
def test_build_and_training_configs_share_the_error_format(tmp_path, sample_root):
    from ieiw.training.config import Config

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"train": {"batch_sise": 3}}))
    with pytest.raises(ConfigError) as train_error:
        load_yaml_model(bad, Config)
    build = write_config(tmp_path / "build.yaml", sample_root, tmp_path / "out", removal={"mask_dilaton": 3})
    with pytest.raises(ConfigError) as build_error:
        load_config(build)
    assert str(train_error.value).splitlines()[0] == f"{bad}: invalid config"
    assert "  train.batch_sise: Extra inputs are not permitted" in str(train_error.value)
    assert str(build_error.value).splitlines()[0] == f"{build}: invalid config"
    assert "  removal.mask_dilaton: Extra inputs are not permitted" in str(build_error.value)


def test_unknown_section_lists_the_registered_builders(tmp_path, sample_root):
    path = write_config(tmp_path / "b.yaml", sample_root, tmp_path / "out", removel={"x": 1})
    with pytest.raises(ConfigError, match=r"removel: .*builders: ") as error:
        load_config(path)
    listed = str(error.value).split("builders: ", 1)[1].splitlines()[0].rstrip(")").replace(",", " ").split()
    assert {"crawl", "removal", "replacement", "cocostuff", "refcoco", "keypoints", "enhance"} <= set(listed)
    assert listed == sorted(listed)


def test_output_folder_is_checked_before_prefect_starts(tmp_path, sample_root):
    """A file where the output folder should be, or a folder inside a file: one line, exit 2, no traceback."""
    blocker = tmp_path / "taken"
    blocker.write_text("not a folder")
    for out in (blocker, blocker / "out"):
        config = write_config(tmp_path / "b.yaml", sample_root, out)
        proc = run_ieiw("build", config, check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert str(blocker) in proc.stderr and "cannot build:" in proc.stderr


def test_a_backend_says_whether_it_uses_a_gpu():
    """The runner asks the backend (BackendConfig.uses_gpu), never reads its fields itself."""
    from ieiw.backends.features.clip import ClipFeaturesConfig
    from ieiw.backends.inpaint.servers import IOPaintConfig
    from ieiw.schemas.config import cuda_visible

    assert ClipFeaturesConfig(backend="clip", model="/models/clip", device="cuda:1").uses_gpu()
    assert not ClipFeaturesConfig(backend="clip", model="/models/clip", device="cpu").uses_gpu()
    assert ClipFeaturesConfig(backend="clip", model="/models/clip", device="auto").uses_gpu() == cuda_visible()
    assert not IOPaintConfig(backend="iopaint", urls=["http://127.0.0.1:8080"], model="lama").uses_gpu()  # the server's


def test_a_config_file_is_validated_once_per_process(tmp_path, sample_root, monkeypatch):
    """`ieiw build` validates before Prefect starts and the flow asks again: one read, one object, until the
    file changes."""
    from ieiw.schemas import config as config_module

    path = write_config(tmp_path / "build.yaml", sample_root, tmp_path / "out")
    reads = []
    real = config_module.read_yaml
    monkeypatch.setattr(config_module, "read_yaml", lambda p: reads.append(p) or real(p))
    first = config_module.load_config(path, {"unit_size": 8})
    assert config_module.load_config(str(path), {"unit_size": 8}) is first and len(reads) == 1
    assert config_module.load_config(path, {"unit_size": 4}).unit_size == 4 and len(reads) == 2
    path.write_text(path.read_text() + "\n# edited\n")
    assert config_module.load_config(path, {"unit_size": 8}) is not first and len(reads) == 3
