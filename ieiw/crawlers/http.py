"""The polite, safe HTTP client every crawler source goes through.

- retries with backoff and ``Retry-After`` honoured: urllib3 ``Retry`` mounted on a requests adapter;
- one request per ``min_interval_s`` per host, connect/read timeouts, a maximum body size, and a
  content-type check for what the caller expects;
- robots.txt (``urllib.robotparser``), fetched once per host and kept for the session;
- a User-Agent that carries a contact address;
- every URL and every redirect hop is checked by :mod:`safety` before a connection is made
  (redirects are followed by hand for that reason: requests would connect first);
- responses (and permanent failures) go to the content-addressed cache; in replay-only mode the
  network is never touched and a cache miss is the failure ``not_in_cache``.

Failures raise :class:`FetchError` with a stable short ``reason``; callers turn them into
``Failure`` rows. Nothing here raises anything else for a bad server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib import robotparser
from urllib.parse import urljoin, urlsplit

import requests
from urllib3.exceptions import ReadTimeoutError
from urllib3.util.retry import Retry

from ieiw.crawlers.cache import ResponseCache
from ieiw.crawlers.config import HttpConfig
from ieiw.crawlers.safety import PEER_REFUSED, FetchError, SafeAdapter, check_url, parse_target
from ieiw.schemas.lazy import locked_cached_property

Kind = Literal["image", "json", "html", "any"]

CONTENT_TYPES: dict[str, tuple[str, ...]] = {
    "image": ("image/",),
    "json": ("application/json", "text/json"),
    "html": ("text/html", "application/xhtml+xml"),
    "any": ("",),
}
# Failures that will not change on a rerun: remembered in the cache so nothing is fetched twice.
# (401 is not here: it means our token expired, not that the resource is gone.)
PERMANENT = {
    "bad_content_type",
    "too_large",
    "not_an_image",
    "truncated_image",
    "decompression_bomb",
    "bad_image",
    "http_400",
    "http_403",
    "http_404",
    "http_410",
    "http_451",
}
ROBOTS_MAX_BYTES = 512_000


def _retry(**kw: Any) -> Retry:
    """urllib3 ``Retry``; ``retry_after_max`` (the cap on a server's Retry-After) is a newer argument,
    so on an older urllib3 the cap is applied by a small subclass instead."""
    try:
        return Retry(**kw)
    except TypeError:
        cap = kw.pop("retry_after_max")

        class CappedRetry(Retry):
            def parse_retry_after(self, retry_after: str) -> float:
                return min(float(cap), super().parse_retry_after(retry_after))

        return CappedRetry(**kw)


@dataclass(frozen=True)
class Fetched:
    url: str
    status: int
    content_type: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    from_cache: bool = False


Validator = Callable[[bytes, str], None]  # raises FetchError when the body is unusable


class PoliteSession:
    """A requests session wrapped with the project's politeness and safety rules."""

    def __init__(self, config: HttpConfig, cache: ResponseCache | None = None):
        self.config = config
        self.cache = cache
        self.allow = frozenset(config.allow_private_hosts)
        self.user_agent = f"{config.user_agent} contact: {config.contact}"
        self._robots: dict[str, robotparser.RobotFileParser] = {}
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()
        self.network_requests = 0  # requests actually sent (robots.txt included)

    # -- plumbing -------------------------------------------------------------------------------
    @locked_cached_property
    def _http(self) -> requests.Session:
        """Created on first use so replay-only runs never even build a connection pool."""
        c = self.config
        retry = _retry(
            total=c.retries,
            connect=c.retries,
            read=c.retries,
            status=c.retries,
            backoff_factor=c.backoff_factor,
            status_forcelist=c.retry_statuses,
            allowed_methods=frozenset({"GET", "HEAD"}),
            respect_retry_after_header=True,
            retry_after_max=c.retry_after_max_s,
            raise_on_status=False,  # the last response comes back and becomes "http_<status>"
            raise_on_redirect=False,
        )
        session = requests.Session()
        session.trust_env = (
            False  # no proxies or netrc from the environment: the safety check must see the real peer
        )
        adapter = SafeAdapter(self.allow, max_retries=retry)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers["User-Agent"] = self.user_agent
        return session

    def _wait_turn(self, hostport: str) -> None:
        """Per-host rate limit: sleep until ``min_interval_s`` has passed since the last request."""
        with self._lock:
            now = time.monotonic()
            ready = self._last.get(hostport, 0.0) + self.config.min_interval_s
            wait = max(0.0, ready - now)
            self._last[hostport] = now + wait
        if wait:
            time.sleep(wait)

    def _check(self, url: str) -> None:
        check_url(url, self.allow)  # raises UrlRefused, a FetchError

    # -- robots ---------------------------------------------------------------------------------
    def robots_allows(self, url: str) -> bool:
        """Whether robots.txt of the URL's host lets our User-Agent fetch it (cached per host)."""
        parse_target(url)  # refuses non-http(s) URLs
        parts = urlsplit(url)
        base = f"{parts.scheme.lower()}://{parts.netloc.lower()}"
        parser = self._robots.get(base)
        if parser is None:
            parser = self._load_robots(base)
            self._robots[base] = parser
        return parser.can_fetch(self.user_agent, url)

    def _load_robots(self, base: str) -> robotparser.RobotFileParser:
        # Mirrors RobotFileParser.read(): 401/403 -> disallow all, other 4xx -> allow all. It is fetched
        # through our own client (not rp.read()) so the safety check, timeouts and size cap apply.
        parser = robotparser.RobotFileParser(base + "/robots.txt")
        try:
            resp = self._send(base + "/robots.txt", {}, max_bytes=ROBOTS_MAX_BYTES)
        except FetchError:
            parser.disallow_all = True  # cannot tell: be conservative
            return parser
        if resp.status in (401, 403) or resp.status >= 500:
            parser.disallow_all = True
        elif resp.status >= 400:
            parser.allow_all = True
        else:
            parser.parse(resp.body.decode("utf-8", errors="replace").splitlines())
        return parser

    # -- fetching -------------------------------------------------------------------------------
    def _send(
        self,
        url: str,
        headers: Mapping[str, str],
        max_bytes: int,
        robots: bool = False,
        kind: Kind = "any",
    ) -> Fetched:
        """GET with redirects followed by hand; each hop is safety-checked before connecting.

        An error status or an unexpected content type is answered before the body is read, so a
        20 MB HTML page served instead of an image costs only its headers.
        """
        current = url
        start_host = urlsplit(url).netloc
        for _hop in range(self.config.max_redirects + 1):
            self._check(current)
            if robots and self.config.respect_robots and not self.robots_allows(current):
                raise FetchError("robots_disallowed", current, "robots.txt disallows this URL for our User-Agent")
            hop_headers = dict(headers)
            if urlsplit(current).netloc != start_host:
                hop_headers.pop("Authorization", None)  # never leak credentials to another host
            self._wait_turn(parse_target(current).hostport)
            resp = self._get(current, hop_headers)
            try:
                if resp.is_redirect:
                    location = resp.headers.get("Location", "")
                    current = urljoin(current, location)
                    continue
                ctype = resp.headers.get("Content-Type", "")
                if resp.status_code >= 400:
                    body = b""
                else:
                    main_type = ctype.split(";")[0].strip().lower()
                    if not main_type.startswith(CONTENT_TYPES[kind]):
                        raise FetchError(
                            "bad_content_type", url, f"expected {kind}, got {main_type or 'none'!r}", resp.status_code
                        )
                    body = self._read(resp, current, max_bytes)
                return Fetched(
                    url=url,
                    status=resp.status_code,
                    content_type=resp.headers.get("Content-Type", ""),
                    body=body,
                    headers=dict(resp.headers),
                )
            finally:
                resp.close()
        raise FetchError("too_many_redirects", url, f"more than {self.config.max_redirects} redirects")

    def _get(self, url: str, headers: Mapping[str, str]) -> requests.Response:
        c = self.config
        self.network_requests += 1
        try:
            return self._http.get(
                url,
                headers=headers,
                stream=True,
                allow_redirects=False,
                timeout=(c.connect_timeout_s, c.read_timeout_s),
            )
        except requests.exceptions.Timeout as exc:
            raise FetchError("timeout", url, f"timed out after {c.retries} retries: {exc}") from exc
        except requests.exceptions.ConnectionError as exc:
            cause = exc.args[0] if exc.args else None
            if isinstance(getattr(cause, "reason", None), ReadTimeoutError):
                raise FetchError("timeout", url, f"timed out after {c.retries} retries: {cause}") from exc
            if PEER_REFUSED in str(exc):
                raise FetchError("private_address", url, f"refused after connecting: {cause}") from exc
            raise FetchError("connection_error", url, f"after {c.retries} retries: {exc}") from exc
        except requests.exceptions.RequestException as exc:
            raise FetchError("request_error", url, str(exc)) from exc

    def _read(self, resp: requests.Response, url: str, max_bytes: int) -> bytes:
        """Read the body, refusing it as soon as it is known to exceed ``max_bytes``."""
        declared = resp.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise FetchError("too_large", url, f"Content-Length {declared} > cap {max_bytes}", resp.status_code)
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in resp.iter_content(chunk_size=65536):
                size += len(chunk)
                if size > max_bytes:
                    raise FetchError("too_large", url, f"body exceeds cap {max_bytes} bytes", resp.status_code)
                chunks.append(chunk)
        except requests.exceptions.RequestException as exc:
            reason = "timeout" if isinstance(exc, requests.exceptions.Timeout) else "connection_error"
            raise FetchError(reason, url, f"while reading the body: {exc}", resp.status_code) from exc
        return b"".join(chunks)

    def get(
        self,
        url: str,
        kind: Kind,
        *,
        headers: Mapping[str, str] | Callable[[], Mapping[str, str]] | None = None,
        robots: bool = True,
        use_cache: bool = True,
        validate: Validator | None = None,
    ) -> Fetched:
        """Fetch ``url`` (from the cache when there), or raise :class:`FetchError` with a reason.

        ``headers`` may be a callable: it is only called when the network is used, so a cached
        rerun never asks for an OAuth token.
        """
        cache = self.cache if use_cache else None
        if cache is not None:
            entry = cache.get(url)
            if entry is not None:
                if entry.reason:
                    raise FetchError(entry.reason, url, f"(cached) {entry.message}", entry.status)
                assert entry.body is not None
                return Fetched(url, entry.status, entry.content_type, entry.body, {}, True)
        if self.config.replay_only:
            raise FetchError("not_in_cache", url, "replay-only mode and the URL is not in the cache")
        try:
            hdrs = headers() if callable(headers) else (headers or {})
            fetched = self._send(url, hdrs, self.config.max_body_bytes, robots=robots, kind=kind)
            if fetched.status >= 400:
                raise FetchError(f"http_{fetched.status}", url, f"server answered {fetched.status}", fetched.status)
            if validate is not None:
                validate(fetched.body, fetched.content_type.split(";")[0].strip().lower())
        except FetchError as exc:
            if cache is not None and exc.reason in PERMANENT:
                cache.put_failure(url, exc.status or 0, exc.reason, exc.message)
            raise
        if cache is not None:
            cache.put(url, fetched.status, fetched.content_type, fetched.body)
        return fetched

    def post_form(
        self, url: str, data: Mapping[str, str], auth: tuple[str, str], headers: Mapping[str, str] | None = None
    ) -> Fetched:
        """A POST (the OAuth token request): same safety checks and rate limit, never cached or retried."""
        if self.config.replay_only:
            raise FetchError("not_in_cache", url, "replay-only mode: no token requests")
        self._check(url)
        self._wait_turn(parse_target(url).hostport)
        self.network_requests += 1
        c = self.config
        try:
            resp = self._http.post(
                url,
                data=dict(data),
                auth=auth,
                headers=dict(headers or {}),
                allow_redirects=False,
                timeout=(c.connect_timeout_s, c.read_timeout_s),
                stream=True,
            )
        except requests.exceptions.Timeout as exc:
            raise FetchError("timeout", url, str(exc)) from exc
        except requests.exceptions.RequestException as exc:
            raise FetchError("connection_error", url, str(exc)) from exc
        try:
            body = self._read(resp, url, ROBOTS_MAX_BYTES)
        finally:
            resp.close()
        if resp.status_code >= 400:
            raise FetchError(f"http_{resp.status_code}", url, "token request refused", resp.status_code)
        return Fetched(url, resp.status_code, resp.headers.get("Content-Type", ""), body, dict(resp.headers))
