"""From the replacement source's exemplar shards to its index folder, streaming (docs/replacement.md).

The index stage writes one shard per unit under ``exemplars/`` (crops, RLE masks, labels, vectors).
:func:`build_exemplar_index` reads them one at a time: each shard's vector column goes as an Arrow
buffer into the index's float16 store (:class:`~ieiw.builders.exemplars.IndexWriter`), its light
columns into the region table; no vector becomes a Python float and no shard is held after it is
read. What stays in memory is the light columns of every region (image id, record id, label: ~50
bytes a region) and what the index build itself holds (docs/PERFORMANCE.md, "Exemplar index").

The folder it writes, besides the index's own files: ``regions.arrow`` (an Arrow IPC file: every
region's light columns in index-row order, with the labels filled in; read memory-mapped, so a
candidates worker pages in the rows it touches, not 10M rows), and ``units.json`` (each unit's first
row: a region's index row is its unit's first row plus its position in the unit's shard).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ieiw.backends.labels import EMBEDDED_NEAREST, nearest_labelled_many
from ieiw.builders.exemplars import ExemplarIndex, ExemplarIndexConfig, IndexWriter
from ieiw.builders.vector_store import VectorStore, arrow_vectors
from ieiw.schemas.shards import concat_compact, read_shard

REGIONS = "regions.arrow"
UNITS = "units.json"
LIGHT = ["image_id", "record_id", "label", "label_source", "label_score"]
LABEL_COLUMNS = ["label", "label_source", "label_score"]
REGION_BATCH = 65_536  # rows per record batch of regions.arrow (few batches: fast lookups by row)
LABEL_CHUNK = 4_096  # unlabelled rows labelled at a time


def _light_columns(shards: list[Path]) -> tuple[pa.Table, list[int]]:
    """Every region's light columns (one table) and each shard's row count."""
    counts: list[int] = []

    def tables() -> Iterator[pa.Table]:
        for shard in shards:
            table = read_shard(shard, columns=LIGHT)
            counts.append(table.num_rows)
            yield table.replace_schema_metadata(None)

    light = concat_compact(tables())
    return light, counts


def _fill_labels(light: pa.Table, store: VectorStore) -> pa.Table:
    """Embedded mode: an unlabelled region takes the label of the nearest labelled one (cosine over the
    stored vectors); the labelled vectors are gathered once, the unlabelled ones in chunks."""
    labels = light.column("label")
    unlabelled = labels.is_null().to_numpy(zero_copy_only=False)
    missing, known = np.flatnonzero(unlabelled), np.flatnonzero(~unlabelled)
    if not len(missing) or not len(known):
        return light
    known_labels = labels.take(pa.array(known)).to_pylist()
    known_vectors = store.gather(known)
    found = []
    for start in range(0, len(missing), LABEL_CHUNK):
        found += nearest_labelled_many(store.gather(missing[start:start + LABEL_CHUNK]), known_vectors, known_labels)
    mask = pa.array(unlabelled)
    filled = {
        "label": pc.replace_with_mask(labels.combine_chunks(), mask, pa.array([f.label for f in found], pa.string())),
        "label_source": pc.replace_with_mask(light.column("label_source").combine_chunks(), mask,
                                             pa.array([EMBEDDED_NEAREST] * len(found), pa.string())),
        "label_score": pc.replace_with_mask(light.column("label_score").combine_chunks(), mask,
                                            pa.array([f.score for f in found], pa.float32())),
    }
    for name, column in filled.items():
        light = light.set_column(light.schema.get_field_index(name), name, column)
    return light


def _write_regions(path: Path, shards: list[Path], light: pa.Table, drop: list[str]) -> dict[str, int]:
    """regions.arrow: each shard's columns but ``drop`` and the labels, plus ``unit`` and the filled
    labels, in index-row order; returns each unit's first row."""
    starts: dict[str, int] = {}
    writer = None
    pending: list[pa.Table] = []
    at = 0

    def flush() -> None:
        nonlocal writer, pending
        if not pending:
            return
        batch = pa.concat_tables(pending).combine_chunks()
        if writer is None:
            writer = pa.ipc.new_file(str(path), batch.schema)
        writer.write_table(batch, max_chunksize=REGION_BATCH)
        pending = []

    try:
        for shard in shards:
            # never the crops' bytes; the labels come filled from ``light``
            table = read_shard(shard, without=[*drop, *LABEL_COLUMNS]).replace_schema_metadata(None)
            count = table.num_rows
            starts[shard.stem] = at
            if not count:
                continue
            table = table.append_column("unit", pa.array([shard.stem] * count, pa.string()))
            for name in LABEL_COLUMNS:
                table = table.append_column(name, light.column(name).slice(at, count))
            pending.append(table)
            at += count
            if sum(t.num_rows for t in pending) >= REGION_BATCH:
                flush()
        flush()
    finally:
        if writer is not None:
            writer.close()
    return starts


def build_exemplar_index(shards: list[Path], folder: Path, config: ExemplarIndexConfig, fingerprint: str,
                         drop: list[str]) -> tuple[ExemplarIndex, pa.Table]:
    """Index every vector of ``shards`` into ``folder`` (replaced whole on success) with the region
    table beside it; ``drop``: shard columns the region table leaves out (vectors, crops, masks).
    Returns the index and the light columns (labels filled)."""
    light, counts = _light_columns(shards)
    total = sum(counts)
    if light is None or total == 0:
        raise RuntimeError(f"no region survived the policy in {len(shards)} unit(s); nothing to index")
    dim = None
    writer: IndexWriter | None = None
    try:
        for shard, count in zip(shards, counts, strict=True):
            if not count:
                continue
            try:
                vectors = arrow_vectors(read_shard(shard, columns=["vector"]).column("vector"), dim, where=str(shard))
                if writer is None:
                    dim = vectors.shape[1]
                    writer = IndexWriter(folder, total, dim, config, fingerprint)
                writer.append(vectors)
            except ValueError as error:
                raise ValueError(f"{shard}: {error}" if str(shard) not in str(error) else str(error)) from error
            del vectors
        assert writer is not None
        light = _fill_labels(light, writer.stored())
        starts = _write_regions(writer.partial / REGIONS, shards, light, drop)
        (writer.partial / UNITS).write_text(json.dumps(starts))
        index = writer.finish({"image_id": light.column("image_id"), "record_id": light.column("record_id"),
                               "label": light.column("label")})
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    return index, light


def open_regions(folder: Path) -> tuple[pa.Table, dict[str, int]]:
    """The region table (memory-mapped: zero-copy, paged in as rows are touched) and each unit's first row."""
    table = pa.ipc.open_file(pa.memory_map(str(Path(folder) / REGIONS))).read_all()
    return table, json.loads((Path(folder) / UNITS).read_text())


def labelled_by(light: pa.Table) -> dict[Any, int]:
    """How many regions each label source named (None: no label)."""
    return {entry["values"]: entry["counts"] for entry in pc.value_counts(light.column("label_source")).to_pylist()}
