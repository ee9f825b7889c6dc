"""``ieiw audit sample OUT``: a stratified, seeded sample of a finished build to label.

The population is every candidate of the build that selection decided (``candidates/`` minus nothing:
each candidate is either kept, in a family folder, or in ``rejected/`` with its reason). Per task, each
candidate falls in exactly one stratum:

1. ``near:<rule>:kept`` / ``near:<rule>:rejected``: its value for a selection rule in force lies near that
   rule's threshold (within ``near_share`` of the task's values either side of it, by rank); the first such
   rule in selection's order decides. These strata are sampled more densely (``near_per_stratum``), since
   that is where a threshold's choice is made;
2. ``kept``;
3. ``rejected:<reason>``, one per rejection reason.

From each stratum of ``N`` rows, ``n = min(N, per_stratum)`` are drawn uniformly without replacement with a
generator seeded by (seed, task, stratum), so a rerun draws the same sample. Every sampled item carries its
weight ``N / n`` (the inverse of its inclusion probability): :mod:`ieiw.audit.metrics` undoes the
stratification with it. Each item also carries what the report needs to judge each rule alone: the rule's
value and whether the rule alone rejects it (``fires``); a rejection reason with no threshold (the builder's
drops, ``duplicate``, ``quota_reached``...) is a rule of its own that fires exactly on its rows.

Written to ``OUT/audit/sample.json`` (with the thresholds, the strata's sizes and the settings); labels are
keyed by pair id, so they outlive a resample.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ieiw.audit.summary import AUDIT
from ieiw.filters.scoring import decision_scores
from ieiw.filters.selection import RULES, Calibration, measure
from ieiw.schemas import storage
from ieiw.schemas.layout import CALIBRATION, CANDIDATES, REJECTED, SCORES
from ieiw.schemas.manifest import load_manifest
from ieiw.schemas.rows import canonical_json
from ieiw.schemas.shards import read_shard

SAMPLE = "sample.json"
FORMAT = "ieiw-audit-sample/1"
THRESHOLD_REASONS = frozenset(reason for reason, _, _ in RULES.values())


class AuditError(RuntimeError):
    """A build the audit cannot read, or a sample / labels file that does not fit it."""


@dataclass(frozen=True)
class Settings:
    per_stratum: int = 20
    near_per_stratum: int = 40
    near_share: float = 0.05
    seed: int = 0


def _rejections(out: Path) -> dict[str, str]:
    folder = out / REJECTED
    found: dict[str, str] = {}
    for entry in load_manifest(folder)["units"].values():
        table = read_shard(folder / entry["shard"], columns=["id", "reason"])
        found.update(zip(table["id"].to_pylist(), table["reason"].to_pylist(), strict=True))
    return found


def population(out: Path) -> Iterator[dict[str, Any]]:
    """Every decided candidate: id, task, unit, row (its index in the unit's candidate shard), instruction,
    kept, reason, and its decision scores (the ``scores`` struct with the scorers' side columns merged in)."""
    out = storage.location(out)
    rejected = _rejections(out)
    for unit, entry in sorted(load_manifest(out / CANDIDATES)["units"].items()):
        table = read_shard(out / CANDIDATES / entry["shard"], columns=["id", "task", "instruction"])
        scores_path = out / SCORES / f"{unit}.parquet"
        scores: dict[str, Any] = {}
        if storage.exists(scores_path):
            names = [n for n in storage.read_schema(scores_path).names if n not in ("source_hash", "edit_hash", "duplicate_of")]
            scores = {r["id"]: decision_scores(r) for r in read_shard(scores_path, columns=names).to_pylist()}
        for row, (pair_id, task, instruction) in enumerate(zip(table["id"].to_pylist(), table["task"].to_pylist(),
                                                               table["instruction"].to_pylist(), strict=True)):
            yield {"id": pair_id, "task": task, "unit": unit, "shard": entry["shard"], "row": row,
                   "instruction": instruction, "kept": pair_id not in rejected, "reason": rejected.get(pair_id),
                   "scores": scores.get(pair_id) or {}}


def rule_values(scores: Mapping[str, Any], thresholds: Mapping[str, float | None]) -> tuple[dict[str, float | None], dict[str, bool]]:
    """(value, fires) per selection rule in force: ``fires`` = the rule alone would reject (a missing value
    does not fire: it is ``unscored``, not this rule's doing)."""
    values: dict[str, float | None] = {}
    fires: dict[str, bool] = {}
    for rule, limit in thresholds.items():
        if limit is None or rule not in RULES:
            continue
        value = measure(rule, scores)
        values[rule] = None if value is None else float(value)
        is_min = RULES[rule][1]
        fires[rule] = value is not None and ((value < limit) if is_min else (value > limit))
    return values, fires


def near_bands(values: Mapping[str, list[float]], thresholds: Mapping[str, float | None],
               share: float) -> dict[str, tuple[float, float]]:
    """Per rule, the [low, high] value band around its threshold holding ``share`` of the task's values on each side."""
    bands = {}
    for rule, data in values.items():
        limit = thresholds.get(rule)
        if limit is None or not data:
            continue
        ordered = np.sort(np.asarray(data, np.float64))
        k = max(1, math.ceil(share * len(ordered)))
        at = int(np.searchsorted(ordered, limit))
        bands[rule] = (float(ordered[max(0, at - k)]), float(ordered[min(len(ordered) - 1, at + k - 1)]))
    return bands


def stratum_of(item: Mapping[str, Any], bands: Mapping[str, tuple[float, float]]) -> str:
    for rule in RULES:
        value = item["values"].get(rule)
        if rule in bands and value is not None and bands[rule][0] <= value <= bands[rule][1]:
            return f"near:{rule}:{'kept' if item['kept'] else 'rejected'}"
    return "kept" if item["kept"] else f"rejected:{item['reason']}"


def draw(out: Path, settings: Settings = Settings()) -> dict[str, Any]:
    """The sample (module docstring) as the JSON-ready dict written to ``audit/sample.json``."""
    out = storage.location(out)
    calibration_json = storage.read_json(out / CALIBRATION)
    calibration = Calibration.from_json(calibration_json)
    by_task: dict[str, list[dict[str, Any]]] = {}
    for row in population(out):
        thresholds = calibration.thresholds.get(row["task"], {})
        values, fires = rule_values(row.pop("scores"), thresholds)
        if row["reason"] and row["reason"] not in THRESHOLD_REASONS:
            fires[row["reason"]] = True  # a reason with no threshold: a rule of its own, firing on its rows
        by_task.setdefault(row["task"], []).append({**row, "values": values, "fires": fires})
    items: list[dict[str, Any]] = []
    strata: dict[str, dict[str, int]] = {}
    for task, rows in sorted(by_task.items()):
        thresholds = calibration.thresholds.get(task, {})
        collected: dict[str, list[float]] = {}
        for row in rows:
            for rule, value in row["values"].items():
                if value is not None:
                    collected.setdefault(rule, []).append(value)
        bands = near_bands(collected, thresholds, settings.near_share)
        groups: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            groups.setdefault(stratum_of(row, bands), []).append(row)
        strata[task] = {}
        for stratum, members in sorted(groups.items()):
            members.sort(key=lambda r: r["id"])
            size = settings.near_per_stratum if stratum.startswith("near:") else settings.per_stratum
            n = min(len(members), size)
            rng = random.Random(canonical_json([settings.seed, task, stratum]))
            chosen = sorted(rng.sample(range(len(members)), n))
            strata[task][stratum] = len(members)
            for index in chosen:
                items.append({**members[index], "stratum": stratum, "weight": len(members) / n})
    rules_seen = Counter(rule for item in items for rule in item["fires"])
    return {"format": FORMAT, "settings": settings.__dict__, "thresholds": calibration.thresholds,
            "calibration": calibration_json.get("fingerprint"),
            "strata": strata, "rules": sorted(rules_seen), "items": items}


def write_sample(out: Path, settings: Settings = Settings(), force: bool = False) -> tuple[Path, dict[str, Any]]:
    """Draw and write ``OUT/audit/sample.json``; an existing sample is kept unless ``force``."""
    out = storage.location(out)
    path = out / AUDIT / SAMPLE
    if storage.exists(path) and not force:
        raise AuditError(f"{path} exists (labels refer to it); pass --force to draw a new sample")
    sample = draw(out, settings)
    storage.write_bytes_atomic(path, (canonical_json(sample) + "\n").encode())
    return path, sample


def read_sample(out: Path) -> dict[str, Any]:
    path = storage.location(out) / AUDIT / SAMPLE
    if not storage.exists(path):
        raise AuditError(f"{path}: no audit sample; draw one with `ieiw audit sample {out}`")
    sample = storage.read_json(path)
    if sample.get("format") != FORMAT:
        raise AuditError(f"{path}: not an audit sample of this version ({sample.get('format')!r})")
    return sample
