"""``WebCrawlBuilder``: the photoshop-request crawl as a candidate builder the build flow can run.

Units: row groups of each dump's index (``dump_index``: one pass keeps the subreddit's submissions and
their image-bearing comments in Parquet, in :meth:`prepare` or on first :meth:`plan`), chunks of post
ids from the OAuth API listing
(walked once in :meth:`plan`, through the cache), and chunks of HTML thread pages. ``build_unit``
turns each thread into rows with :class:`~ieiw.crawlers.pairs.PairMaker`; bad lines, refused URLs
and rejected edits come back as failures with stable reasons.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
from pathlib import Path
from typing import Any

from ieiw.crawlers.cache import ResponseCache
from ieiw.crawlers.config import CrawlConfig, DumpSourceConfig, resolve
from ieiw.crawlers.dump_index import (
    COMMENT_KEYS,
    IndexResult,
    fingerprint_digest,
    index_dump,
    index_fingerprint,
    load_index,
    read_comments,
    read_posts,
)
from ieiw.crawlers.dumps import post_id
from ieiw.crawlers.html_source import HtmlSource
from ieiw.crawlers.http import FetchError, PoliteSession
from ieiw.crawlers.pairs import ALIGN_BACKEND, PairMaker
from ieiw.crawlers.posts import BadRecord, Thread, thread_from_reddit
from ieiw.crawlers.reddit_api import RedditApi
from ieiw.schemas import storage
from ieiw.schemas.filehash import cache_dir
from ieiw.schemas.lazy import locked_cached_property
from ieiw.schemas.takedown import Takedown
from ieiw.schemas.units import BuildContext, CandidateBuilder, Failure, UnitResult, WorkUnit

log = logging.getLogger(__name__)
__all__ = ["COMMENT_KEYS", "WebCrawlBuilder"]
INDEX_DIR = "crawl-index"  # under the build's out_dir; without a BuildContext, under the user's cache folder


def private_index_root() -> Path:
    """The dump indexes of a builder made without a build context: ``<cache_dir>/crawl-index``
    (``$IEIW_CACHE_DIR``, else ``$XDG_CACHE_HOME/ieiw`` or ``~/.cache/ieiw``), never a shared, guessable
    folder under /tmp that another local user could create first and fill with a crafted index.

    The folder is created with mode 0700. An existing one must be a real folder (not a symlink) owned by
    this user; it is then narrowed to 0700. Anything else is refused with a ``PermissionError`` naming it.
    """
    folder = cache_dir() / INDEX_DIR
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode):
        raise PermissionError(f"crawl index folder {folder} is not a folder (a symlink?): refusing to use it")
    if hasattr(os, "getuid"):  # POSIX: the owner and mode can be checked
        if info.st_uid != os.getuid():
            raise PermissionError(
                f"crawl index folder {folder} is owned by uid {info.st_uid}, not by this user "
                f"(uid {os.getuid()}): refusing to use it"
            )
        if stat.S_IMODE(info.st_mode) != 0o700:
            os.chmod(folder, 0o700)
    return folder


class WebCrawlBuilder(CandidateBuilder):
    """Web ``task="web"`` pairs from photoshop-request threads (dumps, OAuth API, HTML pages)."""

    name = "crawl"

    def __init__(self, config: CrawlConfig, context: BuildContext | Path):
        self.config = config
        self.root = Path(context.root if isinstance(context, BuildContext) else context)
        # Where the dump indexes live: the build's out_dir, or (a builder made from a bare root, as in
        # tests and scripts) a per-root folder under the user's own cache folder (private_index_root). An
        # index is derived from the dump alone, so with an out_dir on object storage it is kept in a local
        # cache folder on each machine.
        if isinstance(context, BuildContext):
            self.index_dir: Path | None = storage.local_folder(storage.location(context.out_dir) / INDEX_DIR)
        else:
            self.index_dir = None
        t = config.takedown
        self.takedown = Takedown.load([resolve(self.root, f) for f in t.files], t.entries)
        self._init_state()

    def _init_state(self) -> None:
        self._lock = threading.Lock()  # the flow may run units of one builder in threads
        self._indexes: dict[int, IndexResult] = {}

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (process/Dask task runners): sessions, locks and indexes are rebuilt on arrival."""
        return {"config": self.config, "root": self.root, "takedown": self.takedown, "index_dir": self.index_dir}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_state()

    # -- shared plumbing ------------------------------------------------------------------------
    @locked_cached_property
    def session(self) -> PoliteSession:
        http = self.config.http
        return PoliteSession(http, ResponseCache(resolve(self.root, http.cache_dir), readonly=http.replay_only))

    def _maker(self, backend: str) -> PairMaker:
        return PairMaker(self.config, self.session, self.takedown, backend)

    @locked_cached_property
    def reddit(self) -> RedditApi:
        """One client per builder, so the OAuth token is requested once and reused."""
        assert self.config.reddit_api is not None
        return RedditApi(self.session, self.config.reddit_api, os.environ)

    # -- CandidateBuilder -----------------------------------------------------------------------
    def prepare(self) -> None:
        """Index every dump once (one streaming pass; skipped when the index matches its inputs)."""
        for i in range(len(self.config.dumps)):
            self._index(i)

    def plan(self) -> list[WorkUnit]:
        units: list[WorkUnit] = []
        n = self.config.posts_per_unit
        for i in range(len(self.config.dumps)):
            index = self._index(i)
            if index is None:
                continue
            rows = index.post_rows
            for k, start in enumerate(range(0, rows, n)):
                units.append(
                    WorkUnit(
                        key=f"crawl-dump{i}-{k:05d}",
                        payload={"source": "dump", "dump": i, "start": start, "stop": min(start + n, rows)},
                    )
                )
        if self.config.reddit_api is not None:
            ids, problems = self.reddit.listing()
            chunks = [ids[start : start + n] for start in range(0, len(ids), n)] or ([[]] if problems else [])
            for k, chunk in enumerate(chunks):
                payload: dict[str, Any] = {"source": "reddit_api", "post_ids": chunk}
                if k == 0 and problems:  # listing children that are no usable post: the first unit reports them
                    payload["listing_problems"] = [list(problem) for problem in problems]
                units.append(WorkUnit(key=f"crawl-api-{k:05d}", payload=payload))
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
            "version": 3,  # 3: edit_kind, collages salvaged, geometric and resolution edits kept; 2: origin v2
            "sources": sources,
            "pairs": c.pairs.model_dump(mode="json"),
            "validation": c.validation.row_params(),  # the kinds policy is selection's
            "image_format": c.image_format,
            "posts_per_unit": c.posts_per_unit,
            "takedown": self.takedown.digest(),
        }

    def kind_policy(self) -> dict[str, str]:
        """``crawl.validation.kinds``: keep or reject each edit kind, applied by selection."""
        return self.config.validation.kinds.model_dump(mode="json")

    def backends(self) -> dict[str, str]:
        kinds = (["reddit-dump"] if self.config.dumps else []) + (["reddit-api"] if self.config.reddit_api else [])
        kinds += [f"html:{s.name}" for s in self.config.html_sites]
        return {
            "sources": ",".join(kinds) or "none",
            "align": ALIGN_BACKEND,
            "http": "replay-only" if self.config.http.replay_only else "network+cache",
        }

    # -- sources --------------------------------------------------------------------------------
    def _index_folder(self, i: int, dump: DumpSourceConfig) -> Path:
        if self.index_dir is not None:
            return self.index_dir / f"dump{i}"
        subs, coms = resolve(self.root, dump.submissions), resolve(self.root, dump.comments)
        key = fingerprint_digest({"root": str(self.root.resolve()), "s": str(subs), "c": str(coms)})[:16]
        return private_index_root() / f"dump{i}-{key}"

    def _index(self, i: int) -> IndexResult | None:
        """The index of dump ``i`` (built when missing or stale); None when its submissions are missing."""
        dump = self.config.dumps[i]
        subs, coms = resolve(self.root, dump.submissions), resolve(self.root, dump.comments)
        if not subs.exists():
            log.warning("dump %s does not exist: no units planned for it", subs)
            return None
        if not coms.exists():
            log.warning("comment dump %s does not exist: posts of dump %d have no comments", coms, i)
        fp = index_fingerprint(subs, coms, dump.subreddit, self.config.posts_per_unit)
        with self._lock:
            cached = self._indexes.get(i)
            if cached is not None and cached.fingerprint == fp:
                return cached
        folder = self._index_folder(i, dump)
        index = load_index(folder, fp) or index_dump(subs, coms, dump.subreddit, folder, self.config.posts_per_unit)
        with self._lock:
            self._indexes[i] = index
        return index

    def _build_dump(self, payload: dict[str, Any], result: UnitResult) -> None:
        dump = self.config.dumps[payload["dump"]]
        path = resolve(self.root, dump.submissions)
        index = self._index(payload["dump"])
        if index is None:
            return
        if payload["start"] == 0:  # dump-wide findings are reported once, by the first unit
            comments_file = str(resolve(self.root, dump.comments))
            for line, message in index.comment_bad_lines:
                result.failures.append(Failure("bad_line", f"line {line}", comments_file, message))
            for _line, record_id, message in index.comment_bad_records:
                result.failures.append(Failure("bad_record", record_id, comments_file, message))
            if index.counts.get("other_subreddit"):
                result.counters["other_subreddit"] += index.counts["other_subreddit"]
        posts = read_posts(index, payload["start"], payload["stop"])
        comments = read_comments(index, payload["start"], payload["stop"])
        maker = self._maker("reddit-dump")
        columns = [posts.column(c).to_pylist() for c in ("line", "kind", "json")]
        for offset, (line_no, kind, text) in enumerate(zip(*columns)):
            if kind == "bad_line":
                result.records += 1
                result.failures.append(Failure("bad_line", f"line {line_no}", str(path), text))
                continue
            try:
                obj = json.loads(text)
            except RecursionError:  # parsed when indexed, deeper in the stack now: as deep as the parser goes
                result.records += 1
                result.failures.append(Failure("bad_line", f"line {line_no}", str(path), "invalid JSON: nested too deeply"))
                continue
            pid = post_id(obj)
            if not pid:
                result.records += 1
                result.failures.append(Failure("bad_record", f"line {line_no}", str(path), "submission without id"))
                continue
            try:
                thread = thread_from_reddit(
                    obj, comments.get(payload["start"] + offset, []), dump.dataset, str(path)
                )
            except BadRecord as exc:  # a field of the wrong type, a number that is not finite
                result.records += 1
                result.failures.append(Failure("bad_record", pid, str(path), f"line {line_no}: {exc}"))
                continue
            except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError) as exc:
                result.records += 1
                result.failures.append(Failure("bad_record", pid, str(path), f"line {line_no}: {exc!r}"))
                continue
            maker.process(thread, result)

    def _build_api(self, payload: dict[str, Any], result: UnitResult) -> None:
        api = self.reddit
        maker = self._maker("reddit-api")
        for record_id, url, message in payload.get("listing_problems", ()):
            result.records += 1
            result.failures.append(Failure("bad_record", record_id, url, message))
        for pid in payload["post_ids"]:
            try:
                thread = api.thread(pid)
            except FetchError as exc:
                result.records += 1
                result.failures.append(Failure(exc.reason, pid, exc.url, exc.message))
                continue
            except BadRecord as exc:  # the answer has no post, or a field of the wrong type
                result.records += 1
                result.failures.append(Failure("bad_record", pid, exc.source or api.thread_url(pid), str(exc)))
                continue
            except (KeyError, IndexError, TypeError, ValueError, AttributeError, ArithmeticError) as exc:
                result.records += 1
                message = f"unexpected API answer: {exc!r}"
                result.failures.append(Failure("bad_record", pid, api.thread_url(pid), message))
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
            except BadRecord as exc:  # a value the page gives that cannot be used (a time that is not finite)
                result.records += 1
                result.failures.append(Failure("bad_record", url, url, str(exc)))
                continue
            except ValueError as exc:
                result.records += 1
                result.failures.append(Failure("bad_page", url, url, str(exc)))
                continue
            maker.process(thread, result)


def _size(path: Path) -> int | None:
    return path.stat().st_size if path.exists() else None
