"""`selection.quotas`: the paper's per-source sizes (issue "Scale", item 1). A quota keeps the first rows of
a builder in plan order among those that pass every other rule, whatever order units finish in; a shortfall
is reported by `ieiw stats`; changing a quota reruns calibration and selection only."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from ieiw_testing import run_ieiw

from ieiw import stages
from ieiw.filters.selection import QUOTA_REACHED, SelectionConfig, quota_allowances
from ieiw.schemas.config import ConfigError, load_config
from ieiw.schemas.manifest import load_manifest
from ieiw.stats import compute_stats, quota_lines, render_markdown

# Strict enough that some rows fail the quality rule, so "passing the other rules" is a real subset. The
# splits are listed val first: plan order (val units, then train units) is not the units' name order.
SELECTION = {"min_target_aesthetic": {"quantile": 0.3}, "max_aesthetic_gap": 3.0}
REMOVAL = {"source": {"splits": ["val", "train"]}}


def config_for(make_config, quotas=None, out: Path | None = None, name: str = "build.yaml") -> Path:
    path = make_config(out=out, name=name, unit_size=8, selection={**SELECTION, "quotas": quotas})
    data = yaml.safe_load(path.read_text())
    data["removal"]["source"]["splits"] = REMOVAL["source"]["splits"]
    path.write_text(yaml.safe_dump(data))
    return path


def run_stages(path: Path, select_order=None) -> tuple[stages.Build, list[str]]:
    """The flow's stages in this process (no Prefect); ``select_order`` reorders the units' candidates
    and selection (as if they finished in that order)."""
    build = stages.build_for(load_config(path))
    build.prepare()
    plan = build.plan()
    keys = [unit.key for _, unit in plan]
    order = select_order(list(range(len(plan)))) if select_order else list(range(len(plan)))
    for i in order:
        stages.make_candidates(build, *plan[i])
    for i in order:
        stages.extract_features(build, keys[i])
        stages.score_unit(build, keys[i])
    stages.calibrate_build(build, sorted(keys))
    for i in order:
        stages.select_unit(build, keys[i])
    return build, keys


def rows_in_plan_order(out: Path, folder: str, keys: list[str], columns=("id", "task", "origin")) -> list[dict]:
    return [r for key in keys for r in pq.read_table(out / folder / f"{key}.parquet", columns=list(columns)).to_pylist()]


def test_allowances_share_a_quota_in_the_order_given():
    units = [("u1", "removal", 5), ("c1", "crawl", 3), ("u2", "removal", 4), ("u3", "removal", 2), ("r1", "replacement", 9)]
    quotas = quota_allowances(units, {"removal": 7, "crawl": 10})
    assert quotas["allowed"] == {"u1": 5, "u2": 2, "u3": 0, "c1": 3}, "no allowance = no cut (replacement)"
    assert quotas["passed"] == {"removal": 11, "crawl": 3}


def test_quota_keys_are_builder_names_and_null_means_none():
    assert SelectionConfig().quota_limits() == {} and SelectionConfig(quotas=None).fingerprint() == SelectionConfig().fingerprint()
    assert "quotas" not in SelectionConfig().fingerprint(), "builds without quotas keep their calibration fingerprint"
    assert SelectionConfig(quotas={"removal": 5, "crawl": None}).quota_limits() == {"removal": 5}
    with pytest.raises(ValueError, match="unknown builder"):
        SelectionConfig(quotas={"remove": 5})


def test_paper_config_carries_the_papers_sizes_and_the_paper_deployment_runs_it():
    config = yaml.safe_load(Path(stages.__file__).parents[1].joinpath("configs/ieiw.paper.yaml").read_text())
    assert config["selection"]["quotas"] == {"removal": 85000, "replacement": 51000, "crawl": 23000}
    assert SelectionConfig(**config["selection"]).quota_limits()["removal"] == 85000
    deployments = yaml.safe_load(Path(stages.__file__).parents[1].joinpath("prefect.yaml").read_text())["deployments"]
    paper = next(d for d in deployments if d["name"] == "paper")
    assert paper["parameters"]["config_path"] == "configs/ieiw.paper.yaml"


def test_quota_keeps_the_first_passing_rows_in_plan_order_and_changing_it_reruns_selection_only(make_config, tmp_path):
    out = tmp_path / "out"
    build, keys = run_stages(config_for(make_config))
    assert len(keys) >= 3 and keys[0].startswith("phrasecut-val") and keys != sorted(keys), "plan order != names"
    passing = [r["id"] for r in rows_in_plan_order(out, "ieiw", keys)]
    rejected = rows_in_plan_order(out, "rejected", keys, ("id", "reason"))
    assert rejected and QUOTA_REACHED not in {r["reason"] for r in rejected}, "no quota: nothing is cut"
    assert not (build.out / "calibration.json").read_text().count('"quotas"'), "no quota: calibration.json has no quotas key"
    before = {s: load_manifest(out / s)["units"] for s in ("candidates", "features", "scores", "ieiw")}

    quota = len(passing) // 2 + (len(passing) // 2 + 1) % 2  # odd, so the cut may fall between twins
    assert 8 < quota < len(passing) - 8
    _, keys_again = run_stages(config_for(make_config, {"removal": quota}))
    assert keys_again == keys
    kept = rows_in_plan_order(out, "ieiw", keys)
    assert [r["id"] for r in kept] == passing[:quota], "exactly the first `quota` passing rows, in plan order"
    reasons = {r["id"]: r["reason"] for r in rows_in_plan_order(out, "rejected", keys, ("id", "reason"))}
    assert {i for i, why in reasons.items() if why == QUOTA_REACHED} == set(passing[quota:])
    rejected_by = {r["id"]: r["rejected_by"] for r in rows_in_plan_order(out, "rejected", keys, ("id", "rejected_by"))}
    assert {rejected_by[i] for i in passing[quota:]} == {"selection"}
    # twins: a quota never keeps an add whose remove it cut (the remove comes first in a unit)
    kept_records = {(r["task"], r["origin"]["record_id"]) for r in kept}
    cut_removes = {r["origin"]["record_id"] for r in rows_in_plan_order(out, "rejected", keys, ("id", "task", "origin"))
                   if r["task"] == "remove" and reasons[r["id"]] == QUOTA_REACHED}
    assert not {record for task, record in kept_records if task == "add"} & cut_removes

    # only calibration and selection ran again
    for stage in ("candidates", "features", "scores"):
        again = load_manifest(out / stage)["units"]
        assert {u: e["finished_at"] for u, e in again.items()} == {u: e["finished_at"] for u, e in before[stage].items()}
    selected = load_manifest(out / "ieiw")["units"]
    assert all(selected[u]["finished_at"] > before["ieiw"][u]["finished_at"] for u in keys)
    stats = compute_stats(out / "ieiw")
    assert stats["rows"] == quota and stats["rejected"][QUOTA_REACHED] == len(passing) - quota
    assert stats["quotas"] == {"removal": {"quota": quota, "kept": quota, "passed": len(passing), "met": True, "short_by": 0}}
    assert quota_lines(stats) == [f"quota removal: {quota:,} of {quota:,} (met; {len(passing):,} passed the other rules)"]


def test_the_same_rows_are_kept_whatever_order_units_finish_in(make_config, tmp_path):
    quotas = {"removal": 25}
    _, keys = run_stages(config_for(make_config, quotas, out=tmp_path / "a", name="a.yaml"))
    reference = [r["id"] for r in rows_in_plan_order(tmp_path / "a", "ieiw", keys)]
    assert len(reference) == 25
    for name, order in (("reversed", lambda units: units[::-1]),
                        ("shuffled", lambda units: random.Random(3).sample(units, len(units)))):
        _, again = run_stages(config_for(make_config, quotas, out=tmp_path / name, name=f"{name}.yaml"), order)
        assert [r["id"] for r in rows_in_plan_order(tmp_path / name, "ieiw", keys)] == reference, name


def test_other_families_are_never_counted_or_cut(sample_root, tmp_path):
    config = tmp_path / "mixed.yaml"
    config.write_text(yaml.safe_dump({
        "name": "mixed", "out_dir": str(tmp_path / "out"), "unit_size": 8,
        "removal": {"source": {"root": str(sample_root), "splits": ["train"], "limit": 16}},
        "cocostuff": {"root": str(tmp_path / "coco-stuff"), "samples": {"images": 6, "width": 128, "height": 96}},
        "selection": {"min_target_aesthetic": 2.0, "max_aesthetic_gap": 3.0, "quotas": {"removal": 5}},
    }))
    build, keys = run_stages(config)
    out = tmp_path / "out"
    segments = sum(1 for r in rows_in_plan_order(out, "candidates", keys, ("task",)) if r["task"] == "segment")
    assert segments and sum(pq.read_metadata(p).num_rows for p in (out / "segmentation").glob("*.parquet")) == segments
    assert compute_stats(out / "ieiw")["rows"] == 5


def test_a_shortfall_is_reported_by_ieiw_stats(make_config, tmp_path):
    """The real `ieiw build` (Prefect flow) with the paper's removal quota on 73 records: short."""
    config = config_for(make_config, {"removal": 85000})
    run_ieiw("build", config)
    out = tmp_path / "out"
    stats = json.loads(run_ieiw("stats", out / "ieiw", "--json").stdout)
    quota = stats["quotas"]["removal"]
    assert quota["kept"] == stats["rows"] == quota["passed"] > 0 and not quota["met"]
    assert quota["short_by"] == 85000 - stats["rows"] and QUOTA_REACHED not in stats["rejected"]
    line = f"quota removal: {stats['rows']:,} of 85,000 (short by {85000 - stats['rows']:,})"
    assert line in run_ieiw("stats", out / "ieiw").stdout
    assert json.loads((out / "stats.json").read_text())["quotas"] == stats["quotas"]
    assert "Quotas not met" in render_markdown(stats) and line in render_markdown(stats)

    # a quota set from the command line: `ieiw select` (no Prefect) reselects; scores are not touched
    scores = load_manifest(out / "scores")["units"]
    run_ieiw("select", "--config", config, "--set", "selection.quotas.removal=10")
    assert load_manifest(out / "scores")["units"] == scores
    text = run_ieiw("stats", out / "ieiw").stdout
    assert f"quota removal: 10 of 10 (met; {stats['rows']:,} passed the other rules)" in text
    assert json.loads((out / "stats.json").read_text())["rejected"][QUOTA_REACHED] == stats["rows"] - 10


def test_a_typo_in_a_quota_key_names_the_key(make_config):
    with pytest.raises(ConfigError, match="quotas"):
        load_config(config_for(make_config, {"remval": 10}))
