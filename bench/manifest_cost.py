"""Manifest recording cost per unit as a folder grows to 10,000 units (the paper's corpus is about 10,000 units
of 16 records), against the first version's design (the whole manifest.json rewritten under flock per unit).

    .venv/bin/python bench/manifest_cost.py --units 10000

Prints the mean cost of recording a unit over the first and the last window of units (goal: the last within 2x
of the first), the time to compact the records into manifest.json, to load the manifest with and without
compaction, and the old design's per-unit cost at the same sizes (measured up to --old-units, it is quadratic).
Each unit's record is what a real unit writes (shard name, rows, bytes, sha256, fingerprint, stats).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import statistics
import tempfile
import time
from pathlib import Path

from ieiw.schemas.manifest import Manifest, compact, load_manifest
from ieiw.schemas.shards import ShardFile
from ieiw.schemas.storage import atomic_write_bytes

STATS = {"builder": "removal", "records": 16, "candidates": 28, "failures": {}, "failure_messages": [],
         "skipped": {"region_too_large": 1}, "kept": 25, "rejected": {"target_quality_low": 3},
         "splits": {"train": 24, "val": 1}}


def shard(i: int) -> ShardFile:
    return ShardFile(name=f"removal-{i:05d}.parquet", rows=25, bytes=3_000_000 + i, sha256=f"{i:064x}")


def record_units(folder: Path, units: int) -> list[float]:
    manifest = Manifest(folder, "ieiw", {"unit_size": 16})
    manifest.prepare("cfg", {"inpaint": "opencv"})
    costs = []
    for i in range(units):
        start = time.perf_counter()
        manifest.record(f"removal-{i:05d}", shard(i), f"fp{i}", STATS)
        costs.append(time.perf_counter() - start)
    return costs


def old_record_units(folder: Path, units: int) -> list[float]:
    """The first version: read, modify and atomically rewrite one manifest.json under flock, per unit."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "manifest.json"
    atomic_write_bytes(path, json.dumps({"units": {}}).encode())
    costs = []
    for i in range(units):
        start = time.perf_counter()
        with open(folder / ".manifest.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = json.loads(path.read_text())
            data["units"][f"removal-{i:05d}"] = {"shard": shard(i).name, "rows": 25, "bytes": 3_000_000 + i,
                                                 "sha256": f"{i:064x}", "fingerprint": f"fp{i}", "stats": STATS,
                                                 "finished_at": time.time()}
            atomic_write_bytes(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())
            fcntl.flock(lock, fcntl.LOCK_UN)
        costs.append(time.perf_counter() - start)
    return costs


def window(costs: list[float], at: int, size: int) -> float:
    """Mean cost (ms) of the ``size`` units ending at unit ``at`` (1-based)."""
    part = costs[max(0, at - size):at]
    return 1000 * statistics.mean(part)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=10_000)
    parser.add_argument("--window", type=int, default=10, help="units averaged at each end")
    parser.add_argument("--old-units", type=int, default=2_000, help="units for the old design (quadratic)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        folder = Path(tmp) / "new"
        start = time.perf_counter()
        costs = record_units(folder, args.units)
        total = time.perf_counter() - start
        first, last = window(costs, args.window, args.window), window(costs, args.units, args.window)
        median_first = 1000 * statistics.median(costs[:100])
        median_last = 1000 * statistics.median(costs[-100:])
        t = time.perf_counter()
        loaded = load_manifest(folder)
        load_records = time.perf_counter() - t
        t = time.perf_counter()
        folded = compact(folder)
        compact_s = time.perf_counter() - t
        t = time.perf_counter()
        again = load_manifest(folder)
        load_snapshot = time.perf_counter() - t
        assert len(loaded["units"]) == len(again["units"]) == args.units and folded == args.units + 1
        manifest = Manifest(folder, "ieiw", {"unit_size": 16})
        t = time.perf_counter()
        for i in range(0, args.units, max(1, args.units // 1000)):
            assert manifest.finished(f"removal-{i:05d}", f"fp{i}") is None  # shard files do not exist here
        lookups = len(range(0, args.units, max(1, args.units // 1000)))
        lookup_ms = 1000 * (time.perf_counter() - t) / lookups

        old = old_record_units(Path(tmp) / "old", args.old_units)
    print(f"recording {args.units} units: {total:.1f} s in all, {1000 * total / args.units:.2f} ms/unit")
    print(f"  mean of units 1-{args.window}: {first:.2f} ms; of units {args.units - args.window + 1}-{args.units}: "
          f"{last:.2f} ms; ratio {last / first:.2f} (goal <= 2)")
    print(f"  median of the first 100: {median_first:.2f} ms; of the last 100: {median_last:.2f} ms; "
          f"ratio {median_last / median_first:.2f}")
    print(f"load_manifest with {args.units} uncompacted records: {load_records:.2f} s; compaction: {compact_s:.2f} s; "
          f"load_manifest after it: {load_snapshot:.3f} s; is-this-unit-finished lookup after it: {lookup_ms:.3f} ms")
    print(f"old design (whole manifest.json rewritten under flock per unit): unit 10: {window(old, 10, args.window):.2f} ms, "
          f"unit {args.old_units}: {window(old, args.old_units, args.window):.2f} ms "
          f"(ratio {window(old, args.old_units, args.window) / window(old, 10, args.window):.0f}x; it grows with the folder)")


if __name__ == "__main__":
    main()
