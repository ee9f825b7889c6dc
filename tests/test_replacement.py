"""Replacement through the real flow: regions -> exemplar index stage -> repaint, `replace` rows."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from ieiw.imageio import decode_mask, decode_rgb
from ieiw_testing import REPO, ieiw_env, run_ieiw
from ieiw.schemas.manifest import load_manifest


def replace_config(path: Path, samples: Path, out: Path, unit_size: int = 8, **section) -> Path:
    config = {
        "name": "replace-test", "out_dir": str(out), "unit_size": unit_size, "workers": 2,
        "replacement": {
            "sources": [
                {"type": "sa1b", "root": str(samples / "sa1b"), "samples": {"images": 10, "seed": 3}},
                {"type": "open-images", "root": str(samples / "open-images"),
                 "classes": "class-descriptions-boxable.csv", "samples": {"images": 10, "seed": 3}},
            ],
            **section,
        },
        "selection": {"min_target_aesthetic": 1.0, "max_aesthetic_gap": 9.0},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def rows(folder: Path, columns: list[str] | None = None) -> list[dict]:
    return [r for shard in sorted(folder.glob("*.parquet")) for r in pq.read_table(shard, columns=columns).to_pylist()]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("replace")
    run_ieiw("build", replace_config(root / "c.yaml", root / "samples", root / "out"))
    return root


def test_replace_rows_keep_the_source_outside_the_mask_and_name_an_exemplar_of_another_image(built):
    made = rows(built / "out" / "candidates")
    assert len(made) >= 40 and {r["task"] for r in made} == {"replace"}
    truth = json.loads((built / "samples" / "samples.json").read_text())
    labels = {o["record_id"]: o["label"] for fmt in ("sa1b", "open_images") for image in truth.get(fmt, [])
              for o in image["objects"]}
    for row in made:
        source = decode_rgb(row["source_image"]["bytes"])
        target = decode_rgb(row["target_image"]["bytes"])
        mask = decode_mask(row["mask"]["bytes"]) > 0
        assert row["target_image"]["path"].endswith(".png"), "replace targets are stored losslessly"
        assert source.shape == target.shape and (source[~mask] == target[~mask]).all()
        assert np.abs(source.astype(int) - target)[mask].mean() > 5, "the region was repainted"
        exemplar = row["exemplar"]
        exemplar_image = exemplar["record_id"].split(":")[0]
        assert exemplar_image != row["origin"]["image_id"], "never an exemplar from the same image"
        assert exemplar["label"] != row["origin"]["phrase"] and 0 < exemplar["similarity"] <= 0.95 + 1e-6
        assert exemplar["label_source"] in ("open-images", "embedded-nearest")
        assert row["builder"]["embedded"] is True and row["builder"]["backend"] == "poisson-clone-v1"
        assert row["instruction"].lower().count(row["origin"]["phrase"].lower().split()[-1]) >= 1
    # labels the dataset gave are the dataset's
    for row in made:
        if row["exemplar"]["source_label_source"] == "open-images":
            assert row["origin"]["phrase"].lower() == labels[row["origin"]["record_id"]].lower()


def test_stats_show_replace_rows_exemplar_similarity_label_sources_and_skips(built):
    stats = json.loads(run_ieiw("stats", built / "out" / "ieiw", "--json").stdout)
    assert stats["by_task"]["replace"] > 0 and set(stats["by_source"]) == {"sa-1b", "open-images"}
    q = stats["exemplar_similarity"]
    assert q["count"] == stats["by_task"]["replace"] and q["q00"] <= q["q50"] <= q["q100"]
    assert stats["skipped"].get("region_too_large", 0) > 0, "the samples' background masks are skipped"
    assert any(k.startswith("region: ") for k in stats["label_sources"])


def test_killed_during_the_exemplar_stage_the_rerun_gives_the_same_rows(built, tmp_path):
    """kill -9 once the first exemplar shards are recorded; the rerun resumes. IVF-PQ on a small setting."""
    index = {"kind": "ivfpq", "nlist": 2, "m": 8, "nbits": 4, "refine": None, "exclude_same_label": True}
    clean = replace_config(tmp_path / "clean.yaml", tmp_path / "samples", tmp_path / "clean", unit_size=2, index=index)
    run_ieiw("build", clean)
    expected = {r["id"]: r["exemplar"]["record_id"] for r in rows(tmp_path / "clean" / "candidates")}

    config = replace_config(tmp_path / "killed.yaml", tmp_path / "samples", tmp_path / "killed", unit_size=2,
                            index=index)
    proc = subprocess.Popen([sys.executable, "-m", "ieiw", "build", str(config)], cwd=REPO, env=ieiw_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    exemplars = tmp_path / "killed" / "exemplars"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (exemplars / "manifest.json").exists() and load_manifest(exemplars)["units"]:
            break
        time.sleep(0.01)
    import os

    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    recorded = load_manifest(exemplars)["units"]
    assert recorded and not (tmp_path / "killed" / "index-replacement" / "fingerprint.json").exists(), \
        "killed inside the exemplar stage"
    run_ieiw("build", config)
    again = {r["id"]: r["exemplar"]["record_id"] for r in rows(tmp_path / "killed" / "candidates")}
    assert again == expected
    kept = {r["id"] for r in rows(tmp_path / "killed" / "ieiw", ["id"])}
    assert kept == {r["id"] for r in rows(tmp_path / "clean" / "ieiw", ["id"])}


def test_a_template_file_without_replace_stops_the_build_before_prefect(tmp_path):
    templates = tmp_path / "t.yaml"
    templates.write_text(yaml.safe_dump({"remove": ["Remove {the_phrase}."], "add": ["Add {a_phrase}."]}))
    config = replace_config(tmp_path / "c.yaml", tmp_path / "samples", tmp_path / "out", templates=str(templates))
    proc = run_ieiw("build", config, check=False)
    assert proc.returncode == 2 and "replacement.templates" in proc.stderr and "Traceback" not in proc.stderr


def test_real_paths_clip_zero_shot_labels_and_paint_by_example_through_the_three_stages(tmp_path):
    """Tiny random CLIP (both towers) embeds and labels SA-1B regions zero-shot; a tiny random
    Paint-by-Example repaints; the stages run in this process as the flow's tasks call them."""
    from ieiw import stages
    from ieiw.schemas.config import load_config
    from ieiw_testing import tiny_clip_folder, tiny_paint_by_example_folder

    clip = tiny_clip_folder(tmp_path / "clip")
    pbe = tiny_paint_by_example_folder(tmp_path / "pbe")
    vocabulary = tmp_path / "names.txt"
    vocabulary.write_text("# a tiny vocabulary\ncircle\nsquare\ntriangle\ndiamond\n")
    config = replace_config(
        tmp_path / "c.yaml", tmp_path / "samples", tmp_path / "out", unit_size=6,
        sources=[{"type": "sa1b", "root": str(tmp_path / "samples" / "sa1b"), "samples": {"images": 6, "seed": 5}}],
        regions={"max_per_image": 2},
        features={"backend": "clip", "model": str(clip), "device": "cpu"},
        labels={"vocabulary": str(vocabulary)},
        repaint={"backend": "paint-by-example", "model": str(pbe), "steps": 2, "resolution": 64, "device": "cpu"},
    )
    build = stages.build_for(load_config(config).model_dump(mode="json"))
    build.prepare()
    units = [unit for name, unit in build.plan() if name == "replacement"]
    for unit in units:
        stages.make_index_unit(build, "replacement", unit)
    made = stages.make_index(build, "replacement", [u.key for u in units])
    assert made["labelled_by"] == {"clip-zero-shot": made["exemplars"]}
    for unit in units:
        stages.make_candidates(build, "replacement", unit)
    out = rows(tmp_path / "out" / "candidates")
    assert out and all(r["builder"]["backend"] == "paint-by-example:pbe" and r["builder"]["embedded"] is False
                       for r in out)
    names = {"circle", "square", "triangle", "diamond"}
    for row in out:
        assert row["origin"]["phrase"] in names and row["exemplar"]["label"] in names
        assert row["exemplar"]["source_label_source"] == row["exemplar"]["label_source"] == "clip-zero-shot"
        source, target = decode_rgb(row["source_image"]["bytes"]), decode_rgb(row["target_image"]["bytes"])
        mask = decode_mask(row["mask"]["bytes"]) > 0
        assert (source[~mask] == target[~mask]).all()
