"""The fault suite: each case asserts what the crawler did (server log, connects, cache) and the reason."""

from __future__ import annotations

import struct
import time
import zlib
from pathlib import Path

import pytest
from crawl_images import jpeg_bytes
from crawl_server import redirect, reset, sequence, slow, static, trickle

from ieiw.crawlers.cache import ResponseCache
from ieiw.crawlers.http import FetchError, PoliteSession
from ieiw.crawlers.images import fetch_image
from ieiw.schemas.storage import TMP_PREFIX

MAX_PIXELS = 5_000_000


def session_for(cfg) -> PoliteSession:
    return PoliteSession(cfg, ResponseCache(Path(cfg.cache_dir)))


def cache_files(cfg) -> dict[str, list[Path]]:
    root = Path(cfg.cache_dir)
    return {
        "index": sorted((root / "index").rglob("*.json")) if (root / "index").exists() else [],
        "blobs": sorted(p for p in (root / "blobs").rglob("*") if p.is_file()) if (root / "blobs").exists() else [],
        "tmp": sorted(root.rglob(TMP_PREFIX + "*")) if root.exists() else [],
    }


def fail_reason(session: PoliteSession, url: str) -> FetchError:
    with pytest.raises(FetchError) as info:
        fetch_image(session, url, MAX_PIXELS)
    return info.value


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A real 1-bit PNG of 400 megapixels that compresses to ~50 KB."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_429_with_retry_after_waits_then_succeeds(server, http_config, photo):
    img = jpeg_bytes(photo)
    server.routes["/img/a.jpg"] = sequence(
        static(b"slow down", "text/plain", 429, {"Retry-After": "1"}), static(img, "image/jpeg")
    )
    body, fmt = fetch_image(session_for(http_config), f"{server.base}/img/a.jpg", MAX_PIXELS)
    assert body == img and fmt == "JPEG"
    hits = server.requests_for("/img/a.jpg")
    assert len(hits) == 2
    assert hits[1].t - hits[0].t >= 0.9  # Retry-After: 1 was honoured
    assert "tests@example.org" in hits[0].headers["User-Agent"]
    assert len(cache_files(http_config)["blobs"]) == 1


def test_500_then_success(server, http_config, photo):
    img = jpeg_bytes(photo)
    server.routes["/img/b.jpg"] = sequence(static(b"oops", "text/plain", 500), static(img, "image/jpeg"))
    body, _ = fetch_image(session_for(http_config), f"{server.base}/img/b.jpg", MAX_PIXELS)
    assert body == img
    assert len(server.requests_for("/img/b.jpg")) == 2


def test_500_forever_gives_up_with_status_reason(server, http_config):
    server.routes["/img/c.jpg"] = static(b"oops", "text/plain", 500)
    err = fail_reason(session_for(http_config), f"{server.base}/img/c.jpg")
    assert err.reason == "http_500"
    assert len(server.requests_for("/img/c.jpg")) == http_config.retries + 1
    assert cache_files(http_config)["index"] == []  # transient: not remembered, a rerun may retry


def test_timeout(server, http_config, photo):
    cfg = http_config.model_copy(update={"read_timeout_s": 0.3, "retries": 1})
    server.routes["/img/slow.jpg"] = slow(2.0, static(jpeg_bytes(photo), "image/jpeg"))
    err = fail_reason(session_for(cfg), f"{server.base}/img/slow.jpg")
    assert err.reason == "timeout"
    assert len(server.requests_for("/img/slow.jpg")) == 2  # first try + one retry
    assert cache_files(cfg) == {"index": [], "blobs": [], "tmp": []}


@pytest.mark.parametrize("part", ["body", "body-without-length", "headers"])
def test_trickling_server_hits_the_fetch_deadline(server, http_config, part):
    """A byte every 0.1 s never trips the 1 s read timeout; the fetch's deadline ends it, as a timeout."""
    cfg = http_config.model_copy(update={"fetch_timeout_s": 1.0, "respect_robots": False})
    body = b"\xff\xd8\xff\xe0" + b"\0" * 56  # 60 bytes: 6 s at this pace
    server.routes["/img/trickle.jpg"] = trickle(
        body, "image/jpeg", 0.1, headers=part == "headers", length=part != "body-without-length"
    )
    start = time.monotonic()
    err = fail_reason(session_for(cfg), f"{server.base}/img/trickle.jpg")
    took = time.monotonic() - start
    assert err.reason == "timeout" and "fetch_timeout_s=1" in err.message, (err.reason, err.message)
    assert took < 1.0 + 0.5, took
    assert cache_files(cfg) == {"index": [], "blobs": [], "tmp": []}  # transient: a rerun may try again


def test_body_stalling_past_the_read_timeout_is_a_timeout(server, http_config):
    """A read timeout while streaming the body is a ``timeout`` (requests reports it as a ConnectionError)."""
    cfg = http_config.model_copy(update={"read_timeout_s": 0.3, "respect_robots": False})
    body = b"\xff\xd8\xff\xe0" + b"\0" * 2000
    server.routes["/img/stall.jpg"] = trickle(body, "image/jpeg", 0.0, stall_after=1000, stall=2.0)
    err = fail_reason(session_for(cfg), f"{server.base}/img/stall.jpg")
    assert err.reason == "timeout", (err.reason, err.message)


def test_connection_reset(server, http_config):
    server.routes["/img/reset.jpg"] = reset
    err = fail_reason(session_for(http_config), f"{server.base}/img/reset.jpg")
    assert err.reason == "connection_error"
    assert len(server.requests_for("/img/reset.jpg")) == http_config.retries + 1
    assert cache_files(http_config) == {"index": [], "blobs": [], "tmp": []}


def test_truncated_jpeg(server, http_config, photo):
    img = jpeg_bytes(photo)
    server.routes["/img/trunc.jpg"] = static(img[: len(img) // 2], "image/jpeg")
    session = session_for(http_config)
    err = fail_reason(session, f"{server.base}/img/trunc.jpg")
    assert err.reason == "truncated_image"
    files = cache_files(http_config)
    assert files["blobs"] == [] and files["tmp"] == []  # the bad body never reached the cache
    assert len(files["index"]) == 1  # ...but the permanent failure is remembered
    again = fail_reason(session, f"{server.base}/img/trunc.jpg")
    assert again.reason == "truncated_image"
    assert len(server.requests_for("/img/trunc.jpg")) == 1  # not fetched twice


def test_html_served_as_jpeg(server, http_config):
    server.routes["/img/page.jpg"] = static(b"<!doctype html><html><body>login</body></html>", "image/jpeg")
    err = fail_reason(session_for(http_config), f"{server.base}/img/page.jpg")
    assert err.reason == "not_an_image"
    assert "doctype" in err.message


def test_wrong_content_type(server, http_config, photo):
    server.routes["/img/typed.jpg"] = static(jpeg_bytes(photo), "text/html")
    err = fail_reason(session_for(http_config), f"{server.base}/img/typed.jpg")
    assert err.reason == "bad_content_type"


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "streamed"])
def test_body_over_size_cap(server, http_config, declared):
    cfg = http_config.model_copy(update={"max_body_bytes": 100_000})
    server.routes["/img/big.jpg"] = static(b"\xff\xd8\xff" + b"\0" * 300_000, "image/jpeg", length=declared)
    err = fail_reason(session_for(cfg), f"{server.base}/img/big.jpg")
    assert err.reason == "too_large"
    assert cache_files(cfg)["blobs"] == []


def test_decompression_bomb_png(server, http_config):
    bomb = bomb_png()
    assert len(bomb) < 200_000
    server.routes["/img/bomb.png"] = static(bomb, "image/png")
    err = fail_reason(session_for(http_config), f"{server.base}/img/bomb.png")
    assert err.reason == "decompression_bomb"
    assert "400000000" in err.message


@pytest.mark.parametrize(
    "location,address",
    [
        ("http://10.0.0.1/x.jpg", ("10.0.0.1", 80)),
        ("http://127.0.0.1:{other}/x.jpg", ("127.0.0.1", "{other}")),
        ("http://169.254.169.254/latest/meta-data/", ("169.254.169.254", 80)),
        ("http://[2002:a9fe:a9fe::1]/latest/meta-data/", ("2002:a9fe:a9fe::1", 80)),  # 6to4 of 169.254.169.254
        ("http://[2002:7f00:1::]/x.jpg", ("2002:7f00:1::", 80)),  # 6to4 of 127.0.0.1
    ],
    ids=["10.0.0.1", "loopback-other-port", "metadata", "6to4-metadata", "6to4-loopback"],
)
def test_redirect_to_private_refused_before_connecting(server, http_config, connects, location, address):
    other = server.server_address[1] + 1 if server.server_address[1] < 65535 else 1024
    location = location.format(other=other)
    address = (address[0], other if address[1] == "{other}" else address[1])
    server.routes["/img/moved.jpg"] = redirect(location)
    err = fail_reason(session_for(http_config), f"{server.base}/img/moved.jpg")
    assert err.reason == "private_address"
    assert err.url == location
    assert len(server.requests_for("/img/moved.jpg")) == 1
    assert address not in connects  # no socket ever tried the private address
    assert ("127.0.0.1", server.server_address[1]) in connects  # (the audit does see real connects)


def test_private_url_refused_without_allow_list(server, http_config, connects):
    cfg = http_config.model_copy(update={"allow_private_hosts": ()})
    err = fail_reason(session_for(cfg), f"{server.base}/img/a.jpg")
    assert err.reason == "private_address"
    assert connects == [] and server.log == []


def test_robots_disallow_is_never_fetched(server, http_config, photo):
    server.routes["/private/x.jpg"] = static(jpeg_bytes(photo), "image/jpeg")
    session = session_for(http_config)
    err = fail_reason(session, f"{server.base}/private/x.jpg")
    assert err.reason == "robots_disallowed"
    assert [e.path for e in server.log] == ["/robots.txt"]
    fail_reason(session, f"{server.base}/private/y.jpg")
    assert [e.path for e in server.log] == ["/robots.txt"]  # robots.txt cached per host


def test_replay_only_miss_touches_nothing(server, http_config, connects):
    cfg = http_config.model_copy(update={"replay_only": True})
    err = fail_reason(session_for(cfg), f"{server.base}/img/a.jpg")
    assert err.reason == "not_in_cache"
    assert connects == [] and server.log == []


def test_rerun_from_cache_makes_no_request(server, http_config, photo, connects):
    img = jpeg_bytes(photo)
    server.routes["/img/d.jpg"] = static(img, "image/jpeg")
    fetch_image(session_for(http_config), f"{server.base}/img/d.jpg", MAX_PIXELS)
    n = len(server.log)
    connects.clear()
    body, _ = fetch_image(session_for(http_config), f"{server.base}/img/d.jpg", MAX_PIXELS)
    assert body == img and len(server.log) == n and connects == []


def test_per_host_rate_limit_spaces_requests(server, http_config, photo):
    cfg = http_config.model_copy(update={"min_interval_s": 0.4, "respect_robots": False})
    server.routes["/img/e.jpg"] = static(jpeg_bytes(photo), "image/jpeg")
    server.routes["/img/f.jpg"] = static(jpeg_bytes(photo, 80), "image/jpeg")
    session = session_for(cfg)
    fetch_image(session, f"{server.base}/img/e.jpg", MAX_PIXELS)
    fetch_image(session, f"{server.base}/img/f.jpg", MAX_PIXELS)
    t = [e.t for e in server.log]
    assert len(t) == 2 and t[1] - t[0] >= 0.38


def test_cache_is_content_addressed(server, http_config, photo):
    img = jpeg_bytes(photo)
    server.routes["/img/g.jpg"] = static(img, "image/jpeg")
    server.routes["/img/same-as-g.jpg"] = static(img, "image/jpeg")
    session = session_for(http_config)
    fetch_image(session, f"{server.base}/img/g.jpg", MAX_PIXELS)
    fetch_image(session, f"{server.base}/img/same-as-g.jpg", MAX_PIXELS)
    files = cache_files(http_config)
    assert len(files["index"]) == 2 and len(files["blobs"]) == 1 and files["tmp"] == []


def test_faults_inside_a_build_become_named_failures(server, http_config, tmp_path, connects):
    """The builder records each fault as a Failure with its reason; the good edit still becomes a row."""
    import json

    from ieiw.crawlers.builder import WebCrawlBuilder
    from ieiw.crawlers.config import CrawlConfig, DumpSourceConfig, TakedownConfig
    from ieiw.samples.crawl import paint_patch, synthetic_photo

    original = synthetic_photo(31, 320, 240)
    server.routes["/i/orig.jpg"] = static(jpeg_bytes(original), "image/jpeg")
    server.routes["/i/good.jpg"] = static(jpeg_bytes(paint_patch(original, 1)), "image/jpeg")
    server.routes["/i/trunc.jpg"] = static(jpeg_bytes(original)[:3000], "image/jpeg")
    server.routes["/i/page.jpg"] = static(b"<html>login</html>", "image/jpeg")
    server.routes["/i/bomb.png"] = static(bomb_png(), "image/png")
    server.routes["/i/meta.jpg"] = redirect("http://169.254.169.254/latest/meta-data/")
    server.routes["/i/reset.jpg"] = reset
    faults = {
        "good.jpg": None,
        "trunc.jpg": "truncated_image",
        "page.jpg": "not_an_image",
        "bomb.png": "decompression_bomb",
        "meta.jpg": "private_address",
        "reset.jpg": "connection_error",
        "gone.jpg": "http_404",
    }
    post = {
        "id": "f1",
        "subreddit": "PhotoshopRequest",
        "author": "op",
        "title": "Remove the ball",
        "selftext": "",
        "url": f"{server.base}/i/orig.jpg",
        "permalink": "/r/PhotoshopRequest/comments/f1/x/",
        "created_utc": 1.7e9,
    }
    comments = [
        {"id": f"c{i}", "link_id": "t3_f1", "author": f"ed{i}", "score": 100 - i, "body": f"{server.base}/i/{name}"}
        for i, name in enumerate(faults)
    ]
    (tmp_path / "s.ndjson").write_text(json.dumps(post) + "\n")
    (tmp_path / "c.ndjson").write_text("".join(json.dumps(c) + "\n" for c in comments))
    cfg = CrawlConfig(
        dumps=(DumpSourceConfig(submissions="s.ndjson", comments="c.ndjson"),),
        http=http_config,
        takedown=TakedownConfig(),
        pairs={"max_edits_per_post": 5, "max_candidates_per_post": 10},
    )
    builder = WebCrawlBuilder(cfg, tmp_path)
    result = builder.build_unit(builder.plan()[0])
    assert len(result.rows) == 1 and json.loads(result.rows[0]["builder"]["params"])["edit_url"].endswith("good.jpg")
    got = {f.record_id: f.reason for f in result.failures}
    assert got == {f"f1/c{i}": reason for i, (name, reason) in enumerate(faults.items()) if reason}
    assert all(f.file == str(tmp_path / "s.ndjson") for f in result.failures)
    assert ("169.254.169.254", 80) not in connects
    assert cache_files(http_config)["tmp"] == []


def test_peer_address_is_checked_after_dns(server, http_config):
    """DNS rebinding: a name that passed the pre-check but connects to a private peer is dropped
    before any request byte is sent (the adapter is driven directly, skipping the pre-check)."""
    import requests

    from ieiw.crawlers.safety import SafeAdapter

    session = requests.Session()
    session.mount("http://", SafeAdapter(frozenset(), max_retries=0))
    with pytest.raises(requests.exceptions.ConnectionError, match="peer address is not public"):
        session.get(f"{server.base}/img/a.jpg", timeout=2)
    assert server.log == []
    session.mount("http://", SafeAdapter(frozenset({server.hostport}), max_retries=0))
    server.routes["/ok"] = static(b"fine", "text/plain")
    assert session.get(f"{server.base}/ok", timeout=2).text == "fine"


def test_an_ipv6_address_carrying_a_private_ipv4_one_is_not_public():
    from ieiw.crawlers.safety import is_public_address

    for address in ("::ffff:10.0.0.1", "2002:7f00:1::", "2002:a9fe:a9fe::1", "2002:0a00:0001::5",
                    "2001:0:4136:e378:8000:63bf:80ff:fffe"):  # Teredo
        assert not is_public_address(address), address
    assert is_public_address("2002:808:808::1") and is_public_address("2606:4700::1111")

