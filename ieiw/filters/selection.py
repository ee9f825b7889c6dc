"""The paper's selection rules (PAPER.md, "Quality filtering"), each with a named reason.

A rule answers ``None`` (keep) or a reason string; the first rule that objects decides. Reason
names are stable: stats count by them and tests assert them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ieiw.schemas.config import SelectionConfig

UNSCORED = "unscored"
TARGET_QUALITY_LOW = "target_quality_low"
QUALITY_GAP_HIGH = "quality_gap_high"


def rejection_reason(scores: Mapping[str, Any] | None, rules: SelectionConfig) -> str | None:
    """Why a pair with these ``scores`` is dropped, or ``None`` to keep it."""
    if not scores or scores.get("source_aesthetic") is None or scores.get("target_aesthetic") is None:
        return UNSCORED
    source, target = scores["source_aesthetic"], scores["target_aesthetic"]
    if target < rules.min_target_aesthetic:
        return TARGET_QUALITY_LOW
    if abs(source - target) > rules.max_aesthetic_gap:
        return QUALITY_GAP_HIGH
    return None
