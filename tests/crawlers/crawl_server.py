"""A loopback HTTP server that imitates the sites the crawler talks to, faults included.

Routes map a path (no query) to a handler ``fn(req, query) -> None`` that writes the response.
Every request is logged (method, path, query, headers, monotonic time) so tests assert exactly
what the crawler did, including "nothing at all" on a cached rerun.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Logged:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    t: float
    body: bytes = b""


Route = Callable[["Handler", dict[str, list[str]]], None]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # headers and body go out in two writes: with Nagle's algorithm the body waits for the client's delayed ACK
    # (about 40 ms a request on loopback)
    disable_nagle_algorithm = True
    server: FixtureServer

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        body = b""
        if method == "POST":
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
        self.server.log.append(Logged(method, parts.path, query, dict(self.headers), time.monotonic(), body))
        route = self.server.routes.get(parts.path)
        if route is None:
            send(self, 404, b"not found", "text/plain")
            return
        route(self, query)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass  # the reset route closed the socket under us


class FixtureServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.routes: dict[str, Route] = {}
        self.log: list[Logged] = []
        self.counters: dict[str, int] = {}

    def handle_error(self, request, client_address) -> None:
        pass

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def requests_for(self, path: str) -> list[Logged]:
        return [e for e in self.log if e.path == path]

    def start(self) -> FixtureServer:
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self


def send(
    h: Handler, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None, length: bool = True
) -> None:
    h.send_response(status)
    h.send_header("Content-Type", ctype)
    if length:
        h.send_header("Content-Length", str(len(body)))
    else:
        h.send_header("Connection", "close")
        h.close_connection = True
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.end_headers()
    try:
        h.wfile.write(body)
    except OSError:
        pass


def static(
    body: bytes, ctype: str, status: int = 200, headers: dict[str, str] | None = None, length: bool = True
) -> Route:
    return lambda h, q: send(h, status, body, ctype, headers, length)


def sequence(*routes: Route) -> Route:
    """Serve the routes in turn; the last one repeats."""
    state = {"n": 0}

    def route(h: Handler, q: dict) -> None:
        i = min(state["n"], len(routes) - 1)
        state["n"] += 1
        routes[i](h, q)

    return route


def slow(seconds: float, then: Route) -> Route:
    def route(h: Handler, q: dict) -> None:
        time.sleep(seconds)
        then(h, q)

    return route


def reset(h: Handler, q: dict) -> None:
    """Abort the connection with a TCP RST (SO_LINGER 0) instead of answering."""
    h.close_connection = True
    sock = h.connection
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def redirect(location: str, status: int = 302) -> Route:
    return lambda h, q: send(h, status, b"", "text/plain", {"Location": location})


def trickle(body: bytes, ctype: str, every: float, headers: bool = False, length: bool = True,
            stall_after: int | None = None, stall: float = 0.0) -> Route:
    """Answer one byte at a time, ``every`` seconds apart: the body (after the headers at once), or the
    headers too. ``length`` False: no Content-Length, the body ends when the connection closes.
    ``stall_after``: after that many body bytes at once, wait ``stall`` seconds, then trickle the rest."""

    def route(h: Handler, q: dict) -> None:
        h.close_connection = True
        head = f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\n"
        head += f"Content-Length: {len(body)}\r\n" if length else "Connection: close\r\n"
        head_bytes = (head + "\r\n").encode()
        try:
            slow = head_bytes + body if headers else body
            if not headers:
                h.wfile.write(head_bytes)
            if stall_after is not None:
                h.wfile.write(slow[:stall_after])
                h.wfile.flush()
                time.sleep(stall)
                slow = slow[stall_after:]
            for i in range(len(slow)):
                h.wfile.write(slow[i : i + 1])
                h.wfile.flush()
                time.sleep(every)
        except OSError:
            pass  # the client gave up

    return route
