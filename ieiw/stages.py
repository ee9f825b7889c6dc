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

``out_dir`` may be a local folder or an object-storage URL (``s3://bucket/prefix``): ``build.out`` is a
location (:mod:`ieiw.schemas.storage`) and every file under it is read and written through that module.

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

from ieiw.backends.features.base import ImageFeatures, describe_backend
from ieiw.card import write_card
from ieiw.filters.dedup import SIGNATURE_VERSION, pair_hashes
from ieiw.filters.scoring import ScoreContext, Scorer, decision_scores, distinct_images, pair_views, score_pairs
from ieiw.filters.selection import (
    BY_BUILDER,
    BY_SELECTION,
    DECONTAMINATION_RULES,
    QUOTA_REACHED,
    Calibration,
    ScoredPair,
    calibrate,
    quota_allowances,
    rejection_reason,
    verdict,
)
from ieiw.imageio import Orientation, decode
from ieiw.report import write_report
from ieiw.schemas import storage
from ieiw.schemas.config import BackendConfig, BuildConfig, config_from_data
from ieiw.schemas.layout import (
    CALIBRATION,
    CANDIDATES,
    DERIVED_FAMILIES,
    EXEMPLARS,
    FEATURES,
    IEIW_FAMILY,
    MANIFEST,
    PAIRS,
    REJECTED,
    SCORES,
    STAGES,
    STATS,
    family_folder,
    index_folder,
    other_family_folders,
    task_family,
)
from ieiw.schemas.manifest import Manifest, compact_all, load_manifest
from ieiw.schemas.registry import REGISTRY
from ieiw.schemas.rows import (
    FEATURE_SCHEMA,
    PAIR_SCHEMA,
    REJECTED_SCHEMA,
    SCHEMA_VERSION,
    SCORE_SCHEMA,
    assign_split,
    canonical_json,
    rows_to_table,
    stable_hash,
    with_metadata,
)
from ieiw.schemas.shards import read_shard, write_shard
from ieiw.schemas.storage import remove_stale_temp_files
from ieiw.schemas.units import BuildContext, CandidateBuilder, WorkUnit
from ieiw.stats import compute_stats, write_stats

log = logging.getLogger("ieiw")

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
        self.out = storage.location(config.out_dir)  # a Path, or a UPath for a URL
        self.config_hash = config.digest()
        self.layout = {"unit_size": config.unit_size}
        context = BuildContext(root=Path.cwd(), out_dir=self.out, unit_size=config.unit_size)
        self.builders: dict[str, CandidateBuilder] = {
            name: REGISTRY.builder(name).create(section, context)  # type: ignore[union-attr]
            for name, section in config.builder_sections().items()
        }
        self._lock = threading.Lock()
        self._features: dict[str, ImageFeatures] | None = None
        self._scorers: list[Scorer] | None = None

    @functools.cached_property
    def builder_fingerprints(self) -> dict[str, str]:
        """Per builder, computed once (it may hash model files)."""
        return {name: stable_hash(b.fingerprint()) for name, b in self.builders.items()}

    @functools.cached_property
    def extractor_configs(self) -> dict[str, BackendConfig]:
        """Every feature extractor the build needs, by label: the main one, then any a scorer asks for."""
        return self.config.scoring.extractors()

    @functools.cached_property
    def features_fingerprint(self) -> str:
        return stable_hash([c.fingerprint() for c in self.extractor_configs.values()])

    @functools.cached_property
    def scorers_fingerprint(self) -> str:
        return stable_hash([s.fingerprint() for s in self.config.scoring.scorers])

    @property
    def features(self) -> dict[str, ImageFeatures]:
        """The extractors by label, made (models loaded) on first use in this process."""
        with self._lock:
            if self._features is None:
                self._features = {label: c.create() for label, c in self.extractor_configs.items()}
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
        names["features"] = ", ".join(c.label() + (" (embedded)" if c.embedded else "")
                                      for c in self.extractor_configs.values())
        names["scoring"] = ", ".join(s.label() + (" (embedded)" if s.embedded else "") for s in scoring.scorers)
        return names

    def prepare(self) -> None:
        """Once per build: the builders' own preparation (e.g. writing a bundled sample), then the
        stage folders (checked, and cleaned of killed writers' temp files)."""
        for builder in self.builders.values():
            builder.prepare()
        scoring = self.config.scoring
        for scorer in scoring.scorers:  # e.g. the embedded demo's GIQA reference set
            if hasattr(scorer, "prepare"):
                scorer.prepare(scoring.features)
        indexed = any(b.uses_index for b in self.builders.values())
        for stage in STAGES if indexed else tuple(s for s in STAGES if s != EXEMPLARS):
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


def make_index_unit(build: Build, builder_name: str, unit: WorkUnit) -> UnitOutcome:
    """Stage 0a (builders with an index): one unit's index inputs, e.g. object crops + embeddings."""
    builder = build.builders[builder_name]
    manifest = build.manifest(EXEMPLARS)
    fingerprint = stable_hash(EXEMPLARS, SCHEMA_VERSION, builder_name, builder.index_unit_fingerprint(), unit.payload)
    if done := manifest.finished(unit.key, fingerprint):
        return UnitOutcome(EXEMPLARS, unit.key, True, done["rows"])
    table, stats = builder.index_unit(unit)
    shard = write_shard(table, build.out / EXEMPLARS / f"{unit.key}.parquet")
    manifest.record(unit.key, shard, fingerprint, {"builder": builder_name, **stats})
    return UnitOutcome(EXEMPLARS, unit.key, False, shard.rows, stats)


def make_index(build: Build, builder_name: str, units: list[str]) -> dict[str, Any]:
    """Stage 0b: one task over every unit's index shard. Skipped when the folder's fingerprint (the
    shards' sha256 + the builder's index parameters) is unchanged; written atomically by the builder."""
    builder = build.builders[builder_name]
    entries = [_upstream(build, EXEMPLARS, unit) for unit in sorted(units)]
    fingerprint = stable_hash("index", [e["sha256"] for e in entries], builder.index_fingerprint())
    folder = index_folder(build.out, builder_name)
    if _index_stamp(folder) == fingerprint:
        return {"skipped": True, "fingerprint": fingerprint}
    with storage.staged_folder(folder, commit=INDEX_STAMP) as local:
        stats = builder.build_index([build.out / EXEMPLARS / e["shard"] for e in entries], local, fingerprint)
    return {"skipped": False, "fingerprint": fingerprint, **stats}


INDEX_STAMP = "fingerprint.json"  # written last: an index folder is finished once it names its fingerprint


def _index_stamp(folder: Path) -> str | None:
    """The fingerprint a finished index folder names, or None when there is none."""
    try:
        return storage.read_json(folder / INDEX_STAMP).get("fingerprint")
    except FileNotFoundError:
        return None


def make_candidates(build: Build, builder_name: str, unit: WorkUnit) -> UnitOutcome:
    """Stage 1: source records -> candidate pair rows (the expensive, GPU-bound part at paper scale)."""
    builder = build.builders[builder_name]
    manifest = build.manifest(CANDIDATES)
    index = None
    if builder.uses_index:  # the candidates depend on the whole index, so on its fingerprint
        index = _index_stamp(index_folder(build.out, builder_name))
    fingerprint = stable_hash(CANDIDATES, SCHEMA_VERSION, builder_name, build.builder_fingerprints[builder_name],
                              unit.payload, *([index] if builder.uses_index else []))
    if done := manifest.finished(unit.key, fingerprint):
        return UnitOutcome(CANDIDATES, unit.key, True, done["rows"])
    result = builder.build_unit(unit)
    table = result.writable_table()  # a row Arrow cannot hold fails its record, not the unit
    for failure in result.failures:
        log.warning("unit %s: %s", unit.key, failure)
    shard = write_shard(table, build.out / CANDIDATES / f"{unit.key}.parquet")
    dropped = Counter(row["drop_reason"] for row in result.rows if row.get("drop_reason"))
    stats = {"builder": builder_name, **result.stats(), "dropped": dict(dropped)}
    manifest.record(unit.key, shard, fingerprint, stats)
    return UnitOutcome(CANDIDATES, unit.key, False, shard.rows, stats)


def extract_features(build: Build, unit: str) -> UnitOutcome:
    """Stage 2: one embedding per distinct image of the unit and extractor, stored float16."""
    manifest = build.manifest(FEATURES)
    fingerprint = stable_hash(FEATURES, build.features_fingerprint, _upstream(build, CANDIDATES, unit)["sha256"])
    if done := manifest.finished(unit, fingerprint):
        return UnitOutcome(FEATURES, unit, True, done["rows"])
    table = read_shard(build.out / CANDIDATES / f"{unit}.parquet", columns=CANDIDATE_COLUMNS)
    images = distinct_images(pair_views(table))
    pixels = [decode(i.data, Orientation.IGNORE).pixels for i in images]
    parts, extractors = [], []
    for label, extractor in build.features.items():
        parts.append(feature_table([i.key for i in images], label, extractor.image_features(pixels)))
        extractors.append(describe_backend(extractor))
    table = pa.concat_tables(parts) if parts else feature_table([], "", np.zeros((0, 0), np.float16))
    shard = write_shard(table, build.out / FEATURES / f"{unit}.parquet")
    stats = {"images": len(images), "extractors": extractors}
    manifest.record(unit, shard, fingerprint, stats)
    return UnitOutcome(FEATURES, unit, False, shard.rows, stats)


def feature_table(keys: list[str], extractor: str, vectors: np.ndarray) -> pa.Table:
    """Rows of the features shard: (image key, extractor label, float16 embedding of any dimension)."""
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float16).ravel(), type=pa.float16())
    dim = vectors.shape[1] if vectors.ndim == 2 else 0
    offsets = pa.array(np.arange(len(keys) + 1, dtype=np.int32) * dim)
    embedding = pa.ListArray.from_arrays(offsets, flat)
    columns = [pa.array(keys, pa.string()), pa.array([extractor] * len(keys), pa.string()), embedding]
    return pa.Table.from_arrays(columns, schema=with_metadata(FEATURE_SCHEMA))


def load_embeddings(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """A features shard as {extractor label: {image key: float32 embedding}}."""
    table = read_shard(path)
    out: dict[str, dict[str, np.ndarray]] = {}
    keys, extractors = table["image"].to_pylist(), table["extractor"].to_pylist()
    vectors = table["embedding"].to_numpy(zero_copy_only=False)
    for key, extractor, vector in zip(keys, extractors, vectors, strict=True):
        out.setdefault(extractor, {})[key] = np.asarray(vector, dtype=np.float32)
    return out


def score_unit(build: Build, unit: str) -> UnitOutcome:
    """Stage 3: every scorer over the unit's pairs, sharing decoded pixels and stored embeddings."""
    manifest = build.manifest(SCORES)
    inputs = [_upstream(build, stage, unit)["sha256"] for stage in (CANDIDATES, FEATURES)]
    fingerprint = stable_hash(SCORES, build.scorers_fingerprint, SIGNATURE_VERSION, inputs)
    if done := manifest.finished(unit, fingerprint):
        return UnitOutcome(SCORES, unit, True, done["rows"])
    table = read_shard(build.out / CANDIDATES / f"{unit}.parquet", columns=CANDIDATE_COLUMNS)
    pairs = pair_views(table)
    context = ScoreContext(build.features, load_embeddings(build.out / FEATURES / f"{unit}.parquet"),
                           main=build.config.scoring.features.label())
    scores = score_pairs(pairs, build.scorers, context)
    rows = []
    schema = build.config.scoring.score_schema()  # SCORE_SCHEMA + the scorers' own columns (the VLM judge's)
    for pair, pair_scores in zip(pairs, scores, strict=True):
        source_hash, edit_hash = pair_hashes(context.pixels(pair.source), context.pixels(pair.target))
        rows.append({"id": pair.id, "scores": pair_scores, "duplicate_of": None,
                     "source_hash": source_hash, "edit_hash": edit_hash,
                     **{name: pair_scores.get(name) for name in schema.names if name not in SCORE_SCHEMA.names}})
    shard = write_shard(rows_to_table(rows, schema), build.out / SCORES / f"{unit}.parquet")
    stats = {"scored": len(rows), "scorers": [s.name for s in build.scorers]}
    manifest.record(unit, shard, fingerprint, stats)
    return UnitOutcome(SCORES, unit, False, shard.rows, stats)


def calibrate_build(build: Build, units: list[str]) -> dict[str, Any]:
    """The one global step before selection: quantile thresholds per task and duplicates, over every
    scored unit of the build, and, with ``selection.quotas``, each unit's quota allowance (the units in
    plan order), written to ``<out>/calibration.json`` (skipped when its inputs are unchanged)."""
    selection = build.config.selection
    inputs = {u: [_upstream(build, stage, u)["sha256"] for stage in (CANDIDATES, SCORES)] for u in sorted(units)}
    order = _quota_order(build, units) if selection.quota_limits() else []
    policies = {name: policy for name, b in build.builders.items() if (policy := b.kind_policy())}
    fingerprint = stable_hash(CALIBRATION, selection.fingerprint(), inputs, *([order] if order else []),
                              *([policies] if policies else []))
    path = build.out / CALIBRATION
    if storage.exists(path):
        data = storage.read_json(path)
        if data.get("fingerprint") == fingerprint:
            return {"skipped": True, "units": len(units), "duplicates": len(data.get("duplicates", {})),
                    **({"quotas": data["quotas"]["passed"]} if data.get("quotas") else {})}

    judge = Calibration(kind_policies=policies)

    def pairs():
        for unit in sorted(units):
            path = build.out / CANDIDATES / f"{unit}.parquet"
            present = set(storage.read_schema(path).names)
            columns = [n for n in ("id", "task", "drop_reason", "edit_kind", "builder") if n in present]
            candidates = read_shard(path, columns=columns).to_pylist()
            # a row its builder dropped, or its kind policy rejects, takes part in no quantile and no dedup
            drop = {row["id"]: row.get("drop_reason") or judge.kind_reason(row) for row in candidates}
            task = {row["id"]: row["task"] for row in candidates}
            for row in read_shard(build.out / SCORES / f"{unit}.parquet").to_pylist():
                yield ScoredPair(row["id"], task[row["id"]], decision_scores(row), row.get("source_hash"),
                                 row.get("edit_hash"), drop.get(row["id"]))

    result = calibrate(pairs(), selection)
    result.kind_policies = policies
    if order:  # a second pass: which rows pass every other rule needs the thresholds and duplicates above
        result.quotas = quota_allowances(
            ((unit, builder, _passing_ieiw_rows(build, unit, result)) for unit, builder in order),
            selection.quota_limits())
    payload = {"fingerprint": fingerprint, "units": sorted(units), **result.to_json()}
    storage.write_bytes_atomic(path, (canonical_json(payload) + "\n").encode())
    return {"skipped": False, "units": len(units), "duplicates": len(result.duplicates),
            **({"quotas": result.quotas["passed"]} if result.quotas else {})}


def _quota_order(build: Build, units: list[str]) -> list[tuple[str, str]]:
    """(unit, builder) of the ``units`` whose builder has a quota, in plan order: the order of each such
    builder's ``plan()`` (not the units' names: splits, sources and dumps are planned in config order).
    Units the plan no longer names (left from an earlier config) follow, by name."""
    limits = build.config.selection.quota_limits()
    given = set(units)
    builder_of = {u: _upstream(build, CANDIDATES, u).get("stats", {}).get("builder") for u in sorted(units)}
    order: list[tuple[str, str]] = []
    for name, builder in build.builders.items():
        if name in limits:
            order += [(unit.key, name) for unit in builder.plan() if unit.key in given]
    planned = {unit for unit, _ in order}
    order += [(u, b) for u, b in builder_of.items() if u not in planned and b in limits]
    return order


def joined(row: dict[str, Any], scores: dict[str, Any] | None, calibration: Calibration) -> dict[str, Any]:
    """A candidate row's light columns with what selection decides on merged in: its ``scores`` and, for an
    IEIW row, ``duplicate_of`` (its own, or the one calibration found); other families have no duplicates."""
    row["scores"] = scores
    if task_family(row["task"]) == IEIW_FAMILY:
        row["duplicate_of"] = row.get("duplicate_of") or calibration.duplicates.get(row["id"])
    else:
        row["duplicate_of"] = None
    return row


def decide(row: dict[str, Any], calibration: Calibration, selection: Any) -> tuple[str | None, str | None]:
    """Selection's verdict on one joined row (:func:`joined`), before quotas: ``(None, None)`` keeps it,
    otherwise ``(reason, rejected_by)``.

    IEIW rows meet the paper's rules (the builder's drop, its kind policy, duplicates, the aesthetic and GIQA
    thresholds of their task); rows of other families (overlays, keypoints, enhancement, imported edits) keep
    every row their builder did not drop and its kind policy does not reject. The quota pass counts the rows
    this keeps, so both agree by construction."""
    if task_family(row["task"]) == IEIW_FAMILY:
        return verdict(row, calibration.for_task(row["task"], selection), calibration.kind_reason(row))
    if row.get("drop_reason"):
        return str(row["drop_reason"]), BY_BUILDER
    reason = calibration.kind_reason(row)
    if reason:
        return reason, BY_SELECTION
    # decontamination holds for every family: an imported MagicBrush pair may be a benchmark's own image
    limits = {rule: limit for rule, limit in calibration.for_task(row["task"], selection).items()
              if rule in DECONTAMINATION_RULES}
    reason = rejection_reason(row.get("scores"), limits) if any(v is not None for v in limits.values()) else None
    return (reason, BY_SELECTION) if reason else (None, None)


def _scores_of(build: Build, unit: str) -> dict[str, dict[str, Any]]:
    path = build.out / SCORES / f"{unit}.parquet"
    columns = [n for n in storage.read_schema(path).names if n not in ("duplicate_of", "source_hash", "edit_hash")]
    return {r["id"]: {"id": r["id"], "scores": decision_scores(r)} for r in read_shard(path, columns=columns).to_pylist()}


def _passing_ieiw_rows(build: Build, unit: str, calibration: Calibration) -> int:
    """How many of the unit's IEIW-family rows :func:`decide` keeps, from the light columns only."""
    path = build.out / CANDIDATES / f"{unit}.parquet"
    present = set(storage.read_schema(path).names)
    candidates = read_shard(path, columns=[n for n in ("id", "task", "drop_reason", "duplicate_of", "edit_kind",
                                                       "builder") if n in present])
    scored = _scores_of(build, unit)
    return sum(decide(joined(row, (scored.get(row["id"]) or {}).get("scores"), calibration), calibration,
                      build.config.selection)[0] is None
               for row in candidates.to_pylist() if task_family(row["task"]) == IEIW_FAMILY)


@dataclass
class UnitSelection:
    """Selection's decisions for one unit, in row order: what :func:`write_selection` writes."""

    families: list[str] = field(default_factory=list)  # each row's task family
    keep: list[bool] = field(default_factory=list)
    columns: dict[str, list] = field(default_factory=lambda: {"scores": [], "split": [], "duplicate_of": []})
    rejected: list[dict[str, Any]] = field(default_factory=list)  # rows of rejected/, with reason and rejected_by
    reasons: Counter = field(default_factory=Counter)
    rejected_kinds: Counter = field(default_factory=Counter)  # rejected rows by edit_kind (rows that have one)
    passing: int = 0  # IEIW rows that passed every rule but the quota


def select_rows(rows: list[dict[str, Any]], scored: dict[str, dict[str, Any]], calibration: Calibration,
                selection: Any, val_fraction: float, allowance: int | None) -> UnitSelection:
    """Decide every row of one unit (:func:`decide`), then the quota: with an ``allowance``, the unit keeps
    the first ``allowance`` IEIW rows that pass, in row order, and files the rest under ``quota_reached``."""
    out = UnitSelection()
    for row in rows:
        row = joined(row, (scored.get(row["id"]) or {}).get("scores"), calibration)
        family = task_family(row["task"])
        origin = row["origin"]
        row["split"] = assign_split(origin.get("dataset"), origin.get("image_id"), val_fraction)
        for name, values in out.columns.items():
            values.append(row[name])
        reason, by = decide(row, calibration, selection)
        if reason is None and family == IEIW_FAMILY:
            out.passing += 1
            if allowance is not None and out.passing > allowance:
                reason, by = QUOTA_REACHED, BY_SELECTION
        out.families.append(family)
        out.keep.append(reason is None)
        if reason is not None:
            out.reasons[reason] += 1
            if row.get("edit_kind"):
                out.rejected_kinds[row["edit_kind"]] += 1
            out.rejected.append({k: row.get(k) for k in REJECTED_SCHEMA.names} | {"reason": reason, "rejected_by": by})
    return out


def select_unit(build: Build, unit: str) -> UnitOutcome:
    """Stage 5: the one writer of ``ieiw/`` (kept rows, with scores and split), the other families' folders
    and ``rejected/`` (the builder's drops, duplicates and the rules' rejections, each with its reason).

    Rows of other task families (segmentation overlays, keypoints, enhancement, imported edits) go to
    folders of their own beside ``ieiw/`` (``segmentation/``, ...), so IEIW stays the paper's corpus
    (:func:`decide`; quotas apply to IEIW rows only)."""
    config = build.config
    upstream = _upstream(build, CANDIDATES, unit)
    calibration_path = build.out / CALIBRATION
    fingerprint = stable_hash(PAIRS, SCHEMA_VERSION, config.split.model_dump(), upstream["sha256"],
                              _upstream(build, SCORES, unit)["sha256"], storage.sha256(calibration_path))
    if done := build.manifest(PAIRS).finished(unit, fingerprint):
        return UnitOutcome(PAIRS, unit, True, done["rows"])
    calibration = Calibration.from_json(storage.read_json(calibration_path))
    # The light columns are joined as Python rows; the image columns stay Arrow buffers, filtered into the
    # kept folders without a copy through Python objects.
    candidates = read_shard(build.out / CANDIDATES / f"{unit}.parquet")
    light = candidates.select([n for n in REJECTED_SCHEMA.names + ["drop_reason"] if n in candidates.column_names])
    allowance = calibration.allowance(unit, upstream.get("stats", {}).get("builder"))
    decided = select_rows(light.to_pylist(), _scores_of(build, unit), calibration, config.selection,
                          config.split.val_fraction, allowance)
    return write_selection(build, unit, candidates, decided, calibration, upstream, fingerprint)


def write_selection(build: Build, unit: str, candidates: pa.Table, decided: UnitSelection, calibration: Calibration,
                    upstream: dict[str, Any], fingerprint: str) -> UnitOutcome:
    """Write one unit's selection: ``rejected/``, each other family's folder, then ``ieiw/`` last (its
    manifest entry is what marks the unit selected, so a kill before it redoes the unit)."""
    config = build.config
    table = candidates
    for name, values in decided.columns.items():
        table = table.set_column(table.schema.get_field_index(name), table.schema.field(name),
                                 pa.array(values, type=PAIR_SCHEMA.field(name).type))
    metadata = with_metadata(PAIR_SCHEMA).metadata
    made = upstream["stats"]
    tasks = sorted({row["task"] for row in candidates.select(["task"]).to_pylist()})
    present = sorted(set(decided.families))
    # the unit's source statistics belong to the folder its rows go to (a converter's unit: its family's);
    # derived rows (adaptation captions written beside a converter's edit rows) never own them
    primary = [family for family in present if family not in DERIVED_FAMILIES] or present
    home = primary[0] if len(primary) == 1 else IEIW_FAMILY
    source_stats = {
        "builder": made.get("builder"),
        "records": made.get("records", 0),
        "failures": made.get("failures", {}),
        "failure_messages": made.get("failure_messages", []),
        "skipped": made.get("skipped", {}),
        "candidates": candidates.num_rows,
    }
    rejected_shard = write_shard(rows_to_table(decided.rejected, REJECTED_SCHEMA),
                                 build.out / REJECTED / f"{unit}.parquet")
    build.manifest(REJECTED).record(unit, rejected_shard, fingerprint, {"rejected": dict(decided.reasons)})
    outcome_stats: dict[str, Any] = {}
    outcome_rows = 0
    for family in sorted((set(present) | _families_holding(build, unit)) - {IEIW_FAMILY}) + [IEIW_FAMILY]:
        mask = pa.array([k and f == family for k, f in zip(decided.keep, decided.families, strict=True)],
                        type=pa.bool_())
        kept = table.filter(mask).replace_schema_metadata(metadata)
        stats = {
            **(source_stats if family == home else {"builder": made.get("builder"), "records": 0, "candidates": 0}),
            "kept": kept.num_rows,
            "rejected": dict(decided.reasons) if family == home else {},
            "rejected_kinds": dict(decided.rejected_kinds) if family == home else {},
            "splits": dict(Counter(s for s, k, f in zip(decided.columns["split"], decided.keep, decided.families,
                                                        strict=True) if k and f == family)),
            "thresholds": ({task: calibration.for_task(task, config.selection) for task in tasks
                            if task_family(task) == IEIW_FAMILY} if family == IEIW_FAMILY else {}),
        }
        if family == IEIW_FAMILY and calibration.quotas:  # what `ieiw stats` sums into its quota lines
            stats["quota"] = {"limits": calibration.quotas.get("limits", {}), "builder": made.get("builder"),
                              "passed": decided.passing, "kept": kept.num_rows}
        folder = family_folder(family)
        shard = write_shard(kept, build.out / folder / f"{unit}.parquet")
        family_manifest = build.manifest(folder)
        if folder != PAIRS and family_manifest.entry(unit) is None and not storage.exists(build.out / folder / MANIFEST):
            family_manifest.prepare(build.config_hash, build.backends())
        family_manifest.record(unit, shard, fingerprint, stats)
        if family == IEIW_FAMILY:
            outcome_stats, outcome_rows = stats, shard.rows
    return UnitOutcome(PAIRS, unit, False, outcome_rows, outcome_stats)


def _families_holding(build: Build, unit: str) -> set[str]:
    """Families whose folder already has a shard of ``unit`` (a rerun must replace it, even with none)."""
    found = set()
    for folder in other_family_folders(build.out):
        if build.manifest(folder.name).entry(unit) is not None:
            found.add(folder.name)
    return found


def finish(build: Build, failed_units: list[str] | tuple[str, ...] = ()) -> tuple[dict[str, Any], Path]:
    """The build's last steps, after selection (the flow's summary task and ``ieiw select`` both end here):
    every folder's unit records folded into its ``manifest.json``, then ``stats.json``, the dataset card
    (``README.md``) and ``report.html``, so all three always describe the current selection. Returns the
    stats and the report's path."""
    compact_all(build.out)
    stats = compute_stats(build.out / PAIRS)
    write_stats(stats, build.out / STATS)
    write_card(build.out)
    report = write_report(build.out, stats=stats)
    return stats, report


def finished_units(build: Build) -> list[str]:
    """Units with finished candidates and scores: what selection can run on (``ieiw select``)."""
    found = []
    for stage in (CANDIDATES, SCORES):
        path = build.out / stage
        found.append(set(load_manifest(path)["units"]) if storage.exists(path / MANIFEST) else set())
    return sorted(found[0] & found[1])
