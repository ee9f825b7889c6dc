"""Quality filtering: KNN-GIQA on FAISS against brute force, a resumable reference, dedup, quantile
thresholds in one calibration step, `ieiw select`, and features computed once across reruns."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from ieiw_testing import REPO, ieiw_env, run_ieiw, tiny_clip_folder, write_config
from PIL import Image

from ieiw.schemas.manifest import load_manifest
from ieiw.filters.dedup import Signature, find_duplicates, pair_hashes
from ieiw.backends.features.embedded import EmbeddedDescriptor, EmbeddedFeaturesConfig
from ieiw.filters.giqa import (
    GiqaError,
    KnnGiqaConfig,
    KnnGiqaScorer,
    Reference,
    brute_force_giqa,
    build_reference_from_images,
    write_reference,
)
from ieiw.filters.scoring import ImageRef, PairView, ScoreContext
from ieiw.filters.selection import (
    DUPLICATE,
    TARGET_GIQA_LOW,
    Quantile,
    ScoredPair,
    SelectionConfig,
    calibrate,
    rejection_reason,
)
from ieiw.imageio import encode
from ieiw.schemas.rows import image_key


def clustered(count: int, dim: int, clusters: int = 20, seed: int = 0) -> np.ndarray:
    """A Gaussian mixture: real embeddings cluster, uniform noise does not."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (clusters, dim))
    return (centres[rng.integers(0, clusters, count)] + rng.normal(0, 0.3, (count, dim))).astype(np.float32)


# -- KNN-GIQA --------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 3])
def test_exact_index_equals_brute_force(tmp_path, k):
    reference, queries = clustered(3000, 24), clustered(50, 24, seed=1)
    write_reference(tmp_path / "ref", reference, "test-extractor")
    loaded = Reference(tmp_path / "ref")
    assert loaded.meta.kind == "flat-l1" and loaded.meta.count == 3000
    np.testing.assert_allclose(loaded.score(queries, k), brute_force_giqa(queries, reference, k), rtol=1e-4)


def test_ivf_index_returns_true_l1_distances_and_ranks_like_brute_force(tmp_path):
    reference, queries = clustered(20000, 16), clustered(200, 16, seed=2)
    meta = write_reference(tmp_path / "ref", reference, "x", exact_below=10_000)
    assert meta.kind == "ivf-flat-l1"
    loaded = Reference(tmp_path / "ref", nprobe=32)
    distances, ids = loaded.index.search(queries, 1)
    np.testing.assert_allclose(distances[:, 0], np.abs(reference[ids[:, 0]] - queries).sum(axis=1), rtol=1e-4)
    exact = brute_force_giqa(queries, reference)
    ranks = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    assert np.corrcoef(ranks(loaded.score(queries)), ranks(exact))[0, 1] > 0.98


def test_pca_reference_projects_both_sides(tmp_path):
    reference = clustered(500, 32)
    meta = write_reference(tmp_path / "ref", reference, "x", pca_variance=0.95)
    assert meta.pca and meta.dim < 32
    loaded = Reference(tmp_path / "ref")
    assert loaded.project(reference[:3]).shape == (3, meta.dim)


def test_reference_build_resumes_after_a_kill(tmp_path):
    images = [(str(i), np.full((16, 16, 3), i * 3 % 255, np.uint8)) for i in range(50)]
    extractor = EmbeddedDescriptor(EmbeddedFeaturesConfig())
    calls = []
    real = extractor.image_features
    extractor.image_features = lambda batch: calls.append(len(batch)) or real(batch)  # type: ignore[method-assign]

    def killed_after(n):
        for index, item in enumerate(images):
            if index == n:
                raise KeyboardInterrupt("killed")
            yield item

    with pytest.raises(KeyboardInterrupt):
        build_reference_from_images(tmp_path / "ref", killed_after(25), extractor, chunk_size=10)
    assert calls == [10, 10] and not (tmp_path / "ref" / "meta.json").exists()
    calls.clear()
    meta = build_reference_from_images(tmp_path / "ref", iter(images), extractor, chunk_size=10)
    assert calls == [10, 10, 10], "the two saved chunks are not embedded again"
    whole = build_reference_from_images(tmp_path / "again", iter(images), EmbeddedDescriptor(EmbeddedFeaturesConfig()), 10)
    assert meta == whole
    queries = real([images[7][1]])
    assert Reference(tmp_path / "ref").score(queries) == pytest.approx(Reference(tmp_path / "again").score(queries))


def test_giqa_index_command_reads_folders_and_shards(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    cells = []
    for i in range(12):
        data = encode(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8), "png")
        (folder / f"{i}.png").write_bytes(data)
        cells.append({"bytes": data, "path": f"{i}.png"})
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff truncated")
    out = run_ieiw("giqa-index", folder, "--out", tmp_path / "ref-a", "--chunk", "5")
    assert "12 images" in out.stdout
    shards = tmp_path / "shards"
    shards.mkdir()
    pq.write_table(pa.table({"target_image": cells}), shards / "part-0.parquet", row_group_size=4)
    run_ieiw("giqa-index", shards, "--out", tmp_path / "ref-b")
    a, b = Reference(tmp_path / "ref-a"), Reference(tmp_path / "ref-b")
    assert a.meta.count == b.meta.count == 12 and a.meta.extractor == "embedded-v1"
    assert run_ieiw("giqa-index", tmp_path / "nowhere", "--out", tmp_path / "x", check=False).returncode == 2


def test_giqa_scorer_refuses_a_reference_of_another_extractor(tmp_path):
    write_reference(tmp_path / "ref", clustered(100, 160), "clip:some-model")
    scorer = KnnGiqaScorer(KnnGiqaConfig(reference=tmp_path / "ref"))
    image = ImageRef("k", b"")
    context = ScoreContext(None, {"embedded-v1": {"k": np.zeros(160, np.float32)}}, main="embedded-v1")
    with pytest.raises(GiqaError, match="clip:some-model"):
        scorer.score([PairView("a", "remove", "x", image, image, None, {})], context)


# -- dedup ---------------------------------------------------------------------------------------
def photo_pair(box: tuple[int, int, int, int], source: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A real photo and the same photo with one region filled flat (an edit)."""
    from skimage import data as skdata

    source = np.ascontiguousarray(skdata.astronaut()[::2, ::2]) if source is None else source
    target = source.copy()
    y0, y1, x0, x1 = box
    target[y0:y1, x0:x1] = source[y0:y1, x0:x1].mean(axis=(0, 1)).astype(np.uint8)
    return source, target


def jpeg_roundtrip(pixels: np.ndarray, quality: int) -> np.ndarray:
    import io

    return np.asarray(Image.open(io.BytesIO(encode(pixels, "jpeg", quality))).convert("RGB"))


def signature(sid: str, task: str, source: np.ndarray, target: np.ndarray, quality: float) -> Signature:
    return Signature.from_hashes(sid, task, *pair_hashes(source, target), quality)


def test_dedup_finds_the_same_edit_and_keeps_different_ones():
    src, tgt = photo_pair((40, 100, 60, 130))
    # the same photo in another dataset, re-encoded, with the same object removed there
    copy_src, copy_tgt = photo_pair((40, 100, 60, 130), jpeg_roundtrip(src, 80))
    _, other = photo_pair((150, 220, 150, 220))  # another object of the same photo
    sigs = [
        signature("b", "remove", src, jpeg_roundtrip(tgt, 95), 6.0),
        signature("a", "remove", copy_src, jpeg_roundtrip(copy_tgt, 95), 6.0),
        signature("c", "remove", src, jpeg_roundtrip(other, 95), 7.0),  # same photo, other region: no duplicate
        signature("d", "add", jpeg_roundtrip(tgt, 95), src, 6.0),  # the flipped twin: another task
    ]
    assert find_duplicates(sigs) == {"b": "a"}, "equal target scores: the smaller id survives"
    better = [Signature("b", "remove", sigs[0].source, sigs[0].edit, 8.0, sigs[0].target), *sigs[1:]]
    assert find_duplicates(better) == {"a": "b"}, "the best target score survives"
    assert find_duplicates(list(reversed(better))) == {"a": "b"}, "the order of the build does not matter"


# -- calibration and rules -------------------------------------------------------------------------
def scored(i: int, task: str, target: float, giqa: float) -> ScoredPair:
    scores = {"source_aesthetic": target, "target_aesthetic": target, "source_giqa": giqa, "target_giqa": giqa}
    return ScoredPair(f"{task}-{i}", task, scores, None, None)


def test_quantile_thresholds_are_per_task_and_order_free():
    pairs = [scored(i, "remove", 5 + i / 10, 0.1 + i / 100) for i in range(100)]
    pairs += [scored(i, "web", 2 + i / 10, 1.0) for i in range(20)]
    config = SelectionConfig(min_target_aesthetic=Quantile(quantile=0.1), min_target_giqa=Quantile(quantile=0.5),
                             per_task={"web": {"min_target_aesthetic": 3.0, "min_target_giqa": None}})
    calibration = calibrate(pairs, config)
    assert calibration.thresholds["remove"]["min_target_aesthetic"] == pytest.approx(np.quantile(
        [5 + i / 10 for i in range(100)], 0.1))
    assert calibration.thresholds["web"]["min_target_aesthetic"] == 3.0
    assert calibration.thresholds["web"]["min_target_giqa"] is None
    assert calibrate(list(reversed(pairs)), config).thresholds == calibration.thresholds
    low = {"source_aesthetic": 9, "target_aesthetic": 9, "source_giqa": 0.11, "target_giqa": 0.11}
    assert rejection_reason(low, calibration.thresholds["remove"]) == TARGET_GIQA_LOW


def test_a_builders_drop_takes_no_part_in_calibration():
    pairs = [scored(i, "remove", 5.0 + i, 1.0) for i in range(3)]
    pairs.append(ScoredPair("dropped", "remove", {"target_aesthetic": -100.0}, None, None, "object_still_there"))
    config = SelectionConfig(min_target_aesthetic=Quantile(quantile=0.0))
    assert calibrate(pairs, config).thresholds["remove"]["min_target_aesthetic"] == 5.0


# -- ieiw select, and features computed once -------------------------------------------------------
def shard_digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))}


@pytest.mark.slow
def test_select_rewrites_only_the_selected_shards(make_config, tmp_path):
    config = make_config(unit_size=16, selection={"min_target_aesthetic": 2.0, "max_aesthetic_gap": 3.0,
                                                   "min_target_giqa": None})
    run_ieiw("build", config)
    out = tmp_path / "out"
    before = {stage: shard_digests(out / stage) for stage in ("candidates", "features", "scores", "ieiw")}
    selected = load_manifest(out / "ieiw")["units"]
    before_summary = json.loads((out / "stats.json").read_text())
    proc = run_ieiw("select", "--config", config, "--set", "selection.min_target_aesthetic={quantile: 0.5}")
    assert "rewritten" in proc.stdout
    for stage in ("candidates", "features", "scores"):
        assert shard_digests(out / stage) == before[stage], f"{stage} untouched"
    after = load_manifest(out / "ieiw")["units"]
    assert all(after[u]["finished_at"] > selected[u]["finished_at"] for u in selected)
    assert shard_digests(out / "ieiw") != before["ieiw"]
    stats = json.loads(run_ieiw("stats", out / "ieiw", "--json").stdout)
    assert stats["rejected"].get("target_quality_low", 0) >= stats["candidates"] * 0.4
    # the build's summary follows the new selection, as after a build: stats.json, the card and the report
    assert json.loads((out / "stats.json").read_text())["rows"] == stats["rows"]
    assert before_summary["rows"] != stats["rows"], "the stricter threshold keeps fewer pairs"
    assert f"**{stats['rows']} pairs.**" in (out / "README.md").read_text()
    report = (out / "report.html").read_text()
    assert f"<span>{stats['rows']}</span>kept pairs" in report
    assert f"<span>{stats['rejected_total']}</span>rejected" in report
    assert f"<td>target_quality_low</td><td class='n'>{stats['rejected']['target_quality_low']}</td>" in report
    assert run_ieiw("verify", out / "ieiw").returncode == 0 and run_ieiw("verify", out / "rejected").returncode == 0
    again = run_ieiw("select", "--config", config, "--set", "selection.min_target_aesthetic={quantile: 0.5}")
    assert "0 rewritten" in again.stdout, "nothing changed: nothing rewritten"


COUNT_ENCODER = """
import json, sys
from ieiw.backends.features.clip import ClipFeatures
from ieiw.flows.build import build_ieiw
from ieiw.schemas.manifest import load_manifest

calls = []
real = ClipFeatures.image_features
def counting(self, images):
    calls.append(len(images))
    return real(self, images)
ClipFeatures.image_features = counting
stats = build_ieiw(config_path=sys.argv[1], overrides=json.loads(sys.argv[2]))
print("RESULT", json.dumps({"calls": sum(calls), "backends": stats["backends"]}))
"""


@pytest.mark.slow
def test_threshold_change_or_head_swap_in_a_new_process_embeds_nothing_again(make_config, tmp_path):
    from test_model_filters import improved_state

    clip = tiny_clip_folder(tmp_path / "clip")
    v1 = tmp_path / "v1.pth"
    torch.save({"weight": torch.randn(1, 32), "bias": torch.zeros(1)}, v1)
    improved = tmp_path / "improved.pth"
    torch.save(improved_state(dim=32), improved)
    scoring = {"features": {"backend": "clip", "model": str(clip)},
               "scorers": [{"backend": "laion", "head": "v1", "weights": str(v1)}]}
    config = make_config(scoring=scoring, selection={"min_target_aesthetic": None, "max_aesthetic_gap": None})

    def build(overrides: dict) -> dict:
        proc = subprocess.run([sys.executable, "-c", COUNT_ENCODER, str(config), json.dumps(overrides)],
                              capture_output=True, text=True, env=ieiw_env(), cwd=REPO, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.split("RESULT", 1)[1])

    first = build({})
    assert first["calls"] > 0 and any(k.startswith("scores: laion-v1 over clip:clip") for k in first["backends"])
    swapped = build({"scoring.scorers": [{"backend": "laion", "head": "improved", "weights": str(improved)}],
                     "selection.min_target_aesthetic": {"quantile": 0.2}})
    assert swapped["calls"] == 0, "a new head and a new threshold reuse the stored embeddings"
    assert any(k.startswith("scores: laion-improved over clip:clip") for k in swapped["backends"])


@pytest.mark.slow
def test_duplicate_record_is_rejected_with_the_survivors_id(sample_root, tmp_path):
    """The same object listed twice under two phrasings (as PhraseCut does): one pair per task survives."""
    import shutil

    root = tmp_path / "VGPhraseCut_v0"
    shutil.copytree(sample_root, root)
    refer = json.loads((root / "refer_train.json").read_text())
    twin = dict(refer[0], task_id=refer[0]["task_id"] + "_again", phrase="the very same " + refer[0]["phrase"])
    refer.insert(1, twin)
    (root / "refer_train.json").write_text(json.dumps(refer))
    config = write_config(tmp_path / "b.yaml", root, tmp_path / "out", unit_size=64,
                          selection={"min_target_aesthetic": None, "max_aesthetic_gap": None})
    run_ieiw("build", config)
    rejected = [r for e in load_manifest(tmp_path / "out" / "rejected")["units"].values()
                for r in pq.read_table(tmp_path / "out" / "rejected" / e["shard"]).to_pylist()]
    duplicates = [r for r in rejected if r["reason"] == DUPLICATE]
    assert sorted(r["task"] for r in duplicates) == ["add", "remove"], rejected
    kept = {r["id"]: r for e in load_manifest(tmp_path / "out" / "ieiw")["units"].values()
            for r in pq.read_table(tmp_path / "out" / "ieiw" / e["shard"], columns=["id", "task", "origin"]).to_pylist()}
    for row in duplicates:
        survivor = kept[row["duplicate_of"]]
        assert survivor["task"] == row["task"]
        assert {survivor["origin"]["record_id"], row["origin"]["record_id"]} == {twin["task_id"], refer[0]["task_id"]}


def test_paper_config_stops_before_prefect_naming_each_missing_file(tmp_path):
    import time

    env = ieiw_env() | {"TORCH_HOME": str(tmp_path / "torch")}  # where lama-cleaner would have cached big-lama.pt
    env.pop("LAMA_MODEL_URL", None)
    start = time.monotonic()
    proc = run_ieiw("build", REPO / "configs" / "ieiw.paper.yaml", "--out", tmp_path / "paper", check=False, env=env)
    assert proc.returncode == 2 and time.monotonic() - start < 30
    lines = proc.stderr.strip().splitlines()
    assert lines[0].endswith("cannot build:") and "Traceback" not in proc.stderr
    for name in ("sac+logos+ava1-l14-linearMSE.pth", "pt_inception-2015-12-05-6726825d.pth", "giqa-reference",
                 "VGPhraseCut_v0", str(tmp_path / "torch" / "hub" / "checkpoints" / "big-lama.pt"),
                 "features backend clip", "removal.verify backend clip", "data/sa1b:", "data/open-images:",
                 "repaint backend paint-by-example", "labels: vocabulary"):
        assert sum(name in line for line in lines[1:]) == 1, name
    assert sum("clip-vit-large-patch14" in line for line in lines[1:]) == 2, "scoring features and removal.verify"
    assert not (tmp_path / "paper").exists(), "nothing was started or written"
