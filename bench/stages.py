"""Per-stage throughput and the pipeline's hotspots, with no orchestration in the way: the stage functions
the flow's tasks call (ieiw/stages.py), run one after the other in this process on one core, on the
demo's configuration (removal on the synthetic PhraseCut sample, replacement on the SA-1B and Open Images
samples, the crawl sample, embedded features, proxy + KNN-GIQA scores, selection).

    .venv/bin/python bench/stages.py                       # per-stage units/s and pairs/s
    .venv/bin/python bench/stages.py --profile             # + the top functions by own time (pyinstrument)

Prints, per stage, seconds, units/s and candidate pairs/s, and with --profile the hottest functions of
the whole run. Run it alone (it pins torch and OpenCV to one thread, so the numbers are per core).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--profile", action="store_true", help="profile with pyinstrument (pip install pyinstrument)")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()

    import cv2
    import torch

    from ieiw import stages
    from ieiw.schemas.config import load_config

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    profiler = None
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.002)
    with tempfile.TemporaryDirectory(prefix="ieiw-stages-", dir=".") as tmp:
        config = load_config(args.config, {"out_dir": str(Path(tmp) / "out")})
        build = stages.Build(config)
        seconds: dict[str, float] = defaultdict(float)

        def timed(stage: str, fn, *call):
            start = time.perf_counter()
            value = fn(*call)
            seconds[stage] += time.perf_counter() - start
            return value

        timed("prepare (samples, references)", build.prepare)
        units = build.plan()
        start = time.perf_counter()
        from ieiw.phrases import _engine

        _engine()  # once per process; 1.2-1.7 s when typeguard instrumented it (ieiw/builders/instructions.py)
        print(f"one-off import of inflect: {time.perf_counter() - start:.2f} s, excluded below")
        if profiler:
            profiler.start()
        for name, builder in build.builders.items():
            if builder.uses_index:
                mine = [u for b, u in units if b == name]
                for unit in mine:
                    timed("index units", stages.make_index_unit, build, name, unit)
                timed("index", stages.make_index, build, name, sorted(u.key for u in mine))
        made = [timed("candidates", stages.make_candidates, build, b, u) for b, u in units]
        keys = sorted(o.unit for o in made)
        for unit in keys:
            timed("features", stages.extract_features, build, unit)
        for unit in keys:
            timed("scores", stages.score_unit, build, unit)
        timed("calibrate", stages.calibrate_build, build, keys)
        kept = sum(timed("select", stages.select_unit, build, unit).rows for unit in keys)
        if profiler:
            profiler.stop()
        pairs = sum(o.rows for o in made)
    print(f"{args.config}: {len(units)} units, {pairs} candidate pairs, {kept} kept; one core")
    for stage, value in seconds.items():
        per = "" if stage.startswith(("prepare", "calibrate", "index ")) or stage == "index" else \
            f"  {len(units) / value:7.1f} units/s  {pairs / value:8.1f} pairs/s"
        print(f"  {stage:<32} {value:7.2f} s{per}")
    work = sum(v for k, v in seconds.items() if not k.startswith("prepare"))
    print(f"  {'all stages (prepare excluded)':<32} {work:7.2f} s  {pairs / work:8.1f} pairs/s")
    if profiler:
        from pyinstrument.renderers import ConsoleRenderer

        text = profiler.output(ConsoleRenderer(flat=True, flat_time="self", time="percent_of_total"))
        lines = [line for line in text.splitlines() if "%" in line or line.strip()[:1].isdigit()]
        print(f"hotspots by own time (pyinstrument, {profiler.last_session.duration:.1f} s profiled):")
        for line in lines[: args.top]:
            print("  " + line.strip())


if __name__ == "__main__":
    main()
