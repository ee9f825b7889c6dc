"""The measurements that name an aligned edit's kind (``ieiw.crawlers.kinds``), on the original rendered in the
edit's frame and the edit itself.

- :func:`fit_colour_map`: the best single colour mapping of the whole image, one tone curve per channel or a
  lightness curve with a saturation scale and a colour cast (which also covers black and white and sepia).
  How far it moves the colours says ``colour``; what it leaves is what changed locally.
- :func:`detail_change`: at the edit's own resolution, how much sharper (or softer) the strong edges became
  and how much of the fine noise in flat parts went away: ``resolution``. Measured on the colour-mapped
  original and away from local changes, so a contrast grade or a removed object do not count as detail.
- :func:`region_kinds`: each changed region is graphics put on top (``overlay``: flat colours bounded by new
  hard edges, as text, stickers and frames are) or a photographic change (``local``: a removal leaves no new
  edge, a replacement or retouch leaves texture).

Hand-written on OpenCV and NumPy: each is a few array operations; no library names these measures.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


def edge_magnitude(img: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Colour gradient magnitude (grey levels per pixel): where the structure is, whatever its colours."""
    f = cv2.GaussianBlur(img.astype(np.float32), (0, 0), sigma) if sigma > 0 else img.astype(np.float32)
    gx = cv2.Sobel(f, cv2.CV_32F, 1, 0, ksize=3, scale=0.125)
    gy = cv2.Sobel(f, cv2.CV_32F, 0, 1, ksize=3, scale=0.125)
    if f.ndim == 2:
        return np.sqrt(gx * gx + gy * gy)
    return np.sqrt((gx * gx + gy * gy).sum(axis=2))


# -- colour ------------------------------------------------------------------------------------------


def _curve(x: np.ndarray, y: np.ndarray, smooth: float = 2.0) -> np.ndarray:
    """A tone curve: the median of ``y`` at each value 0..255 of ``x`` (both 0..255), smoothed over
    ``smooth`` levels with each level weighted by its pixel count. The median keeps the pixels of a local edit
    (a minority at any level) from bending the curve; the smoothing keeps a rare level, where they may be the
    majority, from jumping. Levels ``x`` never takes are interpolated."""
    joint = np.bincount(x.astype(np.int64) * 256 + np.clip(y, 0, 255).astype(np.int64), minlength=65536)
    joint = joint.reshape(256, 256)
    counts = joint.sum(axis=1).astype(np.float64)
    seen = np.flatnonzero(counts)
    if seen.size == 0:
        return np.arange(256, dtype=np.float64)
    medians = np.argmax(np.cumsum(joint, axis=1) * 2 >= counts[:, None], axis=1).astype(np.float64)
    kernel = np.exp(-0.5 * (np.arange(-8, 9) / smooth) ** 2)
    weight = np.convolve(counts, kernel, mode="same")
    smoothed = np.convolve(counts * medians, kernel, mode="same") / np.maximum(weight, 1e-9)
    return np.interp(np.arange(256), seen, smoothed[seen])


@dataclass(frozen=True)
class ColourMap:
    """One colour mapping of a whole image: ``curves`` (a tone curve per RGB channel) or ``lab`` (a lightness
    curve, chroma scaled by ``saturation`` and shifted by ``cast``)."""

    model: str
    curves: np.ndarray  # (3, 256) for "curves", (1, 256) lightness for "lab"
    saturation: float = 1.0
    cast: tuple[float, float] = (0.0, 0.0)

    def apply(self, img: np.ndarray) -> np.ndarray:
        """``img`` (RGB uint8) mapped; values outside 0..255 are clipped."""
        if self.model == "curves":
            out = np.stack([self.curves[c][img[..., c]] for c in range(3)], axis=-1)
            return np.clip(out + 0.5, 0, 255).astype(np.uint8)
        lab = cv2.cvtColor(img, cv2.COLOR_RGB2Lab).astype(np.float32)
        lab[..., 0] = self.curves[0][lab[..., 0].astype(np.uint8)]
        for c in (1, 2):
            lab[..., c] = 128 + self.saturation * (lab[..., c] - 128) + self.cast[c - 1]
        return cv2.cvtColor(np.clip(lab + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_Lab2RGB)


def _fit(model: str, a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> ColourMap:
    if model == "curves":
        return ColourMap("curves", np.stack([_curve(a[..., c][mask], b[..., c][mask].astype(np.float64))
                                             for c in range(3)]))
    la = cv2.cvtColor(a, cv2.COLOR_RGB2Lab)[mask].astype(np.float64)
    lb = cv2.cvtColor(b, cv2.COLOR_RGB2Lab)[mask].astype(np.float64)
    lightness = _curve(la[:, 0].astype(np.uint8), lb[:, 0])[None]
    ua, ea = la[:, 1:] - la[:, 1:].mean(0), lb[:, 1:] - lb[:, 1:].mean(0)
    var = float((ua * ua).sum())
    saturation = float(np.clip((ua * ea).sum() / var, 0.0, 3.0)) if var > 1e-6 else 0.0
    cast = lb[:, 1:].mean(0) - 128 - saturation * (la[:, 1:].mean(0) - 128)
    return ColourMap("lab", lightness, saturation, (float(cast[0]), float(cast[1])))


def _error(mapped: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel mean absolute error over the channels (grey levels)."""
    return np.abs(mapped.astype(np.float32) - b.astype(np.float32)).mean(axis=2)


@dataclass(frozen=True)
class ColourFit:
    """The best colour mapping of ``a`` onto ``b`` and what it explains."""

    mapping: ColourMap
    residual: float  # mean error (grey levels) over the whole frame: small when one mapping explains all
    shift: float  # mean CIE Lab distance the mapping moves the original's colours (its inliers, not black)
    mapped: np.ndarray  # ``a`` mapped


def fit_colour_map(a: np.ndarray, b: np.ndarray, valid: np.ndarray, sigma: float = 1.0, side: int = 256) -> ColourFit:
    """The colour mapping (either model) that best explains ``b`` from ``a`` over ``valid``, both blurred by
    ``sigma`` px and measured at ``side`` px at most; ``mapped`` is the unblurred ``a`` mapped.

    Each model is fitted on every valid pixel, then again without the pixels it explains worst (a local edit
    must not bend the curve). ``residual`` is the first fit's error, so a recolour that no mapping explains
    stays visible; ``shift`` is measured on the second fit's inliers."""
    if not valid.any():
        identity = ColourMap("curves", np.tile(np.arange(256, dtype=np.float64), (3, 1)))
        return ColourFit(identity, 255.0, 0.0, a)
    original = a
    if sigma > 0:  # a pixel's resampling or a half-pixel misalignment must not look like a colour error
        a, b = cv2.GaussianBlur(a, (0, 0), sigma), cv2.GaussianBlur(b, (0, 0), sigma)
    full = (a, b, valid)  # the residual is measured here: a smaller copy would average the errors away
    scale = side / max(a.shape[:2])
    if scale < 1:  # fitting a mapping of 256 levels needs no more pixels than this
        size = (max(1, round(a.shape[1] * scale)), max(1, round(a.shape[0] * scale)))
        a, b = cv2.resize(a, size, interpolation=cv2.INTER_AREA), cv2.resize(b, size, interpolation=cv2.INTER_AREA)
        valid = cv2.resize(valid.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
        if not valid.any():
            valid = np.ones(valid.shape, bool)
    best: tuple[float, ColourMap, np.ndarray] | None = None
    for model in ("curves", "lab"):
        first = _fit(model, a, b, valid)
        error = _error(first.apply(a), b)
        residual = float(_error(first.apply(full[0]), full[1])[full[2]].mean()) if scale < 1 else \
            float(error[valid].mean())
        inliers = valid & (error < max(8.0, 3.0 * float(np.median(error[valid]))))
        second = _fit(model, a, b, inliers) if inliers.sum() >= 0.5 * valid.sum() else first
        if best is None or residual < best[0]:
            best = (residual, second, inliers)
    residual, mapping, inliers = best  # type: ignore[misc]
    la = cv2.cvtColor(a.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    lm = cv2.cvtColor(mapping.apply(a).astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    # Pixels black in the original and after the mapping have no colour to move (a night sky).
    region = (inliers if inliers.any() else valid) & ~((la[..., 0] < 12) & (lm[..., 0] < 12))
    shift = float(np.linalg.norm(la - lm, axis=2)[region].mean()) if region.any() else 0.0
    return ColourFit(mapping, residual, shift, mapping.apply(original))


# -- detail ------------------------------------------------------------------------------------------


def _grey(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)


@dataclass(frozen=True)
class Detail:
    """How the fine detail of an edit compares with the original's, both at the edit's resolution."""

    edge_gain: float  # log2 ratio of the gradient at the original's strongest edges (median over tiles)
    noise_gain: float  # log2 ratio of the fine detail in the original's flattest half (median over tiles)
    changed: np.ndarray  # bool map: where the fine detail changed (a retouch, a texture painted out)


def _fine(grey: np.ndarray) -> np.ndarray:
    """The fine detail: grey minus its 1-px Gaussian blur, in absolute value."""
    return np.abs(grey - cv2.GaussianBlur(grey, (0, 0), 1.0))


def detail_change(a: np.ndarray, b: np.ndarray, valid: np.ndarray, tiles: int = 6, sigma: float = 4.0,
                  min_ratio: float = 1.0, min_amplitude: float = 2.0) -> Detail:
    """Compare the detail of ``b`` with the original ``a`` (same frame, colour-mapped) over ``valid``.

    Per tile of a ``tiles`` x ``tiles`` grid: the gradient at the original's strongest edges (its top 10 %
    over the frame) and the fine detail in its flattest half. Sharpening, deblurring and a detailed upscale
    raise the first, a blur lowers it, a denoise removes most of the second; a JPEG re-encode moves both by a
    few hundredths. Their medians over the tiles say what happened to the whole image, whatever a retouch did
    to a few tiles. ``changed`` marks where the structure (gradient magnitude) or the fine detail, averaged
    over ``sigma`` px, changed by ``min_ratio`` (log2) and ``min_amplitude`` grey levels per pixel (1.5 times
    that for the fine detail): a skin smoothed, a texture or thin vessels painted out, which the colour
    change map does not see."""
    ga, gb = _grey(a), _grey(b)
    if valid.sum() < 64:
        return Detail(0.0, 0.0, np.zeros(valid.shape, bool))
    structure = edge_magnitude(ga, 1.0)
    values = structure[valid]
    strong = valid & (structure >= np.quantile(values, 0.9))
    flat = valid & (structure <= np.quantile(values, 0.5))
    ea, eb = edge_magnitude(ga, 0.0), edge_magnitude(gb, 0.0)
    fa, fb = _fine(ga), _fine(gb)
    h, w = ga.shape
    edge, noise = [], []
    for i in range(tiles):
        for j in range(tiles):
            window = (slice(i * h // tiles, (i + 1) * h // tiles), slice(j * w // tiles, (j + 1) * w // tiles))
            s, f = strong[window], flat[window]
            if s.sum() >= 16:
                edge.append(np.log2((eb[window][s].mean() + 0.5) / (ea[window][s].mean() + 0.5)))
            if f.sum() >= 16:
                noise.append(np.log2((fb[window][f].mean() + 0.3) / (fa[window][f].mean() + 0.3)))
    changed = np.zeros(valid.shape, bool)
    for da, db, amplitude in ((structure, edge_magnitude(gb, 1.0), min_amplitude), (fa, fb, 1.5 * min_amplitude)):
        la, lb = cv2.GaussianBlur(da, (0, 0), sigma), cv2.GaussianBlur(db, (0, 0), sigma)
        changed |= (np.abs(np.log2((lb + 1.0) / (la + 1.0))) >= min_ratio) & (np.abs(lb - la) >= amplitude)
    changed &= valid
    changed = cv2.morphologyEx(changed.astype(np.uint8), cv2.MORPH_OPEN, np.ones((5, 5), np.uint8)).astype(bool)
    return Detail(float(np.median(edge)) if edge else 0.0, float(np.median(noise)) if noise else 0.0, changed)


# -- regions -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Regions:
    """Changed regions split by what they look like, as shares of the compared frame, and the area-weighted
    look of the largest one (for the record)."""

    local: float
    overlay: float
    count: int  # regions large enough to judge
    new_edges: float = 0.0  # the largest region: share of its outline along new edges
    flat: float = 0.0  # ...and share of its calm part that is flat


def region_kinds(a: np.ndarray, b: np.ndarray, changed: np.ndarray, min_region: float, new_edge: float,
                 min_new_edges: float, flat_std: float, min_flat: float, group: int = 17) -> Regions:
    """Judge each changed region of ``b`` (``a``: the original in ``b``'s frame, colour-mapped when the colours
    changed).

    Changed pixels closer than ``group`` px form one region (the letters of a caption are one). A region is
    an overlay when at least ``min_new_edges`` of its outline (away from the frame's edge) runs along an edge
    the original lacks (gradient above ``new_edge`` and twice the original's within a pixel), and at least
    ``min_flat`` of its core (the region less its rim) is flat (3x3 grey std below ``flat_std``): graphics
    drawn on top have a hard outline and flat fills. Otherwise it is a local edit: a removal or a retouch
    blends into its surroundings, a replacement keeps texture."""
    if not changed.any():
        return Regions(0.0, 0.0, 0)
    joined = cv2.dilate(changed.astype(np.uint8), np.ones((group, group), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
    # An edge is new where the original has none within a pixel (a pixel of misalignment is no new edge).
    ea = cv2.dilate(edge_magnitude(a), np.ones((3, 3), np.uint8))
    eb = edge_magnitude(b)
    near_new = cv2.dilate(((eb > new_edge) & (eb > 2.0 * ea)).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    # Flat in grey levels: JPEG halves the colour resolution, so a saturated fill is never flat in colour.
    f = _grey(b)
    mean = cv2.blur(f, (3, 3))
    flat = np.sqrt(np.maximum(cv2.blur(f * f, (3, 3)) - mean * mean, 0)) < flat_std
    inside = np.zeros(changed.shape, bool)
    inside[2:-2, 2:-2] = True
    frame = changed.size
    square3, square5 = np.ones((3, 3), np.uint8), np.ones((5, 5), np.uint8)
    local = overlay = 0.0
    judged, largest = 0, (0, 0.0, 0.0)
    for label in range(1, count):
        x0, y0 = int(stats[label, cv2.CC_STAT_LEFT]), int(stats[label, cv2.CC_STAT_TOP])
        x1, y1 = x0 + int(stats[label, cv2.CC_STAT_WIDTH]), y0 + int(stats[label, cv2.CC_STAT_HEIGHT])
        window = (slice(y0, y1), slice(x0, x1))
        part = changed[window] & (labels[window] == label)
        area = int(part.sum())
        if area < min_region * frame:
            continue
        judged += 1
        filled = cv2.morphologyEx(np.pad(part, 3).astype(np.uint8), cv2.MORPH_CLOSE, square5)
        outline = (filled > 0) & (cv2.erode(filled, square3) == 0)
        outline = outline[3:-3, 3:-3] & inside[window]
        share_new = float(near_new[window][outline].mean()) if outline.any() else 0.0
        core = cv2.erode(part.astype(np.uint8), square3).astype(bool)
        core = core if core.any() else part
        share_flat = float(flat[window][core].mean())
        if area > largest[0]:
            largest = (area, share_new, share_flat)
        if share_new >= min_new_edges and share_flat >= min_flat:
            overlay += area / frame
        else:
            local += area / frame
    return Regions(local, overlay, judged, largest[1], largest[2])
