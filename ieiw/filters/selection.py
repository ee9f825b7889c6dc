"""Selection: the one writer of ``ieiw/`` and ``rejected/`` decides, pair by pair, keep or why not.

A rule answers ``None`` (keep) or a reason string; the first rule that objects decides. Reason
names are stable: stats count by them and tests assert them. In order:

1. the builder's own verdict (``drop_reason``: an object still visible after removal, an edit that is
   no derivative...), filed under that reason with ``rejected_by = "builder"``;
1b. the builder's policy on the row's ``edit_kind`` (``crawl.validation.kinds``: keep or reject crawled edits
   by kind, :func:`ieiw.crawlers.kinds.policy_reason`): ``edit_kind_<kind>``. The builder only measures the
   kind, so changing the policy re-runs selection alone;
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

   With a VLM judge (:mod:`ieiw.filters.vlm_judge`), its three 0-1 scores: ``judge_instruction_low``,
   ``judge_preservation_low``, ``judge_realism_low`` (rules ``min_judge_instruction`` ... , off by default).

   With the ``benchmark-overlap`` scorer (:mod:`ieiw.filters.decontam`): ``benchmark_overlap`` when the source
   or the target lies within ``min_benchmark_phash_distance`` - 1 bits of pHash of a benchmark image, or
   above ``max_benchmark_similarity`` cosine of one (rules off by default; the scores shard's
   ``benchmark_overlap`` column names the benchmark and the image).

4. ``quota_reached``: ``quotas`` caps the kept IEIW rows of a builder (the paper's 159k: ~85k removal + add,
   ~51k replacement, ~23k web). Calibration walks the units in plan order (each builder's ``plan()``, then
   the rows' order inside a unit), counts the rows that pass rules 1-3 and gives each unit an allowance
   (:func:`quota_allowances`); selection keeps that many of the unit's passing rows and files the rest
   under ``quota_reached``. So the kept rows are the first passing ones in plan order, whatever runner made
   the units and in whatever order they finished. Only the ``ieiw`` family is counted or cut.
"""


from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
from pydantic import Field, field_validator

from ieiw.crawlers.kinds import policy_reason
from ieiw.filters.dedup import Signature, find_duplicates
from ieiw.schemas.config import StrictModel
from ieiw.schemas.registry import REGISTRY, register_section

UNSCORED = "unscored"
DUPLICATE = "duplicate"
TARGET_QUALITY_LOW = "target_quality_low"
QUALITY_GAP_HIGH = "quality_gap_high"
TARGET_GIQA_LOW = "target_giqa_low"
GIQA_GAP_HIGH = "giqa_gap_high"
QUOTA_REACHED = "quota_reached"
JUDGE_INSTRUCTION_LOW = "judge_instruction_low"
JUDGE_PRESERVATION_LOW = "judge_preservation_low"
JUDGE_REALISM_LOW = "judge_realism_low"
BENCHMARK_OVERLAP = "benchmark_overlap"
# the rules every family meets, not only IEIW's (ieiw.stages.decide): a benchmark's image in any training pair
DECONTAMINATION_RULES = frozenset({"min_benchmark_phash_distance", "max_benchmark_similarity"})
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
    # the VLM judge's scores (0-1), kept in the scores shard's `judge` column (ieiw.filters.vlm_judge)
    "min_judge_instruction": (JUDGE_INSTRUCTION_LOW, True, lambda s: s.get("judge_instruction")),
    "min_judge_preservation": (JUDGE_PRESERVATION_LOW, True, lambda s: s.get("judge_preservation")),
    "min_judge_realism": (JUDGE_REALISM_LOW, True, lambda s: s.get("judge_realism")),
    # decontamination (ieiw.filters.decontam): nearest benchmark image of the source or target, from the
    # scores shard's `benchmark_overlap` column; either rule rejects with the one reason `benchmark_overlap`
    "min_benchmark_phash_distance": (BENCHMARK_OVERLAP, True, lambda s: s.get("benchmark_overlap_phash_distance")),
    "max_benchmark_similarity": (BENCHMARK_OVERLAP, False, lambda s: s.get("benchmark_overlap_similarity")),
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
    min_judge_instruction: Threshold = None
    min_judge_preservation: Threshold = None
    min_judge_realism: Threshold = None
    min_benchmark_phash_distance: Threshold = Field(
        None, description="reject a pair whose source or target is fewer bits of pHash from a benchmark image (e.g. 9)")
    max_benchmark_similarity: Threshold = Field(
        None, description="reject a pair whose source or target has a higher cosine to a benchmark image (e.g. 0.95)")
    per_task: dict[str, dict[str, Threshold]] = Field(default_factory=dict, description="{task: {rule: threshold}}")
    dedup: DedupConfig = DedupConfig()
    # Keyed by builder (section) name, not by task or origin.dataset: the paper's three sources are its
    # three builders (removal = PhraseCut remove + add, replacement = SA-1B + Open Images, crawl = web), so a
    # task key would split remove from add and a dataset key would split replacement in two.
    quotas: dict[str, Annotated[int, Field(ge=0)] | None] | None = Field(
        None, description="{builder: max kept IEIW rows}, first in plan order; null = no quota")

    @field_validator("quotas")
    @classmethod
    def _known_builders(cls, value: dict[str, int | None] | None) -> dict[str, int | None] | None:
        if value:
            unknown = sorted(name for name in value if REGISTRY.builder(name) is None)
            if unknown:
                raise ValueError(f"unknown builder(s) {unknown}; quotas are keyed by builder section: "
                                 f"{', '.join(REGISTRY.builder_names())}")
        return value

    def quota_limits(self) -> dict[str, int]:
        """The quotas in force (keys with a number), by builder name."""
        return {name: int(limit) for name, limit in sorted((self.quotas or {}).items()) if limit is not None}

    def fingerprint(self) -> dict[str, Any]:
        """What calibration depends on. ``quotas`` counts only while a quota is in force: without one the
        fingerprint equals that of the same config with no ``quotas`` key, so its calibration is reused."""
        return self.model_dump(mode="json", exclude=set() if self.quota_limits() else {"quotas"})

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
    # {"limits": {builder: n}, "passed": {builder: rows passing rules 1-3}, "allowed": {unit: n}}; {} = none
    quotas: dict[str, Any] = field(default_factory=dict)
    # {builder: {edit kind: "keep" | "reject" | "with_other"}}: each builder's kind policy in force
    kind_policies: dict[str, dict[str, str]] = field(default_factory=dict)

    def kind_reason(self, row: Mapping[str, Any]) -> str | None:
        """Why the row's builder's kind policy rejects it (``edit_kind_<kind>``), or None."""
        builder = (row.get("builder") or {}).get("name")
        policy = self.kind_policies.get(builder) if builder else None
        return policy_reason(row.get("edit_kind"), policy) if policy else None

    def allowance(self, unit: str, builder: str | None) -> int | None:
        """How many of ``unit``'s IEIW rows that pass the other rules it may keep; None = no quota. A unit
        of a builder with a quota that calibration never saw may keep none (a quota is never exceeded)."""
        allowed = self.quotas.get("allowed", {})
        if unit in allowed:
            return int(allowed[unit])
        return 0 if builder in self.quotas.get("limits", {}) else None

    def for_task(self, task: str, config: SelectionConfig) -> dict[str, float | None]:
        if task in self.thresholds:
            return self.thresholds[task]
        # a task calibration never saw (no candidates then): absolute thresholds only
        return {k: (None if isinstance(v, Quantile) else v) for k, v in config.rules_for(task).items()}

    def to_json(self) -> dict[str, Any]:
        out = {"thresholds": self.thresholds, "duplicates": dict(sorted(self.duplicates.items())),
               "candidates": self.candidates}
        # no "quotas" key without quotas: a build without them writes the same calibration.json whatever
        # its selection.quotas section holds (none, {}, or only nulls); the same for kind policies
        return (out | ({"quotas": self.quotas} if self.quotas else {})
                | ({"kind_policies": self.kind_policies} if self.kind_policies else {}))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Calibration:
        return cls(dict(data["thresholds"]), dict(data["duplicates"]), dict(data.get("candidates", {})),
                   dict(data.get("quotas", {})), dict(data.get("kind_policies", {})))


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


def verdict(row: Mapping[str, Any], thresholds: Mapping[str, float | None],
            kind_reason: str | None = None) -> tuple[str | None, str | None]:
    """(reason, rejected_by) for a candidate row with its scores and ``duplicate_of`` merged in, and what its
    builder's kind policy says of it (``kind_reason``); (None, None) keeps it."""
    if row.get("drop_reason"):
        return str(row["drop_reason"]), BY_BUILDER
    if kind_reason:
        return kind_reason, BY_SELECTION
    if row.get("duplicate_of"):
        return DUPLICATE, BY_SELECTION
    reason = rejection_reason(row.get("scores"), thresholds)
    return (reason, BY_SELECTION) if reason else (None, None)


def quota_allowances(units: Iterable[tuple[str, str, int]], limits: Mapping[str, int]) -> dict[str, Any]:
    """Share each builder's quota among its units in the order given (plan order).

    ``units``: (unit, builder, rows of the unit that pass every other rule). A unit keeps
    ``min(passing, what is left of its builder's quota)``, so the kept rows are the first passing ones in
    that order. Units of builders without a quota get no allowance (no cut). Returns the ``quotas`` part
    of :class:`Calibration`."""
    left = dict(limits)
    passed: Counter = Counter({name: 0 for name in limits})
    allowed: dict[str, int] = {}
    for unit, builder, passing in units:
        if builder not in left:
            continue
        passed[builder] += passing
        allowed[unit] = min(passing, left[builder])
        left[builder] -= allowed[unit]
    return {"limits": dict(sorted(limits.items())), "passed": dict(sorted(passed.items())),
            "allowed": dict(sorted(allowed.items()))}
