"""The full model's three stages end to end on CPU with tiny models (issue #13, "Staged run"):

build (PhraseCut removal + COCO-Stuff overlays + COCO keypoints, with COCO captions) -> ``--stage adapt`` on
``out/adaptation`` -> ``--stage edit`` from the adapted UNet on the mixed folders ``ieiw,segmentation,keypoints``
-> ``ieiw align-pick`` candidates from the edit export, picked in headless Chromium -> ``--stage align`` on the
picks -> ``ieiw eval`` with a tiny CLIP."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import yaml

from ieiw_testing import run_ieiw, tiny_clip_folder
from test_align_pick import INSTALL, chromium_path
from trainkit import tiny_config, write_stage


def ids_in(folder: Path) -> set[str]:
    return {i for shard in folder.glob("*.parquet") for i in pq.read_table(shard, columns=["id"]).column("id").to_pylist()}


def trained_ids(output_dir: Path) -> list[str]:
    return [line for f in sorted((output_dir / "sample_ids").glob("rank-*.txt")) for line in f.read_text().split()]


@pytest.fixture(scope="module")
def built(sample_root, tmp_path_factory) -> Path:
    """The mixed corpus: out/ieiw, out/segmentation, out/keypoints and out/adaptation."""
    root = tmp_path_factory.mktemp("staged")
    out = root / "out"
    config = root / "build.yaml"
    config.write_text(yaml.safe_dump({
        "name": "staged", "out_dir": str(out), "unit_size": 8, "workers": 2,
        "removal": {"source": {"root": str(sample_root), "splits": ["train", "val"], "limit": 16}, "mask_dilation": 5},
        "cocostuff": {"root": str(root / "coco-stuff"), "samples": {"images": 8, "width": 128, "height": 96},
                      "captions": str(root / "coco-stuff/annotations/captions_train2017.json")},
        "keypoints": {"dataset": "coco", "root": str(root / "coco"), "samples": {"images": 4},
                      "captions": str(root / "coco/annotations/captions_train2017.json")},
        "split": {"val_fraction": 0.3},
        "selection": {"min_target_aesthetic": 2.0, "max_aesthetic_gap": 3.0},
    }))
    run_ieiw("build", config)
    return out


def test_adapt_then_edit_on_mixed_folders_then_align_on_page_picks_then_eval(built, tiny_sd, tmp_path):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(f"playwright is missing; {INSTALL}")
    from diffusers import StableDiffusionInstructPix2PixPipeline, StableDiffusionPipeline, UNet2DConditionModel

    from ieiw.training.align_pick import make_server
    from ieiw.training.cli import align_pick_main
    from ieiw.training.data import ShardPairs, index_shards
    from ieiw.training.model import load_components
    from ieiw.training.train import train

    started = time.monotonic()
    adaptation, mixed = built / "adaptation", [built / "ieiw", built / "segmentation", built / "keypoints"]
    assert all(ids_in(folder) for folder in [adaptation, *mixed])

    # 1. adapt: text-to-image on rendered targets, captions + the domain suffix (appended once, by the trainer)
    common = ["train.batch_size=2", "data.num_workers=0", "logging.sample_ids=true"]
    adapt_config = tiny_config(tiny_sd, adaptation, tmp_path / "adapt", ["stage=adapt", "train.max_steps=3", *common])
    adapt = train(adapt_config)
    assert adapt.global_step == 3 and StableDiffusionPipeline.from_pretrained(adapt.pipeline_dir).unet.config.in_channels == 4
    assert set(trained_ids(tmp_path / "adapt")) <= ids_in(adaptation)
    texts = [s["instruction"] for s in ShardPairs(index_shards(adaptation), resolution=32, shuffle_buffer=0,
                                                   epochs=1, text_only=True, decode=False,
                                                   caption_suffixes=adapt_config.data.caption_suffixes)]
    for text in texts:
        suffixes = [s for s in adapt_config.data.caption_suffixes.values() if s in text]
        assert len(suffixes) == 1 and text.count(suffixes[0]) == 1 and text.endswith(", " + suffixes[0]), text

    # 2. edit on the three mixed folders, starting from the adapted UNet (widened to 8 channels)
    edit_out = tmp_path / "edit"
    edit_config = tiny_config(tiny_sd, mixed[0], edit_out, [
        f"data.folder={','.join(map(str, mixed))}", f"model.init_from={adapt.pipeline_dir}", "train.epochs=1",
        "train.max_steps=null", *common])
    start = load_components(edit_config).unet.conv_in.weight
    adapted = UNet2DConditionModel.from_pretrained(adapt.pipeline_dir / "unet").conv_in.weight
    assert start.shape[1] == 8 and torch.equal(start[:, :4], adapted) and not start[:, 4:].any()
    edit = train(edit_config)
    rows = sum(len(ids_in(folder)) for folder in mixed)
    assert edit.global_step == (rows + 1) // 2  # one epoch of the three folders (weights 1), batch 2
    assert StableDiffusionInstructPix2PixPipeline.from_pretrained(edit.pipeline_dir).unet.config.in_channels == 8
    seen = trained_ids(edit_out)
    assert len(seen) == 2 * edit.global_step and set(seen) == set().union(*map(ids_in, mixed)), "every row of each folder"

    # 3. align-pick: candidates from the edit export, picked by mouse and keyboard in Chromium
    images = sorted((built.parent / "coco-stuff" / "images" / "train2017").glob("*.jpg"))[:2]
    bench = tmp_path / "bench.jsonl"
    bench.write_text("".join(json.dumps({"image": str(p), "instruction": f"make the sky {c}"}) + "\n"
                             for p, c in zip(images, ["red", "green"])))
    work = tmp_path / "align-work"
    assert align_pick_main([str(bench), "--work", str(work), "--pipeline", str(edit.pipeline_dir), "--text-guidance",
                            "3,7.5", "--steps", "2", "--resolution", "64", "--device", "cpu", "--prepare-only"]) == 0
    server = make_server(work, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
            try:
                page = browser.new_page()
                page.goto("http://127.0.0.1:%d/" % server.server_address[1])
                page.wait_for_selector("body[data-ready='1']")
                page.locator(".cand[data-index='1']").click()
                page.wait_for_selector(".cand[data-index='1'].picked")
                page.keyboard.press("n")
                page.wait_for_selector("body[data-prompt='p0001']")
                page.keyboard.press("1")
                page.wait_for_selector(".cand[data-index='0'].picked")
                page.locator("#write").click()
                page.wait_for_function("document.getElementById('written').textContent === 'wrote 2 rows'")
            finally:
                browser.close()
    finally:
        server.shutdown()
        server.server_close()
    assert json.loads((work / "picks.json").read_text()) == {"p0000": [1], "p0001": [0]}

    # 4. align: the edit model fine-tuned on the two picks only
    align_out = tmp_path / "align"
    align = train(tiny_config(tiny_sd, work / "shards", align_out, [
        "stage=align", f"model.init_from={edit_out}", "train.epochs=2", "train.max_steps=null", *common]))
    assert align.global_step == 2  # 2 epochs x 2 picks / batch 2
    assert set(trained_ids(align_out)) == ids_in(work / "shards")

    # 5. eval: the held-out rows of the editing corpus, scored with a tiny CLIP
    clip = tiny_clip_folder(tmp_path / "clip")
    result = run_ieiw("eval", align.pipeline_dir, "--data", built / "ieiw", "--clip", clip, "--out", tmp_path / "eval",
                      "--steps", "2", "--limit", "3", "--resolution", "64", "--cell", "64", "--device", "cpu")
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["n"] == 3 and results["split"] == "val" and "3 val rows" in result.stdout
    assert (tmp_path / "eval" / "grid.png").exists()
    print(f"staged run: {time.monotonic() - started:.1f}s")


def test_the_trainer_appends_the_suffix_exactly_once(tmp_path):
    from ieiw.builders.captions import DEFAULT_SUFFIXES, OVERLAY_TASK
    from ieiw.schemas.rows import rows_to_table
    from ieiw.schemas.shards import write_shard
    from ieiw.training.config import DEFAULT_CAPTION_SUFFIXES
    from ieiw.training.data import ShardPairs, index_shards

    folder = write_stage(tmp_path / "adapt", [("cocostuff", 3)])
    shard = next(folder.glob("*.parquet"))
    table = pq.read_table(shard).to_pylist()
    suffix = DEFAULT_SUFFIXES[OVERLAY_TASK]
    for row, text in zip(table, ["A dog on a sofa", f"A dog on a sofa, {suffix}", f"A dog on a sofa, {suffix}."]):
        row["task"], row["instruction"] = OVERLAY_TASK, text
    write_shard(rows_to_table(table), shard)
    texts = [s["instruction"] for s in ShardPairs(index_shards(folder), shuffle_buffer=0, epochs=1, text_only=True,
                                                   decode=False, caption_suffixes=DEFAULT_CAPTION_SUFFIXES)]
    assert texts == [f"A dog on a sofa, {suffix}"] * 3
