"""Streaming pairs from the Parquet shards: an ``IterableDataset`` that never loads a shard whole.

Hand-written rather than webdataset/torchdata because the unit of truth is our manifest (a list of
Parquet shards with row groups), and because exact resume needs every random choice to be a pure
function of (seed, epoch, slot, position), which those libraries do not promise.

How a stream is cut, per epoch:
1. The manifest's row groups (after subset filters) are permuted with the epoch's seed.
2. The concatenated rows are cut into ``world_size * num_workers`` contiguous, near-equal ranges, one
   per (rank, worker) "slot": disjoint, covering every row once, and a worker opens at most two
   row groups it only partly reads. Different epochs give a slot different row groups.
3. Each row is repeated by its per-source weight (the official ``sample_weight``: 2.0 = twice,
   0.5 = half of the rows, chosen by a hash so a resume sees the same choice), then goes through a
   shuffle buffer that holds only encoded bytes.
4. Decode, shared resize / random crop / flip, tokenise: randomness seeded by (seed, slot, position).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from ieiw.imageio import decode_image, decode_mask
from ieiw.schemas import storage
from ieiw.schemas.manifest import load_manifest
from ieiw.training.crops import DEFAULT_CROP, OFFICIAL_CROP, Box, crop_policy, crop_window, mask_box
from ieiw.training.flips import DEFAULT_FLIP, OFFICIAL_FLIP, flip_rule, swap_sides
from ieiw.training.keys import lookup_by_source
from ieiw.training.redraw import Drawn, keypoint_sample, overlay_sample, pick_prompt, redraw_material

Tokenize = Callable[[str], torch.Tensor]
logger = logging.getLogger(__name__)


def drop_inherited_prefect_exit_hooks() -> int:
    """In a forked child (a DataLoader worker), forget the thread-exit hooks of the parent's Prefect services.

    Prefect 3 registers one hook per background service it starts (the log and event shippers of a flow
    run in this process) with ``threading._register_atexit``. After a fork it resets those services in
    the child but leaves the hooks, and at the child's exit each hook fails an assert: a DataLoader worker
    forked from a process that ran a flow (a notebook, a test session) exits with code 1 after finishing
    its work, which torch reports as a crashed worker. The child never sends anything through the
    parent's services, so their hooks have nothing to do there. Returns how many hooks were dropped.
    """
    services = sys.modules.get("prefect._internal.concurrency.services")
    hooks = getattr(threading, "_threading_atexits", None)  # CPython's list of those hooks (3.9+)
    base = getattr(services, "_QueueServiceBase", None)
    if base is None or not isinstance(hooks, list):
        return 0

    def prefect_service_hook(hook: Any) -> bool:
        return isinstance(getattr(getattr(hook, "func", None), "__self__", None), base)

    kept = [hook for hook in hooks if not prefect_service_hook(hook)]
    dropped = len(hooks) - len(kept)
    hooks[:] = kept
    return dropped


if hasattr(os, "register_at_fork"):  # every fork of a process that streams pairs: DataLoader workers
    os.register_at_fork(after_in_child=drop_inherited_prefect_exit_hooks)


@dataclass(frozen=True)
class RowGroup:
    """Rows ``rows`` (indices inside the row group) of one row group of one shard."""

    path: str
    group: int
    rows: np.ndarray  # int64 indices inside the row group, ascending


@dataclass(frozen=True)
class Segment:
    """What one slot reads from one row group in one epoch."""

    path: str
    group: int
    rows: np.ndarray


def index_shards(
    folder: str | Path | Sequence[str | Path],
    include_datasets: Sequence[str] | None = None,
    include_tasks: Sequence[str] | None = None,
    include_ids: set[str] | None = None,
    limit: int | None = None,
) -> list[RowGroup]:
    """The manifest's row groups in unit order, with the rows the subset filters keep; several folders
    (mixed training data: ``ieiw/``, ``segmentation/``, ...) one after the other.

    Only footers are read unless a filter needs the small id/task/origin columns; images are never read.
    """
    if not isinstance(folder, str | Path) and not storage.is_location(folder):
        groups: list[RowGroup] = []
        for one in folder:
            left = None if limit is None else limit - sum(len(g.rows) for g in groups)
            if left is not None and left <= 0:
                break
            groups += index_shards(one, include_datasets, include_tasks, include_ids, left)
        return groups
    folder = storage.location(folder)  # a local folder or a URL (s3://bucket/out/ieiw): ranged reads of footers
    manifest = load_manifest(folder)
    filtered = include_datasets is not None or include_tasks is not None or include_ids is not None
    groups: list[RowGroup] = []
    kept = 0
    for unit in sorted(manifest["units"]):
        path = folder / manifest["units"][unit]["shard"]
        pf = storage.parquet_file(path)
        for g in range(pf.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            rows = np.arange(n, dtype=np.int64)
            if filtered:
                meta = pf.read_row_group(g, columns=["id", "task", "origin"]).to_pydict()
                keep = np.ones(n, dtype=bool)
                if include_datasets is not None:
                    keep &= np.array([(o or {}).get("dataset") in include_datasets for o in meta["origin"]], bool)
                if include_tasks is not None:
                    keep &= np.array([t in include_tasks for t in meta["task"]], bool)
                if include_ids is not None:
                    keep &= np.array([i in include_ids for i in meta["id"]], bool)
                rows = rows[keep]
            if limit is not None:
                rows = rows[: max(0, limit - kept)]
            if len(rows):
                groups.append(RowGroup(str(path), g, rows))
                kept += len(rows)
            if limit is not None and kept >= limit:
                return groups
    return groups


def plan_epoch(groups: Sequence[RowGroup], seed: int, epoch: int, slot: int, num_slots: int, shuffle: bool) -> list[Segment]:
    """The segments slot ``slot`` of ``num_slots`` reads in ``epoch`` (see the module docstring)."""
    order = np.arange(len(groups))
    if shuffle:
        order = np.random.default_rng([seed, epoch, 0x5EED]).permutation(len(groups))
    sizes = np.array([len(groups[i].rows) for i in order], dtype=np.int64)
    total = int(sizes.sum())
    lo, hi = total * slot // num_slots, total * (slot + 1) // num_slots
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]) if len(sizes) else np.zeros(0, np.int64)
    segments = []
    for i, start, size in zip(order, starts, sizes):
        a, b = max(lo, start), min(hi, start + size)
        if a < b:
            group = groups[i]
            segments.append(Segment(group.path, group.group, group.rows[a - start : b - start]))
    return segments


def repeat_count(row_id: str, weight: float, seed: int, epoch: int) -> int:
    """How often a row appears this epoch: floor(weight), plus one with probability frac(weight).

    A hash (not a stream RNG) decides, so the answer does not depend on what was read before.
    """
    whole = math.floor(weight)
    frac = weight - whole
    if frac <= 0:
        return whole
    u = zlib.crc32(f"{seed}:{epoch}:{row_id}".encode()) / 2**32
    return whole + int(u < frac)


def _open_rgb(data: bytes, min_side: int) -> Image.Image:
    """Decode with the project's one image policy; JPEGs at a reduced scale where that is enough."""
    return decode_image(data, min_side)


def augment_pair(
    source: Image.Image,
    target: Image.Image,
    resolution: int,
    rng: np.random.Generator,
    max_zoom: float = 1.0,
    random_crop: bool = True,
    random_flip: bool | float = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same resize, crop and flip for both images; returns two uint8 CHW tensors (see
    :func:`augment_pair_flipped`)."""
    source_tensor, target_tensor, _ = augment_pair_flipped(source, target, resolution, rng, max_zoom, random_crop,
                                                           random_flip)
    return source_tensor, target_tensor


def augment_pair_flipped(
    source: Image.Image,
    target: Image.Image,
    resolution: int,
    rng: np.random.Generator,
    max_zoom: float = 1.0,
    random_crop: bool = True,
    random_flip: bool | float = True,
    crop: str = DEFAULT_CROP,
    keep: Box | None = None,
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """The same resize, crop and flip for both images; returns two uint8 CHW tensors and whether they were
    mirrored (the caller may have to say so in the instruction: :mod:`ieiw.training.flips`).

    The window is the ``crop`` policy's (:mod:`ieiw.training.crops`; ``short-side``: resize the shorter side
    to ``resolution * U(1, max_zoom)`` and crop ``resolution`` square, random or central, keeping the box
    ``keep`` in view when it fits), then a flip with probability ``random_flip`` (True: 0.5). Only the window
    is resampled, with torch's uint8 antialiased bicubic (about 3x faster than PIL's full-image resize at 256 px).
    """
    w, h = source.size
    x0, y0, x1, y1 = crop_window(w, h, resolution, rng, crop, max_zoom, random_crop, keep)
    # only the window is copied out of the decoded images (a view of each, then one stack)
    window = (slice(y0, y1), slice(x0, x1))
    # np.stack copies the two views into one new (writable) array: torch would warn about a read-only buffer
    pair = torch.from_numpy(np.stack([np.asarray(source)[window], np.asarray(target)[window]]))
    pair = pair.permute(0, 3, 1, 2)
    if pair.shape[-2:] != (resolution, resolution):
        pair = torch.nn.functional.interpolate(pair, size=(resolution, resolution), mode="bicubic", antialias=True)
    probability = DEFAULT_FLIP if random_flip is True else float(random_flip)
    flipped = probability > 0 and rng.random() < probability
    if flipped:
        pair = pair.flip(-1)
    pair = pair.contiguous()
    return pair[0], pair[1], flipped


class ShardPairs(IterableDataset):
    """Training samples ``{"id", "instruction", "slot", "epoch", "source", "target", "input_ids"}`` from a stage folder.

    ``source``/``target`` are uint8 CHW tensors (normalised on the device, so workers ship 4x less);
    with ``text_only`` (adapt stage) only ``target`` is decoded.
    """

    COLUMNS = ["id", "task", "instruction", "source_image", "target_image", "origin"]

    def __init__(
        self,
        groups: Sequence[RowGroup],
        resolution: int = 256,
        tokenize: Tokenize | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle_buffer: int = 1000,
        source_weights: Mapping[str, float] | None = None,
        default_weight: float = 1.0,
        max_zoom: float = 1.0,
        random_crop: bool = True,
        random_flip: bool = True,
        flip_probabilities: Mapping[str, float] | None = None,
        default_flip: float = DEFAULT_FLIP,
        crop_policies: Mapping[str, str] | None = None,
        default_crop: str = DEFAULT_CROP,
        epochs: int | None = None,
        text_only: bool = False,
        caption_suffixes: Mapping[str, str] | None = None,
        decode: bool = True,
        redraw: bool = True,
        explain: bool = False,
    ):
        if not groups:
            raise ValueError("no rows to train on: the manifest lists no shards, or the subset filters keep nothing")
        self.groups = list(groups)
        self.resolution = resolution
        self.tokenize = tokenize
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle_buffer = shuffle_buffer
        self.source_weights = dict(source_weights or {})
        self.default_weight = default_weight
        self.max_zoom = max_zoom
        self.random_crop = random_crop
        self.random_flip = random_flip  # False: no sample is mirrored, whatever the per-source rules say
        self.flip_probabilities = dict(OFFICIAL_FLIP if flip_probabilities is None else flip_probabilities)
        self.default_flip = default_flip
        self.crop_policies = dict(OFFICIAL_CROP if crop_policies is None else crop_policies)
        self.default_crop = default_crop
        self.epochs = epochs
        self.text_only = text_only
        self.caption_suffixes = dict(caption_suffixes or {})
        self.decode = decode
        self.redraw = redraw and not text_only  # draw targets anew per sample where a row keeps the material
        self.explain = explain  # add "details" (crop matrix, marks, window) to redrawn samples: for inspection
        self.skip_batches = 0
        self.batch_size = 1

    @property
    def num_rows(self) -> int:
        return sum(len(g.rows) for g in self.groups)

    def resume_from(self, batches_consumed: int, batch_size: int) -> None:
        """Make the next iterator skip what a previous run already consumed (per rank).

        A ``DataLoader`` over an ``IterableDataset`` takes batch b from worker b % num_workers, so
        each worker can work out its own share of the consumed batches.
        """
        self.skip_batches = batches_consumed
        self.batch_size = batch_size

    # -- the stream ---------------------------------------------------------------------------
    def _slot(self) -> tuple[int, int, int, int]:
        """(slot, number of slots, logical worker, workers) of the calling DataLoader worker.

        A fresh DataLoader polls physical worker 0 first, but after ``skip_batches`` the next batch is
        logical worker ``skip_batches % workers``'s: rotating the ids keeps the resumed order exact.
        """
        info = get_worker_info()
        physical, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        worker = (physical + self.skip_batches) % workers
        return self.rank * workers + worker, self.world_size * workers, worker, workers

    def _raw_rows(self, segments: Sequence[Segment], epoch: int) -> Iterator[dict[str, Any]]:
        columns = ["id", "task", "instruction", "origin", "target_image"]
        if not self.text_only:
            columns.append("source_image")
        if self.redraw:
            columns.append("builder")
        for seg in segments:
            parquet = storage.parquet_file(seg.path)
            wanted = columns + (["mask"] if not self.text_only and "mask" in parquet.schema_arrow.names else [])
            table = parquet.read_row_group(seg.group, columns=wanted).take(seg.rows)
            cols = {name: table.column(name).to_pylist() for name in wanted}
            for i in range(table.num_rows):
                dataset = (cols["origin"][i] or {}).get("dataset")
                task = cols["task"][i]
                weight = lookup_by_source(self.source_weights, dataset, task, self.default_weight)
                crop = crop_policy(self.crop_policies, self.default_crop, dataset, task)
                mask = (cols.get("mask") or [None] * table.num_rows)[i]
                material = None
                if self.redraw:
                    material = redraw_material((cols["builder"][i] or {}).get("params"), task)
                # a redrawn referring sample keeps its mask's box in view and colours it; no other redraw reads
                # the stored mask (a COCO-Stuff redraw picks its class from the crop, as the official loader does)
                needs_mask = material["kind"] == "refer" if material is not None else crop == "short-side"
                row = {
                    "id": cols["id"][i],
                    "task": task,
                    "dataset": dataset,
                    "instruction": cols["instruction"][i],
                    "target": cols["target_image"][i]["bytes"],
                    "source": None if self.text_only else cols["source_image"][i]["bytes"],
                    "crop": crop,
                    # only a cropped row needs its mask: the window keeps the masked object in view
                    "mask": mask["bytes"] if mask and needs_mask else None,
                    "redraw": material,
                }
                for repeat in range(repeat_count(row["id"], weight, self.seed, epoch)):
                    yield {**row, "repeat": repeat} if repeat else row

    def _shuffled(self, rows: Iterator[dict[str, Any]], rng: np.random.Generator) -> Iterator[dict[str, Any]]:
        """A bounded shuffle buffer of encoded rows; flushed at the end of each epoch."""
        if self.shuffle_buffer <= 1:
            yield from rows
            return
        buffer: list[dict[str, Any]] = []
        for row in rows:
            if len(buffer) < self.shuffle_buffer:
                buffer.append(row)
                continue
            i = int(rng.integers(len(buffer)))
            buffer[i], row = row, buffer[i]
            yield row
        rng.shuffle(buffer)
        yield from buffer

    def _sample(self, row: dict[str, Any], slot: int, position: int, epoch: int = 0) -> dict[str, Any]:
        material = row.get("redraw") if self.redraw else None
        if material is not None:  # a function of the row, not of the reader: any worker count draws the same
            rng = np.random.default_rng([self.seed, epoch, zlib.crc32(row["id"].encode()), row.get("repeat", 0)])
        else:
            rng = np.random.default_rng([self.seed, slot, position])
        text = row["instruction"]
        if material is not None and material["kind"] == "prompts":
            text = pick_prompt(material, rng) or text
            material = None  # the images as stored
        if self.text_only:
            suffix = lookup_by_source(self.caption_suffixes, row["dataset"], row["task"], None)
            if suffix:  # exactly once, even if a row already carries it
                text = text.rstrip(" .")
                text = text if text.endswith(suffix) else f"{text}, {suffix}"
        sample: dict[str, Any] = {"id": row["id"], "instruction": text, "slot": slot, "epoch": epoch}
        if self.decode:
            drawn = None
            if material is not None:
                try:
                    drawn = self._redrawn(row, material, rng)
                except (KeyError, TypeError, ValueError, IndexError, OverflowError) as exc:  # damaged material
                    logger.warning("row %s: cannot redraw its target (%s: %s); training on the stored one",
                                   row["id"], type(exc).__name__, exc)
            if drawn is not None:
                text = drawn.instruction
                sample.update(instruction=text, source=drawn.source, target=drawn.target)
                if self.explain:
                    sample["details"] = {**drawn.details, "flipped": drawn.flipped}
            else:
                self._stored(row, sample, rng, text)
                text = sample["instruction"]
        if self.tokenize is not None:
            sample["input_ids"] = self.tokenize(text)
        return sample

    def _redrawn(self, row: dict[str, Any], material: dict[str, Any], rng: np.random.Generator) -> Drawn | None:
        """The sample drawn anew from the row's material (:mod:`ieiw.training.redraw`); None: use the row as
        stored (the material does not fit the row)."""
        source = np.asarray(_open_rgb(row["source"], None))
        probability = 0.0
        if self.random_flip:
            probability = lookup_by_source(self.flip_probabilities, row["dataset"], row["task"], self.default_flip)
        if material["kind"] == "keypoints":
            return keypoint_sample(source, material, self.resolution, rng, probability)
        mask = decode_mask(row["mask"]) if row.get("mask") else None
        keep = mask_box(mask) if mask is not None else None
        return overlay_sample(source, material, mask, self.resolution, rng, probability, self.max_zoom,
                              self.random_crop, keep)

    def _stored(self, row: dict[str, Any], sample: dict[str, Any], rng: np.random.Generator, text: str) -> None:
        """The row's own images: the crop policy's window, resized, maybe mirrored (its text with it)."""
        crop = row.get("crop", DEFAULT_CROP)
        min_side = None if crop == "native" else self.resolution  # a native crop needs every stored pixel
        target = _open_rgb(row["target"], min_side)
        source = target if self.text_only else _open_rgb(row["source"], min_side)
        if target.size != source.size:
            target = target.resize(source.size, Image.BICUBIC)
        rule = flip_rule(self.flip_probabilities, self.default_flip, row["dataset"], row["task"], text)
        keep = mask_box(decode_mask(row["mask"])) if row.get("mask") and crop == "short-side" else None
        src, tgt, flipped = augment_pair_flipped(
            source, target, self.resolution, rng, self.max_zoom, self.random_crop,
            rule.probability if self.random_flip else False, crop, keep,
        )
        if flipped and rule.swap_sides:
            sample["instruction"] = swap_sides(text)
        sample["target"] = tgt
        if not self.text_only:
            sample["source"] = src

    def __iter__(self) -> Iterator[dict[str, Any]]:
        slot, num_slots, worker, workers = self._slot()
        skip = len(range(worker, self.skip_batches, workers)) * self.batch_size
        position = 0
        epoch = 0
        if self.num_rows < num_slots:
            raise ValueError(
                f"{self.num_rows} rows cannot feed {num_slots} readers (ranks x workers): use fewer workers"
            )
        while self.epochs is None or epoch < self.epochs:
            segments = plan_epoch(self.groups, self.seed, epoch, slot, num_slots, shuffle=self.shuffle_buffer > 1)
            rng = np.random.default_rng([self.seed, epoch, slot, 0xB0F])
            start = position
            for row in self._shuffled(self._raw_rows(segments, epoch), rng):
                if position >= skip:
                    try:
                        sample = self._sample(row, slot, position, epoch)
                    except (OSError, ValueError, SyntaxError) as exc:  # undecodable image bytes: a data fault
                        logger.warning("skipping row %s: cannot decode its images (%s)", row["id"], exc)
                        sample = None
                    if sample is not None:
                        yield sample
                position += 1
            if position == start and self.epochs is None:
                raise ValueError(f"reader {slot} got no rows in epoch {epoch}: the source weights are too small")
            epoch += 1


def normalize(images: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1] (done after the transfer to the device)."""
    return images.to(dtype=dtype) / 127.5 - 1.0


class ClipTokenize:
    """CLIP ids padded to the tokenizer's max length, as SD's text encoder expects (picklable for workers).

    Ids are remembered per text (up to ``cache_size`` texts, about 0.6 kB each): templated instructions
    repeat, and a row is seen again every epoch, so most calls skip the tokenizer."""

    def __init__(self, tokenizer: Any, cache_size: int = 65536):
        self.tokenizer = tokenizer
        self.cache_size = cache_size
        self._cache: dict[str, torch.Tensor] = {}

    def __call__(self, text: str) -> torch.Tensor:
        ids = self._cache.get(text)
        if ids is None:
            tok = self.tokenizer
            ids = torch.tensor(tok(text, max_length=tok.model_max_length, padding="max_length",
                                   truncation=True).input_ids, dtype=torch.long)
            if len(self._cache) >= self.cache_size:
                self._cache.pop(next(iter(self._cache)))  # oldest first
            self._cache[text] = ids
        return ids.clone()  # the caller may modify its copy
