"""Embedded builds at growing sizes: wall time, pairs/s and peak RSS of the whole build process tree (the
flow, its ephemeral Prefect server, any worker processes), then the ratio of peak memory between the largest
and the smallest build (goal <= 1.2: memory must not grow with the corpus) and a linear fit of time against
pairs, extrapolated to the paper's 159k pairs.

    .venv/bin/python bench/scale_build.py --pairs 2000,10000,20000 --size 160x120 --workers 2

Removal only (the embedded OpenCV inpainter, the embedded features and proxy scores, selection), on the
synthetic PhraseCut-layout sample, generated before the clock starts. Run it alone: it uses both cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import yaml

from ieiw.samples.phrasecut import make_phrasecut_sample

PAIRS_PER_IMAGE = 4.5  # measured on the sample: ~2.5 records per image, 2 pairs per record, ~90% kept


def tree_rss(proc: psutil.Process, parts: dict[str, int]) -> int:
    """RSS of ``proc`` and its descendants; ``parts`` keeps each kind's peak (the flow, Prefect's server)."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            rss = p.memory_info().rss
            kind = "flow" if p.pid == proc.pid else "prefect server" if "uvicorn" in " ".join(p.cmdline()) else "other"
        except psutil.Error:
            continue
        total += rss
        parts[kind] = max(parts.get(kind, 0), rss)
    return total


PARTS: dict[str, dict[str, int]] = {}


def run_build(config: Path, env: dict[str, str]) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes of the process tree, polled every 0.1 s); per-kind peaks in PARTS."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "ieiw", "build", str(config)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    handle, peak = psutil.Process(proc.pid), 0
    stderr: list[bytes] = []
    reader = threading.Thread(target=lambda: stderr.append(proc.stderr.read()), daemon=True)
    reader.start()
    parts = PARTS.setdefault(str(config), {})
    while proc.poll() is None:
        peak = max(peak, tree_rss(handle, parts))
        time.sleep(0.1)
    reader.join()
    if proc.returncode != 0:
        raise RuntimeError(f"build failed: {b''.join(stderr)[-2000:].decode(errors='replace')}")
    return time.perf_counter() - start, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", default="2000,10000,20000", help="target pair counts, comma-separated")
    parser.add_argument("--size", default="160x120")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--unit-size", type=int, default=16)
    parser.add_argument("--keep", default=None, help="keep the builds in this folder (default: a temp folder)")
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    targets = [int(p) for p in args.pairs.split(",")]
    env = dict(os.environ, PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_HOME=tempfile.mkdtemp(prefix="ieiw-bench-prefect-"))
    env.pop("PREFECT_API_URL", None)
    scratch = None if args.keep else tempfile.TemporaryDirectory(prefix="ieiw-scale-", dir=".")
    base = Path(args.keep) if args.keep else Path(scratch.name)
    try:
        results = measure(base, targets, width, height, args, env)
    finally:
        if scratch is not None:
            scratch.cleanup()
    report(results, args.workers)


def measure(base: Path, targets: list[int], width: int, height: int, args: argparse.Namespace,
            env: dict[str, str]) -> list[tuple[int, float, int]]:
    results = []
    warm = make_phrasecut_sample(base / "sample-warm" / "VGPhraseCut_v0", 8, 0, width, height)
    (base / "warm.yaml").write_text(yaml.safe_dump({"name": "warm", "out_dir": str(base / "out-warm"), "unit_size": 8,
                                                    "removal": {"source": {"root": str(warm), "splits": ["train"]}}}))
    run_build(base / "warm.yaml", env)  # the fresh Prefect home's database migration is not the build's cost
    for target in targets:
        images = int(np.ceil(target / PAIRS_PER_IMAGE))
        root = make_phrasecut_sample(base / f"sample-{target}" / "VGPhraseCut_v0", images, 0, width, height)
        out = base / f"out-{target}"
        config = base / f"build-{target}.yaml"
        config.write_text(yaml.safe_dump({
            "name": f"scale-{target}", "out_dir": str(out), "unit_size": args.unit_size, "workers": args.workers,
            "removal": {"source": {"root": str(root), "splits": ["train", "val"]},
                        "inpaint": {"backend": "opencv", "method": "telea", "radius": 5}, "mask_dilation": 7},
            "selection": {"min_target_aesthetic": 3.5, "max_aesthetic_gap": 1.5},
        }))
        seconds, peak = run_build(config, env)
        stats = json.loads((out / "stats.json").read_text())
        pairs = stats["rows"]
        units = len(list((out / "candidates").glob("*.parquet")))
        results.append((pairs, seconds, peak))
        print(f"{pairs:>7} pairs ({images} images, {units} units): {seconds:7.1f} s, {pairs / seconds:6.1f} pairs/s, "
              f"peak RSS of the build's process tree {peak / 2**20:7.0f} MiB (peaks: "
              + ", ".join(f"{k} {v / 2**20:.0f}" for k, v in sorted(PARTS[str(config)].items())) + ")", flush=True)
    return results


def report(results: list[tuple[int, float, int]], workers: int) -> None:
    pairs = np.array([r[0] for r in results], float)
    seconds = np.array([r[1] for r in results], float)
    if len(results) >= 2:
        slope, intercept = np.polyfit(pairs, seconds, 1)
        print(f"peak memory, largest / smallest build: {results[-1][2] / results[0][2]:.2f} (goal <= 1.2)")
        print(f"time = {intercept:.1f} s + {1000 * slope:.2f} ms/pair (least squares over {len(results)} builds); "
              f"159,000 pairs: {(intercept + slope * 159_000) / 3600:.2f} h on this machine with {workers} workers")
        per_pair = seconds / pairs
        print("seconds per pair by size: " + ", ".join(f"{int(p)}: {1000 * s:.2f} ms" for p, s in zip(pairs, per_pair)))


if __name__ == "__main__":
    main()
