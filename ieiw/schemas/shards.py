"""Atomic Parquet shards: a shard either exists whole under its final name or not at all.

Write to a temp file in the same folder, fsync it, rename it over the final name, fsync the
folder. A process killed at any point leaves at most a ``.tmp-*`` file that the next run removes;
the manifest (see :mod:`ieiw.schemas.manifest`) is written after the rename, so it never names a
partial shard.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ieiw.schemas.rows import SCHEMA_VERSION, SCHEMA_VERSION_KEY

TMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class ShardFile:
    """What the manifest records about one written shard."""

    name: str
    rows: int
    bytes: int
    sha256: str


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def fsync_dir(path: Path) -> None:
    """Make a rename durable: the directory entry itself must reach the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Small-file twin of :func:`write_shard` (used for manifests and stats)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_shard(table: pa.Table, path: Path, row_group_size: int = 64) -> ShardFile:
    """Write ``table`` to ``path`` atomically and return its size and sha256.

    Small row groups keep a streaming reader's memory flat: one group holds at most
    ``row_group_size`` image pairs.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=".parquet", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp, row_group_size=row_group_size, compression="zstd")
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        digest = sha256_file(Path(tmp))
        size = os.path.getsize(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return ShardFile(name=path.name, rows=table.num_rows, bytes=size, sha256=digest)


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete leftovers of writers that were killed mid-write; returns what was removed."""
    if not folder.exists():
        return []
    stale = sorted(folder.glob(TMP_PREFIX + "*"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def read_shard(path: Path, columns: list[str] | None = None) -> pa.Table:
    """Read a shard, refusing one written by a newer, unknown schema version."""
    table = pq.read_table(path, columns=columns)
    meta = pq.read_schema(path).metadata or {}
    version = int(meta.get(SCHEMA_VERSION_KEY, b"0"))
    if version > SCHEMA_VERSION:
        raise ValueError(f"{path}: schema version {version} is newer than this ieiw ({SCHEMA_VERSION})")
    return table
