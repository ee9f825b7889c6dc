"""sha256 of model files, computed once per (path, size, mtime) and remembered across processes.

A stage's fingerprint includes the digest of every model file its backend loads, so replacing a
checkpoint rebuilds what it made. Hashing a multi-GB checkpoint takes seconds to minutes, so the digest
is cached in a small SQLite database (``$IEIW_CACHE_DIR``, else ``$XDG_CACHE_HOME/ieiw``, else
``~/.cache/ieiw``). SQLite because several worker processes may look up and insert at once; a row is
keyed by the resolved path, the size and the modification time in nanoseconds, so an edited file is
hashed again.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

CHUNK = 8 << 20


def cache_dir() -> Path:
    if os.environ.get("IEIW_CACHE_DIR"):
        return Path(os.environ["IEIW_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ieiw"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _connect() -> sqlite3.Connection:
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(folder / "file-hashes.sqlite", timeout=60)
    db.execute("CREATE TABLE IF NOT EXISTS hashes (path TEXT, size INTEGER, mtime_ns INTEGER, sha256 TEXT,"
               " PRIMARY KEY (path, size, mtime_ns))")
    return db


def file_digest(path: Path | str) -> str:
    """sha256 of ``path``; from the cache when the file's size and mtime are unchanged."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    try:
        db = _connect()
    except sqlite3.Error:  # a read-only home: hash every time rather than fail
        return sha256_of(path)
    try:
        row = db.execute("SELECT sha256 FROM hashes WHERE path=? AND size=? AND mtime_ns=?", key).fetchone()
        if row:
            return row[0]
        digest = sha256_of(path)
        with db:
            db.execute("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?)", (*key, digest))
        return digest
    finally:
        db.close()


def path_digest(path: Path | str) -> str:
    """A file's digest, or for a folder (a diffusers/transformers model folder) the digest of the
    sorted (relative name, file digest) list of every file in it."""
    path = Path(path)
    if path.is_dir():
        parts = [f"{p.relative_to(path).as_posix()}={file_digest(p)}" for p in sorted(path.rglob("*")) if p.is_file()]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()
    return file_digest(path)
