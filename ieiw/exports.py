"""`ieiw export`: the kept pairs of a build in the layouts other trainers read.

Formats (``FORMATS``):

- ``instructdiffusion``: the official IEIW loader's layout (``IEIWDataset`` in InstructDiffusion's
  ``dataset/editing/edit_zip_dataset.py``): ``images/<id>_input.<ext>``, ``images/<id>_edited.<ext>`` (the
  stored bytes) and ``meta_infov1.json``, a JSON list of ``{"input", "edited", "instruction"}``. Each path is
  written behind the official ``/mnt/external/tmp/2023/06/11/`` prefix, which the loader replaces with its
  configured ``path`` (``data/ieiw/`` in ``configs/instruct_diffusion.yaml``) and opens relative to its working
  directory, the InstructDiffusion checkout: put the export folder at that ``path`` and the paths resolve. The
  train split only, unless another is asked for (the official loader has no split of its own).
- ``hf-instructpix2pix``: Parquet with ``input_image``, ``edited_image`` (image structs carrying Hugging Face
  ``Image`` features) and ``edit_prompt``, the column names diffusers' ``train_instruct_pix2pix.py`` uses by
  default, as ``data/train-NNNNN.parquet`` and ``data/validation-NNNNN.parquet`` (the rows' ``split``), so
  ``load_dataset(DIR)`` (and ``--dataset_name DIR``) gives a ``train`` and a ``validation`` split.
- ``webdataset``: ``shard-NNNNNN.tar`` with ``<key>.input.<ext>``, ``<key>.edited.<ext>``, ``<key>.txt``
  (instruction) and ``<key>.json`` (id, task, split, edit_kind, origin, scores) per pair; the key is the row id.

Every format streams row group by row group (a shard's light columns first, then the images of the rows
that are exported), so memory stays flat whatever the corpus size. The export is written into a temporary
sibling folder and renamed into place only when complete; an earlier export in ``out`` (recognised by its
``ieiw-export.json``) is replaced whole, so re-exporting with a longer takedown list leaves no withheld
image behind. Every single file is itself written to a temp name and renamed.

A row is withheld when its ``id``, ``origin.record_id``, ``origin.url`` or ``origin.edit_url`` is on the
takedown list (compared as :class:`ieiw.schemas.takedown.Takedown` does: URLs normalised, ids case-folded).
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ieiw.imageio import extension, extension_for_format
from ieiw.schemas import storage
from ieiw.schemas.layout import MANIFEST, pairs_folder
from ieiw.schemas.manifest import load_manifest
from ieiw.schemas.rows import IMAGE, SCHEMA_VERSION, _hf_feature
from ieiw.schemas.storage import TMP_PREFIX, atomic_file, folder_mode, fsync_dir
from ieiw.schemas.takedown import Takedown

FORMATS = ("instructdiffusion", "hf-instructpix2pix", "webdataset")
MARKER = "ieiw-export.json"
META_NAME = "meta_infov1.json"
SPLIT_NAMES = {"train": "train", "val": "validation"}  # row split -> Hugging Face split name
# The prefix the official IEIWDataset replaces with its `path` (dataset/editing/edit_zip_dataset.py).
OFFICIAL_PREFIX = "/mnt/external/tmp/2023/06/11/"
DEFAULT_SPLIT = {"instructdiffusion": "train"}  # a format's split when none is asked for (else: every split)

LIGHT = ["id", "task", "instruction", "origin", "scores", "split", "edit_kind"]
IMAGES = ["source_image", "target_image"]
SHARD_ROWS = 5000  # pairs per output file (hf-instructpix2pix, webdataset)
SHARD_BYTES = 1 << 30  # ... or this many image bytes, whichever comes first

HF_SCHEMA = pa.schema(
    [pa.field("input_image", IMAGE), pa.field("edited_image", IMAGE), pa.field("edit_prompt", pa.string())]
)
HF_SCHEMA = HF_SCHEMA.with_metadata(
    {b"huggingface": json.dumps({"info": {"features": {f.name: _hf_feature(f.type) for f in HF_SCHEMA}}}).encode()}
)


class ExportError(ValueError):
    """Bad input to an export or a card (a folder that is no build, an unknown format, a missing file)."""


@dataclass
class ExportResult:
    format: str
    out: Path
    written: int = 0  # pairs in the export
    withheld: int = 0  # pairs left out because the takedown list names them
    other_split: int = 0  # pairs left out by ``split``
    files: int = 0  # files written (images, metadata, shards)
    by_task: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        extra = f", {self.other_split} in the other split" if self.other_split else ""
        return (f"{self.out}: {self.format} export of {self.written} pairs {dict(sorted(self.by_task.items()))}"
                f" in {self.files} files; withheld {self.withheld} (takedown){extra}")


# -- inputs ------------------------------------------------------------------------------------------------


def read_takedown_files(files: Iterable[Path]) -> set[str]:
    """Entries of takedown files (one id or URL a line, ``#`` comments); a missing file is an error."""
    files = [Path(f) for f in files]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ExportError(f"takedown file not found: {', '.join(missing)}")
    return set(Takedown.load(files).entries)


@dataclass
class Selection:
    """What a pass over the corpus let through and left out."""

    takedown: Takedown
    split: str | None
    withheld: int = 0
    other_split: int = 0

    def keep(self, row: dict[str, Any]) -> bool:
        if self.takedown.blocks_row(row):
            self.withheld += 1
            return False
        if self.split is not None and row.get("split") != self.split:
            self.other_split += 1
            return False
        return True


def iter_batches(pairs: Path, selection: Selection, images: bool = True,
                 columns: list[str] = LIGHT) -> Iterator[tuple[list[dict], pa.Table | None]]:
    """(light rows, image table) per row group of every shard the manifest lists, kept rows only.

    The light columns are read first; a row group's images are read only when one of its rows is kept.
    """
    manifest = load_manifest(pairs)
    if int(manifest.get("schema_version", 0)) > SCHEMA_VERSION:
        raise ExportError(f"{pairs}: schema version {manifest['schema_version']} is newer than this ieiw"
                          f" ({SCHEMA_VERSION})")
    from ieiw.progress import track

    entries = sorted(manifest["units"].values(), key=lambda e: e["shard"])
    for entry in track(entries, len(entries), "export", "shard"):
        path = pairs / entry["shard"]
        if not storage.exists(path):
            raise ExportError(f"{path}: listed in {pairs / MANIFEST} but missing (ieiw verify {pairs})")
        shard = storage.parquet_file(path)
        present = set(shard.schema_arrow.names)
        light = [c for c in columns if c in present]  # v1 shards have no split column
        for group in range(shard.num_row_groups):
            rows = shard.read_row_group(group, columns=light).to_pylist()
            mask = [selection.keep(row) for row in rows]
            if not any(mask):
                continue
            kept = [row for row, keep in zip(rows, mask, strict=True) if keep]
            table = None
            if images:
                table = shard.read_row_group(group, columns=IMAGES)
                if not all(mask):
                    table = table.filter(pa.array(mask))
            yield kept, table


# -- outputs -----------------------------------------------------------------------------------------------


def image_extension(cell: dict[str, Any]) -> str:
    """The file extension of an image cell: from its ``path``, else sniffed from its bytes."""
    suffix = Path(cell.get("path") or "").suffix.lstrip(".")
    return extension_for_format(suffix) if suffix else extension(cell["bytes"])


def safe_key(row_id: str) -> str:
    """A file-name and webdataset key: no dots (webdataset splits the key at the first dot), no slashes."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", row_id)


def _json_clean(value: Any) -> Any:
    """JSON-safe: NaN/inf floats become null (json.dumps would write invalid JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_clean(v) for v in value]
    return value


def _pairs_of(rows: list[dict], table: pa.Table) -> Iterator[tuple[dict, dict, dict]]:
    """(row, source cell, target cell) one pair at a time (a row group holds at most 64)."""
    sources, targets = table.column("source_image"), table.column("target_image")
    for i, row in enumerate(rows):
        yield row, sources[i].as_py(), targets[i].as_py()


def write_instructdiffusion(batches: Iterable[tuple[list[dict], pa.Table]], out: Path, result: ExportResult,
                            **_: Any) -> None:
    images = out / "images"
    images.mkdir()
    with atomic_file(out / META_NAME) as meta:
        meta.write(b"[")
        first = True
        for rows, table in batches:
            for row, source, target in _pairs_of(rows, table):
                key = safe_key(row["id"])
                item = {}
                for name, cell in (("input", source), ("edited", target)):
                    relative = f"images/{key}_{name}.{image_extension(cell)}"
                    (out / relative).write_bytes(cell["bytes"])
                    item[name] = OFFICIAL_PREFIX + relative
                item["instruction"] = row["instruction"]
                meta.write((b"\n" if first else b",\n") + json.dumps(item, ensure_ascii=False).encode())
                first = False
                result.files += 2
                _count(result, row)
        meta.write(b"\n]\n")
    result.files += 1


class RollingFiles:
    """Numbered output files that roll over after ``rows`` pairs or ``size`` image bytes."""

    def __init__(self, out: Path, name: Callable[[int], str], rows: int, size: int):
        self.out, self.name, self.rows, self.size = out, name, rows, size
        self.index, self.count, self.bytes, self.current = 0, 0, 0, None
        self.files = 0

    def room(self, nbytes: int) -> None:
        """Make sure a file is open that can take one more pair of ``nbytes``."""
        if self.current is not None and (self.count >= self.rows or (self.count and self.bytes + nbytes > self.size)):
            self.close()
        if self.current is None:
            self.current = self.open(self.out / self.name(self.index))
            self.index += 1
            self.count = self.bytes = 0

    def added(self, nbytes: int) -> None:
        self.count += 1
        self.bytes += nbytes

    def close(self) -> None:
        if self.current is not None:
            self.finish(self.current)
            self.current = None
            self.files += 1

    def open(self, path: Path) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def finish(self, handle: Any) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class _ParquetFiles(RollingFiles):
    """Rolling Parquet files; pairs are buffered into row groups of ``ROW_GROUP`` (a streaming reader's memory
    stays at one row group's images, as in the build's own shards)."""

    ROW_GROUP = 64

    def __init__(self, *args: Any):
        super().__init__(*args)
        self.pending: list[pa.Table] = []

    def open(self, path: Path) -> Any:
        context = atomic_file(path)
        handle = context.__enter__()
        return context, pq.ParquetWriter(handle, HF_SCHEMA, compression="snappy")

    def append(self, piece: pa.Table, nbytes: int) -> None:
        self.room(nbytes)
        self.pending.append(piece)
        self.added(nbytes)
        if len(self.pending) >= self.ROW_GROUP:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.current[1].write_table(pa.concat_tables(self.pending).combine_chunks(), row_group_size=self.ROW_GROUP)
            self.pending = []

    def finish(self, current: Any) -> None:
        self.flush()
        context, writer = current
        writer.close()
        context.__exit__(None, None, None)

    def abort(self) -> None:
        self.pending = []
        if self.current is not None:
            context, writer = self.current
            writer.close()
            context.__exit__(RuntimeError, RuntimeError("aborted"), None)
            self.current = None


def write_hf_instructpix2pix(batches: Iterable[tuple[list[dict], pa.Table]], out: Path, result: ExportResult,
                             shard_rows: int = SHARD_ROWS, shard_bytes: int = SHARD_BYTES, **_: Any) -> None:
    data = out / "data"
    data.mkdir()
    writers: dict[str, _ParquetFiles] = {}
    try:
        for rows, table in batches:
            source, target = table.column("source_image"), table.column("target_image")
            sizes = pc.add(pc.binary_length(pc.struct_field(source, "bytes")),
                           pc.binary_length(pc.struct_field(target, "bytes"))).to_pylist()
            prompts = pa.chunked_array([pa.array([row["instruction"] for row in rows], pa.string())])
            group = pa.Table.from_arrays([source, target, prompts], schema=HF_SCHEMA)
            for i, row in enumerate(rows):  # one pair at a time, so files roll over exactly at the limits
                split = SPLIT_NAMES.get(row.get("split") or "train", "train")
                files = writers.get(split)
                if files is None:
                    files = writers[split] = _ParquetFiles(data, lambda n, s=split: f"{s}-{n:05d}.parquet",
                                                           shard_rows, shard_bytes)
                # take() copies the pair out: a pending row must not keep its whole input row group alive
                files.append(group.take([i]), sizes[i] or 0)
                _count(result, row)
        for files in writers.values():
            files.close()
    except BaseException:
        for files in writers.values():
            files.abort()
        raise
    result.files += sum(files.files for files in writers.values())


class _TarFiles(RollingFiles):
    def open(self, path: Path) -> Any:
        context = atomic_file(path)
        handle = context.__enter__()
        return context, tarfile.open(fileobj=handle, mode="w", format=tarfile.GNU_FORMAT)

    def finish(self, current: Any) -> None:
        context, tar = current
        tar.close()
        context.__exit__(None, None, None)

    def abort(self) -> None:
        if self.current is not None:
            context, tar = self.current
            tar.close()
            context.__exit__(RuntimeError, RuntimeError("aborted"), None)
            self.current = None

    def add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, 0  # deterministic: same corpus, same bytes
        self.current[1].addfile(info, io.BytesIO(data))


def write_webdataset(batches: Iterable[tuple[list[dict], pa.Table]], out: Path, result: ExportResult,
                     shard_rows: int = SHARD_ROWS, shard_bytes: int = SHARD_BYTES, **_: Any) -> None:
    tars = _TarFiles(out, lambda n: f"shard-{n:06d}.tar", shard_rows, shard_bytes)
    try:
        for rows, table in batches:
            for row, source, target in _pairs_of(rows, table):
                key = safe_key(row["id"])
                tars.room(len(source["bytes"]) + len(target["bytes"]))
                tars.add(f"{key}.input.{image_extension(source)}", source["bytes"])
                tars.add(f"{key}.edited.{image_extension(target)}", target["bytes"])
                tars.add(f"{key}.txt", row["instruction"].encode())
                meta = {k: row.get(k) for k in ("id", "task", "split", "edit_kind", "origin", "scores")}
                tars.add(f"{key}.json", json.dumps(_json_clean(meta), ensure_ascii=False, sort_keys=True).encode())
                tars.added(len(source["bytes"]) + len(target["bytes"]))
                _count(result, row)
        tars.close()
    except BaseException:
        tars.abort()
        raise
    result.files += tars.files


WRITERS = {
    "instructdiffusion": write_instructdiffusion,
    "hf-instructpix2pix": write_hf_instructpix2pix,
    "webdataset": write_webdataset,
}


def _count(result: ExportResult, row: dict[str, Any]) -> None:
    result.written += 1
    result.by_task[row["task"]] = result.by_task.get(row["task"], 0) + 1


def _check_target(out: Path, pairs: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise ExportError(f"{out}: not empty and not an earlier ieiw export (no {MARKER}); give a new or empty folder")
    resolved, source = storage.key(out), storage.key(pairs)
    if resolved == source or source.startswith(resolved.rstrip("/") + "/"):
        raise ExportError(f"{out}: would replace the corpus it exports ({pairs})")


def _swap_into_place(staging: Path, out: Path) -> None:
    """Rename the finished export to ``out``; an earlier export there is removed afterwards."""
    old = None
    if out.exists():
        old = out.with_name(f"{TMP_PREFIX}old-{out.name}-{os.getpid()}")
        os.replace(out, old)
    os.replace(staging, out)
    fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export(folder: Path, out: Path, fmt: str, takedown: set[str] | frozenset[str] = frozenset(),
           split: str | None = None, *, shard_rows: int = SHARD_ROWS, shard_bytes: int = SHARD_BYTES) -> ExportResult:
    """Write the kept pairs of ``folder`` (a build's out folder or its ``ieiw/``) to ``out`` in ``fmt``.

    ``takedown``: ids and URLs whose rows are withheld (see the module docstring); ``split``: ``train`` or
    ``val`` to export one split only, ``all`` for both; None: the format's default (:data:`DEFAULT_SPLIT`).
    Returns the counts of written and withheld pairs.
    """
    if fmt not in WRITERS:
        raise ExportError(f"unknown export format {fmt!r} (one of {', '.join(FORMATS)})")
    if split not in (None, "train", "val", "all"):
        raise ExportError(f"unknown split {split!r} (train, val or all)")
    split = DEFAULT_SPLIT.get(fmt) if split is None else split
    split = None if split == "all" else split
    if shard_rows < 1 or shard_bytes < 1:
        raise ExportError("shard_rows and shard_bytes must be positive")
    pairs = pairs_folder(folder)
    out = Path(out)
    _check_target(out, pairs)
    out.parent.mkdir(parents=True, exist_ok=True)
    selection = Selection(Takedown.load([], takedown), split)
    result = ExportResult(format=fmt, out=out)
    staging = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}export-{out.name}-", dir=out.parent))
    try:
        WRITERS[fmt](iter_batches(pairs, selection), staging, result, shard_rows=shard_rows, shard_bytes=shard_bytes)
        result.withheld, result.other_split = selection.withheld, selection.other_split
        marker = {
            "format": fmt,
            "source": str(pairs.resolve()),
            "split": split,
            "written": result.written,
            "withheld": result.withheld,
            "other_split": result.other_split,
            "by_task": dict(sorted(result.by_task.items())),
            "takedown_digest": Takedown.load([], takedown).digest() if takedown else None,
        }
        with atomic_file(staging / MARKER) as handle:
            handle.write((json.dumps(marker, indent=1) + "\n").encode())
        result.files += 1
        os.chmod(staging, folder_mode())  # mkdtemp makes it 0700; 0755 under the usual umask 022
        _swap_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return result
