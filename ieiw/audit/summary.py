"""Where an audit lives in a build (``OUT/audit/``) and its last report as the build's outputs show it (stats.json,
the dataset card, the HTML report). Light on purpose: ``ieiw stats`` imports it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ieiw.schemas import storage
from ieiw.schemas.layout import CALIBRATION

AUDIT = "audit"
REPORT = "report.json"


def summary(root: Path) -> dict[str, Any] | None:
    """The last ``ieiw audit report`` of the build at ``root``, with ``stale`` = the build's selection changed
    since the sample was drawn (another calibration); None when no audit was reported."""
    root = storage.location(root)
    path = root / AUDIT / REPORT
    if not storage.exists(path):
        return None
    report = storage.read_json(path)
    calibration = root / CALIBRATION
    current = storage.read_json(calibration).get("fingerprint") if storage.exists(calibration) else None
    return {**report, "stale": report.get("calibration") != current}
