"""Data-loader benchmark: samples/s of the streaming shard dataset, and how much of a CPU tiny-model
training step is spent waiting for data.

    .venv/bin/python bench/loader.py --data out/ieiw --resolution 256 --workers 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader


def loader_throughput(data: str, resolution: int, batch_size: int, workers: int, seconds: float, tokenizer_dir: Path) -> dict:
    from transformers import CLIPTokenizer

    from ieiw.training.data import ClipTokenize, ShardPairs, index_shards

    tokenize = ClipTokenize(CLIPTokenizer.from_pretrained(tokenizer_dir))
    dataset = ShardPairs(index_shards(data), resolution=resolution, tokenize=tokenize, shuffle_buffer=256)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, prefetch_factor=4 if workers else None)
    it = iter(loader)
    next(it)  # worker start-up is not throughput
    samples, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        batch = next(it)
        samples += batch["source"].shape[0]
    elapsed = time.perf_counter() - start
    return {"samples": samples, "seconds": elapsed, "samples_per_s": samples / elapsed}


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
        fig = loader_throughput(args.data, args.resolution, args.batch_size, args.workers, args.seconds, tiny / "tokenizer")
        print(f"loader: {fig['samples_per_s']:.0f} samples/s at {args.resolution} px "
              f"({fig['samples']} samples in {fig['seconds']:.1f} s, {args.workers} workers, batch {args.batch_size})")
        if args.steps:
            wait = step_wait_share(args.data, args.steps, args.workers, Path(tmp) / "run")
            print(f"tiny CPU step (configs/train.tiny.yaml): {wait['step_s'] * 1000:.0f} ms/step, "
                  f"{100 * wait['wait_share']:.1f}% of it waiting on data")


if __name__ == "__main__":
    main()
