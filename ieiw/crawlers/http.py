"""The polite, safe HTTP client every crawler source goes through.

- retries with backoff and ``Retry-After`` honoured: urllib3 ``Retry`` mounted on a requests adapter;
- one request per ``min_interval_s`` per host, connect/read timeouts, a maximum body size, and a
  content-type check for what the caller expects;
- a deadline per fetch (``fetch_timeout_s``): redirects, retries, their waits, the headers and the whole
  body together. Read timeouts bound each socket read, not the body: a server sending a byte every
  second would hold a worker as long as it likes. A timer marks the fetch expired and gives the sockets
  it uses a near-zero timeout, so the next read fails (``timeout``) instead of waiting for more bytes;
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
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib import robotparser
from urllib.parse import urljoin, urlsplit

import requests
from urllib3.exceptions import ReadTimeoutError
from urllib3.util.retry import Retry

from ieiw.crawlers.cache import ResponseCache
from ieiw.crawlers.config import HttpConfig
from ieiw.crawlers.safety import (
    PEER_REFUSED,
    FetchError,
    SafeAdapter,
    check_url,
    parse_target,
    set_request_hook,
)
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


STOPPED_S = 0.01  # the socket timeout of a fetch past its deadline: its next read fails at once
_DEADLINE_LOCK = threading.Lock()  # between a fetch's timer and the connections it (or another) uses
_CURRENT = threading.local()  # the deadline of the fetch this thread is running


class Deadline:
    """The deadline of one fetch: the sockets its requests went out on, and whether it has passed.

    ``expire`` runs on a timer thread: it gives every socket still serving this fetch a timeout of
    ``STOPPED_S``. A read already waiting finishes (at the next byte, or at the read timeout), the next
    one fails with a read timeout. The socket is kept, not just its connection: http.client detaches it
    from the connection for a body that ends when the connection closes. A connection counts as this
    fetch's from the request it sends for it until another fetch sends one on it, so a pooled
    connection is never stopped for someone else.
    """

    def __init__(self, url: str, seconds: float):
        self.url = url
        self.seconds = seconds
        self.at: float | None = None  # set by ``arm``, at the first request (not in the rate limit's queue)
        self.expired = False
        self.sockets: list[tuple[Any, Any]] = []  # (connection, the socket its request went out on)
        self._timer: threading.Timer | None = None

    def arm(self) -> None:
        """Start the clock (once): the timer expires the fetch ``seconds`` from now."""
        if self._timer is None:
            self.at = time.monotonic() + self.seconds
            self._timer = threading.Timer(self.seconds, self.expire)
            self._timer.daemon = True
            self._timer.start()

    def remaining(self) -> float:
        if self.expired:
            return 0.0
        return self.seconds if self.at is None else self.at - time.monotonic()

    def passed(self) -> bool:
        return self.remaining() <= 0

    def error(self, url: str | None = None, status: int | None = None) -> FetchError:
        message = f"fetch took longer than fetch_timeout_s={self.seconds:g}"
        return FetchError("timeout", url or self.url, message, status)

    def expire(self) -> None:
        with _DEADLINE_LOCK:
            self.expired = True
            for conn, sock in self.sockets:
                if getattr(conn, "ieiw_deadline", None) is self:
                    _stop(sock)

    def on_request(self, conn: Any, sent: bool) -> None:
        """The connection hook (:func:`ieiw.crawlers.safety.set_request_hook`): before a request the
        connection becomes this fetch's (or the request is refused, past the deadline); after it, its
        socket is watched."""
        with _DEADLINE_LOCK:
            conn.ieiw_deadline = self
            sock = getattr(conn, "sock", None)
            if sent and sock is not None:
                self.sockets.append((conn, sock))
            if self.passed():
                if not sent:
                    raise self.error()
                _stop(sock)

    def release(self) -> None:
        """The fetch (or one hop of it) is over: its connections, back in the pool, are no longer watched."""
        with _DEADLINE_LOCK:
            for conn, _sock in self.sockets:
                if getattr(conn, "ieiw_deadline", None) is self:
                    conn.ieiw_deadline = None
            self.sockets.clear()


def _stop(sock: Any) -> None:
    if sock is not None:
        try:
            sock.settimeout(STOPPED_S)
        except OSError:
            pass  # already closed


@contextmanager
def fetch_deadline(url: str, seconds: float) -> Iterator[Deadline]:
    """Run one fetch under a deadline (started by ``Deadline.arm``): a timer expires it, the connections
    of this thread report their requests to it."""
    deadline = Deadline(url, seconds)
    previous = getattr(_CURRENT, "deadline", None)
    _CURRENT.deadline = deadline
    set_request_hook(deadline.on_request)
    try:
        yield deadline
    finally:
        if deadline._timer is not None:
            deadline._timer.cancel()
        deadline.release()
        _CURRENT.deadline = previous
        set_request_hook(previous.on_request if previous is not None else None)


def _retry(**kw: Any) -> Retry:
    """urllib3 ``Retry`` whose waits (backoff, Retry-After) end the fetch with ``timeout`` when they would
    outlast its deadline. ``retry_after_max`` (the cap on a server's Retry-After) is a newer argument,
    so on an older urllib3 the cap is applied by the subclass instead."""
    cap: list[float] = []

    class DeadlineRetry(Retry):
        def parse_retry_after(self, retry_after: str) -> float:
            seconds = super().parse_retry_after(retry_after)
            return min(cap[0], seconds) if cap else seconds

        def sleep(self, response: Any = None) -> None:
            deadline: Deadline | None = getattr(_CURRENT, "deadline", None)
            if deadline is not None:
                wait = self.get_retry_after(response) if response is not None else None
                if wait is None or not self.respect_retry_after_header:
                    wait = self.get_backoff_time()
                if wait >= deadline.remaining():
                    raise deadline.error()
            super().sleep(response)

    try:
        return DeadlineRetry(**kw)
    except TypeError:
        cap.append(float(kw.pop("retry_after_max")))
        return DeadlineRetry(**kw)


@dataclass(frozen=True)
class Fetched:
    url: str
    status: int
    content_type: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    from_cache: bool = False


Validator = Callable[[bytes, str], None]  # raises FetchError when the body is unusable


AUTH_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})


def redirect_keeps_auth(first_url: str, next_url: str) -> bool:
    """Whether a redirect hop from ``first_url`` (the URL the caller asked for) to ``next_url`` may carry
    the caller's credentials (the OAuth bearer token): only to the same host and port, and never from https
    to anything else. requests' own ``rebuild_auth`` would keep the token on an https->http downgrade of
    the same host; redirects are followed by hand here, so this is the rule that applies."""
    first, nxt = urlsplit(first_url), urlsplit(next_url)
    if (first.hostname or "").lower() != (nxt.hostname or "").lower():
        return False
    first_scheme, next_scheme = first.scheme.lower(), nxt.scheme.lower()
    if first_scheme == "https" and next_scheme != "https":
        return False
    default = {"http": 80, "https": 443}
    try:
        first_port = first.port or default.get(first_scheme)
        next_port = nxt.port or default.get(next_scheme)
    except ValueError:
        return False
    if (first_scheme, next_scheme) == ("http", "https"):  # an upgrade: only between the default ports
        return (first_port, next_port) == (80, 443)
    return first_port == next_port


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
        20 MB HTML page served instead of an image costs only its headers. All hops together, with
        their retries and bodies, have ``fetch_timeout_s``.
        """
        with fetch_deadline(url, self.config.fetch_timeout_s) as deadline:
            return self._send_hops(url, headers, max_bytes, robots, kind, deadline)

    def _send_hops(
        self, url: str, headers: Mapping[str, str], max_bytes: int, robots: bool, kind: Kind, deadline: Deadline
    ) -> Fetched:
        current = url
        hop_headers = dict(headers)
        for _hop in range(self.config.max_redirects + 1):
            self._check(current)
            if robots and self.config.respect_robots and not self.robots_allows(current):
                raise FetchError("robots_disallowed", current, "robots.txt disallows this URL for our User-Agent")
            if current != url and not redirect_keeps_auth(url, current):
                # never leak credentials to another host or over plain http; once dropped, they stay
                # dropped for the later hops (a hop back to the first URL's host does not get them again)
                hop_headers = {k: v for k, v in hop_headers.items() if k.lower() not in AUTH_HEADERS}
            self._wait_turn(parse_target(current).hostport)
            deadline.arm()  # from the first request on: the rate limit's queue is not the server's doing
            if deadline.passed():
                raise deadline.error(current)
            resp = self._get(current, hop_headers, deadline)
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
                    body = self._read(resp, current, max_bytes, deadline)
                return Fetched(
                    url=url,
                    status=resp.status_code,
                    content_type=resp.headers.get("Content-Type", ""),
                    body=body,
                    headers=dict(resp.headers),
                )
            finally:
                deadline.release()  # before the connection goes back to the pool
                resp.close()
        raise FetchError("too_many_redirects", url, f"more than {self.config.max_redirects} redirects")

    def _get(self, url: str, headers: Mapping[str, str], deadline: Deadline) -> requests.Response:
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
        except requests.exceptions.RequestException as exc:
            if deadline.passed():
                raise deadline.error(url) from exc
            raise self._fetch_error(exc, url) from exc

    def _fetch_error(self, exc: requests.exceptions.RequestException, url: str) -> FetchError:
        """The FetchError of a request that failed (after its retries)."""
        retries = self.config.retries
        if isinstance(exc, requests.exceptions.Timeout):
            return FetchError("timeout", url, f"timed out after {retries} retries: {exc}")
        if isinstance(exc, requests.exceptions.ConnectionError):
            cause = exc.args[0] if exc.args else None
            if isinstance(getattr(cause, "reason", None), ReadTimeoutError):
                return FetchError("timeout", url, f"timed out after {retries} retries: {cause}")
            if PEER_REFUSED in str(exc):
                return FetchError("private_address", url, f"refused after connecting: {cause}")
            return FetchError("connection_error", url, f"after {retries} retries: {exc}")
        return FetchError("request_error", url, str(exc))

    def _read(self, resp: requests.Response, url: str, max_bytes: int, deadline: Deadline) -> bytes:
        """Read the body, refusing it as soon as it is known to exceed ``max_bytes`` or the fetch's deadline
        has passed (checked after every chunk; the deadline's timer also cuts a read short)."""
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
                if deadline.passed():
                    raise deadline.error(url, resp.status_code)
                chunks.append(chunk)
        except requests.exceptions.RequestException as exc:
            # requests reports a read timeout while streaming as a ConnectionError around urllib3's
            # ReadTimeoutError: both are timeouts
            cause = exc.args[0] if exc.args else None
            if deadline.passed():
                raise deadline.error(url, resp.status_code) from exc
            timed_out = isinstance(exc, requests.exceptions.Timeout) or isinstance(cause, ReadTimeoutError)
            reason = "timeout" if timed_out else "connection_error"
            raise FetchError(reason, url, f"while reading the body: {exc}", resp.status_code) from exc
        if deadline.passed():  # the body may have ended early because the fetch was stopped
            raise deadline.error(url, resp.status_code)
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
        try:
            urlsplit(url).port  # noqa: B018 - raises for "https://[host" (an unclosed IPv6 bracket) or a bad port
        except ValueError as exc:
            raise FetchError("bad_url", url, f"not a URL: {exc}") from None
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
        with fetch_deadline(url, c.fetch_timeout_s) as deadline:
            deadline.arm()
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
                if deadline.passed():
                    raise deadline.error(url) from exc
                raise FetchError("connection_error", url, str(exc)) from exc
            try:
                body = self._read(resp, url, ROBOTS_MAX_BYTES, deadline)
            finally:
                deadline.release()
                resp.close()
        if resp.status_code >= 400:
            raise FetchError(f"http_{resp.status_code}", url, "token request refused", resp.status_code)
        return Fetched(url, resp.status_code, resp.headers.get("Content-Type", ""), body, dict(resp.headers))
