"""A request thread (post + comments) and the rules that turn it into a candidate pair plan.

Every source (OAuth API, offline dumps, HTML pages) produces :class:`Thread` values, so the pair rules
live in one place: the original is the post's image (the first gallery item in ``gallery_data``
order), edits are images posted in comments by users other than the poster, ranked by score; NSFW,
deleted and removed posts, videos and non-image links are skipped with a named reason.

Dumps and API answers are other people's JSON: every field read here is checked for its type, and
numbers must be finite (JSON readers accept ``NaN``, ``Infinity`` and ``1e999``). A field that is
neither missing nor of its type raises :class:`BadRecord` naming it, which the builder reports as that
record's ``bad_record`` failure: a :class:`Thread` only ever holds well-typed values.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

from ieiw.schemas.rows import text_field

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".gifv", ".gif", ".webm", ".mov")
VIDEO_HOSTS = ("v.redd.it", "youtube.com", "www.youtube.com", "youtu.be", "gfycat.com", "redgifs.com")
GONE = {"[deleted]", "[removed]"}
URL_RE = re.compile(r"https?://[^\s\)\]\}<>\"'|]+")
MEDIA_REF_RE = re.compile(r"!\[(?:img|gif)\]\(([A-Za-z0-9_-]+)\)")


class BadRecord(ValueError):
    """A post or comment with a field of the wrong type, or a number that is not finite.

    ``source``: where the record came from (a file or URL) when the raiser knows better than its caller.
    """

    def __init__(self, message: str, source: str | None = None):
        super().__init__(message)
        self.source = source


def shown(value: Any) -> str:
    """A value for a message: its type and a short repr."""
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _typed(obj: dict[str, Any], key: str, types: type | tuple[type, ...], expected: str) -> Any:
    """``obj[key]`` when missing (None) or of ``types``; BadRecord otherwise."""
    value = obj.get(key)
    if value is None or isinstance(value, types):
        return value
    raise BadRecord(f"{key} is {shown(value)}, expected {expected}")


def _text(obj: dict[str, Any], key: str) -> str | None:
    """A string field, with any lone surrogate (valid JSON ``"\\ud800"``) as U+FFFD: rows hold it, and Arrow
    cannot write a lone surrogate (the unit's whole shard would fail)."""
    return text_field(_typed(obj, key, str, "a string"))


def _mapping(obj: dict[str, Any], key: str) -> dict[str, Any]:
    return _typed(obj, key, dict, "an object") or {}


def _number(obj: dict[str, Any], key: str) -> float | None:
    """A finite number (a JSON number or a numeric string); None when missing or empty."""
    value = obj.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise BadRecord(f"{key} is {shown(value)}, expected a number")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        number = math.nan
    if not math.isfinite(number):
        raise BadRecord(f"{key} is {shown(value)}, not a finite number")
    return number


def _record_id(obj: dict[str, Any], prefix: str) -> str:
    value = obj.get("id") or str(obj.get("name") or "").removeprefix(prefix)
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise BadRecord(f"id is {shown(value)}, expected a string")
    if value == "":  # rows are named by it: two records without one would share a row id
        raise BadRecord("no id (id and name are missing or empty)")
    return text_field(str(value)) or ""


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


def _split(url: str) -> SplitResult | None:
    try:
        parts = urlsplit(url)
        parts.hostname  # noqa: B018  (raises for a malformed host, like urlsplit for "http://[x")
    except ValueError:
        return None
    return parts


def is_video_url(url: str) -> bool:
    parts = _split(url)
    if parts is None:
        return False
    host = (parts.hostname or "").lower()
    return host in VIDEO_HOSTS or parts.path.lower().endswith(VIDEO_EXTENSIONS)


def is_image_url(url: str) -> bool:
    """A direct image link: an image extension, or an image host with no video extension (a URL that does
    not parse is neither)."""
    parts = _split(url)
    if parts is None or parts.scheme not in ("http", "https") or is_video_url(url):
        return False
    path = parts.path.lower()
    if path.endswith(IMAGE_EXTENSIONS):
        return True
    return (parts.hostname or "").lower() in ("i.redd.it", "i.imgur.com") and "." in path.rsplit("/", 1)[-1]


def _media_url(metadata: dict[str, Any], media_id: Any) -> str | None:
    """The full-size URL of one ``media_metadata`` entry, if it is a valid still image."""
    if not isinstance(media_id, str):
        if media_id is None:
            return None
        raise BadRecord(f"media_id is {shown(media_id)}, expected a string")
    meta = _mapping(metadata, media_id)
    if meta.get("status") != "valid" or meta.get("e") not in (None, "Image"):
        return None
    url = _text(_mapping(meta, "s"), "u")
    return unescape_url(url) if url else None


def _list(obj: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """A list of objects (missing: empty)."""
    items = _typed(obj, key, list, "a list") or []
    for item in items:
        if not isinstance(item, dict):
            raise BadRecord(f"an item of {key} is {shown(item)}, expected an object")
    return items


def _link(post: dict[str, Any]) -> str:
    return unescape_url(_text(post, "url_overridden_by_dest") or _text(post, "url") or "")


def post_image_urls(post: dict[str, Any]) -> list[str]:
    """The post's image URLs in order; for a gallery, in ``gallery_data`` order (BadRecord: a bad field)."""
    if post.get("is_gallery") or post.get("gallery_data"):
        metadata = _mapping(post, "media_metadata")
        urls = []
        for item in _list(_mapping(post, "gallery_data"), "items"):
            url = _media_url(metadata, item.get("media_id"))
            if url:
                urls.append(url)
        return urls
    url = _link(post)
    if url and is_image_url(url):
        return [url]
    if post.get("post_hint") == "image":
        for image in _list(_mapping(post, "preview"), "images"):
            src = _text(_mapping(image, "source"), "url")
            if src:
                return [unescape_url(src)]
    return []


def comment_image_urls(comment: dict[str, Any]) -> list[str]:
    """Images in a comment: inline media (``![img](id)`` + ``media_metadata``) and direct links
    (BadRecord: a bad field)."""
    body = _text(comment, "body") or ""
    urls: list[str] = []
    metadata = _mapping(comment, "media_metadata")
    for media_id in MEDIA_REF_RE.findall(body):
        url = _media_url(metadata, media_id)
        if url:
            urls.append(url)
    for raw in URL_RE.findall(body):
        url = unescape_url(raw).rstrip(".,;:!?")
        if is_image_url(url) and url not in urls:
            urls.append(url)
    return urls


def is_gone(text: str | None) -> bool:
    return (text or "").strip() in GONE


def _absolute(permalink: str) -> str:
    return "https://www.reddit.com" + permalink if permalink.startswith("/") else permalink


def comment_from_reddit(c: dict[str, Any]) -> Comment:
    """A :class:`Comment` from a Reddit-shaped comment object (BadRecord: a bad field, named)."""
    if not isinstance(c, dict):
        raise BadRecord(f"a comment is {shown(c)}, expected an object")
    cid = _record_id(c, "t1_")
    try:
        permalink = _text(c, "permalink")
        score = _number(c, "score")
        return Comment(
            id=cid,
            author=_text(c, "author"),
            score=int(score) if score is not None else 0,
            body=_text(c, "body") or "",
            image_urls=tuple(comment_image_urls(c)),
            created_utc=_number(c, "created_utc"),
            permalink=_absolute(permalink) if permalink else None,
        )
    except BadRecord as exc:
        raise BadRecord(f"comment {cid}: {exc}") from None


def thread_from_reddit(
    post: dict[str, Any], comments: Iterable[dict[str, Any]], dataset: str = "reddit", source_file: str | None = None
) -> Thread:
    """Build a :class:`Thread` from Reddit-shaped post and comment objects (``data`` of t3 / t1).

    BadRecord (a ValueError) when a field the crawl reads has the wrong type or is not a finite number.
    """
    if not isinstance(post, dict):
        raise BadRecord(f"the post is {shown(post)}, expected an object")
    pid = _record_id(post, "t3_")
    permalink = _absolute(_text(post, "permalink") or f"/comments/{pid}/")
    url = _link(post)
    is_video = bool(
        post.get("is_video")
        or post.get("post_hint") in ("hosted:video", "rich:video")
        or (url and not post.get("is_self") and is_video_url(url))
    )
    selftext = _text(post, "selftext") or ""
    author = _text(post, "author")
    return Thread(
        dataset=dataset,
        id=pid,
        title=html.unescape(_text(post, "title") or ""),
        body=html.unescape(selftext),
        author=author,
        permalink=permalink,
        created_utc=_number(post, "created_utc"),
        image_urls=tuple(post_image_urls(post)),
        comments=tuple(comment_from_reddit(c) for c in comments),
        over_18=bool(post.get("over_18")),
        removed=bool(post.get("removed_by_category")) or selftext.strip() == "[removed]",
        deleted=author in (None, "[deleted]") or selftext.strip() == "[deleted]",
        is_video=is_video,
        source_file=source_file,
    )


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
