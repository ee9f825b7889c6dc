"""The crawl's derivative check (``ieiw.crawlers.align.validate_edit``) on a labelled set of pairs.

The rule the labels follow: a candidate is a derivative when, after alignment, the original's content
covers at least half of it, and it is a usable edit (something changed, not everything). Originals are
real photographs bundled with scikit-image (offline) and synthetic scenes (textured ones from the crawl
sample, flat ones from ``ieiw.samples.phrasecut``). Every image goes through a JPEG round trip, as on the web.

- derivatives (must be accepted): crops, rescales, small rotations (each with a local edit, since a pure
  geometric change is a no-op once aligned), colour grades, local edits, text added, a person removed;
- non-derivatives (must be rejected): unrelated photos with a similar palette and the same aspect ratio,
  memes that reuse a small part of the original, the original pasted small onto a new canvas, a no-op and
  a full recolour.

Prints a table per class and the precision/recall of "accepted as a derivative" (goal: precision >= 0.95,
recall >= 0.9). ``cases()`` is imported by ``tests/crawlers/test_crawl_derivative.py``.

    python bench/crawl_validation.py [-v]
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


# -- the bench -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="print every case with its scores")
    args = parser.parse_args()

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
        if args.verbose:
            keys = ("method", "texture", "inliers", "coverage", "structure", "informative", "flat_agreement",
                    "changed_fraction", "recoloured", "grade_residual", "similarity")
            s = " ".join(f"{k}={v.scores[k]}" for k in keys if k in v.scores)
            ok = "ok " if v.reason in case.reasons else "BAD"
            print(f"{ok} {case.name:48s} {v.reason or 'accepted':18s} {s}")
    elapsed = time.perf_counter() - start

    print(f"{len(all_cases)} cases ({built:.1f} s to build, {1000 * elapsed / len(all_cases):.0f} ms a validation)")
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


if __name__ == "__main__":
    main()
