"""The one region policy: which regions of an image become candidates, for removal and replacement alike.

Both builders skip regions by the same rules, counted under the same reasons in the stats: area bounds,
score thresholds (where the source has scores), the image border, and (PhraseCut) phrases that name
several instances; replacement then keeps at most ``max_per_image`` of the survivors. Each builder gives
its own defaults (:data:`REMOVAL_DEFAULTS`), so one class documents every key.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Literal

from pydantic import Field, model_validator

from ieiw.schemas.config import StrictModel
from ieiw.sources.regions import Region

# Skip reasons, in the order the checks run (a region counts under the first it fails).
REASONS = (
    "multi_instance",
    "region_too_small",
    "region_too_large",
    "low_predicted_iou",
    "low_stability",
    "touches_border",
    "over_per_image_limit",
)


class RegionPolicy(StrictModel):
    """Which regions become candidates; each skip is counted under its reason in the stats.

    Checks run in the order of :data:`REASONS`. Score thresholds apply only to regions that have the score
    (SA-1B, SAM; Open Images' PredictedIoU where filled); a region without it passes, one whose score is NaN or
    infinite fails (the readers refuse such scores; this guards other sources). ``max_per_image`` then
    keeps the first N of an image's survivors ranked by ``rank``."""

    min_area: float = Field(0.005, ge=0, le=1, description="skip regions covering less of the image "
                                                            "(region_too_small); removal's default is 0.002")
    max_area: float = Field(0.5, ge=0, le=1, description="skip regions covering more (region_too_large)")
    multi_instance: Literal["all", "skip"] = Field(
        "all", description="PhraseCut: a phrase naming several instances: mask them all (the official rule) "
                           "or skip (multi_instance)")
    min_predicted_iou: float | None = Field(None, ge=0, le=1, description="skip regions whose source's predicted "
                                                                          "IoU is lower (low_predicted_iou)")
    min_stability_score: float | None = Field(None, ge=0, le=1, description="skip regions whose stability score "
                                                                            "is lower (low_stability)")
    border: Literal["keep", "skip"] = Field(
        "keep", description="regions touching the image border: keep, or skip (touches_border): the object "
                            "goes on outside the frame, so its removal leaves a cut edge")
    border_margin: int = Field(1, ge=1, description="px from the edge that count as touching it")
    max_per_image: int | None = Field(8, ge=1, description="replacement: keep at most this many regions per "
                                                            "image (over_per_image_limit); null = all")
    rank: Literal["area", "score"] = Field(
        "area", description="which survivors max_per_image keeps: the largest (area), or the best scored "
                            "(score: predicted IoU, then stability, then area; unscored regions rank by area "
                            "after scored ones)")

    @model_validator(mode="after")
    def _bounds(self) -> RegionPolicy:
        if self.min_area > self.max_area:
            raise ValueError(f"min_area {self.min_area} is above max_area {self.max_area}")
        return self

    def skip_reason(self, share: float, touches_border: Callable[[int], bool], instances: int = 1,
                    predicted_iou: float | None = None, stability_score: float | None = None) -> str | None:
        """The first rule a region fails (a reason of :data:`REASONS`), or None when it passes.

        ``share`` is the region's part of the image; ``touches_border(margin)`` says whether it comes within
        ``margin`` px of the edge (asked only when ``border`` is ``skip``). NaN-safe: every test is written as
        "passes only if the comparison holds", so a NaN share fails ``region_too_small`` and a NaN or infinite
        score fails its threshold (a comparison with NaN is False, which would otherwise let it through)."""
        if instances > 1 and self.multi_instance == "skip":
            return "multi_instance"
        if not share >= self.min_area:
            return "region_too_small"
        if not share <= self.max_area:
            return "region_too_large"
        if self.min_predicted_iou is not None and predicted_iou is not None and not _at_least(
                predicted_iou, self.min_predicted_iou):
            return "low_predicted_iou"
        if self.min_stability_score is not None and stability_score is not None and not _at_least(
                stability_score, self.min_stability_score):
            return "low_stability"
        if self.border == "skip" and touches_border(self.border_margin):
            return "touches_border"
        return None


# Removal's own defaults: smaller regions pass (a PhraseCut phrase names a whole object, often a small one),
# and no per-image cap (each record is its own pair).
REMOVAL_DEFAULTS = {"min_area": 0.002, "max_per_image": None}


def with_defaults(section: Any, defaults: dict[str, Any]) -> Any:
    """A ``regions:`` section with a builder's own defaults under the keys it leaves out (a partial section
    keeps them too); a policy object or anything else is returned unchanged, for pydantic to judge."""
    if section is None:
        return dict(defaults)
    if isinstance(section, dict):
        return {**defaults, **section}
    return section


def removal_policy() -> RegionPolicy:
    return RegionPolicy(**REMOVAL_DEFAULTS)


def replacement_policy() -> RegionPolicy:
    return RegionPolicy()


def region_touches_border(region: Region, margin: int = 1) -> bool:
    """Whether the mask has a pixel within ``margin`` px of the edge (exact: ``bbox`` is the mask's
    tight box)."""
    x, y, w, h = region.bbox
    return x < margin or y < margin or x + w > region.width - margin or y + h > region.height - margin


def _at_least(score: float, threshold: float) -> bool:
    """``score >= threshold`` for a finite score; NaN and the infinities never pass (an absurd score)."""
    return math.isfinite(score) and score >= threshold


def _finite_or_none(score: float | None) -> float | None:
    return score if score is not None and math.isfinite(score) else None


def _rank_key(policy: RegionPolicy, index: int, region: Region) -> tuple:
    if policy.rank == "score":  # a NaN or infinite score ranks as no score (NaN would break the sort's order)
        iou, stability = _finite_or_none(region.predicted_iou), _finite_or_none(region.stability_score)
        scored = iou is not None or stability is not None
        return (not scored, -(iou or 0.0), -(stability or 0.0), -region.area, index)
    return (-region.area, index)


def choose(regions: Iterable[Region], policy: RegionPolicy) -> tuple[list[Region], Counter]:
    """The regions of ONE image that ``policy`` keeps (in the input's order), and the skipped ones counted
    by reason (:data:`REASONS`). Never decodes a mask. Raises ``ValueError`` for regions of several images."""
    regions = list(regions)
    if len({(r.dataset, r.image_id) for r in regions}) > 1:
        raise ValueError("choose() takes the regions of one image; got several images")
    skipped: Counter = Counter()
    survivors: list[tuple[int, Region]] = []
    for index, region in enumerate(regions):
        reason = policy.skip_reason(region.area_share, lambda margin, r=region: region_touches_border(r, margin),
                                    predicted_iou=region.predicted_iou, stability_score=region.stability_score)
        if reason is None:
            survivors.append((index, region))
        else:
            skipped[reason] += 1
    if policy.max_per_image is not None and len(survivors) > policy.max_per_image:
        ranked = sorted(survivors, key=lambda item: _rank_key(policy, *item))
        kept_indices = {index for index, _ in ranked[: policy.max_per_image]}
        skipped["over_per_image_limit"] += len(survivors) - len(kept_indices)
        survivors = [(index, region) for index, region in survivors if index in kept_indices]
    return [region for _, region in survivors], skipped
