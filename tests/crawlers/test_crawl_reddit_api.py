"""End to end against a loopback Reddit: OAuth token, listing with ``after``, comment trees with a
``more`` stub, a gallery with ``&amp;``-escaped ``media_metadata`` URLs, images -> ``web`` rows;
then a rerun from the cache that makes zero requests."""

from __future__ import annotations

import json

import pytest
from reddit_fixture import CLIENT, SUB, install_reddit

from ieiw.crawlers.builder import WebCrawlBuilder
from ieiw.crawlers.config import CrawlConfig, RedditApiConfig
from ieiw.crawlers.http import FetchError
from ieiw.crawlers.posts import BadRecord
from ieiw.crawlers.reddit_api import RedditApi
from ieiw.schemas.rows import rows_to_table

ENV = {"REDDIT_CLIENT_ID": CLIENT[0], "REDDIT_CLIENT_SECRET": CLIENT[1]}


def api_config(server) -> RedditApiConfig:
    return RedditApiConfig(
        subreddit=SUB, api_base=server.base, token_url=f"{server.base}/api/v1/access_token", page_size=7, max_posts=50
    )


def crawl_config(server, http_config, tmp_path) -> CrawlConfig:
    return CrawlConfig(
        dumps=(), reddit_api=api_config(server), http=http_config, takedown={"files": (), "entries": ("t1_c0010b",)}
    )


def build_all(builder: WebCrawlBuilder):
    rows, failures = [], []
    for unit in builder.plan():
        result = builder.build_unit(unit)
        rows += result.rows
        failures += result.failures
    return rows, failures


def test_end_to_end_web_pairs_then_cached_rerun(server, http_config, tmp_path, monkeypatch, connects):
    install_reddit(server)
    monkeypatch.setenv("REDDIT_CLIENT_ID", CLIENT[0])
    monkeypatch.setenv("REDDIT_CLIENT_SECRET", CLIENT[1])
    cfg = crawl_config(server, http_config, tmp_path)
    rows, failures = build_all(WebCrawlBuilder(cfg, tmp_path))

    table = rows_to_table(rows)  # the row contract holds
    accepted = [r for r in rows if not r.get("drop_reason")]
    assert table.num_rows == len(rows) == 13 and len(accepted) == 10
    assert {r["task"] for r in rows} == {"web"}
    by_key = {r["origin"]["record_id"]: r for r in rows}
    # the more stub was expanded: c0001b only exists behind it
    assert "sp0001/c0001b" in by_key
    # the gallery's original is its first gallery_data item (galmid2 -> gal2), URL unescaped
    gallery = json.loads(by_key["sp0002/c0002a"]["builder"]["params"])
    assert gallery["original_url"].endswith("/preview.redd.it/gal2.jpg?width=400&format=pjpg&auto=webp&s=bb22")
    assert "&amp;" not in gallery["edit_url"]
    assert by_key["sp0002/c0002a"]["origin"]["edit_url"] == gallery["edit_url"]
    row = by_key["sp0001/c0001a"]
    assert row["origin"]["url"] == "https://www.reddit.com/r/PhotoshopRequest/comments/sp0001/sample/"
    assert row["origin"]["authors"] == ["requester_sp0001", "editor_ann"]
    assert row["origin"]["image_id"] == "sp0001"
    assert row["origin"]["edit_url"] == f"{server.base}/i.redd.it/c0001a.jpg"
    assert row["origin"]["license"] == "unknown" and row["origin"]["dataset"] == "reddit"
    assert row["builder"]["name"] == "crawl" and row["builder"]["embedded"] is False
    assert row["instruction"] == "Remove the red ball from the grass."
    assert 0.9 < row["scores"]["edit_consistency"] <= 1.0
    reasons = sorted([f.reason for f in failures] + [r["drop_reason"] for r in rows if r.get("drop_reason")])
    assert reasons == sorted(
        ["non_derivative", "no_op", "changes_everything", "over_18", "video", "removed", "not_image", "takedown"]
    )
    # the token was requested once, with HTTP basic auth; every API call carried the bearer token
    assert len(server.requests_for("/api/v1/access_token")) == 1
    api_calls = [e for e in server.log if e.path.startswith(("/r/", "/api/morechildren"))]
    assert all(e.headers.get("Authorization") == "bearer fixture-token" for e in api_calls)
    # listing pagination: the second page asked for after=<last name of the first page>
    pages = server.requests_for(f"/r/{SUB}/new")
    assert [p.query.get("after") for p in pages] == [None, ["t3_sp0007"]]
    # X-Ratelimit-Remaining 0 / Reset 1 on the first page: the next request waited for the reset
    first = server.log.index(pages[0])
    assert server.log[first + 1].t - pages[0].t >= 0.9
    assert all("tests@example.org" in e.headers["User-Agent"] for e in server.log)

    # rerun with the same cache: identical rows and not a single request
    n_requests = len(server.log)
    connects.clear()
    rows2, failures2 = build_all(WebCrawlBuilder(cfg, tmp_path))
    assert len(server.log) == n_requests and connects == []
    assert [r["id"] for r in rows2] == [r["id"] for r in rows]
    assert [r["target_image"]["bytes"] for r in rows2] == [r["target_image"]["bytes"] for r in rows]
    assert sorted([f.reason for f in failures2] + [r["drop_reason"] for r in rows2 if r.get("drop_reason")]) == reasons


def test_missing_credentials_is_a_named_failure(server, http_config, tmp_path):
    install_reddit(server)
    api = RedditApi(PoliteSessionFor(http_config), api_config(server), environ={})
    with pytest.raises(FetchError) as info:
        api.post_ids()
    assert info.value.reason == "no_credentials"
    assert "REDDIT_CLIENT_ID" in info.value.message
    assert server.log == []


def test_wrong_credentials_are_refused(server, http_config):
    install_reddit(server)
    api = RedditApi(PoliteSessionFor(http_config), api_config(server), environ={**ENV, "REDDIT_CLIENT_SECRET": "nope"})
    with pytest.raises(FetchError) as info:
        api.post_ids()
    assert info.value.reason == "http_401"


def PoliteSessionFor(cfg):
    from pathlib import Path

    from ieiw.crawlers.cache import ResponseCache
    from ieiw.crawlers.http import PoliteSession

    return PoliteSession(cfg, ResponseCache(Path(cfg.cache_dir)))


def test_an_answer_without_its_post_is_one_bad_record(server, http_config, tmp_path, monkeypatch):
    """An API answer whose post listing is empty fails that post (naming its URL), not the unit."""
    from crawl_server import static
    from reddit_fixture import listing

    install_reddit(server)
    broken = "sp0005"  # the over_18 post: no rows either way
    server.routes[f"/r/{SUB}/comments/{broken}"] = static(
        json.dumps([listing([]), listing([])]).encode(), "application/json"
    )
    monkeypatch.setenv("REDDIT_CLIENT_ID", CLIENT[0])
    monkeypatch.setenv("REDDIT_CLIENT_SECRET", CLIENT[1])
    rows, failures = build_all(WebCrawlBuilder(crawl_config(server, http_config, tmp_path), tmp_path))
    assert len(rows) == 13  # every other post built as before
    bad = [f for f in failures if f.reason == "bad_record"]
    assert [(f.record_id, f.file) for f in bad] == [(broken, f"{server.base}/r/{SUB}/comments/{broken}")]
    assert "no post" in bad[0].message
    assert sorted(f.reason for f in failures if f.reason != "bad_record") == sorted(
        ["video", "removed", "not_image", "takedown"]
    )


def _api(server, http_config) -> RedditApi:
    return RedditApi(PoliteSessionFor(http_config), api_config(server), environ=ENV)


def test_a_listing_child_that_is_no_post_is_its_own_bad_record(server, http_config, tmp_path, monkeypatch):
    """A listing child that is not an object stopped the whole plan (AttributeError); one whose id is no base36
    id became part of an API path (``comments/../../api/...``). Each is now that child's bad_record, reported by
    the first unit; the other posts are listed and built (found by tests/fuzz/test_fuzz_reddit_api.py)."""
    from crawl_server import static
    from reddit_fixture import listing

    sample = install_reddit(server)
    good = [{"kind": "t3", "data": p} for p in sample["posts"] if p["id"] in ("sp0005", "sp0006")]
    crafted = {"kind": "t3", "data": dict(sample["posts"][0], id="../../api/v1/me")}
    answer = listing([None, good[0], crafted, {"kind": "t1", "data": {"id": "c1"}}, good[1]])
    server.routes[f"/r/{SUB}/new"] = static(json.dumps(answer).encode(), "application/json")
    monkeypatch.setenv("REDDIT_CLIENT_ID", CLIENT[0])
    monkeypatch.setenv("REDDIT_CLIENT_SECRET", CLIENT[1])
    builder = WebCrawlBuilder(crawl_config(server, http_config, tmp_path), tmp_path)
    units = builder.plan()
    assert [u.payload["post_ids"] for u in units] == [["sp0005", "sp0006"]]
    _rows, failures = build_all(builder)
    page = f"{server.base}/r/{SUB}/new?limit=7&raw_json=1"
    bad = [(f.reason, f.record_id, f.file) for f in failures if f.reason == "bad_record"]
    assert bad == [("bad_record", "page 0 child 0", page), ("bad_record", "../../api/v1/me", page),
                   ("bad_record", "c1", page)]
    assert sorted(f.reason for f in failures if f.reason != "bad_record") == ["over_18", "video"]
    assert not [e for e in server.log if ".." in e.path or e.path == "/api/v1/me"]


def test_a_byte_that_is_not_utf8_spoils_its_string_not_the_listing(server, http_config):
    """One title with a byte that is not UTF-8 made the whole listing page "not JSON" (bad_json, the plan
    stopped): it is read with U+FFFD in that title now."""
    from crawl_server import static
    from reddit_fixture import listing

    sample = install_reddit(server)
    answer = json.dumps(listing([{"kind": "t3", "data": dict(p, title="__T__")} for p in sample["posts"][:3]]))
    server.routes[f"/r/{SUB}/new"] = static(answer.encode().replace(b"__T__", b"Remove \xff the bin"),
                                            "application/json")
    assert _api(server, http_config).post_ids() == ["sp0001", "sp0002", "sp0003"]


def test_a_thread_answer_must_be_the_post_asked_for(server, http_config):
    """A thread answer whose post has no id made a thread with id "" (its failures named no record); one that
    is another post filed its rows under that post. Both are the asked post's bad_record now."""
    from crawl_server import static
    from reddit_fixture import listing

    sample = install_reddit(server)
    first, other = sample["posts"][0], sample["posts"][3]
    nameless = {k: v for k, v in first.items() if k not in ("id", "name")}
    for pid, post in (("sp0001", nameless), ("sp0002", other)):
        server.routes[f"/r/{SUB}/comments/{pid}"] = static(
            json.dumps([listing([{"kind": "t3", "data": post}]), listing([])]).encode(), "application/json")
    api = _api(server, http_config)
    with pytest.raises(BadRecord, match="no id"):
        api.thread("sp0001")
    with pytest.raises(BadRecord, match="is post 'sp0004'") as info:
        api.thread("sp0002")
    assert info.value.source == api.thread_url("sp0002")


def test_an_answer_nested_too_deeply_is_bad_json(server, http_config):
    """``[[[[...`` deeper than the JSON parser goes raised RecursionError (not a ValueError) out of the plan, or
    out of a unit for a thread's answer: it is the answer's bad_json now."""
    from crawl_server import static

    install_reddit(server)
    deep = b"[" * 100_000
    server.routes[f"/r/{SUB}/new"] = static(deep, "application/json")
    server.routes[f"/r/{SUB}/comments/sp0001"] = static(deep, "application/json")
    api = _api(server, http_config)
    for call in (api.post_ids, lambda: api.thread("sp0001")):
        with pytest.raises(FetchError) as info:
            call()
        assert info.value.reason == "bad_json" and "nested too deeply" in info.value.message
