"""Selection: the one writer of ``ieiw/`` and ``rejected/`` decides, pair by pair, keep or why not.

A rule answers ``None`` (keep) or a reason string; the first rule that objects decides. Reason
names are stable: stats count by them and tests assert them. In order:

1. the builder's own verdict (``drop_reason``: an object still visible after removal, an edit that is
   no derivative...), filed under that reason with ``rejected_by = "builder"``;
2. ``duplicate`` when the pair duplicates a better one of the build (:mod:`ieiw.filters.dedup`);
3. the paper's quality rules (Geng et al. 2023, "quality filtering"), on the LAION aesthetic score and
   on KNN-GIQA: the target scores low (``target_quality_low``, ``target_giqa_low``), or source and
   target differ a lot (``quality_gap_high`` on |a_s - a_t|, ``giqa_gap_high`` on |ln g_s - ln g_t|:
   GIQA is a 1/distance, so its ratio, not its difference, is scale-free).

Each threshold is a number, ``{quantile: q}`` of the build's candidates of the same task (so "drop the
worst 10% of targets" needs no knowledge of a model's scale), or null (rule off), and ``per_task``
overrides any of them for one task. Quantiles and duplicates are computed over the whole build in one
step before selection (:func:`calibrate`), so each unit's selection depends neither on the runner nor on
the order units finished in.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from ieiw.filters.dedup import Signature, find_duplicates
from ieiw.schemas.config import StrictModel
from ieiw.schemas.registry import register_section

UNSCORED = "unscored"
DUPLICATE = "duplicate"
TARGET_QUALITY_LOW = "target_quality_low"
QUALITY_GAP_HIGH = "quality_gap_high"
TARGET_GIQA_LOW = "target_giqa_low"
GIQA_GAP_HIGH = "giqa_gap_high"
BY_BUILDER, BY_SELECTION = "builder", "selection"


class Quantile(StrictModel):
    quantile: float = Field(ge=0, le=1)


Threshold = float | Quantile | None


def _gap(a: float | None, b: float | None, log: bool = False) -> float | None:
    if a is None or b is None:
        return None
    if log:
        return abs(math.log(max(a, 1e-12)) - math.log(max(b, 1e-12)))
    return abs(a - b)


# rule -> (reason, is a minimum, the measured value from a scores dict)
RULES: dict[str, tuple[str, bool, Any]] = {
    "min_target_aesthetic": (TARGET_QUALITY_LOW, True, lambda s: s.get("target_aesthetic")),
    "max_aesthetic_gap": (QUALITY_GAP_HIGH, False, lambda s: _gap(s.get("source_aesthetic"), s.get("target_aesthetic"))),
    "min_target_giqa": (TARGET_GIQA_LOW, True, lambda s: s.get("target_giqa")),
    "max_giqa_gap": (GIQA_GAP_HIGH, False, lambda s: _gap(s.get("source_giqa"), s.get("target_giqa"), log=True)),
}


class DedupConfig(StrictModel):
    enabled: bool = True
    source_distance: int = Field(4, ge=0, le=4, description="max Hamming distance of the sources' 64-bit pHash")
    edit_similarity: float = Field(0.8, ge=0, le=1, description="min overlap (Jaccard) of the change maps")


@register_section("selection")
class SelectionConfig(StrictModel):
    """The paper's rules (each a number, {quantile: q} of the task's candidates, or null = off) and dedup."""

    min_target_aesthetic: Threshold = 3.5
    max_aesthetic_gap: Threshold = 1.5
    min_target_giqa: Threshold = None
    max_giqa_gap: Threshold = None
    per_task: dict[str, dict[str, Threshold]] = Field(default_factory=dict, description="{task: {rule: threshold}}")
    dedup: DedupConfig = DedupConfig()

    @field_validator("per_task")
    @classmethod
    def _known_rules(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for task, rules in value.items():
            unknown = set(rules) - set(RULES)
            if unknown:
                raise ValueError(f"per_task.{task}: unknown rule(s) {sorted(unknown)}; rules: {sorted(RULES)}")
        return value

    def rules_for(self, task: str) -> dict[str, Threshold]:
        base = {name: getattr(self, name) for name in RULES}
        return {**base, **self.per_task.get(task, {})}


def measure(rule: str, scores: Mapping[str, Any] | None) -> float | None:
    return RULES[rule][2](scores or {})


def rejection_reason(scores: Mapping[str, Any] | None, thresholds: Mapping[str, float | None] | SelectionConfig) -> str | None:
    """Why a pair with these ``scores`` fails the quality rules at these absolute ``thresholds`` (a
    mapping rule -> number or None, or a config whose thresholds are all numbers), or ``None`` to keep."""
    if isinstance(thresholds, SelectionConfig):
        thresholds = {name: getattr(thresholds, name) for name in RULES}
    for rule, (reason, is_min, _) in RULES.items():
        limit = thresholds.get(rule)
        if limit is None:
            continue
        if isinstance(limit, Quantile):
            raise ValueError(f"{rule} is a quantile: resolve it with calibrate() first")
        value = measure(rule, scores)
        if value is None:
            return UNSCORED
        if (value < limit) if is_min else (value > limit):
            return reason
    return None


@dataclass
class Calibration:
    """What selection needs from the whole build: absolute thresholds per task, and the duplicates."""

    thresholds: dict[str, dict[str, float | None]] = field(default_factory=dict)
    duplicates: dict[str, str] = field(default_factory=dict)
    candidates: dict[str, int] = field(default_factory=dict)

    def for_task(self, task: str, config: SelectionConfig) -> dict[str, float | None]:
        if task in self.thresholds:
            return self.thresholds[task]
        # a task calibration never saw (no candidates then): absolute thresholds only
        return {k: (None if isinstance(v, Quantile) else v) for k, v in config.rules_for(task).items()}

    def to_json(self) -> dict[str, Any]:
        return {"thresholds": self.thresholds, "duplicates": dict(sorted(self.duplicates.items())),
                "candidates": self.candidates}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Calibration:
        return cls(dict(data["thresholds"]), dict(data["duplicates"]), dict(data.get("candidates", {})))


@dataclass(frozen=True)
class ScoredPair:
    """The light columns calibration reads per candidate."""

    id: str
    task: str
    scores: Mapping[str, Any] | None
    source_hash: str | None
    edit_hash: str | None
    drop_reason: str | None = None


def calibrate(pairs: Iterable[ScoredPair], config: SelectionConfig) -> Calibration:
    """Resolve quantile thresholds per task and find duplicates, over every candidate of the build.

    Candidates a builder dropped take part in neither: they never reach ``ieiw/``."""
    values: dict[str, dict[str, list[float]]] = {}
    signatures: list[Signature] = []
    counts: Counter = Counter()
    for pair in pairs:
        if pair.drop_reason:
            continue
        counts[pair.task] += 1
        per_rule = values.setdefault(pair.task, {rule: [] for rule in RULES})
        for rule in RULES:
            value = measure(rule, pair.scores)
            if value is not None:
                per_rule[rule].append(value)
        if config.dedup.enabled and pair.source_hash and pair.edit_hash:
            quality = (pair.scores or {}).get("target_aesthetic")
            signatures.append(Signature.from_hashes(pair.id, pair.task, pair.source_hash, pair.edit_hash,
                                                    float(quality) if quality is not None else float("-inf")))
    thresholds: dict[str, dict[str, float | None]] = {}
    for task, per_rule in sorted(values.items()):
        resolved: dict[str, float | None] = {}
        for rule, limit in config.rules_for(task).items():
            if isinstance(limit, Quantile):
                data = per_rule[rule]
                resolved[rule] = float(np.quantile(np.asarray(data, np.float64), limit.quantile)) if data else None
            else:
                resolved[rule] = limit
        thresholds[task] = resolved
    duplicates = find_duplicates(signatures, config.dedup.source_distance, config.dedup.edit_similarity)
    return Calibration(thresholds, duplicates, dict(sorted(counts.items())))


def verdict(row: Mapping[str, Any], thresholds: Mapping[str, float | None]) -> tuple[str | None, str | None]:
    """(reason, rejected_by) for a candidate row with its scores and ``duplicate_of`` merged in;
    (None, None) keeps it."""
    if row.get("drop_reason"):
        return str(row["drop_reason"]), BY_BUILDER
    if row.get("duplicate_of"):
        return DUPLICATE, BY_SELECTION
    reason = rejection_reason(row.get("scores"), thresholds)
    return (reason, BY_SELECTION) if reason else (None, None)
