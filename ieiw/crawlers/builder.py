"""``WebCrawlBuilder``: the photoshop-request crawl as a candidate builder the build flow can run.

Units: ranges of submission lines of each dump, chunks of post ids from the OAuth API listing
(walked once in :meth:`plan`, through the cache), and chunks of HTML thread pages. ``build_unit``
turns each thread into rows with :class:`~ieiw.crawlers.pairs.PairMaker`; bad lines, refused URLs
and rejected edits come back as failures with stable reasons.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ieiw.builders.base import BuildContext, CandidateBuilder, Failure, UnitResult, WorkUnit

from .cache import ResponseCache
from .config import CrawlConfig, DumpSourceConfig, resolve
from .dumps import BadLine, link_post_id, open_text, post_id, read_ndjson
from .html_source import HtmlSource
from .http import FetchError, PoliteSession
from .pairs import ALIGN_BACKEND, PairMaker
from .posts import Thread, comment_image_urls, thread_from_reddit
from .reddit_api import RedditApi
from .takedown import Takedown

log = logging.getLogger(__name__)
COMMENT_KEYS = ("id", "name", "author", "score", "body", "created_utc", "permalink", "media_metadata", "link_id")


class WebCrawlBuilder(CandidateBuilder):
    """Web ``task="web"`` pairs from photoshop-request threads (dumps, OAuth API, HTML pages)."""

    name = "crawl"

    def __init__(self, config: CrawlConfig, context: BuildContext | Path):
        self.config = config
        self.root = Path(context.root if isinstance(context, BuildContext) else context)
        t = config.takedown
        self.takedown = Takedown.load([resolve(self.root, f) for f in t.files], t.entries)
        self._init_state()

    def _init_state(self) -> None:
        self._lock = threading.Lock()  # the flow may run units of one builder in threads
        self._session: PoliteSession | None = None
        self._reddit: RedditApi | None = None
        self._comment_index: dict[int, tuple[dict[str, list[dict[str, Any]]], list[BadLine]]] = {}

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (process/Dask task runners): sessions, locks and indexes are rebuilt on arrival."""
        return {"config": self.config, "root": self.root, "takedown": self.takedown}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_state()

    # -- shared plumbing ------------------------------------------------------------------------
    @property
    def session(self) -> PoliteSession:
        with self._lock:
            if self._session is None:
                http = self.config.http
                cache = ResponseCache(resolve(self.root, http.cache_dir), readonly=http.replay_only)
                self._session = PoliteSession(http, cache)
            return self._session

    def _maker(self, backend: str) -> PairMaker:
        return PairMaker(self.config, self.session, self.takedown, backend)

    def _api(self) -> RedditApi:
        """One client per builder, so the OAuth token is requested once and reused."""
        assert self.config.reddit_api is not None
        session = self.session
        with self._lock:
            if self._reddit is None:
                self._reddit = RedditApi(session, self.config.reddit_api, os.environ)
            return self._reddit

    # -- CandidateBuilder -----------------------------------------------------------------------
    def plan(self) -> list[WorkUnit]:
        units: list[WorkUnit] = []
        n = self.config.posts_per_unit
        for i, dump in enumerate(self.config.dumps):
            path = resolve(self.root, dump.submissions)
            lines = _count_lines(path)
            for k, start in enumerate(range(0, max(lines, 1), n)):
                if lines == 0:
                    break
                units.append(
                    WorkUnit(
                        key=f"crawl-dump{i}-{k:05d}",
                        payload={"source": "dump", "dump": i, "start": start, "stop": min(start + n, lines)},
                    )
                )
        if self.config.reddit_api is not None:
            ids = self._api().post_ids()
            for k, start in enumerate(range(0, len(ids), n)):
                units.append(
                    WorkUnit(
                        key=f"crawl-api-{k:05d}", payload={"source": "reddit_api", "post_ids": ids[start : start + n]}
                    )
                )
        for i, site in enumerate(self.config.html_sites):
            for k, start in enumerate(range(0, len(site.pages), n)):
                units.append(
                    WorkUnit(
                        key=f"crawl-html{i}-{k:05d}",
                        payload={"source": "html", "site": i, "pages": list(site.pages[start : start + n])},
                    )
                )
        return units

    def build_unit(self, unit: WorkUnit) -> UnitResult:
        result = UnitResult()
        source = unit.payload.get("source")
        if source == "dump":
            self._build_dump(unit.payload, result)
        elif source == "reddit_api":
            self._build_api(unit.payload, result)
        elif source == "html":
            self._build_html(unit.payload, result)
        else:
            result.failures.append(Failure("bad_unit", unit.key, None, f"unknown source {source!r}"))
        return result

    def fingerprint(self) -> dict[str, Any]:
        c = self.config
        sources: list[dict[str, Any]] = []
        for d in c.dumps:
            sources.append(
                {
                    "dump": d.model_dump(mode="json"),
                    "bytes": [_size(resolve(self.root, d.submissions)), _size(resolve(self.root, d.comments))],
                }
            )
        if c.reddit_api is not None:
            api = c.reddit_api.model_dump(mode="json", exclude={"min_remaining", "max_ratelimit_wait_s"})
            sources.append({"reddit_api": api})
        for s in c.html_sites:
            sources.append({"html": s.model_dump(mode="json")})
        return {
            "builder": self.name,
            "version": 2,  # 2: origin v2 (authors, edit_url, record_id/image_id), imageio encoding
            "sources": sources,
            "pairs": c.pairs.model_dump(mode="json"),
            "validation": c.validation.model_dump(mode="json"),
            "image_format": c.image_format,
            "posts_per_unit": c.posts_per_unit,
            "takedown": self.takedown.digest(),
        }

    def backends(self) -> dict[str, str]:
        kinds = (["reddit-dump"] if self.config.dumps else []) + (["reddit-api"] if self.config.reddit_api else [])
        kinds += [f"html:{s.name}" for s in self.config.html_sites]
        return {
            "sources": ",".join(kinds) or "none",
            "align": ALIGN_BACKEND,
            "http": "replay-only" if self.config.http.replay_only else "network+cache",
        }

    # -- sources --------------------------------------------------------------------------------
    def _build_dump(self, payload: dict[str, Any], result: UnitResult) -> None:
        dump = self.config.dumps[payload["dump"]]
        path = resolve(self.root, dump.submissions)
        comments, bad_comment_lines = self._comments_for(payload["dump"], dump)
        if payload["start"] == 0:  # comment-file problems are reported once, by the first unit
            for bad in bad_comment_lines:
                result.failures.append(Failure("bad_line", f"line {bad.line}", bad.file, bad.message))
        maker = self._maker("reddit-dump")
        for line_no, obj in _lines(path, payload["start"], payload["stop"]):
            if isinstance(obj, BadLine):
                result.records += 1
                result.failures.append(Failure("bad_line", f"line {obj.line}", obj.file, obj.message))
                continue
            pid = post_id(obj)
            if not pid:
                result.records += 1
                result.failures.append(Failure("bad_record", f"line {line_no}", str(path), "submission without id"))
                continue
            sub = str(obj.get("subreddit") or "")
            if dump.subreddit and sub and sub.lower() != dump.subreddit.lower():
                result.counters["other_subreddit"] += 1
                continue
            try:
                thread = thread_from_reddit(obj, comments.get(pid, []), dump.dataset, str(path))
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                result.records += 1
                result.failures.append(Failure("bad_record", pid, str(path), f"line {line_no}: {exc!r}"))
                continue
            maker.process(thread, result)

    def _comments_for(
        self, index: int, dump: DumpSourceConfig
    ) -> tuple[dict[str, list[dict[str, Any]]], list[BadLine]]:
        """Image-bearing comments by post id, read once per process (trimmed to the needed keys)."""
        with self._lock:
            return self._comments_locked(index, dump)

    def _comments_locked(
        self, index: int, dump: DumpSourceConfig
    ) -> tuple[dict[str, list[dict[str, Any]]], list[BadLine]]:
        if index not in self._comment_index:
            by_post: dict[str, list[dict[str, Any]]] = {}
            bad: list[BadLine] = []
            path = resolve(self.root, dump.comments)
            for obj in read_ndjson(path):
                if isinstance(obj, BadLine):
                    bad.append(obj)
                    continue
                pid = link_post_id(obj)
                if pid and comment_image_urls(obj):
                    by_post.setdefault(pid, []).append({k: obj.get(k) for k in COMMENT_KEYS})
            self._comment_index[index] = (by_post, bad)
        return self._comment_index[index]

    def _build_api(self, payload: dict[str, Any], result: UnitResult) -> None:
        api = self._api()
        maker = self._maker("reddit-api")
        for pid in payload["post_ids"]:
            try:
                thread = api.thread(pid)
            except FetchError as exc:
                result.records += 1
                result.failures.append(Failure(exc.reason, pid, exc.url, exc.message))
                continue
            except (KeyError, TypeError, ValueError, AttributeError, json.JSONDecodeError) as exc:
                result.records += 1
                result.failures.append(Failure("bad_record", pid, None, f"unexpected API answer: {exc!r}"))
                continue
            maker.process(thread, result)

    def _build_html(self, payload: dict[str, Any], result: UnitResult) -> None:
        site = self.config.html_sites[payload["site"]]
        source = HtmlSource(self.session, site)
        maker = self._maker(f"html:{site.name}")
        for url in payload["pages"]:
            try:
                thread: Thread = source.thread(url)
            except FetchError as exc:
                result.records += 1
                result.failures.append(Failure(exc.reason, url, exc.url, exc.message))
                continue
            except ValueError as exc:
                result.records += 1
                result.failures.append(Failure("bad_page", url, url, str(exc)))
                continue
            maker.process(thread, result)


def _size(path: Path) -> int | None:
    return path.stat().st_size if path.exists() else None


def _count_lines(path: Path) -> int:
    """Lines of a (possibly zstd) NDJSON file; a missing file has none (plan stays empty)."""
    if not path.exists():
        log.warning("dump %s does not exist: no units planned for it", path)
        return 0
    with open_text(path) as fh:
        return sum(1 for _ in fh)


def _lines(path: Path, start: int, stop: int) -> Iterator[tuple[int, dict[str, Any] | BadLine]]:
    """Parsed lines ``start <= i < stop`` (0-based) of an NDJSON file, with 1-based line numbers."""
    with open_text(path) as fh:
        for i, line in enumerate(fh):
            if i < start:
                continue
            if i >= stop:
                break
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                yield i + 1, BadLine(str(path), i + 1, f"invalid JSON: {exc}")
                continue
            if not isinstance(obj, dict):
                yield i + 1, BadLine(str(path), i + 1, f"expected an object, got {type(obj).__name__}")
                continue
            yield i + 1, (obj.get("data", obj) if obj.get("kind") == "t3" else obj)
