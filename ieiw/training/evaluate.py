"""``ieiw eval``: edit the held-out split with an exported pipeline and score the edits with CLIP.

Which rows: those whose ``split`` column is ``val`` (assigned at selection by source image, so no
source image of the held-out split is ever trained on). Shards without a ``split`` column (schema v1)
or rows with a null split count as not held out. The trainer's validation draws from the same rows
(:func:`split_groups`).

How each row is edited: as ``ieiw edit`` does it. The source image is resized to the official edit
size (longer side about ``resolution``, both sides multiples of 64), edited with the official
three-pass guidance (or diffusers' sampler), seed ``seed + i`` for the i-th row; the ground-truth
target is resized to the same size.

The metrics. InstructPix2Pix and MagicBrush plot CLIP image similarity against CLIP directional
similarity, the latter ``cos(E_img(out) - E_img(src), E_txt(target caption) - E_txt(source caption))``.
Our rows carry an instruction, not a pair of captions, but they do carry the ground-truth target
image, so the caption change is replaced by the ground truth's change in image space. With ``E_img``
and ``E_txt`` the L2-normalised projected CLIP embeddings (what OpenAI's ``encode_image`` /
``encode_text`` return, normalised), per row:

* ``clip_image``: ``cos(E_img(out), E_img(src))``, InstructPix2Pix's CLIP image similarity (how much of
  the input survives the edit);
* ``clip_directional``: ``cos(E_img(out) - E_img(src), E_img(gt) - E_img(src))``, directional similarity
  with the ground truth's change standing in for the caption change (does the edit move the picture
  the way the dataset's target does); 0 when either change is the zero vector;
* ``clip_directional_text``: ``cos(E_img(out) - E_img(src), E_txt(instruction))``, the instruction-only
  variant (the change against the instruction's text embedding itself);
* ``clip_i``: ``cos(E_img(out), E_img(gt))``, MagicBrush's CLIP-I (output against ground truth);
* ``clip_t``: ``cos(E_img(out), E_txt(instruction))``, CLIP-T between the output and the instruction;
* ``gt_clip_image``: ``cos(E_img(gt), E_img(src))``, the ground truth's own ``clip_image``, a reference
  for how much the dataset's edits change a picture.

``results.json`` holds the means over the rows (and ``n``); ``rows.csv`` one line per row; ``grid.png``
one band per row: the instruction, then source | ground truth | output, each letterboxed into a
``cell`` x ``cell`` square.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

logger = logging.getLogger("ieiw.training")

METRICS = ("clip_image", "clip_directional", "clip_directional_text", "clip_i", "clip_t", "gt_clip_image")
BAND = 24  # height of the instruction line above each row of the grid
HELD_OUT = "val"


def split_groups(
    folders: str | Path | Sequence[str | Path],
    split: str = HELD_OUT,
    include_datasets: Sequence[str] | None = None,
    include_tasks: Sequence[str] | None = None,
    limit: int | None = None,
) -> list[Any]:
    """The manifest's row groups (as :func:`ieiw.training.data.index_shards` gives them, in unit order)
    keeping only rows whose ``split`` column equals ``split``; at most ``limit`` rows. Reads footers and
    the small ``split`` column only."""
    from ieiw.schemas import storage
    from ieiw.training.data import RowGroup, index_shards

    out: list[RowGroup] = []
    kept = 0
    files: dict[str, Any] = {}
    for group in index_shards(folders, include_datasets, include_tasks):
        if group.path not in files:
            files[group.path] = storage.parquet_file(group.path)  # a local path or an s3:// URL
        pf = files[group.path]
        if "split" not in pf.schema_arrow.names:  # a v1 shard: nothing is held out
            continue
        values = pf.read_row_group(group.group, columns=["split"]).column("split").to_pylist()
        rows = np.array([r for r in group.rows if values[r] == split], dtype=np.int64)
        if limit is not None:
            rows = rows[: max(0, limit - kept)]
        if len(rows):
            out.append(RowGroup(group.path, group.group, rows))
            kept += len(rows)
        if limit is not None and kept >= limit:
            break
    return out


@dataclass
class EvalRow:
    index: int
    id: str
    task: str
    instruction: str
    source: Any  # PIL images, all at the edit size
    target: Any
    output: Any = None
    scores: dict[str, float] = field(default_factory=dict)


def read_rows(groups: Sequence[Any]) -> list[EvalRow]:
    """The rows' ids, instructions and decoded images (RGB PIL, as stored)."""
    from ieiw.imageio import decode_image
    from ieiw.schemas import storage

    rows: list[EvalRow] = []
    columns = ["id", "task", "instruction", "source_image", "target_image"]
    for group in groups:
        table = storage.parquet_file(group.path).read_row_group(group.group, columns=columns).take(group.rows).to_pydict()
        for i in range(len(table["id"])):
            rows.append(EvalRow(
                len(rows), table["id"][i], table["task"][i], table["instruction"][i],
                decode_image(table["source_image"][i]["bytes"]), decode_image(table["target_image"][i]["bytes"]),
            ))
    return rows


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine; 0 where either vector is (numerically) zero."""
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    dot = (a * b).sum(axis=1)
    ok = (na > 1e-8) & (nb > 1e-8)
    return np.where(ok, dot / np.maximum(na * nb, 1e-12), 0.0)


def clip_scores(clip: Any, sources: Sequence[np.ndarray], targets: Sequence[np.ndarray],
                outputs: Sequence[np.ndarray], instructions: Sequence[str]) -> dict[str, np.ndarray]:
    """The per-row metrics of the module docstring; ``clip`` has ``image_features``/``text_features``
    returning L2-normalised rows (:class:`ieiw.backends.features.clip.ClipFeatures`)."""
    src = clip.image_features(list(sources)).astype(np.float64)
    gt = clip.image_features(list(targets)).astype(np.float64)
    out = clip.image_features(list(outputs)).astype(np.float64)
    txt = clip.text_features(list(instructions)).astype(np.float64)
    change = out - src
    return {
        "clip_image": _cos(out, src),
        "clip_directional": _cos(change, gt - src),
        "clip_directional_text": _cos(change, txt),
        "clip_i": _cos(out, gt),
        "clip_t": _cos(out, txt),
        "gt_clip_image": _cos(gt, src),
    }


def _fit(image: Any, cell: int) -> Any:
    """``image`` letterboxed (aspect kept, black bars) into a ``cell`` square."""
    from PIL import Image

    w, h = image.size
    scale = cell / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    canvas = Image.new("RGB", (cell, cell))
    canvas.paste(image.convert("RGB").resize(size, Image.LANCZOS), ((cell - size[0]) // 2, (cell - size[1]) // 2))
    return canvas


def make_grid(rows: Sequence[EvalRow], cell: int = 256) -> Any:
    """One band per row: ``BAND`` px of its index and instruction, then source | ground truth | output;
    the grid is ``3 * cell`` wide and ``len(rows) * (cell + BAND)`` high."""
    from PIL import Image, ImageDraw, ImageFont

    grid = Image.new("RGB", (3 * cell, len(rows) * (cell + BAND)), "white")
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    for r, row in enumerate(rows):
        top = r * (cell + BAND)
        label = f"{row.index}: {row.instruction}"
        while len(label) > 8 and draw.textlength(label, font=font) > 3 * cell - 8:
            label = label[:-2] + "…" if label.endswith("…") else label[:-1] + "…"
        draw.text((4, top + 6), label, fill="black", font=font)
        for c, image in enumerate((row.source, row.target, row.output)):
            grid.paste(_fit(image, cell), (c * cell, top + BAND))
    return grid


def _edit(pipe: Any, image: Any, instruction: str, steps: int, text_guidance: float, image_guidance: float,
          seed: int, sampler: str) -> Any:
    import torch

    from ieiw.training.edit import edit_official

    if sampler == "official":
        return edit_official(pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.scheduler.config,
                             image, instruction, steps, text_guidance, image_guidance, seed)
    if sampler == "diffusers":
        generator = torch.Generator(device="cpu").manual_seed(seed)
        return pipe(instruction, image=image, num_inference_steps=steps, guidance_scale=text_guidance,
                    image_guidance_scale=image_guidance, generator=generator).images[0]
    raise ValueError(f"sampler {sampler!r}: use official or diffusers")


@dataclass
class EvalResult:
    out: Path
    n: int
    means: dict[str, float]
    rows: list[EvalRow]


def evaluate(
    model: str | Path,
    data: str | Path | Sequence[str | Path],
    clip_model: str,
    out: str | Path,
    *,
    split: str = HELD_OUT,
    limit: int | None = None,
    steps: int = 100,
    text_guidance: float = 5.0,
    image_guidance: float = 1.25,
    seed: int = 0,
    resolution: int = 512,
    sampler: str = "official",
    device: str | None = None,
    cell: int = 256,
    clip_batch_size: int = 32,
) -> EvalResult:
    """Edit the ``split`` rows of ``data`` with the pipeline at ``model``; write ``results.json``,
    ``rows.csv``, ``grid.png`` and ``edited/NNNNN.png`` under ``out``."""
    import torch

    from ieiw.backends.features.clip import ClipFeaturesConfig
    from ieiw.training.edit import load_pipeline, official_size

    started = time.perf_counter()
    folders = [data] if isinstance(data, str | Path) else list(data)
    groups = split_groups(folders, split, limit=limit)
    if not groups:
        where = ", ".join(str(f) for f in folders)
        raise ValueError(f"{where}: no rows with split == {split!r} (shards written before schema v2 have no split column)")
    rows = read_rows(groups)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    clip = ClipFeaturesConfig(model=clip_model, device=device, batch_size=clip_batch_size).create()  # fails early
    pipe = load_pipeline(model, device, dtype)
    out = Path(out)
    (out / "edited").mkdir(parents=True, exist_ok=True)
    edit_s = time.perf_counter()
    for row in rows:
        size = official_size(*row.source.size, resolution)
        row.source = row.source.resize(size, _lanczos())
        row.target = row.target.resize(size, _lanczos())
        row.output = _edit(pipe, row.source, row.instruction, steps, text_guidance, image_guidance, seed + row.index, sampler)
        row.output.save(out / "edited" / f"{row.index:05d}.png")
    edit_s = time.perf_counter() - edit_s
    del pipe
    scores = clip_scores(clip, [np.asarray(r.source) for r in rows], [np.asarray(r.target) for r in rows],
                         [np.asarray(r.output) for r in rows], [r.instruction for r in rows])
    for i, row in enumerate(rows):
        row.scores = {name: float(scores[name][i]) for name in METRICS}
    means = {name: float(np.mean(scores[name])) for name in METRICS}

    with open(out / "rows.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "id", "task", "instruction", "output", *METRICS])
        for row in rows:
            writer.writerow([row.index, row.id, row.task, row.instruction, f"edited/{row.index:05d}.png",
                             *(f"{row.scores[name]:.6f}" for name in METRICS)])
    make_grid(rows, cell).save(out / "grid.png")
    results = {
        "pipeline": str(model),
        "data": [str(f) for f in folders],
        "split": split,
        "n": len(rows),
        "metrics": means,
        "clip_model": clip_model,
        "sampler": sampler,
        "steps": steps,
        "text_guidance": text_guidance,
        "image_guidance": image_guidance,
        "seed": seed,
        "resolution": resolution,
        "device": device,
        "definitions": DEFINITIONS,
        "edit_seconds": round(edit_s, 3),
        "seconds": round(time.perf_counter() - started, 3),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return EvalResult(out, len(rows), means, rows)


def _lanczos() -> Any:
    from PIL import Image

    return Image.LANCZOS


DEFINITIONS = {
    "clip_image": "cos(E_img(out), E_img(src)): InstructPix2Pix's CLIP image similarity",
    "clip_directional": "cos(E_img(out) - E_img(src), E_img(gt) - E_img(src)): directional similarity with the "
                        "ground-truth target's image-space change in place of the caption change",
    "clip_directional_text": "cos(E_img(out) - E_img(src), E_txt(instruction)): the instruction-only variant",
    "clip_i": "cos(E_img(out), E_img(gt)): MagicBrush's CLIP-I against the ground-truth target",
    "clip_t": "cos(E_img(out), E_txt(instruction)): CLIP-T between output and instruction",
    "gt_clip_image": "cos(E_img(gt), E_img(src)): the ground truth's own image similarity, for reference",
}
