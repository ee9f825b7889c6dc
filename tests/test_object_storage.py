"""out_dir on object storage: a demo-like build into an S3 bucket (moto's server on 127.0.0.1), read back
by `ieiw verify`, `ieiw stats`, the trainer's reader and `datasets`, with the same rows as the same
build into a local folder; a shard, a manifest record and a compaction are one PUT each, and a failed
encode leaves no object behind (docs/scale.md, "Object storage")."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import pyarrow as pa
import pytest
from ieiw_testing import run_ieiw, verified_stats_like_local, verify_names_a_corrupted_shard, write_config

from ieiw.schemas import storage

BUCKET = "ieiw-test"
OUT = f"s3://{BUCKET}/out"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server on a free port of 127.0.0.1, a bucket, and the environment that points every
    client at it: AWS_ENDPOINT_URL is honoured by botocore (so s3fs, the `ieiw` subprocesses, awscli)."""
    s3fs = pytest.importorskip("s3fs")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one INFO line per request otherwise
    host, port = server.get_host_and_port()
    empty = tmp_path_factory.mktemp("aws") / "none"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_CONFIG_FILE": str(empty),
           "AWS_SHARED_CREDENTIALS_FILE": str(empty), "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        patch.delenv("AWS_PROFILE", raising=False)
        patch.delenv("AWS_SESSION_TOKEN", raising=False)
        s3fs.S3FileSystem.clear_instance_cache()  # an instance made before would keep another endpoint
        fs = storage.location(f"s3://{BUCKET}").fs
        fs.mkdir(BUCKET)
        try:
            yield {"fs": fs, "env": {**os.environ}}
        finally:
            s3fs.S3FileSystem.clear_instance_cache()
            server.stop()


def spy_requests(fs, monkeypatch) -> list[tuple[str, str]]:
    """(S3 operation, key) of every request the filesystem sends from now on."""
    calls: list[tuple[str, str]] = []
    original = fs._call_s3

    async def spy(method, *args, **kwargs):
        calls.append((method if isinstance(method, str) else method.__name__, kwargs.get("Key", "")))
        return await original(method, *args, **kwargs)

    monkeypatch.setattr(fs, "_call_s3", spy)
    return calls


def writes(calls: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [c for c in calls if c[0] in ("put_object", "create_multipart_upload", "upload_part",
                                         "complete_multipart_upload", "copy_object", "delete_object",
                                         "delete_objects")]


# -- units: atomic writes --------------------------------------------------------------------------------
def test_a_shard_is_one_put_and_its_manifest_record_another(s3, monkeypatch):
    from ieiw.schemas.manifest import Manifest, compact, load_manifest
    from ieiw.schemas.shards import read_shard, write_shard

    folder = storage.location(f"s3://{BUCKET}/unit/ieiw")
    manifest = Manifest(folder, "ieiw", {"unit_size": 2})
    manifest.prepare("cfg", {"x": "y"})
    calls = spy_requests(s3["fs"], monkeypatch)
    table = pa.table({"id": [f"r{i}" for i in range(500)], "blob": [os.urandom(512) for _ in range(500)]})
    shard = write_shard(table, folder / "u1.parquet")
    assert writes(calls) == [("put_object", "unit/ieiw/u1.parquet")], "a shard is one PUT of the whole file"
    assert shard.rows == 500 and shard.bytes == storage.size(folder / "u1.parquet")
    assert shard.sha256 == storage.sha256(folder / "u1.parquet")

    calls.clear()
    manifest.record("u1", shard, "fp", {"kept": 500})
    assert writes(calls) == [("put_object", "unit/ieiw/units/u1.json")], "a record is one PUT"
    assert manifest.finished("u1", "fp") is not None
    assert read_shard(folder / "u1.parquet").column("id").to_pylist() == table.column("id").to_pylist()

    calls.clear()
    assert compact(folder) == 2  # the unit's record and the build's
    puts = [key for op, key in writes(calls) if op == "put_object"]
    assert puts == ["unit/ieiw/manifest.json"], "compaction writes the snapshot with one PUT"
    assert not storage.glob(folder / "units", "*.json") and set(load_manifest(folder)["units"]) == {"u1"}


def test_a_failed_encode_leaves_no_object(s3, monkeypatch):
    import ieiw.schemas.shards as shards

    target = storage.location(f"s3://{BUCKET}/unit/broken/u1.parquet")

    def half_then_fail(table, sink, **kwargs):
        sink.write(b"PAR1 half a file")
        raise OSError("disk full while encoding")

    monkeypatch.setattr(shards.pq, "write_table", half_then_fail)
    calls = spy_requests(s3["fs"], monkeypatch)
    with pytest.raises(OSError, match="while encoding"):
        shards.write_shard(pa.table({"id": ["a"]}), target)
    assert writes(calls) == [] and not storage.exists(target), "nothing was sent, nothing is visible"


def test_a_staged_folder_uploads_its_commit_file_last(s3, monkeypatch, tmp_path):
    folder = storage.location(f"s3://{BUCKET}/unit/index-x")
    for name, text in (("fingerprint.json", "old"), ("stale.bin", "old")):
        storage.write_bytes_atomic(folder / name, text.encode())
    calls = spy_requests(s3["fs"], monkeypatch)
    with storage.staged_folder(folder, commit="fingerprint.json") as local:
        local.mkdir(parents=True)
        for name in ("index.faiss", "meta.parquet", "fingerprint.json"):
            (local / name).write_text(f"new {name}")
    ops = writes(calls)
    assert ops[0] == ("delete_object", "unit/index-x/fingerprint.json"), "the old commit file goes first"
    assert ops[-1] == ("put_object", "unit/index-x/fingerprint.json"), "the new one comes last"
    assert sorted(p.name for p in storage.glob(folder, "*")) == ["fingerprint.json", "index.faiss", "meta.parquet"]
    copy = storage.local_copy(folder, "v1")
    assert isinstance(copy, Path) and (copy / "index.faiss").read_text() == "new index.faiss"


def test_local_copy_refuses_keys_that_lead_out_of_the_cache(tmp_path, monkeypatch):
    """An object key with ../ or an absolute part under a remote folder (a store is written by others) raises,
    and nothing is written outside the cache folder (docs/formats.md, "Names that become paths"). fsspec's
    memory store, its listing extended with the crafted keys: no server needed."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("IEIW_CACHE_DIR", str(cache))
    folder = storage.location("memory://ieiw-paths-test/index-x")
    storage.write_bytes_atomic(folder / "index.faiss", b"index")
    base = folder.path.rstrip("/")
    fs = folder.fs
    listed, read = fs.find(base), fs.cat_file
    assert listed and all(key.startswith(base + "/") for key in listed)
    # the copy is made in a temp folder beside its target: this many ../ climb from there to tmp_path
    up = len(storage.local_folder(folder).parent.relative_to(tmp_path).parts) + 1
    for rel in ("../" * up + "escaped-up.bin", str(tmp_path / "escaped-abs.bin")):  # base/../.., base//tmp/...
        monkeypatch.setattr(fs, "find", lambda path, *a, rel=rel, **k: [*listed, f"{base}/{rel}"])
        monkeypatch.setattr(fs, "cat_file", lambda path, *a, **k: b"planted" if "escaped" in path else read(path))
        with pytest.raises(storage.StorageError, match="outside the local copy"):
            storage.local_copy(folder, "v1")
        escaped = [p for p in tmp_path.rglob("*") if "escaped" in p.name]
        assert not escaped, f"written outside the cache: {escaped}"
        assert not [p for p in cache.rglob("*") if p.name.startswith(".partial-")], "the partial copy is removed"
    monkeypatch.setattr(fs, "find", lambda path, *a, **k: listed)
    copy = storage.local_copy(folder, "v1")
    assert copy.is_relative_to(cache) and (copy / "index.faiss").read_bytes() == b"index"
    fs.rm(base, recursive=True)


def test_local_out_dir_keeps_paths_and_file_urls_are_local(tmp_path):
    from ieiw.schemas.config import validate_build_config

    section = {"removal": {"source": {"root": "x"}}}
    assert validate_build_config({"out_dir": "out", **section}).out_dir == Path("out")
    assert validate_build_config({"out_dir": f"file://{tmp_path}", **section}).out_dir == tmp_path
    remote = validate_build_config({"out_dir": OUT, **section})
    assert remote.out_dir == OUT and remote.model_dump(mode="json")["out_dir"] == OUT
    assert storage.location("out") == Path("out") and not storage.is_remote(storage.location(tmp_path))


def test_install_hints_name_the_extra_that_serves_the_protocol():
    assert storage.install_hint("s3://bucket/out") == " (pip install 'ieiw[s3]')"
    assert storage.install_hint("gs://bucket/out") == " (pip install 'ieiw[gcs]')"
    assert storage.install_hint("out") == "" and storage.install_hint("nope://bucket/out") == ""
    [message] = storage.check_writable("nope://bucket/out")
    assert message.startswith("out_dir nope://bucket/out: ") and "pip install" not in message


# -- a demo-like build into the bucket -------------------------------------------------------------------
@pytest.fixture(scope="module")
def builds(s3, tmp_path_factory, sample_root):
    """The same small demo-like config (removal, replacement with its exemplar index, crawl, scoring with a
    KNN-GIQA reference) built into the bucket and into a local folder."""
    tmp = tmp_path_factory.mktemp("objstore")
    config = write_config(
        tmp / "build.yaml", sample_root, tmp / "local", unit_size=16,
        removal={"source": {"root": str(sample_root), "splits": ["train"]}, "mask_dilation": 5},
        replacement={"sources": [{"type": "open-images", "root": str(tmp / "replace" / "open-images"),
                                  "classes": "class-descriptions-boxable.csv", "samples": {"images": 8, "seed": 0}}],
                     "features": {"backend": "embedded"}, "repaint": {"backend": "embedded"}},
        crawl={},
        scoring={"features": {"backend": "embedded"},
                 "scorers": [{"backend": "proxy"},
                             {"backend": "knn-giqa", "reference": str(tmp / "giqa"), "generate": {"images": 40}}]},
        selection={"min_target_aesthetic": 2.0, "max_aesthetic_gap": 3.0, "min_target_giqa": {"quantile": 0.02}},
    )
    run_ieiw("build", config, env=s3["env"])  # the local one first: it makes the samples and the reference
    run_ieiw("build", config, "--out", OUT, env=s3["env"])
    return {"local": tmp / "local", "config": config}


@pytest.mark.slow
def test_build_into_a_bucket_verifies_and_has_the_local_builds_rows(s3, builds):
    fs = s3["fs"]
    objects = {p[len(BUCKET) + 1:] for p in fs.find(BUCKET) if p.startswith(f"{BUCKET}/out/")}
    for name in ("out/ieiw/manifest.json", "out/calibration.json", "out/stats.json", "out/README.md",
                 "out/report.html", "out/index-replacement/fingerprint.json", "out/index-replacement/vectors.npy",
                 "out/index-replacement/regions.arrow", "out/index-replacement/manifest.json"):
        assert name in objects, name
    assert not [o for o in objects if "/.tmp-" in o or "crawl-index" in o], "no temp objects, no local caches"

    remote = verified_stats_like_local(f"{OUT}/ieiw", builds["local"] / "ieiw", s3["env"])
    assert {"remove", "web"} <= set(remote["by_task"])
    candidates = json.loads(run_ieiw("stats", f"{OUT}/candidates", "--json", env=s3["env"]).stdout)
    assert candidates["by_task"].get("replace"), "replacement ran against the uploaded exemplar index"


@pytest.mark.slow
def test_a_rerun_into_the_bucket_skips_every_unit(s3, builds):
    before = json.loads(s3["fs"].cat_file(f"{BUCKET}/out/ieiw/manifest.json"))
    proc = run_ieiw("build", builds["config"], "--out", OUT, env=s3["env"])
    done = re.findall(r"(\w+): (\d+) units done, (\d+) already finished earlier", proc.stdout + proc.stderr)
    assert done and all(redone == "0" and int(skipped) > 0 for _, redone, skipped in done), done
    after = json.loads(s3["fs"].cat_file(f"{BUCKET}/out/ieiw/manifest.json"))
    assert {u: e["sha256"] for u, e in after["units"].items()} == {u: e["sha256"] for u, e in before["units"].items()}


@pytest.mark.slow
def test_the_trainer_streams_a_batch_from_the_bucket(s3, builds):
    from torch.utils.data import DataLoader

    from ieiw.training.data import ShardPairs, index_shards

    groups = index_shards(f"{OUT}/ieiw")
    assert groups and all(g.path.startswith(f"{OUT}/ieiw/") for g in groups)
    assert sum(len(g.rows) for g in groups) == sum(len(g.rows) for g in index_shards(builds["local"] / "ieiw"))
    dataset = ShardPairs(groups, resolution=32, shuffle_buffer=1, epochs=1)
    batch = next(iter(DataLoader(dataset, batch_size=4, num_workers=1)))  # a forked worker reads the bucket
    assert tuple(batch["source"].shape) == (4, 3, 32, 32) and tuple(batch["target"].shape) == (4, 3, 32, 32)
    assert len(batch["id"]) == 4 and all(batch["instruction"])


@pytest.mark.slow
def test_datasets_loads_the_shards_from_the_bucket(s3, builds, tmp_path, monkeypatch):
    # not HF_HUB_OFFLINE: offline mode refuses every URL, s3:// included; the parquet builder asks no hub
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    datasets = pytest.importorskip("datasets")
    # datasets reads the variable once, when first imported: an earlier test may have imported it offline
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    from ieiw.schemas.manifest import load_manifest

    folder = f"{OUT}/ieiw"
    files = [f"{folder}/{e['shard']}" for e in load_manifest(folder)["units"].values() if e["rows"]]
    ds = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "hf"))
    assert len(ds) == json.loads(run_ieiw("stats", folder, "--json", env=s3["env"]).stdout)["rows"]


@pytest.mark.slow
def test_verify_names_a_corrupted_object(s3, builds):
    verify_names_a_corrupted_shard(s3["fs"], f"{OUT}/ieiw", s3["env"])


@pytest.mark.slow
def test_a_dask_cluster_writes_the_same_rows_to_the_bucket(s3, tmp_path, sample_root):
    """The case object storage is for: worker processes of a Dask cluster writing the shards to a bucket
    (each worker reaches moto through the environment it inherits), with the ids of a thread build."""
    pytest.importorskip("prefect_dask")
    from ieiw.schemas.manifest import load_manifest

    def ids(folder) -> list[str]:
        found = []
        for entry in load_manifest(folder)["units"].values():
            found += storage.read_table(folder / entry["shard"], columns=["id"])["id"].to_pylist()
        return found

    source = {"source": {"root": str(sample_root), "splits": ["train"], "limit": 16}}
    threads = write_config(tmp_path / "threads.yaml", sample_root, tmp_path / "local", removal=source)
    dask = write_config(tmp_path / "dask.yaml", sample_root, f"s3://{BUCKET}/dask", removal=source,
                        runner={"kind": "dask", "n_workers": 2})
    run_ieiw("build", threads, env=s3["env"])
    run_ieiw("build", dask, env=s3["env"])
    remote = storage.location(f"s3://{BUCKET}/dask/ieiw")
    assert len(load_manifest(remote)["units"]) == 2
    expected = ids(tmp_path / "local" / "ieiw")
    assert expected and sorted(ids(remote)) == sorted(expected)
    assert run_ieiw("verify", remote, env=s3["env"]).returncode == 0
