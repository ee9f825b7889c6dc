"""The trainer, in diffusers' order: config, Accelerator, seed, models, freeze, EMA, hooks, optimizer,
data, prepare, resume, loop, export.

Multi-GPU / multi-node: ``accelerate launch -m ieiw.training.train --config ...``; a plain
``python -m ieiw.training.train`` (or ``ieiw train``) runs one process.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ieiw.training.config import Config, dump_config, load_config
from ieiw.training.model import TINY_HINT, TrainingSetupError

logger = logging.getLogger("ieiw.training")


@dataclass
class TrainResult:
    output_dir: Path
    global_step: int
    losses: list[float] = field(default_factory=list)
    pipeline_dir: Path | None = None
    data_wait_s: float = 0.0  # time the loop waited for the next batch
    compute_s: float = 0.0  # time spent in the training step itself


def preflight(config: Config) -> None:
    """Fail in one line, before anything heavy, on what the user must fix."""
    from ieiw.schemas import storage
    from ieiw.schemas.manifest import manifest_path

    if config.model.require_gpu and not torch.cuda.is_available():
        raise TrainingSetupError(f"no CUDA GPU visible and this config sets model.require_gpu; {TINY_HINT}")
    if config.train.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise TrainingSetupError(f"train.mixed_precision=fp16 needs a GPU (use no or bf16 on CPU); {TINY_HINT}")
    for folder in config.data.folders():
        if not storage.exists(manifest_path(folder)):  # a folder or a URL (s3://bucket/out/ieiw)
            raise TrainingSetupError(f"no shards at {folder} (no manifest.json): run `make build` first or set data.folder")


def build_dataset(config: Config, tokenizer: Any, rank: int, world_size: int) -> Any:
    from ieiw.training.data import ClipTokenize, ShardPairs, index_shards

    d = config.data
    ids = None
    if d.include_ids_file:
        ids = {line.strip() for line in Path(d.include_ids_file).read_text().splitlines() if line.strip()}
    groups = index_shards(d.folders(), d.include_datasets, d.include_tasks, ids, d.limit)
    return ShardPairs(
        groups,
        resolution=d.resolution,
        tokenize=ClipTokenize(tokenizer),
        seed=config.seed,
        rank=rank,
        world_size=world_size,
        shuffle_buffer=d.shuffle_buffer,
        source_weights=d.source_weights,
        default_weight=d.default_weight,
        max_zoom=d.max_zoom,
        random_crop=d.random_crop,
        random_flip=d.random_flip,
        flip_probabilities=d.flip,
        default_flip=d.default_flip,
        crop_policies=d.crop,
        default_crop=d.default_crop,
        text_only=config.stage == "adapt",
        caption_suffixes=d.caption_suffixes,
        redraw=d.redraw,
    )


def total_steps(config: Config, weighted_rows: float, world_size: int) -> int:
    """Optimizer steps: ``train.epochs`` over the (weighted) rows when set, else ``train.max_steps``."""
    t = config.train
    if t.epochs is not None:
        per_step = t.batch_size * world_size * t.gradient_accumulation_steps
        return max(1, math.ceil(t.epochs * weighted_rows / per_step))
    return int(t.max_steps or 0)


def weighted_row_count(dataset: Any) -> float:
    """Expected rows per epoch after source weights (reads only the small origin/task columns)."""
    from ieiw.schemas import storage
    from ieiw.training.keys import lookup_by_source

    if not dataset.source_weights and dataset.default_weight == 1.0:
        return float(dataset.num_rows)
    total = 0.0
    for group in dataset.groups:
        meta = storage.parquet_file(group.path).read_row_group(group.group, columns=["task", "origin"]).take(group.rows).to_pydict()
        for task, origin in zip(meta["task"], meta["origin"]):
            total += lookup_by_source(dataset.source_weights, (origin or {}).get("dataset"), task, dataset.default_weight)
    return total


def validation_pairs(config: Config, tokenizer: Any, n: int) -> list[dict[str, Any]]:
    """``n`` held-out rows (``split == "val"``, the rows ``ieiw eval`` scores), centre-cropped, unflipped:
    the same pairs at every validation. Data without held-out rows (no split column, or none ``val``)
    gives the first ``n`` rows instead, with a log line saying so."""
    from ieiw.training.data import ClipTokenize, ShardPairs, index_shards
    from ieiw.training.evaluate import HELD_OUT, split_groups

    d = config.data
    groups = split_groups(d.folders(), HELD_OUT, d.include_datasets, d.include_tasks, n)
    if groups:
        logger.info("validation: %d held-out (split == %s) rows", sum(len(g.rows) for g in groups), HELD_OUT)
    else:
        logger.info("validation: no split == %s rows in %s; using the first %d rows", HELD_OUT, d.folders(), n)
        groups = index_shards(d.folders(), d.include_datasets, d.include_tasks, None, n)
    dataset = ShardPairs(
        groups, d.resolution, ClipTokenize(tokenizer), shuffle_buffer=0, random_crop=False,
        random_flip=False, epochs=1, text_only=config.stage == "adapt", redraw=False,  # the stored targets
    )
    return list(dataset)[:n]


def run_validation(
    config: Config, step: int, pairs: list[dict[str, Any]], unet: Any, comps: Any, ema: Any, tracker: Any
) -> list[Path]:
    """Edit the validation pairs with the EMA weights; save source | edit | target strips as PNGs."""
    import numpy as np
    from PIL import Image

    from ieiw.training.edit import edit_official

    out = Path(config.output_dir) / "validation" / f"step-{step:07d}"
    out.mkdir(parents=True, exist_ok=True)
    if ema is not None:
        ema.store(unet.parameters())
        ema.copy_to(unet.parameters())
    unet.eval()
    written = []
    try:
        for i, pair in enumerate(pairs):
            if config.stage == "adapt":
                continue  # text-to-image sampling is the pipeline's job; adapt validates by loss only
            source = Image.fromarray(pair["source"].permute(1, 2, 0).numpy())
            edited = edit_official(
                unet, comps.vae, comps.text_encoder, comps.tokenizer, comps.noise_scheduler.config, source, pair["instruction"],
                config.validation.num_inference_steps, config.validation.text_guidance,
                config.validation.image_guidance, seed=config.seed + i,
            )
            target = pair["target"].permute(1, 2, 0).numpy()
            strip = np.concatenate([np.asarray(source), np.asarray(edited), target], axis=1)
            path = out / f"{i:02d}.png"
            Image.fromarray(strip).save(path)
            written.append(path)
            if tracker is not None:
                tracker.writer.add_image(f"validation/{i:02d}", strip, step, dataformats="HWC")
    finally:
        if ema is not None:
            ema.restore(unet.parameters())
        unet.train()
    return written


def train_step(accelerator: Any, unet: Any, optimizer: Any, lr_scheduler: Any, t: Any, loss_fn: Any,
               loss_args: tuple) -> float:
    """One micro-batch of the loop: loss, backward, clipping when set, optimizer and schedule step (accelerate
    holds the update back until the accumulation is complete). Returns its share of the step's mean loss over
    the processes. Its own function so that bench/gpu.py times exactly this against diffusers' step."""
    with accelerator.accumulate(unet):
        loss = loss_fn(*loss_args)
        share = accelerator.gather(loss.detach()[None]).mean().item() / t.gradient_accumulation_steps
        accelerator.backward(loss)
        if accelerator.sync_gradients and t.max_grad_norm > 0:
            accelerator.clip_grad_norm_(unet.parameters(), t.max_grad_norm)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return share


def train(config: Config, resume: str | None = None) -> TrainResult:
    """Run one stage end to end; returns the step reached and the losses this process logged."""
    from accelerate import Accelerator
    from accelerate.utils import GradScalerKwargs, ProjectConfiguration, set_seed
    from diffusers import UNet2DConditionModel
    from diffusers.optimization import get_scheduler
    from torch.utils.data import DataLoader

    from ieiw.training.checkpoints import latest_checkpoint, make_hooks, read_state, resolve_resume
    from ieiw.training.dropout import dropout_probs
    from ieiw.training.export import export_pipeline
    from ieiw.training.model import edit_loss, freeze, load_components, make_ema, null_text_embedding, t2i_loss

    preflight(config)
    output_dir = Path(config.output_dir)
    if not resume and latest_checkpoint(output_dir) is not None:
        raise TrainingSetupError(
            f"{output_dir} already holds checkpoints: add --resume latest to continue, or set a new output_dir"
        )
    t = config.train
    accelerator = Accelerator(
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        mixed_precision=t.mixed_precision,
        # the official fp16 loss scale starts at 2^13 (DeepSpeed initial_scale_power 13), not torch's 2^16
        kwargs_handlers=[GradScalerKwargs(init_scale=t.fp16_initial_scale)],
        log_with=None if config.logging.report_to == "none" else config.logging.report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    set_seed(config.seed)
    if t.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True

    comps = load_components(config)
    unet = comps.unet
    freeze(comps.vae, comps.text_encoder)
    unet.train()
    if t.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
    for frozen in (comps.vae, comps.text_encoder):  # only cast when needed (diffusers warns on fp32->fp32)
        frozen.to(accelerator.device) if weight_dtype == torch.float32 else frozen.to(accelerator.device, dtype=weight_dtype)

    ema = make_ema(config.ema, unet)
    if ema is not None:
        ema.to(accelerator.device)
    save_hook, load_hook = make_hooks(accelerator, ema, UNet2DConditionModel)
    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)

    optimizer = torch.optim.AdamW(
        unet.parameters(), lr=t.learning_rate, betas=(t.adam_beta1, t.adam_beta2), weight_decay=t.weight_decay, eps=t.adam_epsilon
    )

    # The loader is not passed through accelerator.prepare: for an IterableDataset accelerate would
    # either read everything on rank 0 and dispatch, or make every rank read every row. Our dataset
    # splits rows across ranks and workers itself (see data.py).
    dataset = build_dataset(config, comps.tokenizer, accelerator.process_index, accelerator.num_processes)
    max_steps = total_steps(config, weighted_row_count(dataset), accelerator.num_processes)
    lr_scheduler = get_scheduler(
        t.lr_scheduler, optimizer=optimizer, num_warmup_steps=t.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=max_steps * accelerator.num_processes,
    )
    unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)

    global_step = 0
    checkpoint = resolve_resume(output_dir, resume)
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        global_step = int(read_state(checkpoint)["global_step"])
        dataset.resume_from(global_step * t.gradient_accumulation_steps, t.batch_size)
        logger.info("resumed from %s at step %d", checkpoint, global_step)
    elif resume == "latest":
        logger.info("--resume latest: no checkpoint in %s, starting fresh", output_dir)
    if accelerator.is_main_process:
        trim_loss_log(output_dir / "losses.jsonl", global_step)

    loader = DataLoader(
        dataset, batch_size=t.batch_size, num_workers=config.data.num_workers, pin_memory=torch.cuda.is_available(),
        persistent_workers=False, prefetch_factor=4 if config.data.num_workers > 0 else None,
        # Its own generator: creating an iterator draws a worker seed, which must not come from the
        # global RNG (a resumed run creates its iterator at a different point of that stream).
        generator=torch.Generator().manual_seed(config.seed),
    )
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.resolved.yaml").write_text(dump_config(config))
        accelerator.init_trackers(f"ieiw-{config.stage}", config={"stage": config.stage, "max_steps": max_steps})
    tracker = None
    if accelerator.is_main_process and config.logging.report_to == "tensorboard":
        tracker = accelerator.get_tracker("tensorboard", unwrap=False)

    probs = dropout_probs(config.dropout)
    null_text = null_text_embedding(comps.text_encoder, comps.tokenizer)
    loss_fn = t2i_loss if config.stage == "adapt" else edit_loss
    val_pairs = []
    if config.validation.every_steps and accelerator.is_main_process:
        val_pairs = validation_pairs(config, comps.tokenizer, config.validation.num_pairs)

    losses: list[float] = []
    loss_log = output_dir / "losses.jsonl"
    step_loss = 0.0
    wait_s = compute_s = 0.0
    tick = time.perf_counter()
    ids_log = None
    if config.logging.sample_ids:
        (output_dir / "sample_ids").mkdir(parents=True, exist_ok=True)
        ids_log = output_dir / "sample_ids" / f"rank-{accelerator.process_index}.txt"
    from ieiw.progress import bar

    progress = bar(max_steps, "train", "step")  # a terminal only, main process only (no bar under CI or logs)
    progress.disable = progress.disable or not accelerator.is_main_process
    progress.update(global_step)
    if global_step < max_steps:
        for batch in loader:
            got = time.perf_counter()
            wait_s += got - tick
            if ids_log is not None:
                with open(ids_log, "a") as handle:
                    handle.writelines(f"{i}\n" for i in batch["id"])
            step_loss += train_step(accelerator, unet, optimizer, lr_scheduler, t, loss_fn,
                                    (batch, unet, comps.vae, comps.text_encoder, comps.noise_scheduler, null_text,
                                     probs, weight_dtype))
            tick = time.perf_counter()
            compute_s += tick - got
            if not accelerator.sync_gradients:
                continue
            if ema is not None:
                ema.step(unet.parameters())
            global_step += 1
            progress.update(1)
            losses.append(step_loss)
            if accelerator.is_main_process:
                with open(loss_log, "a") as handle:
                    handle.write(json.dumps({"step": global_step, "loss": step_loss}) + "\n")
            if global_step % config.logging.every_steps == 0 or global_step == max_steps:
                accelerator.log(
                    {"train/loss": step_loss, "train/lr": lr_scheduler.get_last_lr()[0],
                     "perf/data_wait_share": wait_s / max(wait_s + compute_s, 1e-9)},
                    step=global_step,
                )
                logger.info("step %d/%d loss %.4f data-wait %.0f%%", global_step, max_steps, step_loss,
                            100 * wait_s / max(wait_s + compute_s, 1e-9))
            step_loss = 0.0
            if global_step % config.checkpoint.every_steps == 0 or global_step == max_steps:
                save_checkpoint(accelerator, output_dir, global_step, config)
            if config.validation.every_steps and global_step % config.validation.every_steps == 0 and accelerator.is_main_process:
                with torch.random.fork_rng(devices=[]):  # validation must not shift the training noise
                    run_validation(config, global_step, val_pairs, accelerator.unwrap_model(unet), comps, ema, tracker)
            if global_step >= max_steps:
                break
            tick = time.perf_counter()
    progress.close()

    accelerator.wait_for_everyone()
    pipeline_dir = None
    if accelerator.is_main_process:
        pipeline_dir = export_pipeline(
            output_dir / "pipeline", accelerator.unwrap_model(unet), _fp32(comps.vae), _fp32(comps.text_encoder),
            comps.tokenizer, comps.noise_scheduler, ema, config.stage,
        )
        logger.info("exported %s", pipeline_dir)
    accelerator.end_training()
    return TrainResult(output_dir, global_step, losses, pipeline_dir, wait_s, compute_s)


def trim_loss_log(path: Path, last_step: int) -> None:
    """Keep the loss lines up to the step we (re)start from: a killed run may have logged past its checkpoint."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= last_step]
    path.write_text("".join(line + "\n" for line in kept))


def _fp32(module: Any) -> Any:
    return module if module.dtype == torch.float32 else module.to(torch.float32)


def save_checkpoint(accelerator: Any, output_dir: Path, step: int, config: Config) -> Path:
    from ieiw.training.checkpoints import prune, write_state

    folder = output_dir / f"checkpoint-{step}"
    if accelerator.is_main_process:
        prune(output_dir, config.checkpoint.total_limit)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(folder))
    if accelerator.is_main_process:
        write_state(folder, {"global_step": step, "stage": config.stage})  # written last: marks it complete
    accelerator.wait_for_everyone()
    return folder


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ieiw train", description="Train InstructDiffusion on IEIW shards.")
    parser.add_argument("--config", default="configs/train.sd15.yaml", help="training YAML (configs/train.tiny.yaml for CPU)")
    parser.add_argument("--data", default=None,
                        help="stage folder with manifest.json, or several comma-separated to mix (overrides data.folder)")
    parser.add_argument("--output-dir", default=None, help="overrides output_dir")
    parser.add_argument("--stage", choices=["edit", "align", "adapt"], default=None, help="overrides stage")
    parser.add_argument("--resume", default=None, help="'latest' or a checkpoint folder")
    parser.add_argument("--max-steps", type=int, default=None, help="overrides train.max_steps")
    parser.add_argument("--check", action="store_true",
                        help="only check GPU, weights and data (one-line error, exit 2), then exit 0; `make train` runs this first")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="any config key, e.g. --set train.batch_size=8 (repeatable)")
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data.folder={args.data}")
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    if args.stage:
        overrides.append(f"stage={args.stage}")
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    return load_config(args.config, overrides)


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``ieiw train`` and ``accelerate launch -m ieiw.training.train``."""
    from ieiw.schemas.config import ConfigError

    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
        if args.check:
            preflight(config)
            from ieiw.training.model import check_weights

            check_weights(config.model)
            return 0
        result = train(config, resume=args.resume)
    except (TrainingSetupError, FileNotFoundError) as exc:
        print(f"ieiw train: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"ieiw train: {exc}", file=sys.stderr)
        return 2
    print(f"ieiw train: step {result.global_step}, pipeline at {result.pipeline_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
