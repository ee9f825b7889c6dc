"""Offline dumps: NDJSON of Reddit submissions and comments, plain or zstd-compressed.

The community archives (Pushshift-style, one object per line, ``.zst`` with a long window) are the
practical way to get a whole subreddit's history now that generic crawling is disallowed and
unauthenticated ``.json`` is closing. Comments link to their post through ``link_id`` (``t3_<id>``).
A bad line is reported (file and line number) and skipped; it never stops the read.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard

MAX_WINDOW = 2**31  # archive dumps are compressed with --long=31; the default window refuses them


@dataclass(frozen=True)
class BadLine:
    file: str
    line: int
    message: str


def open_text(path: Path) -> io.TextIOBase:
    """A text stream over a plain or ``.zst`` NDJSON file."""
    raw = open(path, "rb")
    if path.suffix == ".zst":
        reader = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW).stream_reader(raw, closefd=True)
        return io.TextIOWrapper(reader, encoding="utf-8", errors="replace")
    return io.TextIOWrapper(raw, encoding="utf-8", errors="replace")


def read_ndjson(path: Path) -> Iterator[dict[str, Any] | BadLine]:
    """Objects of an NDJSON file; unparsable lines come out as :class:`BadLine` values."""
    with open_text(path) as fh:
        for n, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                yield BadLine(str(path), n, f"invalid JSON: {exc}")
                continue
            if not isinstance(obj, dict):
                yield BadLine(str(path), n, f"expected an object, got {type(obj).__name__}")
                continue
            yield obj.get("data", obj) if obj.get("kind") in ("t1", "t3") else obj


def post_id(obj: dict[str, Any]) -> str | None:
    pid = obj.get("id") or str(obj.get("name") or "").removeprefix("t3_")
    return str(pid) if pid else None


def link_post_id(comment: dict[str, Any]) -> str | None:
    link = comment.get("link_id")
    return str(link).removeprefix("t3_") if link else None


def write_ndjson_zst(path: Path, objects: list[dict[str, Any]], level: int = 10) -> None:
    """Write a zstd NDJSON file (used by the sample generator and the tests)."""
    data = "".join(json.dumps(o, sort_keys=True) + "\n" for o in objects).encode()
    path.write_bytes(zstandard.ZstdCompressor(level=level).compress(data))
