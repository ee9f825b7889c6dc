"""Reddit's OAuth API as a thread source: listings with ``after``, comment trees, ``more`` stubs.

Credentials come from environment variables (names in the config): an application-only token
(``client_credentials``) or, when a username and password are set, a script app's ``password``
grant. The token is requested lazily, so a rerun served from the cache asks for nothing. After each
network answer the ``X-Ratelimit-Remaining``/``X-Ratelimit-Reset`` headers are obeyed: when fewer
than ``min_remaining`` requests are left in the window, the client sleeps until the reset.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode

from ieiw.crawlers.config import RedditApiConfig
from ieiw.crawlers.http import FetchError, PoliteSession
from ieiw.crawlers.posts import BadRecord, Thread, thread_from_reddit

MORE_BATCH = 100  # /api/morechildren takes at most 100 ids per call


class RedditApi:
    def __init__(
        self,
        session: PoliteSession,
        config: RedditApiConfig,
        environ: Mapping[str, str],
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.session = session
        self.config = config
        self.environ = environ
        self._sleep = sleep
        self._token: str | None = None
        self._token_expires = 0.0

    # -- auth and requests ----------------------------------------------------------------------
    def _auth_headers(self) -> dict[str, str]:
        if self._token is None or time.monotonic() > self._token_expires - 60:
            self._token, lifetime = self._request_token()
            self._token_expires = time.monotonic() + lifetime
        return {"Authorization": f"bearer {self._token}"}

    def _request_token(self) -> tuple[str, float]:
        c, env = self.config, self.environ
        client_id, secret = env.get(c.client_id_env), env.get(c.client_secret_env)
        if not client_id or not secret:
            raise FetchError(
                "no_credentials",
                c.token_url,
                f"set {c.client_id_env} and {c.client_secret_env} (Reddit app credentials)",
            )
        user, password = env.get(c.username_env), env.get(c.password_env)
        form = (
            {"grant_type": "password", "username": user, "password": password}
            if user and password
            else {"grant_type": "client_credentials"}
        )
        answer = self.session.post_form(c.token_url, form, auth=(client_id, secret))
        try:
            answer_json = json.loads(answer.body)
            token, lifetime = str(answer_json["access_token"]), float(answer_json.get("expires_in", 3600))
        except (ValueError, KeyError, TypeError) as exc:
            raise FetchError("bad_token", c.token_url, f"no access_token in the answer: {exc!r}") from exc
        return token, lifetime

    def get_json(self, path: str, params: Mapping[str, Any]) -> Any:
        """GET an API path (cached), then obey the rate-limit headers of a network answer."""
        query = urlencode(sorted((k, v) for k, v in params.items() if v is not None))
        url = f"{self.config.api_base.rstrip('/')}{path}?{query}"
        fetched = self.session.get(url, "json", headers=self._auth_headers, robots=False)
        if not fetched.from_cache:
            self._obey_ratelimit(fetched.headers)
        try:
            return json.loads(fetched.body)
        except ValueError as exc:
            raise FetchError("bad_json", url, f"answer is not JSON: {exc}") from exc

    def _obey_ratelimit(self, headers: Mapping[str, str]) -> None:
        lower = {k.lower(): v for k, v in headers.items()}
        try:
            remaining = float(lower["x-ratelimit-remaining"])
            reset = float(lower.get("x-ratelimit-reset", "0"))
        except (KeyError, ValueError):
            return
        if remaining < self.config.min_remaining and reset > 0:
            self._sleep(min(reset, self.config.max_ratelimit_wait_s))

    # -- listings and threads -------------------------------------------------------------------
    def post_ids(self) -> list[str]:
        """Post ids of the subreddit listing, following ``after`` until ``max_posts`` or the end."""
        c = self.config
        ids: list[str] = []
        after: str | None = None
        while len(ids) < c.max_posts:
            data = self.get_json(
                f"/r/{c.subreddit}/{c.listing}",
                {"limit": min(c.page_size, c.max_posts - len(ids)), "after": after, "raw_json": 1},
            )
            listing = data.get("data", {})
            for child in listing.get("children", []):
                if child.get("kind") == "t3" and child.get("data", {}).get("id"):
                    pid = str(child["data"]["id"])
                    if pid not in ids:
                        ids.append(pid)
            after = listing.get("after")
            if not after or not listing.get("children"):
                break
        return ids[: c.max_posts]

    def thread_url(self, pid: str) -> str:
        """The API URL of a thread (without its query), as failures name it."""
        return f"{self.config.api_base.rstrip('/')}/r/{self.config.subreddit}/comments/{pid}"

    def thread(self, pid: str) -> Thread:
        """The post and its whole comment tree (``more`` stubs expanded up to ``max_more_calls``).

        BadRecord (naming the thread's URL) when the answer is not a post listing and a comment listing,
        the post listing is empty, or a field has the wrong type."""
        c = self.config
        url = self.thread_url(pid)
        data = self.get_json(f"/r/{c.subreddit}/comments/{pid}", {"raw_json": 1, "limit": 500})
        try:
            children = data[0]["data"]["children"]
            if not children:
                raise BadRecord(f"the API answer for {pid} has no post (its post listing is empty)", url)
            post = children[0]["data"]
            comment_listing = data[1]
        except (KeyError, IndexError, TypeError) as exc:
            raise BadRecord(f"the API answer for {pid} is not a post and a comment listing: {exc!r}", url) from None
        comments: list[dict[str, Any]] = []
        pending: list[str] = []
        _walk(comment_listing, comments, pending)
        calls = 0
        while pending and calls < c.max_more_calls:
            batch, pending = pending[:MORE_BATCH], pending[MORE_BATCH:]
            more = self.get_json(
                "/api/morechildren",
                {"api_type": "json", "link_id": f"t3_{pid}", "children": ",".join(batch), "raw_json": 1},
            )
            calls += 1
            things = more.get("json", {}).get("data", {}).get("things", [])
            _walk({"kind": "Listing", "data": {"children": things}}, comments, pending)
        permalink = post.get("permalink") if isinstance(post, dict) else None
        if not isinstance(permalink, str) or not permalink:
            permalink = f"/r/{c.subreddit}/comments/{pid}/"
        try:
            return thread_from_reddit(post, comments, "reddit", source_file=_absolute(permalink))
        except BadRecord as exc:
            exc.source = exc.source or url
            raise


def _absolute(permalink: str) -> str:
    return "https://www.reddit.com" + permalink if permalink.startswith("/") else permalink


def _walk(node: Any, out: list[dict[str, Any]], pending: list[str]) -> None:
    """Flatten a comment Listing: t1 comments to ``out``, ids of ``more`` stubs to ``pending``."""
    if not isinstance(node, dict):
        return  # ``replies`` is "" when a comment has none
    listing = node.get("data")
    children = listing.get("children") if isinstance(listing, dict) else None
    for child in children if isinstance(children, list) else ():
        if not isinstance(child, dict) or not isinstance(child.get("data", {}), dict):
            raise BadRecord(f"a comment listing holds {type(child).__name__} {str(child)[:40]!r}, expected a thing")
        kind, data = child.get("kind"), child.get("data", {})
        if kind == "t1":
            out.append(data)
            _walk(data.get("replies"), out, pending)
        elif kind == "more":
            pending.extend(str(x) for x in data.get("children", []) if x not in pending)
