"""The exemplar index's vector store: every indexed vector, unit norm, as float16 in one ``.npy`` file
(float32 for a small index, below ``flat_below`` vectors: exact cosines, so the demo's exemplars do not
move on float16 near-ties).

Why a file and not an array: at SA-1B scale (10M-100M objects x 768 dims) the vectors are 15-150 GB as
float16 and twice that as float32; no machine holds them, and the old path (``to_pylist`` on the
vector column) held each float as a Python object (~28 GB per million). Here vectors move as Arrow /
NumPy buffers in batches: :func:`arrow_vectors` views a ``list<float32>`` column as an (n, dim) array
without a Python object per float, :class:`VectorStoreWriter` appends batches, :class:`VectorStore`
reads sequential blocks with plain reads (constant memory, the page cache does the rest) and gathers
scattered rows through a read-only memory map (the refine stage's few hundred rows a query).

Float16 keeps cosines to about 1e-4 of their float32 values (measured on 768-d unit vectors: a
component's rounding error is 2^-11 of it, and the errors of 768 products add like a random walk), far
below the gaps between neighbours that the refine stage separates. The file is a standard ``.npy``
(``numpy.load(path, mmap_mode="r")`` opens it), written sequentially, hashed as it is written.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

STORE = "vectors.npy"
DTYPE = np.dtype("<f2")  # the store at scale
DTYPES = (np.dtype("<f2"), np.dtype("<f4"))  # float32: small stores, where exact cosines cost nothing
NORM_TOLERANCE = 1e-3
SAMPLED_BLOCKS = 64  # blocks of the store hashed at load (a full hash of 150 GB would take minutes)
SAMPLED_BLOCK = 1 << 16
MAPPED_BUDGET = 2 << 30  # default bytes of store pages the map may hold in the process's RSS (VectorStore.take)
CHECK_ROWS = 128  # rows read through the map between two looks at its pages (a slice may map ~2 MB a row)
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _file_pages() -> int | None:
    """Bytes of file-backed pages resident in this process (/proc/self/statm's third field), or None."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[2]) * PAGE
    except (OSError, ValueError, IndexError):
        return None


def arrow_vectors(column: pa.Array | pa.ChunkedArray, dim: int | None = None, where: str = "vectors") -> np.ndarray:
    """An (n, dim) float32 array of a ``list<float>`` / ``fixed_size_list<float>`` column: its value
    buffer reshaped (no copy for float32 without nulls), never a Python float per value. Every list must
    hold ``dim`` values (the first list's length when ``dim`` is None); ``where`` names the file in errors."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    parts = []
    for chunk in chunks:
        if len(chunk) == 0:
            continue
        if chunk.null_count:
            raise ValueError(f"{where}: {chunk.null_count} rows have no vector")
        lengths = pc.min_max(pc.list_value_length(chunk)).as_py()
        dim = lengths["min"] if dim is None else dim
        if lengths["min"] != dim or lengths["max"] != dim:
            raise ValueError(f"{where}: vectors of {lengths['min']}..{lengths['max']} values, expected {dim}")
        values = chunk.flatten()  # honours the chunk's offset and slicing
        if values.null_count:
            raise ValueError(f"{where}: {values.null_count} missing values inside vectors")
        array = values.to_numpy(zero_copy_only=False)
        parts.append(array.astype(np.float32, copy=False).reshape(-1, dim))
    if not parts:
        return np.zeros((0, dim or 0), np.float32)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def unit_rows(batch: np.ndarray, first_row: int = 0) -> np.ndarray:
    """``batch`` as float32 rows of norm 1 (a copy only when they are not already); a zero or non-finite
    row is an error naming its row number (``first_row`` + its position)."""
    array = np.asarray(batch)
    if array.ndim != 2 or array.shape[1] == 0:
        raise ValueError(f"vectors must be a 2-d array (n, dim), got shape {array.shape}")
    if array.dtype != np.float32 or not array.flags.c_contiguous:
        array = np.ascontiguousarray(array, dtype=np.float32)
    norms = np.linalg.norm(array, axis=1)
    bad = ~np.isfinite(norms) | (norms == 0)
    if bad.any():
        raise ValueError(f"vector {first_row + int(np.flatnonzero(bad)[0])} is zero or not finite")
    if np.all(np.abs(norms - 1) <= NORM_TOLERANCE):
        return array
    return np.ascontiguousarray(array / norms[:, None], dtype=np.float32)


class VectorStoreWriter:
    """Appends unit vectors to a new store file of ``count`` x ``dim``; :meth:`close` checks the count,
    fsyncs and returns the data's sha256 (hashed as written, so a 15 GB store is never read back for it)."""

    def __init__(self, path: Path, count: int, dim: int, dtype: np.dtype = DTYPE):
        self.path, self.count, self.dim = Path(path), int(count), int(dim)
        self.dtype = np.dtype(dtype)
        if self.dtype not in DTYPES:
            raise ValueError(f"a vector store holds float16 or float32, not {self.dtype}")
        self.written = 0
        self._handle = open(self.path, "wb")  # noqa: SIM115 (closed by close() / abort())
        np.lib.format.write_array_header_2_0(self._handle, {"descr": self.dtype.str, "fortran_order": False,
                                                            "shape": (self.count, self.dim)})
        self.offset = self._handle.tell()
        self._digest = hashlib.sha256()

    def append(self, batch: np.ndarray) -> None:
        """Normalise ``batch`` (n, dim) and write it as float16."""
        if len(batch) == 0:
            return
        if np.ndim(batch) != 2 or np.shape(batch)[1] != self.dim:
            raise ValueError(f"{self.path}: a batch of shape {np.shape(batch)}, the store holds {self.dim}-d vectors")
        if self.written + len(batch) > self.count:
            raise ValueError(f"{self.path}: more than the {self.count} vectors announced")
        data = unit_rows(batch, self.written).astype(self.dtype)
        self._handle.write(data.data)  # the array's buffer: no bytes copy of it
        self._digest.update(data.data)
        self.written += len(batch)

    def close(self) -> str:
        if self.written != self.count:
            self._handle.close()
            raise ValueError(f"{self.path}: {self.written} vectors written, {self.count} announced")
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        return self._digest.hexdigest()

    def abort(self) -> None:
        self._handle.close()


class VectorStore:
    """A store file opened for reading: :meth:`blocks` in order (plain reads), :meth:`gather` by row
    (a read-only memory map)."""

    def __init__(self, path: Path, mapped_budget: int = MAPPED_BUDGET):
        self.path = Path(path)
        self.mapped_budget = mapped_budget
        with open(self.path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = reader(handle)
            self.offset = handle.tell()
        if fortran or len(shape) != 2 or dtype not in DTYPES:
            raise ValueError(f"{self.path}: not a vector store (shape {shape}, dtype {dtype})")
        self.count, self.dim = int(shape[0]), int(shape[1])
        self.dtype = np.dtype(dtype)
        expected = self.offset + self.count * self.dim * self.dtype.itemsize
        if self.path.stat().st_size != expected:
            raise ValueError(f"{self.path}: {self.path.stat().st_size} bytes, a {self.count} x {self.dim} store"
                             f" has {expected}")
        self._mapping: mmap.mmap | None = None
        self._map: np.ndarray | None = None
        self._mapped_reads = 0
        self._file_baseline = 0
        self._lock = threading.Lock()

    @property
    def rows_array(self) -> np.ndarray:
        """The whole store as a read-only (count, dim) float16 array over a memory map (one per store,
        made once even when two re-ranking threads ask at the same time)."""
        with self._lock:
            return self._mapped()

    def _mapped(self) -> np.ndarray:
        if self._map is None:
            self._file_baseline = _file_pages() or 0
            with open(self.path, "rb") as handle:
                self._mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            self._map = np.frombuffer(self._mapping, self.dtype, self.count * self.dim, self.offset).reshape(
                self.count, self.dim)
        return self._map

    def take(self, rows: np.ndarray) -> np.ndarray:
        """float32 vectors of ``rows`` (any shape of row numbers; the result adds a last axis of dim), read
        through the map: the refine stage's few hundred scattered rows a query.

        Why it watches the map's pages: a page fault on a file map maps the whole cached folio around it
        (up to megabytes with large folios; ``MADV_RANDOM`` does not stop it, measured: 2,048 random rows
        mapped 1.2 GB), so a few hundred thousand random reads would map the whole store into the
        process's RSS (14 GB at 10M vectors). Rows are read in slices of ``CHECK_ROWS``; after each, when
        the process's file-backed resident pages grew by more than ``mapped_budget`` (2 GiB: a store of
        ~1.3M 768-d vectors stays mapped whole) since the map was
        made, the map's pages are dropped (``MADV_DONTNEED``: clean file pages, re-read from the page
        cache when touched again). Without /proc (not Linux) they are dropped every ``CHECK_ROWS`` x 2.
        Cost, measured on a 1M store with a 1 GiB budget: a re-rank ~2x slower than with it mapped whole."""
        rows = np.asarray(rows, np.int64)
        flat = rows.ravel()
        out = np.empty((flat.size, self.dim), np.float32)
        array = self.rows_array
        for start in range(0, flat.size, CHECK_ROWS):
            part = flat[start:start + CHECK_ROWS]
            out[start:start + len(part)] = np.take(array, part, axis=0)
            self._release_if_over(len(part))
        return out.reshape(*rows.shape, self.dim)

    def _release_if_over(self, read: int) -> None:
        with self._lock:
            self._mapped_reads += read
            mapped = _file_pages()
            over = (mapped - self._file_baseline > self.mapped_budget) if mapped is not None else \
                self._mapped_reads >= 2 * CHECK_ROWS
            if over and self._mapping is not None:
                self._mapped_reads = 0
                self._mapping.madvise(mmap.MADV_DONTNEED)

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """float32 rows in the order given, read in ascending order (neighbouring rows share pages)
        through :meth:`take`, so a large gather (a training sample: ~175k rows spread over the whole
        file) keeps the map's pages within the budget too."""
        rows = np.asarray(rows, np.int64)
        order = np.argsort(rows, kind="stable")
        out = np.empty((len(rows), self.dim), np.float32)
        out[order] = self.take(rows[order])
        return out

    def blocks(self, rows_per_block: int = 65_536, start: int = 0, stop: int | None = None
               ) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, float32 block) over rows [start, stop), read with ``readinto`` into one reused
        buffer, so a pass over 15 GB holds one block, not a growing map of the file."""
        stop = self.count if stop is None else stop
        row_bytes = self.dim * self.dtype.itemsize
        buffer = np.empty((min(rows_per_block, max(1, stop - start)), self.dim), self.dtype)
        with open(self.path, "rb", buffering=0) as handle:
            handle.seek(self.offset + start * row_bytes)
            for first in range(start, stop, rows_per_block):
                rows = min(rows_per_block, stop - first)
                view = memoryview(buffer[:rows]).cast("B")
                got = 0
                while got < len(view):
                    n = handle.readinto(view[got:])
                    if not n:
                        raise ValueError(f"{self.path}: ends inside row {first + got // row_bytes}")
                    got += n
                yield first, buffer[:rows].astype(np.float32)

    def sampled_digest(self) -> str:
        """sha256 of ``SAMPLED_BLOCKS`` blocks at fixed offsets (first, last and evenly between): what a
        load checks besides the size, since hashing the whole store would read all of it."""
        size = self.path.stat().st_size
        digest = hashlib.sha256(str(size).encode())
        with open(self.path, "rb") as handle:
            for offset in sorted({int(x) for x in np.linspace(0, max(0, size - SAMPLED_BLOCK), SAMPLED_BLOCKS)}):
                handle.seek(offset)
                digest.update(handle.read(SAMPLED_BLOCK))
        return digest.hexdigest()


def exact_top_k(store: VectorStore, queries: np.ndarray, k: int, exclude: np.ndarray | None = None,
                memory: int = 128 << 20) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-``k`` of unit ``queries`` over the whole store, one pass in blocks whose
    similarity matrix stays within ``memory`` bytes: (similarities float32, rows int64), n x k, best
    first, ties by the smaller row, -1 rows where the store has fewer. ``exclude``: one row per query
    that must not be returned (its own row; -1 for none)."""
    queries = np.ascontiguousarray(queries, np.float32)
    count = len(queries)
    best_sims = np.full((count, k), -np.inf, np.float32)
    best_rows = np.full((count, k), -1, np.int64)
    if not count:
        return best_sims, best_rows
    block_rows = max(1024, memory // max(1, 4 * count))
    for first, block in store.blocks(block_rows):
        sims = queries @ block.T
        if exclude is not None:
            inside = (exclude >= first) & (exclude < first + len(block))
            sims[np.flatnonzero(inside), exclude[inside] - first] = -np.inf
        take = min(k, len(block))
        part = np.argpartition(-sims, take - 1, axis=1)[:, :take] if take < len(block) else \
            np.broadcast_to(np.arange(len(block)), (count, len(block)))
        cand_sims = np.concatenate([best_sims, np.take_along_axis(sims, part, axis=1)], axis=1)
        cand_rows = np.concatenate([best_rows, part + first], axis=1)
        cand_rows = np.where(np.isneginf(cand_sims), -1, cand_rows)
        order = np.lexsort((np.where(cand_rows < 0, np.iinfo(np.int64).max, cand_rows), -cand_sims), axis=1)[:, :k]
        best_sims = np.take_along_axis(cand_sims, order, axis=1)
        best_rows = np.take_along_axis(cand_rows, order, axis=1)
    return best_sims, best_rows
