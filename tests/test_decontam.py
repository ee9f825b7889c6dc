"""Decontamination against edit benchmarks: `ieiw benchmark-index` (the real command) indexes a benchmark once,
the benchmark-overlap scorer runs in the build's score stage, and the selection rules reject exactly the
pairs made from a benchmark's images, naming the benchmark and the image; an unrelated benchmark rejects
none. The benchmark copies are re-encoded, resized by 0.8 and cropped by 5 %, as a benchmark's would be."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from ieiw_testing import run_ieiw, run_stages
from PIL import Image

from ieiw import stages
from ieiw.filters.decontam import OVERLAP_COLUMN, BenchmarkIndex, iter_benchmark_images, overlap_cells
from ieiw.filters.selection import BENCHMARK_OVERLAP
from ieiw.schemas.config import load_config

CHOSEN = ("1", "4", "9")  # image ids of the sample whose copies make the benchmark
RULES = {"min_benchmark_phash_distance": 9, "max_benchmark_similarity": 0.95}


def altered(data: bytes) -> bytes:
    """Resized by 0.8, cropped by 5 % (2.5 % off each side), re-encoded as JPEG q80."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    image = image.resize((round(image.width * 0.8), round(image.height * 0.8)), Image.LANCZOS)
    dx, dy = round(image.width * 0.025), round(image.height * 0.025)
    image = image.crop((dx, dy, image.width - dx, image.height - dy))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def benchmarks(tmp_path_factory, sample_root) -> dict[str, Path]:
    """Two index folders made by the real command: the altered copies (as Parquet shards with a datasets-style
    image struct column, beside a text column), and an unrelated benchmark (an image folder of other scenes)."""
    from ieiw.samples.phrasecut import make_phrasecut_sample

    base = tmp_path_factory.mktemp("benchmarks")
    copies = base / "copies"
    copies.mkdir()
    cells = [{"bytes": altered((sample_root / "images" / f"{i}.jpg").read_bytes()), "path": f"{i}.jpg"} for i in CHOSEN]
    pq.write_table(pa.table({"instruction": ["x"] * len(cells),
                             "source_img": pa.array(cells, pa.struct([("bytes", pa.binary()), ("path", pa.string())]))}),
                   copies / "test-00000.parquet")
    unrelated = make_phrasecut_sample(base / "other" / "VGPhraseCut_v0", 30, 99, 160, 120) / "images"
    out = {}
    for name, source in (("copies", copies), ("unrelated", unrelated)):
        out[name] = base / f"{name}-index"
        first = run_ieiw("benchmark-index", source, "--out", out[name], "--name", f"bench-{name}")
        assert "indexed" in first.stdout
        again = run_ieiw("benchmark-index", source, "--out", out[name], "--name", f"bench-{name}")
        assert "unchanged, kept" in again.stdout, "built once: an unchanged benchmark is not read again"
    return out


def build(make_config, out: Path, indexes: list[Path]):
    path = make_config(out=out, name=f"{out.name}.yaml", selection={"min_target_aesthetic": None,
                                                                    "max_aesthetic_gap": None, **RULES},
                       scoring={"scorers": [{"backend": "proxy"},
                                            {"backend": "benchmark-overlap", "benchmarks": [str(p) for p in indexes]}]})
    _, keys, _ = run_stages(path)
    candidates = [r for k in keys for r in pq.read_table(out / "candidates" / f"{k}.parquet",
                                                          columns=["id", "origin", "drop_reason"]).to_pylist()]
    rejected = [r for k in keys for r in pq.read_table(out / "rejected" / f"{k}.parquet",
                                                        columns=["id", "reason"]).to_pylist()]
    kept = {i for k in keys for i in pq.read_table(out / "ieiw" / f"{k}.parquet", columns=["id"])["id"].to_pylist()}
    return candidates, rejected, kept


def test_the_index_reads_every_image_column_of_a_table(benchmarks, sample_root):
    index = BenchmarkIndex(benchmarks["copies"])
    assert index.meta.name == "bench-copies" and index.meta.count == len(CHOSEN)
    assert index.names == [f"test-00000.parquet#{row}:source_img" for row in range(len(CHOSEN))]
    assert index.meta.extractor == "embedded-v1" and index.embeddings.shape == (3, 160)


def test_a_datasets_folder_on_disk_is_read(tmp_path, sample_root):
    """``save_to_disk`` writes Arrow IPC streams (data-00000-of-00001.arrow); an Image feature is a struct."""
    data = (sample_root / "images" / "2.jpg").read_bytes()
    table = pa.table({"edited": pa.array([{"bytes": data, "path": None}]), "id": ["a"]})
    with pa.OSFile(str(tmp_path / "data-00000-of-00001.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    (tmp_path / "dataset_info.json").write_text("{}")
    found = list(iter_benchmark_images(tmp_path))
    assert [name for name, _ in found] == ["data-00000-of-00001.arrow#0:edited"]
    assert found[0][1].shape == (120, 160, 3)


def test_copies_of_sources_are_rejected_exactly_and_named(benchmarks, make_config, tmp_path):
    candidates, rejected, kept = build(make_config, tmp_path / "out", [benchmarks["copies"], benchmarks["unrelated"]])
    from_chosen = {r["id"] for r in candidates if r["origin"]["image_id"] in CHOSEN}
    assert from_chosen, "the sample has pairs from the chosen images"
    flagged = {r["id"] for r in rejected if r["reason"] == BENCHMARK_OVERLAP}
    dropped_by_builder = {r["id"] for r in candidates if r["drop_reason"]}
    assert flagged == from_chosen - dropped_by_builder
    assert not kept & from_chosen
    cells = overlap_cells(tmp_path / "out" / "scores")
    names = {f"test-00000.parquet#{row}:source_img": image for row, image in enumerate(CHOSEN)}
    image_of = {r["id"]: r["origin"]["image_id"] for r in candidates}
    for row_id in flagged:
        cell = cells[row_id]
        assert cell["similarity_benchmark"] == "bench-copies" and cell["similarity"] > 0.95
        assert names[cell["similarity_image"]] == image_of[row_id], "names the benchmark image it copies"
        assert cell["phash_side"] in ("source", "target")
    others = [cells[r["id"]] for r in candidates if r["id"] not in from_chosen]
    assert max(c["similarity"] for c in others) < RULES["max_benchmark_similarity"]
    assert min(c["phash_distance"] for c in others) >= RULES["min_benchmark_phash_distance"]
    from ieiw.report import write_report

    page = write_report(tmp_path / "out").read_text()
    assert f"{len(flagged)} rejected as <code>benchmark_overlap</code> (bench-copies: {len(flagged)})" in page
    assert "bench-copies: test-00000.parquet#" in page
    from ieiw.card import write_card

    assert f"{len(flagged)} pairs were rejected as `benchmark_overlap`" in write_card(tmp_path / "out").read_text()


def test_an_unrelated_benchmark_rejects_nothing(benchmarks, make_config, tmp_path):
    candidates, rejected, kept = build(make_config, tmp_path / "out", [benchmarks["unrelated"]])
    assert BENCHMARK_OVERLAP not in {r["reason"] for r in rejected}
    cells = overlap_cells(tmp_path / "out" / "scores")
    assert set(cells) == {r["id"] for r in candidates}, "every pair was compared"
    assert {c["phash_benchmark"] for c in cells.values()} == {"bench-unrelated"}
    assert np.isfinite([c["similarity"] for c in cells.values()]).all()
    assert kept, "rows are kept"


def test_the_column_survives_in_the_scores_shard_schema(benchmarks, make_config, tmp_path):
    path = make_config(out=tmp_path / "out", scoring={"scorers": [
        {"backend": "proxy"}, {"backend": "benchmark-overlap", "benchmarks": [str(benchmarks["copies"])]}]})
    config = load_config(path)
    assert OVERLAP_COLUMN in config.scoring.score_schema().names
    assert config.scoring.scorers[1].model_digests()[str(benchmarks["copies"])] == BenchmarkIndex(benchmarks["copies"]).meta.fingerprint
    data = yaml.safe_load(path.read_text())
    data["scoring"]["scorers"][1]["benchmarks"] = [str(tmp_path / "missing")]
    path.write_text(yaml.safe_dump(data))
    problems = load_config(path).scoring.scorers[1].preflight()
    assert problems and "not a benchmark index" in problems[0]


@pytest.mark.parametrize("task", ["edit", "segment", "keypoints", "enhance"])
def test_every_family_meets_the_decontamination_rules(task):
    """An imported MagicBrush pair (or any converter's row) whose image is a benchmark's is rejected like an IEIW
    pair; the other quality rules stay IEIW's alone."""
    from ieiw.filters.selection import Calibration, SelectionConfig

    selection = SelectionConfig(max_benchmark_similarity=0.95, min_target_aesthetic=9.9)
    calibration = Calibration()
    near = {"id": "a", "task": task, "scores": {"benchmark_overlap_similarity": 0.99, "target_aesthetic": 1.0}}
    far = {"id": "b", "task": task, "scores": {"benchmark_overlap_similarity": 0.40, "target_aesthetic": 1.0}}
    assert stages.decide(near, calibration, selection) == (BENCHMARK_OVERLAP, "selection")
    assert stages.decide(far, calibration, selection) == (None, None), "only decontamination, not the aesthetic rule"
    off = SelectionConfig()
    assert stages.decide(near, calibration, off) == (None, None)
