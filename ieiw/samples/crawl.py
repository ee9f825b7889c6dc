"""Regenerate the bundled offline sample: ``python -m ieiw.samples.crawl``.

Deterministic (fixed seeds): synthetic "photos" (gradients, shapes, texture: enough corners for ORB)
and real derivative edits of them made by cropping, scaling, recolouring and painting, plus a few
posts that must be rejected (an unrelated image, a no-op, an over_18 post, a video, a removed post).
Writes a zstd NDJSON dump of submissions and comments in Reddit's shape and the images into the
replay cache under ``ieiw/crawlers/sample/cache``, keyed by the URLs the dump names.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image


def synthetic_photo(seed: int, width: int = 320, height: int = 240) -> np.ndarray:
    """An RGB uint8 image with a sky gradient, textured ground and random shapes."""
    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3), np.float32)
    top, bottom = rng.uniform(40, 230, 3), rng.uniform(20, 200, 3)
    t = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    img[:] = top * (1 - t) + bottom * t
    horizon = int(height * rng.uniform(0.45, 0.7))
    ground = rng.uniform(30, 160, 3)
    noise = rng.normal(0, 18, (height - horizon, width, 1)).astype(np.float32)
    img[horizon:] = ground + cv2.GaussianBlur(noise, (0, 0), 1.5)[..., None]
    canvas = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(40, 60))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = int(rng.integers(0, 3))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        size = int(rng.integers(5, max(6, width // 8)))
        if kind == 0:
            cv2.circle(canvas, (x, y), size, colour, -1, cv2.LINE_AA)
        elif kind == 1:
            cv2.rectangle(canvas, (x, y), (x + size, y + int(size * rng.uniform(0.5, 1.5))), colour, -1)
        else:
            pts = rng.integers(-size, size, (int(rng.integers(3, 6)), 2)) + np.array([x, y])
            cv2.fillPoly(canvas, [pts.astype(np.int32)], colour, cv2.LINE_AA)
    speckle = rng.normal(0, 4, canvas.shape)
    return np.clip(canvas.astype(np.float32) + speckle, 0, 255).astype(np.uint8)


def paint_patch(img: np.ndarray, seed: int, frac: float = 0.2) -> np.ndarray:
    """A local edit: an object painted over part of the image (a 'remove/replace' style change)."""
    rng = np.random.default_rng(seed)
    out = img.copy()
    h, w = img.shape[:2]
    pw, ph = int(w * frac), int(h * frac)
    x, y = int(rng.integers(0, w - pw)), int(rng.integers(0, h - ph))
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    cv2.ellipse(out, (x + pw // 2, y + ph // 2), (pw // 2, ph // 2), 0, 0, 360, colour, -1, cv2.LINE_AA)
    return out


def recolour_region(img: np.ndarray, box: tuple[float, float, float, float], shift: int = 60) -> np.ndarray:
    """A local edit: hue-shift one box (given as fractions x0, y0, x1, y1) of the image."""
    h, w = img.shape[:2]
    x0, y0, x1, y1 = int(box[0] * w), int(box[1] * h), int(box[2] * w), int(box[3] * h)
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    region = hsv[y0:y1, x0:x1].astype(np.int32)
    region[..., 0] = (region[..., 0] + shift // 2) % 180
    region[..., 1] = np.clip(region[..., 1] + 60, 0, 255)
    hsv[y0:y1, x0:x1] = region.astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def crop_scale(img: np.ndarray, box: tuple[float, float, float, float], scale: float) -> np.ndarray:
    """Crop a box (fractions) and rescale it: what editors do when they 'fix the framing too'."""
    h, w = img.shape[:2]
    x0, y0, x1, y1 = int(box[0] * w), int(box[1] * h), int(box[2] * w), int(box[3] * h)
    crop = img[y0:y1, x0:x1]
    size = (max(1, int(crop.shape[1] * scale)), max(1, int(crop.shape[0] * scale)))
    return cv2.resize(crop, size, interpolation=cv2.INTER_AREA)


# -- the sample threads ----------------------------------------------------------------------------


SUBREDDIT = "PhotoshopRequest"
BASE_TIME = 1_730_000_000.0
UrlFor = Callable[[str, str], str]  # (host, file name) -> URL


def jpeg(rgb: np.ndarray, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _escape(url: str) -> str:
    """Reddit's default (no ``raw_json``) HTML escaping of URLs."""
    return url.replace("&", "&amp;")


class _Builder:
    """Collects posts, comments and images while the sample threads are described."""

    def __init__(self, url_for: UrlFor):
        self.url_for = url_for
        self.posts: list[dict[str, Any]] = []
        self.comments: list[dict[str, Any]] = []
        self.images: dict[str, tuple[bytes, str]] = {}  # url -> (body, content type)
        self.n = 0

    def image(self, host: str, name: str, rgb: np.ndarray, fmt: str = "jpg") -> str:
        url = self.url_for(host, name)
        self.images[url] = (png(rgb), "image/png") if fmt == "png" else (jpeg(rgb), "image/jpeg")
        return url

    def post(self, pid: str, title: str, body: str = "", url: str | None = None, **extra: Any) -> dict[str, Any]:
        self.n += 1
        post = {
            "id": pid,
            "name": f"t3_{pid}",
            "subreddit": SUBREDDIT,
            "author": f"requester_{pid}",
            "title": title,
            "selftext": body,
            "url": url or f"https://www.reddit.com/r/{SUBREDDIT}/comments/{pid}/",
            "permalink": f"/r/{SUBREDDIT}/comments/{pid}/sample/",
            "score": 10 + self.n,
            "num_comments": 0,
            "created_utc": BASE_TIME + 3600 * self.n,
            "over_18": False,
            "is_self": url is None,
            "is_video": False,
            "post_hint": "image" if url else "self",
            "removed_by_category": None,
        }
        post.update(extra)
        self.posts.append(post)
        return post

    def comment(self, post: dict[str, Any], cid: str, author: str, score: int, body: str, **extra: Any) -> None:
        post["num_comments"] += 1
        self.comments.append(
            {
                "id": cid,
                "name": f"t1_{cid}",
                "link_id": post["name"],
                "parent_id": post["name"],
                "subreddit": SUBREDDIT,
                "author": author,
                "score": score,
                "body": body,
                "created_utc": post["created_utc"] + 60 * (len(self.comments) + 1),
                "permalink": f"{post['permalink']}{cid}/",
                **extra,
            }
        )


def sample_threads(url_for: UrlFor) -> _Builder:
    """The sample: 12 posts whose outcomes cover the pair rules (10 pairs, the rest named failures)."""
    b = _Builder(url_for)
    W, H = 400, 300

    # 1: single image, two real edits (paint; crop + paint), the poster's own image is ignored.
    o = synthetic_photo(101, W, H)
    p = b.post(
        "sp0001",
        "[Paid] Can someone remove the red ball from the grass?",
        "Hi everyone! It's my favourite photo of my dog. Will tip $10 to the best one. Thanks!",
        b.image("i.redd.it", "sp0001.jpg", o),
    )
    b.comment(p, "c0001a", "editor_ann", 25, f"Here you go: {b.image('i.redd.it', 'c0001a.jpg', paint_patch(o, 1))}")
    cropped = crop_scale(paint_patch(o, 2, 0.15), (0.1, 0.1, 0.9, 0.9), 0.9)
    b.comment(p, "c0001b", "editor_bo", 10, f"[cropped a bit]({b.image('i.imgur.com', 'c0001b.jpg', cropped)})")
    b.comment(p, "c0001c", p["author"], 3, f"my try {b.image('i.imgur.com', 'c0001c.jpg', paint_patch(o, 3))}")
    b.comment(p, "c0001d", "lurker", 1, "Cute dog!")

    # 2: a gallery; the original is the first item in gallery_data order, URLs escaped as &amp;.
    g1, g2 = synthetic_photo(102, W, H), synthetic_photo(103, W, H)
    u1 = b.image("preview.redd.it", "gal1.jpg?width=400&format=pjpg&auto=webp&s=aa11", g1)
    u2 = b.image("preview.redd.it", "gal2.jpg?width=400&format=pjpg&auto=webp&s=bb22", g2)
    p = b.post(
        "sp0002",
        "(Free) Please make the door in the second photo blue",
        "Hello! The first photo is the one.",
        "https://www.reddit.com/gallery/sp0002",
        is_gallery=True,
        post_hint=None,
        gallery_data={"items": [{"media_id": "galmid2", "id": 2}, {"media_id": "galmid1", "id": 1}]},
        media_metadata={
            "galmid1": {"status": "valid", "e": "Image", "m": "image/jpg", "s": {"x": W, "y": H, "u": _escape(u1)}},
            "galmid2": {"status": "valid", "e": "Image", "m": "image/jpg", "s": {"x": W, "y": H, "u": _escape(u2)}},
        },
    )
    edit_url = b.image(
        "preview.redd.it", "cmedia2.jpg?width=400&format=pjpg&s=cc33", recolour_region(g2, (0.3, 0.3, 0.6, 0.8))
    )
    b.comment(
        p,
        "c0002a",
        "editor_cy",
        40,
        "![img](cmedia2)\n\nblue door",
        media_metadata={
            "cmedia2": {
                "status": "valid",
                "e": "Image",
                "m": "image/jpg",
                "s": {"x": W, "y": H, "u": _escape(edit_url)},
            }
        },
    )

    # 3: scaled + recoloured edit (good) and an unrelated picture (non_derivative).
    o = synthetic_photo(104, W, H)
    p = b.post(
        "sp0003", "Make the sky purple please", "Thanks in advance, will tip $5", b.image("i.redd.it", "sp0003.jpg", o)
    )
    b.comment(
        p,
        "c0003a",
        "editor_di",
        12,
        b.image("i.redd.it", "c0003a.jpg", recolour_region(cv2.resize(o, (320, 240)), (0.0, 0.0, 1.0, 0.4))),
    )
    b.comment(p, "c0003b", "troll_ed", 30, f"lol {b.image('i.imgur.com', 'c0003b.jpg', synthetic_photo(999, W, H))}")

    # 4: a no-op (re-saved original) and a crop + recolour (good).
    o = synthetic_photo(105, W, H)
    p = b.post(
        "sp0004",
        "[Paid] Could you change the colour of the car to green? $20",
        "",
        b.image("i.redd.it", "sp0004.jpg", o),
    )
    b.comment(p, "c0004a", "editor_fu", 50, b.image("i.redd.it", "c0004a.jpg", o))
    b.comment(
        p,
        "c0004b",
        "editor_ga",
        20,
        b.image(
            "i.imgur.com",
            "c0004b.png",
            recolour_region(crop_scale(o, (0.15, 0.05, 0.95, 0.85), 1.0), (0.2, 0.3, 0.6, 0.7)),
            "png",
        ),
    )

    # 5-8: posts the rules skip (NSFW, video, removed, self post without an image).
    o = synthetic_photo(106, W, H)
    p = b.post("sp0005", "Remove the tattoo", "", b.image("i.redd.it", "sp0005.jpg", o), over_18=True)
    b.comment(p, "c0005a", "editor_hu", 5, b.image("i.redd.it", "c0005a.jpg", paint_patch(o, 5)))
    p = b.post("sp0006", "Stabilise this clip", "", "https://v.redd.it/sp0006", is_video=True, post_hint="hosted:video")
    p = b.post(
        "sp0007",
        "[removed]",
        "[removed]",
        b.image("i.redd.it", "sp0007.jpg", synthetic_photo(107, W, H)),
        removed_by_category="moderator",
    )
    p = b.post("sp0008", "How do I learn Photoshop?", "Any tutorials?")
    b.comment(p, "c0008a", "helper", 3, "Try the official docs.")

    # 9: an edit that changes everything (global recolour) and a good one.
    o = synthetic_photo(109, W, H)
    p = b.post(
        "sp0009",
        "Can someone remove the blue box on the left?",
        "Hey guys\nPaying $15 via PayPal",
        b.image("i.redd.it", "sp0009.jpg", o),
    )
    b.comment(p, "c0009a", "editor_iv", 33, b.image("i.redd.it", "c0009a.jpg", recolour_region(o, (0, 0, 1, 1), 90)))
    b.comment(p, "c0009b", "editor_jo", 8, b.image("i.redd.it", "c0009b.jpg", paint_patch(o, 9, 0.25)))

    # 10: a good edit and one whose comment is on the sample takedown list.
    o = synthetic_photo(110, W, H)
    p = b.post("sp0010", "Please add a sun to the sky", "", b.image("i.redd.it", "sp0010.jpg", o))
    b.comment(p, "c0010a", "editor_ka", 15, b.image("i.redd.it", "c0010a.jpg", paint_patch(o, 10, 0.12)))
    b.comment(p, "c0010b", "editor_lu", 9, b.image("i.redd.it", "c0010b.jpg", paint_patch(o, 11, 0.12)))

    # 11: two good edits, one scaled down.
    o = synthetic_photo(111, W, H)
    p = b.post(
        "sp0011",
        "[Paid] Swap the colour of the shed roof",
        "Hi! Just the roof please, nothing else.",
        b.image("i.redd.it", "sp0011.jpg", o),
    )
    b.comment(
        p, "c0011a", "editor_mo", 21, b.image("i.redd.it", "c0011a.jpg", recolour_region(o, (0.5, 0.2, 0.9, 0.55)))
    )
    b.comment(
        p,
        "c0011b",
        "editor_ny",
        19,
        b.image(
            "i.redd.it", "c0011b.jpg", cv2.resize(paint_patch(o, 12, 0.2), (300, 225), interpolation=cv2.INTER_AREA)
        ),
    )

    # 12: a PNG edit with a tight crop.
    o = synthetic_photo(112, W, H)
    p = b.post("sp0012", "Remove the stuff in the bottom right corner", "", b.image("i.redd.it", "sp0012.jpg", o))
    b.comment(
        p,
        "c0012a",
        "editor_ol",
        7,
        b.image("i.imgur.com", "c0012a.png", crop_scale(paint_patch(o, 13, 0.18), (0.05, 0.1, 0.95, 0.95), 1.0), "png"),
    )
    return b


def small_threads(url_for: UrlFor, width: int = 64, height: int = 48) -> _Builder:
    """Four small threads, one of each shape the readers parse, every edit a pair: a direct image with two
    edits (a bare link and a markdown PNG link), a gallery with an inline-media edit, an image post known
    only by its preview, and a post with the poster's own try and a comment without an image (both
    ignored). The fuzz suite's valid source: cheap enough to build thousands of times."""
    b = _Builder(url_for)
    o = synthetic_photo(201, width, height)
    p = b.post("sm0001", "[Paid] Please remove the red ball", "Thanks! Will tip $5",
               b.image("i.redd.it", "sm0001.jpg", o))
    b.comment(p, "d0001a", "editor_ann", 12, f"Here you go: {b.image('i.redd.it', 'd0001a.jpg', paint_patch(o, 1))}")
    b.comment(p, "d0001b", "editor_bo", 4,
              f"[removed the ball]({b.image('i.imgur.com', 'd0001b.png', paint_patch(o, 2, 0.15), 'png')})")

    g1, g2 = synthetic_photo(202, width, height), synthetic_photo(203, width, height)
    u1 = b.image("preview.redd.it", "smgal1.jpg?width=64&format=pjpg&s=aa11", g1)
    u2 = b.image("preview.redd.it", "smgal2.jpg?width=64&format=pjpg&s=bb22", g2)
    p = b.post(
        "sm0002", "(Free) Make the door blue", "The first photo please.", "https://www.reddit.com/gallery/sm0002",
        is_gallery=True, post_hint=None,
        gallery_data={"items": [{"media_id": "smmid2", "id": 2}, {"media_id": "smmid1", "id": 1}]},
        media_metadata={
            "smmid1": {"status": "valid", "e": "Image", "m": "image/jpg",
                       "s": {"x": width, "y": height, "u": _escape(u1)}},
            "smmid2": {"status": "valid", "e": "Image", "m": "image/jpg",
                       "s": {"x": width, "y": height, "u": _escape(u2)}},
        },
    )
    edit = b.image("preview.redd.it", "smedit2.jpg?width=64&s=cc33", recolour_region(g2, (0.3, 0.3, 0.6, 0.8)))
    b.comment(p, "d0002a", "editor_cy", 30, "![img](smedia2)\n\nblue door",
              media_metadata={"smedia2": {"status": "valid", "e": "Image", "m": "image/jpg",
                                          "s": {"x": width, "y": height, "u": _escape(edit)}}})

    o = synthetic_photo(204, width, height)
    preview = b.image("preview.redd.it", "sm0003.jpg?auto=webp&s=dd44", o)
    p = b.post("sm0003", "Make the sky purple please", "", "https://imgur.com/a/sm0003",
               preview={"images": [{"source": {"url": _escape(preview), "width": width, "height": height}}]})
    b.comment(p, "d0003a", "editor_di", 9,
              b.image("i.redd.it", "d0003a.jpg", recolour_region(o, (0.0, 0.0, 1.0, 0.4))))

    o = synthetic_photo(205, width, height)
    p = b.post("sm0004", "Can someone add a sun to the sky?", "", b.image("i.redd.it", "sm0004.jpg", o))
    b.comment(p, "d0004a", "editor_ka", 15, b.image("i.redd.it", "d0004a.jpg", paint_patch(o, 10, 0.12)))
    b.comment(p, "d0004b", p["author"], 20, f"my try {b.image('i.imgur.com', 'd0004b.jpg', paint_patch(o, 11))}")
    b.comment(p, "d0004c", "lurker", 1, "Nice photo!")
    return b


SAMPLE_TAKEDOWN = "# ids or URLs never to build again (one a line)\nt1_c0010b\n"


def write_sample(out: Path) -> None:
    """Write dump files, the replay cache and the takedown list of the bundled sample into ``out``."""
    from ieiw.crawlers.cache import ResponseCache
    from ieiw.crawlers.dumps import write_ndjson_zst

    b = sample_threads(lambda host, name: f"https://{host}/{name}")
    if (out / "cache").exists():
        shutil.rmtree(out / "cache")
    out.mkdir(parents=True, exist_ok=True)
    write_ndjson_zst(out / "submissions.ndjson.zst", b.posts)
    write_ndjson_zst(out / "comments.ndjson.zst", b.comments)
    cache = ResponseCache(out / "cache")
    for url, (body, ctype) in sorted(b.images.items()):
        cache.put(url, 200, ctype, body, fetched_at=BASE_TIME)
    (out / "takedown.txt").write_text(SAMPLE_TAKEDOWN)


if __name__ == "__main__":
    write_sample(Path(__file__).resolve().parent / "sample")
