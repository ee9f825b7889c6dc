"""Offline dumps: NDJSON of Reddit submissions and comments, plain or zstd-compressed.

The community archives (Pushshift-style, one object per line, ``.zst`` with a long window) are the
practical way to get a whole subreddit's history now that generic crawling is disallowed and
unauthenticated ``.json`` is closing. Comments link to their post through ``link_id`` (``t3_<id>``).
They are read once per build by :mod:`ieiw.crawlers.dump_index`; this module holds the small
facts about their shape that the index and the builder share.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import zstandard

MAX_WINDOW = 2**31  # archive dumps are compressed with --long=31; the default window refuses them


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
