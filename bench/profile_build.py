"""Where a Dask build's CPU goes: py-spy samples every process of `ieiw build` (the flow, Prefect's
temporary server, the Dask workers), and this prints, per kind of process, its active seconds, the
functions with the most own time and the heaviest call paths.

    .venv/bin/python bench/profile_build.py --images 720 --size 320x240

`bench/stages.py --profile` profiles the stage functions alone; this shows what a build adds around
them (Prefect's task engine, its client and server, Dask). Removal only, embedded backends, a Dask
LocalCluster of 2 pinned workers. Needs py-spy (in the dev extra); run it alone, it uses both cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from parallel import PIN, write_config  # the same pinned removal build as the efficiency bench

RATE = 50  # samples per second and process
# Leaf frames of a thread that waits (py-spy without --idle still samples some blocking calls).
WAITING = ("select", "wait", "poll", "_wait", "sleep", "acquire", "accept", "recv", "epoll")


def kind_of(process_frame: str) -> str:
    if "uvicorn" in process_frame or "prefect.server" in process_frame:
        return "prefect server"
    if "spawn_main" in process_frame:
        return "dask worker"
    if "ieiw build" in process_frame:
        return "flow"
    return "other"


# Where a sample's time goes: the first of these whose marker is in its stack (so an import inside the
# work counts as an import, and the work inside Prefect's task engine as the work).
CATEGORIES = (
    ("imports", ("_find_and_load",)),
    ("Prefect: a new API client (and TLS context) per task run", ("SyncPrefectClient.__init__",
                                                                 "PrefectClient.__init__")),
    ("Prefect: settings re-validated per task run", ("BaseSettings.__init__",)),
    ("Prefect: context serialised per submitted task", ("serialize_context",)),
    ("ieiw: the stages' work", ("ieiw/stages.py",)),
    ("ieiw: stats, card, report", ("ieiw/stats.py", "ieiw/report.py", "ieiw/card.py")),
    ("Prefect: task engine, other", ("prefect/task_engine.py",)),
    ("Prefect: server API and database", ("prefect/server/",)),
    ("Prefect: other", ("prefect/",)),
    ("Dask", ("distributed/", "dask/")),
)


def category(frames: list[str]) -> str:
    for label, markers in CATEGORIES:
        if any(marker in frame for frame in frames for marker in markers):
            return label
    return "other"


def summarise(raw: Path, top: int) -> None:
    """py-spy's raw format: one line per distinct stack, frames joined by ';', then the sample count."""
    active: Counter = Counter()
    own: dict[str, Counter] = {}
    shares: dict[str, Counter] = {}
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        last_process = max(i for i, frame in enumerate(frames) if frame.startswith("process "))
        kind, frames = kind_of(frames[last_process]), frames[last_process + 1:]
        if not frames:
            continue
        leaf = frames[-1].split(" (")[0].lower()
        if leaf.endswith(WAITING) or leaf.startswith(WAITING):
            continue
        samples = int(count)
        active[kind] += samples
        own.setdefault(kind, Counter())[frames[-1]] += samples
        shares.setdefault(kind, Counter())[category(frames)] += samples
    for kind, samples in active.most_common():
        print(f"{kind}: {samples / RATE:.1f} s active")
        for label, n in shares[kind].most_common():
            print(f"    {n / RATE:6.1f} s {100 * n / samples:5.1f}%  {label}")
        print("    most own time:")
        for frame, n in own[kind].most_common(top):
            print(f"    {n / RATE:6.1f} s {100 * n / samples:5.1f}%  {frame[:100]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=720)
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--unit-size", type=int, default=16)
    parser.add_argument("--top", type=int, default=8)
    parser.add_argument("--keep", help="keep py-spy's raw samples at this path")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        sys.exit("py-spy is not installed: pip install py-spy (it is in ieiw's dev extra)")
    from ieiw.samples.phrasecut import make_phrasecut_sample

    width, height = map(int, args.size.split("x"))
    with tempfile.TemporaryDirectory(prefix="ieiw-profile-", dir=".") as name:
        tmp = Path(name).resolve()
        root = make_phrasecut_sample(tmp / "VGPhraseCut_v0", args.images, 0, width, height)

        def write(name: str, limit: int | None, runner: dict | None) -> Path:  # bench/parallel.py's build
            return write_config(tmp / f"{name}.yaml", root, tmp / name, runner, limit, unit_size=args.unit_size)

        env = dict(os.environ, **PIN, PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_HOME=str(tmp / "prefect"))
        env.pop("PREFECT_API_URL", None)
        subprocess.run([sys.executable, "-m", "ieiw", "build", str(write("warm", 4, None))], env=env, check=True,
                       capture_output=True)  # the fresh Prefect home's database migration is not the build's
        config = write("profile", None, {"kind": "dask", "n_workers": 2, "threads_per_worker": 1})
        raw = Path(args.keep).resolve() if args.keep else tmp / "samples.txt"
        subprocess.run([spy, "record", "--subprocesses", "--nonblocking", "-r", str(RATE), "-f", "raw", "-o", str(raw),
                        "--", sys.executable, "-m", "ieiw", "build", str(config)], env=env, check=True,
                       capture_output=True)
        print(f"{args.images} scenes at {args.size}, units of {args.unit_size} records, Dask: 2 workers")
        summarise(raw, args.top)


if __name__ == "__main__":
    main()
