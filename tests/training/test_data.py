"""The streaming dataset: rank/worker split, weights, shared augmentation, resume skipping."""

from __future__ import annotations

import collections

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from ieiw.schemas.manifest import load_manifest
from ieiw.training.data import ShardPairs, augment_pair, index_shards, plan_epoch, repeat_count


def manifest_ids(folder) -> list[str]:
    manifest = load_manifest(folder)
    ids = []
    for entry in manifest["units"].values():
        ids += pq.read_table(folder / entry["shard"], columns=["id"]).column("id").to_pylist()
    return ids


def collect(dataset: ShardPairs, workers: int) -> list[tuple[str, int, int]]:
    loader = DataLoader(dataset, batch_size=None, num_workers=workers)
    return [(s["id"], s["slot"], s["epoch"]) for s in loader]


def test_two_ranks_two_workers_cover_every_row_once_per_epoch(stage_folder):
    """2 ranks x 2 real DataLoader workers, 2 epochs: disjoint readers, every listed row once per epoch."""
    groups = index_shards(stage_folder)
    expected = manifest_ids(stage_folder)
    assert len(expected) == 30 and len(set(expected)) == 30
    seen: list[tuple[str, int, int]] = []
    for rank in range(2):
        dataset = ShardPairs(groups, world_size=2, rank=rank, epochs=2, decode=False, shuffle_buffer=8)
        seen += collect(dataset, workers=2)
    assert {slot for _, slot, _ in seen} == {0, 1, 2, 3}
    for epoch in (0, 1):
        readers: dict[int, list[str]] = collections.defaultdict(list)
        for row_id, slot, e in seen:
            if e == epoch:
                readers[slot].append(row_id)
        everything = [i for ids in readers.values() for i in ids]
        assert sorted(everything) == sorted(expected)  # each listed row exactly once; the stray shard never
        assert all(7 <= len(ids) <= 8 for ids in readers.values())  # balanced to one row
    # Epochs re-deal row groups, so a reader does not see the same rows every epoch.
    by_epoch = [{i for i, slot, e in seen if slot == 0 and e == epoch} for epoch in (0, 1)]
    assert by_epoch[0] != by_epoch[1]


def test_loader_workers_forked_after_a_flow_in_this_process_exit_cleanly(stage_folder):
    """A flow run in this process starts Prefect's log shipper; a DataLoader worker forked afterwards
    inherits its thread-exit hook, whose assert fails in the child and makes it exit with code 1 unless
    ieiw.training.data drops that hook after a fork (a notebook that builds, then streams). Each worker
    must finish with code 0 and every row must arrive."""
    from prefect import flow, get_run_logger

    @flow
    def speak() -> str:
        get_run_logger().info("a log line for the API")  # starts the log shipper service here
        return "spoken"

    assert speak() == "spoken"
    import threading

    from prefect._internal.concurrency import services

    assert any(isinstance(getattr(getattr(h, "func", None), "__self__", None), services._QueueServiceBase)
               for h in threading._threading_atexits), "the flow left a service hook (else this proves nothing)"
    groups = index_shards(stage_folder)
    loader = DataLoader(ShardPairs(groups, epochs=1, decode=False), batch_size=None, num_workers=2,
                        persistent_workers=False)
    ids = [s["id"] for s in loader]
    assert sorted(ids) == sorted(manifest_ids(stage_folder))


def test_epochs_reshuffle_reader_assignment(stage_folder):
    groups = index_shards(stage_folder)
    a = plan_epoch(groups, 0, 0, 0, 2, shuffle=True)
    b = plan_epoch(groups, 0, 1, 0, 2, shuffle=True)
    assert [(s.path, s.group) for s in a] != [(s.path, s.group) for s in b]


def test_subset_filters_and_limit(stage_folder):
    reddit = index_shards(stage_folder, include_datasets=["reddit"])
    assert sum(len(g.rows) for g in reddit) == 11
    ids = {s["id"] for s in ShardPairs(reddit, epochs=1, decode=False)}
    assert len(ids) == 11
    for g in reddit:
        origins = pq.ParquetFile(g.path).read_row_group(g.group, columns=["origin"]).column("origin").to_pylist()
        assert {origins[r]["dataset"] for r in g.rows} == {"reddit"}
    limited = index_shards(stage_folder, limit=5)
    assert sum(len(g.rows) for g in limited) == 5
    some = set(list(ids)[:3])
    assert sum(len(g.rows) for g in index_shards(stage_folder, include_ids=some)) == 3


def test_source_weights_repeat_rows(stage_folder):
    groups = index_shards(stage_folder)
    dataset = ShardPairs(groups, epochs=1, decode=False, source_weights={"reddit": 2.0, "phrasecut": 0.5}, seed=3)
    counts = collections.Counter(s["id"] for s in dataset)
    reddit = set(s["id"] for s in ShardPairs(index_shards(stage_folder, include_datasets=["reddit"]), epochs=1, decode=False))
    assert all(counts[i] == 2 for i in reddit)
    phrasecut_counts = [c for i, c in counts.items() if i not in reddit]
    assert set(phrasecut_counts) <= {1} and 0 < len(phrasecut_counts) < 19
    # The hash-based choice keeps the requested fraction.
    draws = [repeat_count(f"row{i}", 1.3, seed=0, epoch=0) for i in range(10000)]
    assert abs(np.mean(draws) - 1.3) < 0.02 and set(draws) == {1, 2}


def test_same_crop_and_flip_for_source_and_target():
    """target = 255 - source, so after a shared transform the pair still sums to 255 everywhere."""
    rng0 = np.random.default_rng(0)
    array = rng0.integers(0, 256, (60, 90, 3), dtype=np.uint8)
    array[:, :45] = 0  # left/right asymmetry makes flips visible
    source, target = Image.fromarray(array), Image.fromarray(255 - array)
    outputs = []
    for seed in range(12):
        src, tgt = augment_pair(source, target, 32, np.random.default_rng(seed), max_zoom=1.5)
        assert src.shape == tgt.shape == (3, 32, 32) and src.dtype == torch.uint8
        assert (src.int() + tgt.int() - 255).abs().max() <= 1
        outputs.append(src)
    assert len({o.numpy().tobytes() for o in outputs}) > 6  # the crops/flips really are random
    flips = [bool((o[:, :, :8] == 0).all()) for o in outputs]  # the black half is on the left unless flipped
    assert any(flips) and not all(flips)


def test_samples_are_resized_and_tokenised(stage_folder, tiny_sd):
    from transformers import CLIPTokenizer

    from ieiw.training.data import ClipTokenize

    tokenizer = CLIPTokenizer.from_pretrained(tiny_sd / "tokenizer")
    dataset = ShardPairs(index_shards(stage_folder), resolution=48, tokenize=ClipTokenize(tokenizer), epochs=1)
    batch = next(iter(DataLoader(dataset, batch_size=4, num_workers=0)))
    assert batch["source"].shape == batch["target"].shape == (4, 3, 48, 48)
    assert batch["source"].dtype == torch.uint8
    assert batch["input_ids"].shape == (4, 77)
    assert tokenizer.decode(batch["input_ids"][0], skip_special_tokens=True).replace(" ", "") == batch["instruction"][0].replace(" ", "")
    assert not torch.equal(batch["source"], batch["target"])  # the square is only in the source


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_skips_exactly_the_consumed_batches(stage_folder, workers):
    groups = index_shards(stage_folder)

    def batches(skip: int, n: int) -> list[dict]:
        dataset = ShardPairs(groups, resolution=32, seed=5, shuffle_buffer=6)
        dataset.resume_from(skip, 3)
        loader = iter(DataLoader(dataset, batch_size=3, num_workers=workers))
        return [next(loader) for _ in range(n)]

    full = batches(0, 13)  # crosses an epoch boundary (30 rows / 3 per batch / workers)
    resumed = batches(7, 6)
    for a, b in zip(full[7:], resumed):
        assert a["id"] == b["id"]
        assert torch.equal(a["source"], b["source"]) and torch.equal(a["target"], b["target"])


def test_a_row_with_undecodable_images_is_skipped_not_fatal(tmp_path):
    from ieiw.schemas.manifest import Manifest
    from ieiw.schemas.rows import image_cell, rows_to_table
    from ieiw.schemas.shards import write_shard
    from trainkit import make_row

    rows = [make_row(i, "reddit") for i in range(4)]
    rows[2]["source_image"] = image_cell(b"not an image at all", "broken.jpg")
    shard = write_shard(rows_to_table(rows), tmp_path / "s.parquet")
    Manifest(tmp_path, "pairs", {"t": 1}).record("u0", shard, "f", {})
    got = [s["id"] for s in ShardPairs(index_shards(tmp_path), resolution=32, epochs=1)]
    assert sorted(got) == sorted(r["id"] for i, r in enumerate(rows) if i != 2)


def test_epochs_count_weighted_rows(stage_folder):
    from ieiw.training.config import load_config
    from ieiw.training.train import total_steps, weighted_row_count

    weights = {"reddit": 2.0, "phrasecut": 0.5}
    dataset = ShardPairs(index_shards(stage_folder), source_weights=weights, decode=False)
    assert weighted_row_count(dataset) == 11 * 2.0 + 19 * 0.5
    config = load_config(None, ["train.epochs=2", "train.max_steps=null", "train.batch_size=4"])
    assert total_steps(config, weighted_row_count(dataset), world_size=2) == 8  # ceil(2 * 31.5 / (4 * 2))


def test_schema_v1_folder_still_trains():
    """A folder written by the schema-v1 code (committed fixture) indexes and streams decoded pairs."""
    from pathlib import Path

    v1 = Path(__file__).resolve().parents[1] / "data" / "v1" / "ieiw"
    assert load_manifest(v1)["schema_version"] == 1
    groups = index_shards(v1, include_datasets=["phrasecut"], include_tasks=["remove", "add"])
    samples = list(ShardPairs(groups, resolution=32, epochs=1, shuffle_buffer=4))
    assert len(samples) == 32 and len({s["id"] for s in samples}) == 32
    first = samples[0]
    assert first["source"].shape == first["target"].shape == (3, 32, 32) and first["source"].dtype == torch.uint8
    assert first["instruction"]


def test_the_loader_raises_no_avoidable_warning(stage_folder):
    """torch warned "The given NumPy array is not writable" in every loader worker (a read-only view of a
    decoded image passed to torch.from_numpy). A fresh process, so torch's warn-once state is clean."""
    import subprocess
    import sys

    code = ("from ieiw.training.data import ShardPairs, index_shards\n"
            f"samples = list(ShardPairs(index_shards({str(stage_folder)!r}), resolution=32, epochs=1))\n"
            "assert samples\n")
    proc = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
