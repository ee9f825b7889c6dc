"""The kind policy (``crawl.validation.kinds``) end to end: a crawl of one real-photo thread through the real
``ieiw build`` keeps each edit with its ``edit_kind`` column, files a frame change alone under
``edit_kind_geometric`` by default, and ``ieiw select`` re-decides the policy without crawling again; stats,
report and dataset card show the web rows per kind."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from crawl_images import jpeg_bytes
from ieiw_testing import run_ieiw

from ieiw.crawlers.cache import ResponseCache
from ieiw.crawlers.config import ValidationConfig
from ieiw.crawlers.dumps import write_ndjson_zst
from ieiw.filters.selection import Calibration
from ieiw.schemas.rows import PAIR_SCHEMA, REJECTED_SCHEMA, SCHEMA_VERSION

BENCH = Path(__file__).resolve().parents[2] / "bench" / "crawl_validation.py"
_spec = importlib.util.spec_from_file_location("crawl_validation_bench_selection", BENCH)
bench = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = bench
_spec.loader.exec_module(bench)


def edits() -> dict[str, bytes]:
    """One original (a real photo) and four answers: straightened, a person removed, a re-encode, a collage."""
    img = bench.photos()["astronaut"]
    removed = bench.remove_region(img, bench.busiest(img))
    picture, _ = bench.collage(img, bench.colour(img, "warm"), "x", gap=10, margin=0, scale=0.6)
    return {"orig": jpeg_bytes(img), "c1": jpeg_bytes(bench.rotate(img, 3.0)), "c2": jpeg_bytes(removed),
            "c3": jpeg_bytes(bench.jpeg(img, 50)), "c4": jpeg_bytes(picture)}


def write_crawl(folder: Path) -> Path:
    """A dump of one thread, its replay cache, and a crawl-only build config writing to ``folder / out``."""
    images = edits()
    cache = ResponseCache(folder / "cache")
    urls = {name: f"https://i.redd.it/{name}.jpg" for name in images}
    for name, body in images.items():
        cache.put(urls[name], 200, "image/jpeg", body)
    post = {"id": "k1", "subreddit": "PhotoshopRequest", "author": "op", "title": "Please fix this photo of me",
            "selftext": "", "url": urls["orig"], "permalink": "/r/PhotoshopRequest/comments/k1/x/",
            "created_utc": 1.7e9}
    comments = [{"id": c, "link_id": "t3_k1", "author": f"ed{i}", "score": 10 - i, "body": f"here {urls[c]}"}
                for i, c in enumerate(("c1", "c2", "c3", "c4"))]
    write_ndjson_zst(folder / "s.ndjson.zst", [post])
    write_ndjson_zst(folder / "c.ndjson.zst", comments)
    config = {
        "name": "kinds", "out_dir": str(folder / "out"), "unit_size": 8, "workers": 1,
        "crawl": {"dumps": [{"submissions": str(folder / "s.ndjson.zst"), "comments": str(folder / "c.ndjson.zst")}],
                  "http": {"cache_dir": str(folder / "cache"), "replay_only": True},
                  "takedown": {"files": []}, "pairs": {"max_edits_per_post": 4}},
        "selection": {"min_target_aesthetic": None, "max_aesthetic_gap": None, "min_target_giqa": None,
                      "max_giqa_gap": None, "dedup": {"enabled": False}},
    }
    path = folder / "build.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def rows(folder: Path, columns: list[str]) -> list[dict]:
    return [r for p in sorted(folder.glob("*.parquet")) for r in pq.read_table(p, columns=columns).to_pylist()]


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kinds")
    config = write_crawl(folder)
    run_ieiw("build", config, timeout=600)
    return config, folder / "out"


@pytest.mark.slow
def test_every_web_row_carries_its_kind_and_the_default_policy_decides(built):
    _, out = built
    kept = {r["origin"]["record_id"]: r["edit_kind"] for r in rows(out / "ieiw", ["origin", "edit_kind"])}
    rejected = {r["origin"]["record_id"]: (r["edit_kind"], r["reason"], r["rejected_by"])
                for r in rows(out / "rejected", ["origin", "edit_kind", "reason", "rejected_by"])}
    assert kept == {"k1/c2": "local", "k1/c4": "composite+colour"}
    assert rejected == {"k1/c1": ("geometric", "edit_kind_geometric", "selection"),  # a frame change alone
                        "k1/c3": ("no_op", "no_op", "builder")}
    schema = pq.read_schema(next((out / "ieiw").glob("*.parquet")))
    assert schema.field("edit_kind").type == PAIR_SCHEMA.field("edit_kind").type
    assert int(schema.metadata[b"ieiw.schema_version"]) == SCHEMA_VERSION == 3
    assert "edit_kind" in REJECTED_SCHEMA.names
    calibration = Calibration.from_json(json.loads((out / "calibration.json").read_text()))
    assert calibration.kind_policies["crawl"] == ValidationConfig().kinds.model_dump()


@pytest.mark.slow
def test_stats_report_and_card_show_web_rows_per_kind(built):
    _, out = built
    stats = json.loads(run_ieiw("stats", out / "ieiw", "--json").stdout)
    assert stats["by_edit_kind"] == {"composite+colour": 1, "local": 1}
    assert stats["rejected_by_edit_kind"] == {"geometric": 1, "no_op": 1}
    text = run_ieiw("stats", out / "ieiw").stdout
    assert "web rows by edit kind:" in text and "composite+colour" in text
    report = (out / "report.html").read_text()
    assert "id='edit-kinds'" in report and "<td>geometric</td><td class='n'>0</td><td class='n'>1</td>" in report
    card = (out / "README.md").read_text()
    assert "| `edit_kind` | rows |" in card and "| composite+colour | 1 |" in card


@pytest.mark.slow
def test_select_re_decides_the_policy_without_crawling_again(built):
    config, out = built
    before = {stage: digests(out / stage) for stage in ("candidates", "features", "scores")}
    run_ieiw("select", "--config", config, "--set", "crawl.validation.kinds.geometric=keep",
             "--set", "crawl.validation.kinds.colour=reject")
    for stage, shards in before.items():
        assert digests(out / stage) == shards, f"{stage} untouched"
    kept = {r["origin"]["record_id"]: r["edit_kind"] for r in rows(out / "ieiw", ["origin", "edit_kind"])}
    assert kept == {"k1/c1": "geometric", "k1/c2": "local"}
    reasons = {r["origin"]["record_id"]: r["reason"] for r in rows(out / "rejected", ["origin", "reason"])}
    assert reasons == {"k1/c3": "no_op", "k1/c4": "edit_kind_colour"}
    # the build's candidates were never redone: a rerun of the build with the new policy crawls nothing
    proc = run_ieiw("build", config, "--set", "crawl.validation.kinds.geometric=keep",
                    "--set", "crawl.validation.kinds.colour=reject", timeout=600)
    assert digests(out / "candidates") == before["candidates"], proc.stdout[-2000:]
