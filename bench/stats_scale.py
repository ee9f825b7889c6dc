"""`ieiw stats` (and the HTML report) at the paper's scale, against DuckDB counting the same files.

Writes a synthetic `ieiw/` folder of >= 100k pair rows directly (no pipeline): real shard writer and
manifest, image cells: real JPEGs of 5-50 KB each, light
columns shaped like a real build's. Then, in this one process (so no CLI start-up is counted):

- `compute_stats(folder)`: time and peak RSS above the baseline;
- `write_report(out_dir)` when ieiw.report exists: the same;
- DuckDB computing the same counts (rows per task, per source, per split, score quantiles) on the same
  files: the physical-limit-ish baseline for reading those columns.

Goals: stats within 3x of DuckDB, peak RSS under 1 GB at 100k rows.

    python bench/stats_scale.py [--rows 100000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

# Always a throw-away Prefect home and its ephemeral API: a bench never adds runs or artifacts to the
# user's Prefect history (make exports PREFECT_HOME=.prefect, so setdefault would not do).
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="ieiw-bench-prefect-")
os.environ.pop("PREFECT_API_URL", None)

from ieiw.schemas.manifest import Manifest  # noqa: E402
from ieiw.schemas.rows import PAIR_SCHEMA, image_cell, rows_to_table  # noqa: E402
from ieiw.schemas.shards import write_shard  # noqa: E402
from ieiw.stats import compute_stats  # noqa: E402

TASKS = ("remove", "add", "replace", "web")
UNIT_ROWS = 512


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """Samples this process's RSS every 5 ms while a phase runs: its peak above the starting value."""

    def __enter__(self) -> PeakRss:
        self.start, self.peak, self.running = rss_bytes(), rss_bytes(), True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.005)

    def __exit__(self, *exc: object) -> None:
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def above_start_mb(self) -> float:
        return (self.peak - self.start) / 1e6


def jpeg_pool(rng: np.random.Generator, count: int = 512) -> list[bytes]:
    """Real JPEGs of 5-50 KB (noisy gradients at random sizes and qualities): decodable by the report,
    incompressible to Parquet like photos. Reused at random across rows; Parquet's dictionary page fills
    after a few dozen such values, so files stay as large as with all-distinct images."""
    from ieiw.imageio import encode

    pool: list[bytes] = []
    while len(pool) < count:
        side = int(rng.integers(96, 300))
        ramp = np.linspace(0, 255, side)
        pixels = np.clip(np.add.outer(ramp, ramp)[..., None] / 2 + rng.normal(0, 30, (side, side, 3)), 0, 255)
        data = encode(pixels.astype(np.uint8), "jpeg", int(rng.integers(60, 95)))
        if 5_000 <= len(data) <= 50_000:
            pool.append(data)
    return pool


def make_corpus(out: Path, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    pool = jpeg_pool(rng)
    manifest = Manifest(out / "ieiw", "ieiw", {"unit_size": UNIT_ROWS})
    for unit, start in enumerate(range(0, rows, UNIT_ROWS)):
        batch = []
        for i in range(start, min(start + UNIT_ROWS, rows)):
            pick = rng.integers(0, len(pool), 2)
            task = TASKS[i % 4]
            batch.append({
                "id": f"{i:032x}", "task": task, "instruction": f"remove the red object number {i % 97}",
                "source_image": image_cell(pool[pick[0]], "s.jpg"),
                "target_image": image_cell(pool[pick[1]], "t.jpg"),
                "mask": None, "width": 640, "height": 480,
                "origin": {"dataset": ("phrasecut", "sa1b", "reddit")[i % 3], "record_id": str(i), "image_id": str(i // 2)},
                "exemplar": None,
                "scores": {"backend": "laion-improved over clip", "embedded": False,
                           "source_aesthetic": float(rng.normal(5.5, 1)), "target_aesthetic": float(rng.normal(5.4, 1)),
                           "source_giqa": float(rng.gamma(2, 0.1)), "target_giqa": float(rng.gamma(2, 0.1))},
                "builder": {"name": "removal", "backend": "lama", "embedded": False, "seed": 0, "params": "{}"},
                "split": "val" if i % 50 == 0 else "train",
            })
        key = f"u{unit:05d}"
        shard = write_shard(rows_to_table(batch, PAIR_SCHEMA), out / "ieiw" / f"{key}.parquet")
        manifest.record(key, shard, key, {"records": len(batch), "candidates": len(batch), "kept": len(batch)})


def duckdb_counts(folder: Path) -> dict:
    import duckdb

    files = f"'{folder}/*.parquet'"
    con = duckdb.connect()
    out = {
        "by_task": dict(con.sql(f"SELECT task, count(*) FROM read_parquet({files}) GROUP BY task").fetchall()),
        "by_source": dict(con.sql(f"SELECT origin.dataset, count(*) FROM read_parquet({files}) GROUP BY 1").fetchall()),
        "by_split": dict(con.sql(f"SELECT split, count(*) FROM read_parquet({files}) GROUP BY 1").fetchall()),
        "target_aesthetic_q50": con.sql(
            f"SELECT quantile_cont(scores.target_aesthetic, 0.5) FROM read_parquet({files})").fetchall()[0][0],
    }
    con.close()
    return out


def timed(fn, *args):
    with PeakRss() as rss:
        start = time.perf_counter()
        value = fn(*args)
        elapsed = time.perf_counter() - start
    return elapsed, rss.above_start_mb, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--keep", help="build the corpus here and keep it (default: a temp folder, deleted)")
    args = parser.parse_args()
    out = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ieiw-stats-bench-"))
    try:
        if not (out / "ieiw" / "manifest.json").exists():
            start = time.perf_counter()
            make_corpus(out, args.rows)
            print(f"corpus: {args.rows} rows in {time.perf_counter() - start:.0f} s")
        size = sum(p.stat().st_size for p in (out / "ieiw").glob("*.parquet")) / 1e9
        print(f"corpus: {out / 'ieiw'}, {size:.2f} GB of shards, {os.cpu_count()} CPUs, process RSS {rss_bytes() / 1e6:.0f} MB")

        duck_s, duck_mb, duck = timed(duckdb_counts, out / "ieiw")
        stats_s, stats_mb, stats = timed(compute_stats, out / "ieiw")
        assert stats["by_task"] == duck["by_task"], (stats["by_task"], duck["by_task"])
        assert stats["by_source"] == duck["by_source"] and stats["by_split"] == duck["by_split"]
        print(f"duckdb counts:      {duck_s:6.2f} s, peak RSS +{duck_mb:6.0f} MB")
        print(f"ieiw compute_stats: {stats_s:6.2f} s, peak RSS +{stats_mb:6.0f} MB -> {stats_s / duck_s:.2f}x DuckDB"
              f" (goal <= 3x), {stats['rows']} rows, same counts")
        try:
            from ieiw.report import write_report
        except ImportError:
            print("report: ieiw.report not available in this checkout")
        else:
            report_s, report_mb, path = timed(write_report, out)
            print(f"ieiw report:        {report_s:6.2f} s, peak RSS +{report_mb:6.0f} MB,"
                  f" {Path(path).stat().st_size / 1e6:.1f} MB -> {report_s / duck_s:.2f}x DuckDB")
        print(f"process peak RSS {max(rss_bytes(), 0) / 1e6:.0f} MB now (goal: under 1 GB at 100k rows)")
    finally:
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
