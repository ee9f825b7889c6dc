"""Where a build's files live: a local folder, or an object store (``s3://``, ``gs://``, any fsspec URL).

Every read and write under a build's ``out_dir`` goes through these helpers, so the stages, manifests,
stats, verify and the trainer's reader do not care which it is. A location is a :class:`pathlib.Path`
for a local folder (and for a ``file://`` URL, which becomes its local path), so a local build runs
on plain paths, or a :class:`upath.UPath` for a URL. UPath (universal_pathlib) rather than bare fsspec
calls because the build composes paths with ``/``, ``.name``, ``.stem`` and ``.parent`` everywhere: a
UPath keeps that code identical for a bucket, and underneath it is fsspec's filesystem
(``location.fs``), which the helpers here use for what must differ:

- Writes are atomic both ways. Local: temp file + fsync + rename (:func:`atomic_file`). Object storage has no rename, but one PUT of a finished object is atomic: an
  object appears whole or not at all. So the bytes are made in memory first and sent with one
  ``pipe_file`` (s3fs: one ``PutObject`` up to 100 MB, above that a multipart upload, which is just as
  all-or-nothing: the object exists only once ``CompleteMultipartUpload`` succeeds). No temp objects.
- Parquet is read through Arrow's wrapper of the fsspec filesystem, with ranged reads only (no
  read-ahead block cache): a footer costs one or two small GETs, a row group's columns a few more.
- Things that need a local folder by nature: a FAISS index (faiss reads and writes files) is made in a
  local folder and uploaded file by file (:func:`staged_folder`), and mirrored down to a local cache
  once per version to be loaded (:func:`local_copy`); a derived cache each machine can rebuild (the
  crawl's dump index) stays local (:func:`local_folder`). The cache is ``$IEIW_CACHE_DIR/storage``
  (default ``~/.cache/ieiw/storage``).

Connection settings (endpoint, credentials, region) are never in a build config: they come from the
environment as for any other tool (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``~/.aws``...) or from
fsspec's own configuration (``FSSPEC_S3='{"endpoint_url": ...}'``, ``~/.config/fsspec/*.json``).
docs/scale.md, "Object storage".
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from ieiw.schemas.paths import PathOutsideRoot, path_under

URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
LOCAL_PROTOCOLS = {"file", "local"}
CHUNK = 8 << 20  # bytes per ranged read when hashing an object
# Directory listings are never cached: another process (a Dask worker, the next `ieiw verify`) may have
# written a record since, and a stale listing would hide it.
REMOTE_OPTIONS = {"use_listings_cache": False}



def _upath_type() -> type | None:
    """UPath's class once some URL made it imported, else None (no value can be one then): local-only
    commands (`ieiw stats out/ieiw`) never pay for importing fsspec."""
    module = sys.modules.get("upath")
    return getattr(module, "UPath", None) if module is not None else None


class StorageError(ValueError):
    """An out_dir URL this installation cannot open (unknown protocol, missing package), or an object key that
    would lead out of its folder (:func:`local_copy`)."""


def is_location(value: Any) -> bool:
    """A Path or a UPath (what :func:`location` returns), as opposed to a string or a list of them."""
    upath = _upath_type()
    return isinstance(value, Path) or (upath is not None and isinstance(value, upath))


def is_url(value: Any) -> bool:
    return isinstance(value, str) and bool(URL.match(value))


def location(value: str | os.PathLike | Path) -> Path:
    """``value`` as a location: a Path (local folders and ``file://`` URLs) or a UPath (other URLs).
    A location is returned as it is."""
    if is_location(value):
        return value
    text = os.fspath(value)
    if not is_url(text):
        return Path(text)
    protocol = text.split("://", 1)[0].lower()
    if protocol in LOCAL_PROTOCOLS:
        return Path(text.split("://", 1)[1])
    try:
        from upath import UPath

        return UPath(text, **REMOTE_OPTIONS)
    except (ImportError, ValueError) as exc:
        raise StorageError(f"{text}: cannot open {protocol}:// storage: {exc}{install_hint(text)}") from None


EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}  # URL protocol -> ieiw's extra that serves it


def install_hint(url: Any) -> str:
    """`` (pip install 'ieiw[s3]')`` for a URL whose protocol an ieiw extra serves, else empty."""
    extra = EXTRAS.get(str(url).split("://", 1)[0].lower()) if "://" in str(url) else None
    return f" (pip install 'ieiw[{extra}]')" if extra else ""


def is_remote(path: Any) -> bool:
    """True for a location on object storage (anything fsspec serves that is not the local disk)."""
    upath = _upath_type()
    return upath is not None and isinstance(path, upath) and getattr(path, "protocol", "") not in ("", "file", "local")


def config_value(value: Any) -> Any:
    """How a config keeps an output location: a local path as ``Path``, a URL as its string (a ``Path``
    would fold the ``//`` of ``s3://``)."""
    if isinstance(value, str):
        where = location(value)
        return str(where) if is_remote(where) else where
    if is_remote(value):
        return str(value)
    return value


def check_writable(value: Any) -> list[str]:
    """Preflight of a remote output location: its protocol must be installed (no request is made)."""
    try:
        where = location(value)
        if is_remote(where):
            where.fs  # noqa: B018 - instantiating the filesystem imports its package (s3fs, gcsfs)
    except (StorageError, ImportError, ValueError) as exc:
        hint = install_hint(value)
        return [f"out_dir {value}: {exc}{'' if hint in str(exc) else hint}"]
    return []


def key(path: Path) -> str:
    """A string naming ``path`` uniquely in this process (cache keys)."""
    return str(path) if is_remote(path) else str(Path(path).resolve())


# -- reading and probing ----------------------------------------------------------------------------
def exists(path: Path) -> bool:
    return location(path).exists()


def size(path: Path) -> int | None:
    """The file's size in bytes, or None when there is none."""
    path = location(path)
    try:
        if is_remote(path):
            return int(path.fs.info(path.path)["size"])
        return path.stat().st_size
    except FileNotFoundError:
        return None


def stamp(path: Path) -> tuple | None:
    """Something that changes whenever the file is replaced (local: mtime and size; object storage: the
    ETag or generation and size), or None when there is no file. Remote stores without a version tag
    give a fresh stamp on every call, so nothing is cached for them."""
    path = location(path)
    try:
        if not is_remote(path):
            info = path.stat()
            return (info.st_mtime_ns, info.st_size)
        info = path.fs.info(path.path)
    except FileNotFoundError:
        return None
    version = next((info[k] for k in ("ETag", "etag", "generation", "md5Hash", "mtime", "LastModified", "created")
                    if info.get(k) is not None), None)
    return (str(version) if version is not None else object(), info.get("size"))


def read_bytes(path: Path) -> bytes:
    return location(path).read_bytes()


def read_text(path: Path) -> str:
    return read_bytes(path).decode()


def read_json(path: Path) -> Any:
    return json.loads(read_bytes(path))


def glob(folder: Path, pattern: str) -> list[Path]:
    """Sorted matches of ``pattern`` under ``folder``; none when the folder does not exist."""
    folder = location(folder)
    if is_remote(folder):
        base = folder.path.rstrip("/")
        found = folder.fs.glob(f"{base}/{pattern}")
        return sorted((folder / p[len(base) + 1:] for p in found), key=str)
    return sorted(folder.glob(pattern))


def sha256(path: Path) -> str:
    """The sha256 of a file, read once in large ranged reads."""
    path = location(path)
    if not is_remote(path):
        return sha256_file(path)
    digest = hashlib.sha256()
    with path.fs.open(path.path, "rb", cache_type="none") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


# -- Parquet ------------------------------------------------------------------------------------------
_arrow_filesystems: dict[Any, Any] = {}
_arrow_lock = threading.Lock()


def _arrow_fs(path: Path) -> Any:
    """Arrow's filesystem over the location's fsspec filesystem (made once per filesystem)."""
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    class RangedReads(FSSpecHandler):
        """fsspec's files cache a large read-ahead block by default (s3fs: 50 MB), so reading a footer
        would fetch most of the shard: Arrow plans its own reads, let each be one ranged GET."""

        def open_input_file(self, path: str) -> Any:
            return pa.PythonFile(self.fs.open(path, mode="rb", cache_type="none"), mode="r")

    fs = path.fs
    with _arrow_lock:
        made = _arrow_filesystems.get(id(fs))
        if made is None or made[0] is not fs:
            made = (fs, PyFileSystem(RangedReads(fs)))
            _arrow_filesystems[id(fs)] = made
        return made[1]


def parquet_file(path: Path | str) -> pq.ParquetFile:
    """``pq.ParquetFile`` of a local path or an object (pre-buffered: Arrow coalesces its ranged reads)."""
    path = location(path)
    if is_remote(path):
        return pq.ParquetFile(path.path, filesystem=_arrow_fs(path), pre_buffer=True)
    return pq.ParquetFile(path)


def read_table(path: Path | str, columns: list[str] | None = None) -> pa.Table:
    return read_columns(parquet_file(path), columns, path)


class ColumnNotFound(ValueError):
    """A column asked of a shard that it does not have (a ValueError, as pyarrow's ArrowInvalid was)."""


def has_column(schema: pa.Schema, column: str) -> bool:
    """Whether ``column``, a name or a dotted path into structs (``origin.dataset``), is in ``schema``."""
    top, *children = column.split(".")
    if top not in schema.names:
        return False
    kind = schema.field(top).type
    for child in children:
        if not pa.types.is_struct(kind) or kind.get_field_index(child) < 0:
            return False
        kind = kind.field(child).type
    return True


def read_columns(handle: pq.ParquetFile, columns: list[str] | None, path: Path | str) -> pa.Table:
    """``columns`` of an open file: top-level names, or dotted paths into structs (``origin.dataset``
    comes back as a struct ``origin`` holding ``dataset`` alone, as ``ParquetFile.read`` gives it).

    ``ParquetFile.read`` rather than ``pq.read_table``: for one file it skips the dataset layer's
    discovery, half the time per 16-row shard (1.0 against 2.0 ms) and less memory held per table
    (docs/PERFORMANCE.md, "Memory flatness"). It silently drops unknown names and paths, so they are
    refused here, as ``pq.read_table`` refuses them."""
    if columns is not None:
        schema = handle.schema_arrow
        if missing := [c for c in columns if not has_column(schema, c)]:
            raise ColumnNotFound(f"{path}: no column {', '.join(missing)} (it has {', '.join(schema.names)})")
    return handle.read(columns=columns)


def read_schema(path: Path | str) -> pa.Schema:
    path = location(path)
    if is_remote(path):
        return pq.read_schema(path.path, filesystem=_arrow_fs(path))
    return pq.read_schema(path)


# -- local atomic files: temp name in the same folder, fsync, rename, fsync the folder ---------------
TMP_PREFIX = ".tmp-"


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


def umask() -> int:
    """The process umask, read from /proc now (``os.umask`` can only be read by setting it, which races
    with other threads); 022 where /proc is not there."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def file_mode() -> int:
    """0666 less the umask, the mode ``open()`` would give a file: ``mkstemp`` makes 0600 files, and a
    corpus is read by a team (0644 under the usual 022), while a stricter umask (077: 0600) is honoured."""
    return 0o666 & ~umask()


def folder_mode() -> int:
    """0777 less the umask, the mode ``mkdir`` would give a folder: ``mkdtemp`` makes 0700 folders (0755
    under the usual 022; 0700 under 077)."""
    return 0o777 & ~umask()



@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[IO[bytes]]:
    """A file written under a temp name in its folder, fsynced and renamed to ``path`` on success (for
    writers that stream); readers see the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(), dir=path.parent)
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes | pa.Buffer) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part."""
    with atomic_file(path) as handle:
        handle.write(data)


def temp_prefix() -> str:
    """``.tmp-<host>-<pid>-``: a temp file names its writer, so cleanup can tell a live writer's file
    (another build running now, on this host or another) from a killed one's."""
    return f"{TMP_PREFIX}{HOST}-{os.getpid()}-"


HOST = "".join(c if c.isalnum() else "_" for c in socket.gethostname())[:40] or "host"
STALE_AFTER_S = 6 * 3600  # a temp file of another host, or of no known writer, this old is a leftover


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def temp_owner_gone(path: Path, now: float | None = None, stale_after: float = STALE_AFTER_S) -> bool:
    """True when no live writer can own temp file ``path``: its writer is a dead process of this host,
    or (another host's, whose processes cannot be asked, or an unnamed one) it is older than ``stale_after``.
    A live process that reused a dead writer's pid keeps the file: the safe side."""
    rest = path.name[len(TMP_PREFIX):]
    host, _, tail = rest.partition("-")
    pid_text = tail.partition("-")[0]
    if host == HOST and pid_text.isdigit():
        return not _pid_alive(int(pid_text))
    try:
        age = (now or time.time()) - path.stat().st_mtime
    except FileNotFoundError:
        return False
    return age > stale_after


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete leftovers of writers that were killed mid-write, never a live writer's (a concurrent build's):
    see :func:`temp_owner_gone`. Looks in ``folder`` and in its manifest's record folders. Returns what
    was removed. Object storage has no temp objects (a write is one PUT), so there is nothing to do there."""
    if is_remote(folder) or not folder.exists():
        return []
    candidates = [p for sub in ("", "units", "builds") for p in sorted((folder / sub).glob(TMP_PREFIX + "*"))]
    stale = [p for p in candidates if temp_owner_gone(p)]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


# -- writing ------------------------------------------------------------------------------------------
def write_bytes_atomic(path: Path, data: bytes | pa.Buffer | memoryview) -> None:
    """Readers see the old file or the new one, never a part: local, temp + fsync + rename; object
    storage, one PUT of the whole finished buffer."""
    path = location(path)
    if is_remote(path):
        path.fs.pipe_file(path.path, data.to_pybytes() if isinstance(data, pa.Buffer) else bytes(data))
        return
    atomic_write_bytes(path, data)


def makedirs(path: Path) -> None:
    """Create a local folder (and its parents); object storage has no folders, so nothing to do there."""
    path = location(path)
    if not is_remote(path):
        path.mkdir(parents=True, exist_ok=True)


def remove(path: Path) -> None:
    """Delete a file; a missing one is fine."""
    path = location(path)
    try:
        if is_remote(path):
            path.fs.rm_file(path.path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass


# -- local folders standing for remote ones ------------------------------------------------------------
def cache_root() -> Path:
    from ieiw.schemas.filehash import cache_dir

    return cache_dir() / "storage"


def local_folder(path: Path) -> Path:
    """A local folder for ``path``: the folder itself when it is local, else one under the cache named
    after the URL (``<cache>/s3/bucket/prefix/...``), for derived files each machine may rebuild."""
    path = location(path)
    if not is_remote(path):
        return path
    parts = [p for p in path.path.split("/") if p and p not in (".", "..")]
    return cache_root().joinpath(path.protocol if isinstance(path.protocol, str) else path.protocol[0], *parts)


@contextlib.contextmanager
def staged_folder(folder: Path, commit: str) -> Iterator[Path]:
    """A local folder to write ``folder``'s files into. Local ``folder``: the folder itself (its writer is
    atomic already). Remote: a fresh local temp folder, uploaded on success one PUT per file. The
    ``commit`` file (the one readers check first, e.g. ``fingerprint.json``) is deleted before anything
    is uploaded and uploaded last, so no reader takes a half-replaced folder for a finished one; objects
    of an earlier version that the new one does not have are deleted."""
    folder = location(folder)
    if not is_remote(folder):
        yield folder
        return
    staging_root = Path(tempfile.mkdtemp(prefix="ieiw-stage-"))
    staging = staging_root / folder.name
    try:
        yield staging
        files = sorted(p for p in staging.rglob("*") if p.is_file())
        names = {p.relative_to(staging).as_posix() for p in files}
        if commit not in names:
            raise StorageError(f"{folder}: the staged folder has no {commit}; nothing uploaded")
        remove(folder / commit)
        for path in files:
            name = path.relative_to(staging).as_posix()
            if name != commit:
                write_bytes_atomic(folder / name, path.read_bytes())
        base = folder.path.rstrip("/")
        for stale in folder.fs.find(base):
            if stale[len(base) + 1:] not in names:
                folder.fs.rm_file(stale)
        write_bytes_atomic(folder / commit, (staging / commit).read_bytes())
    finally:
        shutil.rmtree(staging_root, ignore_errors=True)


def local_copy(folder: Path, version: str) -> Path:
    """``folder``'s files in a local folder: the folder itself when local; for a remote one, a copy in
    the cache, downloaded once per ``version`` (e.g. the index's fingerprint) into a temp folder and
    renamed into place, so a reader never sees half a copy. An object whose key would lead out of the copy
    (``../``, an absolute part: :func:`ieiw.schemas.paths.path_under`) raises :class:`StorageError` before
    anything of it is written; the partial copy is removed."""
    folder = location(folder)
    if not is_remote(folder):
        return folder
    target = local_folder(folder).with_name(f"{folder.name}@{hashlib.sha256(version.encode()).hexdigest()[:16]}")
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".partial-{target.name}-", dir=target.parent))
    try:
        os.chmod(partial, folder_mode())  # mkdtemp makes it 0700
        base = folder.path.rstrip("/")
        for remote in folder.fs.find(base):
            if not remote.startswith(base + "/"):
                raise StorageError(f"{folder}: the store listed {remote!r}, which is not under {base}")
            try:  # a key with ../ or an absolute part would write outside the cache folder
                local = path_under(partial, remote[len(base) + 1:])
            except PathOutsideRoot as exc:
                raise StorageError(f"{folder}: object {remote!r} would be written outside the local copy "
                                   f"{target} ({exc.why}); refused") from None
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(folder.fs.cat_file(remote))
        try:
            os.replace(partial, target)
        except OSError:  # another process put its copy there first: same version, same files
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target
