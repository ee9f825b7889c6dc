"""Helpers for the trainer's tests: synthetic pairs and shards written through the real schema code.

A uniquely named module (not conftest) so test files can import it without clashing with other
test folders' conftest modules."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ieiw.schemas.manifest import Manifest
from ieiw.schemas.rows import image_cell, row_id, rows_to_table
from ieiw.schemas.shards import write_shard
from ieiw.schemas.units import BuildContext
from ieiw.training.config import Config, load_config

COLORS = [(220, 40, 40), (40, 200, 60), (40, 80, 220), (230, 200, 30), (200, 60, 200), (30, 200, 200)]


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, quality=92) if fmt == "JPEG" else image.save(buffer, format=fmt)
    return buffer.getvalue()


def draw_pair(index: int, size: tuple[int, int]) -> tuple[Image.Image, Image.Image, str]:
    """A gradient background with a coloured square (source); the target has the square removed."""
    w, h = size
    rng = np.random.default_rng(index)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 90 + 10 * (index % 5))], -1).astype(np.uint8)
    target = Image.fromarray(base)
    source = target.copy()
    color = COLORS[index % len(COLORS)]
    side = int(min(w, h) * 0.4)
    x, y = int(rng.integers(0, w - side)), int(rng.integers(0, h - side))
    ImageDraw.Draw(source).rectangle([x, y, x + side, y + side], fill=color)
    return source, target, f"remove the square number {index % len(COLORS)}"


def make_row(index: int, dataset: str, size: tuple[int, int] = (80, 64), fmt: str = "JPEG") -> dict:
    source, target, instruction = draw_pair(index, size)
    ext = "jpg" if fmt == "JPEG" else "png"
    params = {"i": index}
    return {
        "id": row_id(dataset, str(index), "synthetic", params, "remove"),
        "task": "remove",
        "instruction": instruction,
        "source_image": image_cell(encode(source, fmt), f"s{index}.{ext}"),
        "target_image": image_cell(encode(target, fmt), f"t{index}.{ext}"),
        "mask": None,
        "width": size[0],
        "height": size[1],
        "origin": {"dataset": dataset, "record_id": str(index)},
        "exemplar": None,
        "scores": None,
        "builder": {"name": "synthetic", "backend": "test", "embedded": True, "model": None, "seed": 0, "params": "{}"},
    }


def write_stage(folder: Path, shards: list[tuple[str, int]], row_group_size: int = 4, start: int = 0) -> Path:
    """Write ``[(dataset, rows), ...]`` as one shard each, recorded in a real manifest."""
    manifest = Manifest(folder, "pairs", {"unit_rows": "test"})
    index = start
    for unit, (dataset, count) in enumerate(shards):
        rows = [make_row(index + i, dataset, fmt="JPEG" if (index + i) % 3 else "PNG") for i in range(count)]
        index += count
        shard = write_shard(rows_to_table(rows), folder / f"{dataset}-{unit:05d}.parquet", row_group_size=row_group_size)
        manifest.record(f"{dataset}-{unit:05d}", shard, fingerprint=f"f{unit}", stats={"rows": count})
    return folder


def tiny_config(tiny_sd: Path, data: Path, output_dir: Path, extra: list[str] = ()) -> Config:
    """The repo's tiny config, pointed at test folders; ``extra`` are dotted key=value overrides."""
    repo = Path(__file__).resolve().parents[2]
    overrides = [f"data.folder={data}", f"output_dir={output_dir}", f"model.tiny.cache_dir={tiny_sd}",
                 "logging.report_to=none", "validation.every_steps=0"]
    overrides += list(extra)
    return load_config(repo / "configs" / "train.tiny.yaml", overrides)


def stage(folder: Path, rows: list[dict]) -> Path:
    """``rows`` as a one-shard stage folder with its manifest (row groups of 16)."""
    manifest = Manifest(folder, "pairs", {"unit_rows": "test"})
    shard = write_shard(rows_to_table(rows), folder / "rows-00000.parquet", row_group_size=16)
    manifest.record("rows-00000", shard, fingerprint="f", stats={"rows": len(rows)})
    return folder


def built(builder) -> list[dict]:
    """Every kept row a real builder makes from its (bundled sample) source."""
    builder.prepare()
    return [row for unit in builder.plan() for row in builder.build_unit(unit).rows if not row.get("drop_reason")]


def context(tmp: Path) -> BuildContext:
    return BuildContext(root=tmp, out_dir=tmp / "out", unit_size=64)
