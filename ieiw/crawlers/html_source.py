"""HTML thread pages as a thread source, parsed with BeautifulSoup and a per-site selector config.

For forums without an API or dumps. Pages are fetched through the polite session with robots.txt
respected. Each site names CSS selectors for the title, body, original image and the edits (one
element per edit, with image/author/score selectors relative to it), so adding a site is config,
not code.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any
from urllib.parse import urljoin

from bs4 import BeautifulSoup, Tag

from ieiw.crawlers.config import HtmlSiteConfig
from ieiw.crawlers.http import PoliteSession
from ieiw.crawlers.posts import BadRecord, Comment, Thread, is_image_url, is_video_url
from ieiw.schemas.rows import stable_hash

INT_RE = re.compile(r"-?\d[\d,]*")


def _text(el: Tag | None) -> str:
    return el.get_text(" ", strip=True) if el is not None else ""


def _link(el: Tag | None, base: str) -> str | None:
    """The URL an <img> shows (src, else the first srcset entry) or an <a> points to."""
    if el is None:
        return None
    raw: Any = el.get("src") or el.get("data-src") or el.get("href")
    if not raw and el.get("srcset"):
        raw = str(el.get("srcset")).split(",")[0].strip().split(" ")[0]
    return urljoin(base, str(raw)) if raw else None


def _score(el: Tag | None) -> int:
    m = INT_RE.search(_text(el))
    return int(m.group().replace(",", "")) if m else 0


def _time(el: Tag | None) -> float | None:
    """An epoch or ISO time; None when there is none; BadRecord for a number that is not finite ("NaN")."""
    if el is None:
        return None
    raw = str(el.get("datetime") or _text(el)).strip()
    try:
        value = float(raw)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise BadRecord(f"the created time is {raw!r}, not a finite number")
        return value
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class HtmlSource:
    def __init__(self, session: PoliteSession, site: HtmlSiteConfig):
        self.session = session
        self.site = site

    def parse(self, url: str, html: bytes | str) -> Thread:
        """A :class:`Thread` from one page; ValueError when the page has no title (wrong selectors)."""
        sel = self.site.selectors
        soup = BeautifulSoup(html, "html.parser")
        title = _text(soup.select_one(sel.title))
        if not title:
            raise ValueError(f"{url}: no title found with selector {sel.title!r}")
        original = _link(soup.select_one(sel.original_image), url)
        image_urls = (original,) if original and is_image_url(original) else ()
        comments = []
        for n, el in enumerate(soup.select(sel.edit)):
            image = _link(el.select_one(sel.edit_image), url)
            if not image or not is_image_url(image):
                continue
            cid = str(el.get("id") or f"e{n}-{stable_hash(image, length=8)}")
            comments.append(
                Comment(
                    id=cid,
                    author=_text(el.select_one(sel.edit_author)) if sel.edit_author else None,
                    score=_score(el.select_one(sel.edit_score)) if sel.edit_score else 0,
                    body=_text(el),
                    image_urls=(image,),
                    permalink=f"{url}#{cid}",
                )
            )
        return Thread(
            dataset=self.site.name,
            id=stable_hash(self.site.name, url, length=12),
            title=title,
            body=_text(soup.select_one(sel.body)) if sel.body else "",
            author=_text(soup.select_one(sel.author)) if sel.author else None,
            permalink=url,
            created_utc=_time(soup.select_one(sel.created)) if sel.created else None,
            image_urls=image_urls,
            comments=tuple(comments),
            over_18=bool(sel.over_18 and soup.select_one(sel.over_18)),
            is_video=bool(original and is_video_url(original)),
            license=self.site.license,
            source_file=url,
        )

    def thread(self, url: str) -> Thread:
        fetched = self.session.get(url, "html", robots=True)
        return self.parse(url, fetched.body)
