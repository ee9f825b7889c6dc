"""Validate that an edit is a real derivative of the original, and align the two into one frame.

Editors often crop, rescale or re-export, so pixel positions of the original and the edit rarely
match. The pair is expressed in the edit's frame (the edit's pixels are the target, untouched):

1. align: ORB features + RANSAC homography from original to edit (OpenCV). A homography that is
   just a scale (same aspect ratio) snaps to a plain resize. With too few inliers and the same aspect
   ratio the images are compared resized; otherwise the edit is not a derivative.
2. coverage: the warped original must cover most of the edit (else the editor added canvas).
3. change map: CIE Lab colour distance after a light blur, cleaned with a morphological open/close.
4. evidence of derivation, on the whole aligned pair before the change map excludes anything. The rule:
   a candidate is a derivative when the original's content covers at least half of it.
   - textured original (at least ``texture_keypoints`` ORB keypoints): the features must have matched
     (``min_inliers``), so the resize fallback is for flat pictures only;
   - structure: the share of the candidate's structure (colour gradient magnitudes, compared by a local
     normalised correlation) that the aligned original explains must reach ``min_structure``. A local
     edit, a caption or a colour grade keeps most of it; an unrelated picture or a meme that reuses a
     small part of the original does not;
   - featureless original (flat and no structure at all): the downscaled colour field must agree over
     ``min_flat_agreement`` of the frame instead.
5. changes everything: a derivative whose pixels nearly all changed is rejected unless one tone curve per
   channel explains the change (a colour grade is an edit; a recolour is not).
6. similarity: correlation of grey levels outside the (dilated) changed area; no-op is judged by the
   changed fraction.

Each rejection has a stable reason: ``non_derivative``, ``partial_overlap``, ``no_op``,
``changes_everything``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from ieiw.crawlers.config import ValidationConfig


@dataclass
class Verdict:
    """The outcome for one (original, edit) pair; ``source``/``target`` are set when accepted."""

    reason: str | None  # None: accepted
    message: str
    method: str  # "identity", "resize", "homography", or "none"
    scores: dict[str, Any] = field(default_factory=dict)
    source: np.ndarray | None = None  # original rendered in the target frame (RGB)
    target: np.ndarray | None = None  # the edit, at most max_side (RGB)
    target_resized: bool = False

    @property
    def ok(self) -> bool:
        return self.reason is None


def _scale_to(img: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    h, w = img.shape[:2]
    s = side / max(h, w)
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    return cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=interp), s


def _diag(s: float) -> np.ndarray:
    return np.array([[s, 0, 0], [0, s, 0], [0, 0, 1]], np.float64)


def _homography(a: np.ndarray, b: np.ndarray, cfg: ValidationConfig) -> tuple[np.ndarray | None, int, float, int]:
    """ORB + ratio test + RANSAC: (H mapping a to b, inliers, inlier ratio, keypoints found in a)."""
    orb = cv2.ORB_create(nfeatures=cfg.orb_features)
    ka, da = orb.detectAndCompute(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), None)
    kb, db = orb.detectAndCompute(cv2.cvtColor(b, cv2.COLOR_RGB2GRAY), None)
    keypoints = len(ka)
    if da is None or db is None or len(ka) < 4 or len(kb) < 4:
        return None, 0, 0.0, keypoints
    matches = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(da, db, k=2)
    good = [m[0] for m in matches if len(m) == 2 and m[0].distance < 0.75 * m[1].distance]
    if len(good) < 4:
        return None, 0, 0.0, keypoints
    src = np.float32([ka[m.queryIdx].pt for m in good]).reshape(-1, 1, 2)
    dst = np.float32([kb[m.trainIdx].pt for m in good]).reshape(-1, 1, 2)
    H, mask = cv2.findHomography(src, dst, cv2.RANSAC, cfg.ransac_reproj_px)
    if H is None or mask is None:
        return None, 0, 0.0, keypoints
    inliers = int(mask.sum())
    return H, inliers, inliers / len(good), keypoints


def _sane(H: np.ndarray) -> bool:
    """Reject degenerate fits: mirrored, collapsed or strongly perspective maps are not edits."""
    det = float(np.linalg.det(H[:2, :2]))
    return det > 0.05 and det < 20 and abs(H[2, 0]) < 2e-3 and abs(H[2, 1]) < 2e-3


def _is_plain_scale(H: np.ndarray, src_wh: tuple[int, int], dst_wh: tuple[int, int], tol: float = 0.01) -> bool:
    """True when H maps the source corners onto the destination corners (a resize)."""
    (sw, sh), (dw, dh) = src_wh, dst_wh
    corners = np.float32([[0, 0], [sw, 0], [sw, sh], [0, sh]]).reshape(-1, 1, 2)
    target = np.float32([[0, 0], [dw, 0], [dw, dh], [0, dh]]).reshape(-1, 1, 2)
    moved = cv2.perspectiveTransform(corners, H)
    return float(np.abs(moved - target).max()) <= tol * max(dw, dh)


def _render(original: np.ndarray, H: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """Warp the native original with H into a frame of ``size``; returns the image and H's scale.

    A strong downscale is done with INTER_AREA first: warpPerspective does not low-pass and would alias.
    """
    oh, ow = original.shape[:2]
    f = float(np.sqrt(abs(np.linalg.det(H[:2, :2]))))
    src, H_src = original, H
    if f < 0.9:
        src = cv2.resize(original, (max(1, round(ow * f)), max(1, round(oh * f))), interpolation=cv2.INTER_AREA)
        H_src = H @ _diag(1.0 / f)
    out = cv2.warpPerspective(src, H_src, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out, f


def _similarity(a: np.ndarray, b: np.ndarray, region: np.ndarray) -> float:
    """Pearson correlation of grey levels in ``region``; flat regions fall back to mean agreement."""
    ga = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)[region].astype(np.float64)
    gb = cv2.cvtColor(b, cv2.COLOR_RGB2GRAY)[region].astype(np.float64)
    if ga.size < 16:
        return 0.0
    sa, sb = ga.std(), gb.std()
    if sa < 3 or sb < 3:
        return float(max(0.0, 1.0 - np.abs(ga - gb).mean() / 50.0))
    return float(((ga - ga.mean()) * (gb - gb.mean())).mean() / (sa * sb))


def _edges(img: np.ndarray) -> np.ndarray:
    """Colour gradient magnitude (grey levels per pixel): where the structure is, whatever its colours."""
    f = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 1.0)
    gx = cv2.Sobel(f, cv2.CV_32F, 1, 0, ksize=3, scale=0.125)
    gy = cv2.Sobel(f, cv2.CV_32F, 0, 1, ksize=3, scale=0.125)
    return np.sqrt((gx * gx + gy * gy).sum(axis=2))


def _structure(a: np.ndarray, b: np.ndarray, valid: np.ndarray, cfg: ValidationConfig) -> tuple[float, float, float]:
    """Share of the candidate's structure that the aligned original explains, over the whole frame.

    Both images go to ``structure_side``; their colour gradient magnitudes are compared by a local
    (Gaussian window) normalised correlation. A pixel is informative where either image has edges or
    texture; it is explained where the correlation exceeds ``structure_match`` inside the original's
    footprint. The result is explained / informative (no change map involved): a local edit or a caption
    leaves most of it, a colour grade or recolour all of it (gradients keep their places), while an
    unrelated picture or a meme that reuses a small part explains little. Returns (share, informative
    share of the frame, share of the frame where the original alone has structure).
    """
    side = cfg.structure_side
    s = min(1.0, side / max(a.shape[:2]))
    if s < 1:
        size = (max(8, round(a.shape[1] * s)), max(8, round(a.shape[0] * s)))
        a = cv2.resize(a, size, interpolation=cv2.INTER_AREA)
        b = cv2.resize(b, size, interpolation=cv2.INTER_AREA)
        valid = cv2.resize(valid.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    ea, eb = _edges(a), _edges(b)
    sigma = cfg.structure_window

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(x, (0, 0), sigma)

    ma, mb = blur(ea), blur(eb)
    va = np.maximum(blur(ea * ea) - ma * ma, 0)
    vb = np.maximum(blur(eb * eb) - mb * mb, 0)
    cov = blur(ea * eb) - ma * mb
    floor = cfg.structure_floor
    corr = cov / (np.sqrt((va + floor**2) * (vb + floor**2)))
    informative = (va > floor**2) | (vb > floor**2)
    explained = informative & valid & (corr > cfg.structure_match)
    n = int(informative.sum())
    return (float(explained.sum() / n) if n else 0.0), float(n / informative.size), float((va > floor**2).mean())


def _flat_agreement(a: np.ndarray, b: np.ndarray, delta_e: float, side: int = 32) -> float:
    """Share of the whole frame, downscaled to ``side``, where the colours agree within ``delta_e`` (Lab).

    The evidence for a featureless original: its content is its low-frequency colour field, which a
    derivative keeps exactly outside the edit while an unrelated picture matches it only by chance.
    """
    s = side / max(a.shape[:2])
    size = (max(4, round(a.shape[1] * s)), max(4, round(a.shape[0] * s)))

    def lab(img: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(cv2.resize(img, size, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0,
                            cv2.COLOR_RGB2Lab)

    return float((np.linalg.norm(lab(a) - lab(b), axis=2) < delta_e).mean())


def _grade_residual(a: np.ndarray, b: np.ndarray, valid: np.ndarray) -> float:
    """Mean error (grey levels) of the best per-channel tone curve mapping ``a`` onto ``b``.

    A colour grade (warmth, contrast, gamma, fade) is such a curve and leaves little; a recolour (hues
    rotated, a colour map) or a local edit does not.
    """
    out = []
    for c in range(3):
        x = a[..., c][valid].ravel()
        y = b[..., c][valid].ravel().astype(np.float64)
        if x.size == 0:
            return 255.0
        counts = np.bincount(x, minlength=256)
        curve = np.bincount(x, weights=y, minlength=256) / np.maximum(counts, 1)
        out.append(float(np.abs(y - curve[x]).mean()))
    return float(np.mean(out))


def _change_map(
    a: np.ndarray, b: np.ndarray, valid: np.ndarray, delta_e: float, sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """(changed pixels, pixels black in both images: they have no colour to change)."""
    la = cv2.cvtColor(cv2.GaussianBlur(a, (0, 0), sigma).astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    lb = cv2.cvtColor(cv2.GaussianBlur(b, (0, 0), sigma).astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    changed = (np.linalg.norm(la - lb, axis=2) > delta_e) & valid
    kernel = np.ones((3, 3), np.uint8)
    changed = cv2.morphologyEx(changed.astype(np.uint8), cv2.MORPH_OPEN, kernel)
    changed = cv2.morphologyEx(changed, cv2.MORPH_CLOSE, kernel)
    black = (la[..., 0] < 12) & (lb[..., 0] < 12) & valid
    return changed.astype(bool) & valid, black


def validate_edit(original: np.ndarray, edit: np.ndarray, cfg: ValidationConfig) -> Verdict:
    """Align ``edit`` (RGB) to ``original`` (RGB) and decide whether the pair is a usable edit."""
    oh, ow = original.shape[:2]
    eh, ew = edit.shape[:2]
    a, sa = _scale_to(original, cfg.work_side)
    b, sb = _scale_to(edit, cfg.work_side)
    H, inliers, ratio, keypoints = _homography(a, b, cfg)
    textured = keypoints >= cfg.texture_keypoints
    scores: dict[str, Any] = {"inliers": inliers, "inlier_ratio": round(ratio, 4), "keypoints": keypoints,
                              "texture": "textured" if textured else "flat"}
    same_aspect = abs((ow / oh) / (ew / eh) - 1.0) < 0.02
    a_wh, b_wh = (a.shape[1], a.shape[0]), (b.shape[1], b.shape[0])
    resize = np.array([[b_wh[0] / a_wh[0], 0, 0], [0, b_wh[1] / a_wh[1], 0], [0, 0, 1]], np.float64)
    feature_aligned = bool(H is not None and inliers >= cfg.min_inliers and ratio >= cfg.min_inlier_ratio and _sane(H))
    if feature_aligned:
        assert H is not None
        if same_aspect and _is_plain_scale(H, a_wh, b_wh):
            method, H = ("identity" if (oh, ow) == (eh, ew) else "resize"), resize
        else:
            method = "homography"
    elif same_aspect:
        method, H = ("identity" if (oh, ow) == (eh, ew) else "resize"), resize  # flat originals only: see the evidence below
    else:
        return Verdict(
            "non_derivative",
            f"no alignment: {inliers} RANSAC inliers (ratio {ratio:.2f}) and aspect {ow}x{oh} vs {ew}x{eh}",
            "none",
            scores,
        )
    scores["method"] = method
    # Compare at the edit's own resolution (capped at work_side): upscaling a small edit would make
    # its soft edges count as change. H (work original -> work edit) is rebased on the native original.
    cb = min(1.0, cfg.work_side / max(eh, ew))
    b = (
        cv2.resize(edit, (max(1, round(ew * cb)), max(1, round(eh * cb))), interpolation=cv2.INTER_AREA)
        if cb < 1
        else edit
    )
    b_wh = (b.shape[1], b.shape[0])
    H_cmp = _diag(cb / sb) @ H @ _diag(sa)
    warped, f = _render(original, H_cmp, b_wh)
    valid = cv2.warpPerspective(np.ones((oh, ow), np.uint8), H_cmp, b_wh, flags=cv2.INTER_NEAREST) > 0
    valid = cv2.erode(valid.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)  # drop resampled borders
    coverage = float(valid.mean())
    scores["coverage"] = round(coverage, 4)
    if coverage < cfg.min_coverage:
        return Verdict("partial_overlap", f"original covers {coverage:.0%} of the edit", method, scores)
    # An original upscaled into the edit frame has soft edges; blur both to that level so
    # resampling alone does not count as change.
    sigma = max(1.0, 0.75 * f)
    changed, black = _change_map(warped, b, valid, cfg.pixel_delta_e, sigma)
    changed_fraction = float(changed.sum() / max(1, valid.sum()))
    recoloured = float((changed & ~black).sum() / max(1, (valid & ~black).sum()))  # of the pixels that carry colour
    outside = valid & ~cv2.dilate(changed.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    region = outside if outside.sum() >= 0.05 * valid.sum() else valid
    similarity = _similarity(warped, b, region)
    scores.update(changed_fraction=round(changed_fraction, 4), similarity=round(similarity, 4))
    scores["feature_aligned"] = feature_aligned
    # Evidence of derivation, on the whole aligned pair (nothing excluded yet): an unrelated picture
    # cannot explain the candidate's structure, however smooth the part that the change map leaves.
    structure, informative, original_structure = _structure(warped, b, valid, cfg)
    scores.update(structure=round(structure, 4), informative=round(informative, 4))
    if textured and not feature_aligned:
        return Verdict(
            "non_derivative",
            f"textured original ({keypoints} keypoints) but {inliers} RANSAC inliers (need {cfg.min_inliers})",
            method,
            scores,
        )
    if not textured and original_structure < cfg.min_informative:
        # Featureless original: no structure to explain, so its colour field must cover the frame.
        flat = _flat_agreement(warped, b, cfg.flat_delta_e)
        scores["flat_agreement"] = round(flat, 4)
        if flat < cfg.min_flat_agreement:
            return Verdict(
                "non_derivative",
                f"featureless original: its colours cover {flat:.0%} of the candidate "
                f"(need {cfg.min_flat_agreement:.0%})",
                method,
                scores,
            )
    elif structure < cfg.min_structure:
        return Verdict(
            "non_derivative",
            f"the original explains {structure:.0%} of the candidate's structure (need {cfg.min_structure:.0%})",
            method,
            scores,
        )
    scores["recoloured"] = round(recoloured, 4)
    if max(changed_fraction, recoloured) > cfg.max_changed:
        # Derived from the original (the structure is there). A colour grade (one tone curve per channel)
        # is still an edit; any other change of nearly every pixel is not.
        residual = _grade_residual(warped, b, valid)
        scores["grade_residual"] = round(residual, 3)
        if residual > cfg.max_grade_residual:
            return Verdict(
                "changes_everything",
                f"{max(changed_fraction, recoloured):.0%} of the pixels changed, not a colour grade "
                f"(tone-curve residual {residual:.1f} > {cfg.max_grade_residual})",
                method,
                scores,
            )
    if similarity < cfg.min_similarity:
        return Verdict(
            "non_derivative",
            f"similarity outside the changed area {similarity:.2f} < {cfg.min_similarity}",
            method,
            scores,
        )
    if changed_fraction < cfg.min_changed:
        return Verdict("no_op", f"only {changed_fraction:.2%} of the pixels changed", method, scores)
    # Render the pair at output size: the edit capped at max_side, the original warped into its frame.
    target, st = _scale_to(edit, cfg.max_side) if max(eh, ew) > cfg.max_side else (edit, 1.0)
    th, tw = target.shape[:2]
    H_out = _diag(st / sb) @ H @ _diag(sa)  # native original -> native edit -> output
    if method == "identity" and st == 1.0:
        source = original
    else:
        source, _ = _render(original, H_out, (tw, th))
    scores["homography"] = [round(float(v), 6) for v in (H_out / H_out[2, 2]).ravel()]
    return Verdict(None, "accepted", method, scores, source=source, target=target, target_resized=st != 1.0)
