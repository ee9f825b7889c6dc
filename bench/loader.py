"""Data-loader benchmark: samples/s of the streaming shard dataset against a bare loop that decodes and
resizes the same images with the same workers (the limit the loader can approach; goal >= 0.8 of it),
and how much of a CPU tiny-model training step is spent waiting for data.

    .venv/bin/python bench/loader.py --data out/ieiw --resolution 256 --workers 2
    .venv/bin/python bench/loader.py --data out/ieiw,out/segmentation    # mixed folders, official weights
    .venv/bin/python bench/loader.py --data out/multitask/keypoints,out/multitask/segmentation,out/multitask/enhancement

The loader is measured twice: with its per-sample redraws (the default: keypoint rows cut as HRNet person crops
with their discs drawn on the crop, COCO-Stuff classes, referring sentences and prompts drawn anew;
ieiw.training.redraw) and with ``data.redraw: false`` (the stored targets). Both against the same bare loop,
which decodes both stored images of every row: the redraws decode only the source (they draw the target).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader


def folders(data: str) -> list[str]:
    return [part for part in data.split(",") if part]


class BareDecode(torch.utils.data.IterableDataset):
    """The floor: stream the same row groups (worker w takes every n-th), decode each row's two images
    (JPEG draft, as the loader does) and cut and resize them to ``resolution`` square with the loader's own
    pixel code (:func:`ieiw.training.data.augment_pair`, central window); nothing else: no id, instruction
    or origin columns, no weights, shuffle buffer, per-sample seeding, flip or tokens."""

    def __init__(self, data: str, resolution: int):
        from ieiw.training.data import index_shards

        self.groups = index_shards(folders(data))
        self.resolution = resolution

    def rows(self) -> int:
        return sum(len(g.rows) for g in self.groups)

    def __iter__(self):
        import numpy as np
        import pyarrow.parquet as pq
        from PIL import Image

        from ieiw.imageio import decode_image
        from ieiw.training.data import augment_pair

        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        rng = np.random.default_rng(worker)
        while True:
            for group in self.groups[worker::workers]:
                table = pq.ParquetFile(group.path).read_row_group(group.group, columns=["source_image", "target_image"])
                for row in group.rows:
                    source, target = (decode_image(table[column][int(row)]["bytes"].as_py(), self.resolution)
                                      for column in ("source_image", "target_image"))
                    if target.size != source.size:
                        target = target.resize(source.size, Image.BICUBIC)
                    # the same pixel work as the loader's (one crop window, torch's uint8 antialiased resize)
                    src, tgt = augment_pair(source, target, self.resolution, rng, random_crop=False, random_flip=False)
                    yield {"source": src, "target": tgt}


def bare_throughput(data: str, resolution: int, batch_size: int, workers: int, seconds: float) -> dict:
    loader = DataLoader(BareDecode(data, resolution), batch_size=batch_size, num_workers=workers,
                        prefetch_factor=4 if workers else None)
    return _timed(iter(loader), seconds)


def _timed(it, seconds: float) -> dict:
    next(it)  # worker start-up is not throughput
    samples, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        batch = next(it)
        samples += batch["source"].shape[0]
    elapsed = time.perf_counter() - start
    return {"samples": samples, "seconds": elapsed, "samples_per_s": samples / elapsed}


def loader_throughput(data: str, resolution: int, batch_size: int, workers: int, seconds: float, tokenizer_dir: Path,
                      redraw: bool = True) -> dict:
    from transformers import CLIPTokenizer

    from ieiw.training.config import DataConfig
    from ieiw.training.data import ClipTokenize, ShardPairs, index_shards

    tokenize = ClipTokenize(CLIPTokenizer.from_pretrained(tokenizer_dir))
    dataset = ShardPairs(index_shards(folders(data)), resolution=resolution, tokenize=tokenize, shuffle_buffer=256,
                         source_weights=DataConfig().source_weights, redraw=redraw)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, prefetch_factor=4 if workers else None)
    return _timed(iter(loader), seconds)


def step_wait_share(data: str, steps: int, workers: int, out: Path) -> dict:
    from ieiw.training.config import load_config
    from ieiw.training.train import train

    repo = Path(__file__).resolve().parents[1]
    config = load_config(repo / "configs/train.tiny.yaml", [
        f"data.folder={data}", f"output_dir={out}", f"train.max_steps={steps}", "validation.every_steps=0",
        "logging.report_to=none", f"checkpoint.every_steps={steps * 10}", f"data.num_workers={workers}",
    ])
    result = train(config)
    total = result.data_wait_s + result.compute_s
    return {"steps": steps, "step_s": total / steps, "wait_share": result.data_wait_s / total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="out/ieiw")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--steps", type=int, default=30, help="tiny-model training steps for the wait share (0: skip)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        from ieiw.training.tiny import build_tiny_sd

        tiny = build_tiny_sd("out/tiny-sd15")
        bare = bare_throughput(args.data, args.resolution, args.batch_size, args.workers, args.seconds)
        figures = {redraw: loader_throughput(args.data, args.resolution, args.batch_size, args.workers, args.seconds,
                                             tiny / "tokenizer", redraw) for redraw in (True, False)}
        print(f"data: {args.data} ({BareDecode(args.data, args.resolution).rows()} rows), {args.resolution} px, "
              f"{args.workers} workers, batch {args.batch_size}")
        print(f"bare decode + resize (the limit): {bare['samples_per_s']:.0f} samples/s")
        for redraw, fig in figures.items():
            what = "redraws + HRNet person crops" if redraw else "stored targets (data.redraw: false)"
            print(f"loader (ShardPairs, weights, shuffle, crop/flip, tokens; {what}): {fig['samples_per_s']:.0f} "
                  f"samples/s = {fig['samples_per_s'] / bare['samples_per_s']:.2f} of the limit (goal >= 0.8"
                  f"{', and >= 400 samples/s' if redraw else ''})")
        if args.steps:
            wait = step_wait_share(args.data, args.steps, args.workers, Path(tmp) / "run")
            print(f"tiny CPU step (configs/train.tiny.yaml): {wait['step_s'] * 1000:.0f} ms/step, "
                  f"{100 * wait['wait_share']:.1f}% of it waiting on data")


if __name__ == "__main__":
    main()
