"""What the editing-data importers share: Parquet files streamed by row ranges, image cells read as stored,
and the ``edit`` row (docs/multitask.md, "Editing data importers").

The importers (:mod:`ieiw.builders.ip2p`, :mod:`ieiw.builders.magicbrush`, :mod:`ieiw.builders.gier`)
bring released instruction-editing data into the row schema as it is: the source and target images are the
dataset's own bytes, the instruction its own text, the task ``edit`` (family ``editing``).

**Parquet, never whole.** A Parquet importer lists the split's files (:func:`list_parquet`), reads only their
footers to plan (:func:`parquet_parts`: rows per row group), and cuts each file into units of at most
``unit_rows`` consecutive rows (:func:`row_ranges`), along row-group boundaries where the groups allow; a unit
never spans two files. A unit reads only the row groups its range
touches, one at a time (:func:`iter_rows`), so memory stays at one row group whatever the file's size. A file
whose footer cannot be read, or which lacks a column the importer needs, stops the build before any unit runs
(:class:`ImportFormatError`, naming the file, the missing role, the names looked for and the columns there).

**Images** (:func:`read_cell_image`): an image cell is a ``{bytes, path}`` struct (Hugging Face ``datasets``'
``Image`` feature), plain binary, or a struct with only a ``path`` (read relative to the Parquet file's folder;
a path that is absolute, has a ``..`` or leads out of that folder through a symlink is not read:
``path_outside_root``, :mod:`ieiw.schemas.paths`).
The bytes are kept as stored when they decode (any format :mod:`ieiw.imageio` allows) to RGB with no EXIF
orientation to apply; otherwise they are re-encoded as lossless PNG of what a viewer shows (EXIF applied), so
the trainer, which applies no EXIF step, sees the picture the instruction was written for. Record-level trouble
is a :class:`~ieiw.schemas.units.SourceRecordError` naming the file and the row: ``missing_image`` (a null cell,
or a path that is not there), ``unreadable_image``, ``empty_instruction``, ``size_mismatch`` (where the dataset
promises equal sizes), ``unreadable_row_group`` (each row of a row group pyarrow cannot read: a damaged page; the
unit's other row groups build).

**Text that is not UTF-8.** Parquet writers do not check that a string column holds UTF-8, and pyarrow raises
when it converts one that does not; such a cell is decoded with ``surrogateescape`` instead
(:func:`python_values`), so it is one record's trouble: text that reaches a row has U+FFFD where the bytes were
(:func:`~ieiw.schemas.rows.text_field`), and a ``path`` names the file those bytes name.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from ieiw.imageio import ImageDecodeError, Orientation, decode, extension
from ieiw.schemas.config import BuilderConfig
from ieiw.schemas.lazy import locked_cached_property
from ieiw.schemas.paths import PATH_OUTSIDE_ROOT, PathOutsideRoot, path_under
from ieiw.schemas.rows import builder_cell, image_cell, origin_cell, row_id, text_field
from ieiw.schemas.source_image import SourceImage
from ieiw.schemas.units import CandidateBuilder, SourceRecordError, UnitResult, WorkUnit

TASK = "edit"
PARQUET_PATTERNS = ("data/{split}-*.parquet", "data/{split}/*.parquet", "{split}/*.parquet", "{split}-*.parquet")
SAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_ROWS_PER_BYTE = 8  # a footer claiming more rows than this per byte of its file is damaged
OBJECT_REPR = re.compile(r" ?<[\w.]+ object at 0x[0-9a-fA-F]+>")  # Pillow names its BytesIO: not stable


class ImportFormatError(ValueError):
    """A dataset file an importer cannot use at all; the one-line message names the file."""


# -- Parquet files -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParquetPart:
    """One Parquet file of a split: what its footer says."""

    path: Path
    name: str  # relative to the dataset root, posix, without ``.parquet``: the record-id prefix
    size: int
    groups: tuple[int, ...]  # rows per row group
    columns: tuple[str, ...]
    schema: pa.Schema

    @property
    def rows(self) -> int:
        return sum(self.groups)


def list_parquet(root: Path, split: str, pattern: str | None = None) -> list[Path]:
    """The split's Parquet files under ``root``, sorted by path: ``pattern`` (a glob under ``root``, ``{split}``
    filled in) or the first of :data:`PARQUET_PATTERNS` that matches; ``root`` itself when it is a file.
    Raises ``FileNotFoundError`` naming what was looked for."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not found")
    tried = [pattern] if pattern else list(PARQUET_PATTERNS)
    for glob in tried:
        found = sorted(p for p in root.glob(glob.format(split=split)) if p.is_file())
        if found:
            return found
    looked = ", ".join(g.format(split=split) for g in tried)
    raise FileNotFoundError(f"{root}: no Parquet file of split {split!r} (looked for {looked})")


def parquet_parts(paths: Sequence[Path], root: Path) -> list[ParquetPart]:
    """Each file's footer (row groups, columns); an unreadable footer raises :class:`ImportFormatError`."""
    root = Path(root)
    parts = []
    for path in paths:
        try:
            meta = pq.ParquetFile(path)
            groups = tuple(meta.metadata.row_group(g).num_rows for g in range(meta.num_row_groups))
            schema = meta.schema_arrow
            total, size = meta.metadata.num_rows, path.stat().st_size
        except (OSError, ValueError, pa.ArrowException) as exc:  # ValueError: a name that is not UTF-8
            raise ImportFormatError(f"{path}: not a readable Parquet file ({exc})") from None
        # A damaged footer may claim any count; units are planned from it, so a count no file can hold would
        # plan (almost) forever. Every row of an editing dataset costs bytes; 8 rows a byte is far beyond any.
        if any(count < 0 for count in groups) or sum(groups) != total or total > MAX_ROWS_PER_BYTE * size:
            raise ImportFormatError(f"{path}: a damaged footer (row groups of {', '.join(map(str, groups[:8]))}"
                                    f"{' ...' if len(groups) > 8 else ''} rows; the file says {total} rows in "
                                    f"{size} bytes)")
        try:
            name = path.relative_to(root).as_posix() if root.is_dir() else path.name
        except ValueError:
            name = path.name
        parts.append(ParquetPart(path, name.removesuffix(".parquet"), size, groups,
                                 tuple(schema.names), schema))
    return parts


def resolve_columns(part: ParquetPart, roles: Mapping[str, tuple[str, ...]], required: Sequence[str],
                    overrides: Mapping[str, str]) -> dict[str, str | None]:
    """role -> the file's column for it: the configured override, else the first alias present; a required
    role with no column raises :class:`ImportFormatError` naming the file, the names looked for and the
    columns there. Optional roles missing map to ``None``."""
    out: dict[str, str | None] = {}
    for role, aliases in roles.items():
        wanted = (overrides[role],) if role in overrides else aliases
        column = next((name for name in wanted if name in part.columns), None)
        if column is None and role in required:
            raise ImportFormatError(
                f"{part.path}: no {role} column (looked for {', '.join(wanted)}; the file has "
                f"{', '.join(part.columns) or 'no columns'})")
        out[role] = column
    return out


def row_ranges(parts: Sequence[ParquetPart], unit_rows: int, limit: int | None = None) -> list[tuple[int, int, int]]:
    """``(part index, start, stop)`` per unit: at most ``unit_rows`` consecutive rows of one file, files in order,
    at most ``limit`` rows in all. Units follow the row groups: whole groups are packed together while they fit,
    and only a group larger than ``unit_rows`` is cut, so a row group is read by one unit wherever it can be."""
    units: list[tuple[int, int, int]] = []
    left = limit
    for index, part in enumerate(parts):
        total = part.rows if left is None else min(part.rows, left)
        edges = [0]
        for count in part.groups:
            edges.append(min(edges[-1] + count, total))
        opened: int | None = None
        for a, b in itertools.pairwise(edges):
            if a >= b:
                continue
            if b - a > unit_rows:  # a large group: close what is open, cut the group
                if opened is not None:
                    units.append((index, opened, a))
                    opened = None
                units += [(index, s, min(s + unit_rows, b)) for s in range(a, b, unit_rows)]
            elif opened is None:
                opened = a
            elif b - opened > unit_rows:
                units.append((index, opened, a))
                opened = a
        if opened is not None:
            units.append((index, opened, total))
        if left is not None:
            left -= total
            if left <= 0:
                break
    return units


@dataclass(frozen=True)
class UnreadableRowGroup:
    """What :func:`iter_rows` gives, with ``errors="yield"``, for each row of a row group pyarrow cannot read
    (a damaged page, a value it cannot convert): the builder fails those rows, the others build."""

    group: int
    detail: str


def python_values(array: pa.Array | pa.ChunkedArray) -> list[Any]:
    """A column's values as Python, one bad cell being one record's trouble, not the row group's: text that is
    not UTF-8 (a Parquet string column may hold any bytes; writers do not check) is decoded with
    ``surrogateescape`` where pyarrow's own conversion raises (:func:`~ieiw.schemas.rows.text_field` makes it
    writable), and a value Python cannot hold (a timestamp past year 9999) is null."""
    if isinstance(array, pa.ChunkedArray):
        return [value for chunk in array.chunks for value in python_values(chunk)]
    try:
        return array.to_pylist()
    except (ValueError, OverflowError, pa.ArrowException):  # UnicodeDecodeError; a date Python cannot hold
        pass
    kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        raw = array.view(pa.large_binary() if pa.types.is_large_string(kind) else pa.binary())
        return [None if v is None else v.decode("utf-8", "surrogateescape") for v in raw.to_pylist()]
    if pa.types.is_struct(kind):
        names = [kind.field(i).name for i in range(kind.num_fields)]
        children = [python_values(child) for child in array.flatten()]
        valid = array.is_valid().to_pylist()
        return [dict(zip(names, values)) if ok else None for ok, values in zip(valid, zip(*children))]
    if pa.types.is_dictionary(kind):
        return python_values(array.dictionary_decode())
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return [python_values(item.values) if item.is_valid else None for item in array]
    out = []
    for item in array:  # a timestamp past year 9999, a map holding such text: the cell that will not convert is null
        try:
            out.append(item.as_py())
        except (ValueError, OverflowError, pa.ArrowException):
            out.append(None)
    return out


def table_rows(table: pa.Table) -> list[dict[str, Any]]:
    """``table.to_pylist()``, with :func:`python_values`' leniency for cells Python cannot hold as they are."""
    try:
        return table.to_pylist()
    except (ValueError, OverflowError, pa.ArrowException):
        columns = [python_values(table.column(i)) for i in range(table.num_columns)]
        return [dict(zip(table.column_names, values)) for values in zip(*columns)] if columns else []


def iter_rows(path: Path, start: int, stop: int, columns: Sequence[str],
              errors: Literal["raise", "yield"] = "raise") -> Iterator[tuple[int, int, Any]]:
    """``(row index in the file, row group, values)`` for rows ``start <= i < stop`` of ``path``: only the row
    groups the range touches are read, one at a time, and only ``columns``. A row group pyarrow cannot read
    raises, or with ``errors="yield"`` gives an :class:`UnreadableRowGroup` as the values of each of its rows
    in the range (and the next group is read)."""
    handle = pq.ParquetFile(path)
    offset = 0
    for group in range(handle.num_row_groups):
        count = handle.metadata.row_group(group).num_rows
        lo, hi = max(start, offset), min(stop, offset + count)
        if lo < hi:
            try:
                table = handle.read_row_group(group, columns=list(columns)).slice(lo - offset, hi - lo)
                rows = table_rows(table)
            except (OSError, ValueError, pa.ArrowException) as exc:  # ArrowInvalid is a ValueError too
                if errors == "raise":
                    raise
                problem = UnreadableRowGroup(group, f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
                rows = [problem] * (hi - lo)
            for i, values in enumerate(rows):
                yield lo + i, group, values
        offset += count
        if offset >= stop:
            break


# -- images and text ----------------------------------------------------------------------------------
def cell_bytes(value: Any, folder: Path | None) -> tuple[bytes | None, str | None]:
    """(bytes, the cell's path) of an image cell: a ``{bytes, path}`` struct, plain bytes, or a struct with
    only a path (read under ``folder``; never read without one). ``(None, path)`` when there are no bytes.
    A path that is no path under ``folder`` (absolute, ``..``, symlinked out) raises :class:`PathOutsideRoot`."""
    if value is None:
        return None, None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value), None
    if isinstance(value, Mapping):
        data, path = value.get("bytes"), value.get("path")
        if data is not None:
            return bytes(data), path
        if path:
            if folder is None:
                return None, path
            candidate = path_under(folder, path)
            try:
                return candidate.read_bytes(), path
            except OSError:
                return None, path
        return None, path
    raise TypeError(f"an image cell is a {{bytes, path}} struct or binary, not {type(value).__name__}")


def read_image(data: bytes, record_id: str, file: str, where: str) -> SourceImage:
    """``data`` as a :class:`SourceImage`: the bytes kept when they decode to RGB with no EXIF step left, else
    lossless PNG of the upright pixels. ``unreadable_image`` naming ``file`` and ``where`` otherwise."""
    try:
        decoded = decode(data, Orientation.APPLY)
    except ImageDecodeError as exc:
        detail = OBJECT_REPR.sub("", str(exc))
        raise SourceRecordError("unreadable_image", record_id, file, f"{where}: {detail}") from None
    return SourceImage.from_decoded(data, decoded, fmt="png")


def read_cell_image(value: Any, folder: Path | None, record_id: str, file: str, where: str) -> SourceImage:
    """An image cell read as :func:`read_image`; a null cell or a missing path is ``missing_image``."""
    try:
        data, path = cell_bytes(value, folder)
    except PathOutsideRoot as exc:
        raise SourceRecordError(PATH_OUTSIDE_ROOT, record_id, file, f"{where}: {exc}") from None
    except TypeError as exc:
        raise SourceRecordError("unreadable_image", record_id, file, f"{where}: {exc}") from None
    if data is None:
        detail = f"no bytes and {path!r} is not there" if path else "the cell is empty"
        raise SourceRecordError("missing_image", record_id, file, f"{where}: {detail}")
    return read_image(data, record_id, file, where)


def read_cell_instruction(text: Any, record_id: str, file: str, where: str) -> str:
    """An instruction cell's text on one line (runs of whitespace become one space); ``empty_instruction`` when nothing
    is left or it is no string."""
    if not isinstance(text, str) or not text.strip():
        raise SourceRecordError("empty_instruction", record_id, file, f"{where}: instruction is {text!r:.200}")
    return text_field(" ".join(text.split()))


def check_same_size(source: SourceImage, target: SourceImage, record_id: str, file: str, where: str) -> None:
    """``size_mismatch`` when the dataset promises equal sizes and the two differ."""
    if source.pixels.shape[:2] != target.pixels.shape[:2]:
        raise SourceRecordError("size_mismatch", record_id, file,
                                f"{where}: source is {source.width}x{source.height}, target "
                                f"{target.width}x{target.height}; this dataset's pairs have one size")


def note_sizes(source: SourceImage, target: SourceImage, require_same: bool, record_id: str, file: str, where: str,
               counters: Any, extra: dict[str, Any]) -> None:
    """The size policy of a dataset whose edits may change the size (GIER, GQA-Inpaint): partners of different
    sizes fail (``size_mismatch``) when ``require_same``, else are counted (``size_differs``) with the target's
    size in ``extra``; images re-encoded to show their pixels are counted too."""
    if source.pixels.shape[:2] != target.pixels.shape[:2]:
        if require_same:
            check_same_size(source, target, record_id, file, where)
        counters["size_differs"] += 1
        extra["target_size"] = [target.width, target.height]
    counters["reencoded_images"] += int(source.reencoded) + int(target.reencoded)


def index_units(name: str, total: int, unit_size: int) -> list[WorkUnit]:
    """Units of ``unit_size`` consecutive records of a list read whole (a JSON list of pairs)."""
    return [WorkUnit(key=f"{name}-{index:05d}", payload={"start": start, "stop": min(start + unit_size, total)})
            for index, start in enumerate(range(0, total, unit_size))]


def safe_stem(text: str) -> str:
    return SAFE.sub("_", text).strip("_") or "row"


# -- the row ----------------------------------------------------------------------------------------
def edit_row(*, builder: str, dataset: str, split: str | None, record_id: str, image_id: str, instruction: str,
             source: SourceImage, target: SourceImage, mask: bytes | None, license: str | None,
             params: Mapping[str, Any], extra: Mapping[str, Any], backend: str, seed: int | None = None,
             url: str | None = None, edit_url: str | None = None) -> dict[str, Any]:
    """One ``edit`` row; the id is made from (dataset, record id, builder, ``params``, task), ``extra`` is
    recorded in ``builder.params`` beside ``params`` and shapes nothing."""
    rid = row_id(dataset, record_id, builder, dict(params), TASK)
    stem = safe_stem(record_id)
    return {
        "id": rid,
        "task": TASK,
        "instruction": instruction,
        "source_image": image_cell(source.data, f"{stem}_source.{extension(source.data)}"),
        "target_image": image_cell(target.data, f"{stem}_target.{extension(target.data)}"),
        "mask": image_cell(mask, f"{stem}_mask.png") if mask is not None else None,
        "width": source.width,
        "height": source.height,
        "origin": origin_cell(dataset=dataset, split=split, record_id=record_id, image_id=image_id, url=url,
                              license=license, edit_url=edit_url),
        "exemplar": None,
        "scores": None,
        "builder": builder_cell(name=builder, backend=backend, embedded=False, seed=seed,
                                params={**params, **extra, "source_image": source.provenance(),
                                        "target_image": target.provenance()}),
        "drop_reason": None,
    }


# -- the Parquet importers' config and builder ------------------------------------------------------
class ParquetImportConfig(BuilderConfig):
    """What every Parquet importer section has (``instructpix2pix:``, ``magicbrush:``)."""

    root: Path = Field(description="the dataset folder (a clone of its Hugging Face repository) or one Parquet file")
    split: str = "train"
    files: str | None = Field(None, description="a glob under root ({split} filled in); default: the first of "
                                                "data/{split}-*.parquet, data/{split}/*.parquet, {split}/*.parquet, "
                                                "{split}-*.parquet that matches")
    limit: int | None = Field(None, ge=1, description="read at most this many rows (files in name order)")
    unit_rows: int | None = Field(None, ge=1, description="rows per work unit; default: the build's unit_size")

    def parts(self) -> list[ParquetPart]:
        return parquet_parts(list_parquet(Path(self.root), self.split, self.files), Path(self.root))

    def importer(self) -> ParquetImporter:
        """The section's importer (checks its files in :meth:`preflight`)."""
        raise NotImplementedError

    section: ClassVar[str]  # the config key, for preflight lines
    missing_hint: ClassVar[str] = ""  # appended when the files are not there

    def preflight(self) -> list[str]:
        if not self.enabled:
            return []
        if not Path(self.root).exists() and getattr(self, "samples", None) is not None:
            return []  # the sample is made by the build's prepare step
        try:
            self.importer().check()
        except (FileNotFoundError, ImportFormatError) as exc:
            return [f"{self.section}: {exc}{self.missing_hint if isinstance(exc, FileNotFoundError) else ''}"]
        return []


class ParquetImporter:
    """The Parquet half of an importer builder: parts (footers, read once per process), units by row range,
    the columns each file maps to roles. Subclasses set ``name``, ``roles``, ``required`` and make rows."""

    name: str
    roles: dict[str, tuple[str, ...]]
    required: tuple[str, ...]

    def __init__(self, config: ParquetImportConfig, unit_size: int):
        self.config = config
        self.unit_rows = config.unit_rows or unit_size

    @locked_cached_property
    def parts(self) -> list[ParquetPart]:
        return self.config.parts()

    def overrides(self) -> dict[str, str]:
        return dict(getattr(self.config, "columns", {}) or {})

    def columns(self, part: ParquetPart) -> dict[str, str | None]:
        return resolve_columns(part, self.roles, self.required, self.overrides())

    def check(self) -> None:
        """List the files and map every file's columns now (footers only): raises with one line."""
        for part in self.parts:
            self.columns(part)

    def part(self, name: str) -> ParquetPart:
        for part in self.parts:
            if part.name == name:
                return part
        raise FileNotFoundError(f"{self.config.root}: the planned file {name}.parquet is no longer listed")

    def units(self) -> list[tuple[ParquetPart, int, int]]:
        self.check()
        ranges = row_ranges(self.parts, self.unit_rows, self.config.limit)
        return [(self.parts[i], start, stop) for i, start, stop in ranges]

    def files_fingerprint(self) -> list[list[Any]]:
        """(name, size, rows per group) of each file: enough to notice another release, cheap on 60 GB."""
        return [[p.name, p.size, list(p.groups)] for p in self.parts]

    def read(self, part: ParquetPart, start: int, stop: int) -> Iterator[tuple[int, int, Any]]:
        """The rows' values, or an :class:`UnreadableRowGroup` for each row pyarrow could not read."""
        columns = sorted({c for c in self.columns(part).values() if c is not None})
        return iter_rows(part.path, start, stop, columns, errors="yield")


class ParquetImportBuilder(CandidateBuilder):
    """The builder half every Parquet importer shares: units by row range along row groups, a row per
    record (``_row``), bad records as named failures. Subclasses set ``name`` and ``files`` and make rows;
    ``extra_fingerprint()`` adds their own settings."""

    name: str
    config: ParquetImportConfig
    files: ParquetImporter

    def extra_fingerprint(self) -> dict[str, Any]:
        return {}

    def fingerprint(self) -> dict[str, Any]:
        c = self.config
        return {"root": str(Path(c.root).resolve()), "split": c.split, "files": self.files.files_fingerprint(),
                "columns": dict(c.columns), "limit": c.limit, "unit_rows": self.files.unit_rows,
                "require_same_size": c.require_same_size, **self.extra_fingerprint()}

    def backends(self) -> dict[str, str]:
        return {"pairs": "parquet-import"}

    def plan(self) -> list[WorkUnit]:
        return [WorkUnit(key=f"{self.name}-{self.config.split}-{index:05d}",
                         payload={"file": part.name, "start": start, "stop": stop})
                for index, (part, start, stop) in enumerate(self.files.units())]

    def skip_reason(self, values: dict[str, Any], columns: dict[str, str | None]) -> str | None:
        """Why a readable row makes no pair, counted under ``skipped`` (an importer's own filter, such as
        InstructPix2Pix's keep-list); None: it makes one."""
        return None

    def build_unit(self, unit: WorkUnit) -> UnitResult:
        part = self.files.part(unit.payload["file"])
        columns = self.files.columns(part)
        result = UnitResult()
        for index, group, values in self.files.read(part, unit.payload["start"], unit.payload["stop"]):
            result.records += 1
            if isinstance(values, UnreadableRowGroup):
                result.failures.append(SourceRecordError(
                    "unreadable_row_group", f"{part.name}:{index}", str(part.path),
                    f"row {index} (row group {group}): {values.detail}").failure)
                continue
            skipped = self.skip_reason(values, columns)
            if skipped is not None:
                result.skipped[skipped] += 1
                continue
            try:
                result.rows.append(self._row(part, columns, index, group, values, result.counters))
            except SourceRecordError as err:
                result.failures.append(err.failure)
        return result

    def _row(self, part: ParquetPart, columns: dict[str, str | None], index: int, group: int,
             values: dict[str, Any], counters: Any) -> dict[str, Any]:
        raise NotImplementedError


def load_json_list(path: Path, what: str) -> list[Any]:
    """A release's JSON file that must hold one list (``what`` says of what, for the message); anything else
    raises ``FileNotFoundError`` or :class:`ImportFormatError` naming the file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: not found") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # JSONDecodeError, too long an integer, too deep
        raise ImportFormatError(f"{path}: not JSON ({' '.join(str(exc).split())[:200]})") from None
    except OSError as exc:  # a folder, no permission
        raise ImportFormatError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not isinstance(data, list):
        raise ImportFormatError(f"{path}: {what}, found a {type(data).__name__}")
    return data


def shown(text: str, limit: int = 200) -> str:
    """A dataset's text as a message shows it: cut short, with its length, when it is very long."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
