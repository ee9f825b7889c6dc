"""Security review (issue 24): credentials on redirects, a corrupt or crafted cache index, the index folder."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from crawl_server import redirect, static

from ieiw.crawlers.builder import WebCrawlBuilder
from ieiw.crawlers.cache import ResponseCache
from ieiw.crawlers.config import CrawlConfig
from ieiw.crawlers.http import PoliteSession

REPO = Path(__file__).resolve().parents[2]
TOKEN = {"Authorization": "bearer secret-token"}


# -- 1. the Authorization header on redirects -------------------------------------------------------
@pytest.mark.parametrize(
    ("first", "nxt", "keeps"),
    [
        ("https://oauth.reddit.com/a", "https://oauth.reddit.com/b", True),
        ("http://127.0.0.1:8080/a", "http://127.0.0.1:8080/b", True),
        ("http://oauth.reddit.com/a", "https://oauth.reddit.com/b", True),  # an upgrade keeps it
        ("http://oauth.reddit.com:8080/a", "https://oauth.reddit.com:8443/b", False),  # not on other ports
        ("https://oauth.reddit.com/a", "http://oauth.reddit.com/b", False),  # a downgrade drops it
        ("https://oauth.reddit.com/a", "http://oauth.reddit.com:443/b", False),
        ("HTTPS://oauth.reddit.com/a", "Http://OAUTH.reddit.com/b", False),
        ("https://oauth.reddit.com/a", "https://evil.example/b", False),
        ("https://oauth.reddit.com/a", "https://oauth.reddit.com.evil.example/b", False),
        ("http://127.0.0.1:8080/a", "http://127.0.0.1:8081/b", False),
        ("https://oauth.reddit.com/a", "https://oauth.reddit.com:8443/b", False),
    ],
)
def test_redirect_keeps_auth_only_to_same_host_without_downgrade(first, nxt, keeps):
    from ieiw.crawlers.http import redirect_keeps_auth  # (imported here: the other tests run on older code)

    assert redirect_keeps_auth(first, nxt) is keeps


class FakeResponse:
    def __init__(self, status: int, headers: dict[str, str], body: bytes = b""):
        self.status_code = status
        self.headers = headers
        self.body = body

    @property
    def is_redirect(self) -> bool:
        return "Location" in self.headers

    def iter_content(self, chunk_size: int):
        yield self.body

    def close(self) -> None:
        pass


def test_https_to_http_redirect_of_same_host_drops_bearer_token(http_config, monkeypatch):
    """The hop loop itself: an https URL redirected to http on the same host, then back to https. No real
    https server is started (the loopback fixture server speaks plain http), so the network layer
    (``PoliteSession._get``) is replaced by one that records each hop's headers; the safety checks run."""
    session = PoliteSession(http_config)
    host = http_config.allow_private_hosts[0]  # 127.0.0.1:<port>: resolves, and is allow-listed
    hops = {
        f"https://{host}/v1/thing": FakeResponse(302, {"Location": f"http://{host}/v1/plain"}),
        f"http://{host}/v1/plain": FakeResponse(302, {"Location": f"https://{host}/v1/back"}),
        f"https://{host}/v1/back": FakeResponse(200, {"Content-Type": "application/json"}, b"{}"),
    }
    seen: list[tuple[str, dict[str, str]]] = []

    def fake_get(url, headers, deadline):
        seen.append((url, dict(headers)))
        return hops[url]

    monkeypatch.setattr(session, "_get", fake_get)
    fetched = session.get(f"https://{host}/v1/thing", "json", headers=TOKEN, robots=False, use_cache=False)
    assert fetched.status == 200
    assert [u for u, _ in seen] == list(hops)
    assert seen[0][1]["Authorization"] == "bearer secret-token"
    assert "Authorization" not in seen[1][1]  # not sent in clear text
    assert "Authorization" not in seen[2][1]  # and not restored after the downgrade


def test_redirect_to_other_host_drops_token_on_the_wire(server, http_config):
    """Real loopback traffic: 127.0.0.1 -> localhost (another host name, same server) loses the token."""
    port = server.server_address[1]
    server.routes["/a"] = redirect(f"http://localhost:{port}/b")
    server.routes["/b"] = static(b"{}", "application/json")
    cfg = http_config.model_copy(update={"allow_private_hosts": (server.hostport, f"localhost:{port}")})
    session = PoliteSession(cfg)
    session.get(f"{server.base}/a", "json", headers={"authorization": "bearer x"}, robots=False, use_cache=False)

    def auth(e):
        return [v for k, v in e.headers.items() if k.lower() == "authorization"]

    assert auth(server.requests_for("/a")[0]) == ["bearer x"]
    assert [auth(e) for e in server.requests_for("/b")] == [[]]  # (the old check missed a lower-case name)


# -- 2. a corrupt or crafted cache index -------------------------------------------------------------
URL = "https://i.redd.it/abc.jpg"


def write_index(cache: ResponseCache, text: str) -> None:
    path = cache._index_path(URL)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize(
    "text",
    [
        '{"url": "https://i.redd.it/abc.jpg", "status": 200, "blo',  # truncated
        "[1, 2, 3]",  # not an object
        '"a string"',
        "null",
        "\udcff",  # not UTF-8 (written with surrogateescape below)
        '{"url": "https://i.redd.it/abc.jpg"}',  # no status
        '{"url": "https://i.redd.it/abc.jpg", "status": "200", "reason": "http_404"}',  # mistyped
        '{"url": "https://i.redd.it/abc.jpg", "status": 200}',  # neither a blob nor a failure
        '{"url": "https://i.redd.it/abc.jpg", "status": 200, "blob": "blobs/aa/x.jpg"}',  # blob without sha256
        "[" * 100_000,  # deeper than the parser goes: RecursionError, not a ValueError
    ],
    ids=["truncated", "list", "string", "null", "not-utf8", "no-status", "mistyped", "empty", "no-sha", "nested"],
)
def test_corrupt_index_entry_is_a_miss(tmp_path, text):
    cache = ResponseCache(tmp_path / "cache")
    path = cache._index_path(URL)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    assert cache.get(URL) is None


def test_corrupt_index_entry_is_refetched(server, http_config):
    """A corrupt entry is a miss for the session too: the URL is fetched again and the entry rewritten."""
    server.routes["/d.json"] = static(b'{"ok": 1}', "application/json")
    cache = ResponseCache(Path(http_config.cache_dir))
    url = f"{server.base}/d.json"
    path = cache._index_path(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"url": "x", "sta')
    session = PoliteSession(http_config, cache)
    assert session.get(url, "json", robots=False).body == b'{"ok": 1}'
    assert len(server.requests_for("/d.json")) == 1
    assert cache.get(url) is not None and cache.get(url).body == b'{"ok": 1}'


@pytest.mark.parametrize(
    "blob",
    [
        "../../etc/passwd",
        "/etc/passwd",
        "blobs/../../../etc/passwd",
        "blobs/{p}/../../../outside/{h}.jpg",
        "blobs/{p}/{h}.jpg/../../../outside.jpg",
        "blobs/zz/{h}.jpg",  # prefix is not the digest's
        "blobs/{p}/{H}.jpg",  # upper case
        "blobs/{p}/{h}",  # no extension
        "blobs/{p}/{h}.j/g",
        "index/{p}/{h}.jpg",
    ],
)
def test_blob_outside_the_blob_folder_is_refused(tmp_path, blob):
    root = tmp_path / "cache"
    body = b"secret outside the cache"
    sha = hashlib.sha256(body).hexdigest()
    # the files such names would reach: each holds a body whose digest matches the entry
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / f"{sha}.jpg").write_bytes(body)
    (tmp_path / "outside.jpg").write_bytes(body)
    for rel in (
        f"blobs/{sha[:2]}/{sha}",
        f"blobs/{sha[:2]}/{sha.upper()}.jpg",
        f"index/{sha[:2]}/{sha}.jpg",
        f"blobs/zz/{sha}.jpg",
    ):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(body)
    cache = ResponseCache(root)
    meta = {
        "url": URL,
        "status": 200,
        "content_type": "image/jpeg",
        "sha256": sha,
        "blob": blob.format(p=sha[:2], h=sha, H=sha.upper()),
    }
    if blob in ("../../etc/passwd", "/etc/passwd") and Path("/etc/passwd").is_file():
        meta["sha256"] = hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest()
    write_index(cache, json.dumps(meta))
    assert cache.get(URL) is None


def test_plain_blob_name_still_served(tmp_path):
    cache = ResponseCache(tmp_path / "cache")
    cache.put(URL, 200, "image/jpeg", b"jpeg bytes")
    entry = cache.get(URL)
    assert entry is not None and entry.body == b"jpeg bytes"


# -- 3. the dump index folder of a builder made without a build context ------------------------------
def test_index_folder_is_private_to_the_user(tmp_path, monkeypatch):
    monkeypatch.setenv("IEIW_CACHE_DIR", str(tmp_path / "cache"))
    builder = WebCrawlBuilder(CrawlConfig(), REPO)
    assert builder.index_dir is None and builder.config.dumps
    folder = builder._index_folder(0, builder.config.dumps[0])
    root = folder.parent
    assert root == tmp_path / "cache" / "crawl-index"
    assert not str(folder).startswith("/tmp/ieiw-crawl-index")
    info = root.lstat()
    assert stat.S_ISDIR(info.st_mode)
    assert info.st_uid == os.getuid()
    assert stat.S_IMODE(info.st_mode) == 0o700


def test_index_folder_narrowed_or_refused(tmp_path, monkeypatch):
    from ieiw.crawlers.builder import private_index_root

    monkeypatch.setenv("IEIW_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "cache" / "crawl-index"
    root.mkdir(parents=True)
    root.chmod(0o777)
    assert private_index_root() == root and stat.S_IMODE(root.stat().st_mode) == 0o700  # ours: narrowed
    monkeypatch.setattr(os, "getuid", lambda: os.stat(root).st_uid + 1)  # as if another user made it
    with pytest.raises(PermissionError, match="not by this user"):
        private_index_root()


def test_index_folder_symlink_refused(tmp_path, monkeypatch):
    from ieiw.crawlers.builder import private_index_root

    monkeypatch.setenv("IEIW_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "crawl-index").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(PermissionError, match="symlink"):
        private_index_root()


@pytest.mark.parametrize("url", ["https://[i.redd.it/x.jpg", "https://i.redd.it:99999/x.jpg", "http://[[[[/a"])
def test_a_url_that_does_not_parse_is_a_named_fetch_failure(http_config, url):
    """`make fuzz` find: an image URL with an unclosed IPv6 bracket (a damaged dump line) raised ValueError from
    the cache's URL normaliser, out of the crawl unit; it is a FetchError bad_url, with or without a cache."""
    from ieiw.crawlers.http import FetchError

    cache = ResponseCache(Path(http_config.cache_dir))
    for session in (PoliteSession(http_config, cache), PoliteSession(http_config)):
        with pytest.raises(FetchError) as err:
            session.get(url, "image")
        assert err.value.reason == "bad_url"
