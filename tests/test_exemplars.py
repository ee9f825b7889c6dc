"""The exemplar index (ieiw/builders/exemplars.py): exclusions as properties over random clustered databases
(a seeded loop: hypothesis is not installed), on the flat and the IVF-PQ paths; persistence, rebuilds and
broken folders."""

from __future__ import annotations

import json
import os

import faiss
import numpy as np
import pytest

from ieiw.builders.exemplars import (
    MANIFEST,
    META,
    ExemplarIndex,
    ExemplarIndexConfig,
    ExemplarIndexError,
    ExemplarMeta,
    cosine,
    read_manifest,
    shard_name,
)
from ieiw.builders.vector_store import STORE, unit_rows

DATABASES = 50
LABELS = ["cat", "dog", "car", "cup", None]


def unit(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, np.float32)
    return np.ascontiguousarray(array / np.linalg.norm(array, axis=1, keepdims=True), dtype=np.float32)


def clustered(rng: np.random.Generator, count: int, dim: int, clusters: int, spread: float) -> np.ndarray:
    centres = rng.standard_normal((clusters, dim))
    return unit(centres[rng.integers(0, clusters, count)] + spread * rng.standard_normal((count, dim)))


def random_database(seed: int, count: int, dim: int) -> tuple[np.ndarray, dict[str, list]]:
    """Clustered vectors in images of 1-10 objects, labels from a small vocabulary (some None), with
    near-duplicates and exact duplicates planted in other images."""
    rng = np.random.default_rng(seed)
    vectors = clustered(rng, count, dim, int(rng.integers(2, 20)), float(rng.uniform(0.1, 1.0)))
    copies = rng.choice(count, size=count // 10, replace=False)
    targets = rng.choice(np.setdiff1d(np.arange(count), copies), size=len(copies), replace=False)
    jitter = rng.uniform(0, 0.05) * rng.standard_normal((len(copies), dim))
    vectors[targets] = unit(vectors[copies] + jitter * (rng.random((len(copies), 1)) < 0.7))  # 30% exact copies
    image_sizes = rng.integers(1, 11, count)
    images = np.repeat(np.arange(count), image_sizes)[:count]
    rng.shuffle(images)
    meta = {"image_id": [f"img{i}" for i in images], "record_id": [f"rec{row}" for row in range(count)],
            "label": [LABELS[i] for i in rng.integers(0, len(LABELS), count)]}
    return vectors, meta


def stored(vectors: np.ndarray) -> np.ndarray:
    """The vectors as the index keeps them: unit norm, float32 below flat_below (50k) vectors, as every
    database here is (float16 above: tests/test_exemplar_scale.py)."""
    assert len(vectors) < ExemplarIndexConfig().flat_below
    return unit_rows(vectors)


def brute_force(vectors: np.ndarray, meta: dict[str, list], query: np.ndarray, image: str, label: str | None,
                config: ExemplarIndexConfig, k: int) -> tuple[list[int], int]:
    """The exact answer over the stored vectors: top-k valid rows by (-similarity, row), and how many
    rows are valid."""
    sims = cosine(stored(vectors), query)
    valid = np.array([meta["image_id"][row] != image for row in range(len(vectors))])
    if config.similarity_ceiling is not None:
        valid &= sims <= config.similarity_ceiling
    if config.exclude_same_label and label is not None:
        valid &= np.array([lab != label for lab in meta["label"]])
    rows = np.flatnonzero(valid)
    order = np.lexsort((rows, -sims[rows]))
    return rows[order][:k].tolist(), len(rows)


def queries_for(rng: np.random.Generator, vectors: np.ndarray, meta: dict[str, list], count: int,
                dim: int) -> tuple[np.ndarray, list[str], list[str | None]]:
    """Half are database vectors queried with their own image (the region looking for a partner), half
    fresh vectors near database ones, some from images of the database, some from new images."""
    own = rng.choice(len(vectors), size=count // 2, replace=False)
    near = rng.choice(len(vectors), size=count - len(own))
    fresh = unit(vectors[near] + 0.2 * rng.standard_normal((len(near), dim)))
    queries = np.concatenate([vectors[own], fresh])
    images = [meta["image_id"][row] for row in own] + [
        meta["image_id"][row] if rng.random() < 0.5 else f"new{j}" for j, row in enumerate(near)]
    labels = [meta["label"][row] for row in own] + [LABELS[i] for i in rng.integers(0, len(LABELS), len(near))]
    return queries, images, labels


def check_matches(index: ExemplarIndex, vectors: np.ndarray, meta: dict[str, list], queries: np.ndarray,
                  images: list[str], labels: list[str | None], results: list, config: ExemplarIndexConfig,
                  k: int, exact: bool) -> None:
    assert len(results) == len(queries)
    for query, image, label, matches in zip(queries, images, labels, results, strict=True):
        expected, valid = brute_force(vectors, meta, query, image, label, config, k)
        rows = [m.row for m in matches]
        assert all(m.image_id != image for m in matches), "an exemplar of the query's own image"
        if config.similarity_ceiling is not None:
            assert all(m.similarity <= config.similarity_ceiling for m in matches), "a near-duplicate"
        if config.exclude_same_label and label is not None:
            assert all(m.label != label for m in matches), "the query's own label"
        assert len(set(rows)) == len(rows)
        assert len(matches) == min(k, valid), "widening stops only at k valid exemplars or an exhausted index"
        keys = [(-m.similarity, m.row) for m in matches]
        assert keys == sorted(keys), "best first, ties by row"
        for m in matches:
            assert (m.record_id, m.image_id, m.label) == (meta["record_id"][m.row], meta["image_id"][m.row],
                                                          meta["label"][m.row])
        if exact:  # flat, or IVF-PQ re-ranked: the similarities are the true cosines
            true = cosine(stored(vectors)[rows], query) if rows else np.zeros(0)
            assert np.array_equal(np.array([m.similarity for m in matches]), true)
        if index.kind == "flat":
            assert rows == expected


def random_config(rng: np.random.Generator, kind: str, count: int, dim: int) -> ExemplarIndexConfig:
    fields = {"kind": kind, "similarity_ceiling": float(rng.choice([rng.uniform(0.8, 0.999), 1.0])),
              "exclude_same_label": bool(rng.random() < 0.5), "seed": int(rng.integers(0, 1000)), "threads": 2}
    if kind == "ivfpq":
        nlist = int(rng.integers(2, 17))
        fields.update(nlist=nlist, nprobe=int(rng.integers(1, nlist + 1)), nbits=int(rng.choice([4, 6])),
                      m=int(rng.choice([m for m in (2, 4, 8) if dim % m == 0])),
                      refine=[None, 1.0, 2.0, 4.0][int(rng.integers(0, 4))])
    return ExemplarIndexConfig(**fields)


@pytest.mark.parametrize("kind", ["flat", "ivfpq"])
def test_queries_never_return_the_source_image_nor_near_duplicates_nor_the_same_label(kind):
    """Property over 50 random clustered databases per path: every exclusion holds, k results whenever
    k valid exemplars exist, best first with ties by row; flat equals brute force exactly."""
    for seed in range(DATABASES):
        rng = np.random.default_rng(1000 + seed)
        count, dim = int(rng.integers(60 if kind == "flat" else 200, 1200)), int(rng.choice([8, 16, 32]))
        vectors, meta = random_database(seed, count, dim)
        config = random_config(rng, kind, count, dim)
        index = ExemplarIndex.build(vectors, meta, config)
        assert index.kind == kind
        queries, images, labels = queries_for(rng, vectors, meta, 24, dim)
        k = int(rng.integers(1, 13))
        results = index.query(queries, images, labels, k=k)
        exact = kind == "flat" or config.refine is not None
        check_matches(index, vectors, meta, queries, images, labels, results, config, k, exact)


@pytest.mark.parametrize("kind", ["flat", "ivfpq"])
def test_a_query_has_the_same_results_alone_as_in_a_batch(kind):
    vectors, meta = random_database(7, 800, 16)
    config = ExemplarIndexConfig(kind=kind, nlist=8 if kind == "ivfpq" else None, nprobe=1, m=4, nbits=4)
    index = ExemplarIndex.build(vectors, meta, config)
    queries, images, labels = queries_for(np.random.default_rng(3), vectors, meta, 40, 16)
    together = index.query(queries, images, labels, k=5)
    alone = [index.query(queries[i:i + 1], images[i:i + 1], labels[i:i + 1], k=5)[0] for i in range(len(queries))]
    assert together == alone


def test_exhausted_index_returns_what_there_is():
    vectors, _ = random_database(1, 12, 8)
    meta = [ExemplarMeta(image_id="a" if row < 9 else "b", record_id=str(row), label=None) for row in range(12)]
    index = ExemplarIndex.build(vectors, meta, ExemplarIndexConfig(similarity_ceiling=None))
    got = index.query(vectors[:2], ["a", "b"], k=5)
    assert [m.row for m in got[0]] and {m.image_id for m in got[0]} == {"b"} and len(got[0]) == 3
    assert {m.image_id for m in got[1]} == {"a"} and len(got[1]) == 5
    only = ExemplarIndex.build(vectors[:3], [("a", "x"), ("a", "y"), ("a", "z")], ExemplarIndexConfig())
    assert only.query(vectors[:1], ["a"], k=3) == [[]]
    assert only.query(np.zeros((0, 8), np.float32), [], k=3) == []


# -- IVF-PQ on a small real setting: 20k vectors, nlist 64, m 8 ------------------------------------------
@pytest.fixture(scope="module")
def small_ivfpq():
    rng = np.random.default_rng(20)
    count, dim = 20_000, 64
    vectors = clustered(rng, count, dim, 200, 0.35)
    meta = {"image_id": [f"img{row // 4}" for row in range(count)], "record_id": [f"r{row}" for row in range(count)],
            "label": [LABELS[row % len(LABELS)] for row in range(count)]}
    config = ExemplarIndexConfig(kind="ivfpq", nlist=64, m=8, nbits=8, nprobe=8, refine=4.0, exclude_same_label=True,
                                 threads=2)
    index = ExemplarIndex.build(vectors, meta, config, inputs={"features-000.parquet": "ab" * 32})
    queries, images, labels = queries_for(rng, vectors, meta, 200, dim)
    return vectors, meta, config, index, (queries, images, labels)


def test_ivfpq_small_setting_excludes_and_finds_the_neighbours(small_ivfpq):
    vectors, meta, config, index, (queries, images, labels) = small_ivfpq
    assert (index.kind, index.nlist, index.m) == ("ivfpq", 64, 8)
    results = index.query(queries, images, labels, k=10)
    check_matches(index, vectors, meta, queries, images, labels, results, config, 10, exact=True)
    flat = ExemplarIndex.build(vectors, meta, config.model_copy(update={"kind": "flat", "nlist": None}))
    exact = flat.query(queries, images, labels, k=10)
    recall = np.mean([len({m.row for m in a} & {m.row for m in b}) / 10 for a, b in zip(results, exact, strict=True)])
    assert recall >= 0.9, recall


def test_ivfpq_rebuild_and_reload_give_identical_results(small_ivfpq, tmp_path):
    vectors, meta, config, index, (queries, images, labels) = small_ivfpq
    first = index.query(queries, images, labels, k=10)
    rebuilt = ExemplarIndex.build(vectors, meta, config, inputs={"features-000.parquet": "ab" * 32})
    assert rebuilt.query(queries, images, labels, k=10) == first
    index.save(tmp_path / "index")
    loaded = ExemplarIndex.load(tmp_path / "index")
    assert loaded.query(queries, images, labels, k=10) == first
    assert all(np.array_equal(a, b) for a, b in zip(loaded.search(queries, 10), index.search(queries, 10), strict=True))
    assert loaded.inputs == {"features-000.parquet": "ab" * 32} and loaded.config == config
    manifest = read_manifest(tmp_path / "index")
    assert manifest["kind"] == "ivfpq" and manifest["count"] == 20_000 and manifest["nlist"] == 64
    # query-time fields may change on load; build fields may not
    wider = ExemplarIndex.load(tmp_path / "index", config.model_copy(update={"nprobe": 64, "refine": 8.0}))
    assert wider.config.nprobe == 64
    with pytest.raises(ExemplarIndexError, match=r"index: built with other parameters \(nlist\)"):
        ExemplarIndex.load(tmp_path / "index", config.model_copy(update={"nlist": 128}))


def test_ivfpq_rebuild_with_another_seed_still_excludes(small_ivfpq):
    vectors, meta, config, _, (queries, images, labels) = small_ivfpq
    other = ExemplarIndex.build(vectors, meta, config.model_copy(update={"seed": 5, "nbits": 4, "m": 16}))
    assert type(faiss.downcast_index(other.index)).__name__ == "IndexIVFPQFastScan"
    check_matches(other, vectors, meta, queries, images, labels, other.query(queries, images, labels, k=3),
                  config, 3, exact=True)


# -- flat: persistence and rebuilds ----------------------------------------------------------------------
def test_flat_rebuild_and_reload_give_identical_results(tmp_path):
    vectors, meta = random_database(11, 3000, 32)
    config = ExemplarIndexConfig(exclude_same_label=True)
    index = ExemplarIndex.build(vectors, meta, config, inputs="sha256:1234")
    assert index.kind == "flat"
    queries, images, labels = queries_for(np.random.default_rng(0), vectors, meta, 100, 32)
    first = index.query(queries, images, labels, k=7)
    assert ExemplarIndex.build(vectors, meta, config).query(queries, images, labels, k=7) == first
    loaded = ExemplarIndex.load(index.save(tmp_path / "flat"))
    assert loaded.query(queries, images, labels, k=7) == first and loaded.inputs == "sha256:1234"


def test_unnormalised_vectors_are_normalised_and_metadata_forms_agree():
    rng = np.random.default_rng(2)
    raw = rng.standard_normal((300, 16)) * rng.uniform(0.1, 10, (300, 1))
    meta = {"image_id": [str(r // 3) for r in range(300)], "record_id": [str(r) for r in range(300)]}
    a = ExemplarIndex.build(raw, meta)
    b = ExemplarIndex.build(unit(raw), [(str(r // 3), str(r)) for r in range(300)])
    scaled = a.query(raw[:20] * 3, [str(r // 3) for r in range(20)], k=4)
    normalised = b.query(unit(raw[:20]), [str(r // 3) for r in range(20)], k=4)
    assert [[m.row for m in ms] for ms in scaled] == [[m.row for m in ms] for ms in normalised]
    assert np.allclose([m.similarity for ms in scaled for m in ms], [m.similarity for ms in normalised for m in ms],
                       atol=1e-6)
    assert all(m.label is None for ms in a.query(raw[:5], ["x"] * 5, k=2) for m in ms)
    with pytest.raises(ValueError, match="vector 1 is zero"):
        ExemplarIndex.build(np.stack([raw[0], np.zeros(16)]), [("a", "1"), ("b", "2")])
    with pytest.raises(ValueError, match="image_id has 2 values for 300 vectors"):
        ExemplarIndex.build(raw, {"image_id": ["a", "b"], "record_id": [str(r) for r in range(300)]})
    with pytest.raises(ValueError, match="dimension 8, the index 16"):
        a.query(raw[:1, :8], ["x"])


def test_auto_kind_and_derived_parameters():
    config = ExemplarIndexConfig()
    assert config.resolved_kind(49_999) == "flat" and config.resolved_kind(50_000) == "ivfpq"
    assert config.resolved_nlist(1_000_000) == 4000 and config.resolved_nlist(20_000) == 512
    assert config.resolved_m(768) == 192 and config.resolved_m(100) == 25 and config.resolved_m(7) == 1
    assert ExemplarIndexConfig(nbits=8).resolved_m(768) == 96 and ExemplarIndexConfig(nbits=8).resolved_m(100) == 10
    assert config.build_key() == ExemplarIndexConfig(nprobe=5, similarity_ceiling=0.5).build_key()
    with pytest.raises(ValueError, match="does not divide"):
        ExemplarIndexConfig(m=7).resolved_m(768)
    vectors, meta = random_database(3, 400, 8)
    small = ExemplarIndex.build(vectors, meta, ExemplarIndexConfig(flat_below=300, nbits=4, m=2))
    assert small.kind == "ivfpq"


# -- broken folders ----------------------------------------------------------------------------------------
def test_missing_or_corrupt_index_folder_names_the_folder(tmp_path):
    vectors, meta = random_database(4, 500, 16)
    index = ExemplarIndex.build(vectors, meta, ExemplarIndexConfig(kind="ivfpq", nlist=4, m=4))
    folder = tmp_path / "exemplars"
    shard = shard_name(0)

    with pytest.raises(ExemplarIndexError, match=f"{folder}: no exemplar index here"):
        ExemplarIndex.load(folder)
    folder.mkdir()
    with pytest.raises(ExemplarIndexError, match=f"{folder}: not a complete exemplar index"):
        ExemplarIndex.load(folder)
    assert read_manifest(folder) is None

    def fresh() -> None:
        index.save(folder)
        ExemplarIndex.load(folder)  # sound again

    fresh()
    (folder / MANIFEST).write_text("{not json")
    with pytest.raises(ExemplarIndexError, match=f"{folder}: {MANIFEST} is unreadable"):
        ExemplarIndex.load(folder)

    for name in (META, shard, STORE):
        fresh()
        (folder / name).unlink()
        with pytest.raises(ExemplarIndexError, match=f"{folder}: {name} is missing"):
            ExemplarIndex.load(folder)

    for name in (shard, STORE):
        fresh()
        data = bytearray((folder / name).read_bytes())
        (folder / name).write_bytes(bytes(data[: len(data) // 2]))
        with pytest.raises(ExemplarIndexError, match=f"{folder}: {name} does not match its manifest"):
            ExemplarIndex.load(folder)

        fresh()
        data = bytearray((folder / name).read_bytes())
        data[len(data) // 2] ^= 0xFF  # same size, other bytes (the store's sampled blocks include its middle)
        data[-1] ^= 0xFF
        (folder / name).write_bytes(bytes(data))
        with pytest.raises(ExemplarIndexError, match=f"{folder}: {name} does not match its manifest"):
            ExemplarIndex.load(folder)

    fresh()
    (folder / shard).write_bytes(b"\0" * (folder / shard).stat().st_size)  # garbage FAISS can't read
    with pytest.raises(ExemplarIndexError, match=f"{folder}: unreadable exemplar index"):
        ExemplarIndex.load(folder, verify=False)


def test_save_replaces_an_index_whole_and_leaves_no_partial_folder(tmp_path):
    vectors, meta = random_database(5, 400, 16)
    folder = tmp_path / "exemplars"
    ExemplarIndex.build(vectors, meta, inputs="one").save(folder)
    (folder / "stray.txt").write_text("from an older layout")
    ExemplarIndex.build(vectors[:200], {k: v[:200] for k, v in meta.items()}, inputs="two").save(folder)
    assert sorted(os.listdir(folder)) == sorted([STORE, META, MANIFEST])
    assert os.listdir(tmp_path) == ["exemplars"]
    loaded = ExemplarIndex.load(folder)
    assert loaded.count == 200 and loaded.inputs == "two"
    manifest = json.loads((folder / MANIFEST).read_text())
    assert set(manifest["files"]) == {META} and manifest["config"]["kind"] == "auto"


def test_ivf_probes_more_cells_when_the_probed_ones_run_out():
    vectors, meta = random_database(9, 400, 16)
    config = ExemplarIndexConfig(kind="ivfpq", nlist=16, nprobe=1, m=4, nbits=4, similarity_ceiling=None)
    index = ExemplarIndex.build(vectors, meta, config)
    _, rows = index.search(vectors[:10], 60)
    assert (rows < 0).any(), "one cell holds fewer than 60 vectors: the plain search runs out"
    images = [meta["image_id"][row] for row in range(10)]
    results = index.query(vectors[:10], images, k=60)
    check_matches(index, vectors, meta, vectors[:10], images, [None] * 10, results, config, 60, exact=True)
