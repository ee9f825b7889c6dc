"""out_dir on Google Cloud Storage: a removal build into ``gs://`` (gcsfs against gcp-storage-emulator's
server on 127.0.0.1), read back by `ieiw verify`, `ieiw stats` and the trainer's reader, with the rows of
the same build into a local folder. The S3 side, with its request-level checks, is
tests/test_object_storage.py; this file shows the same code paths hold on a second fsspec backend."""

from __future__ import annotations

import os

import pytest
from ieiw_testing import free_port, run_ieiw, verified_stats_like_local, verify_names_a_corrupted_shard, write_config

from ieiw.schemas import storage

BUCKET = "ieiw-gcs-test"
OUT = f"gs://{BUCKET}/out"


@pytest.fixture(scope="module")
def gcs():
    """gcp-storage-emulator's server on a free port of 127.0.0.1 with an empty bucket, and the environment
    that points gcsfs at it (in this process and in the `ieiw` subprocesses):

    - ``STORAGE_EMULATOR_HOST``: gcsfs's (and Google's clients') endpoint override;
    - ``FSSPEC_GS_TOKEN=anon``: fsspec's per-protocol configuration, so no credential lookup runs;
    - ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false``: gcsfs 2026 asks a gRPC API, which no emulator serves,
      for each bucket's type, and waits 60 s for it to time out."""
    port = free_port()
    env = {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}", "FSSPEC_GS_TOKEN": "anon",
           "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false", "NO_PROXY": "127.0.0.1,localhost",
           "no_proxy": "127.0.0.1,localhost"}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        gcsfs = pytest.importorskip("gcsfs")  # after the variables: gcsfs reads its switch when imported
        emulator = pytest.importorskip("gcp_storage_emulator.server")
        import fsspec.config

        if gcsfs.GCSFileSystem is not gcsfs.core.GCSFileSystem:
            pytest.skip("gcsfs was imported with its gRPC bucket-type probe on before this module")
        patch.setitem(fsspec.config.conf, "gs", {"token": "anon"})  # fsspec read FSSPEC_* when imported
        server = emulator.create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
        server.start()
        gcsfs.GCSFileSystem.clear_instance_cache()
        try:
            yield {"fs": storage.location(f"gs://{BUCKET}").fs, "env": {**os.environ}}
        finally:
            gcsfs.GCSFileSystem.clear_instance_cache()
            server.stop()


@pytest.fixture(scope="module")
def builds(gcs, tmp_path_factory, sample_root):
    """A 2-unit removal build with proxy scores into the bucket and into a local folder."""
    tmp = tmp_path_factory.mktemp("gcs")
    config = write_config(tmp / "build.yaml", sample_root, tmp / "local", unit_size=16,
                          removal={"source": {"root": str(sample_root), "splits": ["train"]}, "mask_dilation": 5})
    run_ieiw("build", config, env=gcs["env"])
    run_ieiw("build", config, "--out", OUT, env=gcs["env"])
    return {"local": tmp / "local", "config": config}


@pytest.mark.slow
def test_build_into_gcs_verifies_and_has_the_local_builds_rows(gcs, builds):
    fs = gcs["fs"]
    objects = {p[len(BUCKET) + 1:] for p in fs.find(BUCKET)}
    for name in ("out/ieiw/manifest.json", "out/candidates/manifest.json", "out/calibration.json",
                 "out/stats.json", "out/README.md", "out/report.html"):
        assert name in objects, name
    assert not [o for o in objects if "/.tmp-" in o], "no temp objects"

    verified_stats_like_local(f"{OUT}/ieiw", builds["local"] / "ieiw", gcs["env"])


@pytest.mark.slow
def test_the_trainer_reads_the_same_rows_from_gcs(gcs, builds):
    from torch.utils.data import DataLoader

    from ieiw.training.data import ShardPairs, index_shards

    groups = index_shards(f"{OUT}/ieiw")
    assert groups and all(g.path.startswith(f"{OUT}/ieiw/") for g in groups)
    def layout(found: list) -> list[tuple[str, int, list[int]]]:  # (shard name, row group, rows read in it)
        return sorted((os.path.basename(str(g.path)), g.group, list(g.rows)) for g in found)

    assert layout(groups) == layout(index_shards(builds["local"] / "ieiw"))
    batch = next(iter(DataLoader(ShardPairs(groups, resolution=32, shuffle_buffer=1, epochs=1), batch_size=4)))
    assert tuple(batch["source"].shape) == (4, 3, 32, 32) and len(batch["id"]) == 4


@pytest.mark.slow
def test_verify_names_a_corrupted_gcs_object(gcs, builds):
    verify_names_a_corrupted_shard(gcs["fs"], f"{OUT}/ieiw", gcs["env"])
