"""The three per-unit stages of a build, as plain functions any executor can call.

    candidates/<unit>.parquet  --score-->  scores/<unit>.parquet  --select-->  ieiw/<unit>.parquet
                                                                               rejected/<unit>.parquet

Each stage reads the previous stage's shard of the same unit, writes its own shard atomically and
then records it in its folder's manifest. A unit whose manifest entry carries the same fingerprint
(inputs' sha256 + the stage's parameters) is skipped, so a rerun after a kill redoes only unfinished
units, and changing a threshold redoes selection only. Prefect (``ieiw.flows``) only calls these.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from ieiw.builders.base import CandidateBuilder, WorkUnit
from ieiw.builders.removal import RemovalBuilder
from ieiw.crawlers.builder import WebCrawlBuilder
from ieiw.filters.quality import QualityScorer, make_scorer
from ieiw.filters.selection import rejection_reason
from ieiw.schemas.config import BuildConfig
from ieiw.schemas.manifest import Manifest
from ieiw.schemas.rows import REJECTED_SCHEMA, SCHEMA_VERSION, SCORE_SCHEMA, rows_to_table, stable_hash
from ieiw.schemas.shards import read_shard, remove_stale_temp_files, write_shard

log = logging.getLogger("ieiw")

CANDIDATES, SCORES, PAIRS, REJECTED = "candidates", "scores", "ieiw", "rejected"


@dataclass
class UnitOutcome:
    """What a stage did with one unit; small, so any executor can ship it back."""

    stage: str
    unit: str
    skipped: bool
    rows: int
    stats: dict[str, Any] = field(default_factory=dict)


class Build:
    """Everything a stage needs, made once per process from the config."""

    def __init__(self, config: BuildConfig):
        self.config = config
        self.out = Path(config.out_dir)
        self.config_hash = config.digest()
        self.layout = {"unit_size": config.unit_size}
        self.builders: dict[str, CandidateBuilder] = {}
        if config.removal is not None and config.removal.enabled:
            self.builders["removal"] = RemovalBuilder(config.removal, config.unit_size)
        if config.crawl is not None and config.crawl.enabled:
            self.builders["crawl"] = WebCrawlBuilder(config.crawl, Path.cwd())
        self.scorer: QualityScorer = make_scorer(config.scoring.backend)

    def manifest(self, stage: str) -> Manifest:
        return Manifest(self.out / stage, stage, self.layout)

    def backends(self) -> dict[str, str]:
        names = {f"{b}.{k}": v for b, builder in self.builders.items() for k, v in builder.backends().items()}
        names["scoring"] = self.scorer.name + (" (embedded)" if self.scorer.embedded else "")
        return names

    def plan(self) -> list[tuple[str, WorkUnit]]:
        """All units of all builders, and ready the stage folders (cleaning killed writers' temp files)."""
        for stage in (CANDIDATES, SCORES, PAIRS, REJECTED):
            removed = remove_stale_temp_files(self.out / stage)
            if removed:
                log.info("removed %d temp files left by an interrupted run in %s", len(removed), self.out / stage)
            self.manifest(stage).prepare(self.config_hash, self.backends())
        return [(name, unit) for name, builder in self.builders.items() for unit in builder.plan()]


@functools.lru_cache(maxsize=4)
def _cached_build(config_json: str) -> Build:
    return Build(BuildConfig.model_validate_json(config_json))


def build_for(config: BuildConfig) -> Build:
    """One :class:`Build` per config per process: sources and models load once, not per unit."""
    return _cached_build(config.model_dump_json())


def _upstream(build: Build, stage: str, unit: str) -> dict[str, Any]:
    """The manifest entry of ``unit`` in an earlier stage, which this stage reads."""
    entry = build.manifest(stage).entry(unit)
    if entry is None:
        raise RuntimeError(f"unit {unit}: no finished {stage} shard in {build.out / stage}; run that stage first")
    return entry


def make_candidates(build: Build, builder_name: str, unit: WorkUnit) -> UnitOutcome:
    """Stage 1: source records -> candidate pair rows (the expensive, GPU-bound part at paper scale)."""
    builder = build.builders[builder_name]
    manifest = build.manifest(CANDIDATES)
    fingerprint = stable_hash(CANDIDATES, SCHEMA_VERSION, builder_name, builder.fingerprint(), unit.payload)
    if done := manifest.finished(unit.key, fingerprint):
        return UnitOutcome(CANDIDATES, unit.key, True, done["rows"])
    result = builder.build_unit(unit)
    for failure in result.failures:
        log.warning("unit %s: %s", unit.key, failure)
    shard = write_shard(rows_to_table(result.rows), build.out / CANDIDATES / f"{unit.key}.parquet")
    stats = {"builder": builder_name, **result.stats()}
    manifest.record(unit.key, shard, fingerprint, build.config_hash, stats)
    return UnitOutcome(CANDIDATES, unit.key, False, shard.rows, stats)


def score_unit(build: Build, unit: str) -> UnitOutcome:
    """Stage 2: quality scores of each candidate's source and target."""
    manifest = build.manifest(SCORES)
    fingerprint = stable_hash(SCORES, build.scorer.name, _upstream(build, CANDIDATES, unit)["sha256"])
    if done := manifest.finished(unit, fingerprint):
        return UnitOutcome(SCORES, unit, True, done["rows"])
    columns = ["id", "source_image", "target_image", "scores"]
    table = read_shard(build.out / CANDIDATES / f"{unit}.parquet", columns=columns)
    # One call for both columns: remove/add rows share their two images, each is scored once.
    images = [pc.struct_field(table[c], "bytes").to_pylist() for c in ("source_image", "target_image")]
    scored = build.scorer.score_many(images[0] + images[1])
    sources, targets = scored[: table.num_rows], scored[table.num_rows :]
    rows = []
    for rid, upstream, s, t in zip(table["id"].to_pylist(), table["scores"].to_pylist(), sources, targets, strict=True):
        # A builder may have scored the edit itself (the crawl's alignment similarity): keep it, say by whom.
        upstream = upstream or {}
        backend = build.scorer.name
        if upstream.get("edit_consistency") is not None and upstream.get("backend"):
            backend += f"; edit_consistency: {upstream['backend']}"
        scores = {
            "backend": backend,
            "embedded": build.scorer.embedded or bool(upstream.get("embedded")),
            "source_giqa": None,
            "target_giqa": None,
            "edit_consistency": upstream.get("edit_consistency"),
            "source_aesthetic": s,
            "target_aesthetic": t,
        }
        rows.append({"id": rid, "scores": scores})
    shard = write_shard(rows_to_table(rows, SCORE_SCHEMA), build.out / SCORES / f"{unit}.parquet")
    stats = {"scored": len(rows), "scorer": build.scorer.name}
    manifest.record(unit, shard, fingerprint, build.config_hash, stats)
    return UnitOutcome(SCORES, unit, False, shard.rows, stats)


def select_unit(build: Build, unit: str) -> UnitOutcome:
    """Stage 3: apply the selection rules; kept rows (with scores) to ``ieiw/``, the rest to ``rejected/``."""
    rules = build.config.selection
    manifest = build.manifest(PAIRS)
    upstream = _upstream(build, CANDIDATES, unit)
    fingerprint = stable_hash(PAIRS, rules.model_dump(), upstream["sha256"], _upstream(build, SCORES, unit)["sha256"])
    if done := manifest.finished(unit, fingerprint):
        return UnitOutcome(PAIRS, unit, True, done["rows"])
    candidates = read_shard(build.out / CANDIDATES / f"{unit}.parquet")
    score_table = read_shard(build.out / SCORES / f"{unit}.parquet")
    scores = dict(zip(score_table["id"].to_pylist(), score_table["scores"].to_pylist(), strict=True))
    kept, rejected = [], []
    reasons: Counter = Counter()
    for row in candidates.to_pylist():
        row["scores"] = scores.get(row["id"])
        reason = rejection_reason(row["scores"], rules)
        if reason is None:
            kept.append(row)
        else:
            reasons[reason] += 1
            rejected.append({k: row[k] for k in ("id", "task", "origin", "scores")} | {"reason": reason})
    made = upstream["stats"]
    stats = {
        "builder": made.get("builder"),
        "records": made.get("records", 0),
        "failures": made.get("failures", {}),
        "failure_messages": made.get("failure_messages", []),
        "candidates": candidates.num_rows,
        "kept": len(kept),
        "rejected": dict(reasons),
    }
    rejected_shard = write_shard(rows_to_table(rejected, REJECTED_SCHEMA), build.out / REJECTED / f"{unit}.parquet")
    build.manifest(REJECTED).record(unit, rejected_shard, fingerprint, build.config_hash, {"rejected": dict(reasons)})
    shard = write_shard(rows_to_table(kept), build.out / PAIRS / f"{unit}.parquet")
    manifest.record(unit, shard, fingerprint, build.config_hash, stats)
    return UnitOutcome(PAIRS, unit, False, shard.rows, stats)
