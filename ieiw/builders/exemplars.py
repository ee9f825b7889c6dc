"""The exemplar database of the replacement source: for a region, the nearest object of *another* image.

The paper finds, for each segmented region, the nearest object in an object database with FAISS and
repaints the region with it. This module is that database: L2-normalised feature vectors (one per
object crop), each with its ``image_id``, ``record_id`` and optional ``label``; similarity is the inner
product, i.e. cosine. It is built to SA-1B scale (10M-100M objects) on one machine; its memory is a
stated function of the vector count N, never the corpus in RAM (docs/PERFORMANCE.md, "Exemplar index").

What a built index holds (a folder):

- ``vectors.npy``: every vector, unit norm, float16 (:mod:`ieiw.builders.vector_store`), written in
  batches as they stream in (:class:`IndexWriter`); 2 x dim bytes a vector on disk, none of it in RAM
  (float32 below ``flat_below`` vectors, where the 4 bytes cost nothing and cosines stay exact).
- ``kind: flat`` (``auto`` below ``flat_below`` vectors, 50k): ``IndexFlatIP`` made from the store at
  load, exact (4 x dim bytes a vector in RAM: a small-index path).
- ``kind: ivfpq``: IVF-PQ with inner product, in shards ``ivf-00000.faiss``... of at most ``shard_size``
  vectors, all sharing one trained coarse quantizer and PQ, so a search over the shards, merged, is
  the search of one index (same cells probed, same codes) whether or not they are resident together
  (``max_resident_shards``). Codes: ``m`` sub-quantizers of ``nbits``; with 4-bit codes (the default)
  ``IndexIVFPQFastScan``, FAISS's SIMD layout, ``m`` = dim / 4 (768-d: 96 bytes a vector + 8 for its
  id); other ``nbits`` ``IndexIVFPQ`` (m = dim / 8).

  ``nlist`` (default ~4 sqrt(N)) is capped so that each centroid gets ``train_per_centroid`` (>= 39,
  FAISS's minimum) training vectors within ``train_memory_mb`` (512 MiB: at 768-d 174,762 vectors, so
  nlist <= 4,481): above ~1.25M vectors nlist stops growing with N rather than starving k-means (the
  old fixed 160k sample gave ~13 points a centroid at 10M). The training sample is drawn with ``seed``
  and both k-means (the coarse quantizer's and the PQ's) use it: a rebuild from the same inputs gives
  the same results (threaded training is not guaranteed byte-identical across thread counts).

  **Refinement** (``refine``, default 8): ``refine`` x k IVF-PQ candidates are re-ranked with exact
  inner products against their float16 rows read from the store (a memory map: only the candidates'
  pages), not against a second float copy in RAM (the old ``IndexRefineFlat`` held 3 GB per million).

  **nprobe is calibrated** at build time: ``calibration_queries`` vectors of the store outside the
  training sample are searched for their 10 nearest *other* rows, exactly (one pass over the store),
  then with nprobe 1, 2, 3, 4, 6, 8, 12, ... until the lower end of the ~95% interval of recall@10 (mean -
  1.96 standard errors over the queries) reaches ``recall_target`` (0.99); the
  chosen nprobe, the recall reached and the whole sweep are kept in the manifest's ``calibration``.
  ``nprobe: null`` (the default) queries with it; a number overrides it.

A query (:meth:`ExemplarIndex.query`) never returns an exemplar of the query's own image, drops
near-duplicates above ``similarity_ceiling`` and, with ``exclude_same_label``, exemplars with the query's
label. To find ``k`` valid exemplars despite the exclusions it searches ``k' > k`` candidates and doubles
``k'`` (and ``nprobe`` when the probed cells run out) per query until it has ``k`` or the index is
exhausted. Similarities of the candidates are recomputed in float64 from the stored (float16) vectors,
so the ceiling, the order and the reported numbers do not depend on how FAISS batched the search; ties
are broken by the smaller row id, and a query whose ``k``-th result ties with the last candidate searched
is widened until the tie is resolved. The state of each query (k', nprobe) is its own, so a query's
results do not depend on the other queries of its batch. Without ``refine`` (IVF-PQ alone) the
similarities are FAISS's PQ estimates.

The folder also holds ``meta.parquet`` (row, image_id, record_id, label) and ``manifest.json`` (format,
kind, count, dim, config, the index parameters, the calibration, the caller's ``inputs`` fingerprint and
each file's size + sha256; the store's sha256 is taken as it is written, and a load checks its size and
a hash of 64 sampled blocks instead of reading 15-150 GB). Everything is written in a sibling
``.partial-<name>-*`` folder and renamed into place (an older index is first renamed aside, then
removed), so a reader sees the old index or the new one, or, if a kill lands between the two renames,
none (which reads as "not built"); :meth:`ExemplarIndex.load` names the folder in every error.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import math
import os
import shutil
import tempfile
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field, model_validator

from ieiw.builders.vector_store import STORE, VectorStore, VectorStoreWriter, exact_top_k, unit_rows
from ieiw.schemas.config import StrictModel
from ieiw.schemas.storage import folder_mode, fsync_dir, sha256_file

log = logging.getLogger(__name__)

FORMAT = "ieiw-exemplar-index"
FORMAT_VERSION = 2
META = "meta.parquet"
MANIFEST = "manifest.json"
PARTIAL = ".partial-"
ADD_BATCH = 65_536  # vectors read from the store and added per FAISS call
RERANK_QUERIES = 64  # queries re-ranked together: 64 x (refine x k) x dim float32 at a time (~16 MB at 768-d)
CALIBRATION_K = 10
REFINE_STEPS = (1, 2, 4, 8)  # the calibration tries refine x these
PLATEAU = 0.002  # a recall gain below this is no gain (the calibration's nprobe sweep stops after two)
# the calibration's cost model, microseconds: one fast-scan code scanned, one candidate re-ranked (a random
# read of 2 x dim bytes from the store); measured on 768-d, 2 threads (docs/PERFORMANCE.md)
SCAN_COST = 0.001
RERANK_COST = 0.6
TIE_MARGIN = 1e-5  # float32 (FAISS, re-rank) vs float64 (recomputed) similarities differ by ~1e-7
META_SCHEMA = pa.schema([("row", pa.int64()), ("image_id", pa.string()), ("record_id", pa.string()),
                         ("label", pa.string())])


def shard_name(number: int) -> str:
    return f"ivf-{number:05d}.faiss"


class ExemplarIndexError(RuntimeError):
    """An exemplar index folder that is missing, incomplete, corrupt, or built with other parameters."""


class ExemplarIndexConfig(StrictModel):
    """The exemplar index: what is built (kind .. seed) and how it is queried (nprobe, refine's factor,
    resident shards, threads, the exclusions). ``build_key()`` is the part a rebuild depends on."""

    kind: Literal["auto", "flat", "ivfpq"] = Field("auto", description="auto: flat below `flat_below` vectors")
    flat_below: int = Field(50_000, ge=1, description="auto: exact IndexFlatIP below this many vectors")
    nlist: int | None = Field(None, ge=1, description="IVF cells; default ~4 sqrt(n), at most n / train_per_centroid"
                                                      " and what train_memory_mb can train")
    m: int | None = Field(None, ge=1, description="PQ sub-quantizers (must divide the dimension); default: dim / 4"
                                                   " with 4-bit codes, dim / 8 otherwise (96 bytes a vector at 768-d)")
    nbits: int = Field(4, ge=1, le=16, description="bits per PQ code; 4: FAISS's fast-scan layout (IndexIVFPQFastScan)")
    train_per_centroid: int = Field(39, ge=1, description="training vectors per IVF cell (39: FAISS's minimum)")
    train_memory_mb: int = Field(512, ge=1, description="float32 training sample budget; caps the default nlist at"
                                                        " budget / (4 dim train_per_centroid)")
    shard_size: int = Field(20_000_000, ge=1, description="vectors per IVF shard file (~2 GB of codes at 768-d)")
    recall_target: float = Field(0.99, gt=0, le=1, description="recall@10 that the build-time nprobe calibration"
                                                                " reaches on held-out vectors of the store")
    calibration_queries: int = Field(500, ge=1, description="held-out store vectors the nprobe calibration searches")
    seed: int = Field(0, description="training sample, calibration queries and k-means seed")
    nprobe: int | None = Field(None, ge=1, description="IVF cells searched per query; null: the calibrated value")
    refine: float | None = Field(8.0, ge=1, description="re-rank refine x k IVF-PQ candidates with exact inner"
                                                        " products from the vector store; null: PQ estimates only")
    mapped_store_mb: int = Field(2048, ge=64, description="vector store pages the re-ranking may keep mapped in"
                                                         " the process (dropped past it; re-read from the page cache)")
    max_resident_shards: int | None = Field(None, ge=1, description="IVF shards held in RAM at once (least"
                                                                    " recently used leave); null: all")
    threads: int | None = Field(None, ge=1, description="FAISS threads for build and queries; null: FAISS's default")
    similarity_ceiling: float | None = Field(0.95, gt=-1, le=1, description="drop exemplars with cosine above"
                                                                             " this (near-duplicates)")
    exclude_same_label: bool = Field(False, description="drop exemplars with the query's label")

    BUILD_FIELDS: ClassVar[tuple[str, ...]] = ("kind", "flat_below", "nlist", "m", "nbits", "train_per_centroid",
                                               "train_memory_mb", "shard_size", "recall_target",
                                               "calibration_queries", "seed")

    @model_validator(mode="after")
    def _check(self) -> ExemplarIndexConfig:
        if self.kind == "flat" and self.nlist is not None:
            raise ValueError("nlist is an IVF-PQ parameter; kind is flat")
        return self

    def build_key(self) -> dict[str, Any]:
        """The fields a rebuild depends on (and the refine factor, which the nprobe calibration used): a
        flow fingerprints these, not nprobe or the exclusions, which apply at query time."""
        key = {name: getattr(self, name) for name in self.BUILD_FIELDS}
        key["refine"] = self.refine
        return key

    def resolved_kind(self, count: int) -> Literal["flat", "ivfpq"]:
        if self.kind != "auto":
            return self.kind
        return "flat" if count < self.flat_below else "ivfpq"

    def train_budget_rows(self, dim: int) -> int:
        return max(1, self.train_memory_mb * 2**20 // (4 * dim))

    def resolved_nlist(self, count: int, dim: int = 768) -> int:
        if self.nlist is not None:
            return self.nlist
        per = self.train_per_centroid
        return max(1, min(int(4 * math.sqrt(count)), count // per, self.train_budget_rows(dim) // per))

    def train_rows(self, count: int, nlist: int, dim: int) -> int:
        """The training sample: ``train_per_centroid`` per cell, within the memory budget (an explicit
        nlist past the budget is refused rather than trained on too few points)."""
        wanted = min(count, nlist * self.train_per_centroid)
        if wanted > self.train_budget_rows(dim):
            raise ValueError(f"nlist {nlist} needs {wanted:,} training vectors ({wanted * 4 * dim / 2**20:,.0f} MiB),"
                             f" over train_memory_mb {self.train_memory_mb}: lower nlist or raise the budget")
        return wanted

    def resolved_m(self, dim: int) -> int:
        if self.m is not None:
            if dim % self.m:
                raise ValueError(f"m={self.m} does not divide the dimension {dim}")
            return self.m
        target = max(1, dim // (4 if self.nbits == 4 else 8))  # 4-bit codes: 4 dims each; else 8
        return max(m for m in range(1, target + 1) if dim % m == 0)


@dataclass(frozen=True)
class ExemplarMeta:
    """One database vector's metadata (its row is its position in the build's inputs)."""

    image_id: str
    record_id: str
    label: str | None = None


@dataclass(frozen=True)
class Match:
    """An exemplar found for a query: its row in the index, its record, image and label, and the cosine
    similarity to the query (float64, recomputed from the stored vectors)."""

    row: int
    record_id: str
    image_id: str
    label: str | None
    similarity: float


@contextmanager
def faiss_threads(threads: int | None) -> Iterator[None]:
    """FAISS's OpenMP thread count for a block (process-wide while it lasts), restored afterwards."""
    import faiss

    if threads is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def cosine(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Inner products of unit ``vectors`` (n x dim) with ``query`` in float64: products, then numpy's
    per-row (pairwise) sum, so equal rows get bit-equal numbers wherever they sit (a BLAS gemv may sum
    its tail rows in another order, and then the row-id tie-break would not apply to duplicates)."""
    return (np.asarray(vectors, np.float64) * np.asarray(query, np.float64)).sum(axis=1)


def meta_table(meta: pa.Table | Mapping[str, Sequence[Any]] | Sequence[ExemplarMeta | Sequence[Any]],
               count: int) -> pa.Table:
    """The metadata as the stored table (row, image_id, record_id, label): from a pyarrow table or a
    mapping of columns (``label`` optional), or from a sequence of :class:`ExemplarMeta` /
    ``(image_id, record_id[, label])`` tuples."""
    if isinstance(meta, pa.Table):
        columns = {name: meta.column(name) for name in meta.column_names}
    elif isinstance(meta, Mapping):
        columns = dict(meta)
    else:
        items = list(meta)
        if items and isinstance(items[0], ExemplarMeta):
            columns = {"image_id": [m.image_id for m in items], "record_id": [m.record_id for m in items],
                       "label": [m.label for m in items]}
        else:
            columns = {"image_id": [t[0] for t in items], "record_id": [t[1] for t in items],
                       "label": [t[2] if len(t) > 2 else None for t in items]}
    missing = {"image_id", "record_id"} - set(columns)
    if missing:
        raise ValueError(f"exemplar metadata lacks {sorted(missing)}")
    arrays = {}
    for name in ("image_id", "record_id", "label"):
        values = columns.get(name, pa.nulls(count, pa.string()))
        array = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
        array = array if isinstance(array, pa.Array) else pa.array(list(array), type=pa.string())
        if array.type != pa.string():
            array = array.cast(pa.string())
        if len(array) != count:
            raise ValueError(f"exemplar metadata: {name} has {len(array)} values for {count} vectors")
        if name != "label" and array.null_count:
            raise ValueError(f"exemplar metadata: {name} has {array.null_count} missing values")
        arrays[name] = array
    return pa.table({"row": pa.array(np.arange(count, dtype=np.int64)), **arrays}, schema=META_SCHEMA)


def _encode(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Dictionary codes (int32, -1 for null) and the dictionary: held as Arrow, never as Python strings
    (12.5M distinct image ids at 100M objects would be ~1.5 GB of Python objects)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    encoded = array.dictionary_encode()
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32)
    return codes, encoded.dictionary


def _lookup(values: Sequence[str | None], dictionary: pa.Array) -> np.ndarray:
    """Codes of ``values`` in ``dictionary``; -2 for a value it lacks or None."""
    found = pc.index_in(pa.array(list(values), pa.string()), value_set=dictionary)
    return found.fill_null(-2).to_numpy(zero_copy_only=False).astype(np.int64)


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of a complete index folder, or None when there is none (a flow's "is it built?")."""
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == FORMAT else None


@functools.lru_cache(maxsize=4)
def _pool(workers: int) -> ThreadPoolExecutor:
    """One re-ranking thread pool per size, kept for the process (threads start once)."""
    return ThreadPoolExecutor(workers, thread_name_prefix="ieiw-rerank")


def nprobe_ladder(nlist: int) -> list[int]:
    """1, 2, 3, 4, 6, 8, 12, 16, ... (powers of two and 1.5x between), capped by and ending at nlist."""
    steps, power = [], 1
    while power < nlist:
        steps += [power] + ([power * 3 // 2] if power >= 2 else [])
        power *= 2
    return sorted({min(step, nlist) for step in steps} | {nlist})


def _recalls(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Each query's recall: the share of its true neighbours found."""
    return np.array([len(set(f[f >= 0].tolist()) & set(t[t >= 0].tolist())) / max(1, int((t >= 0).sum()))
                     for f, t in zip(found, truth, strict=True)])


def _replace_folder(partial: Path, folder: Path) -> None:
    """Rename ``partial`` into ``folder``; an older ``folder`` is renamed aside first, removed after."""
    old: Path | None = None
    try:
        if folder.exists():
            old = folder.parent / f"{PARTIAL}{folder.name}-old-{uuid.uuid4().hex[:8]}"
            os.replace(folder, old)
        os.replace(partial, folder)
        fsync_dir(folder.parent)
    except BaseException:
        if old is not None and not folder.exists():
            os.replace(old, folder)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _partial_folder(folder: Path) -> Path:
    folder.parent.mkdir(parents=True, exist_ok=True)
    for stale in folder.parent.glob(f"{PARTIAL}{folder.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    partial = Path(tempfile.mkdtemp(prefix=f"{PARTIAL}{folder.name}-", dir=folder.parent))
    os.chmod(partial, folder_mode())  # mkdtemp makes it 0700; 0755 under the usual umask 022
    return partial


class IndexWriter:
    """Builds a new index folder from vectors that stream in: :meth:`append` batches (Arrow / NumPy
    buffers, any size) into the store, then :meth:`finish` with the metadata trains, adds the vectors
    shard by shard from the store, calibrates nprobe, writes the manifest and renames the folder into
    place. Memory: the training sample, one add batch and the IVF shard being filled; never the vectors."""

    def __init__(self, folder: Path, count: int, dim: int, config: ExemplarIndexConfig | None = None,
                 inputs: Any = None):
        self.folder, self.count, self.dim = Path(folder), int(count), int(dim)
        self.config = config or ExemplarIndexConfig()
        self.inputs = inputs
        if self.count < 1:
            raise ValueError("an exemplar index needs at least one vector")
        self.partial = _partial_folder(self.folder)
        small = self.count < self.config.flat_below  # float32 where it costs nothing: exact cosines
        self.writer = VectorStoreWriter(self.partial / STORE, self.count, self.dim,
                                        np.float32 if small else np.float16)
        self._digest: str | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        if kind is not None:
            self.abort()

    def append(self, batch: np.ndarray) -> None:
        self.writer.append(batch)

    def abort(self) -> None:
        self.writer.abort()
        shutil.rmtree(self.partial, ignore_errors=True)

    def stored(self) -> VectorStore:
        """The store written so far, closed (for a caller that reads it back before :meth:`finish`, e.g.
        to label unlabelled rows by their nearest labelled one)."""
        if self._digest is None:
            self._digest = self.writer.close()
        return VectorStore(self.partial / STORE)

    def finish(self, meta: Any) -> ExemplarIndex:
        import faiss

        config = self.config
        store = self.stored()
        table = meta_table(meta, self.count)
        kind = config.resolved_kind(self.count)
        manifest: dict[str, Any] = {"format": FORMAT, "version": FORMAT_VERSION, "kind": kind, "count": self.count,
                                    "dim": self.dim, "nlist": None, "m": None, "train_rows": None, "shards": [],
                                    "calibration": None, "config": config.model_dump(mode="json"),
                                    "inputs": self.inputs, "faiss": faiss.__version__}
        manifest["seconds"] = {}
        try:
            pq.write_table(table, self.partial / META, compression="zstd")
            train: np.ndarray | None = None
            if kind == "ivfpq":
                with faiss_threads(config.threads):
                    train = self._build_ivfpq(store, manifest)
            index = ExemplarIndex(self.partial, manifest, table, config)
            if kind == "ivfpq":
                started = time.perf_counter()
                manifest["calibration"] = index.calibrate(train)
                manifest["seconds"]["calibrate"] = round(time.perf_counter() - started, 2)
                if config.nprobe is None:
                    index.nprobe, index.refine = manifest["calibration"]["nprobe"], manifest["calibration"]["refine"]
            files = {}
            for name in (META, *manifest["shards"]):
                fsync_dir(self.partial / name)
                files[name] = {"bytes": (self.partial / name).stat().st_size, "sha256": sha256_file(self.partial / name)}
            manifest["files"] = files
            manifest["store"] = {"file": STORE, "bytes": store.path.stat().st_size, "sha256": self._digest,
                                 "sampled_sha256": store.sampled_digest()}
            (self.partial / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
            fsync_dir(self.partial / MANIFEST)
            fsync_dir(self.partial)
            index.close()
            _replace_folder(self.partial, self.folder)
        except BaseException:
            shutil.rmtree(self.partial, ignore_errors=True)
            raise
        return ExemplarIndex.load(self.folder, config, verify=False)

    def _build_ivfpq(self, store: VectorStore, manifest: dict[str, Any]) -> np.ndarray:
        """Train on a seeded sample gathered from the store, then fill the shards in batches; returns the
        training rows (the calibration draws its queries outside them)."""
        import faiss

        config, count, dim = self.config, self.count, self.dim
        nlist, m = config.resolved_nlist(count, dim), config.resolved_m(dim)
        if count < 2 ** config.nbits:
            raise ValueError(f"IVF-PQ with nbits={config.nbits} needs at least {2 ** config.nbits} vectors,"
                             f" got {count}: use kind flat")
        train = np.sort(np.random.default_rng(config.seed).choice(count, size=config.train_rows(count, nlist, dim),
                                                                   replace=False))
        quantizer = faiss.IndexFlatIP(dim)
        if config.nbits == 4:  # SIMD fast-scan layout: same codes, several times faster to scan
            trained = faiss.IndexIVFPQFastScan(quantizer, dim, nlist, m, 4, faiss.METRIC_INNER_PRODUCT)
        else:
            trained = faiss.IndexIVFPQ(quantizer, dim, nlist, m, config.nbits, faiss.METRIC_INNER_PRODUCT)
        trained.cp.seed = config.seed
        trained.pq.cp.seed = config.seed
        started = time.perf_counter()
        trained.train(store.gather(train))
        manifest["seconds"]["train"] = round(time.perf_counter() - started, 2)
        started = time.perf_counter()
        for number, start in enumerate(range(0, count, config.shard_size)):
            shard = faiss.clone_index(trained)
            for first, block in store.blocks(ADD_BATCH, start, min(count, start + config.shard_size)):
                shard.add_with_ids(block, np.arange(first, first + len(block), dtype=np.int64))
            faiss.write_index(shard, str(self.partial / shard_name(number)))
            manifest["shards"].append(shard_name(number))
            del shard
        manifest["seconds"]["add"] = round(time.perf_counter() - started, 2)
        manifest.update(nlist=nlist, m=m, train_rows=len(train))
        return train


class ExemplarIndex:
    """A built index folder, opened: :meth:`query` for exemplars with exclusions, :meth:`search` for the
    raw nearest rows, :meth:`save` to copy it elsewhere, :meth:`load` to open one."""

    def __init__(self, folder: Path, manifest: dict[str, Any], table: pa.Table, config: ExemplarIndexConfig):
        import faiss

        self.folder = Path(folder)
        self.manifest_data = manifest
        self.table = table
        self.config = config
        self.kind: str = manifest["kind"]
        self.inputs = manifest.get("inputs")
        self.count = int(manifest["count"])
        self.dim = int(manifest["dim"])
        self.store = VectorStore(self.folder / STORE, config.mapped_store_mb << 20)
        self._image_codes, self._images = _encode(table.column("image_id"))
        self._label_codes, self._labels = _encode(table.column("label"))
        self._shard_names: list[str] = list(manifest["shards"])
        self._resident: OrderedDict[int, Any] = OrderedDict()
        self._flat = None
        self.nlist = int(manifest["nlist"]) if self.kind == "ivfpq" else 1
        self.m = manifest.get("m")
        calibration = manifest.get("calibration") or {}
        # nprobe null: the calibrated pair (nprobe, refine); a set nprobe: it, with the configured refine
        use_calibration = config.nprobe is None and bool(calibration)
        self.nprobe: int = config.nprobe or calibration.get("nprobe") or 1
        self.refine: float | None = calibration.get("refine", config.refine) if use_calibration else config.refine
        if use_calibration and config.refine is not None and calibration.get("refine") is None:
            self.refine = config.refine  # calibrated without re-ranking, queried with it: more exact, not less
        self._exact = self.kind == "flat" or self.refine is not None
        if self.kind == "flat":
            self._flat = faiss.IndexFlatIP(self.dim)
            for _, block in self.store.blocks(ADD_BATCH):
                self._flat.add(block)

    @property
    def index(self) -> Any:
        """The FAISS index of a one-shard IVF-PQ index or of a flat one (diagnostics and tests)."""
        return self._flat if self._flat is not None else self._shard(0)

    # -- building and persistence ---------------------------------------------------------------
    @classmethod
    def build(cls, vectors: np.ndarray, meta: Any, config: ExemplarIndexConfig | None = None,
              inputs: Any = None, folder: Path | None = None) -> ExemplarIndex:
        """Index in-memory ``vectors`` (n x dim; normalised here unless they already are) with ``meta``
        (see :func:`meta_table`) into ``folder``, or into a private temporary folder removed with the
        object (then :meth:`save` copies it). Large inputs stream through :class:`IndexWriter` instead."""
        array = np.asarray(vectors)
        if array.ndim != 2 or array.shape[1] == 0:
            raise ValueError(f"vectors must be a 2-d array (n, dim), got shape {array.shape}")
        private = folder is None
        if private:
            folder = Path(tempfile.mkdtemp(prefix="ieiw-exemplar-index-")) / "index"
        with IndexWriter(Path(folder), len(array), array.shape[1], config, inputs) as writer:
            for start in range(0, len(array), ADD_BATCH):
                writer.append(array[start:start + ADD_BATCH])
            index = writer.finish(meta)
        if private:
            weakref.finalize(index, shutil.rmtree, str(Path(folder).parent), True)
        return index

    def manifest(self) -> dict[str, Any]:
        return dict(self.manifest_data)

    def save(self, folder: Path) -> Path:
        """This index's files in ``folder``, copied into a sibling ``.partial-`` folder, fsynced, then
        renamed into place (an older index there is replaced whole)."""
        folder = Path(folder)
        if folder.resolve() == self.folder.resolve():
            return folder
        partial = _partial_folder(folder)
        try:
            for name in (MANIFEST, META, STORE, *self._shard_names):
                shutil.copyfile(self.folder / name, partial / name)
                fsync_dir(partial / name)
            fsync_dir(partial)
            _replace_folder(partial, folder)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return folder

    def close(self) -> None:
        self._resident.clear()

    @classmethod
    def load(cls, folder: Path, config: ExemplarIndexConfig | None = None, verify: bool = True) -> ExemplarIndex:
        """Open a saved index. ``config``, when given, supplies the query-time fields (nprobe, refine's
        factor, resident shards, threads, exclusions); its build fields must equal the saved ones.
        ``verify``: check the metadata's and the shards' sha256 against the manifest (reads them once
        more); the store is always checked by size and sampled blocks."""
        folder = Path(folder)
        if not folder.is_dir():
            raise ExemplarIndexError(f"{folder}: no exemplar index here (the folder does not exist)")
        if not (folder / MANIFEST).exists():
            raise ExemplarIndexError(f"{folder}: not a complete exemplar index (no {MANIFEST}); rebuild it")
        manifest = read_manifest(folder)
        if manifest is None:
            raise ExemplarIndexError(f"{folder}: {MANIFEST} is unreadable or not an exemplar index manifest")
        if manifest.get("version") != FORMAT_VERSION:
            raise ExemplarIndexError(f"{folder}: exemplar index format {manifest.get('version')}, this ieiw reads"
                                     f" {FORMAT_VERSION}; rebuild it")
        for name, expected in manifest["files"].items():
            path = folder / name
            if not path.exists():
                raise ExemplarIndexError(f"{folder}: {name} is missing; rebuild the index")
            if path.stat().st_size != expected["bytes"] or (verify and sha256_file(path) != expected["sha256"]):
                raise ExemplarIndexError(f"{folder}: {name} does not match its manifest (corrupt or replaced);"
                                         " rebuild the index")
        store = folder / STORE
        if not store.exists():
            raise ExemplarIndexError(f"{folder}: {STORE} is missing; rebuild the index")
        try:
            sound = (store.stat().st_size == manifest["store"]["bytes"]
                     and VectorStore(store).sampled_digest() == manifest["store"]["sampled_sha256"])
        except ValueError:
            sound = False
        if not sound:
            raise ExemplarIndexError(f"{folder}: {STORE} does not match its manifest (corrupt or replaced);"
                                     " rebuild the index")
        saved = ExemplarIndexConfig(**manifest["config"])
        if config is None:
            config = saved
        else:
            changed = sorted(k for k, v in config.build_key().items() if k != "refine" and saved.build_key()[k] != v)
            if changed:
                raise ExemplarIndexError(f"{folder}: built with other parameters ({', '.join(changed)}); rebuild it")
        try:
            table = pq.read_table(folder / META)
        except Exception as error:  # pyarrow: ArrowInvalid and kin
            raise ExemplarIndexError(f"{folder}: unreadable exemplar index ({error})") from error
        if table.schema != META_SCHEMA or table.num_rows != manifest["count"]:
            raise ExemplarIndexError(f"{folder}: {table.num_rows} metadata rows, the manifest says {manifest['count']}")
        index = cls(folder, manifest, table, config)
        try:
            if index.kind == "ivfpq" and (config.max_resident_shards or len(index._shard_names)) >= len(
                    index._shard_names):
                held = sum(int(index._shard(number).ntotal) for number in range(len(index._shard_names)))
                if held != index.count:
                    raise ExemplarIndexError(f"{folder}: the shards hold {held} vectors, the manifest says"
                                             f" {index.count}")
        except RuntimeError as error:  # faiss
            if isinstance(error, ExemplarIndexError):
                raise
            raise ExemplarIndexError(f"{folder}: unreadable exemplar index ({error})") from error
        return index

    # -- shards --------------------------------------------------------------------------------------
    def _shard(self, number: int) -> Any:
        """IVF shard ``number``, read on first use; past ``max_resident_shards`` the least recently used
        one is released (a search then reads shards in turn: bounded memory, more I/O)."""
        import faiss

        if number in self._resident:
            self._resident.move_to_end(number)
            return self._resident[number]
        limit = self.config.max_resident_shards
        while limit is not None and len(self._resident) >= limit:
            self._resident.popitem(last=False)
        shard = faiss.read_index(str(self.folder / self._shard_names[number]))
        self._resident[number] = shard
        return shard

    def _ivf_search(self, x: np.ndarray, k: int, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k PQ estimates over every shard, merged: the same as one index holding all the vectors
        (the shards share the quantizer, so the same cells are probed and scored alike)."""
        import faiss

        params = faiss.SearchParametersIVF(nprobe=min(nprobe, self.nlist))
        parts = [self._shard(number).search(x, k, params=params) for number in range(len(self._shard_names))]
        if len(parts) == 1:
            return parts[0]
        sims = np.concatenate([p[0] for p in parts], axis=1)
        rows = np.concatenate([p[1] for p in parts], axis=1)
        sims = np.where(rows < 0, -np.inf, sims).astype(np.float32)
        order = np.lexsort((np.where(rows < 0, np.iinfo(np.int64).max, rows), -sims), axis=1)[:, :k]
        return np.take_along_axis(sims, order, axis=1), np.take_along_axis(rows, order, axis=1)

    def _rerank(self, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """float32 inner products of each query with its candidate rows, read from the store (-inf for
        -1 rows). The reads are random (one page a candidate) and bound by memory latency, so the queries
        are split over as many threads as FAISS uses (numpy's take and matmul release the GIL), in blocks
        of ``RERANK_QUERIES`` (a few MB of candidates each)."""
        import faiss

        sims = np.full(rows.shape, -np.inf, np.float32)

        def part(start: int, stop: int) -> None:
            for first in range(start, stop, RERANK_QUERIES):
                block = rows[first:min(stop, first + RERANK_QUERIES)]
                present = block >= 0
                vectors = self.store.take(np.where(present, block, 0))
                found = np.matmul(vectors, x[first:first + len(block), :, None])
                sims[first:first + len(block)] = np.where(present, found[..., 0], -np.inf)

        workers = max(1, min(faiss.omp_get_max_threads(), len(rows) // RERANK_QUERIES))
        if workers == 1:
            part(0, len(rows))
        else:
            bounds = np.linspace(0, len(rows), workers + 1).astype(int)
            list(_pool(workers).map(lambda span: part(*span), itertools.pairwise(bounds)))
        return sims

    def _candidates(self, x: np.ndarray, k: int, nprobe: int, refine: float | None | str = "index"
                    ) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, rows), n x k, best first: flat exact; IVF-PQ re-ranked from the store when
        ``refine`` (default: the index's) is set (refine x k candidates), else its PQ estimates. -1 rows
        where fewer were found."""
        if self._flat is not None:
            return self._flat.search(x, k)
        refine = self.refine if refine == "index" else refine
        if refine is None:
            return self._ivf_search(x, k, nprobe)
        wide = min(self.count, max(k, int(k * float(refine))))
        _, rows = self._ivf_search(x, wide, nprobe)
        sims = self._rerank(x, rows)
        order = np.lexsort((np.where(rows < 0, np.iinfo(np.int64).max, rows), -sims), axis=1)[:, :k]
        return np.take_along_axis(sims, order, axis=1), np.take_along_axis(rows, order, axis=1)

    # -- calibration -----------------------------------------------------------------------------------
    def calibrate(self, train: np.ndarray | None) -> dict[str, Any]:
        """The cheapest (nprobe, refine) whose recall@10 reaches ``recall_target`` on held-out store
        vectors (rows outside the training sample, each searched for its 10 nearest other rows), with
        the sweep. refine runs over ``refine`` x 1, 2, 4, 8 (the PQ ranks fewer true neighbours into its
        top refine x k as the database grows denser), nprobe over 1, 2, 3, 4, 6, 8, 12, ... until the
        target is reached or recall stops improving. Cheapest by a cost model, not by the times measured
        (which are recorded, but would make the choice depend on the machine's load): scanning a code
        costs ``SCAN_COST``, re-ranking a candidate (a random read of the store) ``RERANK_COST``."""
        config = self.config
        rng = np.random.default_rng([config.seed, 7])
        pool = np.setdiff1d(np.arange(self.count), train) if train is not None else np.arange(self.count)
        if not len(pool):
            pool = np.arange(self.count)
        rows = np.sort(rng.choice(pool, size=min(config.calibration_queries, len(pool)), replace=False))
        k = min(CALIBRATION_K, self.count - 1)
        if k < 1:
            return {"nprobe": 1, "refine": config.refine, "recall": 1.0, "target": config.recall_target,
                    "reached": True, "queries": 0, "k": 0, "sweep": []}
        x = self.store.gather(rows)
        per_cell = self.count / self.nlist
        refines = [None] if config.refine is None else [config.refine * step for step in REFINE_STEPS]
        sweep: list[dict[str, Any]] = []
        with faiss_threads(config.threads):
            _, truth = exact_top_k(self.store, x, k, exclude=rows)
            for refine in refines:
                best = -1.0
                stale = 0
                for nprobe in nprobe_ladder(self.nlist):
                    started = time.perf_counter()
                    _, found = self._candidates(x, k + 1, nprobe, refine)
                    seconds = time.perf_counter() - started
                    found = np.stack([np.concatenate([r[r != own], [-1]])[:k] for r, own in zip(found, rows, strict=True)])
                    recalls = _recalls(found, truth)
                    mean = float(recalls.mean())
                    # reached when the lower end of its ~95% interval is: the queries are a sample, and the
                    # queries a build serves are other vectors
                    low = mean - 1.96 * float(recalls.std()) / math.sqrt(len(recalls))
                    cost = nprobe * per_cell * SCAN_COST + (refine or 0) * k * RERANK_COST
                    sweep.append({"nprobe": nprobe, "refine": refine, "recall": round(mean, 4), "cost": round(cost, 2),
                                  "seconds": round(seconds, 3), "reached": low >= config.recall_target})
                    if low >= config.recall_target:
                        break
                    stale = stale + 1 if mean < best + PLATEAU else 0
                    best = max(best, mean)
                    if stale >= 2:  # two steps without a gain: more cells will not help at this refine
                        break
        reached = [step for step in sweep if step["reached"]]
        chosen = min(reached, key=lambda s: (s["cost"], s["nprobe"])) if reached else \
            max(sweep, key=lambda s: (s["recall"], -s["cost"]))
        if not reached:
            log.warning("%s: recall@%d reached at most %.3f (nprobe %d, refine %s), below the target %.3f",
                        self.folder, k, chosen["recall"], chosen["nprobe"], chosen["refine"], config.recall_target)
        return {"nprobe": chosen["nprobe"], "refine": chosen["refine"], "recall": chosen["recall"],
                "target": config.recall_target, "reached": bool(reached), "queries": len(rows), "k": k,
                "sweep": sweep}

    # -- queries -----------------------------------------------------------------------------------
    def search(self, vectors: np.ndarray, k: int, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The raw nearest rows, without exclusions: (similarities float32, rows int64), n x k, padded
        with -1 rows where fewer were found (for benches and diagnostics)."""
        x = self._queries(vectors)
        with faiss_threads(self.config.threads):
            return self._candidates(x, k, nprobe or self.nprobe)

    def _queries(self, vectors: np.ndarray) -> np.ndarray:
        x = unit_rows(np.atleast_2d(np.asarray(vectors)))
        if x.shape[1] != self.dim:
            raise ValueError(f"query vectors have dimension {x.shape[1]}, the index {self.dim}")
        return x

    def query(self, vectors: np.ndarray, image_ids: Sequence[str], labels: Sequence[str | None] | None = None,
              k: int = 1) -> list[list[Match]]:
        """Up to ``k`` exemplars per query vector, best first: never of the query's own image (its
        ``image_ids`` entry), never above ``similarity_ceiling``, and with ``exclude_same_label`` never
        with its label (a query label of None excludes nothing). Fewer than ``k`` only when the index
        has no more valid exemplars (IVF: in any cell)."""
        if k < 1:
            raise ValueError("k must be >= 1")
        x = self._queries(vectors) if len(vectors) else np.zeros((0, self.dim), np.float32)
        count = len(x)
        if len(image_ids) != count or (labels is not None and len(labels) != count):
            raise ValueError(f"{count} query vectors, {len(image_ids)} image ids"
                             + ("" if labels is None else f", {len(labels)} labels"))
        query_images = _lookup(image_ids, self._images) if count else np.zeros(0, np.int64)
        query_labels = np.full(count, -2, dtype=np.int64)  # -2: excludes nothing (-1 is a null label)
        if labels is not None and self.config.exclude_same_label and count:
            query_labels = _lookup(labels, self._labels)
        found: list[tuple[np.ndarray, np.ndarray]] = [(np.zeros(0, np.int64), np.zeros(0))] * count
        # Each query has its own widening state (k', nprobe); queries in the same state are searched together.
        start = (min(self.count, max(2 * k, k + 32)), min(self.nprobe, self.nlist))
        states: dict[tuple[int, int], list[int]] = {start: list(range(count))} if count else {}
        with faiss_threads(self.config.threads):
            while states:
                (kprime, nprobe), members = min(states.items())
                del states[(kprime, nprobe)]
                sims32, rows = self._candidates(x[members], kprime, nprobe)
                for position, qi in enumerate(members):
                    done, more = self._select(x[qi], rows[position], sims32[position], query_images[qi],
                                              query_labels[qi], k, kprime, nprobe)
                    if more is None:
                        found[qi] = done
                    else:
                        states.setdefault(more, []).append(qi)
        return self._matches(found)

    def _select(self, vector: np.ndarray, rows: np.ndarray, sims32: np.ndarray, image: int, label: int, k: int,
                kprime: int, nprobe: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[int, int] | None]:
        """The valid top-k among one query's candidates, and the next (k', nprobe) when it must widen."""
        present = rows >= 0
        rows, sims32 = rows[present], sims32[present]
        if self._exact and len(rows):
            sims = cosine(self.store.gather(rows), vector)
        else:
            sims = sims32.astype(np.float64)
        valid = self._image_codes[rows] != image
        if self.config.similarity_ceiling is not None:
            valid &= sims <= self.config.similarity_ceiling
        if label >= 0:
            valid &= self._label_codes[rows] != label
        rows, sims = rows[valid], sims[valid]
        order = np.lexsort((rows, -sims))[:k]
        rows, sims = rows[order], sims[order]
        searched = int(present.sum())
        exhausted = searched == self.count or (searched < kprime and nprobe >= self.nlist)
        # Settled: k valid, and the k-th is clearly above every candidate not searched (so ties are resolved).
        settled = len(rows) == k and bool(sims[-1] > float(sims32.min()) + TIE_MARGIN)
        if exhausted or settled:
            return (rows, sims), None
        if searched < kprime:  # the probed cells ran out: probe more of them
            return (rows, sims), (kprime, min(self.nlist, 2 * nprobe))
        return (rows, sims), (min(self.count, 2 * kprime), nprobe)

    def _matches(self, found: list[tuple[np.ndarray, np.ndarray]]) -> list[list[Match]]:
        every = np.concatenate([rows for rows, _ in found]) if found else np.zeros(0, np.int64)
        taken = pa.array(every, pa.int64())
        record_ids = self.table.column("record_id").take(taken).to_pylist()
        images = self._images.take(pa.array(self._image_codes[every], pa.int32())).to_pylist()
        label_codes = self._label_codes[every]
        labels = self._labels.take(pa.array(np.maximum(label_codes, 0), pa.int32())).to_pylist() \
            if len(self._labels) else [None] * len(every)
        out: list[list[Match]] = []
        at = 0
        for rows, sims in found:
            matches = []
            for row, sim in zip(rows.tolist(), sims.tolist(), strict=True):
                label = None if label_codes[at] < 0 else labels[at]
                matches.append(Match(row, record_ids[at], images[at], label, float(sim)))
                at += 1
            out.append(matches)
        return out
