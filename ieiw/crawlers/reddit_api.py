"""Reddit's OAuth API as a thread source: listings with ``after``, comment trees, ``more`` stubs.

Credentials come from environment variables (names in the config): an application-only token
(``client_credentials``) or, when a username and password are set, a script app's ``password``
grant. The token is requested lazily, so a rerun served from the cache asks for nothing. After each
network answer the ``X-Ratelimit-Remaining``/``X-Ratelimit-Reset`` headers are obeyed: when fewer
than ``min_remaining`` requests are left in the window, the client sleeps until the reset.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple
from urllib.parse import urlencode

from ieiw.crawlers.config import RedditApiConfig
from ieiw.crawlers.http import FetchError, PoliteSession
from ieiw.crawlers.posts import BadRecord, Thread, shown, thread_from_reddit
from ieiw.schemas.rows import text_field

MORE_BATCH = 100  # /api/morechildren takes at most 100 ids per call
POST_ID = re.compile(r"[0-9A-Za-z_]{1,32}")  # base36 ids; anything else would become part of an API path


class ListingProblem(NamedTuple):
    """A listing child that is not a post with a usable id: reported as that record's ``bad_record``."""

    record_id: str
    url: str  # the listing page it came in
    message: str


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

    def url(self, path: str, params: Mapping[str, Any]) -> str:
        """The URL of an API call (what the cache keys and failures name)."""
        query = urlencode(sorted((k, v) for k, v in params.items() if v is not None))
        return f"{self.config.api_base.rstrip('/')}{path}?{query}"

    def get_json(self, path: str, params: Mapping[str, Any]) -> Any:
        """GET an API path (cached), then obey the rate-limit headers of a network answer."""
        url = self.url(path, params)
        fetched = self.session.get(url, "json", headers=self._auth_headers, robots=False)
        if not fetched.from_cache:
            self._obey_ratelimit(fetched.headers)
        try:  # bytes that are not UTF-8 (one crafted title) spoil their string, not the whole answer
            return json.loads(fetched.body.decode("utf-8", "replace"))
        except ValueError as exc:
            raise FetchError("bad_json", url, f"answer is not JSON: {exc}") from exc
        except RecursionError:  # [[[[...: deeper than the parser goes
            raise FetchError("bad_json", url, "answer is not JSON: nested too deeply") from None

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
        return self.listing()[0]

    def listing(self) -> tuple[list[str], list[ListingProblem]]:
        """Post ids of the subreddit listing, following ``after`` until ``max_posts`` or the end, and the
        children that are not posts with a usable id (each a problem of its own: the other posts are listed).

        FetchError naming the page when a page is not a listing at all (not an object, no list of children,
        an ``after`` that is no name): every later id would come from it."""
        c = self.config
        ids: list[str] = []
        problems: list[ListingProblem] = []
        after: str | None = None
        page = 0
        while len(ids) < c.max_posts:
            path = f"/r/{c.subreddit}/{c.listing}"
            params = {"limit": min(c.page_size, c.max_posts - len(ids)), "after": after, "raw_json": 1}
            data, url = self.get_json(path, params), self.url(path, params)
            listing = data.get("data") if isinstance(data, dict) else None
            children = listing.get("children") if isinstance(listing, dict) else None
            after = listing.get("after") if isinstance(listing, dict) else None
            if not isinstance(children, list) or not (after is None or isinstance(after, str)):
                raise FetchError("bad_listing", url, f"the answer is not a listing of posts: {shown(data)}")
            for i, child in enumerate(children):
                pid, problem = _listed_post(child)
                if problem is not None:
                    problems.append(ListingProblem(pid or f"page {page} child {i}", url, problem))
                elif pid not in ids:
                    ids.append(pid)
            page += 1
            if not after or not children:
                break
        return ids[: c.max_posts], problems

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
            thread = thread_from_reddit(post, comments, "reddit", source_file=_absolute(permalink))
        except BadRecord as exc:
            exc.source = exc.source or url
            raise
        if thread.id != pid:  # its rows would be filed under another post's id
            raise BadRecord(f"the API answer for {pid} is post {thread.id!r}", url)
        return thread


def _listed_post(child: Any) -> tuple[str | None, str | None]:
    """(post id, None) for a listing child that is a post with a usable id; (a name for it, the problem)
    otherwise."""
    if not isinstance(child, dict):
        return None, f"a listing child is {shown(child)}, expected a post (a t3 thing)"
    data = child.get("data")
    raw = data.get("id") if isinstance(data, dict) else None
    name = (text_field(raw) or "")[:64] if isinstance(raw, str) and raw.strip() else None
    if child.get("kind") != "t3" or not isinstance(data, dict):
        return name, f"a listing child is kind {shown(child.get('kind'))} with data {shown(data)}, expected a post"
    if not isinstance(raw, str) or not POST_ID.fullmatch(raw):
        return name, f"a listed post has id {shown(raw)}, expected a base36 id"
    return raw, None


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
