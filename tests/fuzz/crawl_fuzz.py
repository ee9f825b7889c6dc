"""Parts the web-crawl fuzz families share (Reddit dumps, Reddit API answers, HTML pages).

A crawl record only reaches the deep code (URL parsing, the cache, image checks, instruction cleaning, the
row) while its fields still look right: a post whose ``url`` is replaced whole is just "not an image". So besides
the harness's :func:`~fuzz_harness.mutations` (a field deleted or replaced), a change here may *splice* hostile
text into a string field around its real value: a lone surrogate before the title, a NUL inside the URL, a
name outside the root after the path, a URL with a huge port. A damaged file may also nest deeper than a
recursive parser goes (:func:`file_damage`).

Runs stay offline (:class:`Offline`: no name lookups or connections but loopback), and the sample's images
are read from one shared cache (:class:`OverSampleImages`), so an example costs its answers, not its images.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any, Self

from fuzz_harness import Mutation, byte_damage, mutations
from hypothesis import strategies as st

from ieiw.crawlers.builder import WebCrawlBuilder
from ieiw.crawlers.cache import CacheEntry, ResponseCache
from ieiw.crawlers.http import PoliteSession

SPLICE_TEXTS = st.one_of(
    st.sampled_from(["\ud800", "\udfff", "\x00", "\u202e", "\r\n", "\n", "\\", "%s%n", "&amp;", "&#xd800;", "&#0;",
                     "\ufeff", "\u0085", "#", "?", "../", "/../../outside/", ":99999999", "@evil.example",
                     "[", "]", "%00", "%2e%2e/", " ", "\t", "a" * 5_000, "![img](", ")", "http://", "[removed]"]),
    st.text(max_size=12),
    st.binary(max_size=8).map(lambda b: b.decode("latin-1")),
)


def _string_paths(value: Any, prefix: tuple[Any, ...] = (), depth: int = 6) -> list[tuple[Any, ...]]:
    if isinstance(value, str):
        return [prefix]
    if depth == 0:
        return []
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value[:4])
    else:
        return []
    return [path for key, item in items for path in _string_paths(item, (*prefix, key), depth - 1)]


def _at(record: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        record = record[key]
    return record


@st.composite
def spliced(draw, record: Any, names: list[str] | None = None) -> Mutation:
    """Hostile text put before, inside or after one string field's real value."""
    paths = _string_paths(record)
    if not paths:
        return draw(mutations(record, names))
    path = draw(st.sampled_from(paths))
    value: str = _at(record, path)
    text = draw(st.one_of(SPLICE_TEXTS, st.sampled_from(names)) if names else SPLICE_TEXTS)
    at = draw(st.sampled_from([0, len(value), draw(st.integers(0, len(value)))]))
    return Mutation(path, value[:at] + text + value[at:])


def changes(record: Any, names: list[str] | None = None) -> st.SearchStrategy[Mutation]:
    """One change to a record: the harness's (a field deleted or replaced) or hostile text spliced in."""
    return st.one_of(mutations(record, names), spliced(record, names))


JSON_OPENERS = (b"[", b'{"a":')
HTML_OPENERS = (b"<div>", b"<b><i>", b"<p>")


@st.composite
def nesting(draw, data: bytes, openers: tuple[bytes, ...] = JSON_OPENERS) -> tuple[str, bytes]:
    """A file with deep nesting spliced in somewhere (``[[[[...``, ``<div><div>...``): deeper than a recursive
    parser goes (the recursion limit is 1,000), or just deep. (HTML nesting costs the tree builder about 50 us a
    level, so it stops at 5,000.)"""
    at = draw(st.integers(0, len(data)))
    times = draw(st.sampled_from([40, 1_500, 100_000 if openers == JSON_OPENERS else 5_000]))
    opener = draw(st.sampled_from(openers))
    return f"{opener!r} x {times} at {at}", data[:at] + opener * times + data[at:]


def file_damage(data: bytes, openers: tuple[bytes, ...] = JSON_OPENERS) -> st.SearchStrategy[tuple[str, bytes]]:
    """The harness's byte damage (cut short, bytes that are not UTF-8), or deep nesting."""
    return st.one_of(byte_damage(data), nesting(data, openers))


# -- offline: a hostile URL must never reach the internet from a test ----------------------------------------
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class Offline:
    """While active, name lookups and connections other than loopback fail at once (as on a machine without a
    network): a crafted post may name any host, and the fuzz must neither reach it nor wait for DNS. One audit
    hook per process, switched on by :meth:`__enter__`."""

    installed = False
    active = False

    @classmethod
    def _hook(cls, event: str, args: tuple) -> None:
        if not cls.active:
            return
        if event == "socket.getaddrinfo" and str(args[0]) not in LOOPBACK:
            raise socket.gaierror(socket.EAI_NONAME, f"offline fuzz: no name lookups ({args[0]!r})")
        if event == "socket.connect" and isinstance(args[1], tuple) and str(args[1][0]) not in LOOPBACK:
            raise ConnectionRefusedError(f"offline fuzz: no connections outside loopback ({args[1]!r})")

    def __enter__(self) -> Self:
        if not Offline.installed:
            sys.addaudithook(Offline._hook)
            Offline.installed = True
        Offline.active = True
        return self

    def __exit__(self, *exc: object) -> None:
        Offline.active = False


# -- the sample's images, shared by every example --------------------------------------------------------------
class OverSampleImages(ResponseCache):
    """An example's own cache (where the answers and pages it fetches are written) over the sample's images
    (read-only, shared): what a crawl that fetched the images before finds, without copying a few dozen files
    into every example and deleting them again."""

    def __init__(self, root: Path, images: Path):
        super().__init__(root)
        self.images = ResponseCache(images, readonly=True)

    def get(self, url: str) -> CacheEntry | None:
        return super().get(url) or self.images.get(url)


def with_sample_images(builder: WebCrawlBuilder, images: Path) -> WebCrawlBuilder:
    """``builder`` with its session's cache (``http.cache_dir``, an absolute path) over the sample's images."""
    http = builder.config.http
    builder.__dict__["session"] = PoliteSession(http, OverSampleImages(Path(http.cache_dir), images))
    return builder
