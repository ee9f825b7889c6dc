"""Fuzz: HTML thread pages of an edit site (a per-site selector config), served by a loopback forum and read by
the web-crawl builder.

A record is one page: its title, body, poster, time, original image and edits (each with an id, a user, a
score and an image). A page's description is mutated like any JSON record, then rendered as the site would
(values escaped) or as a hostile page would (values spliced into the markup raw: quotes that end an attribute,
tags inside a title), in UTF-8 or in bytes that are not. Rows are keyed by the page's thread
(``origin.image_id``, a hash of the site and the page URL). Images come from the example's copy of a cache a
first crawl filled; any other URL a page names goes to the loopback server (a 404) or nowhere
(:class:`crawl_fuzz.Offline`).
"""

from __future__ import annotations

import html
import json
import tempfile
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from crawl_fuzz import HTML_OPENERS, Offline, changes, file_damage, with_sample_images
from crawlers.crawl_server import FixtureServer, send, static
from fuzz_harness import Workspace, apply, check_outcome, count, run, share, workspace
from hypothesis import given
from hypothesis import strategies as st

from ieiw.crawlers.builder import WebCrawlBuilder
from ieiw.crawlers.cache import ResponseCache
from ieiw.crawlers.config import CrawlConfig, HtmlSelectors, HtmlSiteConfig, HttpConfig, TakedownConfig
from ieiw.crawlers.http import FetchError
from ieiw.crawlers.posts import comment_image_urls, post_image_urls
from ieiw.samples.crawl import BASE_TIME, small_threads
from ieiw.schemas.rows import stable_hash

FAMILY = "html"
SITE = "psforum"
SELECTORS = HtmlSelectors(
    title="h1.thread-title", body="div.thread-body", author="span.op", created="time.posted",
    original_image="div.thread-body img.original", edit="div.reply", edit_image="img.edit",
    edit_author="span.user", edit_score="span.points", over_18="span.nsfw-badge",
)


def render(page: Any, raw: bool = False) -> str:
    """A page as the forum writes it (``raw``: values spliced into the markup unescaped, as a hostile page
    would have them). Whatever a mutation left (a value of another type, a missing key) is written as text."""
    put = (lambda v: "" if v is None else str(v)) if raw else (lambda v: html.escape("" if v is None else str(v)))
    page = page if isinstance(page, dict) else {"title": page}
    edits = page.get("edits")
    replies = "".join(
        f'<div class="reply" id="{put(e.get("id"))}"><span class="user">{put(e.get("user"))}</span> '
        f'<span class="points">{put(e.get("score"))}</span><p>{put(e.get("text"))}</p>'
        f'<img class="edit" src="{put(e.get("src"))}"></div>'
        if isinstance(e, dict) else f"<div class=\"reply\">{put(e)}</div>"
        for e in (edits if isinstance(edits, list) else [edits])
    )
    badge = '<span class="nsfw-badge">NSFW</span>' if page.get("nsfw") else ""
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{put(page.get("title"))}</title></head><body>'
        f'<h1 class="thread-title">{put(page.get("title"))}</h1>{badge}<span class="op">{put(page.get("author"))}</span>'
        f'<time class="posted" datetime="{put(page.get("created"))}">{put(page.get("created"))}</time>'
        f'<div class="thread-body"><p>{put(page.get("body"))}</p>'
        f'<img class="original" src="{put(page.get("original"))}"></div>{replies}</body></html>'
    )


class LoopbackForum:
    """A forum on 127.0.0.1 whose pages are the current example's (the server runs once per process)."""

    def __init__(self) -> None:
        self.server = FixtureServer().start()
        sample = small_threads(lambda host, name: f"{self.server.base}/{host}/{name}")
        self.urls: list[str] = []
        self.pages: dict[str, dict[str, Any]] = {}
        for i, post in enumerate(sample.posts):
            comments = [c for c in sample.comments if c["link_id"] == post["name"]]
            url = f"{self.server.base}/forum/t/{i + 1}"
            self.urls.append(url)
            self.pages[url] = self._page(post, comments, relative=i % 2 == 0)
        self.pristine = {url: render(page).encode() for url, page in self.pages.items()}
        self.bodies = dict(self.pristine)
        routes = self.server.routes
        routes["/robots.txt"] = static(b"User-agent: *\nDisallow: /private/\n", "text/plain")
        for url, (body, ctype) in sample.images.items():
            routes[urlsplit(url).path] = static(body, ctype)
        for url in self.urls:
            routes[urlsplit(url).path] = self._route(url)
        self.images = Path(tempfile.mkdtemp(prefix="ieiw-fuzz-html-")) / "cache"
        cached = ResponseCache(self.images)  # what a first crawl fetched, shared by every example
        for url, (body, ctype) in sorted(sample.images.items()):
            cached.put(url, 200, ctype, body, fetched_at=BASE_TIME)

    def _page(self, post: dict[str, Any], comments: list[dict[str, Any]], relative: bool) -> dict[str, Any]:
        """A sample thread as a forum page: its original, and each image comment by someone else as an edit."""
        def link(url: str) -> str:
            parts = urlsplit(url)
            return parts.path + (f"?{parts.query}" if parts.query else "") if relative else url

        edits = [{"id": c["id"], "user": c["author"], "score": f"{c['score']} points", "text": "done, see above",
                  "src": link(comment_image_urls(c)[0])}
                 for c in comments if comment_image_urls(c) and c["author"] != post["author"]]
        return {"title": post["title"], "body": post["selftext"] or "Thanks!", "author": post["author"],
                "created": "2024-05-01T12:00:00Z", "original": link(post_image_urls(post)[0]), "nsfw": False,
                "edits": edits}

    def _route(self, url: str):
        def route(h, q) -> None:
            body = self.bodies.get(url)
            if body is None:
                send(h, 404, b"not found", "text/plain")
            else:
                send(h, 200, body, "text/html; charset=utf-8")
        return route


@cache
def forum() -> LoopbackForum:
    return LoopbackForum()


def builder(space: Workspace) -> WebCrawlBuilder:
    site = forum()
    config = CrawlConfig(
        dumps=(),
        html_sites=(HtmlSiteConfig(name=SITE, pages=tuple(site.urls), selectors=SELECTORS, license="CC-BY-4.0"),),
        http=HttpConfig(cache_dir=str(space.out / "cache"), replay_only=False,
                        allow_private_hosts=(site.server.hostport,), min_interval_s=0.0, connect_timeout_s=1.0,
                        read_timeout_s=1.0, retries=0, contact="fuzz@example.org"),
        takedown=TakedownConfig(),
        posts_per_unit=2,
    )
    return with_sample_images(WebCrawlBuilder(config, space.root), site.images)


def thread_key(row: dict[str, Any]) -> str:
    return str(row["origin"]["image_id"])


def page_key(url: str) -> str:
    """The thread id of a page (what its rows carry as ``origin.image_id``)."""
    return stable_hash(SITE, url, length=12)


def run_forum(space: Workspace, bodies: dict[str, bytes]):
    site = forum()
    site.bodies = bodies
    try:
        with Offline():
            return run(lambda: builder(space), space, key=thread_key,
                       file_errors=(ValueError, FileNotFoundError, FetchError))
    finally:
        site.bodies = dict(site.pristine)


@cache
def baseline():
    with workspace() as space:
        outcome = run_forum(space, dict(forum().pristine))
    assert outcome.rows and not outcome.failures and outcome.plan_error is None, outcome.failures
    assert set(outcome.rows) == {page_key(url) for url in forum().urls}
    return outcome


@share(0.8)
@given(st.data())
def test_a_damaged_page_fails_alone(data):
    baseline_outcome = baseline()
    site = forum()
    url = data.draw(st.sampled_from(site.urls))
    with workspace() as space:
        mutation = data.draw(changes(site.pages[url], space.names))
        page = apply(site.pages[url], mutation)
        raw = data.draw(st.booleans())
        form = data.draw(st.sampled_from(["utf-8", "utf-8", "raw", "latin-1"]))
        text = render(page, raw)
        if form == "utf-8":
            body = text.encode("utf-8", "replace")  # a lone surrogate cannot be written: "?"
        elif form == "raw":  # a lone surrogate as its (invalid) bytes
            body = text.encode("utf-8", "surrogatepass")
        else:
            body = text.encode("latin-1", "replace")
        outcome = run_forum(space, {**site.pristine, url: body})
        count(FAMILY)
        check_outcome(outcome, baseline_outcome, space, {page_key(url)}, [url],
                      f"{url}: {mutation} ({'raw' if raw else 'escaped'}, {form})")


@share(0.2)
@given(st.data())
def test_a_damaged_page_file_is_named(data):
    """A page's bytes damaged (truncated markup, bytes that are not UTF-8, NULs, tags nested deep): that page
    only."""
    baseline_outcome = baseline()
    site = forum()
    url = data.draw(st.sampled_from(site.urls))
    with workspace() as space:
        what, damaged = data.draw(file_damage(site.pristine[url], HTML_OPENERS))
        outcome = run_forum(space, {**site.pristine, url: damaged})
        count(FAMILY)
        check_outcome(outcome, baseline_outcome, space, {page_key(url)}, [url], f"{url} {what}")


def test_the_pages_are_the_sample_threads():
    """Each page shows its thread's original and the edits by others (the fixture is what it claims)."""
    site = forum()
    assert [len(site.pages[url]["edits"]) for url in site.urls] == [2, 1, 1, 1]
    assert json.dumps(site.pages[site.urls[1]]).count("smgal2") == 1  # the gallery's first item
