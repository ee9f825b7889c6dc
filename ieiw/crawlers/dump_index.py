"""One pass over a dump pair that keeps what the crawl units need, in Parquet.

``index_dump`` streams the submissions file, then the comments file (plain NDJSON or ``.zst`` with the
archives' long window, decompressed by a helper process while this one scans), in large binary
chunks. A line is parsed only when a cheap byte test lets it through:

- it contains ``"subreddit": "<configured name>"`` (name case-insensitive; one compiled regex over
  the chunk, whose literal key prefix sre scans for in C), or
- it has no ``"subreddit"`` key at all (a broken or foreign line: it is parsed so that it is reported
  as ``bad_line``/``bad_record`` exactly as a parse of every line would report it, or kept when it has no
  subreddit).

Every other line is counted as ``other_subreddit`` without being parsed. Output, in ``out_folder``:

- ``posts.parquet``: one row per kept submission line, in file order (``line``, ``kind`` = ``post`` |
  ``bad_line``, ``post_id``, ``json`` = the post object or the error message), in row groups of
  ``rows_per_group`` rows: one work unit per row group.
- ``comments.parquet``: the image-bearing comments of those posts, trimmed to ``COMMENT_KEYS``
  (``json``), with ``post_row`` (the row of their post in ``posts.parquet``), sorted by ``post_row`` so a
  unit reads its comments through the row-group statistics. Each is checked here as the units will
  read it (:func:`~ieiw.crawlers.posts.comment_from_reddit`): one with a field of the wrong type or a
  number that is not finite (``"body": 123``, ``"score": 1e999``) is left out and recorded as a bad record.
- ``index.json``: written last: fingerprint (paths, sizes, mtimes, subreddit, format), counts, the
  comment file's bad lines and bad records. A rerun with the same fingerprint skips; anything else (a
  changed dump, an interrupted run, which leaves no ``index.json``) indexes again from scratch, to the
  same bytes.

A ``.zst`` file is checked whole before it is read (:func:`zst_problem`: the frames' block headers,
without decompressing): a truncated download raises :class:`TruncatedDump` naming the file, and no
index is written. (The decompressor itself would just stop where the bytes stop, and the index would
look complete.)

Memory: ``SLOTS`` shared ``CHUNK`` slots (scanned in place), ``GROUPS_PER_WRITE`` row groups of posts,
the id -> row map of kept posts and the image-bearing comments of the subreddit (a small share of 1% of
the comments),
plus the decompression window: the frame's window (refused above ``MAX_WINDOW``, 2 GiB), of which the
decoder touches at most the decompressed size. A real ``--long=31`` archive therefore needs ~2 GiB.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import mmap
import os
import re
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import zstandard

from ieiw.crawlers.dumps import MAX_WINDOW, link_post_id, post_id
from ieiw.crawlers.posts import BadRecord, comment_from_reddit, comment_image_urls
from ieiw.schemas.rows import text_field
from ieiw.schemas.storage import atomic_write_bytes

FORMAT = 2  # 2: comment bad records; .zst files checked for truncation (a format-1 index may be of half a file)
CHUNK = 4 << 20  # bytes of decompressed input scanned at a time
COMMENT_KEYS = ("id", "name", "author", "score", "body", "created_utc", "permalink", "media_metadata", "link_id")
MAX_COMMENT_DEPTH = 32  # a kept comment's JSON nesting (Reddit's: about 5, media_metadata included)
MAX_BAD_COMMENT_LINES = 10_000  # recorded in index.json (bad lines, and bad records); the rest are only counted
KEY = b'"subreddit"'
GROUPS_PER_WRITE = 16  # row groups of posts buffered per Parquet write

POSTS_SCHEMA = pa.schema(
    [("line", pa.int64()), ("kind", pa.string()), ("post_id", pa.string()), ("json", pa.string())]
)
COMMENTS_SCHEMA = pa.schema(
    [("post_row", pa.int64()), ("line", pa.int64()), ("post_id", pa.string()), ("json", pa.string())]
)


@dataclass
class IndexResult:
    folder: Path
    posts: Path
    comments: Path
    fingerprint: dict[str, Any]
    counts: dict[str, int] = field(default_factory=dict)
    comment_bad_lines: list[tuple[int, str]] = field(default_factory=list)
    comment_bad_records: list[tuple[int, str, str]] = field(default_factory=list)  # (line, record id, message)
    reused: bool = False

    @property
    def post_rows(self) -> int:
        return int(self.counts.get("post_rows", 0))


def _stat(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"path": str(path), "size": None, "mtime_ns": None}
    st = path.stat()
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def index_fingerprint(submissions: Path, comments: Path, subreddit: str | None, rows_per_group: int) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "submissions": _stat(submissions),
        "comments": _stat(comments),
        "subreddit": subreddit.lower() if subreddit else None,
        "rows_per_group": rows_per_group,
        "max_window": MAX_WINDOW,
    }


def fingerprint_digest(fp: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()


def load_index(folder: Path, fp: dict[str, Any] | None = None) -> IndexResult | None:
    """The finished index in ``folder`` (matching ``fp`` when given), or None."""
    try:
        meta = json.loads((folder / "index.json").read_text())
    except (OSError, ValueError):
        return None
    if fp is not None and meta.get("fingerprint") != fp:
        return None
    posts, comments = folder / "posts.parquet", folder / "comments.parquet"
    if not (posts.exists() and comments.exists()):
        return None
    return IndexResult(
        folder,
        posts,
        comments,
        meta["fingerprint"],
        meta.get("counts", {}),
        [tuple(x) for x in meta.get("comment_bad_lines", [])],
        [tuple(x) for x in meta.get("comment_bad_records", [])],
        reused=True,
    )


class TruncatedDump(OSError):
    """A ``.zst`` dump that ends inside a frame: an incomplete download. Nothing is indexed from it."""


ZSTD_MAGIC = 0xFD2FB528
SKIPPABLE_MAGIC = 0x184D2A50  # the low 4 bits vary
_DICT_ID_BYTES = (0, 1, 2, 4)
_CONTENT_SIZE_BYTES = (0, 2, 4, 8)


def zst_problem(path: Path) -> str | None:
    """What makes a ``.zst`` file incomplete or not zstd at all, or None when every frame is whole.

    Walks the frames' headers and block headers (RFC 8878), not their content: one small read per
    block (blocks hold up to 128 KiB of output), so a few seconds for a 100 GB archive. The
    decompressor alone cannot tell: at the end of the input it returns what it has, and a file cut in
    the middle of its frame reads as a shorter, complete one.
    """
    size = path.stat().st_size
    pos = 0
    with open(path, "rb") as fh:
        fd = fh.fileno()

        def read(n: int, at: int, what: str) -> bytes:
            data = os.pread(fd, n, at)
            if len(data) < n:
                raise EOFError(f"the file ends at byte {size} inside {what} at byte {at}")
            return data

        try:
            while pos < size:
                magic = int.from_bytes(read(4, pos, "a frame header"), "little")
                if magic & 0xFFFFFFF0 == SKIPPABLE_MAGIC:
                    pos += 8 + int.from_bytes(read(4, pos + 4, "a skippable frame"), "little")
                    if pos > size:
                        raise EOFError(f"the file ends at byte {size} inside a skippable frame")
                    continue
                if magic != ZSTD_MAGIC:
                    return f"no zstd frame at byte {pos} (magic {magic:#010x})"
                descriptor = read(1, pos + 4, "a frame header")[0]
                single_segment = (descriptor >> 5) & 1
                content_size = _CONTENT_SIZE_BYTES[descriptor >> 6] or single_segment
                pos += 5 + (1 - single_segment) + _DICT_ID_BYTES[descriptor & 3] + content_size
                frame_start = pos
                while True:
                    header = int.from_bytes(read(3, pos, f"the frame that starts at byte {frame_start}"), "little")
                    block_type = (header >> 1) & 3
                    if block_type == 3:
                        return f"a reserved block type at byte {pos}: not a valid zstd file"
                    pos += 3 + (1 if block_type == 1 else header >> 3)
                    if pos > size:
                        raise EOFError(f"the file ends at byte {size} inside a block that needs {pos - size} more")
                    if header & 1:  # the frame's last block
                        break
                pos += 4 * ((descriptor >> 2) & 1)  # the content checksum
                if pos > size:
                    raise EOFError(f"the file ends at byte {size} inside the checksum of its last frame")
        except EOFError as exc:
            return str(exc)
    return None


# -- reading ------------------------------------------------------------------------------------------
# The .zst files are decompressed in a helper process into a ring of shared-memory slots. A thread
# would not do: python-zstandard gives the GIL back around every decompression step, and taking it
# back waits for the scanner's long C calls (regex), so the two ran one after the other. The helper
# also cuts each slot at a line end and counts the "subreddit" keys in it, which balances the work of
# the two processes. Only slot numbers and counts cross the pipes.
SLOTS = 4
_DECOMPRESSOR = """
import mmap, os, re, struct, sys, zstandard
src, fd, slots, size, window = sys.argv[1], *map(int, sys.argv[2:6])
KEY = re.compile(rb'"subreddit"')
stride = size + 1  # a last line may get its missing newline
ring = mmap.mmap(fd, slots * stride)
free = list(range(slots))
def take():
    while not free:
        msg = os.read(0, 8 * slots)
        if not msg:
            sys.exit(0)  # the scanner is gone
        free.extend(struct.unpack(f"{len(msg) // 8}Q", msg))
    return free.pop(0)
carry = b""  # an unfinished line, moved to the start of the next slot
dctx = zstandard.ZstdDecompressor(max_window_size=window)
with open(src, "rb") as fh, dctx.stream_reader(fh, read_size=1 << 20) as r:
    while True:
        slot = take()
        base = slot * stride
        ring[base : base + len(carry)] = carry
        total = len(carry)
        while total < size:  # decompress straight into the slot
            view = memoryview(ring)[base + total : base + size]
            n = r.readinto(view)
            view.release()
            if n == 0:
                break
            total += n
        eof = total < size
        if eof and total == 0:
            break
        if eof:
            if ring[base + total - 1] != 10:
                ring[base + total] = 10
                total += 1
            end = total
        else:
            end = ring.rfind(b"\\n", base, base + total) + 1 - base
            if end <= 0:
                sys.exit(f"a line of {src} is longer than {size} bytes")
        keys = len(KEY.findall(ring, base, base + end))
        carry = ring[base + end : base + total]
        os.write(1, struct.pack("QQQ", slot, end, keys))
        if eof:
            break
os.write(1, struct.pack("QQQ", 0, 0, 0))
"""


def _zst_regions(path: Path, size: int) -> Iterator[tuple[memoryview, int, int, int | None]]:
    problem = zst_problem(path)
    if problem is not None:
        raise TruncatedDump(
            f"{path} is truncated or damaged ({problem}): download it again; nothing was indexed from it"
        )
    shm_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryFile(dir=shm_dir) as shm:
        stride = size + 1
        shm.truncate(SLOTS * stride)
        ring = mmap.mmap(shm.fileno(), SLOTS * stride)
        args = (str(path), str(shm.fileno()), str(SLOTS), str(size), str(MAX_WINDOW))
        cmd = [sys.executable, "-c", _DECOMPRESSOR, *args]
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(shm.fileno(),)
        )
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        finished = False
        try:
            while True:
                msg = proc.stdout.read(24)
                if len(msg) < 24:
                    break
                slot, n, keys = struct.unpack("QQQ", msg)
                if n == 0:
                    finished = True
                    break
                view = memoryview(ring)[slot * stride : slot * stride + n]  # scanned in place: no copy
                try:
                    yield view, 0, n, keys
                finally:
                    view.release()
                try:  # hand the slot back; a helper that already hit the end has exited
                    os.write(proc.stdin.fileno(), struct.pack("Q", slot))
                except BrokenPipeError:
                    pass
        finally:
            if not finished and proc.poll() is None:
                proc.kill()
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
            err = proc.stderr.read().decode(errors="replace")
            proc.wait()
            ring.close()
        if not finished:
            raise OSError(f"decompressing {path} failed (exit {proc.returncode}): {err.strip()[-2000:]}")


def _line_regions(path: Path, size: int = CHUNK) -> Iterator[tuple[bytes | memoryview, int, int, int | None]]:
    """``(buffer, lo, hi, keys)``: ``buffer[lo:hi]`` (valid until the next item) is a run of whole lines,
    each ending with ``\\n``; ``keys`` is the count of ``"subreddit"`` keys in it when already known
    (the zst helper counts them), else None.

    Plain files: regions point into the chunks read (no copy); only a line cut by a chunk boundary
    is joined into a small buffer of its own. A last line without ``\\n`` gets one."""
    if path.suffix == ".zst":
        yield from _zst_regions(path, size)
        return
    carry = b""
    with open(path, "rb") as fh:
        while chunk := fh.read(size):
            lo = 0
            if carry:
                first = chunk.find(b"\n")
                if first < 0:
                    carry += chunk
                    continue
                joined = carry + chunk[: first + 1]
                yield joined, 0, len(joined), None
                lo = first + 1
            hi = chunk.rfind(b"\n") + 1
            if hi > lo:
                yield chunk, lo, hi, None
                carry = chunk[hi:]
            else:
                carry = chunk[lo:]
    if carry:
        yield carry + b"\n", 0, len(carry) + 1, None


def _pattern(subreddit: str) -> re.Pattern[bytes]:
    """The ``"subreddit": "<name>"`` pair, name case-insensitive (sre scans for the literal key in C)."""
    return re.compile(rb'"subreddit"\s*:\s*"(?i:' + re.escape(subreddit.encode()) + rb')"')


def scan(path: Path, subreddit: str | None, counts: dict[str, int]) -> Iterator[tuple[int, bytes]]:
    """``(1-based line number, line)`` of the lines that pass the byte prefilter.

    ``counts`` gets ``lines`` (all lines) and ``skipped`` (non-blank lines that did not pass)."""
    pattern = _pattern(subreddit) if subreddit else None
    base = 0  # lines before the current region
    for buf, lo, hi, keys in _line_regions(path):
        if pattern is None:
            lines = bytes(buf[lo:hi]).split(b"\n")[:-1]
            for i, line in enumerate(lines):
                if line.strip():
                    yield base + i + 1, line
            base += len(lines)
            counts["lines"] = counts.get("lines", 0) + len(lines)
            continue
        out, n, skipped = _scan_region(buf, lo, hi, pattern, base, keys)
        counts["lines"] = counts.get("lines", 0) + n
        counts["skipped"] = counts.get("skipped", 0) + skipped
        yield from out
        base += n


def _scan_region(
    buf: bytes | memoryview, lo: int, hi: int, pattern: re.Pattern[bytes], base: int, keys: int | None = None
) -> tuple[list[tuple[int, bytes]], int, int]:
    """Candidates of one region, its line count and its skipped (non-blank, not candidate) lines.

    Three whole-buffer passes in C: the newline positions (numpy), the ``"subreddit": "<name>"`` regex
    and a count of the ``"subreddit"`` key (done by the decompressing helper for ``.zst``). Only when
    that key count differs from the line count (a line without the key, a blank line, or a line with
    the key twice, e.g. a crosspost) is the region walked line by line to find the lines without it."""
    newlines = np.flatnonzero(np.frombuffer(buf, np.uint8, hi - lo, lo) == 10) + lo
    n = len(newlines)
    out: list[tuple[int, bytes]] = []
    hit_lines: set[int] = set()
    match = None
    for match in pattern.finditer(buf, lo, hi):
        i = int(np.searchsorted(newlines, match.start()))
        if i in hit_lines:
            continue
        hit_lines.add(i)
        start = int(newlines[i - 1]) + 1 if i else lo
        out.append((base + i + 1, bytes(buf[start : int(newlines[i])])))
    del match  # a match keeps the (shared-memory) buffer exported
    if (bytes(buf).count(KEY, lo, hi) if keys is None else keys) == n:
        return out, n, n - len(out)
    blank = 0
    for i, text in enumerate(bytes(buf[lo:hi]).split(b"\n")[:-1]):
        if i not in hit_lines:
            if not text.strip():
                blank += 1
            elif KEY not in text:
                out.append((base + i + 1, text))
    out.sort()
    return out, n, n - len(out) - blank


def _parse(line: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """The object of a line (unwrapped from a ``{"kind": "t3", "data": ...}`` wrapper), and its JSON
    text (the line itself unless it was wrapped) or the parse error."""
    text = line.decode("utf-8", "replace")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON: {exc}"
    except RecursionError:  # a crafted line of [[[[...: the parser's own limit
        return None, "invalid JSON: nested too deeply"
    if not isinstance(obj, dict):
        return None, f"expected an object, got {type(obj).__name__}"
    if obj.get("kind") in ("t1", "t3") and isinstance(obj.get("data"), dict):
        obj = obj["data"]
        try:
            text = _json_text(obj)
        except RecursionError:
            return None, "invalid JSON: nested too deeply"
    return obj, text.strip()


def _nested_deeper(value: Any, limit: int) -> bool:
    """Whether a parsed JSON value nests deeper than ``limit`` (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _json_text(obj: Any) -> str:
    """An object as JSON text Parquet can hold: a lone surrogate (valid JSON ``"\\ud800"``, which a raw dump
    of it keeps) becomes U+FFFD, or the whole index would fail to write."""
    return text_field(json.dumps(obj, separators=(",", ":"), ensure_ascii=False)) or ""


def _other(obj: dict[str, Any], subreddit: str | None) -> bool:
    sub = str(obj.get("subreddit") or "")
    return bool(subreddit and sub and sub.lower() != subreddit.lower())


# -- writing ------------------------------------------------------------------------------------------
class _Writer:
    """A Parquet file written under a temporary name and renamed into place by ``commit``."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.path = path
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        self.writer = pq.ParquetWriter(self.tmp, schema, compression="zstd")
        self.schema = schema

    def write(self, columns: dict[str, list[Any]], row_group_size: int) -> None:
        self.writer.write_table(pa.table(columns, schema=self.schema), row_group_size=row_group_size)

    def commit(self) -> None:
        self.writer.close()
        os.chmod(self.tmp, 0o644)
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self.writer.close()
        finally:
            self.tmp.unlink(missing_ok=True)


def index_dump(
    submissions: Path,
    comments: Path,
    subreddit: str | None,
    out_folder: Path,
    rows_per_group: int = 64,
) -> IndexResult:
    """Index one dump pair into ``out_folder`` (skipped when a finished index matches)."""
    out_folder = Path(out_folder)
    out_folder.mkdir(parents=True, exist_ok=True)
    fp = index_fingerprint(submissions, comments, subreddit, rows_per_group)
    done = load_index(out_folder, fp)
    if done is not None:
        return done
    with open(out_folder / ".lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # several processes preparing one build: one indexes
        done = load_index(out_folder, fp)
        if done is not None:
            return done
        (out_folder / "index.json").unlink(missing_ok=True)
        for stale in out_folder.glob(".*.tmp"):  # left by an interrupted run
            stale.unlink(missing_ok=True)
        return _index_locked(submissions, comments, subreddit, out_folder, rows_per_group, fp)


def _index_locked(
    submissions: Path, comments: Path, subreddit: str | None, out: Path, rows_per_group: int, fp: dict[str, Any]
) -> IndexResult:
    counts: dict[str, int] = {}
    rows_by_post: dict[str, list[int]] = {}
    posts = _Writer(out / "posts.parquet", POSTS_SCHEMA)
    comments_out = _Writer(out / "comments.parquet", COMMENTS_SCHEMA)
    try:
        # submissions: rows in file order, flushed one row group at a time
        buf: dict[str, list[Any]] = {name: [] for name in POSTS_SCHEMA.names}
        row = 0
        sub_counts: dict[str, int] = {}
        for line_no, line in (scan(submissions, subreddit, sub_counts) if submissions.exists() else ()):
            obj, text = _parse(line)
            if obj is not None and _other(obj, subreddit):
                counts["other_subreddit"] = counts.get("other_subreddit", 0) + 1
                continue
            if obj is None:
                kind, pid = "bad_line", None
            else:
                kind, pid = "post", post_id(obj)
                if pid:
                    rows_by_post.setdefault(pid, []).append(row)
            for name, value in zip(POSTS_SCHEMA.names, (line_no, kind, text_field(pid), text)):
                buf[name].append(value)
            row += 1
            if len(buf["line"]) == rows_per_group * GROUPS_PER_WRITE:
                posts.write(buf, rows_per_group)
                buf = {name: [] for name in POSTS_SCHEMA.names}
        if buf["line"]:
            posts.write(buf, rows_per_group)
        counts["post_rows"] = row
        counts["submission_lines"] = sub_counts.get("lines", 0)
        counts["other_subreddit"] = counts.get("other_subreddit", 0) + sub_counts.get("skipped", 0)

        # comments: image-bearing ones of kept posts, spilled in file order, then sorted by post row
        bad: list[tuple[int, str]] = []
        n_bad = 0
        bad_records: list[tuple[int, str, str]] = []
        n_bad_records = 0
        cbuf: dict[str, list[Any]] = {name: [] for name in COMMENTS_SCHEMA.names}
        com_counts: dict[str, int] = {}
        kept = 0
        spilled: list[pa.Table] = []
        for line_no, line in (scan(comments, subreddit, com_counts) if comments.exists() else ()):
            obj, error = _parse(line)
            if obj is None:
                n_bad += 1
                if len(bad) < MAX_BAD_COMMENT_LINES:
                    bad.append((line_no, error or "bad line"))
                continue
            pid = link_post_id(obj)
            if not pid or pid not in rows_by_post:
                continue
            try:
                if not comment_image_urls(obj):
                    continue
                comment_from_reddit(obj)  # what the unit will read, checked once here
                trimmed = {k: obj.get(k) for k in COMMENT_KEYS}
                if _nested_deeper(trimmed, MAX_COMMENT_DEPTH):  # the unit parses it again, at another stack depth
                    raise BadRecord(f"the comment nests deeper than {MAX_COMMENT_DEPTH} levels")
            except (ValueError, TypeError, AttributeError, ArithmeticError) as exc:  # BadRecord: a named field
                n_bad_records += 1
                if len(bad_records) < MAX_BAD_COMMENT_LINES:
                    cid = obj.get("id") or obj.get("name")
                    record = f"{pid}/{cid}" if isinstance(cid, str) and cid else f"line {line_no}"
                    why = str(exc) if isinstance(exc, BadRecord) else repr(exc)
                    bad_records.append((line_no, record, f"line {line_no}: {why}"))
                continue
            text = _json_text(trimmed)
            for post_row in rows_by_post[pid]:
                for name, value in zip(COMMENTS_SCHEMA.names, (post_row, line_no, text_field(pid), text)):
                    cbuf[name].append(value)
                kept += 1
            if len(cbuf["line"]) >= 50_000:
                spilled.append(pa.table(cbuf, schema=COMMENTS_SCHEMA))
                cbuf = {name: [] for name in COMMENTS_SCHEMA.names}
        if cbuf["line"]:
            spilled.append(pa.table(cbuf, schema=COMMENTS_SCHEMA))
        table = pa.concat_tables(spilled) if spilled else COMMENTS_SCHEMA.empty_table()
        if table.num_rows:
            order = pc.sort_indices(table, sort_keys=[("post_row", "ascending"), ("line", "ascending")])
            table = table.take(order)
        comments_out.writer.write_table(table, row_group_size=max(1024, rows_per_group * 8))
        counts["comment_rows"] = kept
        counts["comment_lines"] = com_counts.get("lines", 0)
        counts["comment_bad_lines"] = n_bad
        counts["comment_bad_records"] = n_bad_records
        posts.commit()
        comments_out.commit()
    except BaseException:
        posts.abort()
        comments_out.abort()
        raise
    meta = {"fingerprint": fp, "counts": counts, "comment_bad_lines": bad, "comment_bad_records": bad_records}
    atomic_write_bytes(out / "index.json", json.dumps(meta, sort_keys=True, indent=1).encode())
    return IndexResult(out, out / "posts.parquet", out / "comments.parquet", fp, counts, bad, bad_records)


def read_posts(result: IndexResult, start: int, stop: int) -> pa.Table:
    """Rows ``start <= row < stop`` of ``posts.parquet``, read by row group."""
    f = pq.ParquetFile(result.posts)
    per = f.metadata.row_group(0).num_rows if f.metadata.num_row_groups else 1
    groups = list(range(start // per, min(f.metadata.num_row_groups, (stop + per - 1) // per)))
    if not groups:
        return POSTS_SCHEMA.empty_table()
    table = f.read_row_groups(groups)
    first = groups[0] * per
    return table.slice(start - first, stop - start)


def read_comments(result: IndexResult, start: int, stop: int) -> dict[int, list[dict[str, Any]]]:
    """Comments of the posts in rows ``start <= row < stop``, by post row (row-group statistics)."""
    table = pq.read_table(result.comments, filters=[("post_row", ">=", start), ("post_row", "<", stop)])
    by_row: dict[int, list[dict[str, Any]]] = {}
    for post_row, text in zip(table.column("post_row").to_pylist(), table.column("json").to_pylist()):
        by_row.setdefault(post_row, []).append(json.loads(text))
    return by_row
