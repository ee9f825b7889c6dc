"""A request thread (post + comments) and the rules that turn it into a candidate pair plan.

Every source (OAuth API, offline dumps, HTML pages) produces :class:`Thread` values, so the pair rules
live in one place: the original is the post's image (the first gallery item in ``gallery_data``
order), edits are images posted in comments by users other than the poster, ranked by score; NSFW,
deleted and removed posts, videos and non-image links are skipped with a named reason.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".gifv", ".gif", ".webm", ".mov")
VIDEO_HOSTS = ("v.redd.it", "youtube.com", "www.youtube.com", "youtu.be", "gfycat.com", "redgifs.com")
GONE = {"[deleted]", "[removed]"}
URL_RE = re.compile(r"https?://[^\s\)\]\}<>\"'|]+")
MEDIA_REF_RE = re.compile(r"!\[(?:img|gif)\]\(([A-Za-z0-9_-]+)\)")


@dataclass(frozen=True)
class Comment:
    id: str
    author: str | None
    score: int
    body: str
    image_urls: tuple[str, ...]
    created_utc: float | None = None
    permalink: str | None = None


@dataclass(frozen=True)
class Thread:
    """One request: the post and the comments that may hold edits."""

    dataset: str
    id: str
    title: str
    body: str
    author: str | None
    permalink: str
    created_utc: float | None
    image_urls: tuple[str, ...]
    comments: tuple[Comment, ...] = ()
    over_18: bool = False
    removed: bool = False
    deleted: bool = False
    is_video: bool = False
    license: str = "unknown"
    source_file: str | None = None


@dataclass(frozen=True)
class EditCandidate:
    comment: Comment
    url: str
    rank: int


def unescape_url(url: str) -> str:
    """Reddit HTML-escapes URLs (``&amp;``) unless ``raw_json=1``; unescaping a raw URL is a no-op."""
    return html.unescape(url).strip()


def is_video_url(url: str) -> bool:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    return host in VIDEO_HOSTS or parts.path.lower().endswith(VIDEO_EXTENSIONS)


def is_image_url(url: str) -> bool:
    """A direct image link: an image extension, or an image host with no video extension."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or is_video_url(url):
        return False
    path = parts.path.lower()
    if path.endswith(IMAGE_EXTENSIONS):
        return True
    return (parts.hostname or "").lower() in ("i.redd.it", "i.imgur.com") and "." in path.rsplit("/", 1)[-1]


def _media_url(meta: dict[str, Any]) -> str | None:
    """The full-size URL of one ``media_metadata`` entry, if it is a valid still image."""
    if meta.get("status") != "valid" or meta.get("e") not in (None, "Image"):
        return None
    source = meta.get("s") or {}
    url = source.get("u")
    return unescape_url(url) if url else None


def post_image_urls(post: dict[str, Any]) -> list[str]:
    """The post's image URLs in order; for a gallery, in ``gallery_data`` order."""
    if post.get("is_gallery") or post.get("gallery_data"):
        metadata = post.get("media_metadata") or {}
        urls = []
        for item in (post.get("gallery_data") or {}).get("items", []):
            url = _media_url(metadata.get(item.get("media_id"), {}))
            if url:
                urls.append(url)
        return urls
    url = unescape_url(post.get("url_overridden_by_dest") or post.get("url") or "")
    if url and is_image_url(url):
        return [url]
    if post.get("post_hint") == "image":
        for image in (post.get("preview") or {}).get("images", []):
            src = (image.get("source") or {}).get("url")
            if src:
                return [unescape_url(src)]
    return []


def comment_image_urls(comment: dict[str, Any]) -> list[str]:
    """Images in a comment: inline media (``![img](id)`` + ``media_metadata``) and direct links."""
    body = comment.get("body") or ""
    urls: list[str] = []
    metadata = comment.get("media_metadata") or {}
    for media_id in MEDIA_REF_RE.findall(body):
        url = _media_url(metadata.get(media_id, {}))
        if url:
            urls.append(url)
    for raw in URL_RE.findall(body):
        url = unescape_url(raw).rstrip(".,;:!?")
        if is_image_url(url) and url not in urls:
            urls.append(url)
    return urls


def is_gone(text: str | None) -> bool:
    return (text or "").strip() in GONE


def thread_from_reddit(
    post: dict[str, Any], comments: Iterable[dict[str, Any]], dataset: str = "reddit", source_file: str | None = None
) -> Thread:
    """Build a :class:`Thread` from Reddit-shaped post and comment objects (``data`` of t3 / t1)."""
    permalink = post.get("permalink") or f"/comments/{post.get('id')}/"
    if permalink.startswith("/"):
        permalink = "https://www.reddit.com" + permalink
    url = unescape_url(post.get("url_overridden_by_dest") or post.get("url") or "")
    is_video = bool(
        post.get("is_video")
        or post.get("post_hint") in ("hosted:video", "rich:video")
        or (url and not post.get("is_self") and is_video_url(url))
    )
    parsed = []
    for c in comments:
        cid = c.get("id") or str(c.get("name", "")).removeprefix("t1_")
        cpermalink = c.get("permalink")
        if cpermalink and cpermalink.startswith("/"):
            cpermalink = "https://www.reddit.com" + cpermalink
        parsed.append(
            Comment(
                id=str(cid),
                author=c.get("author"),
                score=int(c.get("score") or 0),
                body=c.get("body") or "",
                image_urls=tuple(comment_image_urls(c)),
                created_utc=_float(c.get("created_utc")),
                permalink=cpermalink,
            )
        )
    return Thread(
        dataset=dataset,
        id=str(post.get("id") or str(post.get("name", "")).removeprefix("t3_")),
        title=html.unescape(post.get("title") or ""),
        body=html.unescape(post.get("selftext") or ""),
        author=post.get("author"),
        permalink=permalink,
        created_utc=_float(post.get("created_utc")),
        image_urls=tuple(post_image_urls(post)),
        comments=tuple(parsed),
        over_18=bool(post.get("over_18")),
        removed=bool(post.get("removed_by_category")) or (post.get("selftext") or "").strip() == "[removed]",
        deleted=post.get("author") in (None, "[deleted]") or (post.get("selftext") or "").strip() == "[deleted]",
        is_video=is_video,
        source_file=source_file,
    )


def _float(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def skip_reason(thread: Thread) -> tuple[str, str] | None:
    """(reason, message) when the post itself cannot give pairs, else None."""
    if thread.over_18:
        return "over_18", "post is marked over_18"
    if thread.deleted:
        return "deleted", "post or its author was deleted"
    if thread.removed:
        return "removed", "post was removed by moderators"
    if thread.is_video:
        return "video", "post links a video"
    if not thread.image_urls:
        return "not_image", "post has no direct image (self post, link, or no valid gallery item)"
    return None


def rank_edits(thread: Thread, min_score: int | None = None) -> list[EditCandidate]:
    """Comment images by users other than the poster, best score first (ties: older, then id)."""
    poster = (thread.author or "").lower()
    eligible = []
    for c in thread.comments:
        if not c.image_urls or is_gone(c.body) or c.author in (None, "[deleted]", "AutoModerator"):
            continue
        if c.author.lower() == poster:
            continue
        if min_score is not None and c.score < min_score:
            continue
        eligible.append(c)
    eligible.sort(key=lambda c: (-c.score, c.created_utc or 0.0, c.id))
    return [EditCandidate(c, c.image_urls[0], i) for i, c in enumerate(eligible)]
