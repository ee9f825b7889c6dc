"""Validate that an edit is a real derivative of the original, align the two into one frame, and name the
edit's kind.

Editors often crop, rescale or re-export, so pixel positions of the original and the edit rarely
match. The pair is expressed in the edit's frame (the edit's pixels are the target, untouched):

1. align (:mod:`ieiw.crawlers.register`): a homography from original to edit by ORB features + RANSAC, by
   a mirrored match (a flip) or, for a featureless original, by intensity (ECC). One within 1 % of a plain
   scale (same aspect ratio), or no better than it, snaps to a resize. Without one, with the same aspect
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
5. changes everything: a derivative whose pixels nearly all changed is rejected unless one colour mapping
   (a tone curve per channel, or a lightness curve with a saturation scale and a cast) explains it.
6. similarity: correlation of grey levels outside the (dilated) changed area.
7. kind (:mod:`ieiw.crawlers.kinds`): ``geometric`` from the transform, ``colour`` from the colour mapping,
   ``resolution`` from the detail at the edit's own resolution, ``local`` / ``overlay`` from the regions
   the colour mapping does not explain. An edit with none of them is a ``no_op``: a re-encode, a resize.
8. collage: a candidate rejected as ``partial_overlap`` or ``non_derivative`` whose shape fits two or three
   copies of the original is split into panels (:mod:`ieiw.crawlers.collage`); when one panel is the
   original unchanged and another an accepted edit, that panel is the target (``composite``).

Each rejection has a stable reason: ``non_derivative``, ``partial_overlap``, ``no_op``,
``changes_everything``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from ieiw.crawlers.collage import find_layouts
from ieiw.crawlers.config import ValidationConfig
from ieiw.crawlers.kinds import NO_OP, NON_DERIVATIVE, join_kinds
from ieiw.crawlers.measures import ColourFit, detail_change, edge_magnitude, fit_colour_map, region_kinds
from ieiw.crawlers.register import diag, footprint, geometry_shift, register, render, scale_to

SNAP = 0.01  # a homography whose corners are within this share of the long side of a plain resize is one

# The kind a rejected candidate records (``edit_kind``): what validation found it to be.
REJECTION_KINDS = {NO_OP: NO_OP, NON_DERIVATIVE: NON_DERIVATIVE, "partial_overlap": "composite",
                   "changes_everything": "colour"}


@dataclass
class Verdict:
    """The outcome for one (original, edit) pair; ``source``/``target`` are set when accepted."""

    reason: str | None  # None: accepted
    message: str
    method: str  # "identity", "resize", "homography", or "none"
    scores: dict[str, Any] = field(default_factory=dict)
    source: np.ndarray | None = None  # original rendered in the target frame (RGB); the original for geometric only
    target: np.ndarray | None = None  # the edit (or its after panel), at most max_side (RGB)
    target_rendered: bool = False  # the target is not the edit as fetched: capped at max_side, or a panel
    kinds: tuple[str, ...] = ()  # accepted: the edit kinds (ieiw.crawlers.kinds.EDIT_KINDS)

    @property
    def ok(self) -> bool:
        return self.reason is None

    @property
    def edit_kind(self) -> str:
        """The row's ``edit_kind``: the kinds joined (``geometric+local``), or what a rejected candidate was."""
        return join_kinds(self.kinds) if self.ok else REJECTION_KINDS.get(self.reason or "", NON_DERIVATIVE)


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
    ea, eb = edge_magnitude(a), edge_magnitude(b)
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


def _explains(a: np.ndarray, b: np.ndarray, H: np.ndarray, cfg: ValidationConfig) -> float:
    """The share of ``b``'s structure that ``a`` warped by ``H`` explains (work size): which of two
    alignments is right."""
    size = (b.shape[1], b.shape[0])
    warped = cv2.warpPerspective(a, H, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return round(_structure(warped, b, footprint(H, a.shape[:2], size), cfg)[0], 3)


def validate_edit(original: np.ndarray, edit: np.ndarray, cfg: ValidationConfig, collages: bool = True) -> Verdict:
    """Align ``edit`` (RGB) to ``original`` (RGB), decide whether the pair is a usable edit and name its kind.

    A candidate rejected as a whole may still be a before|after collage whose after panel is the pair
    (``collages``; the panels themselves are judged without it)."""
    verdict = _validate(original, edit, cfg)
    if collages and cfg.salvage_collages and verdict.reason in ("partial_overlap", NON_DERIVATIVE):
        salvaged = _collage(original, edit, cfg)
        if salvaged is not None:
            return salvaged
    return verdict


def _collage(original: np.ndarray, edit: np.ndarray, cfg: ValidationConfig) -> Verdict | None:
    """The after panel of a before|after collage, as an accepted verdict in that panel's frame; None when the
    candidate has no layout with a panel that is the original unchanged and one that is an accepted edit."""
    oh, ow = original.shape[:2]
    for layout in find_layouts(edit, ow / oh):
        judged = [(box, _validate(original, np.ascontiguousarray(edit[box[1]:box[3], box[0]:box[2]]), cfg))
                  for box in layout.panels]
        if not any(v.reason == NO_OP for _, v in judged):
            continue
        for box, v in judged:
            if v.ok:
                scores = {**v.scores, "panel": list(box), "panels": len(layout.panels), "layout": layout.axis}
                return Verdict(None, f"accepted: panel {list(box)} of a before|after collage", v.method, scores,
                               source=v.source, target=v.target, target_rendered=True,
                               kinds=("composite", *v.kinds))
    return None


def _validate(original: np.ndarray, edit: np.ndarray, cfg: ValidationConfig) -> Verdict:
    """Steps 1-7 of the module docstring on the candidate as a whole."""
    oh, ow = original.shape[:2]
    eh, ew = edit.shape[:2]
    a, sa = scale_to(original, cfg.work_side)
    b, sb = scale_to(edit, cfg.work_side)
    H, found = register(a, b, cfg)
    inliers, ratio, keypoints = found["inliers"], found["inlier_ratio"], found["keypoints"]
    textured = keypoints >= cfg.texture_keypoints
    scores: dict[str, Any] = {"inliers": inliers, "inlier_ratio": ratio, "keypoints": keypoints,
                              "texture": "textured" if textured else "flat"}
    same_aspect = abs((ow / oh) / (ew / eh) - 1.0) < 0.02
    a_wh, b_wh = (a.shape[1], a.shape[0]), (b.shape[1], b.shape[0])
    resize = np.array([[b_wh[0] / a_wh[0], 0, 0], [0, b_wh[1] / a_wh[1], 0], [0, 0, 1]], np.float64)
    feature_aligned = H is not None and not found.get("intensity_aligned")
    geometry = 0.0
    if H is not None:
        geometry = geometry_shift(H, a_wh, b_wh)
        if same_aspect and not found["flipped"] and (geometry <= SNAP or _explains(a, b, resize, cfg) >=
                                                     _explains(a, b, H, cfg)):
            # Within a pixel or so of a resize, or a homography fitted on few features that explains the
            # candidate no better than the plain resize does (a soft or flat photo): the resize.
            method, H, geometry = ("identity" if (oh, ow) == (eh, ew) else "resize"), resize, 0.0
        else:
            method = "homography"
    elif same_aspect:
        method, H = ("identity" if (oh, ow) == (eh, ew) else "resize"), resize  # flat originals only: see the evidence below
    else:
        return Verdict(
            NON_DERIVATIVE,
            f"no alignment: {inliers} RANSAC inliers (ratio {ratio:.2f}) and aspect {ow}x{oh} vs {ew}x{eh}",
            "none",
            scores,
        )
    scores["method"] = method
    if found["flipped"]:
        scores["flipped"] = True
    if found.get("intensity_aligned"):
        scores["intensity_aligned"] = True
    scores["geometry"] = round(geometry, 4)
    # Compare at the edit's own resolution (capped at work_side): upscaling a small edit would make
    # its soft edges count as change. H (work original -> work edit) is rebased on the native original.
    cb = min(1.0, cfg.work_side / max(eh, ew))
    b = (
        cv2.resize(edit, (max(1, round(ew * cb)), max(1, round(eh * cb))), interpolation=cv2.INTER_AREA)
        if cb < 1
        else edit
    )
    b_wh = (b.shape[1], b.shape[0])
    H_cmp = diag(cb / sb) @ H @ diag(sa)
    warped, f = render(original, H_cmp, b_wh)
    valid = footprint(H_cmp, (oh, ow), b_wh)
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
            NON_DERIVATIVE,
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
                NON_DERIVATIVE,
                f"featureless original: its colours cover {flat:.0%} of the candidate "
                f"(need {cfg.min_flat_agreement:.0%})",
                method,
                scores,
            )
    elif structure < cfg.min_structure:
        return Verdict(
            NON_DERIVATIVE,
            f"the original explains {structure:.0%} of the candidate's structure (need {cfg.min_structure:.0%})",
            method,
            scores,
        )
    scores["recoloured"] = round(recoloured, 4)
    colour = fit_colour_map(warped, b, valid, sigma)
    scores.update(colour_model=colour.mapping.model, colour_shift=round(colour.shift, 3))
    if max(changed_fraction, recoloured) > cfg.max_changed:
        # Derived from the original (the structure is there). A colour grade (one colour mapping of the
        # whole image) is still an edit; any other change of nearly every pixel is not.
        scores["grade_residual"] = round(colour.residual, 3)
        if colour.residual > cfg.max_grade_residual:
            return Verdict(
                "changes_everything",
                f"{max(changed_fraction, recoloured):.0%} of the pixels changed, not a colour grade "
                f"(colour-mapping residual {colour.residual:.1f} > {cfg.max_grade_residual})",
                method,
                scores,
            )
    if similarity < cfg.min_similarity:
        # A global colour change leaves only the darkest or flattest pixels "unchanged", where the grey levels
        # hardly correlate: judged again over every pixel the colour mapping explains.
        mapped_changed, _ = _change_map(colour.mapped, b, valid, cfg.pixel_delta_e, sigma)
        calm = valid & ~cv2.dilate(mapped_changed.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
        similarity = max(similarity, _similarity(warped, b, calm if calm.sum() >= 0.05 * valid.sum() else valid))
        scores["similarity"] = round(similarity, 4)
    if similarity < cfg.min_similarity:
        return Verdict(
            NON_DERIVATIVE,
            f"similarity outside the changed area {similarity:.2f} < {cfg.min_similarity}",
            method,
            scores,
        )
    kinds = _kinds(original, edit, H, (sa, sb), method, warped, colour, b, valid, sigma, cfg, scores)
    if not kinds:
        return Verdict(
            NO_OP,
            f"nothing changed: the frame is the original's (shift {geometry:.1%}), the detail too (edge gain "
            f"{scores['edge_gain']:+.2f}), colours moved {colour.shift:.1f} and {scores['changed_regions']:.2%} of "
            f"the pixels changed in regions",
            method,
            scores,
        )
    # Render the pair at output size: the edit capped at max_side, the original warped into its frame
    # (a frame change alone is the edit: the original is the source as it was posted).
    target, st = scale_to(edit, cfg.max_side) if max(eh, ew) > cfg.max_side else (edit, 1.0)
    th, tw = target.shape[:2]
    H_out = diag(st / sb) @ H @ diag(sa)  # native original -> native edit -> output
    if kinds == ("geometric",):
        source = scale_to(original, cfg.max_side)[0] if max(oh, ow) > cfg.max_side else original
        scores["source_frame"] = "original"
    elif method == "identity" and st == 1.0:
        source = original
    else:
        source, _ = render(original, H_out, (tw, th))
    scores["homography"] = [round(float(v), 6) for v in (H_out / H_out[2, 2]).ravel()]
    return Verdict(None, "accepted", method, scores, source=source, target=target, target_rendered=st != 1.0,
                   kinds=kinds)


def _kinds(original: np.ndarray, edit: np.ndarray, H: np.ndarray, scales: tuple[float, float], method: str,
           warped: np.ndarray, colour: ColourFit, b: np.ndarray, valid: np.ndarray, sigma: float,
           cfg: ValidationConfig, scores: dict[str, Any]) -> tuple[str, ...]:
    """The kinds of a derivative, in ``EDIT_KINDS`` order (empty: a no-op); their measures go to ``scores``.

    ``warped``, ``b``, ``valid``: the original in the edit's frame, the edit and the original's footprint, at
    the comparison size; ``colour``: the whole-image colour mapping of ``warped`` onto ``b``."""
    kinds: list[str] = []
    if method == "homography" and (scores["geometry"] >= cfg.min_geometry or scores.get("flipped")):
        kinds.append("geometric")
    recoloured = colour.shift >= cfg.min_colour_shift
    base = colour.mapped if recoloured else warped
    # Detail, at the edit's own resolution (capped at detail_side), away from what changed in regions.
    coarse, _ = _change_map(base, b, valid, cfg.pixel_delta_e, max(sigma, cfg.detail_blur))
    eh, ew = edit.shape[:2]
    cd = min(1.0, cfg.detail_side / max(eh, ew))
    fine = cv2.resize(edit, (max(1, round(ew * cd)), max(1, round(eh * cd))), interpolation=cv2.INTER_AREA) \
        if cd < 1 else edit
    H_det = diag(cd / scales[1]) @ H @ diag(scales[0])
    size = (fine.shape[1], fine.shape[0])
    rendered, _ = render(original, H_det, size, cv2.INTER_CUBIC)
    keep = footprint(H_det, original.shape[:2], size, erode=5)
    exclude = cv2.resize(cv2.dilate(coarse.astype(np.uint8), np.ones((9, 9), np.uint8)), size,
                         interpolation=cv2.INTER_NEAREST).astype(bool)
    detail = detail_change(colour.mapping.apply(rendered), fine, keep & ~exclude)
    scores.update(edge_gain=round(detail.edge_gain, 3), noise_gain=round(detail.noise_gain, 3))
    resolution = abs(detail.edge_gain) >= cfg.min_edge_gain or detail.noise_gain <= -cfg.min_noise_drop
    if resolution:
        kinds.append("resolution")
    if recoloured:
        kinds.append("colour")
    # Regions: what the colour mapping leaves (with sharpened or softened edges blurred away when the detail
    # changed everywhere), and otherwise also where only the fine detail changed (skin smoothed, a texture
    # painted out: local too).
    changed = coarse if resolution else _change_map(base, b, valid, cfg.pixel_delta_e, sigma)[0]
    regions = region_kinds(base, b, changed, cfg.min_region, cfg.new_edge, cfg.min_new_edges,
                           cfg.flat_std, cfg.min_flat)
    share = float(valid.mean()) or 1.0
    local = regions.local / share
    if not resolution:  # structure changed away from any colour change: a retouch
        retouched = cv2.resize(detail.changed.astype(np.uint8), (b.shape[1], b.shape[0]),
                               interpolation=cv2.INTER_NEAREST).astype(bool)
        near = cv2.dilate(changed.astype(np.uint8), np.ones((17, 17), np.uint8)).astype(bool)
        retouched &= valid & ~near
        scores["detail_changed"] = round(float(retouched.sum()) / max(1, int(valid.sum())), 4)
        if retouched.sum() >= cfg.min_region * retouched.size:
            local += float(retouched.mean()) / share
    scores.update(changed_regions=round(float(changed.sum()) / max(1, int(valid.sum())), 4),
                  local_share=round(local, 4), overlay_share=round(regions.overlay / share, 4),
                  region_new_edges=round(regions.new_edges, 3), region_flat=round(regions.flat, 3))
    if local >= cfg.min_changed:
        kinds.append("local")
    if regions.overlay / share >= cfg.min_changed:
        kinds.append("overlay")
    return tuple(kinds)
