"""Per-source training settings (weights, flips, crops, caption suffixes) looked up one way, so they agree."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def lookup_by_source(table: Mapping[str, Any], dataset: str | None, task: str | None, default: Any,
                     family: str | None = None) -> Any:
    """Most specific match first: "dataset:task", then "dataset", then "task", then ``family`` when given."""
    for key in (f"{dataset}:{task}", dataset, task, family):
        if key is not None and key in table:
            return table[key]
    return default
