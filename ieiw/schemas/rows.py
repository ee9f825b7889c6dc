"""The pair row: the one contract every builder, filter, flow and the trainer speak.

A row is a plain ``dict`` shaped like :data:`PAIR_SCHEMA`. Image columns are ``struct<bytes, path>``
and the file metadata carries Hugging Face ``datasets`` features, so ``load_dataset("parquet")``
decodes them to PIL images while pyarrow, DuckDB and Polars read the same file as plain structs.
Bump :data:`SCHEMA_VERSION` whenever a column is added, removed or changes meaning.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

SCHEMA_VERSION = 1
TASKS = ("remove", "add", "replace", "web")
SCHEMA_VERSION_KEY = b"ieiw.schema_version"

IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])

ORIGIN = pa.struct(
    [
        ("dataset", pa.string()),  # "phrasecut", "sa1b", "openimages", "reddit", ...
        ("split", pa.string()),
        ("record_id", pa.string()),  # the source's own id (PhraseCut task_id, post id, ...)
        ("image_id", pa.string()),
        ("phrase", pa.string()),  # referring phrase or class label of the edited region
        ("url", pa.string()),
        ("license", pa.string()),
        ("author", pa.string()),
        ("created_utc", pa.float64()),
    ]
)

EXEMPLAR = pa.struct(
    [
        ("dataset", pa.string()),
        ("record_id", pa.string()),
        ("label", pa.string()),
        ("similarity", pa.float32()),
    ]
)

SCORES = pa.struct(
    [
        ("backend", pa.string()),  # which scorer filled the numbers, e.g. "proxy-v1" or "laion-v2+knn-giqa"
        ("embedded", pa.bool_()),  # True when a CPU proxy, not the paper's model, produced them
        ("source_aesthetic", pa.float32()),
        ("target_aesthetic", pa.float32()),
        ("source_giqa", pa.float32()),
        ("target_giqa", pa.float32()),
        ("edit_consistency", pa.float32()),
    ]
)

BUILDER = pa.struct(
    [
        ("name", pa.string()),  # "removal", "replacement", "crawl"
        ("backend", pa.string()),  # e.g. "opencv-telea", "lama-torchscript", "iopaint-http"
        ("embedded", pa.bool_()),  # True when the CPU stand-in, not the paper's model, made the pair
        ("model", pa.string()),  # checkpoint path / hub id / model name; null for embedded
        ("seed", pa.int64()),
        ("params", pa.string()),  # canonical JSON of the parameters that shaped this row
    ]
)

PAIR_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("instruction", pa.string(), nullable=False),
        pa.field("source_image", IMAGE, nullable=False),
        pa.field("target_image", IMAGE, nullable=False),
        pa.field("mask", IMAGE),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("origin", ORIGIN, nullable=False),
        pa.field("exemplar", EXEMPLAR),
        pa.field("scores", SCORES),
        pa.field("builder", BUILDER, nullable=False),
    ]
)

# Rows dropped by selection keep their id and reason here; images stay in the candidate shards.
REJECTED_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("origin", ORIGIN, nullable=False),
        pa.field("scores", SCORES),
    ]
)

SCORE_SCHEMA = pa.schema([pa.field("id", pa.string(), nullable=False), pa.field("scores", SCORES)])


def _hf_feature(arrow_type: pa.DataType) -> Any:
    """The ``datasets`` feature dict for an arrow type; image structs become ``Image``."""
    if arrow_type.equals(IMAGE):
        return {"_type": "Image"}
    if pa.types.is_struct(arrow_type):
        return {f.name: _hf_feature(f.type) for f in arrow_type}
    dtype = {
        pa.string(): "string",
        pa.binary(): "binary",
        pa.bool_(): "bool",
        pa.int32(): "int32",
        pa.int64(): "int64",
        pa.float32(): "float32",
        pa.float64(): "float64",
    }[arrow_type]
    return {"dtype": dtype, "_type": "Value"}


def with_metadata(schema: pa.Schema) -> pa.Schema:
    """The schema as written to disk: the schema version and the Hugging Face features attached.

    Every top-level field is stored nullable: ``datasets`` only applies its stored features to
    fields equal to its own (always nullable) ones. Required columns are enforced on write instead
    (:func:`rows_to_table`).
    """
    features = {f.name: _hf_feature(f.type) for f in schema}
    stored = pa.schema([f.with_nullable(True) for f in schema])
    return stored.with_metadata(
        {
            SCHEMA_VERSION_KEY: str(SCHEMA_VERSION).encode(),
            b"huggingface": json.dumps({"info": {"features": features}}).encode(),
        }
    )


def canonical_json(value: Any) -> str:
    """Stable JSON (sorted keys, no spaces) so equal parameters hash equally across runs."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def stable_hash(*parts: Any, length: int = 32) -> str:
    """Hex digest of the canonical JSON of ``parts``; the basis of row ids and fingerprints."""
    return hashlib.blake2b(canonical_json(parts).encode(), digest_size=length // 2).hexdigest()


def row_id(dataset: str, record_id: str, builder: str, params: Mapping[str, Any], task: str) -> str:
    """Deterministic id: the same source record, builder, parameters and task give the same id."""
    return stable_hash(dataset, record_id, builder, dict(params), task)


def image_cell(data: bytes, name: str) -> dict[str, Any]:
    """An image column value; ``name`` carries the extension so decoders know the format."""
    return {"bytes": data, "path": name}


def rows_to_table(rows: Iterable[Mapping[str, Any]], schema: pa.Schema = PAIR_SCHEMA) -> pa.Table:
    """Validate rows against ``schema`` (pyarrow raises on a wrong type or a missing required field)."""
    rows = list(rows)
    for row in rows:
        if schema is PAIR_SCHEMA and row.get("task") not in TASKS:
            raise ValueError(f"row {row.get('id')!r}: task {row.get('task')!r} is not one of {TASKS}")
    table = pa.Table.from_pylist(rows, schema=with_metadata(schema))
    # pyarrow does not enforce nullable=False on conversion; the contract does.
    for field in schema:
        if not field.nullable and table[field.name].null_count:
            first = table[field.name].to_pylist().index(None)
            raise ValueError(f"row {rows[first].get('id')!r}: required column {field.name!r} is null")
    return table
