"""Selection: the one writer of ``ieiw/`` and ``rejected/`` decides, pair by pair, keep or why not.

A rule answers ``None`` (keep) or a reason string; the first rule that objects decides. Reason
names are stable: stats count by them and tests assert them. In order:

1. the builder's own verdict (``drop_reason``: an object still visible after removal, an edit that is
   no derivative...), filed under that reason with ``rejected_by = "builder"``;
2. ``duplicate`` when a scorer marked the row a duplicate of another (``duplicate_of``);
3. the paper's two quality rules (Geng et al. 2023, "quality filtering"): the target scores low
   (``target_quality_low``), or source and target scores differ a lot (``quality_gap_high``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ieiw.schemas.config import StrictModel
from ieiw.schemas.registry import register_section

UNSCORED = "unscored"
DUPLICATE = "duplicate"
TARGET_QUALITY_LOW = "target_quality_low"
QUALITY_GAP_HIGH = "quality_gap_high"
BY_BUILDER, BY_SELECTION = "builder", "selection"


@register_section("selection")
class SelectionConfig(StrictModel):
    """The paper's two rules: drop low-quality targets, and pairs whose quality changes a lot."""

    min_target_aesthetic: float = 3.5
    max_aesthetic_gap: float = 1.5


def rejection_reason(scores: Mapping[str, Any] | None, rules: SelectionConfig) -> str | None:
    """Why a pair with these ``scores`` is dropped by the quality rules, or ``None`` to keep it."""
    if not scores or scores.get("source_aesthetic") is None or scores.get("target_aesthetic") is None:
        return UNSCORED
    source, target = scores["source_aesthetic"], scores["target_aesthetic"]
    if target < rules.min_target_aesthetic:
        return TARGET_QUALITY_LOW
    if abs(source - target) > rules.max_aesthetic_gap:
        return QUALITY_GAP_HIGH
    return None


def verdict(row: Mapping[str, Any], rules: SelectionConfig) -> tuple[str | None, str | None]:
    """(reason, rejected_by) for a candidate row with its scores and ``duplicate_of`` merged in;
    (None, None) keeps it."""
    if row.get("drop_reason"):
        return str(row["drop_reason"]), BY_BUILDER
    if row.get("duplicate_of"):
        return DUPLICATE, BY_SELECTION
    reason = rejection_reason(row.get("scores"), rules)
    return (reason, BY_SELECTION) if reason else (None, None)
