"""Atomic Parquet shards: a shard either exists whole under its final name or not at all.

Write to a temp file in the same folder, fsync it, rename it over the final name, fsync the
folder. A process killed at any point leaves at most a ``.tmp-<host>-<pid>-*`` file that a later run
removes once that writer is gone (:func:`remove_stale_temp_files`; a concurrent build's files are kept);
the manifest (see :mod:`ieiw.schemas.manifest`) is written after the rename, so it never names a
partial shard.

On object storage (an ``s3://`` out_dir) there is no rename: a shard, encoded in memory, is one PUT,
which makes the object appear whole or not at all, and no temp objects exist
(:mod:`ieiw.schemas.storage`).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ieiw.schemas import storage
from ieiw.schemas.rows import READABLE_VERSIONS, SCHEMA_VERSION, SCHEMA_VERSION_KEY


@dataclass(frozen=True)
class ShardFile:
    """What the manifest records about one written shard."""

    name: str
    rows: int
    bytes: int
    sha256: str


_encode_buffers = threading.local()
KEEP_BUFFER_MAX = 64 << 20  # a thread keeps its encode buffer up to this size; bigger files get a fresh one


def encode_parquet(table: pa.Table, row_group_size: int, capacity: int | None = None) -> pa.Buffer:
    """The Parquet file of ``table`` (snappy, ``row_group_size`` rows per group) in memory, valid until this
    thread's next call (each caller writes it out, or copies it, before encoding another).

    Encoded into one buffer per thread, sized up front to snappy's worst case (n + n/6 + 32 per page)
    plus room for page headers and the footer, and kept for the next shard. A fresh buffer per shard
    (a growing ``BufferOutputStream``) costs a page fault for every 4 KB of it, and on a virtual machine
    that made encode-then-write take 2-3x pyarrow's streaming write (docs/PERFORMANCE.md, "Shard
    writer"); a kept buffer is already mapped. Should the estimate ever be short, a growing stream
    takes over.
    """
    if capacity is None:
        groups = table.num_rows // row_group_size + 1
        capacity = table.nbytes + table.nbytes // 6 + 1024 * (table.num_columns + 1) * groups + (1 << 20)
    kept: bytearray | None = getattr(_encode_buffers, "buffer", None)
    if kept is None or len(kept) < capacity:
        kept = bytearray(capacity)  # zero-filled once: every page mapped now
        if capacity <= KEEP_BUFFER_MAX:
            _encode_buffers.buffer = kept
    writer = pa.FixedSizeBufferWriter(pa.py_buffer(kept))
    try:
        pq.write_table(table, writer, row_group_size=row_group_size, compression="snappy")
        return pa.py_buffer(kept)[: writer.tell()]
    except OSError:  # the estimate was short: grow as needed
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, row_group_size=row_group_size, compression="snappy")
        return sink.getvalue()


def write_shard(table: pa.Table, path: Path, row_group_size: int = 64) -> ShardFile:
    """Write ``table`` to ``path`` atomically and return its size and sha256.

    The file is encoded in memory first, so its sha256 comes from the same bytes that are written
    (no second read) and a failed encode never touches the disk (nor the bucket: on object storage the
    finished buffer is one PUT). Small row groups keep a streaming
    reader's memory flat: one group holds at most ``row_group_size`` image pairs. Snappy (pyarrow's
    default): zstd saved ~16% on the demo shards but tripled the write time, and images are JPEG already.
    """
    data = encode_parquet(table, row_group_size)
    # hashlib releases the GIL on large buffers: hash while the bytes go to disk and fsync.
    hasher = threading.Thread(target=(digest := hashlib.sha256()).update, args=(memoryview(data),))
    hasher.start()
    try:
        storage.write_bytes_atomic(path, data)
    finally:
        hasher.join()
    return ShardFile(name=path.name, rows=table.num_rows, bytes=data.size, sha256=digest.hexdigest())


def read_shard(path: Path, columns: list[str] | None = None, without: Collection[str] = ()) -> pa.Table:
    """Read a shard (a local path or an object), refusing one written by a newer, unknown schema version.
    ``without``: every top-level column but these (e.g. the crops' bytes), named from the same footer."""
    handle = storage.parquet_file(path)  # one footer read for the version check and the columns
    if without:
        columns = [name for name in (columns or handle.schema_arrow.names) if name not in without]
    meta = handle.schema_arrow.metadata or {}
    version = int(meta.get(SCHEMA_VERSION_KEY, b"0"))
    if version > SCHEMA_VERSION:
        raise ValueError(f"{path}: schema version {version} is newer than this ieiw ({SCHEMA_VERSION})")
    if version and version not in READABLE_VERSIONS:
        raise ValueError(f"{path}: schema version {version} is no longer readable (this ieiw reads {READABLE_VERSIONS})")
    return storage.read_columns(handle, columns, path)


COMPACT_EVERY = 64  # shards per chunk of a table gathered from many shards


def concat_compact(tables: Iterable[pa.Table], every: int = COMPACT_EVERY) -> pa.Table | None:
    """One table from many small ones (one per shard), combined into a chunk every ``every`` tables as
    they come; None when there are none. Column types are unified as ``promote_options="permissive"``
    does (a column all null in one shard and typed in another).

    Why: each chunk of a nested table keeps its own arrays, buffers and type objects, about 40 KB a
    shard whatever its rows. The light columns of the 20k-pair bench build (677 shards of 16 rows) are
    13 MB of data held in 45 MB as one chunk per shard, so a build's report and stats grew with its
    shard count, not its data (docs/PERFORMANCE.md, "Memory flatness")."""
    groups: list[pa.Table] = []
    pending: list[pa.Table] = []
    for table in tables:
        pending.append(table)
        if len(pending) >= every:
            groups.append(pa.concat_tables(pending, promote_options="permissive").combine_chunks())
            pending = []
    if pending:
        groups.append(pa.concat_tables(pending, promote_options="permissive").combine_chunks())
    return pa.concat_tables(groups, promote_options="permissive") if groups else None
