"""The hardening every local page of ieiw shares (``ieiw align-pick``, ``ieiw audit serve``): a stdlib
``ThreadingHTTPServer`` bound to 127.0.0.1 that

- answers only requests addressed to it by name (``Host`` one of its own addresses with its port, else 421):
  a DNS-rebinding page (evil.example resolving to 127.0.0.1) sends its own name and is refused;
- with a ``token`` (``ieiw audit serve``), answers only requests that carry it (``?token=`` in the URL, or an
  ``X-Token`` header) with 403 otherwise, compared in constant time: another local user or a page that
  guesses the port cannot read or label;
- takes POST bodies as JSON only (``Content-Type: application/json``, which a cross-site form cannot send
  without CORS), capped at :data:`MAX_BODY`, with a negative ``Content-Length`` refused;
- sends ``no-store`` and ``nosniff`` on every answer.
"""

from __future__ import annotations

import hmac
import json
import secrets
import signal
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

MAX_BODY = 64 * 1024
LOCAL_NAMES = ("127.0.0.1", "localhost", "::1")


class BadBody(ValueError):
    """A POST body that is refused; ``status`` is the answer's HTTP status."""

    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


class LocalHandler(BaseHTTPRequestHandler):
    """Base of the local pages' handlers (module docstring). Subclasses set ``hosts`` through
    :func:`make_local_server` and, for a token-protected page, ``token``."""

    hosts: frozenset[str] = frozenset()
    token: str | None = None

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the terminal belongs to the person working
        pass

    def _host_allowed(self) -> bool:
        if (self.headers.get("Host") or "").strip().lower() in self.hosts:
            return True
        self._error(HTTPStatus.MISDIRECTED_REQUEST, "unknown Host; open the page by the address it printed")
        return False

    def query(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}

    def _token_allowed(self) -> bool:
        if self.token is None:
            return True
        given = self.query().get("token") or self.headers.get("X-Token") or ""
        if hmac.compare_digest(given.encode(), self.token.encode()):
            return True
        self._error(HTTPStatus.FORBIDDEN, "missing or wrong token; open the page by the address it printed")
        return False

    def allowed(self) -> bool:
        """Host, then token: False when the request was answered with a refusal."""
        return self._host_allowed() and self._token_allowed()

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, value: Any) -> None:
        self._send(status, json.dumps(value).encode())

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def json_body(self) -> Any:
        """The POST body as JSON, or :class:`BadBody` (415 not JSON typed, 400 bad length or JSON, 413 too big)."""
        if self.headers.get_content_type() != "application/json":
            raise BadBody(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send application/json")
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            raise BadBody(HTTPStatus.BAD_REQUEST, "bad Content-Length") from None
        if length < 0:  # read(-1) would read to the end of the stream: past the cap below
            raise BadBody(HTTPStatus.BAD_REQUEST, "bad Content-Length")
        if length > MAX_BODY:
            raise BadBody(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large")
        try:
            return json.loads(self.rfile.read(length) or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BadBody(HTTPStatus.BAD_REQUEST, "body is not JSON") from None

    def do_PUT(self) -> None:
        self._error(HTTPStatus.METHOD_NOT_ALLOWED, "GET or POST only")

    do_DELETE = do_PATCH = do_PUT


def new_token() -> str:
    return secrets.token_urlsafe(24)


def make_local_server(handler: type[LocalHandler], host: str = "127.0.0.1", port: int = 0,
                      **attributes: Any) -> ThreadingHTTPServer:
    """A server whose handler is a subclass of ``handler`` with ``attributes`` set and ``hosts`` = the names it
    answers to (for a loopback bind: 127.0.0.1, localhost and [::1], each with the bound port)."""
    cls = type(handler.__name__, (handler,), dict(attributes))
    server = ThreadingHTTPServer((host, port), cls)
    bound = server.server_address[1]
    names = {host, *LOCAL_NAMES} if host in LOCAL_NAMES else {host}
    cls.hosts = frozenset(f"{(f'[{n}]' if ':' in n and not n.startswith('[') else n).lower()}:{bound}" for n in names)
    server.daemon_threads = True
    return server


def serve_until_stopped(server: ThreadingHTTPServer) -> None:
    """Serve until Ctrl-C or ``kill`` (SIGTERM is turned into the same KeyboardInterrupt, so a caller's
    clean-up after this returns runs either way), then close the socket. Call from the main thread."""

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
