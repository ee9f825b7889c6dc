"""Streams of reference images for ``ieiw giqa-index``: an image folder, or Parquet shards with an image
column (e.g. a LAION subset saved by img2dataset, or an ieiw stage folder). Both yield in a fixed order
(sorted paths, then row order), which is what lets an interrupted index build resume by chunk number.
Unreadable files are skipped with a warning naming them."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from ieiw.imageio import EXTENSIONS, ImageDecodeError, decode_rgb

log = logging.getLogger("ieiw")
IMAGE_SUFFIXES = {"." + ext for ext in EXTENSIONS.values()} | {".jpeg", ".tiff"}


def iter_folder_images(folder: Path) -> Iterator[tuple[str, np.ndarray]]:
    for path in sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        try:
            yield str(path), decode_rgb(path.read_bytes())
        except (OSError, ImageDecodeError) as exc:
            log.warning("giqa-index: skipping %s: %s", path, exc)


def iter_shard_images(folder: Path, column: str = "target_image") -> Iterator[tuple[str, np.ndarray]]:
    """Row group by row group, reading only ``column`` (struct of bytes + path, or plain binary)."""
    for path in sorted(Path(folder).glob("*.parquet")):
        handle = pq.ParquetFile(path)
        for group in range(handle.num_row_groups):
            cells = handle.read_row_group(group, columns=[column])[column].to_pylist()
            for row, cell in enumerate(cells):
                data = cell.get("bytes") if isinstance(cell, dict) else cell
                if not data:
                    continue
                try:
                    yield f"{path.name}#{group}:{row}", decode_rgb(data)
                except ImageDecodeError as exc:
                    log.warning("giqa-index: skipping %s row group %d row %d: %s", path, group, row, exc)
