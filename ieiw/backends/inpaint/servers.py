"""Inpainting on lama-cleaner / IOPaint servers (GPU boxes), as two backends (docs/removal.md,
"Inpainting servers"):

- ``inpaint.lama-cleaner``: lama-cleaner 1.2.5, ``POST {url}/inpaint``, multipart with the files
  ``image`` and ``mask`` and every form field its server reads (it answers 400 on a missing one);
- ``inpaint.iopaint``: IOPaint 1.6.0, ``POST {url}/api/v1/inpaint``, JSON with base64 ``image`` and
  ``mask`` and the ``hd_strategy*`` fields (+ ``cv2_flag``/``cv2_radius`` for a cv2 server).

Images go out as PNG, so the servers answer PNG (they answer in the request's format): lossless both
ways. Masks (0/1) go out as 0/255 PNG. Each answer is decoded, checked to have the input's size and
returned as RGB ``uint8``.

``model`` is what the server was started with (``--model lama``, ``--model cv2``, ...). It names the
rows' backend (``lama-cleaner-lama``, ``iopaint-cv2``), and a server that does not run LaMa (the
paper's inpainter) is a stand-in: its rows say ``embedded: true``. ``urls`` may list several servers:
requests go round-robin over them (thread-safe), and the images of one ``inpaint()`` call are sent
concurrently, one thread per URL. ``urls``, ``timeout`` and ``retries`` change where and how fast it
runs, not what it outputs, so they are outside row ids and fingerprints.

Transient failures (connection errors, 500/502/503/504) are retried ``retries`` times with backoff by
urllib3; what still fails raises :class:`InpaintServerError` naming the URL, the status and the start
of the body, so Prefect retries the unit. A URL's ``user:password@`` is sent (HTTP basic auth) but
never shown: errors name it as ``user:***@host`` (:func:`redact_url`). Needs ``requests`` (the
``crawl`` extra, which ``make install`` installs).
"""

from __future__ import annotations

import base64
import itertools
import re
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from pydantic import Field, field_validator

from ieiw.backends.inpaint.base import Inpainter
from ieiw.backends.inpaint.lama import HDStrategyFields
from ieiw.imageio import ImageDecodeError, decode_rgb, encode
from ieiw.schemas.config import BackendConfig
from ieiw.schemas.registry import register_backend

# lama-cleaner's / IOPaint's HDStrategy enum values (lama_cleaner/schema.py, iopaint/schema.py)
HD_STRATEGY_VALUES = {"crop": "Crop", "resize": "Resize", "original": "Original"}
RETRY_STATUSES = (500, 502, 503, 504)
BACKOFF_FACTOR = 0.5  # urllib3: no sleep before the first retry, then 1 s, 2 s, 4 s, ...
BODY_CHARS = 200


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (``http://user:***@host:port/path``; a userinfo
    without a ``:``, perhaps a token, is ``***@``), for errors and logs; a URL without one is unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or "@" not in parts.netloc:
        # no netloc urlsplit finds (no scheme, say): hide whatever comes before an '@' all the same
        return re.sub(r"^([^/@]*//)?[^/@]*@", r"\1***@", url) if "@" in url else url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, colon, _ = userinfo.partition(":")  # a user alone (no ':') may be a token: hidden too
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}" if user and colon else f"***@{hostport}"))


def redact_text(text: str, urls: Sequence[str]) -> str:
    """``text`` with every one of ``urls``, and its ``userinfo@``, shown redacted."""
    for url in urls:
        redacted = redact_url(url)
        if redacted == url:
            continue
        text = text.replace(url, redacted)
        userinfo = urlsplit(url).netloc.rpartition("@")[0]
        shown = redacted.split("//", 1)[-1].split("@", 1)[0]
        text = text.replace(f"{userinfo}@", f"{shown}@")
    return text


class InpaintServerError(RuntimeError):
    """A server that failed (after retries) or answered something unusable; names the URL."""


class InpaintServerConfig(HDStrategyFields, BackendConfig):
    """Fields both server backends share."""

    kind: ClassVar[str] = "inpaint"
    runtime_fields: ClassVar[frozenset[str]] = frozenset({"urls", "timeout", "retries"})
    server: ClassVar[str]  # "lama-cleaner" / "iopaint": the label's prefix

    urls: list[str] = Field(min_length=1, description="server base URLs, e.g. http://gpu1:8080; several = round-robin")
    model: str = Field(min_length=1, description="the model the server was started with (--model): lama, cv2, ...")
    cv2_flag: Literal["INPAINT_NS", "INPAINT_TELEA"] = Field("INPAINT_NS", description="cv2 servers only")
    cv2_radius: int = Field(4, ge=1, description="cv2 servers only: neighbourhood radius, px")
    timeout: float = Field(300.0, gt=0, description="seconds per request (connect and read)")
    retries: int = Field(3, ge=0, description="retries on connection errors and 500/502/503/504")

    @field_validator("urls")
    @classmethod
    def _http_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{redact_url(url)!r} is not an http(s) URL")
        return [url.rstrip("/") for url in urls]

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, [redact_url(url) for url in value] if name == "urls" else value

    @property
    def embedded(self) -> bool:  # type: ignore[override]
        """Only a LaMa server is the paper's inpainter; any other model is a stand-in."""
        return self.model != "lama"

    def label(self) -> str:
        return f"{self.server}-{self.model}"

    def model_id(self) -> str:
        return "big-lama" if self.model == "lama" else self.model

    def cv2_params(self) -> dict[str, Any]:
        return {"cv2_flag": self.cv2_flag, "cv2_radius": self.cv2_radius} if self.model == "cv2" else {}

    def row_params(self) -> dict[str, Any]:
        # the model is in the label; the cv2 settings shape only a cv2 server's output
        return {**self.hd_params(), **self.cv2_params()}

    def preflight(self) -> list[str]:
        return []  # nothing on disk; an unreachable server fails its units (and Prefect retries them)


class LamaCleanerConfig(InpaintServerConfig):
    """A lama-cleaner 1.2.5 server (``lama-cleaner --model lama --device cuda --port P``)."""

    server: ClassVar[str] = "lama-cleaner"
    backend: Literal["lama-cleaner"] = "lama-cleaner"


class IOPaintConfig(InpaintServerConfig):
    """An IOPaint 1.6.0 server (``iopaint start --model lama --device cuda --port P``)."""

    server: ClassVar[str] = "iopaint"
    backend: Literal["iopaint"] = "iopaint"


def png(pixels: np.ndarray) -> bytes:
    return encode(pixels, "png")


def mask_png(mask: np.ndarray) -> bytes:
    return png(np.where(np.asarray(mask) > 0, 255, 0).astype(np.uint8))


class ServerInpainter(Inpainter):
    """One ``requests.Session`` (pooled, retrying) over the config's URLs."""

    path: ClassVar[str]

    def __init__(self, config: InpaintServerConfig):
        super().__init__(config)
        import requests
        from requests.adapters import HTTPAdapter
        from urllib3.util.retry import Retry

        self.urls = list(config.urls)
        self.timeout = config.timeout
        self._next = itertools.count()
        self._lock = threading.Lock()
        retry = Retry(
            total=config.retries, connect=config.retries, read=config.retries, status=config.retries,
            backoff_factor=BACKOFF_FACTOR, status_forcelist=RETRY_STATUSES,
            allowed_methods=frozenset({"GET", "HEAD", "POST"}), raise_on_status=False,
        )
        adapter = HTTPAdapter(pool_connections=len(self.urls), pool_maxsize=max(4, len(self.urls)), max_retries=retry)
        self.session = requests.Session()
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self._requests = requests

    def next_url(self) -> str:
        with self._lock:
            return self.urls[next(self._next) % len(self.urls)]

    def request(self, url: str, image: np.ndarray, mask: np.ndarray) -> Any:
        """Send one image; return ``session.post(...)``'s response."""
        raise NotImplementedError

    def inpaint_one(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an RGB uint8 HxWx3 image, got {image.dtype} {image.shape}")
        if np.asarray(mask).shape[:2] != image.shape[:2]:
            raise ValueError(f"mask {np.asarray(mask).shape} does not match image {image.shape}")
        url = self.next_url() + self.path
        shown = redact_url(url)  # what errors name: never a password
        try:
            response = self.request(url, image, mask)
        except self._requests.RequestException as exc:
            detail = redact_text(f"{type(exc).__name__}: {exc}", self.urls)
            raise InpaintServerError(f"{self.name}: POST {shown} failed after {self.config.retries} retries: "
                                     f"{detail}") from exc
        if response.status_code != 200:
            body = redact_text(response.text[:BODY_CHARS], self.urls)
            raise InpaintServerError(f"{self.name}: POST {shown} answered HTTP {response.status_code}: {body!r}")
        try:
            out = decode_rgb(response.content, orientation="ignore")
        except ImageDecodeError as exc:
            raise InpaintServerError(f"{self.name}: POST {shown} answered an undecodable image "
                                     f"({response.headers.get('Content-Type')}): {exc}") from None
        if out.shape[:2] != image.shape[:2]:
            raise InpaintServerError(f"{self.name}: POST {shown} answered {out.shape[1]}x{out.shape[0]} for a "
                                     f"{image.shape[1]}x{image.shape[0]} input")
        return np.ascontiguousarray(out, dtype=np.uint8)

    def inpaint(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> list[np.ndarray]:
        pairs = list(zip(images, masks, strict=True))
        if len(self.urls) == 1 or len(pairs) <= 1:
            return [self.inpaint_one(image, mask) for image, mask in pairs]
        with ThreadPoolExecutor(max_workers=min(len(self.urls), len(pairs)), thread_name_prefix="inpaint") as pool:
            return list(pool.map(lambda pair: self.inpaint_one(*pair), pairs))

    def close(self) -> None:
        self.session.close()


def lama_cleaner_form(config: InpaintServerConfig) -> dict[str, str]:
    """Every form field lama-cleaner 1.2.5's ``/inpaint`` reads (``server.py``), as strings.

    Values are ``lama_cleaner.schema.Config``'s defaults; the few it has none for come from its web
    app's defaults (``ldmSteps`` 25, and the croper box, unused with ``useCroper`` false). The hd
    strategy and the cv2 settings come from the config.
    """
    hd = config.hd_params()
    return {
        "ldmSteps": "25",
        "ldmSampler": "plms",
        "zitsWireframe": "true",
        "hdStrategy": HD_STRATEGY_VALUES[hd["hd_strategy"]],
        "hdStrategyCropMargin": str(hd["hd_strategy_crop_margin"]),
        "hdStrategyCropTrigerSize": str(hd["hd_strategy_crop_trigger_size"]),  # sic: the server's spelling
        "hdStrategyResizeLimit": str(hd["hd_strategy_resize_limit"]),
        "prompt": "",
        "negativePrompt": "",
        "useCroper": "false",
        "croperX": "0",
        "croperY": "0",
        "croperHeight": "512",
        "croperWidth": "512",
        "sdScale": "1.0",
        "sdMaskBlur": "0",
        "sdStrength": "0.75",
        "sdSteps": "50",
        "sdGuidanceScale": "7.5",
        "sdSampler": "uni_pc",
        "sdSeed": "42",
        "sdMatchHistograms": "false",
        "cv2Flag": config.cv2_flag,
        "cv2Radius": str(config.cv2_radius),
        "paintByExampleSteps": "50",
        "paintByExampleGuidanceScale": "7.5",
        "paintByExampleMaskBlur": "0",
        "paintByExampleSeed": "42",
        "paintByExampleMatchHistograms": "false",
        "p2pSteps": "50",
        "p2pImageGuidanceScale": "1.5",
        "p2pGuidanceScale": "7.5",
        "controlnet_conditioning_scale": "0.4",
        "controlnet_method": "control_v11p_sd15_canny",
    }


def iopaint_json(config: InpaintServerConfig, image_png: bytes, mask_png_bytes: bytes) -> dict[str, Any]:
    """IOPaint 1.6.0's ``InpaintRequest`` (``iopaint/schema.py``): the images, the hd strategy (its own
    defaults differ: margin 128, resize limit 1280, so they are always sent) and, for cv2, its settings."""
    hd = config.hd_params()
    return {
        "image": base64.b64encode(image_png).decode("ascii"),
        "mask": base64.b64encode(mask_png_bytes).decode("ascii"),
        "hd_strategy": HD_STRATEGY_VALUES[hd["hd_strategy"]],
        "hd_strategy_crop_trigger_size": hd["hd_strategy_crop_trigger_size"],
        "hd_strategy_crop_margin": hd["hd_strategy_crop_margin"],
        "hd_strategy_resize_limit": hd["hd_strategy_resize_limit"],
        **config.cv2_params(),
    }


@register_backend("inpaint", "lama-cleaner", LamaCleanerConfig)
class LamaCleanerInpainter(ServerInpainter):
    path = "/inpaint"

    def __init__(self, config: LamaCleanerConfig):
        super().__init__(config)
        self.form = lama_cleaner_form(config)

    def request(self, url: str, image: np.ndarray, mask: np.ndarray) -> Any:
        files = {"image": ("image.png", png(image), "image/png"), "mask": ("mask.png", mask_png(mask), "image/png")}
        return self.session.post(url, data=self.form, files=files, timeout=self.timeout)


@register_backend("inpaint", "iopaint", IOPaintConfig)
class IOPaintInpainter(ServerInpainter):
    path = "/api/v1/inpaint"

    def request(self, url: str, image: np.ndarray, mask: np.ndarray) -> Any:
        return self.session.post(url, json=iopaint_json(self.config, png(image), mask_png(mask)), timeout=self.timeout)
