"""Fuzz: the editing-data importers -- InstructPix2Pix and MagicBrush (Hugging Face Parquet files, a record
is a row), GIER (a JSON list of pairs, url_dict.json and image folders), GQA-Inpaint (InstructDiffusion's
meta_info.json: a JSON list of records naming images with ``../datasets`` prefixes) and InstructPix2Pix's original
release (seeds.json entries, each name's prompt.json, the filter list; prompt folders or shard zips).

Parquet rows are damaged the way pyarrow can write them: a cell replaced by a hostile value (the column's type
changes where Arrow can infer one type for the whole column; a value no one type holds is not drawn), a null cell,
an image cell with garbage bytes or with only a ``path`` (crafted, symlinked out, or a real file beside the
Parquet file), text that is not UTF-8 (a string column holding raw bytes), or a whole column of another type. The
file is written back with pyarrow in the same row groups. Since pyarrow reads in C++, where the audit hook does
not look, the planted image outside the root is what shows a read outside (``check_outcome``'s bytes check).
"""

from __future__ import annotations

import json
import shutil
import struct
import tempfile
import zlib
from dataclasses import dataclass
from functools import cache
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fuzz_harness import (
    DELETE,
    TEXTS,
    Mutation,
    Outcome,
    Workspace,
    apply,
    byte_damage,
    check_outcome,
    count,
    mutations,
    run,
    share,
    workspace,
)
from hypothesis import assume, event, given
from hypothesis import strategies as st
from PIL import Image

from ieiw.builders.gier import GierBuilder, GierConfig
from ieiw.builders.gqa_inpaint import GqaInpaintBuilder, GqaInpaintConfig
from ieiw.builders.ip2p import InstructPix2PixBuilder, InstructPix2PixConfig
from ieiw.builders.magicbrush import MagicBrushBuilder, MagicBrushConfig
from ieiw.imageio import encode
from ieiw.samples.editing import (
    IP2P_FILTER_FILE,
    NOT_AN_IMAGE,
    make_gier_sample,
    make_gqa_inpaint_sample,
    make_ip2p_original_sample,
    make_ip2p_sample,
    make_magicbrush_sample,
)
from ieiw.schemas.rows import text_field
from ieiw.schemas.units import BuildContext, CandidateBuilder

FAMILY = "importers"
WIDTH, HEIGHT = 48, 32
PARQUET_READERS = ("ip2p", "magicbrush")
ORIGINAL_READERS = ("ip2p-original", "ip2p-zip")  # InstructPix2Pix's original release: folders, shard zips
UNFILTERED = "-unfiltered"  # a reader name's suffix: the same source built without its filter list
SIBLING = "sibling.png"  # a real image beside the Parquet files, where a path-only cell may point
LINKED = "linked.png"  # a symlink beside the Parquet files (GIER: in images/) to the planted image outside


# -- the tiny valid sources ---------------------------------------------------------------------------------
@cache
def pristine(reader: str) -> Path:
    """The reader's source, written once per process: six InstructPix2Pix rows in two files (row groups of 2),
    six MagicBrush turns of three sessions in two train files (one session's masks at twice the size), five
    GIER pairs (one output only in warped/), five GQA-Inpaint records (one target at half the size), and eight
    InstructPix2Pix pairs of four names in the original layout (``ip2p-original``: prompt folders,
    ``ip2p-zip``: two shard zips; its filter list beside them), all at 48x32."""
    if reader.endswith(UNFILTERED):
        return pristine(reader.removesuffix(UNFILTERED))
    folder = Path(tempfile.mkdtemp(prefix=f"ieiw-fuzz-{reader}-")) / reader
    if reader == "ip2p":
        make_ip2p_sample(folder, rows=6, files=2, row_group=2, width=WIDTH, height=HEIGHT)
    elif reader == "magicbrush":
        make_magicbrush_sample(folder, sessions=3, row_group=2, width=WIDTH, height=HEIGHT)
    elif reader == "gqa":
        make_gqa_inpaint_sample(folder, pairs=5, width=WIDTH, height=HEIGHT)
    elif reader in ORIGINAL_READERS:
        make_ip2p_original_sample(folder, rows=8, shards=2 if reader == "ip2p-zip" else 0, width=WIDTH, height=HEIGHT)
    else:
        make_gier_sample(folder, pairs=5, width=WIDTH, height=HEIGHT)
    if reader in PARQUET_READERS:
        pixels = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        pixels[4:20, 8:30] = (30, 200, 90)
        (folder / "data" / SIBLING).write_bytes(encode(pixels, "png"))
    return folder


def original(reader: str) -> bool:
    return reader.removesuffix(UNFILTERED) in ORIGINAL_READERS


def setup(space: Workspace, reader: str) -> None:
    shutil.copytree(pristine(reader), space.root, dirs_exist_ok=True)
    if original(reader):  # a prompt folder that is a symlink out, and an image that is one
        (space.root / "linked").symlink_to(space.planted.parent)
        first = json.loads((space.root / "seeds.json").read_text())[0]
        if reader.startswith("ip2p-original"):
            (space.root / first[0] / f"{LINKED_SEED}_0.jpg").symlink_to(space.planted)
        return
    link = space.root / ("images/linked.jpg" if reader in ("gier", "gqa") else f"data/{LINKED}")
    link.symlink_to(space.planted)


LINKED_SEED = "777"  # ip2p-original: {LINKED_SEED}_0.jpg in the first prompt folder is a symlink out


def builder(space: Workspace, reader: str) -> CandidateBuilder:
    context = BuildContext(root=space.root, out_dir=space.out, unit_size=3)
    if reader == "ip2p":
        return InstructPix2PixBuilder(InstructPix2PixConfig(root=space.root), context)
    if reader == "magicbrush":
        return MagicBrushBuilder(MagicBrushConfig(root=space.root, split="train"), context)
    if reader == "gqa":
        return GqaInpaintBuilder(GqaInpaintConfig(root=space.root), context)
    if original(reader):
        listed = None if reader.endswith(UNFILTERED) else space.root / IP2P_FILTER_FILE
        return InstructPix2PixBuilder(InstructPix2PixConfig(root=space.root, layout="original", split="train",
                                                            filter_list=listed), context)
    return GierBuilder(GierConfig(root=space.root), context)


def parquet_files(reader: str) -> list[str]:
    """The split's Parquet files the reader reads, relative to the root."""
    split = "train"
    return sorted(p.relative_to(pristine(reader)).as_posix()
                  for p in (pristine(reader) / "data").glob(f"{split}-*.parquet"))


def names(space: Workspace, reader: str) -> list[str]:
    """Names a crafted file may use: the harness's outside names, the symlink out, and real names."""
    if reader == "gier":
        real = sorted(p.name for p in (pristine(reader) / "images").iterdir())
        return [*space.names, "linked.jpg", *real[:3], "warped", "images"]
    if reader == "gqa":
        real = sorted(p.name for p in (pristine(reader) / "images").iterdir())
        return [*space.names, "../datasets/images/linked.jpg", "images/linked.jpg", *[f"../datasets/images/{name}"
                for name in real[:2]], "../datasets/gqa-inpaint/images", "../datasets", "../datasets/",
                "../datasets/gqa-inpaint/../../outside/x.jpg", "meta_info.json"]
    if original(reader):
        seeds = json.loads((pristine(reader) / "seeds.json").read_text())
        return [*space.names, "linked", LINKED_SEED, seeds[0][0], seeds[-1][0], *seeds[1][1], "shard-00.zip",
                "seeds.json", IP2P_FILTER_FILE, f"{seeds[0][0]}/{seeds[0][1][0]}", "0", "00", "prompt"]
    return [*space.names, LINKED, SIBLING, "missing.png", ".", f"../data/{SIBLING}", f"./{SIBLING}"]


@dataclass
class ParquetDoc:
    """One Parquet file as the fuzz rewrites it: its rows, schema and row-group size."""

    rows: list[dict[str, Any]]
    schema: pa.Schema
    row_group: int


@cache
def baseline_and_docs(reader: str) -> tuple[Outcome, dict[str, Any]]:
    with workspace() as space:
        setup(space, reader)
        outcome = run(lambda: builder(space, reader), space)
        if reader == "gier":
            docs: dict[str, Any] = {name: json.loads((space.root / name).read_text())
                                    for name in ("GIER.json", "url_dict.json")}
        elif reader == "gqa":
            docs = {"meta_info.json": json.loads((space.root / "meta_info.json").read_text())}
        elif original(reader):
            docs = {name: json.loads((space.root / name).read_text()) for name in ("seeds.json", IP2P_FILTER_FILE)}
            if reader.startswith("ip2p-original"):
                docs.update({f"{name}/prompt.json": json.loads((space.root / name / "prompt.json").read_text())
                             for name, _ in docs["seeds.json"]})
        else:
            docs = {}
            for name in parquet_files(reader):
                handle = pq.ParquetFile(space.root / name)
                docs[name] = ParquetDoc(handle.read().to_pylist(), handle.schema_arrow,
                                        handle.metadata.row_group(0).num_rows)
    assert outcome.rows and not outcome.failures and outcome.plan_error is None, outcome.failures[:3]
    return outcome, docs


def observe(outcome: Outcome) -> None:
    """What the damage came to, for ``--hypothesis-show-statistics``: the refusal or the failure reasons."""
    if outcome.plan_error is not None:
        event(f"plan refused: {type(outcome.plan_error).__name__}")
    for reason in sorted({failure.reason for failure in outcome.failures}) or ["no failure"]:
        event(reason)


# -- writing damaged rows back as Parquet -----------------------------------------------------------------
@dataclass(frozen=True)
class RawText:
    """Bytes a string column holds though they are not UTF-8 (Parquet writers do not check)."""

    data: bytes

    def __repr__(self) -> str:
        return f"RawText({self.data!r})"


def _utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def column_array(values: list[Any], kind: pa.DataType) -> pa.Array | None:
    """``values`` as one Arrow column: of ``kind`` when they fit it, else of the one type Arrow infers for all of
    them (the file's schema changes); ``None`` when no one type holds them. Text that is not UTF-8 (``RawText``,
    a lone surrogate) goes into a string column as raw bytes."""
    if pa.types.is_struct(kind) and all(v is None or isinstance(v, dict) for v in values):
        fields = [kind.field(i).name for i in range(kind.num_fields)]
        names = list(dict.fromkeys([*fields, *(k for v in values if v for k in v)]))
        children = []
        for name in names:
            child = column_array([v.get(name) if v else None for v in values],
                                 kind.field(name).type if name in fields else pa.null())
            if child is None:
                return None
            children.append(child)
        try:
            return pa.StructArray.from_arrays(children, names=names, mask=pa.array([v is None for v in values]))
        except (pa.ArrowException, ValueError, TypeError):
            return None
    texty = pa.types.is_string(kind) or pa.types.is_large_string(kind)
    raw = any(isinstance(v, RawText) or (isinstance(v, str) and not _utf8(v)) for v in values)
    if texty and raw and all(v is None or isinstance(v, str | bytes | RawText) for v in values):
        data = [v.data if isinstance(v, RawText) else v.encode("utf-8", "surrogatepass") if isinstance(v, str)
                else v for v in values]
        return pa.array(data, pa.binary()).view(pa.string())
    if raw:
        return None
    for attempt in (kind, None):
        try:
            return pa.array(values, attempt)
        except (pa.ArrowException, ValueError, TypeError, OverflowError):
            continue
    return None


def write_rows(path: Path, doc: ParquetDoc, rows: list[Any]) -> bool:
    """``rows`` (a row that is no object is a row of nulls) written to ``path`` in ``doc``'s row groups; False
    when Arrow cannot hold them."""
    rows = [row if isinstance(row, dict) else {} for row in rows]
    arrays = []
    for field in doc.schema:
        array = column_array([row.get(field.name) for row in rows], field.type)
        if array is None:
            return False
        arrays.append(array)
    try:
        table = pa.Table.from_arrays(arrays, names=doc.schema.names).replace_schema_metadata(doc.schema.metadata)
        pq.write_table(table, path, row_group_size=doc.row_group, compression="snappy")
    except (pa.ArrowException, ValueError, TypeError, OverflowError):
        return False
    return True


UNREADABLE = object()  # a cell pyarrow cannot give back as Python (text that is not UTF-8)


def read_back(path: Path) -> list[dict[str, Any]]:
    """The file's rows as Python, a cell that will not convert as :data:`UNREADABLE`."""
    table = pq.read_table(path)
    columns = {}
    for name in table.column_names:
        column = table.column(name)
        try:
            columns[name] = column.to_pylist()
        except UnicodeDecodeError:
            cells = []
            for scalar in column:
                try:
                    cells.append(scalar.as_py())
                except UnicodeDecodeError:
                    cells.append(UNREADABLE)
            columns[name] = cells
    return [{name: columns[name][i] for name in columns} for i in range(table.num_rows)]


def row_key(reader: str, file: str, index: int, row: dict[str, Any]) -> str | None:
    """The record key the reader gives a row (origin.record_id): ``<file>:<row>``, or ``<img_id>:<turn>``."""
    if reader == "ip2p":
        return f"{file.removesuffix('.parquet')}:{index}"
    img_id, turn = row.get("img_id"), row.get("turn_index")
    if img_id is UNREADABLE or turn is UNREADABLE:
        return None
    return f"{img_id}:{turn}"


def touched_rows(reader: str, file: str, before: list[dict[str, Any]], after: list[dict[str, Any]],
                 index: int) -> set[str]:
    """The keys a rewrite may change: the damaged row's (old and new), and every row that reads back otherwise
    (a column whose type changed for all)."""
    keys = {row_key(reader, file, index, before[index]), row_key(reader, file, index, after[index])}
    for i, (old, new) in enumerate(zip(before, after)):
        if old != new:
            keys |= {row_key(reader, file, i, old), row_key(reader, file, i, new)}
    return {key for key in keys if key is not None}


# -- hostile Parquet cells ----------------------------------------------------------------------------------
def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` and holds no pixels (a decompression bomb's header)."""
    body = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + body
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(body)) + chunk + struct.pack(">I", zlib.crc32(chunk))


def _save(image: Image.Image, fmt: str, **kwargs: Any) -> bytes:
    buffer = BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@cache
def odd_images() -> tuple[bytes, ...]:
    """Images a cell may hold that decode but are unlike the dataset's: other modes, formats, sizes, an EXIF
    turn; and bytes that only look like images."""
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    rgb = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = 6
    alpha = np.full((HEIGHT, WIDTH), 255, np.uint8)
    alpha[5:15, 5:25] = 0
    return (
        _save(rgb, "JPEG", exif=exif.tobytes()),
        _save(Image.fromarray(np.dstack([pixels, alpha]), "RGBA"), "PNG"),
        _save(rgb.convert("L"), "PNG"),
        _save(Image.fromarray(pixels[..., 0].astype(np.uint16) * 257), "PNG"),
        _save(rgb.convert("P"), "PNG", transparency=0),
        _save(rgb, "GIF"), _save(rgb, "BMP"), _save(rgb, "WEBP"), _save(rgb, "TIFF"),
        _save(rgb.convert("CMYK"), "JPEG"),
        _save(Image.new("RGB", (1, 1)), "PNG"),
        _save(rgb.resize((WIDTH * 2, HEIGHT * 2)), "PNG"),
        _save(Image.new("1", (WIDTH, HEIGHT)), "PNG"),
        _save(Image.fromarray(np.zeros((HEIGHT, WIDTH), np.float32), "F"), "TIFF"),
        _png_header(100_000, 100_000), _png_header(0, 0), _png_header(2**31 - 1, 1),
        b"<svg xmlns='http://www.w3.org/2000/svg' width='48' height='32'/>",
        NOT_AN_IMAGE, b"", b"\x89PNG\r\n\x1a\n",
    )


def image_bytes(real: bytes | None) -> st.SearchStrategy[bytes]:
    real = real or b""
    return st.one_of(
        st.sampled_from(odd_images()),
        st.binary(max_size=64),
        st.integers(0, max(len(real) - 1, 0)).map(lambda at: real[:at]),
        st.tuples(st.integers(0, max(len(real) - 1, 0)), st.binary(min_size=1, max_size=8)).map(
            lambda cut: real[:cut[0]] + cut[1] + real[cut[0] + len(cut[1]):]),
    )


@st.composite
def cell_damage(draw, row: dict[str, Any], schema: pa.Schema, crafted: list[str]) -> Mutation:
    """One Parquet-shaped change to ``row``: a null cell, a whole row of nulls, an image cell with other bytes
    or only a path, text that is not UTF-8 or is huge, an integer at its type's edge."""
    if draw(st.integers(0, 19)) == 0:
        return Mutation((), {})
    field = schema.field(draw(st.sampled_from(schema.names)))
    current = row.get(field.name)
    if draw(st.integers(0, 5)) == 0:
        return Mutation((field.name,), None)
    if pa.types.is_struct(field.type):
        real = current.get("bytes") if isinstance(current, dict) else None
        path = current.get("path") if isinstance(current, dict) else None
        value = draw(st.one_of(
            st.sampled_from(crafted).map(lambda name: {"bytes": None, "path": name}),
            image_bytes(real).map(lambda data: {"bytes": data, "path": path}),
            st.just({"bytes": None, "path": None}),
        ))
        return Mutation((field.name,), value)
    if pa.types.is_string(field.type):
        value = draw(st.one_of(TEXTS, st.binary(min_size=1, max_size=24).map(RawText),
                               st.just(RawText(b"add a \xff\xfe red circle")), st.just("x" * 1_000_000)))
        return Mutation((field.name,), value)
    edge = st.sampled_from([0, -1, 2**31 - 1, -(2**31), 1, 2, 3])
    return Mutation((field.name,), draw(edge))


# -- Parquet readers: a damaged row, a column of another type, damaged bytes --------------------------------------
@st.composite
def parquet_row(draw, reader: str) -> tuple[str, int]:
    _, docs = baseline_and_docs(reader)
    file = draw(st.sampled_from(sorted(name for name in docs if docs[name].rows)))
    return file, draw(st.integers(0, len(docs[file].rows) - 1))


def damage_a_parquet_row(data: st.DataObject, reader: str) -> None:
    baseline, docs = baseline_and_docs(reader)
    file, index = data.draw(parquet_row(reader))
    doc: ParquetDoc = docs[file]
    with workspace() as space:
        setup(space, reader)
        crafted = names(space, reader)
        mutation = data.draw(st.one_of(mutations(doc.rows[index], crafted), cell_damage(doc.rows[index],
                                                                                         doc.schema, crafted)))
        rows = list(doc.rows)
        rows[index] = apply(rows[index], mutation)
        assume(write_rows(space.root / file, doc, rows))
        touched = touched_rows(reader, file, doc.rows, read_back(space.root / file), index)
        outcome = run(lambda: builder(space, reader), space)
        count(FAMILY)
        observe(outcome)
        check_outcome(outcome, baseline, space, touched, [Path(file).name], f"{file}[{index}] {mutation}")


def retyped(values: list[Any], kind: pa.DataType) -> st.SearchStrategy[tuple[str, pa.Array | None]]:
    """Whole-column changes a re-export may make: another type for the same values, or a column left out."""
    far = [0] * (len(values) - 1) + [2**62]  # microseconds: a timestamp past year 9999 in the last row
    options: list[tuple[str, Any]] = [("dropped", None), ("all null", pa.nulls(len(values))),
                                      ("timestamps", pa.array(far, pa.int64()).cast(pa.timestamp("us")))]
    if pa.types.is_struct(kind):
        data = [v.get("bytes") if isinstance(v, dict) else None for v in values]
        paths = [v.get("path") if isinstance(v, dict) else None for v in values]
        options += [
            ("plain binary", pa.array(data, pa.binary())),
            ("large binary", pa.array(data, pa.large_binary())),
            ("path strings", pa.array(paths, pa.string())),
            ("large struct", pa.array(values, pa.struct([("bytes", pa.large_binary()), ("path", pa.large_string())]))),
            ("path-only struct", pa.array([{"path": p} for p in paths], pa.struct([("path", pa.string())]))),
            ("bytes-only struct", pa.array([{"bytes": d} for d in data], pa.struct([("bytes", pa.binary())]))),
            ("struct with more", pa.array([dict(v or {}, width=WIDTH) for v in values])),
            ("list of binary", pa.array([[d] for d in data], pa.list_(pa.binary()))),
        ]
    elif pa.types.is_string(kind):
        options += [
            ("binary", pa.array([v.encode() if isinstance(v, str) else v for v in values], pa.binary())),
            ("large string", pa.array(values, pa.large_string())),
            ("dictionary", pa.array(values, pa.string()).dictionary_encode()),
            ("list of string", pa.array([[v] for v in values], pa.list_(pa.string()))),
            ("int64 lengths", pa.array([len(v) if isinstance(v, str) else None for v in values], pa.int64())),
        ]
    else:
        options += [
            ("int64", pa.array(values, pa.int64())),
            ("float64", pa.array([float(v) if v is not None else None for v in values], pa.float64())),
            ("string", pa.array([str(v) if v is not None else None for v in values], pa.string())),
            ("uint8", pa.array(values, pa.uint8())),
            ("bool", pa.array([bool(v) if v is not None else None for v in values], pa.bool_())),
        ]
    return st.sampled_from(options)


def retype_a_parquet_column(data: st.DataObject, reader: str) -> None:
    baseline, docs = baseline_and_docs(reader)
    file = data.draw(st.sampled_from(sorted(docs)))
    doc: ParquetDoc = docs[file]
    column = data.draw(st.sampled_from(doc.schema.names))
    what, array = data.draw(retyped([row[column] for row in doc.rows], doc.schema.field(column).type))
    with workspace() as space:
        setup(space, reader)
        table = pq.read_table(space.root / file)
        position = table.column_names.index(column)
        table = table.remove_column(position) if array is None else table.set_column(position, column, array)
        pq.write_table(table, space.root / file, row_group_size=doc.row_group)
        outcome = run(lambda: builder(space, reader), space)
        count(FAMILY)
        observe(outcome)
        check_outcome(outcome, baseline, space, None, [Path(file).name], f"{file} column {column}: {what}")


@st.composite
def parquet_damage(draw, data: bytes) -> tuple[str, bytes]:
    """:func:`byte_damage` of the whole file, or of its footer alone (row counts, schema, offsets: what plans
    the units), which a uniform draw over a file of image bytes rarely reaches."""
    length = int.from_bytes(data[-8:-4], "little")
    start = len(data) - 8 - length
    if not 0 < length < len(data) - 8 or draw(st.booleans()):
        return draw(byte_damage(data))
    what, footer = draw(byte_damage(data[start:-8]))
    return f"footer {what}", data[:start] + footer + data[-8:]


def damage_a_file(data: st.DataObject, reader: str, files: list[str]) -> None:
    baseline, _ = baseline_and_docs(reader)
    file = data.draw(st.sampled_from(files))
    with workspace() as space:
        setup(space, reader)
        original = (space.root / file).read_bytes()
        what, damaged = data.draw(parquet_damage(original) if file.endswith(".parquet") else byte_damage(original))
        (space.root / file).write_bytes(damaged)
        outcome = run(lambda: builder(space, reader), space)
        count(FAMILY)
        observe(outcome)
        check_outcome(outcome, baseline, space, None, [Path(file).name], f"{file} {what}")


@share(0.27)  # with the column tests, which run out of distinct inputs early, the family draws >= 10,000
@given(st.data())
def test_ip2p_a_damaged_row_fails_alone(data):
    damage_a_parquet_row(data, "ip2p")


@share(0.30)
@given(st.data())
def test_magicbrush_a_damaged_row_fails_alone(data):
    damage_a_parquet_row(data, "magicbrush")


@share(0.05)
@given(st.data())
def test_ip2p_a_column_of_another_type(data):
    retype_a_parquet_column(data, "ip2p")


@share(0.06)
@given(st.data())
def test_magicbrush_a_column_of_another_type(data):
    retype_a_parquet_column(data, "magicbrush")


@share(0.07)
@given(st.data())
def test_ip2p_a_damaged_file_is_named(data):
    damage_a_file(data, "ip2p", parquet_files("ip2p"))


@share(0.07)
@given(st.data())
def test_magicbrush_a_damaged_file_is_named(data):
    damage_a_file(data, "magicbrush", parquet_files("magicbrush"))


# -- GIER: a damaged pair or URL entry, damaged bytes ----------------------------------------------------------
def _stem(name: Any) -> str | None:
    return Path(name.replace("\\", "/")).stem if isinstance(name, str) else None


def gier_keys(pairs: list[Any], index: int, changed: Any) -> set[str]:
    """What a change to pair ``index`` may affect: its record (the output's stem, or its index when it has no
    usable output), before and after."""
    keys = {str(index)}
    for pair in (pairs[index], changed):
        if isinstance(pair, dict):
            keys.add(_stem(pair.get("output")) or str(index))
    return keys


def url_keys(pairs: list[Any], mutation: Mutation) -> set[str]:
    """The pairs whose input or output is the URL entry changed (every pair when the whole file changed)."""
    return {_stem(p["output"]) for p in pairs
            if not mutation.path or mutation.path[0] in (p["input"], p["output"])}


@st.composite
def gier_record(draw) -> tuple[str, Any]:
    _, docs = baseline_and_docs("gier")
    name = draw(st.sampled_from(["GIER.json"] * 4 + ["url_dict.json"]))
    if name == "url_dict.json":
        return name, None
    return name, draw(st.integers(0, len(docs[name]) - 1))


@share(0.20)
@given(st.data())
def test_gier_a_damaged_pair_fails_alone(data):
    baseline, docs = baseline_and_docs("gier")
    name, index = data.draw(gier_record())
    pairs = docs["GIER.json"]
    with workspace() as space:
        setup(space, "gier")
        crafted = names(space, "gier")
        if index is None:
            mutation = data.draw(mutations(docs[name], crafted))
            doc = apply(docs[name], mutation)
            touched = url_keys(pairs, mutation)
        else:
            mutation = data.draw(mutations(pairs[index], crafted))
            doc = list(pairs)
            doc[index] = apply(pairs[index], mutation)
            touched = gier_keys(pairs, index, doc[index])
        (space.root / name).write_text(json.dumps(doc))
        outcome = run(lambda: builder(space, "gier"), space)
        count(FAMILY)
        observe(outcome)
        check_outcome(outcome, baseline, space, touched, [name], f"{name}[{index}] {mutation}")


@share(0.08)
@given(st.data())
def test_gier_a_damaged_file_is_named(data):
    image = min(p.relative_to(pristine("gier")).as_posix() for p in (pristine("gier") / "images").iterdir())
    damage_a_file(data, "gier", ["GIER.json", "GIER.json", "url_dict.json", image])


# -- GQA-Inpaint: a damaged meta_info.json record, damaged bytes -------------------------------------------------
@share(0.10)
@given(st.data())
def test_gqa_a_damaged_record_fails_alone(data):
    baseline, docs = baseline_and_docs("gqa")
    records = docs["meta_info.json"]
    index = data.draw(st.integers(0, len(records) - 1))
    with workspace() as space:
        setup(space, "gqa")
        crafted = names(space, "gqa")
        named = st.tuples(st.sampled_from(["source_image_path", "target_image_path"]), st.sampled_from(crafted))
        mutation = data.draw(st.one_of(mutations(records[index], crafted),
                                       named.map(lambda c: Mutation((c[0],), c[1]))))
        doc = list(records)
        doc[index] = apply(records[index], mutation)
        (space.root / "meta_info.json").write_text(json.dumps(doc))
        outcome = run(lambda: builder(space, "gqa"), space)
        count(FAMILY)
        observe(outcome)
        check_outcome(outcome, baseline, space, {f"meta_info:{index}"}, ["meta_info.json"],
                      f"meta_info.json[{index}] {mutation}")


@share(0.04)
@given(st.data())
def test_gqa_a_damaged_file_is_named(data):
    images = sorted(p.relative_to(pristine("gqa")).as_posix() for p in (pristine("gqa") / "images").iterdir())
    inpainted = sorted(p.relative_to(pristine("gqa")).as_posix()
                       for p in (pristine("gqa") / "images_inpainted").rglob("*.jpg"))
    damage_a_file(data, "gqa", ["meta_info.json", "meta_info.json", images[0], inpainted[0]])


# -- InstructPix2Pix's original release: a damaged seeds.json entry, prompt.json or filter item; damaged bytes ------
def pair_keys(entry: Any) -> set[str]:
    """The record keys (``<name>/<seed>`` as a row holds it) a seeds.json entry names."""
    if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str) and entry[0]
            and isinstance(entry[1], list)):
        return set()
    keys = set()
    for seed in entry[1]:
        if isinstance(seed, str) and seed:
            keys.add(text_field(f"{entry[0]}/{seed}"))
        elif isinstance(seed, int) and not isinstance(seed, bool):
            try:
                keys.add(text_field(f"{entry[0]}/{seed}"))
            except ValueError:
                continue
    return keys


@st.composite
def original_damage(draw, reader: str, crafted: list[str]) -> tuple[str, Any, Mutation, set[str] | None]:
    """(file, its new content, the change, the record keys it may change): an entry of seeds.json, an item of the
    filter list, or (prompt folders) a name's prompt.json."""
    _, docs = baseline_and_docs(reader)
    seeds = docs["seeds.json"]
    files = (["seeds.json"] * 3 + ([] if reader.endswith(UNFILTERED) else [IP2P_FILTER_FILE] * 2)
             + (["prompt.json"] * 2 if reader.startswith("ip2p-original") else []))
    file = draw(st.sampled_from(files))
    if file == "seeds.json":
        index = draw(st.integers(0, len(seeds) - 1))
        seed_paths = [(1, k) for k in range(len(seeds[index][1]))]
        named = st.tuples(st.sampled_from([(0,), *seed_paths]), st.sampled_from(crafted))  # a crafted name or seed
        mutation = draw(st.one_of(mutations(seeds[index], crafted), named.map(lambda c: Mutation(*c))))
        doc = list(seeds)
        doc[index] = apply(seeds[index], mutation)
        return file, doc, mutation, pair_keys(seeds[index]) | pair_keys(doc[index])
    if file == IP2P_FILTER_FILE:
        items = docs[IP2P_FILTER_FILE]
        texts = st.one_of(st.sampled_from(crafted), st.sampled_from(sorted(k for e in seeds for k in pair_keys(e))))
        replaced = st.tuples(st.integers(0, len(items) - 1), texts).map(lambda c: Mutation(c[:1], c[1]))
        mutation = draw(st.one_of(mutations(items, crafted, whole=False), replaced))
        doc = apply(items, mutation)
        old = items[mutation.path[0]]
        new = doc[mutation.path[0]] if mutation.value is not DELETE and len(doc) == len(items) else None
        if mutation.value is DELETE:  # the item is gone, the next ones move up: only the one deleted changes
            return file, doc, mutation, {text_field(old)}
        return file, doc, mutation, {text_field(v) for v in (old, new) if isinstance(v, str)}
    name = draw(st.sampled_from([entry[0] for entry in seeds]))
    prompt = docs[f"{name}/prompt.json"]
    mutation = draw(mutations(prompt, crafted))
    keys = next(pair_keys(entry) for entry in seeds if entry[0] == name)
    return f"{name}/prompt.json", apply(prompt, mutation), mutation, keys


def damage_the_original_layout(data: st.DataObject, reader: str) -> None:
    baseline, _ = baseline_and_docs(reader)
    with workspace() as space:
        setup(space, reader)
        file, doc, mutation, touched = data.draw(original_damage(reader, names(space, reader)))
        (space.root / file).write_text(json.dumps(doc))
        outcome = run(lambda: builder(space, reader), space)
        count(FAMILY)
        observe(outcome)
        check_outcome(outcome, baseline, space, touched, [Path(file).name], f"{reader} {file} {mutation}")


@share(0.08)
@given(st.data())
def test_ip2p_original_a_damaged_entry_fails_alone(data):
    damage_the_original_layout(data, data.draw(st.sampled_from(["ip2p-original", "ip2p-original" + UNFILTERED])))


@share(0.06)
@given(st.data())
def test_ip2p_zip_a_damaged_entry_fails_alone(data):
    damage_the_original_layout(data, data.draw(st.sampled_from(["ip2p-zip", "ip2p-zip" + UNFILTERED])))


@share(0.06)
@given(st.data())
def test_ip2p_original_a_damaged_file_is_named(data):
    reader = data.draw(st.sampled_from(ORIGINAL_READERS))
    seeds = json.loads((pristine(reader) / "seeds.json").read_text())
    name, values = seeds[1]
    if reader == "ip2p-zip":
        files = ["shard-00.zip", "shard-01.zip", "shard-00.zip"]
    else:
        files = [f"{name}/prompt.json", f"{name}/{values[0]}_0.jpg", f"{name}/{values[0]}_1.jpg"]
    damage_a_file(data, reader, ["seeds.json", "seeds.json", IP2P_FILTER_FILE, *files])
