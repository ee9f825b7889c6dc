"""Reddit-shaped API routes for the fixture server, built from the sample threads.

The sample generator describes threads once; here they are served the way oauth.reddit.com answers:
a token endpoint, a paginated listing (``after``), comment trees as ``[post listing, comment
listing]`` with nested ``replies`` and a ``more`` stub, ``/api/morechildren``, and the images.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import urlsplit

from crawl_server import FixtureServer, send, static

from ieiw.samples.crawl import sample_threads

SUB = "PhotoshopRequest"
CLIENT = ("test-client", "test-secret")
TOKEN = "fixture-token"
PAGE_SIZE = 7


def listing(children: list[dict[str, Any]], after: str | None = None) -> dict[str, Any]:
    return {"kind": "Listing", "data": {"after": after, "before": None, "children": children}}


def install_reddit(server: FixtureServer, ratelimit_first_page: bool = True) -> dict[str, Any]:
    """Add the API and image routes; returns the sample description for assertions."""
    b = sample_threads(lambda host, name: f"{server.base}/{host}/{name}")
    for url, (body, ctype) in b.images.items():
        server.routes[urlsplit(url).path] = static(body, ctype)
    posts = b.posts
    by_post: dict[str, list[dict[str, Any]]] = {}
    for c in b.comments:
        by_post.setdefault(c["link_id"][3:], []).append(c)
    comments_by_id = {c["id"]: c for c in b.comments}

    def authorised(h) -> bool:
        if h.headers.get("Authorization") != f"bearer {TOKEN}":
            send(h, 401, b'{"message": "Unauthorized", "error": 401}', "application/json")
            return False
        return True

    def token(h, q):
        expected = "Basic " + base64.b64encode(f"{CLIENT[0]}:{CLIENT[1]}".encode()).decode()
        if h.headers.get("Authorization") != expected:
            send(h, 401, b'{"error": "invalid_client"}', "application/json")
            return
        send(
            h,
            200,
            json.dumps({"access_token": TOKEN, "token_type": "bearer", "expires_in": 86400}).encode(),
            "application/json",
        )

    def new(h, q):
        if not authorised(h):
            return
        after = q.get("after", [None])[0]
        start = 0 if after is None else next(i for i, p in enumerate(posts) if p["name"] == after) + 1
        page = posts[start : start + PAGE_SIZE]
        nxt = page[-1]["name"] if start + PAGE_SIZE < len(posts) else None
        headers = {"X-Ratelimit-Used": "1", "X-Ratelimit-Remaining": "99", "X-Ratelimit-Reset": "300"}
        if ratelimit_first_page and after is None:
            headers.update({"X-Ratelimit-Remaining": "0", "X-Ratelimit-Reset": "1"})
        body = listing([{"kind": "t3", "data": p} for p in page], nxt)
        send(h, 200, json.dumps(body).encode(), "application/json; charset=UTF-8", headers)

    def tree(post_id: str) -> dict[str, Any]:
        """First comment carries the other comments of the post as a reply chain, ending in a more stub."""
        cs = [dict(c, depth=0, replies="") for c in by_post.get(post_id, [])]
        if not cs:
            return listing([])
        head, rest = cs[0], cs[1:]
        if rest:
            nested, stub = rest[:1], rest[1:]
            children = [{"kind": "t1", "data": dict(nested[0], depth=1, parent_id=f"t1_{head['id']}")}]
            if stub:
                children.append(
                    {
                        "kind": "more",
                        "data": {
                            "count": len(stub),
                            "name": "t1__",
                            "id": "_",
                            "parent_id": f"t1_{head['id']}",
                            "depth": 1,
                            "children": [c["id"] for c in stub],
                        },
                    }
                )
            head["replies"] = listing(children)
        return listing([{"kind": "t1", "data": head}])

    def comments_route(post_id: str):
        post = next(p for p in posts if p["id"] == post_id)

        def route(h, q):
            if authorised(h):
                body = [listing([{"kind": "t3", "data": post}]), tree(post_id)]
                send(
                    h,
                    200,
                    json.dumps(body).encode(),
                    "application/json",
                    {"X-Ratelimit-Remaining": "98", "X-Ratelimit-Reset": "300"},
                )

        return route

    def morechildren(h, q):
        if not authorised(h):
            return
        ids = q["children"][0].split(",")
        things = [{"kind": "t1", "data": dict(comments_by_id[i], replies="")} for i in ids]
        send(h, 200, json.dumps({"json": {"errors": [], "data": {"things": things}}}).encode(), "application/json")

    server.routes["/api/v1/access_token"] = token
    server.routes[f"/r/{SUB}/new"] = new
    server.routes["/api/morechildren"] = morechildren
    for p in posts:
        server.routes[f"/r/{SUB}/comments/{p['id']}"] = comments_route(p["id"])
    return {"posts": posts, "comments": b.comments, "images": b.images}
