"""The manifest: the truth about which shards of a stage folder are finished.

A stage folder holds its shards and, beside them::

    manifest.json        the compacted snapshot: format, stage, schema, layout, builds, units
    units/<unit>.json    one record per unit finished since the last compaction
    builds/<hash>.json   one record per build config that wrote here (its backends)

A unit is finished only once its record exists; shards on disk that no record names are leftovers
and are overwritten by the rerun. Recording a unit writes one small file atomically (temp + rename),
so it costs the same at the 10th unit as at the 10,000th, needs no lock, and concurrent writers
(threads, processes, hosts sharing a filesystem) cannot lose each other's entries: each owns its
file. A kill -9 anywhere leaves either the old record or the new one. :func:`compact` folds the
records into ``manifest.json`` (at the end of a build and on ``ieiw verify``); readers
(:func:`load_manifest`) see the snapshot plus any records, compacted or not, so they never depend on it.

The first version rewrote the whole ``manifest.json`` under ``flock`` for every unit: a cost that grew
with the folder and a lock that object storage does not have.

A folder may be on object storage (``s3://...``): every file here is read and written through
:mod:`ieiw.schemas.storage`, where a record, the snapshot and a compaction are one PUT each.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ieiw.schemas import storage
from ieiw.schemas.layout import MANIFEST
from ieiw.schemas.rows import SCHEMA_VERSION
from ieiw.schemas.shards import ShardFile

UNITS_DIR = "units"
BUILDS_DIR = "builds"
FORMAT = "ieiw-manifest/1"


class LayoutChanged(RuntimeError):
    """The folder was built with a different work-unit layout; resuming would mix two shardings."""


class ManifestError(RuntimeError):
    """A manifest that cannot be read or that is not an ieiw manifest."""


def manifest_path(folder: Path) -> Path:
    return storage.location(folder) / MANIFEST


def _record_name(key: str) -> str:
    """A unit key as a file name (keys are normally safe already; anything else is percent-quoted)."""
    return urllib.parse.quote(key, safe="") + ".json"


def _key_of(name: str) -> str:
    return urllib.parse.unquote(name[: -len(".json")])


def _dumps(data: Any) -> bytes:
    return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()


def _read_json(path: Path) -> Any:
    try:
        return storage.read_json(path)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc})") from exc


# Parsed snapshots by (path, mtime_ns or ETag, size): a stage asks "is this unit finished?" once per unit, and
# parsing a 10,000-unit snapshot each time would make a rerun quadratic.
_snapshots: dict[str, tuple[tuple[int, int], dict[str, Any]]] = {}
_snapshots_lock = threading.Lock()


def _snapshot(folder: Path) -> dict[str, Any] | None:
    """``manifest.json`` parsed (cached while the file is unchanged), or None when there is none.
    Callers must not modify the result."""
    path = manifest_path(folder)
    stamp = storage.stamp(path)
    if stamp is None:
        return None
    key = storage.key(path)
    with _snapshots_lock:
        cached = _snapshots.get(key)
        if cached is not None and cached[0] == stamp:
            return cached[1]
    data = _read_json(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ManifestError(f"{path}: format {found!r}, expected {FORMAT!r}")
    with _snapshots_lock:
        if len(_snapshots) > 64:
            _snapshots.clear()
        _snapshots[key] = (stamp, data)
    return data


def _records(folder: Path, sub: str) -> dict[str, Any]:
    """The record files of ``folder/sub`` by key (a record being replaced is read whole, old or new)."""
    found = {}
    for path in storage.glob(storage.location(folder) / sub, "*.json"):
        found[_key_of(path.name)] = _read_json(path)
    return found


def load_manifest(folder: Path) -> dict[str, Any]:
    """A stage folder's manifest: the snapshot with every uncompacted record applied; a clear error when
    there is none."""
    folder = storage.location(folder)
    snapshot = _snapshot(folder)
    if snapshot is None:
        raise ManifestError(f"{manifest_path(folder)}: no manifest here; is {folder} an ieiw stage folder "
                            "(e.g. out/ieiw)?")
    data = {**snapshot, "units": dict(snapshot["units"]), "builds": dict(snapshot.get("builds", {}))}
    data["units"].update(_records(folder, UNITS_DIR))
    data["builds"].update(_records(folder, BUILDS_DIR))
    return data


class Manifest:
    """Handle on one stage folder's manifest; cheap to create, safe to share between tasks."""

    _checked: set[tuple[str, str]] = set()  # (folder, layout) pairs whose snapshot was checked in this process
    _checked_lock = threading.Lock()

    def __init__(self, folder: Path, stage: str, layout: dict[str, Any]):
        self.folder = storage.location(folder)
        self.stage = stage
        self.layout = layout

    def _empty(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "stage": self.stage,
            "schema_version": SCHEMA_VERSION,
            "layout": self.layout,
            "builds": {},
            "units": {},
        }

    def _check_layout(self, data: dict[str, Any]) -> None:
        if data.get("layout") != self.layout:
            raise LayoutChanged(
                f"{manifest_path(self.folder)} was built with layout {data.get('layout')}, this run asks for "
                f"{self.layout}. Resuming would mix two shardings: use a new output folder or delete this one."
            )
        if data.get("schema_version") != SCHEMA_VERSION:
            raise LayoutChanged(
                f"{manifest_path(self.folder)} holds schema v{data.get('schema_version')} shards, this ieiw writes "
                f"v{SCHEMA_VERSION}: use a new output folder."
            )

    def _ensure(self) -> None:
        """Create the snapshot when missing (an empty one: every writer would write the same bytes, so a
        race is harmless) and check its layout, once per folder per process."""
        key = (storage.key(self.folder), json.dumps(self.layout, sort_keys=True))
        with self._checked_lock:
            if key in self._checked and storage.exists(manifest_path(self.folder)):  # a stat, not a parse
                return
        snapshot = _snapshot(self.folder)
        if snapshot is None:
            storage.makedirs(self.folder)
            storage.write_bytes_atomic(manifest_path(self.folder), _dumps(self._empty()))
            snapshot = _snapshot(self.folder)
        self._check_layout(snapshot)
        with self._checked_lock:
            self._checked.add(key)

    def prepare(self, config_hash: str, backends: dict[str, str]) -> None:
        """Create or check the manifest before any unit runs, and note this build's backends (stats show them)."""
        self._ensure()
        storage.write_bytes_atomic(self.folder / BUILDS_DIR / _record_name(config_hash), _dumps({"backends": backends}))

    def entry(self, unit: str) -> dict[str, Any] | None:
        """The unit's entry: its record if it has one (one small file), else the snapshot's."""
        path = self.folder / UNITS_DIR / _record_name(unit)
        try:
            return storage.read_json(path)
        except FileNotFoundError:
            pass
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{path}: not valid JSON ({exc})") from exc
        snapshot = _snapshot(self.folder)
        return None if snapshot is None else snapshot["units"].get(unit)

    def finished(self, unit: str, fingerprint: str) -> dict[str, Any] | None:
        """The unit's entry if it finished with the same inputs and parameters and its shard is still
        there at its size; ``None`` when the unit must be (re)built."""
        entry = self.entry(unit)
        if entry is None or entry["fingerprint"] != fingerprint:
            return None
        return entry if storage.size(self.folder / entry["shard"]) == entry["bytes"] else None

    def record(self, unit: str, shard: ShardFile, fingerprint: str, stats: dict[str, Any]) -> dict:
        """Mark ``unit`` finished (one atomic file write); called only after its shard is in place."""
        self._ensure()
        entry = {
            **asdict(shard),
            "shard": shard.name,
            "fingerprint": fingerprint,
            "stats": stats,
            "finished_at": time.time(),
        }
        del entry["name"]
        storage.write_bytes_atomic(self.folder / UNITS_DIR / _record_name(unit), _dumps(entry))
        return entry


def forget(folder: Path, units: list[str]) -> list[dict[str, Any]]:
    """Drop ``units`` from a folder's manifest and return their entries (their shards are the caller's to
    delete). For a folder with one writer that rewrites it whole (``ieiw align-pick``'s shards): the
    records are compacted first, then the snapshot is written once without those units."""
    folder = storage.location(folder)
    compact(folder)
    data = _snapshot(folder)
    if data is None:
        return []
    kept = {**data, "units": dict(data["units"])}
    dropped = [kept["units"].pop(unit) for unit in units if unit in kept["units"]]
    if dropped:
        storage.write_bytes_atomic(manifest_path(folder), _dumps(kept))
    return dropped


def compact_all(out: Path) -> dict[str, int]:
    """:func:`compact` every stage folder of a build's out folder; records folded, by folder. Folders
    whose ``manifest.json`` is another kind (the exemplar index's, ``index-<builder>/``) are no stage
    folders and are left alone."""
    return {p.parent.name: n for p in storage.glob(out, f"*/{MANIFEST}")
            if _is_stage_manifest(p) and (n := compact(p.parent))}


def _is_stage_manifest(path: Path) -> bool:
    try:
        data = _read_json(path)
    except ManifestError:
        return True  # unreadable: compact() reports it
    return not isinstance(data, dict) or data.get("format") == FORMAT or "format" not in data


def compact(folder: Path) -> int:
    """Fold the records of ``folder`` into its ``manifest.json`` and delete them; returns how many.

    The snapshot is written (atomically) before any record is deleted, and a record is deleted only if
    it still holds what was folded in, so a unit recorded meanwhile keeps its record and a kill at any
    point loses nothing (the next compaction finishes the job)."""
    folder = storage.location(folder)
    if _snapshot(folder) is None:
        return 0
    paths = {sub: storage.glob(folder / sub, "*.json") for sub in (UNITS_DIR, BUILDS_DIR)}
    if not any(paths.values()):
        return 0
    raw = {path: storage.read_bytes(path) for group in paths.values() for path in group}
    data = _snapshot(folder)
    merged = {**data, "units": dict(data["units"]), "builds": dict(data.get("builds", {}))}
    for sub, key in ((UNITS_DIR, "units"), (BUILDS_DIR, "builds")):
        for path in paths[sub]:
            try:
                merged[key][_key_of(path.name)] = json.loads(raw[path])
            except json.JSONDecodeError as exc:
                raise ManifestError(f"{path}: not valid JSON ({exc})") from exc
    storage.write_bytes_atomic(manifest_path(folder), _dumps(merged))
    for path, content in raw.items():
        try:
            if storage.read_bytes(path) == content:
                storage.remove(path)
        except FileNotFoundError:
            pass
    return len(raw)


def verify_folder(folder: Path) -> list[str]:
    """Compact the manifest, then re-hash every shard it names; return one problem line per bad or
    missing shard (and per shard it does not name)."""
    folder = storage.location(folder)
    load_manifest(folder)  # a clear error before anything is written when this is no stage folder
    compact(folder)
    data = load_manifest(folder)
    problems = []
    for unit, entry in sorted(data["units"].items()):
        shard = folder / entry["shard"]
        found = storage.size(shard)
        if found is None:
            problems.append(f"MISSING {shard} (unit {unit})")
            continue
        digest = storage.sha256(shard)
        if digest != entry["sha256"]:
            problems.append(f"CORRUPT {shard} (unit {unit}): sha256 {digest} != manifest {entry['sha256']}")
        elif found != entry["bytes"]:
            problems.append(f"CORRUPT {shard} (unit {unit}): {found} bytes != {entry['bytes']}")
    listed = {entry["shard"] for entry in data["units"].values()}
    for orphan in storage.glob(folder, "*.parquet"):
        if orphan.name not in listed:
            problems.append(f"UNLISTED {orphan}: not in the manifest (left by an interrupted run?)")
    return problems
