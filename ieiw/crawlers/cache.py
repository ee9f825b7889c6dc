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
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from PIL import Image

from ieiw.imageio import EXTENSIONS as IMAGE_EXTENSIONS
from ieiw.schemas.storage import atomic_write_bytes


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
        path = self._index_path(url)
        if not path.is_file():
            return None
        meta = json.loads(path.read_text())
        body = None
        if meta.get("blob"):
            blob = self.root / meta["blob"]
            body = blob.read_bytes()
            if hashlib.sha256(body).hexdigest() != meta["sha256"]:
                return None  # a corrupted blob is a miss, not a wrong answer
        return CacheEntry(
            url=meta["url"],
            status=meta["status"],
            content_type=meta.get("content_type", ""),
            body=body,
            reason=meta.get("reason"),
            message=meta.get("message"),
        )

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
