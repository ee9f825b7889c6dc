"""HTML thread pages through a selector config, served by the fixture server (robots.txt respected)."""

from __future__ import annotations

from urllib.parse import urlsplit

from crawl_server import static

from ieiw.crawlers.builder import WebCrawlBuilder
from ieiw.crawlers.config import CrawlConfig, HtmlSelectors, HtmlSiteConfig, TakedownConfig
from ieiw.samples.crawl import sample_threads
from ieiw.schemas.rows import rows_to_table

SELECTORS = HtmlSelectors(
    title="h1.thread-title",
    body="div.thread-body",
    author="span.op",
    created="time.posted",
    original_image="div.thread-body img.original",
    edit="div.reply",
    edit_image="img.edit",
    edit_author="span.user",
    edit_score="span.points",
    over_18="span.nsfw-badge",
)


def page(title: str, original: str, edits: list[tuple[str, str, int, str]], nsfw: bool = False) -> bytes:
    replies = "".join(
        f'<div class="reply" id="{rid}"><span class="user">{user}</span> <span class="points">{score} points</span>'
        f'<p>here</p><img class="edit" src="{src}"></div>'
        for rid, user, score, src in edits
    )
    badge = '<span class="nsfw-badge">NSFW</span>' if nsfw else ""
    return (
        f'<html><body><h1 class="thread-title">{title}</h1>{badge}<span class="op">poster1</span>'
        f'<time class="posted" datetime="2024-05-01T12:00:00Z">May 1</time>'
        f'<div class="thread-body"><p>Hi all! Please remove the ball. Will tip $5.</p>'
        f'<img class="original" src="{original}"></div>{replies}</body></html>'
    ).encode()


def test_html_threads_become_web_pairs(server, http_config, tmp_path):
    b = sample_threads(lambda host, name: f"{server.base}/{host}/{name}")
    for url, (body, ctype) in b.images.items():
        server.routes[urlsplit(url).path] = static(body, ctype)
    img = lambda host, name: urlsplit(f"{server.base}/{host}/{name}").path  # noqa: E731  (relative links)
    server.routes["/forum/t/1"] = static(
        page(
            "[Paid] Remove the red ball",
            img("i.redd.it", "sp0001.jpg"),
            [("r1", "ann", 3, img("i.imgur.com", "c0001b.jpg")), ("r2", "bo", 12, img("i.redd.it", "c0001a.jpg"))],
        ),
        "text/html; charset=utf-8",
    )
    server.routes["/forum/t/2"] = static(page("Blur it", img("i.redd.it", "sp0003.jpg"), [], nsfw=True), "text/html")
    server.routes["/forum/t/3"] = static(b"<html><body><p>no title here</p></body></html>", "text/html")
    server.routes["/private/t/4"] = static(page("Hidden", img("i.redd.it", "sp0001.jpg"), []), "text/html")
    pages = tuple(f"{server.base}{p}" for p in ("/forum/t/1", "/forum/t/2", "/forum/t/3", "/private/t/4", "/forum/t/5"))
    cfg = CrawlConfig(
        dumps=(),
        http=http_config,
        takedown=TakedownConfig(),
        html_sites=(HtmlSiteConfig(name="psforum", pages=pages, selectors=SELECTORS, license="CC-BY-4.0"),),
    )
    builder = WebCrawlBuilder(cfg, tmp_path)
    units = builder.plan()
    assert [u.key for u in units] == ["crawl-html0-00000"]
    result = builder.build_unit(units[0])

    rows_to_table(result.rows)
    thread_id = result.rows[0]["origin"]["image_id"]
    assert [(r["origin"]["record_id"], r["origin"]["authors"], r["origin"]["edit_url"]) for r in result.rows] == [
        (f"{thread_id}/r2", ["poster1", "bo"], f"{server.base}{img('i.redd.it', 'c0001a.jpg')}"),
        (f"{thread_id}/r1", ["poster1", "ann"], f"{server.base}{img('i.imgur.com', 'c0001b.jpg')}"),
    ]
    assert {r["origin"]["image_id"] for r in result.rows} == {thread_id}  # one original: one split
    row = result.rows[0]
    assert row["instruction"] == "Remove the red ball."
    assert row["origin"]["dataset"] == "psforum" and row["origin"]["license"] == "CC-BY-4.0"
    assert row["origin"]["url"] == pages[0] and row["origin"]["created_utc"] == 1714564800.0
    reasons = {f.record_id: f.reason for f in result.failures}
    assert reasons[pages[2]] == "bad_page"
    assert reasons[pages[3]] == "robots_disallowed"
    assert reasons[pages[4]] == "http_404"
    assert [f.reason for f in result.failures if f.reason == "over_18"] == ["over_18"]
    assert not server.requests_for("/private/t/4")  # disallowed by robots.txt: never fetched


def test_a_created_time_that_is_not_finite_is_a_bad_record(server, http_config, tmp_path):
    server.routes["/forum/t/9"] = static(
        page("Remove the ball", "/i.redd.it/x.jpg", []).replace(b'datetime="2024-05-01T12:00:00Z"', b'datetime="NaN"'),
        "text/html",
    )
    url = f"{server.base}/forum/t/9"
    cfg = CrawlConfig(
        dumps=(),
        http=http_config,
        takedown=TakedownConfig(),
        html_sites=(HtmlSiteConfig(name="psforum", pages=(url,), selectors=SELECTORS),),
    )
    builder = WebCrawlBuilder(cfg, tmp_path)
    result = builder.build_unit(builder.plan()[0])
    assert [(f.reason, f.record_id, f.file) for f in result.failures] == [("bad_record", url, url)]
    assert "not a finite number" in result.failures[0].message
