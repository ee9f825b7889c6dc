"""The exemplar database of the replacement source: for a region, the nearest object of *another* image.

The paper finds, for each segmented region, the nearest object in an object database with FAISS and
repaints the region with it. This module is that database: L2-normalised float32 feature vectors (one
per object crop), each with its ``image_id``, ``record_id`` and optional ``label``; similarity is the
inner product, i.e. cosine.

Index (``ExemplarIndexConfig.kind``):

- ``flat``: ``IndexFlatIP``, exact. ``auto`` picks it below ``flat_below`` vectors (50k by default).
- ``ivfpq``: IVF-PQ with inner product: ``nlist`` k-means cells (default ~4 sqrt(n)), vectors stored as
  ``m`` sub-quantizer codes of ``nbits``. With 4-bit codes (the default) it is ``IndexIVFPQFastScan``,
  FAISS's SIMD layout, with ``m`` = dim / 4 (768-d: PQ192x4fs, 96 bytes a vector); other ``nbits`` use
  ``IndexIVFPQ`` (m = dim / 8). It is wrapped in ``IndexRefineFlat`` when ``refine`` is set: ``refine`` x k
  IVF-PQ candidates are re-ranked with exact inner products against a stored copy of the vectors (which
  costs their full size in memory: 3 GB at 1M x 768). ``bench/exemplar_search.py`` measures recall@10
  against the flat index and the speed-up at 1M x 768; the defaults here are the ones it tuned: on its
  Gaussian mixture, recall@10 0.992 at 65-70x the flat index's queries/s (nprobe 32, k_factor 8; 2 threads,
  ~90 s to build), where k_factor 4 gives 0.943 and 2 gives 0.815 (IndexIVFPQ with 8-bit codes scanned
  5-7x slower at the same recall after re-ranking).

Training is seeded: the training sample is drawn with ``seed`` and both k-means (the coarse quantizer's
``cp.seed`` and the PQ's ``pq.cp.seed``) use it, so a rebuild from the same inputs gives the same query
results. Threaded training is not guaranteed byte-identical across thread counts: compare results, not
files.

A query (:meth:`ExemplarIndex.query`) never returns an exemplar of the query's own image, drops
near-duplicates above ``similarity_ceiling`` and, with ``exclude_same_label``, exemplars with the query's
label. To find ``k`` valid exemplars despite the exclusions it searches ``k' > k`` candidates and doubles
``k'`` (and ``nprobe`` when the probed cells run out) per query until it has ``k`` or the index is
exhausted. Similarities of the candidates are recomputed in float64 from the stored vectors (flat, or the
refine stage's copy), so the ceiling, the order and the reported numbers do not depend on how FAISS
batched the search; ties are broken by the smaller row id, and a query whose ``k``-th result ties with
the last candidate searched is widened until the tie is resolved. The state of each query (k', nprobe)
is its own, so a query's results do not depend on the other queries of its batch. Without ``refine``
(IVF-PQ alone) the stored vectors are not kept and the similarities are FAISS's PQ estimates.

A saved index is a folder: ``index.faiss`` (``faiss.write_index``), ``meta.parquet`` (row, image_id,
record_id, label) and ``manifest.json`` (format, kind, count, dim, config, the index parameters, the
caller's ``inputs`` fingerprint and the size + sha256 of both files). It is written in a sibling
``.partial-<name>-*`` folder and renamed into place (an older index is first renamed aside, then
removed), so a reader sees the old index or the new one, or, if a kill lands between the two renames,
none (which reads as "not built");
:meth:`ExemplarIndex.load` checks the manifest against the files and names the folder in every error.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field, model_validator

from ieiw.schemas.config import StrictModel
from ieiw.schemas.storage import folder_mode, fsync_dir, sha256_file

FORMAT = "ieiw-exemplar-index"
FORMAT_VERSION = 1
INDEX = "index.faiss"
META = "meta.parquet"
MANIFEST = "manifest.json"
PARTIAL = ".partial-"
TIE_MARGIN = 1e-5  # float32 (FAISS) vs float64 (recomputed) similarities differ by ~1e-7
NORM_TOLERANCE = 1e-3
META_SCHEMA = pa.schema([("row", pa.int64()), ("image_id", pa.string()), ("record_id", pa.string()),
                         ("label", pa.string())])


class ExemplarIndexError(RuntimeError):
    """An exemplar index folder that is missing, incomplete, corrupt, or built with other parameters."""


class ExemplarIndexConfig(StrictModel):
    """The exemplar index: what is built (kind .. seed) and how it is queried (nprobe, refine's factor,
    threads, the exclusions). ``build_key()`` is the part a rebuild depends on."""

    kind: Literal["auto", "flat", "ivfpq"] = Field("auto", description="auto: flat below `flat_below` vectors")
    flat_below: int = Field(50_000, ge=1, description="auto: exact IndexFlatIP below this many vectors")
    nlist: int | None = Field(None, ge=1, description="IVF cells; default ~4 sqrt(n) (at most n / 39)")
    m: int | None = Field(None, ge=1, description="PQ sub-quantizers (must divide the dimension); default: dim / 4"
                                                   " with 4-bit codes, dim / 8 otherwise (96 bytes a vector at 768-d)")
    nbits: int = Field(4, ge=1, le=16, description="bits per PQ code; 4: FAISS's fast-scan layout (IndexIVFPQFastScan)")
    nprobe: int = Field(32, ge=1, description="IVF cells searched per query")
    refine: float | None = Field(8.0, ge=1, description="IndexRefineFlat k_factor: re-rank refine x k candidates"
                                                        " with exact inner products; null: PQ estimates only")
    train_size: int = Field(160_000, ge=1, description="at most this many vectors train the IVF-PQ (seeded sample)")
    seed: int = Field(0, description="training sample and k-means seed")
    threads: int | None = Field(None, ge=1, description="FAISS threads for build and queries; null: FAISS's default")
    similarity_ceiling: float | None = Field(0.95, gt=-1, le=1, description="drop exemplars with cosine above"
                                                                             " this (near-duplicates)")
    exclude_same_label: bool = Field(False, description="drop exemplars with the query's label")

    BUILD_FIELDS: ClassVar[tuple[str, ...]] = ("kind", "flat_below", "nlist", "m", "nbits", "train_size", "seed")

    @model_validator(mode="after")
    def _check(self) -> ExemplarIndexConfig:
        if self.kind == "flat" and self.nlist is not None:
            raise ValueError("nlist is an IVF-PQ parameter; kind is flat")
        return self

    def build_key(self) -> dict[str, Any]:
        """The fields a rebuild depends on (plus whether a refine stage exists): a flow fingerprints these,
        not nprobe or the exclusions, which apply at query time."""
        key = {name: getattr(self, name) for name in self.BUILD_FIELDS}
        key["refine"] = self.refine is not None
        return key

    def resolved_kind(self, count: int) -> Literal["flat", "ivfpq"]:
        if self.kind != "auto":
            return self.kind
        return "flat" if count < self.flat_below else "ivfpq"

    def resolved_nlist(self, count: int) -> int:
        if self.nlist is not None:
            return self.nlist
        return max(1, min(int(4 * math.sqrt(count)), count // 39))

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


def unit_vectors(vectors: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    """``vectors`` as C-contiguous float32 rows of norm 1: returned as is (no copy) when they already
    are; otherwise a normalised copy. A zero row is an error (it has no direction)."""
    array = np.asarray(vectors)
    if array.ndim != 2 or array.shape[1] == 0:
        raise ValueError(f"vectors must be a 2-d array (n, dim), got shape {array.shape}")
    if array.dtype != np.float32 or not array.flags.c_contiguous:
        array = np.ascontiguousarray(array, dtype=np.float32)
    normalised = True
    for start in range(0, len(array), chunk):
        norms = np.linalg.norm(array[start:start + chunk], axis=1)
        if not np.all(np.isfinite(norms)) or np.any(norms == 0):
            bad = start + int(np.flatnonzero(~np.isfinite(norms) | (norms == 0))[0])
            raise ValueError(f"vector {bad} is zero or not finite")
        if np.any(np.abs(norms - 1) > NORM_TOLERANCE):
            normalised = False
    if normalised:
        return array
    out = array / np.linalg.norm(array, axis=1, keepdims=True)
    return np.ascontiguousarray(out, dtype=np.float32)


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


def _encode(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, list[str | None], dict[str, int]]:
    """Dictionary codes (int32, -1 for null), the dictionary, and value -> code."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    encoded = array.dictionary_encode()
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32)
    values = encoded.dictionary.to_pylist()
    return codes, values, {value: code for code, value in enumerate(values)}


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of a complete index folder, or None when there is none (a flow's "is it built?")."""
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == FORMAT else None


class ExemplarIndex:
    """A built or loaded exemplar index: :meth:`query` for exemplars with exclusions, :meth:`search` for
    the raw nearest rows, :meth:`save` / :meth:`load` to persist."""

    def __init__(self, index: Any, table: pa.Table, config: ExemplarIndexConfig, kind: str,
                 inputs: Any = None, folder: Path | None = None):
        import faiss

        self.index = index
        self.table = table
        self.config = config
        self.kind = kind
        self.inputs = inputs
        self.folder = folder
        self.count = int(index.ntotal)
        self.dim = int(index.d)
        self._image_codes, self._images, self._image_lookup = _encode(table.column("image_id"))
        self._label_codes, self._labels, self._label_lookup = _encode(table.column("label"))
        self._ivf = None
        self._exact = kind == "flat"
        if kind == "ivfpq":
            base = index
            if isinstance(faiss.downcast_index(index), faiss.IndexRefine):
                base = faiss.downcast_index(index).base_index
                self._exact = True
            self._ivf = faiss.extract_index_ivf(base)
        self.nlist = int(self._ivf.nlist) if self._ivf is not None else 1
        self.m = int(faiss.downcast_index(self._ivf).pq.M) if self._ivf is not None else None

    # -- building and persistence ---------------------------------------------------------------
    @classmethod
    def build(cls, vectors: np.ndarray, meta: Any, config: ExemplarIndexConfig | None = None,
              inputs: Any = None) -> ExemplarIndex:
        """Index ``vectors`` (n x dim; normalised here unless they already are) with ``meta`` (one entry
        per vector; see :func:`meta_table`). ``inputs``: the caller's fingerprint of what it was built
        from (e.g. feature-shard sha256s), kept in the manifest."""
        import faiss

        config = config or ExemplarIndexConfig()
        x = unit_vectors(vectors)
        count, dim = x.shape
        table = meta_table(meta, count)
        kind = config.resolved_kind(count)
        with faiss_threads(config.threads):
            if kind == "flat":
                index = faiss.IndexFlatIP(dim)
            else:
                nlist, m = config.resolved_nlist(count), config.resolved_m(dim)
                if count < 2 ** config.nbits:
                    raise ValueError(f"IVF-PQ with nbits={config.nbits} needs at least {2 ** config.nbits} vectors,"
                                     f" got {count}: use kind flat")
                quantizer = faiss.IndexFlatIP(dim)
                if config.nbits == 4:  # SIMD fast-scan layout: same codes, several times faster to scan
                    ivf = faiss.IndexIVFPQFastScan(quantizer, dim, nlist, m, 4, faiss.METRIC_INNER_PRODUCT)
                else:
                    ivf = faiss.IndexIVFPQ(quantizer, dim, nlist, m, config.nbits, faiss.METRIC_INNER_PRODUCT)
                ivf.cp.seed = config.seed
                ivf.pq.cp.seed = config.seed
                sample = np.random.default_rng(config.seed).choice(count, size=min(count, config.train_size),
                                                                   replace=False)
                ivf.train(x[np.sort(sample)])
                index = ivf
                if config.refine is not None:
                    index = faiss.IndexRefineFlat(ivf)
                    index.k_factor = float(config.refine)
            index.add(x)
        return cls(index, table, config, kind, inputs)

    def manifest(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": FORMAT_VERSION, "kind": self.kind, "count": self.count,
                "dim": self.dim, "nlist": self.nlist if self._ivf is not None else None, "m": self.m,
                "config": self.config.model_dump(mode="json"), "inputs": self.inputs}

    def save(self, folder: Path) -> Path:
        """Write the index folder: all files in a sibling ``.partial-`` folder, fsynced, then renamed
        into place (an older index there is replaced whole)."""
        import faiss

        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        for stale in folder.parent.glob(f"{PARTIAL}{folder.name}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        partial = Path(tempfile.mkdtemp(prefix=f"{PARTIAL}{folder.name}-", dir=folder.parent))
        old: Path | None = None
        try:
            os.chmod(partial, folder_mode())  # mkdtemp makes it 0700; 0755 under the usual umask 022
            faiss.write_index(self.index, str(partial / INDEX))
            pq.write_table(self.table, partial / META, compression="zstd")
            files = {}
            for name in (INDEX, META):
                fsync_dir(partial / name)
                files[name] = {"bytes": (partial / name).stat().st_size, "sha256": sha256_file(partial / name)}
            manifest = {**self.manifest(), "faiss": faiss.__version__, "files": files}
            (partial / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
            fsync_dir(partial / MANIFEST)
            fsync_dir(partial)
            if folder.exists():
                old = folder.parent / f"{PARTIAL}{folder.name}-old-{uuid.uuid4().hex[:8]}"
                os.replace(folder, old)
            os.replace(partial, folder)
            fsync_dir(folder.parent)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            if old is not None and not folder.exists():
                os.replace(old, folder)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self.folder = folder
        return folder

    @classmethod
    def load(cls, folder: Path, config: ExemplarIndexConfig | None = None, verify: bool = True) -> ExemplarIndex:
        """Read a saved index. ``config``, when given, supplies the query-time fields (nprobe, refine's
        factor, threads, exclusions); its build fields must equal the saved ones. ``verify``: check
        both files' sha256 against the manifest (reads them once more)."""
        import faiss

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
        try:
            index = faiss.read_index(str(folder / INDEX))
            table = pq.read_table(folder / META)
        except Exception as error:  # faiss raises RuntimeError, pyarrow ArrowInvalid
            raise ExemplarIndexError(f"{folder}: unreadable exemplar index ({error})") from error
        if table.schema != META_SCHEMA or not (index.ntotal == table.num_rows == manifest["count"]):
            raise ExemplarIndexError(f"{folder}: the index holds {index.ntotal} vectors and {table.num_rows} metadata"
                                     f" rows, the manifest says {manifest['count']}")
        saved = ExemplarIndexConfig(**manifest["config"])
        if config is None:
            config = saved
        elif config.build_key() != saved.build_key():
            changed = sorted(k for k, v in config.build_key().items() if saved.build_key()[k] != v)
            raise ExemplarIndexError(f"{folder}: built with other parameters ({', '.join(changed)}); rebuild it")
        return cls(index, table, config, manifest["kind"], manifest.get("inputs"), folder)

    # -- queries -----------------------------------------------------------------------------------
    def _params(self, nprobe: int) -> Any:
        import faiss

        if self._ivf is None:
            return None
        ivf = faiss.SearchParametersIVF(nprobe=min(nprobe, self.nlist))
        if self.config.refine is not None and self._exact:
            return faiss.IndexRefineSearchParameters(k_factor=float(self.config.refine), base_index_params=ivf)
        return ivf

    def search(self, vectors: np.ndarray, k: int, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The raw nearest rows, without exclusions: (similarities float32, rows int64), n x k, padded
        with -1 rows where fewer were found (FAISS's own numbers; for benches and diagnostics)."""
        x = self._queries(vectors)
        with faiss_threads(self.config.threads):
            return self.index.search(x, k, params=self._params(nprobe or self.config.nprobe))

    def _queries(self, vectors: np.ndarray) -> np.ndarray:
        x = unit_vectors(np.atleast_2d(np.asarray(vectors)))
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
        query_images = np.array([self._image_lookup.get(i, -2) for i in image_ids], dtype=np.int64)
        query_labels = np.full(count, -2, dtype=np.int64)  # -2: excludes nothing (-1 is a null label)
        if labels is not None and self.config.exclude_same_label:
            query_labels = np.array([-2 if label is None else self._label_lookup.get(label, -2) for label in labels],
                                    dtype=np.int64)
        found: list[tuple[np.ndarray, np.ndarray]] = [(np.zeros(0, np.int64), np.zeros(0))] * count
        # Each query has its own widening state (k', nprobe); queries in the same state are searched together.
        start = (min(self.count, max(2 * k, k + 32)), min(self.config.nprobe, self.nlist))
        states: dict[tuple[int, int], list[int]] = {start: list(range(count))} if count else {}
        with faiss_threads(self.config.threads):
            while states:
                (kprime, nprobe), members = min(states.items())
                del states[(kprime, nprobe)]
                sims32, rows = self.index.search(x[members], kprime, params=self._params(nprobe))
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
            sims = cosine(self.index.reconstruct_batch(rows), vector)
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
        record_ids = self.table.column("record_id").take(pa.array(every, pa.int64())).to_pylist()
        out: list[list[Match]] = []
        at = 0
        for rows, sims in found:
            matches = []
            for row, sim in zip(rows.tolist(), sims.tolist(), strict=True):
                label_code = int(self._label_codes[row])
                matches.append(Match(row, record_ids[at], self._images[int(self._image_codes[row])],
                                     None if label_code < 0 else self._labels[label_code], float(sim)))
                at += 1
            out.append(matches)
        return out


