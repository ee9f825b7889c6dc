"""Configuration of the photoshop-request crawl (pydantic, ``extra="forbid"``).

The defaults build the bundled offline sample in replay-only mode, so ``make build`` on a fresh
machine makes zero network requests. A real crawl points ``dumps`` / ``reddit_api`` / ``html_sites``
at real sources, sets ``http.cache_dir`` to a writable folder, ``http.replay_only`` to false and
``http.contact`` to an address the site operators can write to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ieiw.crawlers.kinds import KindPolicy
from ieiw.schemas.config import BuilderConfig, StrictModel
from ieiw.schemas.registry import register_builder

SAMPLE_DIR = "ieiw/crawlers/sample"


class HttpConfig(StrictModel):
    """Politeness and safety of every request the crawler makes."""

    user_agent: str = "ieiw-crawler/0.1 (+https://github.com/ieiw/ieiw; research dataset builder)"
    contact: str = "ieiw-maintainers@example.org"  # appended to the User-Agent; set your own
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 20.0  # per socket read: a server sending a byte at a time never reaches it
    fetch_timeout_s: float = 120.0  # one fetch in all: hops, retries and their waits, headers and body
    retries: int = 3  # total retries per request (status, read and connect errors together)
    backoff_factor: float = 0.5
    retry_after_max_s: int = 120  # a server asking for a longer wait is capped to this
    retry_statuses: tuple[int, ...] = (429, 500, 502, 503, 504)
    min_interval_s: float = 1.0  # per host: at most one request every this many seconds
    max_body_bytes: int = 20_000_000
    max_image_pixels: int = 50_000_000  # above this a PNG/JPEG header is treated as a decompression bomb
    max_redirects: int = 5
    respect_robots: bool = True
    # "host:port" pairs that may resolve to private/loopback/link-local addresses (tests: the fixture server)
    allow_private_hosts: tuple[str, ...] = ()
    cache_dir: str = f"{SAMPLE_DIR}/cache"
    replay_only: bool = True  # never touch the network; a cache miss is a failure "not_in_cache"


class DumpSourceConfig(StrictModel):
    """Offline dumps in Reddit's JSON shape: one object per line, plain or zstd (``.zst``)."""

    submissions: str
    comments: str
    dataset: str = "reddit"
    subreddit: str | None = "PhotoshopRequest"  # keep only this subreddit (case-insensitive); None keeps all


class RedditApiConfig(StrictModel):
    """The OAuth API. Credentials come from the environment variables named here, never the file."""

    subreddit: str = "PhotoshopRequest"
    listing: Literal["new", "top", "hot"] = "new"
    max_posts: int = 100
    page_size: int = 100
    api_base: str = "https://oauth.reddit.com"
    token_url: str = "https://www.reddit.com/api/v1/access_token"
    client_id_env: str = "REDDIT_CLIENT_ID"
    client_secret_env: str = "REDDIT_CLIENT_SECRET"
    username_env: str = "REDDIT_USERNAME"  # optional: script apps use the password grant
    password_env: str = "REDDIT_PASSWORD"
    min_remaining: float = 2.0  # when X-Ratelimit-Remaining falls below this, wait X-Ratelimit-Reset
    max_ratelimit_wait_s: float = 600.0
    max_more_calls: int = 5  # /api/morechildren calls per thread


class HtmlSelectors(StrictModel):
    """CSS selectors for one site's thread page (BeautifulSoup ``select``)."""

    title: str
    body: str | None = None
    author: str | None = None
    created: str | None = None  # element whose ``datetime`` attribute or text is an ISO time or epoch
    original_image: str  # an <img> (src) or <a> (href)
    edit: str  # one element per edit (a comment); the selectors below are relative to it
    edit_image: str
    edit_author: str | None = None
    edit_score: str | None = None
    over_18: str | None = None  # present -> the thread is NSFW and is skipped


class HtmlSiteConfig(StrictModel):
    """A forum that hosts photoshop requests as HTML thread pages."""

    name: str  # becomes origin.dataset
    pages: tuple[str, ...]  # thread page URLs
    selectors: HtmlSelectors
    license: str = "unknown"


class PairConfig(StrictModel):
    """Turning a post and its comments into candidate pairs."""

    max_edits_per_post: int = 3
    max_candidates_per_post: int = 8  # edits tried (in score order) before giving up on a post
    min_edit_score: int | None = None
    max_instruction_chars: int = 400


class ValidationConfig(StrictModel):
    """Thresholds of the derivative check (see align.py for what each number measures)."""

    work_side: int = 512  # images are compared at this long side
    max_side: int = 1024  # rows store images at most this large
    orb_features: int = 2000
    min_inliers: int = 15
    min_inlier_ratio: float = 0.25
    ransac_reproj_px: float = 4.0
    min_coverage: float = 0.95  # part of the edit the warped original must cover
    pixel_delta_e: float = 18.0  # a pixel counts as changed above this colour distance (Lab)
    min_changed: float = 0.003  # below: no-op
    max_changed: float = 0.85  # above: changes everything
    min_similarity: float = 0.6  # correlation outside the changed area; below: not a derivative
    # Evidence of derivation, measured on the whole aligned pair before the change map excludes anything:
    texture_keypoints: int = 300  # ORB keypoints in the original from which it counts as textured
    structure_side: int = 256  # the structure comparison runs at this long side
    structure_window: float = 3.0  # Gaussian window (pixels at structure_side) of the local correlation
    structure_floor: float = 2.0  # gradient std (grey levels) below which a window carries no structure
    structure_match: float = 0.5  # local correlation of gradient magnitudes from which a window is explained
    min_structure: float = 0.5  # share of the candidate's structure the original explains; below: non_derivative
    min_informative: float = 0.02  # share of the frame with structure below which a flat original is featureless
    flat_delta_e: float = 6.0  # featureless originals: colours (downscaled, Lab) agree below this distance
    min_flat_agreement: float = 0.5  # featureless originals: share of the frame that agrees; below: non_derivative
    max_grade_residual: float = 6.0  # colour-mapping error (grey levels) up to which a change is a grade
    # The edit's kind (ieiw/crawlers/kinds.py; thresholds chosen on the tuning half of bench/crawl_validation.py):
    min_geometry: float = 0.03  # corner shift (share of the long side) from a plain resize: a geometric edit
    min_colour_shift: float = 5.0  # mean Lab distance the whole-image colour mapping moves colours: colour
    detail_side: int = 1024  # detail is compared at the edit's own resolution, capped at this long side
    min_edge_gain: float = 0.15  # |log2| change of the gradient at the strongest edges: resolution
    min_noise_drop: float = 0.8  # log2 drop of the fine detail in flat parts (a denoise): resolution
    detail_blur: float = 4.0  # change-map blur when the detail changed, so sharpened edges are not a region
    min_region: float = 0.0002  # changed regions smaller than this share of the frame are not judged
    new_edge: float = 20.0  # gradient (grey levels per pixel) of an edge the original lacks
    min_new_edges: float = 0.35  # share of a region's outline along edges the original lacks: an overlay...
    flat_std: float = 4.0  # ...when its core (the region less its rim) is flat (3x3 grey std below this)...
    min_flat: float = 0.53  # ...over this share of it: text, stickers, frames
    salvage_collages: bool = True  # a before|after collage yields (original, after panel)
    # What selection does with each kind (re-decided by `ieiw select`; not part of row ids or the crawl's
    # fingerprint, so changing it fetches and validates nothing again):
    kinds: KindPolicy = Field(default_factory=KindPolicy)

    def row_params(self) -> dict[str, Any]:
        """The thresholds that shape a row (part of its id): everything but the selection-time ``kinds``
        policy. The thresholds added with the edit kinds (:data:`KIND_FIELDS`) count only when set away from
        their defaults, so a row keeps the id it had before they existed (takedown lists by row id hold)."""
        data = self.model_dump(mode="json", exclude={"kinds"})
        for name in KIND_FIELDS:
            if data[name] == type(self).model_fields[name].default:
                del data[name]
        return data


# The thresholds of the edit kinds (schema v3); see ValidationConfig.row_params.
KIND_FIELDS = ("min_geometry", "min_colour_shift", "detail_side", "min_edge_gain", "min_noise_drop", "detail_blur",
               "min_region", "new_edge", "min_new_edges", "flat_std", "min_flat", "salvage_collages")


class TakedownConfig(StrictModel):
    """Ids (post, comment, row) or URLs that must never be built again."""

    files: tuple[str, ...] = ()  # text files, one id or URL a line, '#' comments
    entries: tuple[str, ...] = ()


class CrawlConfig(BuilderConfig):
    """Everything the ``crawl`` builder needs; the defaults build the bundled sample offline."""

    def preflight(self) -> list[str]:
        missing = []
        for dump in self.dumps if self.enabled else ():
            for path in (dump.submissions, dump.comments):
                if not resolve(Path.cwd(), path).exists():
                    missing.append(f"crawl: dump {path} does not exist")
        return missing

    dumps: tuple[DumpSourceConfig, ...] = (
        DumpSourceConfig(
            submissions=f"{SAMPLE_DIR}/submissions.ndjson.zst",
            comments=f"{SAMPLE_DIR}/comments.ndjson.zst",
        ),
    )
    reddit_api: RedditApiConfig | None = None
    html_sites: tuple[HtmlSiteConfig, ...] = ()
    http: HttpConfig = Field(default_factory=HttpConfig)
    pairs: PairConfig = Field(default_factory=PairConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    takedown: TakedownConfig = Field(default_factory=lambda: TakedownConfig(files=(f"{SAMPLE_DIR}/takedown.txt",)))
    posts_per_unit: int = 64
    image_format: Literal["jpg", "png"] = "jpg"  # encoding of re-rendered (aligned) images


# The builder class lives in ieiw.crawlers.builder (requests, bs4...): imported when a build first makes it.
register_builder("crawl", CrawlConfig, "ieiw.crawlers.builder:WebCrawlBuilder")


def resolve(root: Path, path: str) -> Path:
    """Repo-relative paths in the config are resolved against the build root.

    A path into this package (the bundled sample) that is missing under the root falls back to the
    installed package, so the defaults also work when a build runs outside the repository.
    """
    p = Path(path)
    if p.is_absolute():
        return p
    candidate = root / p
    if not candidate.exists() and p.parts[:2] == ("ieiw", "crawlers"):
        packaged = Path(__file__).resolve().parent.joinpath(*p.parts[2:])
        if packaged.exists():
            return packaged
    return candidate
