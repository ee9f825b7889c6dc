"""The manifest: the truth about which shards of a stage folder are finished.

One ``manifest.json`` per stage folder lists every finished work unit with its shard name, row
count, size, sha256, the fingerprint of the inputs and parameters that produced it, and its stats.
A unit is finished only once its entry is here; shards on disk that the manifest does not name are
leftovers and are overwritten by the rerun. Updates take an exclusive ``flock`` and rewrite the
file atomically, so concurrent tasks (threads or processes on one host, or hosts sharing a POSIX
filesystem with working locks) never lose each other's entries.
"""

from __future__ import annotations

import fcntl
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ieiw.schemas.rows import SCHEMA_VERSION
from ieiw.schemas.shards import ShardFile, atomic_write_bytes, sha256_file

MANIFEST_NAME = "manifest.json"
FORMAT = "ieiw-manifest/1"


class LayoutChanged(RuntimeError):
    """The folder was built with a different work-unit layout; resuming would mix two shardings."""


class ManifestError(RuntimeError):
    """A manifest that cannot be read or that is not an ieiw manifest."""


def manifest_path(folder: Path) -> Path:
    return Path(folder) / MANIFEST_NAME


def load_manifest(folder: Path) -> dict[str, Any]:
    """Read a stage folder's manifest; a clear error when there is none."""
    path = manifest_path(folder)
    if not path.exists():
        raise ManifestError(f"{path}: no manifest here; is {folder} an ieiw stage folder (e.g. out/ieiw)?")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc})") from exc
    if data.get("format") != FORMAT:
        raise ManifestError(f"{path}: format {data.get('format')!r}, expected {FORMAT!r}")
    return data


class Manifest:
    """Handle on one stage folder's manifest; cheap to create, safe to share between tasks."""

    def __init__(self, folder: Path, stage: str, layout: dict[str, Any]):
        self.folder = Path(folder)
        self.stage = stage
        self.layout = layout

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """Exclusive read-modify-write of the manifest file."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".manifest.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                path = manifest_path(self.folder)
                data = load_manifest(self.folder) if path.exists() else self._empty()
                self._check_layout(data)
                yield data
                atomic_write_bytes(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

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

    def prepare(self, config_hash: str, backends: dict[str, str]) -> None:
        """Create or check the manifest before any unit runs, and note this build's backends (stats show them)."""
        with self._locked() as data:
            data["builds"][config_hash] = {"backends": backends}

    def entry(self, unit: str) -> dict[str, Any] | None:
        path = manifest_path(self.folder)
        if not path.exists():
            return None
        return load_manifest(self.folder)["units"].get(unit)

    def finished(self, unit: str, fingerprint: str) -> dict[str, Any] | None:
        """The unit's entry if it finished with the same inputs and parameters and its shard is still
        there at its size; ``None`` when the unit must be (re)built."""
        entry = self.entry(unit)
        if entry is None or entry["fingerprint"] != fingerprint:
            return None
        shard = self.folder / entry["shard"]
        return entry if shard.exists() and shard.stat().st_size == entry["bytes"] else None

    def record(self, unit: str, shard: ShardFile, fingerprint: str, stats: dict[str, Any]) -> dict:
        """Mark ``unit`` finished; called only after its shard has been renamed into place."""
        entry = {
            **asdict(shard),
            "shard": shard.name,
            "fingerprint": fingerprint,
            "stats": stats,
            "finished_at": time.time(),
        }
        del entry["name"]
        with self._locked() as data:
            data["units"][unit] = entry
        return entry


def verify_folder(folder: Path) -> list[str]:
    """Re-hash every shard the manifest names; return one problem line per bad or missing shard."""
    folder = Path(folder)
    data = load_manifest(folder)
    problems = []
    for unit, entry in sorted(data["units"].items()):
        shard = folder / entry["shard"]
        if not shard.exists():
            problems.append(f"MISSING {shard} (unit {unit})")
            continue
        digest = sha256_file(shard)
        if digest != entry["sha256"]:
            problems.append(f"CORRUPT {shard} (unit {unit}): sha256 {digest} != manifest {entry['sha256']}")
        elif shard.stat().st_size != entry["bytes"]:
            problems.append(f"CORRUPT {shard} (unit {unit}): {shard.stat().st_size} bytes != {entry['bytes']}")
    listed = {entry["shard"] for entry in data["units"].values()}
    for orphan in sorted(folder.glob("*.parquet")):
        if orphan.name not in listed:
            problems.append(f"UNLISTED {orphan}: not in the manifest (left by an interrupted run?)")
    return problems
