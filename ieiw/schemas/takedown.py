"""The takedown list: ids or URLs that a rebuild must not turn into rows again.

Entries are post ids (``abc123`` or ``t3_abc123``), comment ids (``t1_...``), row ids, permalinks or
image URLs. URLs are compared normalised (scheme/host lower-cased, fragment and trailing slash
dropped). The list's digest is part of the builder fingerprint, so changing it invalidates built
shards and the next build drops the rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ieiw.schemas.rows import stable_hash


def _norm(entry: str) -> str:
    entry = entry.strip()
    if entry.startswith(("http://", "https://")):
        try:
            p = urlsplit(entry)
        except ValueError:  # "https://[host" (a bracket not closed): no URL to normalise, compare it as text
            return entry.lower()
        host = p.netloc.lower().removeprefix("www.").removeprefix("old.")
        return urlunsplit((p.scheme.lower(), host, p.path.rstrip("/"), p.query, ""))
    for prefix in ("t1_", "t3_"):
        entry = entry.removeprefix(prefix)
    return entry.lower()


@dataclass(frozen=True)
class Takedown:
    entries: frozenset[str]

    @classmethod
    def load(cls, files: Iterable[Path], entries: Iterable[str] = ()) -> Takedown:
        items = [e for e in entries if e.strip()]
        for f in files:
            if f.is_file():
                for line in f.read_text().splitlines():
                    line = line.split("#", 1)[0].strip()
                    if line:
                        items.append(line)
        return cls(frozenset(_norm(e) for e in items))

    def blocks(self, *keys: str | None) -> str | None:
        """The first key on the list, or None."""
        for key in keys:
            if key and _norm(key) in self.entries:
                return key
        return None

    def blocks_row(self, row: Mapping[str, Any]) -> str | None:
        """The key of a pair row the list names, or None: its id, its origin record id or a part of it
        (a crawled edit's record is "<post id>/<comment id>", so listing the post withholds its edits),
        the thread URL or the edit URL. Every place rows leave the project asks this one question."""
        if not self.entries:
            return None
        origin = row.get("origin") or {}
        record = origin.get("record_id") or ""
        return self.blocks(row.get("id"), record, *record.split("/"), origin.get("url"), origin.get("edit_url"))

    def digest(self) -> str:
        return stable_hash(sorted(self.entries), length=16)
