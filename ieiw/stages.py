"""The per-unit stages of a build, as plain functions any executor can call.

    prepare + plan (once)
    candidates/<unit>.parquet --features--> features/<unit>.parquet --score--> scores/<unit>.parquet
                                                                     --select--> ieiw/<unit>.parquet
                                                                                 rejected/<unit>.parquet

Each stage reads earlier stages' shards of the same unit, writes its own shard atomically and then
records it in its folder's manifest. A unit whose manifest entry carries the same fingerprint
(inputs' sha256 + the stage's parameters + the digests of the model files it uses) is skipped, so a
rerun after a kill redoes only unfinished units, changing a threshold redoes selection only, and
changing a scorer redoes scoring and selection. Selection is the one writer of ``ieiw/`` and
``rejected/``. Prefect (``ieiw.flows``) only calls these functions.

Nothing here loads a model: builders, the feature extractor and the scorers are made when a stage
first needs them in this process, so a selection-only rerun never constructs an inpainter.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ieiw.builders.base import BuildContext, CandidateBuilder, WorkUnit
from ieiw.filters.features import ImageFeatures, describe_backend
from ieiw.filters.scoring import ScoreContext, Scorer, distinct_images, pair_views, score_pairs
from ieiw.filters.selection import verdict
from ieiw.imageio import Orientation, decode
from ieiw.schemas.config import BuildConfig, config_from_data
from ieiw.schemas.manifest import Manifest
from ieiw.schemas.registry import REGISTRY
from ieiw.schemas.rows import (
    FEATURE_SCHEMA,
    PAIR_SCHEMA,
    REJECTED_SCHEMA,
    SCHEMA_VERSION,
    SCORE_SCHEMA,
    assign_split,
    rows_to_table,
    stable_hash,
    with_metadata,
)
from ieiw.schemas.shards import read_shard, remove_stale_temp_files, write_shard

log = logging.getLogger("ieiw")

CANDIDATES, FEATURES, SCORES, PAIRS, REJECTED = "candidates", "features", "scores", "ieiw", "rejected"
STAGES = (CANDIDATES, FEATURES, SCORES, PAIRS, REJECTED)
CANDIDATE_COLUMNS = ["id", "task", "instruction", "source_image", "target_image", "mask", "scores"]


@dataclass
class UnitOutcome:
    """What a stage did with one unit; small, so any executor can ship it back."""

    stage: str
    unit: str
    skipped: bool
    rows: int
    stats: dict[str, Any] = field(default_factory=dict)


class Build:
    """Everything a stage needs, made once per process from the config. Cheap to make: builders are
    constructed (no model loads), the extractor and scorers only when first asked for."""

    def __init__(self, config: BuildConfig):
        self.config = config
        self.out = Path(config.out_dir)
        self.config_hash = config.digest()
        self.layout = {"unit_size": config.unit_size}
        context = BuildContext(root=Path.cwd(), out_dir=self.out, unit_size=config.unit_size)
        self.builders: dict[str, CandidateBuilder] = {
            name: REGISTRY.builder(name).create(section, context)  # type: ignore[union-attr]
            for name, section in config.builder_sections().items()
        }
        self._lock = threading.Lock()
        self._features: ImageFeatures | None = None
        self._scorers: list[Scorer] | None = None

    @functools.cached_property
    def builder_fingerprints(self) -> dict[str, str]:
        """Per builder, computed once (it may hash model files)."""
        return {name: stable_hash(b.fingerprint()) for name, b in self.builders.items()}

    @functools.cached_property
    def features_fingerprint(self) -> str:
        return stable_hash(self.config.scoring.features.fingerprint())

    @functools.cached_property
    def scorers_fingerprint(self) -> str:
        return stable_hash([s.fingerprint() for s in self.config.scoring.scorers])

    @property
    def features(self) -> ImageFeatures:
        with self._lock:
            if self._features is None:
                self._features = self.config.scoring.features.create()
            return self._features

    @property
    def scorers(self) -> list[Scorer]:
        with self._lock:
            if self._scorers is None:
                self._scorers = [s.create() for s in self.config.scoring.scorers]
            return self._scorers

    def manifest(self, stage: str) -> Manifest:
        return Manifest(self.out / stage, stage, self.layout)

    def backends(self) -> dict[str, str]:
        names = {f"{b}.{k}": v for b, builder in self.builders.items() for k, v in builder.backends().items()}
        scoring = self.config.scoring
        names["features"] = scoring.features.label() + (" (embedded)" if scoring.features.embedded else "")
        names["scoring"] = ", ".join(s.label() + (" (embedded)" if s.embedded else "") for s in scoring.scorers)
        return names

    def prepare(self) -> None:
        """Once per build: the builders' own preparation (e.g. writing a bundled sample), then the
        stage folders (checked, and cleaned of killed writers' temp files)."""
        for builder in self.builders.values():
            builder.prepare()
        for stage in STAGES:
            removed = remove_stale_temp_files(self.out / stage)
            if removed:
                log.info("removed %d temp files left by an interrupted run in %s", len(removed), self.out / stage)
            self.manifest(stage).prepare(self.config_hash, self.backends())

    def plan(self) -> list[tuple[str, WorkUnit]]:
        """All units of all builders, in a fixed order."""
        return [(name, unit) for name, builder in self.builders.items() for unit in builder.plan()]


_builds: dict[str, Build] = {}
_builds_lock = threading.Lock()


def build_for(config: BuildConfig | dict[str, Any]) -> Build:
    """One :class:`Build` per config per process: sources and models load once, not per unit.
    Accepts the config's JSON form (what flow tasks receive, so any task runner can ship it)."""
    if isinstance(config, dict):
        config = config_from_data(config)
    key = config.model_dump_json()
    with _builds_lock:
        if key not in _builds:
            if len(_builds) >= 4:
                _builds.pop(next(iter(_builds)))
            _builds[key] = Build(config)
        return _builds[key]


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
    fingerprint = stable_hash(CANDIDATES, SCHEMA_VERSION, builder_name, build.builder_fingerprints[builder_name],
                              unit.payload)
    if done := manifest.finished(unit.key, fingerprint):
        return UnitOutcome(CANDIDATES, unit.key, True, done["rows"])
    result = builder.build_unit(unit)
    for failure in result.failures:
        log.warning("unit %s: %s", unit.key, failure)
    shard = write_shard(rows_to_table(result.rows), build.out / CANDIDATES / f"{unit.key}.parquet")
    dropped = Counter(row["drop_reason"] for row in result.rows if row.get("drop_reason"))
    stats = {"builder": builder_name, **result.stats(), "dropped": dict(dropped)}
    manifest.record(unit.key, shard, fingerprint, stats)
    return UnitOutcome(CANDIDATES, unit.key, False, shard.rows, stats)


def extract_features(build: Build, unit: str) -> UnitOutcome:
    """Stage 2: one embedding per distinct image of the unit, stored float16."""
    manifest = build.manifest(FEATURES)
    fingerprint = stable_hash(FEATURES, build.features_fingerprint, _upstream(build, CANDIDATES, unit)["sha256"])
    if done := manifest.finished(unit, fingerprint):
        return UnitOutcome(FEATURES, unit, True, done["rows"])
    table = read_shard(build.out / CANDIDATES / f"{unit}.parquet", columns=CANDIDATE_COLUMNS)
    images = distinct_images(pair_views(table))
    extractor = build.features
    vectors = extractor.image_features([decode(i.data, Orientation.IGNORE).pixels for i in images])
    shard = write_shard(feature_table([i.key for i in images], vectors), build.out / FEATURES / f"{unit}.parquet")
    stats = {"images": len(images), **describe_backend(extractor)}
    manifest.record(unit, shard, fingerprint, stats)
    return UnitOutcome(FEATURES, unit, False, shard.rows, stats)


def feature_table(keys: list[str], vectors: np.ndarray) -> pa.Table:
    """The features shard: image key -> float16 embedding (a list column, any dimension)."""
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float16).ravel())
    dim = vectors.shape[1] if vectors.ndim == 2 else 0
    offsets = pa.array(np.arange(0, len(keys) * dim + 1, max(dim, 1), dtype=np.int32)[: len(keys) + 1])
    embedding = pa.ListArray.from_arrays(offsets, flat)
    return pa.Table.from_arrays([pa.array(keys, pa.string()), embedding], schema=with_metadata(FEATURE_SCHEMA))


def load_embeddings(path: Path) -> dict[str, np.ndarray]:
    table = read_shard(path)
    keys = table["image"].to_pylist()
    if not keys:
        return {}
    flat = table["embedding"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return dict(zip(keys, flat.astype(np.float32).reshape(len(keys), -1), strict=True))


def score_unit(build: Build, unit: str) -> UnitOutcome:
    """Stage 3: every scorer over the unit's pairs, sharing decoded pixels and stored embeddings."""
    manifest = build.manifest(SCORES)
    inputs = [_upstream(build, stage, unit)["sha256"] for stage in (CANDIDATES, FEATURES)]
    fingerprint = stable_hash(SCORES, build.scorers_fingerprint, inputs)
    if done := manifest.finished(unit, fingerprint):
        return UnitOutcome(SCORES, unit, True, done["rows"])
    table = read_shard(build.out / CANDIDATES / f"{unit}.parquet", columns=CANDIDATE_COLUMNS)
    pairs = pair_views(table)
    context = ScoreContext(build.features, load_embeddings(build.out / FEATURES / f"{unit}.parquet"))
    scores = score_pairs(pairs, build.scorers, context)
    rows = [{"id": pair.id, "scores": s, "duplicate_of": None} for pair, s in zip(pairs, scores, strict=True)]
    shard = write_shard(rows_to_table(rows, SCORE_SCHEMA), build.out / SCORES / f"{unit}.parquet")
    stats = {"scored": len(rows), "scorers": [s.name for s in build.scorers]}
    manifest.record(unit, shard, fingerprint, stats)
    return UnitOutcome(SCORES, unit, False, shard.rows, stats)


def select_unit(build: Build, unit: str) -> UnitOutcome:
    """Stage 4: the one writer of ``ieiw/`` (kept rows, with scores and split) and ``rejected/``
    (the builder's drops and the rules' rejections, each with its reason)."""
    config = build.config
    manifest = build.manifest(PAIRS)
    upstream = _upstream(build, CANDIDATES, unit)
    fingerprint = stable_hash(PAIRS, SCHEMA_VERSION, config.selection.model_dump(), config.split.model_dump(),
                              upstream["sha256"], _upstream(build, SCORES, unit)["sha256"])
    if done := manifest.finished(unit, fingerprint):
        return UnitOutcome(PAIRS, unit, True, done["rows"])
    candidates = read_shard(build.out / CANDIDATES / f"{unit}.parquet")
    score_table = read_shard(build.out / SCORES / f"{unit}.parquet")
    scored = {r["id"]: r for r in score_table.to_pylist()}
    kept, rejected = [], []
    reasons: Counter = Counter()
    for row in candidates.to_pylist():
        score_row = scored.get(row["id"]) or {}
        row["scores"] = score_row.get("scores")
        row["duplicate_of"] = row.get("duplicate_of") or score_row.get("duplicate_of")
        origin = row["origin"]
        row["split"] = assign_split(origin.get("dataset"), origin.get("image_id"), config.split.val_fraction)
        reason, by = verdict(row, config.selection)
        if reason is None:
            kept.append(row)
        else:
            reasons[reason] += 1
            rejected.append({k: row.get(k) for k in REJECTED_SCHEMA.names} | {"reason": reason, "rejected_by": by})
    made = upstream["stats"]
    stats = {
        "builder": made.get("builder"),
        "records": made.get("records", 0),
        "failures": made.get("failures", {}),
        "failure_messages": made.get("failure_messages", []),
        "candidates": candidates.num_rows,
        "kept": len(kept),
        "rejected": dict(reasons),
        "splits": dict(Counter(row["split"] for row in kept)),
    }
    rejected_shard = write_shard(rows_to_table(rejected, REJECTED_SCHEMA), build.out / REJECTED / f"{unit}.parquet")
    build.manifest(REJECTED).record(unit, rejected_shard, fingerprint, {"rejected": dict(reasons)})
    shard = write_shard(rows_to_table(kept, PAIR_SCHEMA), build.out / PAIRS / f"{unit}.parquet")
    manifest.record(unit, shard, fingerprint, stats)
    return UnitOutcome(PAIRS, unit, False, shard.rows, stats)
