"""Fuzz: Reddit API answers (the OAuth listing, comment trees with ``replies`` and a ``more`` stub,
``/api/morechildren``), served by a loopback Reddit and read by the web-crawl builder.

A record is one child of an answer: a post in the listing, the post of a thread answer, a comment in its tree
(top level, a reply, the ``more`` stub) or a comment ``morechildren`` returns. Rows are keyed by the thread
(``origin.image_id``, the post id), which every such child belongs to. The images are served by the same
loopback server and cached under the example's out dir; nothing else is reached (:class:`crawl_fuzz.Offline`).
"""

from __future__ import annotations

import base64
import copy
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from crawl_fuzz import Offline, changes, file_damage, with_sample_images
from crawlers.crawl_server import FixtureServer, send, static
from fuzz_harness import Workspace, apply, check_outcome, count, run, share, workspace
from hypothesis import given
from hypothesis import strategies as st

from ieiw.crawlers.builder import WebCrawlBuilder
from ieiw.crawlers.cache import ResponseCache
from ieiw.crawlers.config import CrawlConfig, HttpConfig, RedditApiConfig, TakedownConfig
from ieiw.crawlers.http import FetchError
from ieiw.samples.crawl import BASE_TIME, small_threads
from ieiw.schemas.units import BuildContext

FAMILY = "reddit-api"
SUB = "PhotoshopRequest"
PAGE = 3  # posts per listing page: the sample's four make two pages
CLIENT = ("fuzz-client", "fuzz-secret")
ENV = {"IEIW_FUZZ_REDDIT_CLIENT_ID": CLIENT[0], "IEIW_FUZZ_REDDIT_CLIENT_SECRET": CLIENT[1]}
TOKEN = "fuzz-token"


def listing(children: list[Any], after: str | None = None) -> dict[str, Any]:
    return {"kind": "Listing", "data": {"after": after, "before": None, "children": children}}


class LoopbackReddit:
    """The answers of the current example, by route key; the server reads them per request, so an example
    changes what Reddit says by replacing ``bodies`` (the server runs once per process)."""

    def __init__(self) -> None:
        self.server = FixtureServer().start()
        self.sample = small_threads(lambda host, name: f"{self.server.base}/{host}/{name}")
        self.docs = self._documents()
        self.pristine = {key: json.dumps(doc).encode() for key, doc in self.docs.items()}
        self.bodies = dict(self.pristine)
        self._routes()
        self.images = Path(tempfile.mkdtemp(prefix="ieiw-fuzz-api-")) / "cache"
        cached = ResponseCache(self.images)  # what a first crawl fetched, shared by every example
        for url, (body, ctype) in sorted(self.sample.images.items()):
            cached.put(url, 200, ctype, body, fetched_at=BASE_TIME)

    @property
    def listing_url(self) -> str:
        return f"{self.server.base}/r/{SUB}/new"

    def _documents(self) -> dict[str, Any]:
        """Every answer, as Reddit shapes it: listing pages (``after``: the last post's name), thread answers
        (the first comment carries the next as a reply, the rest behind a ``more`` stub) and the stubs'
        ``morechildren`` answers."""
        posts, docs = self.sample.posts, {}
        for start in range(0, len(posts), PAGE):
            page = posts[start : start + PAGE]
            after = page[-1]["name"] if start + PAGE < len(posts) else None
            key = "new:" + (posts[start - 1]["name"] if start else "")
            docs[key] = listing([{"kind": "t3", "data": p} for p in page], after)
        for post in posts:
            comments = [dict(c, replies="") for c in self.sample.comments if c["link_id"] == post["name"]]
            tree: list[dict[str, Any]] = []
            if comments:
                head, rest = comments[0], comments[1:]
                replies = []
                if rest:
                    replies.append({"kind": "t1", "data": dict(rest[0], parent_id=f"t1_{head['id']}")})
                if rest[1:]:
                    replies.append({"kind": "more", "data": {"count": len(rest) - 1, "name": "t1__", "id": "_",
                                                             "parent_id": f"t1_{head['id']}",
                                                             "children": [c["id"] for c in rest[1:]]}})
                    docs[f"more:{post['name']}"] = {"json": {"errors": [], "data": {
                        "things": [{"kind": "t1", "data": c} for c in rest[1:]]}}}
                head["replies"] = listing(replies) if replies else ""
                tree.append({"kind": "t1", "data": head})
            docs[f"thread:{post['id']}"] = [listing([{"kind": "t3", "data": post}]), listing(tree)]
        return docs

    def _routes(self) -> None:
        routes = self.server.routes
        for url, (body, ctype) in self.sample.images.items():
            routes[urlsplit(url).path] = static(body, ctype)
        routes["/robots.txt"] = static(b"User-agent: *\nDisallow: /private/\n", "text/plain")
        basic = "Basic " + base64.b64encode(f"{CLIENT[0]}:{CLIENT[1]}".encode()).decode()

        def answer(key_of: Callable[[dict[str, list[str]]], str]):
            def route(h, q) -> None:
                body = self.bodies.get(key_of(q))
                if h.headers.get("Authorization") != f"bearer {TOKEN}":
                    send(h, 401, b'{"message": "Unauthorized", "error": 401}', "application/json")
                elif body is None:
                    send(h, 404, b'{"message": "Not Found", "error": 404}', "application/json")
                else:
                    send(h, 200, body, "application/json; charset=UTF-8",
                         {"X-Ratelimit-Remaining": "99", "X-Ratelimit-Reset": "300"})
            return route

        def token(h, q) -> None:
            if h.headers.get("Authorization") != basic:
                send(h, 401, b'{"error": "invalid_client"}', "application/json")
            else:
                send(h, 200, json.dumps({"access_token": TOKEN, "token_type": "bearer", "expires_in": 86400}).encode(),
                     "application/json")

        routes["/api/v1/access_token"] = token
        routes[f"/r/{SUB}/new"] = answer(lambda q: "new:" + q.get("after", [""])[0])
        routes["/api/morechildren"] = answer(lambda q: "more:" + q.get("link_id", [""])[0])
        for post in self.sample.posts:
            routes[f"/r/{SUB}/comments/{post['id']}"] = answer(lambda q, pid=post["id"]: f"thread:{pid}")


@cache
def reddit() -> LoopbackReddit:
    return LoopbackReddit()


@pytest.fixture(scope="module", autouse=True)
def credentials() -> Iterator[None]:
    """The app credentials, under names only this module uses."""
    os.environ.update(ENV)
    yield
    for name in ENV:
        os.environ.pop(name, None)


def builder(space: Workspace) -> WebCrawlBuilder:
    api = reddit()
    config = CrawlConfig(
        dumps=(),
        reddit_api=RedditApiConfig(subreddit=SUB, api_base=api.server.base,
                                   token_url=f"{api.server.base}/api/v1/access_token", page_size=PAGE, max_posts=50,
                                   client_id_env="IEIW_FUZZ_REDDIT_CLIENT_ID",
                                   client_secret_env="IEIW_FUZZ_REDDIT_CLIENT_SECRET"),
        http=HttpConfig(cache_dir=str(space.out / "cache"), replay_only=False,
                        allow_private_hosts=(api.server.hostport,), min_interval_s=0.0, connect_timeout_s=1.0,
                        read_timeout_s=1.0, retries=0, contact="fuzz@example.org"),
        takedown=TakedownConfig(),
        posts_per_unit=2,
    )
    return with_sample_images(
        WebCrawlBuilder(config, BuildContext(root=space.root, out_dir=space.out, unit_size=2)), api.images)


def thread_key(row: dict[str, Any]) -> str:
    return str(row["origin"]["image_id"])


def run_api(space: Workspace, bodies: dict[str, bytes]):
    """Build every unit with Reddit answering ``bodies``. A listing page that is no listing at all stops the
    plan (FetchError naming its URL): it is the file every post id comes from."""
    api = reddit()
    api.bodies = bodies
    try:
        with Offline():
            return run(lambda: builder(space), space, key=thread_key,
                       file_errors=(ValueError, FileNotFoundError, FetchError))
    finally:
        api.bodies = dict(api.pristine)


@cache
def baseline():
    with workspace() as space:
        outcome = run_api(space, dict(reddit().pristine))
    assert outcome.rows and not outcome.failures and outcome.plan_error is None, outcome.failures
    assert len(outcome.rows) == len(reddit().sample.posts)
    return outcome


def children(doc_key: str, doc: Any) -> Iterator[tuple[tuple[Any, ...], str]]:
    """``(path to a child, its post id)`` for every child of an answer: listing posts, the thread's post, its
    comments (replies and the more stub included), the comments ``morechildren`` returns."""
    if doc_key.startswith("new:"):
        for i, child in enumerate(doc["data"]["children"]):
            yield ("data", "children", i), child["data"]["id"]
    elif doc_key.startswith("thread:"):
        pid = doc_key.removeprefix("thread:")
        yield (0, "data", "children", 0), pid

        def walk(node: Any, path: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], str]]:
            if not isinstance(node, dict):
                return
            for i, child in enumerate(node["data"]["children"]):
                yield (*path, "data", "children", i), pid
                yield from walk(child["data"].get("replies"), (*path, "data", "children", i, "data", "replies"))

        yield from walk(doc[1], (1,))
    else:
        pid = doc_key.removeprefix("more:t3_")
        for i, _ in enumerate(doc["json"]["data"]["things"]):
            yield ("json", "data", "things", i), pid


@cache
def records() -> list[tuple[str, tuple[Any, ...], str]]:
    docs = reddit().docs
    return [(key, path, pid) for key in sorted(docs) for path, pid in children(key, docs[key])]


def at(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def replaced(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    doc = copy.deepcopy(doc)
    at(doc, path[:-1])[path[-1]] = value
    return doc


@share(0.8)
@given(st.data())
def test_a_damaged_child_fails_alone(data):
    baseline_outcome = baseline()
    api = reddit()
    key, path, pid = data.draw(st.sampled_from(records()))
    with workspace() as space:
        mutation = data.draw(changes(at(api.docs[key], path), space.names))
        doc = replaced(api.docs[key], path, apply(at(api.docs[key], path), mutation))
        form = data.draw(st.sampled_from(["json", "json", "raw", "latin-1"]))
        if form == "json":
            body = json.dumps(doc).encode()
        else:  # not UTF-8: a lone surrogate as its invalid bytes, or Latin-1
            text = json.dumps(doc, ensure_ascii=False)
            body = text.encode("utf-8", "surrogatepass") if form == "raw" else text.encode("latin-1", "replace")
        outcome = run_api(space, {**api.pristine, key: body})
        count(FAMILY)
        check_outcome(outcome, baseline_outcome, space, {pid}, [api.listing_url],
                      f"{key} {'/'.join(map(str, path))}: {mutation} ({form})")


@share(0.2)
@given(st.data())
def test_a_damaged_answer_is_named(data):
    """An answer's bytes damaged (cut short, bytes that are not UTF-8, deep nesting): a listing page may stop the
    plan, naming the listing; a thread's answer fails that thread only."""
    baseline_outcome = baseline()
    api = reddit()
    key = data.draw(st.sampled_from(sorted(api.pristine)))
    with workspace() as space:
        what, damaged = data.draw(file_damage(api.pristine[key]))
        outcome = run_api(space, {**api.pristine, key: damaged})
        count(FAMILY)
        touched = None if key.startswith("new:") else {key.removeprefix("thread:").removeprefix("more:t3_")}
        check_outcome(outcome, baseline_outcome, space, touched, [api.listing_url], f"{key} {what}")
