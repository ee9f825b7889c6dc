"""The crawl's validation (``ieiw.crawlers.align.validate_edit``) on labelled pairs: the derivative proof, then
the edit kinds on real photographs.

**The derivative proof** (``cases()``, 75 pairs). The rule the labels follow: a candidate is a derivative
when, after alignment, the original's content covers at least half of it, and it is a usable edit
(something changed, not everything). Originals are real photographs bundled with scikit-image (offline) and
synthetic scenes (textured ones from the crawl sample, flat ones from ``ieiw.samples.phrasecut``). Every
image goes through a JPEG round trip, as on the web.

- derivatives (must be accepted): crops, rescales, small rotations (each with a local edit), colour grades,
  local edits, text added, a person removed;
- non-derivatives (must be rejected): unrelated photos with a similar palette and the same aspect ratio,
  memes that reuse a small part of the original, the original pasted small onto a new canvas, a no-op and
  a full recolour.

**The edit kinds** (``kind_cases()``, 208 pairs). Sixteen real photographs bundled with scikit-image, split in
two halves that share no photo: the kind thresholds of ``ValidationConfig`` were chosen on ``TUNE``, the
figures are reported on ``HELD_OUT``. Each photo gets one case of each family, the variant and its strength
cycling with the photo: two local edits (a removal of the busiest region; a replacement, a retouch or a
recoloured region), two colour edits (a grade; black and white, sepia, a duotone, saturation or exposure), a
geometric one (straightened by 2-5 degrees and cropped, a crop, a perspective fix, a flip), two resolution
edits (a sharpened 1.5x-3x upscale; a denoise, a deblur or a sharpen), an overlay (text with or without an
outline, a sticker, a frame), a before|after collage (side by side or stacked, with or without a separator;
the after panel a removal or a grade), a pair of kinds (crop + removal, straighten + grade, black and white +
removal), a no-op (a JPEG re-encode at q50 or q70, a resize, the same image) and two non-derivatives (an
unrelated photo, a meme, the original shrunk into another photo, a full recolour).

Prints the proof's table per class with the precision/recall of "accepted as a derivative", then per half
the precision, recall and accuracy (the exact set of kinds) per kind and the derivative decision (goals:
precision >= 0.95, recall >= 0.9, accuracy per kind >= 0.85 on the held-out half). ``cases()`` is imported by
``tests/crawlers/test_crawl_derivative.py``, ``kind_cases()`` by ``tests/crawlers/test_crawl_kinds.py``.

    python bench/crawl_validation.py [-v] [--half tune|held_out|both] [--kinds-only]
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ieiw.samples.base import smooth_background, synthetic_scene  # noqa: E402
from ieiw.samples.crawl import paint_patch, recolour_region, synthetic_photo  # noqa: E402
from ieiw.imageio import downscale  # noqa: E402

DERIVATIVE_KINDS = ("crop", "rescale", "rotation", "colour_grade", "local_edit", "text_added", "person_removed")
# The stable reason each rejected class gets (a set where the geometry decides which one applies).
REJECT_REASONS: dict[str, frozenset[str]] = {
    "unrelated": frozenset({"non_derivative"}),
    "meme": frozenset({"non_derivative", "partial_overlap"}),
    "pasted_small": frozenset({"partial_overlap", "non_derivative"}),
    "no_op": frozenset({"no_op"}),
    "full_recolour": frozenset({"changes_everything"}),
}
KINDS = DERIVATIVE_KINDS + tuple(REJECT_REASONS)


@dataclass(frozen=True)
class Case:
    name: str
    kind: str
    label: bool  # True: a derivative that must be accepted
    original: np.ndarray
    candidate: np.ndarray

    @property
    def reasons(self) -> frozenset[str]:
        """Reasons a correct verdict may carry (``None`` = accepted for derivatives)."""
        return frozenset({None}) if self.label else REJECT_REASONS[self.kind]  # type: ignore[arg-type]


# -- originals -------------------------------------------------------------------------------------


def _rgb(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3].astype(np.uint8))


def jpeg(rgb: np.ndarray, quality: int = 88) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


@lru_cache(maxsize=1)
def originals() -> dict[str, np.ndarray]:
    """Real photographs (scikit-image's bundled data, offline) and synthetic scenes."""
    from skimage import data

    photos = {
        "astronaut": data.astronaut(),
        "coffee": data.coffee(),
        "chelsea": data.chelsea(),
        "rocket": data.rocket(),
        "motorcycle": data.stereo_motorcycle()[0],
        "hubble": data.hubble_deep_field(),
        "retina": data.retina(),
        "ihc": data.immunohistochemistry(),
        "camera": data.camera(),
        "moon": data.moon(),
        "coins": data.coins(),
        "horse": data.horse(),  # a binary silhouette: a flat image with one contour
    }
    out = {name: downscale(_rgb(img), 640) for name, img in photos.items()}
    for seed in (31, 32, 33):
        out[f"synth_photo{seed}"] = synthetic_photo(seed, 480, 360)  # textured (ORB finds corners)
    for seed in (41, 42, 43):
        out[f"synth_scene{seed}"] = synthetic_scene(np.random.default_rng(seed), 400, 300)  # flat, few corners
    for seed in (5, 6, 105, 7):
        out[f"featureless{seed}"] = featureless(seed)  # no corners, no edges: the flat path
    return out


def featureless(seed: int, width: int = 400, height: int = 300) -> np.ndarray:
    """A smooth colour field without any edge (a blurred sky, a studio backdrop)."""
    img = smooth_background(np.random.default_rng(seed), width, height).astype(np.float32)
    return np.clip(cv2.GaussianBlur(img, (0, 0), 6), 0, 255).astype(np.uint8)


def soft_edit(img: np.ndarray, box: tuple[float, float, float, float], colour: tuple[int, int, int]) -> np.ndarray:
    """A soft-edged local edit (a glow, a painted-in sun): no hard edge for the structure to hold on to."""
    x0, y0, x1, y1 = _box(img, box)
    m = np.zeros(img.shape[:2], np.float32)
    cv2.ellipse(m, ((x0 + x1) // 2, (y0 + y1) // 2), ((x1 - x0) // 2, (y1 - y0) // 2), 0, 0, 360, 1.0, -1)
    m = cv2.GaussianBlur(m, (0, 0), 10)[..., None]
    out = img.astype(np.float32) * (1 - m) + m * np.array(colour, np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


# -- edits -----------------------------------------------------------------------------------------


def _box(img: np.ndarray, box: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    h, w = img.shape[:2]
    return int(box[0] * w), int(box[1] * h), int(box[2] * w), int(box[3] * h)


def crop(img: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    x0, y0, x1, y1 = _box(img, box)
    return np.ascontiguousarray(img[y0:y1, x0:x1])


def rescale(img: np.ndarray, s: float) -> np.ndarray:
    h, w = img.shape[:2]
    return cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)


def rotate(img: np.ndarray, degrees: float) -> np.ndarray:
    """Straighten by a few degrees and crop the borders away (what an editor does)."""
    h, w = img.shape[:2]
    M = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    out = cv2.warpAffine(img, M, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    m = np.sin(np.radians(abs(degrees))) * 1.1
    return crop(out, (m, m, 1 - m, 1 - m))


def grade(img: np.ndarray, kind: str) -> np.ndarray:
    """A colour grade that keeps the structure."""
    f = img.astype(np.float32) / 255.0
    if kind == "warm":
        f = f * np.array([1.12, 1.02, 0.8], np.float32) + np.array([0.04, 0.01, 0.0], np.float32)
    elif kind == "contrast":
        f = (f - 0.5) * 1.35 + 0.5
    elif kind == "gamma":
        f = f ** 0.6
    elif kind == "fade":  # lifted blacks, desaturated: a "vintage" look
        grey = f.mean(axis=2, keepdims=True)
        f = 0.12 + 0.8 * (0.5 * f + 0.5 * grey) * np.array([1.05, 1.0, 0.9], np.float32)
    elif kind == "cool":
        f = f * np.array([0.8, 0.97, 1.15], np.float32) + np.array([0.0, 0.02, 0.05], np.float32)
    else:
        raise ValueError(kind)
    return (np.clip(f, 0, 1) * 255 + 0.5).astype(np.uint8)


def add_text(img: np.ndarray, text: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = img.copy()
    h, w = img.shape[:2]
    scale = w / 320
    thick = max(2, round(2.5 * scale))
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_DUPLEX, scale, thick)
    x = int(rng.integers(5, max(6, w - tw - 5)))
    y = int(rng.integers(th + 5, h - 5))
    cv2.putText(out, text, (x, y), cv2.FONT_HERSHEY_DUPLEX, scale, (0, 0, 0), thick + 3, cv2.LINE_AA)
    cv2.putText(out, text, (x, y), cv2.FONT_HERSHEY_DUPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return out


def remove_region(img: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """'Remove the person': inpaint an (elliptical) region, as a remover would."""
    x0, y0, x1, y1 = _box(img, box)
    mask = np.zeros(img.shape[:2], np.uint8)
    cv2.ellipse(mask, ((x0 + x1) // 2, (y0 + y1) // 2), ((x1 - x0) // 2, (y1 - y0) // 2), 0, 0, 360, 255, -1)
    return cv2.inpaint(img, mask, 7, cv2.INPAINT_TELEA)


def full_recolour(img: np.ndarray) -> np.ndarray:
    """Every pixel a new colour, the structure kept: hue rotated and saturated (a colour map for grey)."""
    grey = bool(np.abs(img.astype(int) - img.mean(axis=2, keepdims=True)).max() < 8)
    if grey:
        mapped = cv2.applyColorMap(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.COLORMAP_JET)
        return cv2.cvtColor(mapped, cv2.COLOR_BGR2RGB)
    return recolour_region(img, (0, 0, 1, 1), 180)


def transfer_palette(src: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Match ``src``'s Lab channel means/stds to ``ref`` (Reinhard colour transfer)."""
    a = cv2.cvtColor(src, cv2.COLOR_RGB2Lab).astype(np.float32)
    b = cv2.cvtColor(ref, cv2.COLOR_RGB2Lab).astype(np.float32)
    am, asd = a.reshape(-1, 3).mean(0), a.reshape(-1, 3).std(0) + 1e-3
    bm, bsd = b.reshape(-1, 3).mean(0), b.reshape(-1, 3).std(0)
    out = (a - am) / asd * bsd + bm
    return cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_Lab2RGB)


def same_aspect(img: np.ndarray, like: np.ndarray, long_side: int | None = None) -> np.ndarray:
    """Centre-crop ``img`` to ``like``'s aspect ratio and resize it (to ``like``'s size by default)."""
    h, w = img.shape[:2]
    lh, lw = like.shape[:2]
    target = lw / lh
    if w / h > target:
        nw = round(h * target)
        img = img[:, (w - nw) // 2 : (w - nw) // 2 + nw]
    else:
        nh = round(w / target)
        img = img[(h - nh) // 2 : (h - nh) // 2 + nh]
    if long_side is None:
        size = (lw, lh)
    else:
        s = long_side / max(lw, lh)
        size = (round(lw * s), round(lh * s))
    return cv2.resize(np.ascontiguousarray(img), size, interpolation=cv2.INTER_AREA)


def unrelated(other: np.ndarray, like: np.ndarray) -> np.ndarray:
    return transfer_palette(same_aspect(other, like), like)


def canvas(like: np.ndarray, seed: int, style: str) -> np.ndarray:
    h, w = like.shape[:2]
    rng = np.random.default_rng(seed)
    if style == "white":
        return np.full((h, w, 3), 255, np.uint8)
    if style == "flat":
        mean = like.reshape(-1, 3).mean(0)
        return np.broadcast_to(mean.astype(np.uint8), (h, w, 3)).copy()
    top, bottom = rng.uniform(40, 220, (2, 3))
    t = np.linspace(0, 1, h)[:, None, None]
    return (top * (1 - t) + bottom * t + np.zeros((1, w, 1))).astype(np.uint8)


def meme(
    img: np.ndarray, box: tuple[float, float, float, float], place: str, seed: int, style: str = "white"
) -> np.ndarray:
    """A small part of the original (``box``) pasted onto a new canvas of the same size with captions."""
    out = canvas(img, seed, style)
    h, w = img.shape[:2]
    x0, y0, x1, y1 = _box(img, box)
    part = img[y0:y1, x0:x1]
    if place == "same":  # where it was: the original's geometry, everything else new
        out[y0:y1, x0:x1] = part
    else:  # enlarged under a caption
        s = min(0.55 * w / part.shape[1], 0.5 * h / part.shape[0])
        part = rescale(part, s)
        ph, pw = part.shape[:2]
        px, py = (w - pw) // 2, int(0.3 * h)
        out[py : py + ph, px : px + pw] = part
    for text, y in (("WHEN YOU SEE IT", 0.16), ("NOBODY:", 0.95)):
        scale = w / 420
        (tw, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_DUPLEX, scale, 2)
        org = ((w - tw) // 2, int(y * h))
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_DUPLEX, scale, (0, 0, 0), max(2, round(2 * scale)), cv2.LINE_AA)
    return out


def pasted_small(img: np.ndarray, scale: float, seed: int, background: np.ndarray | None = None) -> np.ndarray:
    """The whole original, shrunk, pasted onto a new canvas (another photo or a gradient) of the same aspect."""
    out = background.copy() if background is not None else canvas(img, seed, "gradient")
    h, w = out.shape[:2]
    small = rescale(img, scale)
    sh, sw = small.shape[:2]
    rng = np.random.default_rng(seed)
    x, y = int(rng.integers(0, w - sw)), int(rng.integers(0, h - sh))
    out[y : y + sh, x : x + sw] = small
    return out


# -- the labelled set ------------------------------------------------------------------------------


def cases() -> list[Case]:
    """The labelled (original, candidate) pairs, deterministic: both images JPEG round-tripped."""
    o = originals()
    items: list[tuple[str, str, str, np.ndarray]] = []  # (kind, original name, variant, candidate)

    def add(kind: str, name: str, variant: str, candidate: np.ndarray) -> None:
        items.append((kind, name, variant, candidate))

    # derivatives ---------------------------------------------------------------------------------
    for name, box, seed in (
        ("astronaut", (0.1, 0.05, 0.9, 0.85), 1),
        ("coffee", (0.15, 0.1, 0.95, 0.9), 2),
        ("rocket", (0.0, 0.2, 0.7, 1.0), 3),
        ("synth_photo31", (0.1, 0.1, 0.8, 0.95), 4),
        ("camera", (0.05, 0.05, 0.85, 0.75), 5),
    ):
        add("crop", name, "crop+patch", paint_patch(crop(o[name], box), seed, 0.15))
    for name, s, seed in (("chelsea", 0.5, 6), ("motorcycle", 0.7, 7), ("moon", 1.6, 8), ("synth_scene41", 0.6, 9),
                          ("ihc", 0.45, 10)):
        add("rescale", name, f"x{s}+patch", rescale(paint_patch(o[name], seed, 0.15), s))
    for name, deg, seed in (("coffee", 3.0, 11), ("astronaut", -4.0, 12), ("synth_photo32", 2.0, 13),
                            ("coins", -3.0, 14), ("hubble", 5.0, 15)):
        add("rotation", name, f"{deg:+.0f}deg+patch", rotate(paint_patch(o[name], seed, 0.15), deg))
    for name, kind in (("astronaut", "warm"), ("coffee", "contrast"), ("chelsea", "gamma"), ("rocket", "fade"),
                       ("motorcycle", "cool"), ("synth_scene42", "warm"), ("retina", "contrast")):
        add("colour_grade", name, kind, grade(o[name], kind))
    for name, seed in (("hubble", 21), ("retina", 22), ("synth_photo33", 23), ("synth_scene43", 24), ("horse", 25)):
        add("local_edit", name, "paint", paint_patch(o[name], seed, 0.25))
    add("local_edit", "chelsea", "recolour", recolour_region(o["chelsea"], (0.55, 0.2, 0.95, 0.7)))
    add("local_edit", "ihc", "recolour", recolour_region(o["ihc"], (0.1, 0.1, 0.5, 0.5)))
    add("local_edit", "featureless5", "soft", soft_edit(o["featureless5"], (0.5, 0.3, 0.8, 0.7), (230, 200, 120)))
    soft = soft_edit(o["featureless6"], (0.1, 0.5, 0.4, 0.9), (40, 60, 160))
    add("rescale", "featureless6", "x0.5+soft", rescale(soft, 0.5))
    for name, text, seed in (("astronaut", "HAPPY BIRTHDAY", 31), ("rocket", "LAUNCH DAY", 32),
                             ("moon", "MOON", 33), ("synth_scene41", "HELLO", 34), ("coins", "SALE 50%", 35)):
        add("text_added", name, text, add_text(o[name], text, seed))
    for name, box in (("astronaut", (0.55, 0.45, 0.9, 0.95)), ("coffee", (0.05, 0.55, 0.35, 0.95)),
                      ("chelsea", (0.6, 0.1, 0.95, 0.6)), ("motorcycle", (0.3, 0.2, 0.7, 0.8)),
                      ("camera", (0.25, 0.1, 0.6, 0.9))):
        add("person_removed", name, "inpaint", remove_region(o[name], box))

    # non-derivatives -----------------------------------------------------------------------------
    for name, other in (("astronaut", "coffee"), ("coffee", "rocket"), ("chelsea", "motorcycle"),
                        ("rocket", "chelsea"), ("motorcycle", "astronaut"), ("camera", "coins"), ("moon", "camera"),
                        ("retina", "moon"), ("synth_scene41", "synth_scene42"), ("synth_scene43", "synth_scene41"),
                        ("synth_photo31", "synth_photo32"), ("horse", "coins"),
                        ("featureless5", "featureless105"), ("featureless6", "featureless7")):
        add("unrelated", name, f"from {other}", unrelated(o[other], o[name]))
    for name, box, place, style in (("astronaut", (0.3, 0.1, 0.7, 0.5), "same", "white"),
                                    ("coffee", (0.25, 0.2, 0.65, 0.6), "caption", "white"),
                                    ("chelsea", (0.3, 0.25, 0.7, 0.7), "same", "flat"),
                                    ("motorcycle", (0.2, 0.3, 0.55, 0.7), "caption", "gradient"),
                                    ("synth_photo31", (0.2, 0.2, 0.6, 0.6), "same", "gradient"),
                                    ("synth_scene42", (0.2, 0.2, 0.65, 0.65), "caption", "white")):
        add("meme", name, f"{place}/{style}", meme(o[name], box, place, 50 + len(items), style))
    for name, other, s in (("astronaut", "coffee", 0.4), ("rocket", None, 0.35), ("chelsea", "camera", 0.45),
                           ("synth_scene43", None, 0.4), ("coins", "motorcycle", 0.4)):
        bg = same_aspect(o[other], o[name]) if other else None
        add("pasted_small", name, f"x{s} on {other or 'gradient'}", pasted_small(o[name], s, 60 + len(items), bg))
    for name, s in (("astronaut", 1.0), ("coffee", 0.5), ("synth_scene41", 1.0), ("moon", 0.75)):
        add("no_op", name, f"x{s}", o[name] if s == 1.0 else rescale(o[name], s))
    for name in ("astronaut", "coffee", "rocket", "camera", "synth_photo32"):
        add("full_recolour", name, "hue", full_recolour(o[name]))

    return [
        Case(f"{kind}/{name}/{variant}", kind, kind in DERIVATIVE_KINDS, jpeg(o[name]), jpeg(cand))
        for kind, name, variant, cand in items
    ]


# -- edit kinds on real photos ---------------------------------------------------------------------
#
# Each real photograph bundled with scikit-image is an original; every original gets one case of each
# family below, the variant (and its strength) cycling with the original's position, so each kind is seen
# at several strengths on several photos. The originals are split in two halves: the kind thresholds of
# ``ValidationConfig`` were chosen on TUNE and the figures are reported on HELD_OUT (no photo in both).

TUNE = ("astronaut", "rocket", "hubble", "motorcycle", "camera", "coins", "brick", "page")
HELD_OUT = ("coffee", "chelsea", "retina", "ihc", "moon", "gravel", "cell", "grass")
NOT_DERIVATIVE = {
    "unrelated": frozenset({"non_derivative"}),
    "meme": frozenset({"non_derivative", "partial_overlap"}),
    "pip": frozenset({"non_derivative", "partial_overlap"}),
    "no_op": frozenset({"no_op"}),
    # a recolour is no colour mapping (changes_everything), or its grey levels no longer follow the original's
    # (a false-colour map of a grey photo: non_derivative)
    "full_recolour": frozenset({"changes_everything", "non_derivative"}),
}


@dataclass(frozen=True)
class KindCase:
    """A labelled pair on a real photo: the kinds an accepted edit must get, or the reasons a rejection may have."""

    name: str  # family/original/variant
    family: str
    half: str  # "tune" or "held_out"
    kinds: tuple[str, ...] | None  # None: not a usable derivative
    original: np.ndarray
    candidate: np.ndarray
    panel: tuple[int, int, int, int] | None = None  # collages: the after panel's box in the candidate

    @property
    def label(self) -> bool:
        return self.kinds is not None

    @property
    def reasons(self) -> frozenset[str | None]:
        return frozenset({None}) if self.label else NOT_DERIVATIVE[self.family]  # type: ignore[return-value]


@lru_cache(maxsize=1)
def photos() -> dict[str, np.ndarray]:
    """The real photographs, at most 640 px on the long side."""
    from skimage import data

    loaders = {
        "astronaut": data.astronaut, "rocket": data.rocket, "hubble": data.hubble_deep_field,
        "motorcycle": lambda: data.stereo_motorcycle()[0], "camera": data.camera, "coins": data.coins,
        "brick": data.brick, "page": data.page, "coffee": data.coffee, "chelsea": data.chelsea,
        "retina": data.retina, "ihc": data.immunohistochemistry, "moon": data.moon, "gravel": data.gravel,
        "cell": data.cell, "grass": data.grass,
    }
    return {name: downscale(_rgb(load()), 640) for name, load in loaders.items()}


def _is_grey(img: np.ndarray) -> bool:
    """Grey, or so nearly that black and white or a saturation change would leave it as it is."""
    lab = cv2.cvtColor(img, cv2.COLOR_RGB2Lab).astype(np.float32)
    return bool(np.hypot(lab[..., 1] - 128, lab[..., 2] - 128).mean() < 6)


def _soft_mask(img: np.ndarray, box: tuple[float, float, float, float], feather: float) -> np.ndarray:
    x0, y0, x1, y1 = _box(img, box)
    m = np.zeros(img.shape[:2], np.float32)
    cv2.ellipse(m, ((x0 + x1) // 2, (y0 + y1) // 2), (max(1, (x1 - x0) // 2), max(1, (y1 - y0) // 2)), 0, 0, 360,
                1.0, -1)
    return cv2.GaussianBlur(m, (0, 0), feather)[..., None] if feather else m[..., None]


def _blend(img: np.ndarray, other: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.clip(img.astype(np.float32) * (1 - mask) + other.astype(np.float32) * mask + 0.5, 0, 255).astype(np.uint8)


def replace_region(img: np.ndarray, donor: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """'Replace the X with a Y': a patch of another photo blended into a soft-edged region."""
    h, w = img.shape[:2]
    patch = cv2.resize(donor, (w, h), interpolation=cv2.INTER_AREA)
    return _blend(img, patch, _soft_mask(img, box, 2.0))


def retouch(img: np.ndarray, box: tuple[float, float, float, float], mode: str) -> np.ndarray:
    """A retouch of one region under a soft mask: smoothed ('smooth the skin') or brightened ('light the face')."""
    if mode == "smooth":
        other = cv2.bilateralFilter(cv2.GaussianBlur(img, (0, 0), 2.5), 9, 60, 9)
    else:
        other = np.clip(img.astype(np.float32) * 1.4 + 40, 0, 255).astype(np.uint8)
    return _blend(img, other, _soft_mask(img, box, 8.0))


def recolour_soft(img: np.ndarray, box: tuple[float, float, float, float], shift: int) -> np.ndarray:
    """'Make the car green': hues of one region rotated under a soft mask (a grey photo is tinted instead)."""
    if _is_grey(img):
        tint = np.clip(img.astype(np.float32) * np.array([0.6, 1.1, 0.7], np.float32) + [0, 30, 10], 0, 255)
        return _blend(img, tint.astype(np.uint8), _soft_mask(img, box, 4.0))
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.int32)
    hsv[..., 0] = (hsv[..., 0] + shift // 2) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] + 50, 0, 255)
    other = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)
    return _blend(img, other, _soft_mask(img, box, 4.0))


def colour(img: np.ndarray, kind: str) -> np.ndarray:
    """Whole-image colour edits: the grades above plus black and white, sepia, saturation and exposure."""
    f = img.astype(np.float32) / 255.0
    grey = (0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2])[..., None]
    if kind in ("warm", "contrast", "gamma", "fade", "cool"):
        return grade(img, kind)
    if kind == "warm_mild":
        f = f * np.array([1.06, 1.01, 0.9], np.float32) + 0.02
    elif kind == "bw":
        f = np.repeat(grey, 3, axis=2)
    elif kind == "duotone":  # shadows blue, highlights warm
        f = (1 - grey) * np.array([0.1, 0.15, 0.45], np.float32) + grey * np.array([1.0, 0.92, 0.7], np.float32)
    elif kind == "sepia":
        f = np.clip(grey * np.array([1.07, 0.95, 0.72], np.float32) + np.array([0.08, 0.04, 0.0], np.float32), 0, 1)
    elif kind == "saturate":
        f = grey + 1.7 * (f - grey)
    elif kind == "desaturate":
        f = grey + 0.35 * (f - grey)
    elif kind == "brighter":
        f = f * 1.5
    elif kind == "darker":
        f = f * 0.6
    else:
        raise ValueError(kind)
    return (np.clip(f, 0, 1) * 255 + 0.5).astype(np.uint8)


def perspective(img: np.ndarray, amount: float) -> np.ndarray:
    """'Fix the perspective': a keystone warp, then cropped to the part that stays inside the frame."""
    h, w = img.shape[:2]
    d = amount * w
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = np.float32([[d, 0], [w - d, 0], [w, h], [0, h]])
    out = cv2.warpPerspective(img, cv2.getPerspectiveTransform(src, dst), (w, h), flags=cv2.INTER_CUBIC)
    m = amount * 1.2
    return crop(out, (m, 0.02, 1 - m, 0.98))


def unsharp(img: np.ndarray, sigma: float, amount: float) -> np.ndarray:
    f = img.astype(np.float32)
    return np.clip(f + amount * (f - cv2.GaussianBlur(f, (0, 0), sigma)) + 0.5, 0, 255).astype(np.uint8)


def upscaled(img: np.ndarray, s: float, sharpen: float) -> tuple[np.ndarray, np.ndarray]:
    """'Enhance this': a small original (320 px) and its bicubic upscale by ``s``, sharpened."""
    small = downscale(img, 320)
    h, w = small.shape[:2]
    big = cv2.resize(small, (round(w * s), round(h * s)), interpolation=cv2.INTER_CUBIC)
    return small, unsharp(big, 1.2 * s, sharpen) if sharpen else big


def noisy(img: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, img.shape)
    return np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def denoised(img: np.ndarray, sigma: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """'Remove the grain': a noisy original and OpenCV's non-local means of it."""
    grainy = jpeg(noisy(img, sigma, seed), 92)
    return grainy, cv2.fastNlMeansDenoisingColored(grainy, None, 0.8 * sigma, 0.8 * sigma, 7, 21)


def deblurred(img: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """'Unblur this': a blurred original and a sharp result (the photo itself, lightly sharpened)."""
    return cv2.GaussianBlur(img, (0, 0), sigma), unsharp(img, 1.0, 0.3)


def sticker(img: np.ndarray, seed: int, size: float) -> np.ndarray:
    """A flat clip-art sticker (a star, a heart or a smiley) with an outline, pasted on top."""
    rng = np.random.default_rng(seed)
    out = img.copy()
    h, w = img.shape[:2]
    r = int(size * min(h, w) / 2)
    cx, cy = int(rng.integers(r + 2, w - r - 2)), int(rng.integers(r + 2, h - r - 2))
    colour_ = tuple(int(c) for c in rng.choice([[250, 210, 30], [230, 40, 60], [40, 160, 240], [120, 220, 60]]))
    shape = int(rng.integers(0, 3))
    if shape == 0:
        t = np.linspace(0, 2 * np.pi, 11)[:-1] - np.pi / 2
        radius = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        pts = np.stack([cx + radius * np.cos(t), cy + radius * np.sin(t)], 1).astype(np.int32)
        cv2.fillPoly(out, [pts], colour_, cv2.LINE_AA)
        cv2.polylines(out, [pts], True, (20, 20, 20), max(2, r // 12), cv2.LINE_AA)
    elif shape == 1:
        t = np.linspace(0, 2 * np.pi, 60)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        pts = np.stack([cx + x * r / 17, cy + y * r / 17], 1).astype(np.int32)
        cv2.fillPoly(out, [pts], colour_, cv2.LINE_AA)
        cv2.polylines(out, [pts], True, (255, 255, 255), max(2, r // 10), cv2.LINE_AA)
    else:
        cv2.circle(out, (cx, cy), r, (250, 210, 30), -1, cv2.LINE_AA)
        cv2.circle(out, (cx, cy), r, (30, 30, 30), max(2, r // 14), cv2.LINE_AA)
        for ex in (-0.35, 0.35):
            cv2.circle(out, (int(cx + ex * r), int(cy - 0.25 * r)), max(2, r // 8), (30, 30, 30), -1, cv2.LINE_AA)
        cv2.ellipse(out, (cx, int(cy + 0.1 * r)), (int(0.5 * r), int(0.45 * r)), 0, 20, 160, (30, 30, 30),
                    max(2, r // 12), cv2.LINE_AA)
    return out


def frame(img: np.ndarray, width: float, colour_: tuple[int, int, int], line: bool) -> np.ndarray:
    """A frame drawn over the image's edges (the canvas keeps its size), optionally with an inner line."""
    out = img.copy()
    h, w = img.shape[:2]
    t = max(3, int(width * min(h, w)))
    cv2.rectangle(out, (0, 0), (w - 1, h - 1), colour_, 2 * t)
    if line:
        cv2.rectangle(out, (t + 4, t + 4), (w - t - 5, h - t - 5), (30, 30, 30), 2)
    return out


def caption(img: np.ndarray, text: str, seed: int, outline: bool, scale: float) -> np.ndarray:
    """Text on top: white with a black outline (a meme caption) or one solid colour."""
    rng = np.random.default_rng(seed)
    out = img.copy()
    h, w = img.shape[:2]
    size = scale * w / 320
    thick = max(2, round(2.2 * size))
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_DUPLEX, size, thick)
    x = int(rng.integers(4, max(5, w - tw - 4)))
    y = int(rng.integers(th + 4, max(th + 5, h - 4)))
    if outline:
        cv2.putText(out, text, (x, y), cv2.FONT_HERSHEY_DUPLEX, size, (0, 0, 0), thick + 3, cv2.LINE_AA)
        cv2.putText(out, text, (x, y), cv2.FONT_HERSHEY_DUPLEX, size, (255, 255, 255), thick, cv2.LINE_AA)
    else:
        colour_ = tuple(int(c) for c in rng.choice([[255, 230, 0], [255, 40, 40], [255, 255, 255], [20, 20, 20]]))
        cv2.putText(out, text, (x, y), cv2.FONT_HERSHEY_DUPLEX, size, colour_, thick, cv2.LINE_AA)
    return out


def collage(before: np.ndarray, after: np.ndarray, axis: str, gap: int, margin: int, scale: float,
            background: tuple[int, int, int] = (255, 255, 255)) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """before|after side by side (``axis`` "x") or stacked ("y"), both rescaled by ``scale``, with a separator
    of ``gap`` px and a ``margin``; returns the collage and the after panel's box."""
    b, a = rescale(before, scale), rescale(after, scale)
    h, w = b.shape[:2]
    if axis == "x":
        canvas_ = np.full((h + 2 * margin, 2 * w + gap + 2 * margin, 3), background, np.uint8)
        boxes = [(margin, margin), (margin + w + gap, margin)]
    else:
        canvas_ = np.full((2 * h + gap + 2 * margin, w + 2 * margin, 3), background, np.uint8)
        boxes = [(margin, margin), (margin, margin + h + gap)]
    for (x, y), img in zip(boxes, (b, a), strict=True):
        canvas_[y:y + h, x:x + w] = img
    x, y = boxes[1]
    return canvas_, (x, y, x + w, y + h)


def meme_around(img: np.ndarray, scale: float, seed: int) -> np.ndarray:
    """A meme around the original: the whole photo shrunk to ``scale`` of the canvas, captions above and below."""
    h, w = img.shape[:2]
    out = np.full((h, w, 3), 255, np.uint8)
    small = rescale(img, scale)
    sh, sw = small.shape[:2]
    x, y = (w - sw) // 2, (h - sh) // 2
    out[y:y + sh, x:x + sw] = small
    for text, ty in (("ME EXPLAINING", 0.14), ("MY EDIT REQUEST", 0.95)):
        size = w / 420
        (tw, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_DUPLEX, size, 2)
        cv2.putText(out, text, ((w - tw) // 2, int(ty * h)), cv2.FONT_HERSHEY_DUPLEX, size, (0, 0, 0),
                    max(2, round(2 * size)), cv2.LINE_AA)
    return out


BOXES = ((0.15, 0.2, 0.38, 0.45), (0.5, 0.45, 0.85, 0.85), (0.25, 0.15, 0.75, 0.7))  # ~4 %, ~10 %, ~22 % of the frame


def busiest(img: np.ndarray) -> tuple[float, float, float, float]:
    """The box of :data:`BOXES` where the photo has the most structure: where an object to remove is."""
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    edges = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
    return max(BOXES, key=lambda box: float(edges[_box(img, box)[1]:_box(img, box)[3],
                                                  _box(img, box)[0]:_box(img, box)[2]].mean()))


def kind_cases(half: str | None = None) -> list[KindCase]:
    """The labelled edit-kind cases on real photos (``half``: "tune", "held_out" or both), deterministic."""
    p = photos()
    out: list[KindCase] = []
    for half_name, names in (("tune", TUNE), ("held_out", HELD_OUT)):
        if half not in (None, half_name):
            continue
        for i, name in enumerate(names):
            img = p[name]
            grey = _is_grey(img)
            donors = [n for n in names if n not in (name, "page")]  # a photo, not a page of text
            donor = p[donors[(i + 2) % len(donors)]]
            other = p[names[(i + 1) % len(names)]]
            seed = 1000 + 37 * i + (500 if half_name == "held_out" else 0)
            items: list[tuple[str, str, tuple[str, ...] | None, np.ndarray, np.ndarray, tuple | None]] = []

            def add(family: str, variant: str, kinds: tuple[str, ...] | None, original: np.ndarray,
                    candidate: np.ndarray, panel: tuple | None = None, into: list = items) -> None:
                into.append((family, variant, kinds, original, candidate, panel))

            # local: a removal, then a replacement, a retouch or a recoloured region
            target = busiest(img)  # a removal removes something: the box with the most structure
            add("local", f"remove{BOXES.index(target)}", ("local",), img, remove_region(img, target))
            second = ("replace", "smooth", "brighten", "recolour")[i % 4]
            box2 = BOXES[(i + 1) % 3]
            edited = (replace_region(img, donor, box2) if second == "replace"
                      else recolour_soft(img, box2, 60 + 20 * (i % 3)) if second == "recolour"
                      else retouch(img, box2, second))
            add("local", second, ("local",), img, edited)
            # colour: a grade, then black and white / sepia / saturation / exposure
            grades = ("warm", "contrast", "gamma", "fade", "cool", "warm_mild")
            g1 = grades[i % len(grades)]
            add("colour", g1, ("colour",), img, colour(img, g1))
            g2 = (("sepia", "brighter", "darker", "duotone") if grey else
                  ("bw", "sepia", "saturate", "desaturate", "brighter", "darker"))[i % (4 if grey else 6)]
            add("colour", g2, ("colour",), img, colour(img, g2))
            # geometric: straighten, crop, perspective, flip
            geo = ("straighten", "crop", "perspective", "flip")[i % 4]
            if geo == "straighten":
                deg = (3.0, -2.0, 5.0, -4.0)[i % 4]
                add("geometric", f"straighten{deg:+.0f}", ("geometric",), img, rotate(img, deg))
            elif geo == "crop":
                add("geometric", "crop", ("geometric",), img, crop(img, (0.08, 0.12, 0.86, 0.9)))
            elif geo == "perspective":
                add("geometric", "perspective", ("geometric",), img, perspective(img, 0.05 + 0.01 * (i % 3)))
            else:
                add("geometric", "flip", ("geometric",), img, np.ascontiguousarray(img[:, ::-1]))
            # resolution: a sharpened upscale, then a denoise, a deblur or a sharpen
            s, amount = ((2.0, 0.8), (1.5, 0.6), (2.0, 1.2), (3.0, 0.8))[i % 4]
            small, big = upscaled(img, s, amount)
            add("resolution", f"upscale x{s} sharpen {amount}", ("resolution",), small, big)
            detail = ("denoise", "deblur", "sharpen")[i % 3]
            if detail == "denoise":
                o, e = denoised(img, (12.0, 18.0)[i % 2], seed)
            elif detail == "deblur":
                o, e = deblurred(img, (1.6, 2.4)[i % 2])
            else:
                o, e = img, unsharp(img, (1.5, 2.0)[i % 2], (0.7, 1.0)[i % 2])
            add("resolution", detail, ("resolution",), o, e)
            # overlay: text, a sticker, a frame
            over = ("text", "sticker", "frame", "text_solid")[i % 4]
            if over == "text":
                add("overlay", over, ("overlay",), img, caption(img, "HAPPY BIRTHDAY", seed, True, 1.0))
            elif over == "text_solid":
                add("overlay", over, ("overlay",), img, caption(img, "Best day ever", seed, False, 1.2))
            elif over == "sticker":
                add("overlay", over, ("overlay",), img, sticker(img, seed, (0.25, 0.35, 0.45)[i % 3]))
            else:
                add("overlay", over, ("overlay",), img,
                    frame(img, (0.03, 0.05)[i % 2], ((250, 250, 250), (120, 20, 30))[i % 2], bool(i % 2)))
            # composite: a before|after collage whose after panel is a removal or a grade
            after_kind = ("local", "colour")[i % 2]
            after = remove_region(img, target) if after_kind == "local" else colour(img, "warm")
            picture, panel = collage(img, after, ("x", "y")[(i // 2) % 2], (12, 0, 6, 20)[i % 4], (0, 10)[i % 2],
                                     (0.8, 0.6, 1.0, 0.7)[i % 4])
            add("composite", f"collage {('x', 'y')[(i // 2) % 2]} after {after_kind}", ("composite", after_kind),
                img, picture, panel)
            # two kinds: a crop or a straightening with a removal or a grade, a grade with a removal
            pair = ("crop+remove", "straighten+grade", "bw+remove")[i % 3]
            if pair == "crop+remove":
                add("two_kinds", pair, ("geometric", "local"), img,
                    crop(remove_region(img, target), (0.1, 0.05, 0.95, 0.9)))
            elif pair == "straighten+grade":
                add("two_kinds", pair, ("geometric", "colour"), img, rotate(colour(img, "warm"), 3.0))
            else:
                add("two_kinds", pair, ("colour", "local"), img,
                    remove_region(colour(img, "sepia" if grey else "bw"), target))
            # no-ops: re-encodes and plain resizes
            noop = ("jpeg q50", "jpeg q70", "x0.5", "x1.5 bicubic", "same", "x0.9")[i % 6]
            if noop.startswith("jpeg"):
                candidate = jpeg(img, int(noop[-2:]))
            elif noop == "same":
                candidate = img
            else:
                f = float(noop.split()[0][1:])
                candidate = cv2.resize(img, (round(img.shape[1] * f), round(img.shape[0] * f)),
                                       interpolation=cv2.INTER_CUBIC if f > 1 else cv2.INTER_AREA)
            add("no_op", noop, None, img, candidate)
            # not derivatives: an unrelated photo, a meme, the original shrunk into another picture, a recolour
            for k in (0, 1):
                kind = ("unrelated", "meme", "pip", "full_recolour")[(2 * i + k) % 4]
                if kind == "unrelated":
                    add(kind, f"from {names[(i + 1 + k) % len(names)]}", None, img,
                        unrelated(p[names[(i + 1 + k) % len(names)]], img))
                elif kind == "meme":
                    if i % 2:
                        add(kind, "around x0.3", None, img, meme_around(img, 0.3, seed))
                    else:
                        add(kind, "part", None, img, meme(img, (0.3, 0.2, 0.7, 0.6), "caption", seed))
                elif kind == "pip":
                    add(kind, "x0.35 in another photo", None, img,
                        pasted_small(img, 0.35, seed, same_aspect(other, img)))
                else:
                    add(kind, "hue", None, img, full_recolour(img))
            for family, variant, kinds, original, candidate, panel in items:
                out.append(KindCase(f"{family}/{name}/{variant}", family, half_name, kinds, jpeg(original),
                                    jpeg(candidate), panel))
    return out


def kind_table(verdicts: list[tuple[KindCase, object]]) -> dict[str, dict[str, float]]:
    """Per edit kind: cases, precision and recall of the kind, and accuracy (the exact kinds); plus the
    derivative decision (``derivative``) and the kind accuracy over every accepted derivative (``all``)."""
    from ieiw.crawlers.kinds import EDIT_KINDS

    table: dict[str, dict[str, float]] = {}
    for kind in EDIT_KINDS:
        labelled = [(c, v) for c, v in verdicts if c.kinds and kind in c.kinds]
        predicted = [(c, v) for c, v in verdicts if v.ok and kind in v.kinds]  # type: ignore[attr-defined]
        hits = sum(1 for c, v in labelled if v.ok and kind in v.kinds)  # type: ignore[attr-defined]
        exact = sum(1 for c, v in labelled if v.ok and set(v.kinds) == set(c.kinds))  # type: ignore[attr-defined]
        table[kind] = {"n": len(labelled), "precision": hits / len(predicted) if predicted else 1.0,
                       "recall": hits / len(labelled) if labelled else 1.0,
                       "accuracy": exact / len(labelled) if labelled else 1.0}
    tp = sum(1 for c, v in verdicts if c.label and v.ok)  # type: ignore[attr-defined]
    fp = sum(1 for c, v in verdicts if not c.label and v.ok)  # type: ignore[attr-defined]
    fn = sum(1 for c, v in verdicts if c.label and not v.ok)  # type: ignore[attr-defined]
    derivatives = [(c, v) for c, v in verdicts if c.label]
    exact = sum(1 for c, v in derivatives if v.ok and set(v.kinds) == set(c.kinds))  # type: ignore[attr-defined]
    table["derivative"] = {"n": len(verdicts), "precision": tp / (tp + fp) if tp + fp else 1.0,
                           "recall": tp / (tp + fn) if tp + fn else 1.0, "tp": tp, "fp": fp, "fn": fn}
    table["all"] = {"n": len(derivatives), "accuracy": exact / len(derivatives) if derivatives else 1.0}
    return table


# -- the bench -------------------------------------------------------------------------------------

SCORE_KEYS = ("method", "texture", "inliers", "coverage", "geometry", "structure", "changed_fraction", "recoloured",
              "grade_residual", "colour_shift", "edge_gain", "noise_gain", "local_share", "overlay_share", "region_new_edges", "region_flat", "detail_changed",
              "similarity", "panel")


def _line(ok: bool, name: str, verdict: object) -> str:
    v = verdict
    got = "+".join(v.kinds) if v.ok else v.reason  # type: ignore[attr-defined]
    s = " ".join(f"{k}={v.scores[k]}" for k in SCORE_KEYS if k in v.scores)  # type: ignore[attr-defined]
    return f"{'ok ' if ok else 'BAD'} {name:52s} {got:22s} {s}"


def proof(verbose: bool) -> None:
    """The derivative proof on the 75 mixed cases (real and synthetic originals)."""
    from ieiw.crawlers.align import validate_edit
    from ieiw.crawlers.config import ValidationConfig

    cfg = ValidationConfig()
    start = time.perf_counter()
    all_cases = cases()
    built = time.perf_counter() - start
    per_kind: dict[str, list[tuple[Case, object]]] = defaultdict(list)
    tp = fp = fn = tn = 0
    start = time.perf_counter()
    for case in all_cases:
        v = validate_edit(case.original, case.candidate, cfg)
        per_kind[case.kind].append((case, v))
        tp += v.ok and case.label
        fp += v.ok and not case.label
        fn += (not v.ok) and case.label
        tn += (not v.ok) and not case.label
        if verbose:
            print(_line(v.reason in case.reasons, case.name, v))
    elapsed = time.perf_counter() - start

    print(f"derivative proof: {len(all_cases)} cases ({built:.1f} s to build, "
          f"{1000 * elapsed / len(all_cases):.0f} ms a validation)")
    print(f"{'class':16s} {'label':14s} {'n':>3s} {'accepted':>9s} {'correct':>8s}  reasons")
    for kind in KINDS:
        rows = per_kind.get(kind, [])
        if not rows:
            continue
        label = "derivative" if rows[0][0].label else "not"
        accepted = sum(v.ok for _, v in rows)
        correct = sum(v.reason in c.reasons for c, v in rows)
        reasons: dict[str, int] = defaultdict(int)
        for _, v in rows:
            reasons[v.reason or "accepted"] += 1
        text = ", ".join(f"{r} {n}" for r, n in sorted(reasons.items()))
        print(f"{kind:16s} {label:14s} {len(rows):3d} {accepted:9d} {correct:8d}  {text}")
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    print(f"accepted as a derivative: tp={tp} fp={fp} fn={fn} tn={tn}")
    print(f"precision {precision:.3f} (goal >= 0.95)")
    print(f"recall    {recall:.3f} (goal >= 0.9)")


def kinds_bench(halves: tuple[str, ...], verbose: bool) -> None:
    """The edit kinds on real photos, per half: the thresholds were chosen on "tune", "held_out" is the report."""
    from ieiw.crawlers.align import validate_edit
    from ieiw.crawlers.config import ValidationConfig

    cfg = ValidationConfig()
    for half in halves:
        start = time.perf_counter()
        half_cases = kind_cases(half)
        built = time.perf_counter() - start
        start = time.perf_counter()
        verdicts = []
        for case in half_cases:
            v = validate_edit(case.original, case.candidate, cfg)
            verdicts.append((case, v))
            if verbose:
                right = (v.ok and set(v.kinds) == set(case.kinds or ())) if case.label else v.reason in case.reasons
                print(_line(right, case.name, v))
        elapsed = time.perf_counter() - start
        table = kind_table(verdicts)
        role = "thresholds chosen here" if half == "tune" else "held out: the reported figures"
        photos_ = TUNE if half == "tune" else HELD_OUT
        print(f"\nedit kinds, half {half!r} ({role}; originals {', '.join(photos_)}): {len(half_cases)} cases "
              f"({built:.1f} s to build, {1000 * elapsed / len(half_cases):.0f} ms a validation)")
        print(f"{'kind':12s} {'n':>4s} {'precision':>10s} {'recall':>7s} {'accuracy':>9s}")
        from ieiw.crawlers.kinds import EDIT_KINDS

        for kind in EDIT_KINDS:
            row = table[kind]
            print(f"{kind:12s} {row['n']:4d} {row['precision']:10.3f} {row['recall']:7.3f} {row['accuracy']:9.3f}")
        print(f"{'every kind':12s} {table['all']['n']:4d} {'':10s} {'':7s} {table['all']['accuracy']:9.3f}")
        d = table["derivative"]
        print(f"derivative decision: tp={d['tp']} fp={d['fp']} fn={d['fn']} precision {d['precision']:.3f} "
              f"(goal >= 0.95) recall {d['recall']:.3f} (goal >= 0.9)")
        rejected: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for case, v in verdicts:
            if not case.label:
                rejected[case.family][v.reason or "accepted"] += 1
        print("not derivatives: " + "; ".join(f"{family} " + ", ".join(f"{r} {n}" for r, n in sorted(got.items()))
                                             for family, got in sorted(rejected.items())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="print every case with its scores")
    parser.add_argument("--half", choices=("tune", "held_out", "both"), default="both",
                        help="which half of the edit-kind cases to run (default: both, held_out last)")
    parser.add_argument("--kinds-only", action="store_true", help="skip the 75-case derivative proof")
    args = parser.parse_args()
    if not args.kinds_only:
        proof(args.verbose)
    kinds_bench(("tune", "held_out") if args.half == "both" else (args.half,), args.verbose)


if __name__ == "__main__":
    main()
