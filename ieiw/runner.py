"""Where a build's tasks run: the ``runner:`` config section as a Prefect task runner, CPU threads pinned
in Dask worker processes, and a bound on concurrent GPU work (docs/scale.md).

- ``kind: threads`` (default): Prefect's ``ThreadPoolTaskRunner`` in the process that runs the flow,
  ``workers`` tasks at once.
- ``kind: dask``: ``prefect_dask.DaskTaskRunner`` (extra ``dask``): a ``distributed.LocalCluster`` of
  ``n_workers`` processes with ``threads_per_worker`` threads each, or an existing cluster at ``address``.
  Each local worker process gets ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` /
  ``OPENCV_FOR_THREADS_NUM`` = ``threads_per_worker`` before it starts (these libraries size their
  thread pools once, when they load), and :class:`PinWorker` repeats it with ``cv2.setNumThreads`` /
  ``torch.set_num_threads`` and sets ``CUDA_VISIBLE_DEVICES`` to the worker's GPU. Without this every
  process would start one OpenCV and one OpenMP thread per core: N processes x cores threads fighting
  over the same cores.
- GPU stages: a task that may run a model on CUDA is submitted with the tag ``gpu``
  (:func:`gpu_tags`), and its body runs inside :func:`gpu_slot`, which holds one slot of the Prefect
  global concurrency limit ``ieiw-gpu`` while ``runner.gpu_concurrency`` is set
  (:func:`ensure_gpu_limit` creates or resizes it). The slot is a lease the server takes back when its
  holder dies (:data:`GPU_LEASE_S`), so a killed worker does not keep a GPU slot forever.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

from ieiw.schemas.config import BackendConfig, BuildConfig, RunnerConfig, iter_models

GPU_TAG = "gpu"
GPU_LIMIT = "ieiw-gpu"
GPU_LEASE_S = 60.0  # renewed every 45 s while the task runs; a dead holder's slot is free within a minute
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENCV_FOR_THREADS_NUM")

try:  # the dask extra; only the dask runner needs it
    from distributed import WorkerPlugin as _WorkerPlugin
except ImportError:  # pragma: no cover - without the extra, PinWorker is never made
    _WorkerPlugin = object  # type: ignore[misc,assignment]


def runner_config(config: BuildConfig | dict[str, Any]) -> RunnerConfig:
    if isinstance(config, BuildConfig):
        return config.runner
    return RunnerConfig.model_validate(config.get("runner") or {})


def is_dask(config: BuildConfig) -> bool:
    return config.runner.kind == "dask"


def local_workers(config: BuildConfig) -> int:
    """Worker processes of the LocalCluster a dask build starts."""
    return config.runner.n_workers or config.workers


def in_flight(config: BuildConfig) -> int:
    """Unit tasks the flow keeps submitted at once: every thread of every local worker; with threads or
    an existing cluster (whose size ieiw does not know), ``workers``."""
    r = config.runner
    if r.kind == "dask" and r.address is None:
        return local_workers(config) * r.threads_per_worker
    return config.workers


def thread_env(threads: int) -> dict[str, str]:
    return {name: str(threads) for name in THREAD_ENV}


class PinWorker(_WorkerPlugin):
    """Dask worker plugin: this process's CPU threads and GPU. Runs when the worker starts, before any
    task, so before torch initialises CUDA (which reads ``CUDA_VISIBLE_DEVICES`` then, once)."""

    name = "ieiw-pin-worker"

    def __init__(self, threads: int, gpus: tuple[int, ...] | None = None):
        self.threads = threads
        self.gpus = tuple(gpus) if gpus else None

    def gpu_for(self, worker_name: Any) -> int | None:
        if not self.gpus:
            return None
        try:
            index = int(worker_name)  # a LocalCluster names its workers 0, 1, ...; a restarted one keeps its name
        except (TypeError, ValueError):
            index = sum(str(worker_name).encode())
        return self.gpus[index % len(self.gpus)]

    def setup(self, worker: Any) -> None:
        os.environ.update(thread_env(self.threads))  # for libraries loaded later in this process
        gpu = self.gpu_for(worker.name)
        if gpu is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
        import cv2

        cv2.setNumThreads(self.threads)
        torch = sys.modules.get("torch")  # loaded later, torch reads OMP_NUM_THREADS itself
        if torch is not None:
            torch.set_num_threads(self.threads)


# What distributed's Nanny writes into the *parent's* os.environ before it spawns a worker (its
# ``distributed.nanny.pre-spawn-environ``: OMP/MKL/OpenBLAS = 1, PYTHONHASHSEED, MALLOC_TRIM_THRESHOLD_) and
# never takes back.
PARENT_ENV = (*THREAD_ENV, "PYTHONHASHSEED", "MALLOC_TRIM_THRESHOLD_")


@contextlib.contextmanager
def keep_parent_threads() -> Iterator[None]:
    """Run a Dask build and give this process its environment and torch threads back afterwards: the
    Nanny's pre-spawn settings would otherwise leave the process that ran the build (a notebook, a
    deployment's worker, a test session) single-threaded and with a fixed hash seed for its children."""
    saved = {name: os.environ.get(name) for name in PARENT_ENV}
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_num_threads(threads or torch.get_num_threads())


def make_task_runner(config: BuildConfig) -> Any:
    """The Prefect task runner ``config.runner`` asks for."""
    r = config.runner
    if r.kind == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=config.workers)
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise RuntimeError("runner.kind dask needs the dask extra: pip install -e '.[dask]'") from None
    if r.address is not None:
        return DaskTaskRunner(address=r.address)
    logging.getLogger("distributed").setLevel(logging.WARNING)  # the scheduler runs here: no INFO chatter
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": local_workers(config),
            "threads_per_worker": r.threads_per_worker,
            "processes": True,
            "env": thread_env(r.threads_per_worker),  # set before each worker process starts
            "plugins": (PinWorker(r.threads_per_worker, r.gpus),),
            "dashboard_address": ":0",  # a free port: two builds on one machine do not collide
        },
    )


def runner_fits(config: BuildConfig, task_runner: Any) -> bool:
    """Whether the flow already runs on the kind of task runner ``config`` asks for."""
    if config.runner.kind == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return isinstance(task_runner, ThreadPoolTaskRunner)
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        return False
    return isinstance(task_runner, DaskTaskRunner)


@contextlib.contextmanager
def shared_api() -> Iterator[None]:
    """Tasks submitted inside see this process's Prefect API. Without ``PREFECT_API_URL`` the flow talks
    to a temporary server it started on 127.0.0.1; the settings shipped with each task name no URL, so
    every Dask worker process would start a server of its own on the same database. Here the URL the
    flow's client uses goes into the settings, which Prefect sends with each task."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        yield
        return
    with get_client(sync_client=True) as client:
        url = str(client.api_url).rstrip("/")
    with temporary_settings({PREFECT_API_URL: url}):
        yield


# -- GPU stages -------------------------------------------------------------------------------------
def uses_gpu(*parts: Any) -> bool:
    """Whether any backend in these config parts may run on a GPU of this process
    (:meth:`ieiw.schemas.config.BackendConfig.uses_gpu`)."""
    return any(model.uses_gpu() for part in parts for model in iter_models(part) if isinstance(model, BackendConfig))


def gpu_stages(config: BuildConfig) -> dict[str, bool]:
    """Per stage (``candidates:<builder>`` covers its index tasks too, ``features``, ``score``): GPU or not."""
    out = {f"candidates:{name}": uses_gpu(section) for name, section in config.builder_sections().items()}
    scoring = config.scoring  # type: ignore[attr-defined]
    out["features"] = uses_gpu(list(scoring.extractors().values()))
    out["score"] = uses_gpu(list(scoring.scorers))
    return out


def gpu_tags(on_gpu: bool) -> set[str]:
    return {GPU_TAG} if on_gpu else set()


def ensure_gpu_limit(limit: int) -> None:
    """Create the global concurrency limit ``ieiw-gpu`` with ``limit`` slots, or resize it."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(GPU_LIMIT, limit)


@contextlib.contextmanager
def gpu_slot(config: BuildConfig | dict[str, Any], on_gpu: bool | None = None) -> Iterator[None]:
    """Wrap GPU work in a task: while ``runner.gpu_concurrency`` is set, hold one slot of ``ieiw-gpu``
    (waiting for one) if ``on_gpu``, or, with ``on_gpu`` left out, if the task run is tagged ``gpu``.
    Otherwise nothing."""
    if runner_config(config).gpu_concurrency is None:
        yield
        return
    if on_gpu is None:
        from prefect.context import TaskRunContext

        ctx = TaskRunContext.get()
        on_gpu = ctx is not None and GPU_TAG in set(ctx.task_run.tags)
    if not on_gpu:
        yield
        return
    from prefect.concurrency.sync import concurrency

    with concurrency(GPU_LIMIT, occupy=1, strict=True, lease_duration=GPU_LEASE_S):
        yield
