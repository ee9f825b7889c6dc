"""`ieiw export` and `ieiw card` on one small real build (removal + the bundled crawl sample): each format read
back by its own consumer's logic (InstructDiffusion's IEIW loader, `datasets`, `webdataset`), takedown by id and
by URL, and the dataset card loading with `datasets.load_dataset(OUT)`."""

from __future__ import annotations

import glob
import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from ieiw_testing import run_ieiw, write_config
from PIL import Image

from ieiw.card import size_category, write_card
from ieiw.exports import ExportError, export
from ieiw.schemas.manifest import load_manifest

pytestmark = pytest.mark.slow


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def built(tmp_path_factory, sample_root) -> Path:
    tmp = tmp_path_factory.mktemp("exports")
    config = write_config(tmp / "build.yaml", sample_root, tmp / "out", crawl={}, unit_size=16,
                          split={"val_fraction": 0.25})
    run_ieiw("build", config)
    return tmp / "out"


@pytest.fixture(scope="module")
def rows(built) -> dict[str, dict]:
    """Every kept row by id, images as bytes, read straight from the shards the manifest lists."""
    manifest = load_manifest(built / "ieiw")
    out = {}
    for entry in manifest["units"].values():
        for row in pq.read_table(built / "ieiw" / entry["shard"]).to_pylist():
            out[row["id"]] = row
    assert {r["task"] for r in out.values()} == {"add", "remove", "web"}
    assert {r["split"] for r in out.values()} == {"train", "val"}
    return out


def triple(row: dict) -> tuple[str, str, str]:
    return sha(row["source_image"]["bytes"]), sha(row["target_image"]["bytes"]), row["instruction"]


@pytest.fixture(scope="module")
def takedown(rows, tmp_path_factory) -> tuple[Path, set[str], set[str]]:
    """A takedown file naming one removal row by id, one source image URL (all its rows) and one web edit
    by its edit URL; returns (file, entries, ids of the rows it withholds)."""
    by_id = next(r for r in sorted(rows.values(), key=lambda r: r["id"]) if r["task"] == "remove")
    url_row = next(r for r in sorted(rows.values(), key=lambda r: r["id"])
                   if r["task"] == "add" and r["origin"]["url"] != by_id["origin"]["url"])
    web = next(r for r in sorted(rows.values(), key=lambda r: r["id"]) if r["task"] == "web")
    entries = {by_id["id"], url_row["origin"]["url"], web["origin"]["edit_url"]}
    withheld = {i for i, r in rows.items()
                if i in entries or r["origin"]["url"] in entries or r["origin"]["edit_url"] in entries}
    assert len(withheld) >= 4  # the URL takes every row of its source image (remove/add twins at least)
    path = tmp_path_factory.mktemp("takedown") / "takedown.txt"
    path.write_text("# ids and URLs\n" + "\n".join(f"{e}  # entry" for e in sorted(entries)) + "\n\n")
    return path, entries, withheld


def official_ieiw_loader(path: str) -> list[tuple[Image.Image, Image.Image, str]]:
    """InstructDiffusion's IEIWDataset (dataset/editing/edit_zip_dataset.py) minus resizing and tensors:
    read meta_infov1.json, replace its path prefix, open both images with PIL as they are given."""
    with open(Path(path) / "meta_infov1.json") as f:
        meta = json.load(f)
    items = []
    for item in meta:
        item["input"] = item["input"].replace("/mnt/external/tmp/2023/06/11/", path)
        item["edited"] = item["edited"].replace("/mnt/external/tmp/2023/06/11/", path)
        items.append((Image.open(item["input"]), Image.open(item["edited"]), item["instruction"]))
    return items


def test_instructdiffusion_export_loads_in_the_official_loader_from_its_checkout(built, rows, tmp_path, monkeypatch):
    """As configs/instruct_diffusion.yaml runs it: the trainer's working directory is the InstructDiffusion
    checkout, the export sits at its `path: data/ieiw/`, the loader swaps its prefix for that path. The train
    split only, unless asked."""
    checkout = tmp_path / "InstructDiffusion"
    result = export(built, checkout / "data" / "ieiw", "instructdiffusion")
    train = {rid: row for rid, row in rows.items() if row["split"] == "train"}
    assert 0 < len(train) < len(rows), "the demo must have both splits for this test to mean something"
    assert (result.written, result.withheld, result.other_split) == (len(train), 0, len(rows) - len(train))
    monkeypatch.chdir(checkout)
    loaded = official_ieiw_loader("data/ieiw/")
    meta = json.loads((checkout / "data" / "ieiw" / "meta_infov1.json").read_text())
    assert len(loaded) == len(meta) == len(train)
    for (source, target, instruction), item in zip(loaded, meta, strict=True):
        local = {name: item[name].replace("/mnt/external/tmp/2023/06/11/", "data/ieiw/") for name in ("input", "edited")}
        row = train[re.fullmatch(r"data/ieiw/images/(\w+)_input\.\w+", local["input"]).group(1)]
        assert instruction == row["instruction"]
        assert Path(local["input"]).read_bytes() == row["source_image"]["bytes"]  # bytes as stored
        assert Path(local["edited"]).read_bytes() == row["target_image"]["bytes"]
        assert source.convert("RGB").size == target.convert("RGB").size == (row["width"], row["height"])
    every = export(built, tmp_path / "all", "instructdiffusion", split="all")
    assert every.written == len(rows)


def test_hf_instructpix2pix_export_loads_in_datasets(built, rows, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    result = export(built, tmp_path / "hf", "hf-instructpix2pix", shard_rows=50)
    files = sorted(glob.glob(str(tmp_path / "hf" / "data" / "*.parquet")))
    assert result.written == len(rows) and len(files) > 2
    ds = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "cache"))
    assert ds.column_names == ["input_image", "edited_image", "edit_prompt"]
    assert isinstance(ds.features["input_image"], datasets.Image)
    first = ds[0]
    assert isinstance(first["input_image"], Image.Image) and isinstance(first["edited_image"], Image.Image)
    raw = ds.cast_column("input_image", datasets.Image(decode=False))
    raw = raw.cast_column("edited_image", datasets.Image(decode=False))
    got = Counter((sha(r["input_image"]["bytes"]), sha(r["edited_image"]["bytes"]), r["edit_prompt"]) for r in raw)
    assert got == Counter(triple(r) for r in rows.values())
    # The folder itself, as diffusers' --dataset_name DIR loads it: the rows' split column gives the two splits.
    both = datasets.load_dataset(str(tmp_path / "hf"), cache_dir=str(tmp_path / "cache"))
    splits = Counter(r["split"] for r in rows.values())
    assert {k: len(v) for k, v in both.items()} == {"train": splits["train"], "validation": splits["val"]}


def test_webdataset_export_yields_every_pair(built, rows, tmp_path):
    import webdataset as wds

    result = export(built, tmp_path / "wds", "webdataset", shard_rows=40)
    tars = sorted(glob.glob(str(tmp_path / "wds" / "shard-*.tar")))
    assert len(tars) == -(-len(rows) // 40) and result.written == len(rows)
    seen = {}
    for sample in wds.WebDataset(tars, shardshuffle=False, empty_check=False):
        meta = json.loads(sample["json"])
        assert "." not in sample["__key__"] and meta["id"] == sample["__key__"]
        source, target = next(v for k, v in sample.items() if k.startswith("input.")), \
            next(v for k, v in sample.items() if k.startswith("edited."))
        seen[meta["id"]] = (sha(source), sha(target), sample["txt"].decode())
        assert meta["task"] == rows[meta["id"]]["task"] and meta["origin"] == rows[meta["id"]]["origin"]
        assert meta["edit_kind"] == rows[meta["id"]]["edit_kind"]  # web rows: local, colour, ...; others null
    assert seen == {i: triple(r) for i, r in rows.items()}
    assert any(r["edit_kind"] for r in rows.values() if r["task"] == "web")
    decoded = next(iter(wds.WebDataset(tars[:1], shardshuffle=False, empty_check=False).decode("pil")))
    assert isinstance(decoded["input.jpg"], Image.Image) and isinstance(decoded["txt"], str)


def test_takedown_by_id_and_url_leaves_every_export_and_the_card(built, rows, takedown, tmp_path):
    path, entries, withheld = takedown
    kept = {i: r for i, r in rows.items() if i not in withheld}
    expected = Counter(triple(r) for r in kept.values())

    # instructdiffusion: first without the list, then again into the same folder with it (replaced whole)
    export(built, tmp_path / "id", "instructdiffusion", split="all")
    result = export(built / "ieiw", tmp_path / "id", "instructdiffusion", takedown=entries, split="all")
    assert (result.written, result.withheld) == (len(kept), len(withheld))
    names = {p.name.rsplit("_", 1)[0] for p in (tmp_path / "id" / "images").iterdir()}
    assert names == set(kept) and not list(tmp_path.glob(".tmp-*"))
    meta = json.loads((tmp_path / "id" / "meta_infov1.json").read_text())
    prefix = "/mnt/external/tmp/2023/06/11/"
    assert Counter((sha((tmp_path / "id" / m["input"].removeprefix(prefix)).read_bytes()),
                    sha((tmp_path / "id" / m["edited"].removeprefix(prefix)).read_bytes()),
                    m["instruction"]) for m in meta) == expected

    result = export(built, tmp_path / "hf", "hf-instructpix2pix", takedown=entries)
    assert (result.written, result.withheld) == (len(kept), len(withheld))
    got = Counter()
    for f in sorted((tmp_path / "hf" / "data").glob("*.parquet")):
        for r in pq.read_table(f).to_pylist():
            got[(sha(r["input_image"]["bytes"]), sha(r["edited_image"]["bytes"]), r["edit_prompt"])] += 1
    assert got == expected

    run_ieiw("export", built, "--format", "webdataset", "--out", tmp_path / "wds", "--takedown", path)
    import webdataset as wds

    ids = [json.loads(s["json"])["id"] for s in
           wds.WebDataset(sorted(glob.glob(str(tmp_path / "wds" / "*.tar"))), shardshuffle=False, empty_check=False)]
    assert sorted(ids) == sorted(kept)

    # the card: counts without the withheld rows, and it says so
    try:
        run_ieiw("card", built / "ieiw", "--takedown", path)
        card = (built / "README.md").read_text()
        assert f"**{len(kept)} pairs.** {len(withheld)} further row(s) named by the takedown list are withheld" in card
        for task, count in Counter(r["task"] for r in kept.values()).items():
            assert f"| {task} | {count} |" in card
        for split, count in Counter(r["split"] for r in kept.values()).items():
            assert f"| {split} | {count} |" in card
    finally:
        write_card(built)
    assert f"**{len(rows)} pairs.**\n" in (built / "README.md").read_text()


def test_card_header_and_load_dataset_of_the_build_folder(built, rows, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    text = (built / "README.md").read_text()  # written by the build flow itself
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["license"] == "other" and front["task_categories"] == ["image-to-image"]
    assert front["size_categories"] == [size_category(len(rows))] == ["n<1K"] and front["pretty_name"]
    assert front["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train", "path": "ieiw/*.parquet"}]}]
    matched = {Path(p).name for spec in front["configs"][0]["data_files"] for p in glob.glob(str(built / spec["path"]))}
    shards = {e["shard"] for e in load_manifest(built / "ieiw")["units"].values()}
    assert matched == shards
    for section in ("What the embedded mode does not reproduce", "2309.03895", "LaMa", "LAION", "CLIP", "VGPhraseCut",
                    "| phrasecut |", "| reddit |", "`opencv-telea`", "`proxy-v1`", "the `split` column"):
        assert section in text, section

    ds = datasets.load_dataset(str(built), cache_dir=str(tmp_path / "cache"))
    assert list(ds) == ["train"] and len(ds["train"]) == len(rows)  # not candidates/, rejected/, scores/ ...
    first = ds["train"][0]
    assert isinstance(first["source_image"], Image.Image) and isinstance(first["target_image"], Image.Image)
    assert sorted(ds["train"]["id"]) == sorted(rows)


def test_size_categories_and_bad_targets(built, tmp_path):
    assert [size_category(n) for n in (0, 999, 1000, 9999, 10_000, 2_500_000)] == [
        "n<1K", "n<1K", "1K<n<10K", "1K<n<10K", "10K<n<100K", "1M<n<10M"]
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("not an export")
    with pytest.raises(ExportError, match="not an earlier ieiw export"):
        export(built, tmp_path / "busy", "webdataset")
    with pytest.raises(ExportError, match="unknown export format"):
        export(built, tmp_path / "x", "zip")
    proc = run_ieiw("export", built, "--format", "webdataset", "--out", tmp_path / "y", "--takedown",
                    tmp_path / "missing.txt", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().endswith("missing.txt")


def test_listing_a_post_withholds_its_edits_everywhere(built, rows, tmp_path):
    """A crawled edit's record is "<post>/<comment>": a takedown of the post id withholds its edits from
    exports and card counts, as the crawl itself and the report's galleries already did."""
    web = next(r for r in sorted(rows.values(), key=lambda r: r["id"]) if r["task"] == "web")
    post = web["origin"]["record_id"].split("/")[0]
    edits = {i for i, r in rows.items() if r["task"] == "web" and r["origin"]["record_id"].startswith(post + "/")}
    result = export(built, tmp_path / "hf", "hf-instructpix2pix", takedown={post})
    assert result.withheld == len(edits) >= 1 and result.written == len(rows) - len(edits)
