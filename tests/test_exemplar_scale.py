"""The exemplar index at scale (ieiw/builders/exemplars.py, vector_store.py, exemplar_shards.py): built from
exemplar shards under a memory limit the old gather path (``to_pylist`` on the vector column) exceeds;
shards queried as one; nprobe calibrated and recorded; the training sample scaled with nlist; vectors
read as Arrow buffers."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ieiw_testing import REPO

from ieiw.builders.exemplar_shards import REGIONS, UNITS, build_exemplar_index, open_regions
from ieiw.builders.exemplars import ExemplarIndex, ExemplarIndexConfig, read_manifest
from ieiw.builders.vector_store import STORE, VectorStore, arrow_vectors, exact_top_k
from ieiw.schemas.shards import write_shard

COUNT, DIM, SHARDS, QUERIES = 200_000, 768, 10, 200
LIMIT_GB = 3.0  # private memory a child may add after its imports: the old gather needs ~5 (200k x 768 floats as Python objects)
NEW_ERRORS: list[str] = []


def clustered(rng: np.random.Generator, count: int, dim: int, centres: np.ndarray, spread: float) -> np.ndarray:
    x = centres[rng.integers(0, len(centres), count)] + spread * rng.standard_normal((count, dim), dtype=np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def vector_column(vectors: np.ndarray) -> pa.Array:
    offsets = pa.array(np.arange(len(vectors) + 1, dtype=np.int32) * vectors.shape[1])
    return pa.ListArray.from_arrays(offsets, pa.array(vectors.reshape(-1)))


def exemplar_shard(path: Path, vectors: np.ndarray, first: int) -> Path:
    """A shard as the index stage writes one (the columns the index and the region table read)."""
    rows = np.arange(first, first + len(vectors))
    table = pa.table({
        "position": pa.array(np.arange(len(vectors), dtype=np.int32)),
        "dataset": pa.array(["sa-1b"] * len(vectors)),
        "record_id": pa.array([f"r{row}" for row in rows]),
        "image_id": pa.array([f"img{row // 8}" for row in rows]),
        "label": pa.array([["cat", "dog", "cup", "car"][row % 4] for row in rows]),
        "label_source": pa.array(["dataset"] * len(vectors)),
        "label_score": pa.array([None] * len(vectors), pa.float32()),
        "vector": vector_column(vectors),
    })
    write_shard(table, path)
    return path


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> tuple[Path, list[Path], np.ndarray, np.ndarray]:
    root = tmp_path_factory.mktemp("exemplar-scale")
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((400, DIM), dtype=np.float32)
    paths = []
    per = COUNT // SHARDS
    for number in range(SHARDS):
        paths.append(exemplar_shard(root / "exemplars" / f"replace-sa1b0-{number:05d}.parquet",
                                    clustered(rng, per, DIM, centres, 0.6), number * per))
    queries = clustered(rng, QUERIES, DIM, centres, 0.6)
    return root, paths, queries, centres


CHILD = """
import resource, sys, json
from pathlib import Path
import numpy as np, pyarrow as pa
sys.path.insert(0, {repo!r})
from ieiw.builders.exemplar_shards import build_exemplar_index
from ieiw.builders.exemplars import ExemplarIndexConfig
from ieiw.schemas.shards import read_shard, concat_compact
shards = [Path(p) for p in {shards!r}]
# RLIMIT_DATA: private writable memory (heap, anonymous maps, stacks), not the store's read-only file map nor
# the address space glibc reserves per thread arena, which RLIMIT_AS would count
data = int([line.split()[1] for line in open("/proc/self/status") if line.startswith("VmData")][0]) * 1024
resource.setrlimit(resource.RLIMIT_DATA, (data + int({limit} * 2**30), data + int({limit} * 2**30)))
try:
    if {old!r}:  # the gather of commit 213fe10: every float through a Python list
        regions = concat_compact(read_shard(s, columns=["vector", "record_id"]) for s in shards)
        vectors = np.asarray(regions["vector"].to_pylist(), dtype=np.float32)
        print(json.dumps({{"built": True}}))
    else:
        index, _ = build_exemplar_index(shards, Path({folder!r}), ExemplarIndexConfig(threads=2), "fp",
                                        drop=["vector"])
        queries = np.load({queries!r})
        _, rows = index.search(queries, 10)
        np.save({result!r}, rows)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(json.dumps({{"built": True, "peak": peak, "kind": index.kind}}))
except MemoryError:
    import traceback
    traceback.print_exc()
    print(json.dumps({{"built": False, "memory_error": True}}))
"""


def child(root: Path, paths: list[Path], old: bool) -> dict:
    script = CHILD.format(repo=str(REPO), shards=[str(p) for p in paths], limit=LIMIT_GB, old=old,
                          folder=str(root / "index"), queries=str(root / "queries.npy"), result=str(root / "rows.npy"))
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], check=False, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    NEW_ERRORS[:] = [done.stderr[-3000:]]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_200k_vectors_index_from_exemplar_shards_under_a_memory_limit_the_old_gather_exceeds(shards):
    root, paths, queries, _ = shards
    np.save(root / "queries.npy", queries)
    old = child(root, paths, old=True)
    assert old == {"built": False, "memory_error": True}, "the old to_pylist gather fits the limit: no proof"
    new = child(root, paths, old=False)
    assert new["built"] and new["kind"] == "ivfpq", (new, NEW_ERRORS)
    # the same neighbours: the exact float32 top-10 of each query, from the vectors the shards hold
    vectors = np.concatenate([arrow_vectors(pq.read_table(p, columns=["vector"])["vector"]) for p in paths])
    truth = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :10]
    found = np.load(root / "rows.npy")
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])
    assert recall >= 0.97, recall
    manifest = read_manifest(root / "index")
    calibration = manifest["calibration"]
    assert calibration["reached"] and calibration["recall"] >= 0.99 and calibration["queries"] == 500
    assert manifest["train_rows"] >= 39 * manifest["nlist"]
    # an in-memory build of the same vectors is the same index: identical neighbours
    loaded = ExemplarIndex.load(root / "index", ExemplarIndexConfig(threads=2))
    again = ExemplarIndex.build(vectors, {"image_id": loaded.table["image_id"], "record_id": loaded.table["record_id"],
                                          "label": loaded.table["label"]}, ExemplarIndexConfig(threads=2))
    assert np.array_equal(again.search(queries, 10)[1], found)
    # the region table, memory-mapped, in index-row order; each unit's first row
    regions, starts = open_regions(root / "index")
    assert regions.num_rows == COUNT and (root / "index" / REGIONS).exists() and (root / "index" / UNITS).exists()
    assert starts == {p.stem: number * (COUNT // SHARDS) for number, p in enumerate(paths)}
    assert regions["record_id"][123_456].as_py() == "r123456" and regions["unit"][123_456].as_py() == paths[6].stem


def test_shards_are_searched_as_one_index_resident_or_in_turn(tmp_path):
    rng = np.random.default_rng(4)
    vectors = clustered(rng, 3000, 32, rng.standard_normal((20, 32), dtype=np.float32), 0.5)
    meta = {"image_id": [f"i{r // 3}" for r in range(3000)], "record_id": [str(r) for r in range(3000)],
            "label": [["a", "b", None][r % 3] for r in range(3000)]}
    config = ExemplarIndexConfig(kind="ivfpq", nlist=16, m=8, threads=1, exclude_same_label=True)
    one = ExemplarIndex.build(vectors, meta, config)
    split = ExemplarIndex.build(vectors, meta, config.model_copy(update={"shard_size": 1000}))
    assert len(one.manifest()["shards"]) == 1 and len(split.manifest()["shards"]) == 3
    queries = clustered(rng, 50, 32, vectors[:50], 0.1)
    images = [meta["image_id"][r] for r in range(50)]
    for nprobe in (1, 4, 16):
        a, b = one.search(queries, 20, nprobe=nprobe), split.search(queries, 20, nprobe=nprobe)
        assert np.array_equal(a[1], b[1]) and np.allclose(a[0], b[0])
    expected = one.query(queries, images, [meta["label"][r] for r in range(50)], k=7)
    assert split.query(queries, images, [meta["label"][r] for r in range(50)], k=7) == expected
    split.save(tmp_path / "index")
    turn = ExemplarIndex.load(tmp_path / "index", config.model_copy(update={"shard_size": 1000,
                                                                             "max_resident_shards": 1}))
    assert turn.query(queries, images, [meta["label"][r] for r in range(50)], k=7) == expected
    assert len(turn._resident) == 1, "one shard at a time"


def test_nprobe_is_calibrated_to_the_target_and_recorded(tmp_path):
    rng = np.random.default_rng(5)
    vectors = clustered(rng, 20_000, 32, rng.standard_normal((300, 32), dtype=np.float32), 0.45)
    meta = {"image_id": [str(r) for r in range(20_000)], "record_id": [str(r) for r in range(20_000)]}
    loose = ExemplarIndex.build(vectors, meta, ExemplarIndexConfig(kind="ivfpq", recall_target=0.5, threads=1))
    strict = ExemplarIndex.build(vectors, meta, ExemplarIndexConfig(kind="ivfpq", recall_target=0.98, threads=1))
    low, high = loose.manifest()["calibration"], strict.manifest()["calibration"]
    assert low["reached"] and high["reached"] and low["nprobe"] * low["refine"] < high["nprobe"] * high["refine"]
    assert (loose.nprobe, loose.refine) == (low["nprobe"], low["refine"])
    assert (strict.nprobe, strict.refine) == (high["nprobe"], high["refine"])
    # each refine factor walks the nprobe ladder until the target (with its margin) or a plateau; the choice
    # is the cheapest pair that reached it
    reached = [step for step in high["sweep"] if step["reached"]]
    assert min(reached, key=lambda step: (step["cost"], step["nprobe"]))["nprobe"] == high["nprobe"]
    for refine in {step["refine"] for step in high["sweep"]}:
        ladder = [step["nprobe"] for step in high["sweep"] if step["refine"] == refine]
        assert ladder == [n for n in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
                          if n <= ladder[-1]]
        steps = [step for step in high["sweep"] if step["refine"] == refine]
        assert not any(step["reached"] for step in steps[:-1]), "the sweep stops at the first nprobe that reaches"
    assert all(step["recall"] >= 0.98 for step in reached)
    # the recorded recall is what a fresh measurement gives: held-out rows, their own row excluded
    rows = np.arange(0, 20_000, 67)[:300]
    _, truth = exact_top_k(strict.store, strict.store.gather(rows), 10, exclude=rows)
    _, found = strict.search(strict.store.gather(rows), 11)  # the calibrated nprobe and refine
    found = np.stack([np.concatenate([f[f != r], [-1]])[:10] for f, r in zip(found, rows, strict=True)])
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])
    assert recall >= 0.97, recall
    # an explicit nprobe overrides the calibration on load; a folder keeps it
    strict.save(tmp_path / "i")
    fixed = ExemplarIndex.load(tmp_path / "i", ExemplarIndexConfig(kind="ivfpq", recall_target=0.98, nprobe=2))
    assert (fixed.nprobe, fixed.refine) == (2, 8.0), "a set nprobe comes with the configured refine"
    assert (ExemplarIndex.load(tmp_path / "i").nprobe, ExemplarIndex.load(tmp_path / "i").refine) == (
        high["nprobe"], high["refine"])


def test_training_sample_scales_with_nlist_within_the_memory_budget():
    config = ExemplarIndexConfig()
    # below ~1.25M vectors: 4 sqrt(n) cells, 39 points each
    assert config.resolved_nlist(1_000_000) == 4000 and config.train_rows(1_000_000, 4000, 768) == 156_000
    # above: the 512 MiB budget caps nlist, never the points per centroid (the old fixed 160k gave 13 at 10M)
    for count in (10_000_000, 100_000_000):
        nlist = config.resolved_nlist(count, 768)
        rows = config.train_rows(count, nlist, 768)
        assert nlist == 4481 and rows >= 39 * nlist and rows * 768 * 4 <= 512 * 2**20
    bigger = ExemplarIndexConfig(train_memory_mb=4096)
    assert bigger.resolved_nlist(10_000_000, 768) == int(4 * np.sqrt(10_000_000))
    with pytest.raises(ValueError, match="nlist 20000 needs 780,000 training vectors .* over train_memory_mb 512"):
        ExemplarIndexConfig(nlist=20_000).train_rows(10_000_000, 20_000, 768)


def test_arrow_vectors_are_read_as_buffers_and_bad_columns_name_the_file(tmp_path):
    vectors = np.arange(24, dtype=np.float32).reshape(6, 4)
    column = vector_column(vectors)
    view = arrow_vectors(column)
    assert np.array_equal(view, vectors) and np.shares_memory(view, np.frombuffer(column.values.buffers()[1],
                                                                                    np.float32))
    assert np.array_equal(arrow_vectors(column.slice(2, 3)), vectors[2:5]), "a sliced chunk keeps its offset"
    chunked = pa.chunked_array([column.slice(0, 2), column.slice(2, 4)])
    assert np.array_equal(arrow_vectors(chunked), vectors)
    doubles = pa.array(vectors.astype(np.float64).tolist(), pa.list_(pa.float64()))
    assert arrow_vectors(doubles).dtype == np.float32
    with pytest.raises(ValueError, match=r"x\.parquet: vectors of 3\.\.4 values, expected 4"):
        arrow_vectors(pa.array([[1.0, 2, 3, 4], [1.0, 2, 3]]), 4, where="x.parquet")
    with pytest.raises(ValueError, match=r"x\.parquet: 1 rows have no vector"):
        arrow_vectors(pa.array([[1.0, 2], None]), where="x.parquet")
    with pytest.raises(ValueError, match=r"x\.parquet: 1 missing values inside vectors"):
        arrow_vectors(pa.array([[1.0, None]]), where="x.parquet")


def test_a_bad_vector_in_a_shard_stops_the_index_build_naming_the_shard_and_leaves_no_partial(tmp_path):
    rng = np.random.default_rng(6)
    good = exemplar_shard(tmp_path / "exemplars" / "u-00000.parquet",
                          clustered(rng, 64, 16, rng.standard_normal((4, 16), dtype=np.float32), 0.3), 0)
    vectors = clustered(rng, 64, 16, rng.standard_normal((4, 16), dtype=np.float32), 0.3)
    vectors[5] = np.nan
    bad = exemplar_shard(tmp_path / "exemplars" / "u-00001.parquet", vectors, 64)
    with pytest.raises(ValueError, match=rf"{bad}: vector 69 is zero or not finite"):
        build_exemplar_index([good, bad], tmp_path / "index", ExemplarIndexConfig(), "fp", drop=["vector"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exemplars"], "no index folder, no partial folder"


def test_the_store_streams_blocks_and_holds_float16_of_unit_vectors(tmp_path):
    rng = np.random.default_rng(7)
    raw = rng.standard_normal((1000, 24)).astype(np.float32) * 3
    meta = {"image_id": [str(r) for r in range(1000)], "record_id": [str(r) for r in range(1000)]}
    small = ExemplarIndex.build(raw, meta)  # below flat_below: float32, exact
    assert np.load(small.folder / STORE).dtype == np.float32
    index = ExemplarIndex.build(raw, meta, ExemplarIndexConfig(flat_below=500))
    store = VectorStore(index.folder / STORE)
    whole = np.load(index.folder / STORE)  # a standard .npy
    assert whole.dtype == np.float16 and whole.shape == (1000, 24)
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    assert np.abs(whole.astype(np.float32) - unit).max() < 1e-3
    blocks = list(store.blocks(300))
    assert [first for first, _ in blocks] == [0, 300, 600, 900]
    assert np.array_equal(np.concatenate([b for _, b in blocks]), whole.astype(np.float32))
    rows = np.array([999, 3, 500, 3])
    assert np.array_equal(store.gather(rows), whole[rows].astype(np.float32))
    assert np.array_equal(store.take(rows.reshape(2, 2)), whole[rows].astype(np.float32).reshape(2, 2, 24))


def test_a_region_whose_embedding_is_nan_or_zero_fails_bad_vector_and_the_unit_goes_on(tmp_path, monkeypatch):
    from ieiw.builders.region_sources import SA1BSourceConfig
    from ieiw.builders.replacement import ReplacementBuilder, ReplacementConfig
    from ieiw.schemas.units import BuildContext

    source = SA1BSourceConfig(root=tmp_path / "sa1b", samples={"images": 4, "seed": 3})
    builder = ReplacementBuilder(ReplacementConfig(sources=[source]),
                                 BuildContext(root=tmp_path, out_dir=tmp_path / "out", unit_size=4))
    builder.prepare()
    unit = builder.plan()[0]
    whole, _ = builder.index_unit(unit)
    assert whole.num_rows >= 4
    real = builder.features.image_features

    def broken(crops: list) -> np.ndarray:  # what an fp16 overflow or a blank crop can give
        vectors = np.array(real(crops), np.float32)
        vectors[1] = np.nan
        vectors[3] = 0.0
        return vectors

    monkeypatch.setattr(builder.features, "image_features", broken)
    table, stats = builder.index_unit(unit)
    assert stats["failures"]["bad_vector"] == 2 and table.num_rows == whole.num_rows - 2
    bad = {whole["record_id"][1].as_py(), whole["record_id"][3].as_py()}
    assert {f[1] for f in stats["failure_list"] if f[0] == "bad_vector"} == bad
    assert any("is not finite" in f[3] for f in stats["failure_list"]) and any(
        "is zero" in f[3] for f in stats["failure_list"])
    assert table["position"].to_pylist() == list(range(table.num_rows)), "positions stay the rows' own"
    assert not set(table["record_id"].to_pylist()) & bad
    assert np.isfinite(arrow_vectors(table["vector"])).all()
