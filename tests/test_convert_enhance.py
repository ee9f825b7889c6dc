"""The enhancement converter on its bundled samples: degraded/clean pairs aligned and matched by name in
every layout (GoPro, REDS, SIDD: training and release; CLWD), where sorted position would mis-pair; a file
without partner named in a failure; synthetic degradations reproduced from the recorded seed; a run through
the real flow."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from ieiw_testing import assert_not_carried, plant_outside, run_ieiw
from PIL import Image

from ieiw.schemas.units import BuildContext
from ieiw.phrases import TemplateError
from ieiw.builders.enhance import IMAGE_SUFFIXES, TEMPLATE_FOR, EnhanceBuilder, EnhanceConfig, load_task_templates
from ieiw.sources.degradations import degrade
from ieiw.samples.enhance import ensure_enhance_sample, make_enhance_sample
from ieiw.imageio import decode, decode_mask
from ieiw.schemas.rows import rows_to_table
from ieiw.schemas.manifest import load_manifest

PAIRED = [("gopro", "training"), ("gopro", "release"), ("reds", "training"), ("reds", "release"),
          ("sidd", "training"), ("sidd", "release"), ("clwd", "training")]
FOLDERS = {  # (degraded, clean) folders that the official loaders list and sort, per sample layout
    ("gopro", "training"): ("train/input", "train/target"),
    ("reds", "training"): ("train/blur", "train/sharp"),
    ("sidd", "training"): ("train/input", "train/gt"),
    ("clwd", "training"): ("train/Watermarked_image", "train/Watermark_free_image"),
}


def build(config: EnhanceConfig, unit_size: int = 4):
    builder = EnhanceBuilder(config, BuildContext(root=Path("."), out_dir=Path("unused"), unit_size=unit_size))
    builder.prepare()
    results = [builder.build_unit(unit) for unit in builder.plan()]
    return [row for r in results for row in r.rows], [f for r in results for f in r.failures]


def pixels(cell) -> np.ndarray:
    return decode(cell["bytes"]).pixels


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    err = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 99.0 if err == 0 else 10 * np.log10(255.0**2 / err)


def best_offset(degraded: np.ndarray, clean: np.ndarray, degradation: str, reach: int = 2) -> tuple[int, int]:
    """The integer shift (dx, dy) of ``clean`` that best explains ``degraded``; (0, 0) for an aligned pair.

    Blur and noise: the least squared difference after smoothing both (which evens out the degradation).
    Watermark: the most pixels left (nearly) unchanged, since outside the stamp the two agree."""
    grey = [cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).astype(np.float64) for x in (degraded, clean)]
    if degradation != "watermark":
        grey = [cv2.GaussianBlur(g, (0, 0), 2) for g in grey]
    height, width = grey[0].shape
    core = grey[0][reach:height - reach, reach:width - reach]
    scores = {}
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            moved = grey[1][reach + dy:height - reach + dy, reach + dx:width - reach + dx]
            diff = np.abs(core - moved)
            scores[dx, dy] = -(diff <= 4).mean() if degradation == "watermark" else (diff**2).mean()
    return min(scores, key=scores.get)


@pytest.fixture(scope="module")
def paired(tmp_path_factory):
    out = {}
    for dataset, layout in PAIRED:
        root = tmp_path_factory.mktemp(f"{dataset}-{layout}") / dataset
        config = EnhanceConfig(dataset=dataset, root=root, samples={"pairs": 6, "orphans": 1, "layout": layout})
        out[dataset, layout] = (config, *build(config))
    return out


@pytest.mark.parametrize(("dataset", "layout"), PAIRED)
def test_pairs_are_aligned_and_matched_by_name(paired, dataset, layout):
    config, rows, _ = paired[dataset, layout]
    assert len(rows) == 6
    targets = [pixels(r["target_image"]) for r in rows]
    for row, clean in zip(rows, targets):
        params = json.loads(row["builder"]["params"])
        degraded = pixels(row["source_image"])
        assert degraded.shape == clean.shape == (row["height"], row["width"], 3)
        assert best_offset(degraded, clean, params["degradation"]) == (0, 0)
        assert psnr(degraded, clean) > 18
        # the partner is the best match among all clean images: a mis-pair would show here
        assert psnr(degraded, clean) == max(psnr(degraded, t) for t in targets)
        # paired by name: the two files carry the same key
        assert params["layout"] == layout and params["degradation"] == {"gopro": "blur", "reds": "blur",
                                                                        "sidd": "noise", "clwd": "watermark"}[dataset]
        deg, cln = Path(params["degraded_file"]), Path(params["clean_file"])
        assert (config.root / deg).read_bytes() == row["source_image"]["bytes"]
        assert (config.root / cln).read_bytes() == row["target_image"]["bytes"]
        assert deg.stem.replace("NOISY", "GT") == cln.stem
        assert row["origin"]["dataset"] == dataset and row["task"] == "enhance"
        assert row["instruction"] in load_task_templates(TEMPLATE_FOR[params["degradation"]]).sentences
    rows_to_table(rows)


@pytest.mark.parametrize("key", sorted(FOLDERS))
def test_sorted_position_would_mis_pair_these_samples(paired, key):
    """What the official loaders do (i-th of each sorted folder) pairs other files here; by name does not."""
    config, rows, _ = paired[key]
    degraded_dir, clean_dir = (config.root / f for f in FOLDERS[key])
    listed = [sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
              for d in (degraded_dir, clean_dir)]
    by_position = list(zip(*listed))
    mis = [(a, b) for a, b in by_position if a != b]
    assert mis, "position pairing would pair these folders correctly: the sample proves nothing"
    rows_by_file = {json.loads(r["builder"]["params"])["degraded_file"]: r for r in rows}
    checked = 0
    for a, b in mis:
        row = rows_by_file.get(f"{FOLDERS[key][0]}/{a}")
        if row is None:  # the orphan itself
            continue
        source = pixels(row["source_image"])
        wrong = np.asarray(Image.open(clean_dir / b).convert("RGB"))
        # the by-position partner is another scene: far worse than the partner by name
        assert psnr(source, wrong) + 6 < psnr(source, pixels(row["target_image"]))
        checked += 1
    assert checked >= len(rows) - 1


@pytest.mark.parametrize(("dataset", "layout"), PAIRED)
def test_a_file_without_partner_is_a_named_failure(paired, dataset, layout):
    config, _, failures = paired[dataset, layout]
    assert [f.reason for f in failures] == ["no_partner"]
    failure = failures[0]
    orphan = Path(failure.file)
    assert orphan.exists() and config.root in orphan.parents
    assert "no clean partner: expected" in failure.message and "pairs with" in failure.message
    expected = Path(failure.message.split("expected ", 1)[1].split(" (", 1)[0])
    assert not expected.exists() and expected.stem.replace("GT", "NOISY") == orphan.stem


def test_size_mismatch_and_unreadable_files_are_named(tmp_path):
    root = make_enhance_sample(tmp_path / "clwd", "clwd", pairs=4)
    clean = root / "train" / "Watermark_free_image"
    Image.open(clean / "2.jpg").resize((100, 80)).save(clean / "2.jpg")
    (clean / "3.jpg").write_bytes(b"<html>not an image</html>")
    _, failures = build(EnhanceConfig(dataset="clwd", root=root))
    by_reason = {f.reason: f for f in failures}
    assert set(by_reason) == {"size_mismatch", "unreadable_image"}
    assert by_reason["size_mismatch"].record_id == "2" and "100x80" in by_reason["size_mismatch"].message
    assert by_reason["unreadable_image"].file == str(clean / "3.jpg")


def test_synthetic_redegrading_the_target_reproduces_the_source(tmp_path):
    root = tmp_path / "clean"
    config = EnhanceConfig(dataset="synthetic", root=root, samples={"pairs": 5}, seed=11)
    rows, failures = build(config)
    assert not failures and len(rows) == 5 * 3
    kinds = set()
    for row in rows:
        params = json.loads(row["builder"]["params"])
        kinds.add((params["degradation"], params.get("kind")))
        clean, degraded = pixels(row["target_image"]), pixels(row["source_image"])
        again = degrade(clean, params["degradation"], params["image_seed"])
        assert np.array_equal(again.pixels, degraded)
        assert best_offset(degraded, clean, params["degradation"]) == (0, 0)
        assert row["source_image"]["path"].endswith(".png")
        assert (root / params["clean_file"]).read_bytes() == row["target_image"]["bytes"]  # clean as stored
        assert row["builder"]["embedded"] is True and row["origin"]["dataset"] == "synthetic"
        assert row["instruction"] in load_task_templates(TEMPLATE_FOR[params["degradation"]]).sentences
        if params["degradation"] == "watermark":
            changed = (clean != degraded).any(axis=2)
            assert changed.any() and not (changed & ~decode_mask(row["mask"]["bytes"]).astype(bool)).any()
        else:
            assert row["mask"] is None
    assert {d for d, _ in kinds} == {"blur", "noise", "watermark"}
    assert {"gaussian", "motion"} <= {k for d, k in kinds if d == "blur"}
    assert [r["id"] for r in build(config, unit_size=2)[0]] == [r["id"] for r in rows]  # deterministic


def test_synthetic_degradations_can_be_chosen(tmp_path):
    root = make_enhance_sample(tmp_path / "clean", "synthetic", pairs=3)
    rows, _ = build(EnhanceConfig(dataset="synthetic", root=root, degradations=["noise"], limit=2))
    assert len(rows) == 2 and {json.loads(r["builder"]["params"])["degradation"] for r in rows} == {"noise"}
    with pytest.raises(ValueError, match="listed twice"):
        EnhanceConfig(dataset="synthetic", root=root, degradations=["blur", "blur"])


def test_files_symlinked_out_of_the_root_are_failures(tmp_path):
    """The enhancement listings read folders, so no dataset-supplied name becomes a path; a file (or folder)
    symlinked out of ``root`` is the only way out, and it is a ``path_outside_root`` failure naming the link
    (docs/formats.md, "Names that become paths")."""
    planted, data = plant_outside(tmp_path / "elsewhere", (160, 120))
    root = make_enhance_sample(tmp_path / "gopro", "gopro", pairs=4)
    target = sorted((root / "train" / "target").iterdir())[0]
    target.unlink()
    target.symlink_to(planted)
    rows, failures = build(EnhanceConfig(dataset="gopro", root=root))
    assert [(f.reason, f.record_id, f.file) for f in failures] == [("path_outside_root", target.stem, str(target))]
    assert len(rows) == 3
    assert_not_carried(rows, planted, data)
    clean = make_enhance_sample(tmp_path / "clean", "synthetic", pairs=2)
    (clean / "linked.png").symlink_to(planted)
    (clean / "linkdir").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    rows, failures = build(EnhanceConfig(dataset="synthetic", root=clean, degradations=["noise"]))
    assert len(rows) == 2 and failures and {f.reason for f in failures} == {"path_outside_root"}
    assert ("linked.png#noise", str(clean / "linked.png")) in {(f.record_id, f.file) for f in failures}
    assert all(Path(f.file).resolve() == planted.resolve() for f in failures)
    assert_not_carried(rows, planted, data)


def test_templates_and_preflight(tmp_path):
    for task in ("deblur", "denoise", "dewatermark"):
        assert len(load_task_templates(task).sentences) == 10
    bad = tmp_path / "deblur.yaml"
    bad.write_text(yaml.safe_dump({"deblur": ["Sharpen {this}"]}))
    with pytest.raises(TemplateError, match="take no placeholder"):
        load_task_templates("deblur", bad)
    lines = EnhanceConfig(dataset="gopro", root=tmp_path / "nowhere", templates={"deblur": bad}).preflight()
    assert any("enhance.templates.deblur" in line for line in lines) and any("not found" in line for line in lines)
    (tmp_path / "empty").mkdir()
    lines = EnhanceConfig(dataset="reds", root=tmp_path / "empty").preflight()
    assert lines and "no reds layout found" in lines[0] and "train/blur" in lines[0]


def test_samples_are_deterministic_and_made_once(tmp_path):
    for dataset, layout in PAIRED + [("synthetic", "training")]:
        a = make_enhance_sample(tmp_path / "a" / f"{dataset}-{layout}", dataset, pairs=3, orphans=1, layout=layout)
        b = make_enhance_sample(tmp_path / "b" / f"{dataset}-{layout}", dataset, pairs=3, orphans=1, layout=layout)
        files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
        assert files and files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
        assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert ensure_enhance_sample(tmp_path / "c", "sidd", pairs=2) is True
    assert ensure_enhance_sample(tmp_path / "c", "sidd", pairs=2) is False
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.slow
def test_build_through_the_real_flow(tmp_path):
    config = tmp_path / "build.yaml"
    config.write_text(yaml.safe_dump({
        "name": "enhance-test",
        "out_dir": str(tmp_path / "out"),
        "unit_size": 4,
        "workers": 2,
        "enhance": {"dataset": "gopro", "root": str(tmp_path / "GoPro"),
                    "samples": {"pairs": 5, "orphans": 1, "layout": "release"}},
        "selection": {"min_target_aesthetic": 1.0, "max_aesthetic_gap": 9.0},
    }))
    run_ieiw("build", config)
    candidates = tmp_path / "out" / "candidates"
    manifest = load_manifest(candidates)
    assert manifest["units"] and all(key.startswith("enhance-gopro-train-") for key in manifest["units"])
    rows = [r for entry in manifest["units"].values()
            for r in pq.read_table(candidates / entry["shard"], columns=["task", "origin"]).to_pylist()]
    assert len(rows) == 5 and {r["task"] for r in rows} == {"enhance"}
    assert {r["origin"]["dataset"] for r in rows} == {"gopro"}
    failures = [f for e in manifest["units"].values() for f in e["stats"]["failure_messages"]]
    assert len(failures) == 1 and "no_partner" in failures[0] and "GOPR0372_07_00/blur/000047.png" in failures[0]
    shutil.rmtree(tmp_path / "out")
