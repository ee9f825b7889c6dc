"""Content-addressed on-disk cache of HTTP responses, so a rerun fetches nothing twice.

Layout under the cache folder::

    index/<k[:2]>/<k>.json     k = sha256 of the normalised URL; status, content type, blob name, or
                               a permanent failure reason (a 404, a non-image, a bomb...)
    blobs/<h[:2]>/<h>.<ext>    h = sha256 of the body; the extension follows the content type, so
                               packaging globs (*.jpg, *.png, *.json) pick the blobs up

Bodies are stored once however many URLs point at them. Every write goes to a temporary file in the
same folder, is fsynced and renamed into place, so a killed run never leaves a half-written entry;
the blob is written before the index entry that names it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from PIL import Image

from ieiw.imageio import EXTENSIONS as IMAGE_EXTENSIONS
from ieiw.schemas.storage import atomic_write_bytes

log = logging.getLogger(__name__)


def _content_extensions() -> dict[str, str]:
    """Content type -> blob extension: images named as everywhere else (Pillow's MIME type of each
    allowed format, :data:`ieiw.imageio.EXTENSIONS`), plus the few text types the crawler caches."""
    Image.init()  # Image.MIME is filled as the format plugins load
    images = {mime: IMAGE_EXTENSIONS[fmt] for fmt, mime in Image.MIME.items() if fmt in IMAGE_EXTENSIONS}
    return {**images, "application/json": "json", "text/html": "html", "text/plain": "txt"}


EXTENSIONS = _content_extensions()


def normalise_url(url: str) -> str:
    """Lower-case scheme and host, drop the fragment: equal resources get equal keys."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", parts.query, ""))


def url_key(url: str) -> str:
    return hashlib.sha256(normalise_url(url).encode()).hexdigest()


BLOB_NAME = re.compile(r"blobs/(?P<prefix>[0-9a-f]{2})/(?P<digest>[0-9a-f]{64})\.(?P<ext>[a-z0-9]{1,8})")


def _valid_meta(meta: object) -> bool:
    """An index entry has the fields and types :meth:`ResponseCache.get` relies on."""
    if not isinstance(meta, dict):
        return False
    if not isinstance(meta.get("url"), str) or type(meta.get("status")) is not int:
        return False
    for key in ("content_type", "reason", "message"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            return False
    if meta.get("blob"):
        if not isinstance(meta["blob"], str) or not isinstance(meta.get("sha256"), str):
            return False
    elif not meta.get("reason"):
        return False  # neither a body nor a failure
    return True


@dataclass(frozen=True)
class CacheEntry:
    url: str
    status: int
    content_type: str
    body: bytes | None  # None for a cached permanent failure
    reason: str | None = None  # failure reason when the fetch failed for good
    message: str | None = None


class ResponseCache:
    """Read and write cached responses; ``readonly`` caches (the bundled sample) refuse writes."""

    def __init__(self, root: Path, readonly: bool = False):
        self.root = Path(root)
        self.readonly = readonly

    def _index_path(self, url: str) -> Path:
        k = url_key(url)
        return self.root / "index" / k[:2] / f"{k}.json"

    def get(self, url: str) -> CacheEntry | None:
        """The cached entry of ``url``, or None. An index entry that cannot be read or trusted (not JSON,
        not an object, missing or mistyped fields, a ``blob`` that is not one of this cache's blob names,
        a blob whose bytes do not match its digest) is a miss, never a crash and never a file outside
        the cache: a rerun fetches the URL again and overwrites the entry."""
        path = self._index_path(url)
        if not path.is_file():
            return None
        try:
            meta = json.loads(path.read_bytes())
        except (OSError, ValueError, RecursionError) as exc:  # truncated, not UTF-8, not JSON, nested [[[[...
            log.warning("crawl cache: unreadable index entry %s (%s): treated as a miss", path, exc)
            return None
        if not _valid_meta(meta):
            log.warning("crawl cache: malformed index entry %s: treated as a miss", path)
            return None
        body = None
        if meta.get("blob"):
            blob = self._blob_path(meta["blob"], meta["sha256"])
            if blob is None:
                log.warning("crawl cache: index entry %s names a blob outside the cache: treated as a miss", path)
                return None
            try:
                body = blob.read_bytes()
            except OSError:
                return None  # a missing blob is a miss
            if hashlib.sha256(body).hexdigest() != meta["sha256"]:
                return None  # a corrupted blob is a miss, not a wrong answer
        return CacheEntry(
            url=meta["url"],
            status=meta["status"],
            content_type=meta.get("content_type") or "",
            body=body,
            reason=meta.get("reason"),
            message=meta.get("message"),
        )

    def _blob_path(self, name: str, sha: str) -> Path | None:
        """The file of an index entry's ``blob``: only ``blobs/<h[:2]>/<h>.<ext>`` with ``h`` the entry's
        own lower-case sha256 and a plain extension, nothing else (no ``..``, no absolute path)."""
        m = BLOB_NAME.fullmatch(name)
        if m is None or m["digest"] != sha or m["prefix"] != sha[:2]:
            return None
        return self.root / "blobs" / m["prefix"] / f"{m['digest']}.{m['ext']}"

    def put(self, url: str, status: int, content_type: str, body: bytes, fetched_at: float | None = None) -> None:
        """Store a response (``fetched_at`` is fixed by the sample generator for reproducible files)."""
        if self.readonly:
            return
        sha = hashlib.sha256(body).hexdigest()
        ext = EXTENSIONS.get(content_type.split(";")[0].strip().lower(), "bin")
        blob_rel = f"blobs/{sha[:2]}/{sha}.{ext}"
        blob = self.root / blob_rel
        if not blob.exists():
            atomic_write_bytes(blob, body)
        meta = {
            "url": normalise_url(url),
            "status": status,
            "content_type": content_type,
            "sha256": sha,
            "size": len(body),
            "blob": blob_rel,
            "fetched_at": round(time.time() if fetched_at is None else fetched_at, 3),
        }
        atomic_write_bytes(self._index_path(url), json.dumps(meta, sort_keys=True, indent=1).encode())

    def put_failure(self, url: str, status: int, reason: str, message: str) -> None:
        """Remember a permanent failure (4xx, not an image, too large) so a rerun does not retry it."""
        if self.readonly:
            return
        meta = {
            "url": normalise_url(url),
            "status": status,
            "reason": reason,
            "message": message,
            "fetched_at": round(time.time(), 3),
        }
        atomic_write_bytes(self._index_path(url), json.dumps(meta, sort_keys=True, indent=1).encode())
