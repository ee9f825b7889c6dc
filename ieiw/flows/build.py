"""The `build-ieiw` Prefect flow: wiring only. The work lives in :mod:`ieiw.stages`.

Steps run one after the other: prepare + plan; [a builder's index: one task per unit, then one over
all of them]; one task per work unit running its candidates -> features -> scores; calibrate (one
task over the whole build); selection, one task per unit. At most ``runner.in_flight(config)`` unit
tasks are in flight. Every stage records its own shard, so a changed threshold reruns selection only
and a changed scorer reruns scores and selection. Tasks receive the config as plain JSON data, so any
task runner (threads, processes, Dask) can ship it; the runner is the config's ``runner:`` section
(:mod:`ieiw.runner`, docs/scale.md). A unit whose task still fails after its retries is reported and
skipped; the flow ends Failed listing those units, and a rerun resumes them (finished stages are
skipped through the manifests).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.futures import PrefectFuture, as_completed

from ieiw import runner, stages
from ieiw.progress import bar as progress_bar
from ieiw.schemas import storage
from ieiw.schemas.config import (
    BuildConfig,
    absolute_paths,
    is_local_only,
    load_config,
    local_only_overrides,
    missing_models,
)
from ieiw.schemas.layout import PAIRS
from ieiw.schemas.units import WorkUnit
from ieiw.stats import artifact_key, count_table, render_markdown

# Transient trouble (a full disk, an NFS hiccup, a GPU server restart) deserves a retry;
# bad records never raise, they are counted as failures inside the unit.
RETRY = dict(retries=2, retry_delay_seconds=[2, 10], cache_policy=NO_CACHE)


Config = dict[str, Any]  # the validated build config's JSON form


@task(name="prepare", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def prepare_task(config: Config) -> None:
    """Builders' one-off preparation (bundled samples...) and the stage folders' manifests."""
    stages.build_for(config).prepare()


@task(name="plan", cache_policy=NO_CACHE)
def plan_units(config: Config) -> list[tuple[str, WorkUnit]]:
    return stages.build_for(config).plan()


@task(name="index-unit", task_run_name="index-{unit.key}", **RETRY)
def index_unit_task(config: Config, builder_name: str, unit: WorkUnit) -> stages.UnitOutcome:
    with runner.gpu_slot(config):  # holds a GPU slot only when submitted with the `gpu` tag
        return stages.make_index_unit(stages.build_for(config), builder_name, unit)


@task(name="index", task_run_name="index-{builder_name}", **RETRY)
def index_task(config: Config, builder_name: str, units: list[str]) -> dict[str, Any]:
    """One task over a builder's index shards: the database its candidates query."""
    return stages.make_index(stages.build_for(config), builder_name, units)


@task(name="uses-index", cache_policy=NO_CACHE)
def indexed_builders(config: Config) -> list[str]:
    return [name for name, b in stages.build_for(config).builders.items() if b.uses_index]


@task(name="unit", task_run_name="unit-{unit.key}", **RETRY)
def unit_task(config: Config, builder_name: str, on_gpu: dict[str, bool], unit: WorkUnit) -> list[stages.UnitOutcome]:
    """candidates -> features -> scores of one unit, as one task run.

    One task run, not three: on Dask each task run costs HTTP calls to Prefect's server and a round
    trip through the scheduler, a heavy share of a unit's second or two of CPU work (docs/PERFORMANCE.md,
    "Parallel efficiency"). Each stage still records its own shard, so a retry or a rerun resumes at the
    first unfinished stage, and each holds a GPU slot only if it runs on a GPU itself.
    """
    build = stages.build_for(config)
    with runner.gpu_slot(config, on_gpu[f"candidates:{builder_name}"]):
        made = stages.make_candidates(build, builder_name, unit)
    with runner.gpu_slot(config, on_gpu["features"]):
        featured = stages.extract_features(build, made.unit)
    with runner.gpu_slot(config, on_gpu["score"]):
        scored = stages.score_unit(build, made.unit)
    return [made, featured, scored]


@task(name="calibrate", **RETRY)
def calibrate_task(config: Config, units: list[str]) -> dict[str, Any]:
    """The one global step before selection: quantile thresholds and duplicates over the whole build."""
    return stages.calibrate_build(stages.build_for(config), units)


@task(name="select", task_run_name="select-{unit}", **RETRY)
def select_task(config: Config, unit: str) -> stages.UnitOutcome:
    return stages.select_unit(stages.build_for(config), unit)


@task(name="summarise", cache_policy=NO_CACHE)
def summarise_task(config: Config, failed_units: list[str]) -> dict[str, Any]:
    """The build's last steps (:func:`ieiw.stages.finish`: manifests compacted, stats.json, the dataset card,
    the HTML report), and the run's artifacts in the Prefect UI."""
    stats, report = stages.finish(stages.build_for(config), failed_units)
    key = artifact_key(config["name"])
    create_table_artifact(key=f"ieiw-counts-{key}", table=count_table(stats),
                          description=f"IEIW build {config['name']}: rows per task / source / split, reasons")
    create_markdown_artifact(key=f"ieiw-stats-{key}", markdown=render_markdown(stats, report, failed_units),
                             description=f"IEIW build {config['name']}")
    return stats


def run_bounded(submit: Callable[..., PrefectFuture], calls: Iterable[tuple], limit: int,
                desc: str = "") -> tuple[list, list]:
    """Submit ``calls`` keeping at most ``limit`` futures in flight, under any task runner.

    Returns (results, failures): a failure is (call, exception) and does not stop the others. A
    progress bar counts finished units when a person is watching (ieiw/progress.py).
    """
    calls = list(calls)
    results, failures, in_flight = [], [], {}

    with progress_bar(len(calls), desc, "unit") as bar:

        def collect(future: PrefectFuture) -> None:
            call = in_flight.pop(future)
            outcome = future.result(raise_on_failure=False)
            if isinstance(outcome, BaseException):
                failures.append((call, outcome))
            else:
                results.append(outcome)
            bar.update(1)

        for call in calls:
            in_flight[submit(*call)] = call
            if len(in_flight) >= limit:
                collect(next(as_completed(list(in_flight))))
        for future in list(in_flight):
            collect(future)
    return results, failures


@flow(name="build-ieiw", log_prints=True)
def build_ieiw(
    config_path: str = "configs/demo.yaml",
    out_dir: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build IEIW pairs from the sources in ``config_path`` into ``<out_dir>/ieiw``, on the task runner
    the config's ``runner:`` names."""
    refused = sorted(key for key in overrides or {} if is_local_only(key))
    if refused:  # before anything is imported
        raise PermissionError(f"overrides {', '.join(refused)}: a flow run's parameters cannot name modules to "
                              "import; put plugins in the config file, or pass --set on the machine that runs ieiw build")
    logger = get_run_logger()
    overrides = {**(overrides or {}), **local_only_overrides()}
    if out_dir is not None:
        overrides["out_dir"] = out_dir
    validated = load_config(config_path, overrides)
    missing = missing_models(validated)
    if missing:  # a deployment run reaches here without the CLI's check
        raise FileNotFoundError(f"{config_path}: cannot build: " + "; ".join(missing))
    if not runner.runner_fits(validated, FlowRunContext.get().task_runner):
        # a deployment (or a plain call) starts this flow on the default runner: run it again as a
        # subflow on the configured one (`ieiw build` passes the right runner and never gets here)
        logger.info("runner.kind %s: running the build as a subflow on that task runner", validated.runner.kind)
        with runner.keep_parent_threads():
            return build_ieiw.with_options(task_runner=runner.make_task_runner(validated))(
                config_path, out_dir, {k: v for k, v in overrides.items() if not is_local_only(k)} or None)
    if runner.is_dask(validated):  # a worker's working directory may be elsewhere: ship absolute paths
        validated = absolute_paths(validated, Path.cwd())
    logger.info("config %s (hash %s), output %s, runner %s", config_path, validated.digest(), validated.out_dir,
                validated.runner.kind)
    with runner.shared_api() if runner.is_dask(validated) else contextlib.nullcontext():
        return run_stages(validated)


def run_stages(validated: BuildConfig) -> dict[str, Any]:
    """The stages on the flow's task runner, at most ``runner.in_flight(config)`` unit tasks at once."""
    logger = get_run_logger()
    config = validated.model_dump(mode="json")
    workers = runner.in_flight(validated)
    on_gpu = runner.gpu_stages(validated)
    if validated.runner.gpu_concurrency is not None:
        runner.ensure_gpu_limit(validated.runner.gpu_concurrency)
    if any(on_gpu.values()):
        logger.info("GPU stages (tag %s, %s): %s", runner.GPU_TAG,
                    f"at most {validated.runner.gpu_concurrency} at once" if validated.runner.gpu_concurrency
                    else "unbounded", ", ".join(stage for stage, gpu in on_gpu.items() if gpu))

    def tagged(task_: Any, gpu: bool) -> Callable[..., PrefectFuture]:
        return task_.with_options(tags=runner.gpu_tags(gpu)).submit

    prepare_task(config)
    units = plan_units(config)
    logger.info("%d work units of up to %d records", len(units), validated.unit_size)
    failed: list = []
    blocked: set[str] = set()  # builders whose index could not be built: their candidates wait for a rerun
    for name in indexed_builders(config):
        mine = [(config, b, u) for b, u in units if b == name]
        indexed, failed_index = run_bounded(tagged(index_unit_task, on_gpu[f"candidates:{name}"]), mine, workers, "index")
        failed += failed_index
        if failed_index:
            blocked.add(name)
            continue
        try:
            index_task(config, name, sorted(o.unit for o in indexed))
        except Exception as exc:  # noqa: BLE001 - reported with the other failed units; a rerun resumes
            failed.append(((config, name, f"index-{name}"), exc))
            blocked.add(name)
    submit_unit = {name: tagged(unit_task, any(on_gpu[stage] for stage in (f"candidates:{name}", "features", "score")))
                   for name in {b for b, _ in units}}  # tagged gpu when any of the unit's stages is
    done, failed_unit_tasks = run_bounded(lambda c, b, g, u: submit_unit[b](c, b, g, u),
                                          [(config, b, on_gpu, u) for b, u in units if b not in blocked], workers, "units")
    failed += failed_unit_tasks
    made, featured, scored = ([outcomes[i] for outcomes in done] for i in range(3))
    calibrate_task(config, sorted(o.unit for o in scored))
    selected, failed_select = run_bounded(select_task.submit, [(config, o.unit) for o in scored], workers, "select")
    failed += failed_select

    for stage_outcomes in (made, featured, scored, selected):
        if stage_outcomes:
            skipped = sum(o.skipped for o in stage_outcomes)
            logger.info("%s: %d units done, %d already finished earlier", stage_outcomes[0].stage,
                        len(stage_outcomes) - skipped, skipped)
    failed_units = [f"{call[-1] if isinstance(call[-1], str) else call[-1].key}: {exc!r}" for call, exc in failed]
    stats = summarise_task(config, failed_units)
    logger.info("kept %d pairs %s in %s", stats["rows"], stats["by_task"], storage.location(validated.out_dir) / PAIRS)
    if failed:
        raise RuntimeError(f"{len(failed)} unit task(s) failed after retries (rerun to resume):\n"
                           + "\n".join(failed_units))
    return stats
