"""``ieiw eval``: held-out rows only, CLIP metrics, results.json / rows.csv / grid.png; trainer validation
draws from the same held-out rows."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from ieiw.schemas.manifest import Manifest
from ieiw.schemas.rows import rows_to_table
from ieiw.schemas.shards import write_shard
from ieiw_testing import tiny_clip_folder
from trainkit import make_row, tiny_config, write_stage

# 12 rows in two shards; these indices are held out, the rest are train.
VAL = {1, 4, 6, 9, 10}


def write_split_stage(folder: Path) -> tuple[Path, list[str]]:
    """Two shards of 6 rows (row groups of 4) with a split column; returns the folder and the val ids in order."""
    manifest = Manifest(folder, "pairs", {"unit_rows": "test"})
    val_ids = []
    for unit in range(2):
        rows = []
        for index in range(unit * 6, unit * 6 + 6):
            row = make_row(index, "phrasecut", fmt="JPEG" if index % 3 else "PNG")
            row["split"] = "val" if index in VAL else "train"
            if index in VAL:
                val_ids.append(row["id"])
            rows.append(row)
        shard = write_shard(rows_to_table(rows), folder / f"phrasecut-{unit:05d}.parquet", row_group_size=4)
        manifest.record(f"phrasecut-{unit:05d}", shard, fingerprint=f"f{unit}", stats={"rows": len(rows)})
    return folder, val_ids


@pytest.fixture(scope="module")
def split_stage(tmp_path_factory) -> tuple[Path, list[str]]:
    return write_split_stage(tmp_path_factory.mktemp("split"))


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    return tiny_clip_folder(tmp_path_factory.mktemp("clip") / "clip")


@pytest.fixture(scope="module")
def pipeline(tiny_sd, split_stage, tmp_path_factory) -> Path:
    """A tiny pipeline exported by a 2-step training run (validation on, at step 2)."""
    from ieiw.training.train import train

    out = tmp_path_factory.mktemp("evalrun")
    config = tiny_config(tiny_sd, split_stage[0], out, [
        "train.max_steps=2", "train.batch_size=2", "data.resolution=32", "data.num_workers=0",
        "validation.every_steps=2", "validation.num_pairs=2", "validation.num_inference_steps=1",
        "checkpoint.every_steps=100",
    ])
    result = train(config)
    assert (out / "validation" / "step-0000002" / "01.png").exists()
    return result.pipeline_dir


def test_split_groups_keep_val_rows_in_manifest_order(split_stage):
    import pyarrow.parquet as pq

    from ieiw.training.evaluate import split_groups

    folder, val_ids = split_stage
    groups = split_groups(folder)
    ids = []
    for g in groups:
        column = pq.ParquetFile(g.path).read_row_group(g.group, columns=["id"]).column("id").to_pylist()
        ids += [column[r] for r in g.rows]
    assert ids == val_ids
    limited = split_groups(folder, limit=3)
    assert sum(len(g.rows) for g in limited) == 3
    assert split_groups(folder, "test") == []


def test_eval_cli_scores_val_rows_and_writes_results_csv_grid(pipeline, split_stage, clip_dir, tmp_path, capsys):
    from PIL import Image

    from ieiw.cli import main
    from ieiw.training.evaluate import BAND, METRICS

    folder, val_ids = split_stage
    out = tmp_path / "eval"
    rc = main(["eval", str(pipeline), "--data", str(folder), "--clip", str(clip_dir), "--out", str(out),
               "--steps", "2", "--limit", "4", "--resolution", "64", "--cell", "64"])
    assert rc == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["n"] == 4 and results["split"] == "val"
    assert set(results["metrics"]) == set(METRICS) and set(results["definitions"]) == set(METRICS)
    for name, value in results["metrics"].items():
        assert -1.0 - 1e-6 <= value <= 1.0 + 1e-6, name
    with open(out / "rows.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["id"] for r in rows] == val_ids[:4]  # only held-out rows, in manifest order
    for name in METRICS:
        assert np.isclose(np.mean([float(r[name]) for r in rows]), results["metrics"][name], atol=1e-5)
    assert all((out / r["output"]).exists() for r in rows)
    assert Image.open(out / rows[0]["output"]).size == (64, 64)  # 80x64 source -> official size at 64
    grid = Image.open(out / "grid.png")
    assert grid.size == (3 * 64, 4 * (64 + BAND))
    assert "4 val rows" in capsys.readouterr().out


def test_clip_scores_definitions():
    """The metrics against hand-made embeddings (a stub CLIP returning fixed unit vectors)."""
    from ieiw.training.evaluate import clip_scores

    e = np.eye(4, dtype=np.float32)
    vectors = {"src": e[0], "gt": e[1], "out": (e[0] + e[1]) / np.sqrt(2), "txt": e[2]}

    class Stub:
        def image_features(self, images):
            return np.stack([vectors[str(image)] for image in images])

        def text_features(self, texts):
            return np.stack([vectors[t] for t in texts])

    s = clip_scores(Stub(), ["src"], ["gt"], ["out"], ["txt"])
    assert np.isclose(s["clip_image"][0], 1 / np.sqrt(2)) and np.isclose(s["clip_i"][0], 1 / np.sqrt(2))
    assert np.isclose(s["gt_clip_image"][0], 0.0) and np.isclose(s["clip_t"][0], 0.0)
    change, target_change = vectors["out"] - vectors["src"], vectors["gt"] - vectors["src"]
    expected = change @ target_change / np.linalg.norm(change) / np.linalg.norm(target_change)
    assert np.isclose(s["clip_directional"][0], expected)
    assert np.isclose(s["clip_directional_text"][0], 0.0)
    unchanged = clip_scores(Stub(), ["src"], ["gt"], ["src"], ["txt"])  # output == source: no change
    assert unchanged["clip_directional"][0] == 0.0 and np.isclose(unchanged["clip_image"][0], 1.0)


def test_eval_without_val_rows_is_a_one_line_error(pipeline, tmp_path, clip_dir, capsys):
    from ieiw.cli import main

    plain = write_stage(tmp_path / "plain", [("phrasecut", 4)])  # split column null everywhere
    rc = main(["eval", str(pipeline), "--data", str(plain), "--clip", str(clip_dir), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1 and "split == 'val'" in err


def test_validation_pairs_draw_val_rows_else_first_rows(tiny_sd, split_stage, tmp_path, caplog):
    from transformers import CLIPTokenizer

    from ieiw.training.train import validation_pairs

    tokenizer = CLIPTokenizer.from_pretrained(tiny_sd / "tokenizer")
    folder, val_ids = split_stage
    config = tiny_config(tiny_sd, folder, tmp_path / "v", ["data.resolution=32"])
    pairs = validation_pairs(config, tokenizer, 3)
    assert [p["id"] for p in pairs] == val_ids[:3]

    plain = write_stage(tmp_path / "plain", [("phrasecut", 5)])
    config = tiny_config(tiny_sd, plain, tmp_path / "w", ["data.resolution=32"])
    with caplog.at_level(logging.INFO, logger="ieiw.training"):
        pairs = validation_pairs(config, tokenizer, 2)
    assert len(pairs) == 2
    assert any("no split == val rows" in r.getMessage() for r in caplog.records)
