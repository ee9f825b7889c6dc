"""Register an edit onto its original: the transform that puts the original into the edit's frame.

ORB features + ratio test + RANSAC homography (OpenCV) first; when no homography passes, again with three
times the features (a busy pasted object, a caption, can take most of the edit's strongest corners), then from
the mirrored original (a flip), and, for an original with too few corners for ORB, by aligning the intensities
(OpenCV's ECC). ``ieiw.crawlers.align`` decides what the registered pair is; this module only finds the
transform and renders the original with it.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from ieiw.crawlers.config import ValidationConfig


def scale_to(img: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    """``img`` resized to ``side`` px on its long side (INTER_AREA when shrinking), and the scale."""
    h, w = img.shape[:2]
    s = side / max(h, w)
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    return cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=interp), s


def diag(s: float) -> np.ndarray:
    """The homography of a uniform scale by ``s``."""
    return np.array([[s, 0, 0], [0, s, 0], [0, 0, 1]], np.float64)


def homography(a: np.ndarray, b: np.ndarray, cfg: ValidationConfig) -> tuple[np.ndarray | None, int, float, int]:
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


def sane(H: np.ndarray) -> bool:
    """Reject degenerate fits: mirrored, collapsed or strongly perspective maps are not edits."""
    det = float(np.linalg.det(H[:2, :2]))
    return det > 0.05 and det < 20 and abs(H[2, 0]) < 2e-3 and abs(H[2, 1]) < 2e-3


def geometry_shift(H: np.ndarray, src_wh: tuple[int, int], dst_wh: tuple[int, int]) -> float:
    """How far H is from the plain resize of the source frame onto the destination frame: the largest
    corner shift, as a share of the destination's long side (0 for a resize, ~0.05 for a 3 degree turn)."""
    (sw, sh), (dw, dh) = src_wh, dst_wh
    corners = np.float32([[0, 0], [sw, 0], [sw, sh], [0, sh]]).reshape(-1, 1, 2)
    target = np.float32([[0, 0], [dw, 0], [dw, dh], [0, dh]]).reshape(-1, 1, 2)
    moved = cv2.perspectiveTransform(corners, H)
    return float(np.abs(moved - target).max()) / max(dw, dh)


def render(original: np.ndarray, H: np.ndarray, size: tuple[int, int],
            interpolation: int = cv2.INTER_LINEAR) -> tuple[np.ndarray, float]:
    """Warp the native original with H into a frame of ``size``; returns the image and H's scale.

    A strong downscale is done with INTER_AREA first: warpPerspective does not low-pass and would alias.
    """
    oh, ow = original.shape[:2]
    f = float(np.sqrt(abs(np.linalg.det(H[:2, :2]))))
    src, H_src = original, H
    if f < 0.9:
        src = cv2.resize(original, (max(1, round(ow * f)), max(1, round(oh * f))), interpolation=cv2.INTER_AREA)
        H_src = H @ diag(1.0 / f)
    out = cv2.warpPerspective(src, H_src, size, flags=interpolation, borderMode=cv2.BORDER_REPLICATE)
    return out, f


def footprint(H: np.ndarray, original_hw: tuple[int, int], size: tuple[int, int], erode: int = 3) -> np.ndarray:
    """Pixels of a ``size`` frame the warped original covers, less its resampled border."""
    oh, ow = original_hw
    valid = cv2.warpPerspective(np.ones((oh, ow), np.uint8), H, size, flags=cv2.INTER_NEAREST)
    return cv2.erode(valid, np.ones((erode, erode), np.uint8)).astype(bool)


def register(a: np.ndarray, b: np.ndarray, cfg: ValidationConfig) -> tuple[np.ndarray | None, dict[str, Any]]:
    """The feature alignment of work-size ``a`` onto ``b`` (or of ``a`` mirrored, a flip), if one passes."""
    H, inliers, ratio, keypoints = homography(a, b, cfg)
    found = {"inliers": inliers, "inlier_ratio": round(ratio, 4), "keypoints": keypoints, "flipped": False}
    if H is not None and inliers >= cfg.min_inliers and ratio >= cfg.min_inlier_ratio and sane(H):
        return H, found
    # A busy new object (a pasted patch, a caption) can take most of the edit's strongest corners: again with
    # more of them before trying a mirror.
    wide = cfg.model_copy(update={"orb_features": 3 * cfg.orb_features})
    Hw, inliers_w, ratio_w, _ = homography(a, b, wide)
    if Hw is not None and inliers_w >= cfg.min_inliers and ratio_w >= cfg.min_inlier_ratio and sane(Hw):
        found.update(inliers=inliers_w, inlier_ratio=round(ratio_w, 4))
        return Hw, found
    mirrored = np.ascontiguousarray(a[:, ::-1])
    Hm, inliers_m, ratio_m, _ = homography(mirrored, b, cfg)
    if Hm is not None and inliers_m >= cfg.min_inliers and ratio_m >= cfg.min_inlier_ratio and sane(Hm):
        flip = np.array([[-1, 0, a.shape[1] - 1], [0, 1, 0], [0, 0, 1]], np.float64)
        found.update(inliers=inliers_m, inlier_ratio=round(ratio_m, 4), flipped=True)
        return Hm @ flip, found
    if keypoints < cfg.texture_keypoints:  # too few corners to match: align the intensities instead
        He = intensity_alignment(a, b)
        if He is not None:
            found["intensity_aligned"] = True
            return He, found
    return None, found


def intensity_alignment(a: np.ndarray, b: np.ndarray, side: int = 256, min_correlation: float = 0.85) -> np.ndarray | None:
    """A homography of ``a`` onto ``b`` (work size) by OpenCV's ECC (enhanced correlation coefficient), for
    originals with too few corners for ORB: started from the plain resize and from the original scaled to
    cover the candidate (a crop), kept when the grey levels then correlate by ``min_correlation``."""
    s = side / max(a.shape[:2] + b.shape[:2])
    ga = cv2.resize(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    gb = cv2.resize(cv2.cvtColor(b, cv2.COLOR_RGB2GRAY), None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    (ah, aw), (bh, bw) = ga.shape, gb.shape
    cover = max(bw / aw, bh / ah)
    starts = [np.array([[bw / aw, 0, 0], [0, bh / ah, 0], [0, 0, 1]]),
              np.array([[cover, 0, (bw - cover * aw) / 2], [0, cover, (bh - cover * ah) / 2], [0, 0, 1]])]
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-6)
    best: tuple[float, np.ndarray] | None = None
    for start in starts:
        warp = np.linalg.inv(start).astype(np.float32)  # ECC maps the template (b) onto the input (a)
        try:
            score, warp = cv2.findTransformECC(gb, ga, warp, cv2.MOTION_HOMOGRAPHY, criteria, None, 5)
        except cv2.error:  # did not converge
            continue
        if score >= min_correlation and (best is None or score > best[0]):
            best = (float(score), warp)
    if best is None:
        return None
    H = diag(1 / s) @ np.linalg.inv(best[1].astype(np.float64)) @ diag(s)
    H /= H[2, 2]
    return H if sane(H) else None
