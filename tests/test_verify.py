"""Verified add-by-flip: a region whose object is still visible after inpainting loses both its pairs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from ieiw.schemas.units import BuildContext
from ieiw.backends.inpaint.base import Inpainter
from ieiw.backends.inpaint.opencv import OpenCVInpaintConfig
from ieiw.builders.removal import PhraseCutSourceConfig, RemovalBuilder, RemovalConfig
from ieiw.backends.verify import DROP_REASON, EmbeddedVerifyConfig, context_distances
from ieiw_testing import REPO, ieiw_env, run_ieiw, tiny_clip_folder

PLUGINS = REPO / "tests" / "plugins"


class Unchanged(Inpainter):
    """Leaves the object in place."""

    def __init__(self):
        super().__init__(OpenCVInpaintConfig())

    def inpaint(self, images, masks):
        return [image.copy() for image in images]


def builder(root: Path, **kwargs) -> RemovalBuilder:
    config = RemovalConfig(source=PhraseCutSourceConfig(root=root, splits=["train"], limit=24), **kwargs)
    return RemovalBuilder(config, BuildContext(root=Path.cwd(), out_dir=Path("out"), unit_size=24))


def rows_of(b: RemovalBuilder) -> list[dict]:
    return [row for unit in b.plan() for row in b.build_unit(unit).rows]


def test_embedded_check_passes_real_removals_and_drops_both_pairs_of_a_region_left_in_place(sample_root):
    removed = rows_of(builder(sample_root))
    scores = [r["scores"]["verification"] for r in removed if r["task"] == "remove"]
    assert len(scores) == 24 and np.median(scores) > 0.8
    assert sum(r["drop_reason"] is None for r in removed) >= 0.9 * len(removed)
    assert all(r["scores"]["verification_backend"] == "embedded-context-v1" for r in removed)

    left = builder(sample_root)
    left.inpainter = Unchanged()
    kept_in_place = rows_of(left)
    assert len(kept_in_place) == 48 and {r["task"] for r in kept_in_place} == {"remove", "add"}
    assert all(r["drop_reason"] == DROP_REASON for r in kept_in_place), "remove AND its flipped add"
    assert max(r["scores"]["verification"] for r in kept_in_place) < 0.05

    unverified = builder(sample_root, verify=None)
    unverified.inpainter = Unchanged()
    assert all(r["drop_reason"] is None and r["scores"] is None for r in rows_of(unverified))


def test_context_distance_sees_the_object_and_its_absence():
    rng = np.random.default_rng(0)
    background = np.clip(rng.normal(120, 6, (80, 80, 3)), 0, 255).astype(np.uint8)
    with_object = background.copy()
    with_object[30:50, 30:50] = (220, 30, 30)
    mask = np.zeros((80, 80), np.uint8)
    mask[28:52, 28:52] = 1
    d_before, d_after = context_distances(with_object, background, mask)
    assert d_before > 10 * d_after
    assert context_distances(with_object, with_object, np.ones((80, 80), np.uint8)) is None, "no context, no verdict"


def test_clip_check_runs_through_transformers(sample_root, tmp_path):
    folder = tiny_clip_folder(tmp_path / "clip")
    verify = {"backend": "clip", "model": str(folder), "device": "cpu"}
    made = rows_of(builder(sample_root, verify=verify))
    scores = [r["scores"]["verification"] for r in made]
    assert all(isinstance(s, float) for s in scores) and len(set(scores)) > 1
    assert {r["scores"]["verification_backend"] for r in made} == {"clip-drop:clip"}
    left = builder(sample_root, verify=verify)
    left.inpainter = Unchanged()
    same = rows_of(left)
    assert all(abs(r["scores"]["verification"]) < 1e-6 and r["drop_reason"] == DROP_REASON for r in same)


def test_clip_check_names_a_missing_model_before_work(tmp_path):
    config = RemovalConfig(source=PhraseCutSourceConfig(root=tmp_path), verify={"backend": "clip",
                                                                               "model": str(tmp_path / "nope")})
    assert any("removal.verify backend clip" in line and "nope" in line for line in config.verify.preflight())


@pytest.mark.slow
def test_a_planted_inpainter_sends_both_pairs_to_rejected_through_the_real_flow(sample_root, tmp_path):
    """The toy plugin's `keep` inpainter returns its input: every region fails verification."""
    config = tmp_path / "keep.yaml"
    config.write_text(yaml.safe_dump({
        "name": "keep", "out_dir": str(tmp_path / "out"), "unit_size": 8, "workers": 2,
        "removal": {"source": {"root": str(sample_root), "splits": ["train"], "limit": 8},
                    "inpaint": {"backend": "keep"}, "verify": EmbeddedVerifyConfig().model_dump()},
        "selection": {"min_target_aesthetic": 1.0, "max_aesthetic_gap": 9.0},
    }))
    env = ieiw_env()
    env["PYTHONPATH"] = f"{PLUGINS}{os.pathsep}{env['PYTHONPATH']}"
    run_ieiw("build", config, env=env)
    out = tmp_path / "out"
    kept = [row for shard in sorted((out / "ieiw").glob("*.parquet")) for row in pq.read_table(shard).to_pylist()]
    rejected = [row for shard in sorted((out / "rejected").glob("*.parquet"))
                for row in pq.read_table(shard, columns=["task", "reason", "rejected_by", "scores"]).to_pylist()]
    assert not kept
    assert len(rejected) == 16 and {r["task"] for r in rejected} == {"remove", "add"}
    assert {(r["reason"], r["rejected_by"]) for r in rejected} == {(DROP_REASON, "builder")}
    assert all(r["scores"]["verification"] < 0.05 for r in rejected)
