"""Scale-out (docs/scale.md): the Dask runner gives the same rows as the thread runner, a worker killed
mid-build costs nothing after a rerun, worker processes get their threads and GPU, and GPU tasks are
bounded by the Prefect global concurrency limit the flow uses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
from ieiw_testing import REPO, ieiw_env, run_ieiw, write_config

from ieiw import runner
from ieiw.schemas.config import ConfigError, absolute_paths, load_config
from ieiw.schemas.manifest import load_manifest

pytest.importorskip("prefect_dask")
pytestmark = pytest.mark.slow

DASK = {"kind": "dask", "n_workers": 2}


def small_config(path: Path, sample_root: Path, out: Path, relative: bool = False, **top) -> Path:
    """The demo-like removal build over 16 train records: 2 units of 8. ``relative`` writes the sample
    root and out_dir relative to the repository (where run_ieiw starts the build)."""
    root, out_dir = (Path(os.path.relpath(p, REPO)) if relative else p for p in (sample_root, out))
    return write_config(path, root, out_dir,
                        removal={"source": {"root": str(root), "splits": ["train"], "limit": 16}}, **top)


def pair_ids(out: Path) -> list[str]:
    """Every row id of every shard the manifest of out/ieiw lists."""
    folder = out / "ieiw"
    ids: list[str] = []
    for entry in load_manifest(folder)["units"].values():
        ids += pq.read_table(folder / entry["shard"], columns=["id"])["id"].to_pylist()
    return ids


@pytest.fixture(scope="module")
def reference(tmp_path_factory, sample_root) -> Path:
    """The same build on the default (thread) runner."""
    tmp = tmp_path_factory.mktemp("threads")
    run_ieiw("build", small_config(tmp / "build.yaml", sample_root, tmp / "out"))
    return tmp / "out"


def test_dask_build_gives_the_thread_runners_ids(reference, sample_root, tmp_path):
    config = small_config(tmp_path / "build.yaml", sample_root, tmp_path / "out", relative=True, runner=DASK)
    started = time.monotonic()
    proc = run_ieiw("build", config)
    print(f"dask build: {time.monotonic() - started:.1f} s")
    assert "kept" in proc.stdout
    ids, expected = pair_ids(tmp_path / "out"), pair_ids(reference)
    assert len(expected) > 0 and len(load_manifest(reference / "ieiw")["units"]) == 2
    assert sorted(ids) == sorted(expected) and len(ids) == len(set(ids))
    # the relative out_dir and sample root reached the workers as absolute paths of the same folders
    assert run_ieiw("verify", tmp_path / "out" / "ieiw").returncode == 0


def test_flow_started_on_the_default_runner_runs_the_build_on_dask(reference, sample_root, tmp_path):
    """A deployment starts build-ieiw with the flow's default task runner: the flow reruns itself as a
    subflow on the configured Dask runner."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentTaskRunId

    from ieiw.flows.build import build_ieiw

    import torch

    config = small_config(tmp_path / "build.yaml", sample_root, tmp_path / "out", runner=DASK)
    before = ({name: os.environ.get(name) for name in runner.PARENT_ENV}, torch.get_num_threads())
    state = build_ieiw(config_path=str(config), return_state=True)
    assert state.is_completed(), state.message
    # distributed's Nanny sets OMP/MKL/OpenBLAS = 1 (and a hash seed) in the parent before it spawns a
    # worker: the process that ran the build gets its environment and torch threads back
    assert ({name: os.environ.get(name) for name in runner.PARENT_ENV}, torch.get_num_threads()) == before
    assert sorted(pair_ids(tmp_path / "out")) == sorted(pair_ids(reference))
    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_task_run_id=FlowRunFilterParentTaskRunId(is_null_=False)))
    mine = [r for r in children if r.parameters.get("config_path") == str(config)]
    assert len(mine) == 1 and mine[0].state.is_completed()


def dask_workers(pid: int) -> list[psutil.Process]:
    """The Dask worker processes of one build: its children started by multiprocessing's spawn (the
    Nannies live in the build process; the Prefect API server is a uvicorn child, not counted)."""
    out = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                out.append(child)
        except psutil.NoSuchProcess:
            continue
    return out


def busiest(processes: list[psutil.Process], window: float = 0.2) -> psutil.Process:
    """The process that used the most CPU over ``window`` seconds."""
    for p in processes:
        p.cpu_percent(None)
    time.sleep(window)
    return max(processes, key=lambda p: p.cpu_percent(None) if p.is_running() else -1.0)


def test_sigkill_of_a_dask_worker_then_rerun_gives_the_same_ids(reference, sample_root, tmp_path):
    config = small_config(tmp_path / "build.yaml", sample_root, tmp_path / "out", runner=DASK)
    candidates = tmp_path / "out" / "candidates"
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "ieiw", "build", str(config)], cwd=REPO, env=ieiw_env(),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    killed = None
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and proc.poll() is None:
            if (candidates / "manifest.json").exists() and load_manifest(candidates)["units"]:
                workers = dask_workers(proc.pid)
                if workers:
                    killed = busiest(workers)  # most likely the one running a unit task right now
                    killed.send_signal(signal.SIGKILL)
                    break
            time.sleep(0.02)
        assert killed is not None, f"no Dask worker to kill before the build ended (rc {proc.poll()})"
        first_rc = proc.wait(180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    print(f"first run exited {first_rc} after the kill of worker {killed.pid}")
    assert not psutil.pid_exists(killed.pid) or psutil.Process(killed.pid).status() == psutil.STATUS_ZOMBIE

    run_ieiw("build", config)  # the rerun resumes (or finds everything done)
    out = tmp_path / "out"
    ids = pair_ids(out)
    duplicated = [i for i, n in Counter(ids).items() if n > 1]
    assert not duplicated, f"rows written twice: {duplicated[:3]}"
    assert sorted(ids) == sorted(pair_ids(reference))
    for stage in ("candidates", "features", "scores", "ieiw"):
        listed = {e["shard"] for e in load_manifest(out / stage)["units"].values()}
        on_disk = {p.name for p in (out / stage).glob("*.parquet")}
        assert on_disk == listed, f"{stage}: shards not in the manifest: {on_disk - listed}"
    assert not list(out.glob("*/.tmp-*")), "temp files of the killed writer are gone"
    verify = run_ieiw("verify", out / "ieiw")
    assert verify.returncode == 0 and "UNLISTED" not in verify.stderr


def test_worker_processes_get_their_threads_and_gpu(tmp_path, sample_root):
    """The LocalCluster a dask build starts: OpenMP/MKL/OpenCV threads = threads_per_worker in every worker
    process, and worker i sees GPU gpus[i % len(gpus)] (only the environment: no GPU is needed)."""
    from prefect import flow, task

    @task
    def probe(_: int) -> tuple[int, str | None, str | None, int]:
        import cv2

        time.sleep(0.5)  # keep this worker busy so the other one takes the next probe
        return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES"), os.environ.get("OMP_NUM_THREADS"), cv2.getNumThreads()

    config = load_config(small_config(tmp_path / "build.yaml", sample_root, tmp_path / "out"),
                         {"runner": {**DASK, "threads_per_worker": 2, "gpus": [3, 5]}})

    @flow
    def probes() -> list:
        with runner.shared_api():
            futures = [probe.submit(i) for i in range(4)]
            return [f.result() for f in futures]

    with runner.keep_parent_threads():
        seen = probes.with_options(task_runner=runner.make_task_runner(config))()
    by_pid = {pid: (gpu, omp, cv) for pid, gpu, omp, cv in seen}
    assert len(by_pid) == 2, seen
    assert sorted(gpu for gpu, _, _ in by_pid.values()) == ["3", "5"]
    assert all(omp == "2" and cv == 2 for _, omp, cv in by_pid.values())


def test_gpu_tasks_hold_a_slot_of_the_global_limit():
    """runner.gpu_concurrency 1: four tasks tagged gpu on four threads run one at a time, through the
    helpers the build flow uses (ensure_gpu_limit, gpu_tags, gpu_slot), against the Prefect API."""
    from prefect import flow, task
    from prefect.task_runners import ThreadPoolTaskRunner

    config = {"runner": {"gpu_concurrency": 1}}
    spans: list[tuple[float, float]] = []
    lock = threading.Lock()

    @task
    def stand_in(i: int) -> int:
        with runner.gpu_slot(config):
            start = time.monotonic()
            time.sleep(0.3)
            with lock:
                spans.append((start, time.monotonic()))
        return i

    def most_at_once() -> int:
        edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
        running = peak = 0
        for _, step in edges:
            running += step
            peak = max(peak, running)
        return peak

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=4))
    def four(on_gpu: bool) -> list[int]:
        runner.ensure_gpu_limit(config["runner"]["gpu_concurrency"])
        submit = stand_in.with_options(tags=runner.gpu_tags(on_gpu)).submit
        futures = [submit(i) for i in range(4)]
        return [f.result() for f in futures]

    assert four(False) == [0, 1, 2, 3]
    assert most_at_once() > 1, "untagged, the four overlap (the measure can see overlap)"
    spans.clear()
    assert four(True) == [0, 1, 2, 3]
    assert len(spans) == 4 and most_at_once() == 1, spans

    # A unit task (untagged here) names each stage's device itself: its GPU stage holds a slot, its CPU
    # stage gives it back and overlaps with the others' (what unit_task in ieiw/flows/build.py does).
    # A CPU stage waits (up to 10 s) until a second one has started: however slowly Prefect hands the
    # slot on under load, they overlap if the slot is free during CPU stages, and never if it is held.
    cpu_spans: list[tuple[float, float]] = []
    in_cpu = [0]
    two_in_cpu = threading.Event()

    @task
    def unit(i: int) -> int:
        with runner.gpu_slot(config, True):
            start = time.monotonic()
            time.sleep(0.2)
            with lock:
                spans.append((start, time.monotonic()))
        with runner.gpu_slot(config, False):
            start = time.monotonic()
            with lock:
                in_cpu[0] += 1
                if in_cpu[0] >= 2:
                    two_in_cpu.set()
            two_in_cpu.wait(10)
            time.sleep(0.1)
            with lock:
                in_cpu[0] -= 1
                cpu_spans.append((start, time.monotonic()))
        return i

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=4))
    def four_units() -> list[int]:
        futures = [unit.submit(i) for i in range(4)]
        return [f.result() for f in futures]

    spans.clear()
    assert four_units() == [0, 1, 2, 3]
    assert len(spans) == 4 and most_at_once() == 1, spans
    spans[:] = cpu_spans
    assert most_at_once() > 1, "the CPU stages overlap"

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(runner.GPU_LIMIT)
    assert limit.limit == 1 and limit.active_slots == 0


def test_gpu_stages_follow_the_backends_device(tmp_path, sample_root):
    config = small_config(tmp_path / "build.yaml", sample_root, tmp_path / "out")
    cpu = load_config(config)
    assert not any(runner.gpu_stages(cpu).values())
    cuda = load_config(config, {"removal.inpaint": {"backend": "lama", "device": "cuda"},
                                "scoring.features": {"backend": "clip", "model": str(tmp_path), "device": "cuda:1"}})
    assert runner.gpu_stages(cuda) == {"candidates:removal": True, "features": True, "score": False}
    on_cpu = load_config(config, {"removal.inpaint": {"backend": "lama", "device": "cpu"}})
    assert runner.gpu_stages(on_cpu)["candidates:removal"] is False
    server = load_config(config, {"removal.inpaint": {"backend": "lama-cleaner", "model": "lama",
                                                    "urls": ["http://127.0.0.1:9"]}})
    assert runner.gpu_stages(server)["candidates:removal"] is False  # the server's GPU, not this build's


def test_runner_config_validation_and_absolute_paths(tmp_path, sample_root):
    config = small_config(tmp_path / "build.yaml", sample_root, tmp_path / "out")
    for bad, message in (({"runner.n_workers": 3}, "only with kind: dask"),
                         ({"runner.kind": "dask", "runner.address": "tcp://10.0.0.5:8786", "runner.gpus": [0]},
                          "with address"),
                         ({"runner.kind": "slurm"}, "runner.kind")):
        with pytest.raises(ConfigError, match=message):
            load_config(config, bad)
    dask = load_config(config, {"runner": DASK, "out_dir": "out/x", "removal.source.root": "data/pc"})
    assert runner.in_flight(dask) == 2 and runner.in_flight(load_config(config, {"workers": 3})) == 3
    assert dask.digest() == load_config(config, {"out_dir": "out/x", "removal.source.root": "data/pc"}).digest()
    moved = absolute_paths(dask, "/srv/build")
    assert moved.out_dir == Path("/srv/build/out/x") and moved.removal.source.root == Path("/srv/build/data/pc")
    data = moved.model_dump(mode="json")
    assert data["out_dir"] == "/srv/build/out/x" and data["removal"]["source"]["root"] == "/srv/build/data/pc"
    assert absolute_paths(moved, "/elsewhere") == moved
