"""Parallel efficiency: 2 worker processes against 1 on this machine, threads pinned (1 per process).

    .venv/bin/python bench/parallel.py --images 240 --size 320x240

(a) the stage functions alone (candidates -> features -> scores of every unit, ieiw/stages.py) in a
    process pool of 1 and of 2, each process pinned to one OpenCV / OpenMP / torch thread: the work's
    own scaling, the physical limit on 2 cores;
(b) `ieiw build` with `runner: {kind: dask, n_workers: N, threads_per_worker: 1}` for N = 1 and 2,
    whole build (Prefect server, cluster start, calibration, selection, stats, report included), and its
    work stages alone (from the flow's log timestamps is not reliable, so: the whole build minus the same
    build's fixed part, measured as a 1-unit build).

(c) `ieiw build` as on a cluster: against a Prefect server that is already running (`make serve`) and an
    existing Dask cluster of N pinned worker processes (`runner: {kind: dask, address: ...}`), each
    cluster warmed by a 1-unit build first, as a long-lived one is. The server's and the scheduler's
    start-up are not in the build's time; they still share the 2 cores with the workers.

Efficiency = T(1) / (2 x T(2)); goal >= 0.8. Run it alone.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import yaml

PIN = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "OPENCV_FOR_THREADS_NUM": "1"}


def _pin() -> None:
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def _unit(config_path: str, builder: str, unit_key: str) -> int:
    """candidates -> features -> scores of one unit in this (pool) process."""
    from ieiw import stages
    from ieiw.schemas.config import load_config

    build = stages.build_for(load_config(config_path))
    unit = next(u for b, u in build.plan() if u.key == unit_key)
    made = stages.make_candidates(build, builder, unit)
    stages.extract_features(build, made.unit)
    stages.score_unit(build, made.unit)
    return made.rows


def stage_pool(config: Path, processes: int) -> float:
    from ieiw import stages
    from ieiw.schemas.config import load_config

    build = stages.Build(load_config(config))
    build.prepare()
    units = build.plan()
    context = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(processes, mp_context=context, initializer=_pin) as pool:
        list(pool.map(_unit, [str(config)] * processes, [units[0][0]] * processes,
                      [u.key for _, u in units[:processes]]))  # warm: imports and sources loaded per process
        for folder in ("candidates", "features", "scores"):
            for path in (build.out / folder).rglob("*"):
                if path.is_file():
                    path.unlink()
        start = time.perf_counter()
        list(pool.map(_unit, [str(config)] * len(units), [b for b, _ in units], [u.key for _, u in units]))
        return time.perf_counter() - start


def write_config(path: Path, root: Path, out: Path, runner: dict | None, limit: int | None = None,
                 workers: int = 2, unit_size: int = 16) -> Path:
    source = {"root": str(root), "splits": ["train", "val"]}
    if limit:
        source["limit"] = limit
    config = {"name": path.stem, "out_dir": str(out), "unit_size": unit_size, "workers": workers,
              "removal": {"source": source, "inpaint": {"backend": "opencv", "method": "telea", "radius": 5},
                          "mask_dilation": 7},
              "selection": {"min_target_aesthetic": 3.5, "max_aesthetic_gap": 1.5}}
    if runner:
        config["runner"] = runner
    path.write_text(yaml.safe_dump(config))
    return path


def timed_build(config: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ieiw", "build", str(config)], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_server(env: dict[str, str], folder: Path) -> Iterator[str]:
    """A Prefect server on 127.0.0.1 for the duration (what `make serve` leaves running); its API URL."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    log = open(folder / "server.log", "wb")
    server = subprocess.Popen([str(Path(sys.executable).with_name("prefect")), "server", "start", "--host",
                               "127.0.0.1", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if urllib.request.urlopen(f"{api}/health", timeout=1).status == 200:
                    break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Prefect server did not start: see {folder / 'server.log'}")
            time.sleep(0.5)
        yield api
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def cluster_builds(root: Path, tmp: Path, env: dict[str, str], unit_size: int) -> dict[int, float]:
    """(c): whole builds against a running server and an existing cluster of N pinned workers."""
    from distributed import LocalCluster

    times = {}
    with running_server(env, tmp) as api:
        build_env = dict(env, PREFECT_API_URL=api)
        for n in (1, 2):
            with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                              env=dict(PIN)) as cluster:
                runner = {"kind": "dask", "address": cluster.scheduler_address}
                timed_build(write_config(tmp / f"cwarm{n}.yaml", root, tmp / f"cwarm{n}", runner, 16, n, unit_size),
                            build_env)
                times[n] = timed_build(write_config(tmp / f"cluster{n}.yaml", root, tmp / f"cluster{n}", runner,
                                                    workers=n, unit_size=unit_size), build_env)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--parts", default="abc", help="which measurements to run, e.g. 'a' or 'bc'")
    parser.add_argument("--unit-size", type=int, default=16, help="records per work unit (one task run each)")
    args = parser.parse_args()
    os.environ.update(PIN)
    from ieiw.samples.phrasecut import make_phrasecut_sample

    width, height = map(int, args.size.split("x"))
    with tempfile.TemporaryDirectory(prefix="ieiw-parallel-", dir=".") as name:
        tmp = Path(name).resolve()
        root = make_phrasecut_sample(tmp / "VGPhraseCut_v0", args.images, 0, width, height)
        print(f"sample: {args.images} images at {args.size}, units of {args.unit_size} records, {os.cpu_count()} CPUs")
        if "a" in args.parts:
            times = {n: stage_pool(write_config(tmp / f"pool{n}.yaml", root, tmp / f"pool{n}", None,
                                              unit_size=args.unit_size), n) for n in (1, 2)}
            print(f"(a) stage functions in a process pool: 1 process {times[1]:.1f} s, 2 processes {times[2]:.1f} s "
                  f"-> speed-up {times[1] / times[2]:.2f}, efficiency {times[1] / (2 * times[2]):.2f} (goal >= 0.8)")
        env = dict(os.environ, PREFECT_SERVER_ANALYTICS_ENABLED="false",
                   PREFECT_HOME=tempfile.mkdtemp(prefix="ieiw-bench-prefect-", dir=tmp))
        env.pop("PREFECT_API_URL", None)
        if "b" in args.parts:
            builds, fixed = {}, {}
            timed_build(write_config(tmp / "warm.yaml", root, tmp / "warm", None, limit=4), env)  # DB migration
            for n in (1, 2):
                runner = {"kind": "dask", "n_workers": n, "threads_per_worker": 1}
                fixed[n] = timed_build(write_config(tmp / f"fixed{n}.yaml", root, tmp / f"fixed{n}", runner, limit=16,
                                                    unit_size=args.unit_size), env)
                builds[n] = timed_build(write_config(tmp / f"dask{n}.yaml", root, tmp / f"dask{n}", runner,
                                                    unit_size=args.unit_size), env)
            work = {n: builds[n] - fixed[n] for n in (1, 2)}
            print(f"(b) ieiw build on Dask, whole build: 1 worker {builds[1]:.1f} s, 2 workers {builds[2]:.1f} s -> "
                  f"efficiency {builds[1] / (2 * builds[2]):.2f}")
            print(f"    less the fixed part (a 1-unit build: {fixed[1]:.1f} s / {fixed[2]:.1f} s): {work[1]:.1f} s vs "
                  f"{work[2]:.1f} s -> efficiency {work[1] / (2 * work[2]):.2f} (goal >= 0.8)")
        if "c" in args.parts:
            cluster = cluster_builds(root, tmp, env, args.unit_size)
            print(f"(c) ieiw build against a running Prefect server and an existing cluster: 1 worker {cluster[1]:.1f}"
                  f" s, 2 workers {cluster[2]:.1f} s -> efficiency {cluster[1] / (2 * cluster[2]):.2f} (goal >= 0.8)")

if __name__ == "__main__":
    main()
