"""The pair row: the one contract every builder, filter, flow and the trainer speak.

A row is a plain ``dict`` shaped like :data:`PAIR_SCHEMA`. Image columns are ``struct<bytes, path>``
and the file metadata carries Hugging Face ``datasets`` features, so ``load_dataset("parquet")``
decodes them to PIL images while pyarrow, DuckDB and Polars read the same file as plain structs.
Bump :data:`SCHEMA_VERSION` whenever a column is added, removed or changes meaning.

Schema v3 (this version) adds ``edit_kind`` over v2: what a crawled edit is (``local``, ``colour``,
``geometric``, ``resolution``, ``overlay``, ``composite``, joined by ``+`` when it is several, or what a
rejected candidate was: ``no_op``, ``non_derivative``; :mod:`ieiw.crawlers.kinds`), null for rows of
other builders. Schema v2 added, over v1: ``origin.authors`` (list) and ``origin.edit_url`` (replacing
v1's ``origin.author``), ``drop_reason`` (a builder's own verdict: the row goes to ``rejected/``),
``duplicate_of``, ``split``, and in ``scores`` the ``verification`` score plus one backend name per
score family. Task values come from the registry (:mod:`ieiw.schemas.registry`). Readers accept v1 and
v2 shards: :func:`upgrade_table` renames what changed; a column an older shard lacks stays absent (readers
treat it as null).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

from ieiw.schemas.registry import REGISTRY

SCHEMA_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
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
        ("authors", pa.list_(pa.string())),  # poster first, then the editor, where known
        ("edit_url", pa.string()),  # crawled pairs: the editor's image
        ("created_utc", pa.float64()),
    ]
)

EXEMPLAR = pa.struct(
    [
        ("dataset", pa.string()),
        ("record_id", pa.string()),
        ("label", pa.string()),
        ("similarity", pa.float32()),
        # where the exemplar's label and the replaced region's label came from: the dataset's own class
        # ("open-images"), CLIP zero-shot ("clip-zero-shot") or the nearest labelled exemplar ("embedded-nearest")
        ("label_source", pa.string()),
        ("source_label_source", pa.string()),
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
        ("edit_consistency", pa.float32()),  # how well the target derives from the source (crawl: alignment)
        ("verification", pa.float32()),  # removal: how surely the object is gone (higher = gone)
        ("aesthetic_backend", pa.string()),
        ("giqa_backend", pa.string()),
        ("consistency_backend", pa.string()),
        ("verification_backend", pa.string()),
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
        pa.field("split", pa.string()),  # "train" | "val", assigned at selection by source image
        pa.field("drop_reason", pa.string()),  # set by a builder on a candidate it judged unusable
        pa.field("duplicate_of", pa.string()),  # id of the row this one duplicates
        pa.field("edit_kind", pa.string()),  # crawled rows: "local", "geometric+local", ..., "no_op" (v3)
    ]
)

# Rows dropped by selection keep their id and reason here; images stay in the candidate shards.
REJECTED_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("rejected_by", pa.string()),  # "builder" (its drop_reason) or "selection" (a rule)
        pa.field("instruction", pa.string()),
        pa.field("origin", ORIGIN, nullable=False),
        pa.field("scores", SCORES),
        pa.field("builder", BUILDER),
        pa.field("split", pa.string()),
        pa.field("duplicate_of", pa.string()),
        pa.field("edit_kind", pa.string()),
    ]
)

SCORE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("scores", SCORES),
        pa.field("duplicate_of", pa.string()),
        # perceptual hashes for dedup (ieiw.filters.dedup): the source's pHash, the change map's average hash
        pa.field("source_hash", pa.string()),
        pa.field("edit_hash", pa.string()),
    ]
)

# Per unit, one embedding per distinct image (key = image_key of its bytes) and extractor (its label, e.g.
# "embedded-v1"; a build may need several: CLIP for the heads, Inception for GIQA), float16 to halve the size.
FEATURE_SCHEMA = pa.schema(
    [
        pa.field("image", pa.string(), nullable=False),
        pa.field("extractor", pa.string(), nullable=False),
        pa.field("embedding", pa.list_(pa.float16()), nullable=False),
    ]
)


def _hf_feature(arrow_type: pa.DataType) -> Any:
    """The ``datasets`` feature dict for an arrow type; image structs become ``Image``."""
    if arrow_type.equals(IMAGE):
        return {"_type": "Image"}
    if pa.types.is_struct(arrow_type):
        return {f.name: _hf_feature(f.type) for f in arrow_type}
    if pa.types.is_list(arrow_type):
        return [_hf_feature(arrow_type.value_type)]
    dtype = {
        pa.string(): "string",
        pa.binary(): "binary",
        pa.bool_(): "bool",
        pa.int32(): "int32",
        pa.int64(): "int64",
        pa.float16(): "float16",
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


def image_key(data: bytes) -> str:
    """Identity of an encoded image (remove/add twins share theirs): blake2b-128 of the bytes."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def assign_split(dataset: str | None, image_id: str | None, val_fraction: float) -> str:
    """``train`` or ``val`` from (dataset, source image id) alone: every row of one image, the remove/add
    twins included, lands in the same split in every run; the share of ``val`` images is ``val_fraction``."""
    position = int(stable_hash(dataset, image_id, length=16), 16) / float(1 << 64)
    return "val" if position < val_fraction else "train"


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def text_field(value: Any) -> str | None:
    """A text value from a dataset file as a row can hold it: a ``str`` with every lone surrogate (valid JSON
    ``"\\ud800"``, or bytes read with ``surrogateescape``) replaced by U+FFFD, which Arrow cannot write
    otherwise (the whole shard would fail); None for anything that is not a ``str``."""
    if not isinstance(value, str):
        return None
    return _LONE_SURROGATE.sub("\ufffd", value) if _LONE_SURROGATE.search(value) else value


def image_cell(data: bytes, name: str) -> dict[str, Any]:
    """An image column value; ``name`` carries the extension so decoders know the format."""
    return {"bytes": data, "path": name}


def origin_cell(*, dataset: str | None = None, split: str | None = None, record_id: str | None = None,
                image_id: str | None = None, phrase: str | None = None, url: str | None = None,
                license: str | None = None, authors: list[str] | None = None, edit_url: str | None = None,
                created_utc: float | None = None) -> dict[str, Any]:
    """An ``origin`` column value: every :data:`ORIGIN` field, in its order, null where not given."""
    return {"dataset": dataset, "split": split, "record_id": record_id, "image_id": image_id, "phrase": phrase,
            "url": url, "license": license, "authors": authors, "edit_url": edit_url, "created_utc": created_utc}


def builder_cell(*, name: str | None = None, backend: str | None = None, embedded: bool | None = None,
                 model: str | None = None, seed: int | None = None,
                 params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A ``builder`` column value: every :data:`BUILDER` field, in its order, null where not given;
    ``params`` (the parameters that shaped the row) stored as their :func:`canonical_json`."""
    return {"name": name, "backend": backend, "embedded": embedded, "model": model, "seed": seed,
            "params": canonical_json(params) if params is not None else None}


def rows_to_table(rows: Iterable[Mapping[str, Any]], schema: pa.Schema = PAIR_SCHEMA) -> pa.Table:
    """Validate rows against ``schema`` (pyarrow raises on a wrong type or a missing required field)."""
    rows = list(rows)
    if schema is PAIR_SCHEMA or schema is REJECTED_SCHEMA:
        for task in {row.get("task") for row in rows}:
            if not isinstance(task, str) or REGISTRY.task(task) is None:
                first = next(row.get("id") for row in rows if row.get("task") == task)
                known = ", ".join(sorted(REGISTRY.tasks))
                raise ValueError(f"row {first!r}: task {task!r} is not registered (known: {known})")
    table = pa.Table.from_pylist(rows, schema=with_metadata(schema))
    # pyarrow does not enforce nullable=False on conversion; the contract does.
    for field in schema:
        if not field.nullable and table[field.name].null_count:
            first = table[field.name].to_pylist().index(None)
            raise ValueError(f"row {rows[first].get('id')!r}: required column {field.name!r} is null")
    return table


def upgrade_table(table: pa.Table, schema: pa.Schema = PAIR_SCHEMA) -> pa.Table:
    """A table of an older schema version with the current columns: missing ones (and missing struct
    fields) are null, v1's ``origin.author`` "poster;editor" becomes ``origin.authors``. Columns not in
    the table's selection are left out, so a reader asking for few columns still gets few."""
    columns, fields = [], []
    for field in schema:
        if field.name not in table.column_names:
            continue
        column = table[field.name]
        if not column.type.equals(field.type):
            values = column.to_pylist()
            if field.name == "origin":
                values = [_upgrade_origin(v) for v in values]
            column = pa.array(values, type=field.type)
        columns.append(column)
        fields.append(field.with_nullable(True))
    for name in table.column_names:  # columns this version does not know stay as they are
        if schema.get_field_index(name) < 0:
            columns.append(table[name])
            fields.append(table.schema.field(name))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields, metadata=table.schema.metadata))


def _upgrade_origin(origin: dict[str, Any] | None) -> dict[str, Any] | None:
    if origin is None or "authors" in origin:
        return origin
    author = origin.pop("author", None)
    origin["authors"] = [a for a in author.split(";") if a] if author else None
    return origin
