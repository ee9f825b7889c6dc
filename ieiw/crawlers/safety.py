"""Refuse URLs that point inside the machine or its network (SSRF), before any connection is made.

Every hop (the first URL and each redirect) is checked: the host is resolved with the system
resolver and every address it resolves to must be public. A private, loopback, link-local,
reserved, multicast or otherwise non-global address is refused unless the exact ``host:port`` is
allow-listed in the config (tests allow only their loopback fixture server).

urllib3 resolves the name again when it connects, so a DNS answer that changes between the check
and the connect (DNS rebinding) would slip through the pre-check; :class:`SafeAdapter` closes that
gap by checking the connected socket's peer address and dropping the socket before any byte of the
request is sent (a TCP handshake is the only traffic such a host ever sees).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NewConnectionError


class FetchError(Exception):
    """A URL could not be fetched; ``reason`` is short and stable (the stats count by it)."""

    def __init__(self, reason: str, url: str, message: str, status: int | None = None):
        super().__init__(f"{url}: {reason}: {message}")
        self.reason = reason
        self.url = url
        self.message = message
        self.status = status


class UrlRefused(FetchError):
    """The URL may not be fetched at all (refused before any connection); a :class:`FetchError`."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}"


def parse_target(url: str) -> Target:
    """Scheme, host and port of an http(s) URL; anything else is refused."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused("bad_url", url, str(exc)) from exc
    if parts.scheme not in ("http", "https"):
        raise UrlRefused("bad_scheme", url, f"scheme {parts.scheme!r} is not http(s)")
    if not parts.hostname:
        raise UrlRefused("bad_url", url, "no host")
    if parts.username or parts.password:
        raise UrlRefused("bad_url", url, "credentials in URL")
    default = 443 if parts.scheme == "https" else 80
    return Target(parts.scheme, parts.hostname.lower(), port or default)


def _is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        # an IPv6 address that carries an IPv4 one reaches that one: ::ffff:a.b.c.d, and 6to4's 2002:AABB:CCDD::
        # (a relay or this host's own 6to4 interface delivers it to a.b.c.d); Teredo (2001::/32) is refused whole
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip.sixtofour is not None and not _is_public(ip.sixtofour):
            return False
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_reserved
        or ip.is_multicast
        or ip.is_unspecified
        or not ip.is_global
    )


def is_public_address(address: str) -> bool:
    return _is_public(ipaddress.ip_address(address.split("%", 1)[0]))


def resolve_addresses(host: str, port: int) -> list[str]:
    """All addresses the host resolves to (a literal IP resolves to itself, without DNS)."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    return sorted({info[4][0] for info in infos})


def check_url(url: str, allow_private_hosts: tuple[str, ...] | frozenset[str]) -> Target:
    """Return the target when it may be fetched, raise :class:`UrlRefused` otherwise (no connection)."""
    target = parse_target(url)
    if target.hostport in allow_private_hosts:
        return target
    try:
        addresses = resolve_addresses(target.host, target.port)
    except (socket.gaierror, UnicodeError) as exc:
        raise UrlRefused("dns_error", url, f"cannot resolve {target.host}: {exc}") from exc
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if not _is_public(ip):
            raise UrlRefused(
                "private_address",
                url,
                f"{target.host} resolves to non-public {ip} and {target.hostport} is not allow-listed",
            )
    return target


PEER_REFUSED = "peer address is not public"
_REQUEST_HOOK = threading.local()


def set_request_hook(hook: Callable[[HTTPConnection, bool], None] | None) -> None:
    """For this thread: ``hook(connection, sent)`` is called by a :class:`SafeAdapter` connection before
    each request it sends (``sent`` False; it may raise to refuse) and after (``sent`` True, the socket
    connected). The HTTP client uses it to enforce a fetch's deadline (:mod:`ieiw.crawlers.http`)."""
    _REQUEST_HOOK.hook = hook


def _checked_connection(base: type[HTTPConnection], allow: frozenset[str]) -> type[HTTPConnection]:
    class CheckedConnection(base):  # type: ignore[valid-type, misc]
        def _new_conn(self) -> socket.socket:
            sock = super()._new_conn()
            peer = sock.getpeername()[0]
            if f"{self.host}:{self.port}" not in allow and not is_public_address(peer):
                sock.close()
                raise NewConnectionError(self, f"{PEER_REFUSED}: {self.host} connected to {peer}")
            return sock

        def request(self, *args: Any, **kwargs: Any) -> None:
            hook = getattr(_REQUEST_HOOK, "hook", None)
            if hook is not None:
                hook(self, False)
            super().request(*args, **kwargs)
            if hook is not None:
                hook(self, True)

    return CheckedConnection


class SafeAdapter(HTTPAdapter):
    """A requests adapter whose connections verify the peer address after connecting (see module doc)."""

    def __init__(self, allow: frozenset[str], **kwargs: Any):
        self._allow = allow  # set before super().__init__, which builds the pool manager
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        http_conn = _checked_connection(HTTPConnection, self._allow)
        https_conn = _checked_connection(HTTPSConnection, self._allow)
        self.poolmanager.pool_classes_by_scheme = {
            "http": type("CheckedHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn}),
            "https": type("CheckedHTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn}),
        }
