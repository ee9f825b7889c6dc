"""Fuzz: the COCO segmentation readers -- COCO-Stuff (label maps, images, ``labels.txt``), RefCOCO
(``refs(unc).p``, a pickle, and ``instances.json``) and gRefCOCO (``grefs(unc).json`` and ``instances.json``).

One reader family: the examples are shared among the three datasets. A COCO-Stuff record is an image and its
label map (files found by listing a folder, so their damage is a file's: bytes, modes, sizes, a decompression
bomb, a folder, a FIFO, symlinks out of the root, dangling or in a loop, a name that is not UTF-8), and a line
of ``labels.txt``; a RefCOCO record is a ref, an image entry or an annotation (the harness's JSON mutations;
RefCOCO's refs written back as the release's Python 2 protocol-2 pickle, with the values only a pickle holds:
Python 2 byte strings, tuples, 5000-digit ints, cyclic lists, lists nested deeper than Python recurses), and
an image file of either.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
import tempfile
import zlib
from functools import cache
from io import BytesIO
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from fuzz_harness import (
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
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from ieiw.builders.captions import coco_id
from ieiw.builders.cocostuff import CocoStuffBuilder, CocoStuffConfig
from ieiw.builders.refcoco import GRefCocoConfig, RefCocoBuilder, RefCocoConfig
from ieiw.samples.segmentation import make_cocostuff_sample, make_refcoco_sample
from ieiw.schemas.units import BuildContext

FAMILY = "coco-segmentation"
WIDTH, HEIGHT = 64, 48  # the planted image's size: a name that reached it would decode at the annotated size
STUFF_SPLIT = "train2017"
REFS = {"refcoco": "refcoco/refs(unc).p", "grefcoco": "grefcoco/grefs(unc).json"}
INSTANCES = {"refcoco": "refcoco/instances.json", "grefcoco": "grefcoco/instances.json"}
IMAGES = "images/train2014"


def context(space: Workspace) -> BuildContext:
    return BuildContext(root=space.root, out_dir=space.out, unit_size=4)


# -- damage to a file a reader finds by listing or naming ---------------------------------------------------
ENTRY_DAMAGE = ("bytes", "picture", "gone", "folder", "outside", "dangling", "loop", "fifo", "sibling", "bomb")
PICTURE_MODES = ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I", "I;16", "F")
PICTURE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")


def picture_bytes(mode: str, size: tuple[int, int], fmt: str, values: list[int]) -> bytes:
    """A picture in ``mode`` of horizontal bands of ``values``, as ``fmt`` (PNG when ``fmt`` cannot hold it)."""
    width, height = size
    grey = np.zeros((height, width), np.uint8)
    for index, band in enumerate(np.array_split(np.arange(height), len(values))):
        grey[band] = values[index]
    image = Image.fromarray(grey, "L")
    try:
        image = image.convert(mode)
    except ValueError:
        image = image.convert("L")
    for attempt in (fmt, "PNG"):
        buffer = BytesIO()
        try:
            image.save(buffer, attempt)
            return buffer.getvalue()
        except (OSError, ValueError, KeyError):
            continue
    buffer = BytesIO()
    image.convert("L").save(buffer, "PNG")
    return buffer.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` (a decompression bomb, or a lie about its size)."""
    buffer = BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = 8 + 8  # the signature, then the IHDR chunk's length and type
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4:ihdr + 13])))
    return bytes(data)


def damage_entry(data: st.DataObject, path: Path, space: Workspace, sibling: Path) -> str:
    """Damage the file at ``path`` the ways a download or a crafted archive does; returns what was done."""
    kind = data.draw(st.sampled_from(ENTRY_DAMAGE))
    if kind == "bytes":
        what, damaged = data.draw(byte_damage(path.read_bytes()))
        path.write_bytes(damaged)
        return what
    if kind == "picture":
        mode = data.draw(st.sampled_from(PICTURE_MODES))
        size = data.draw(st.sampled_from([(WIDTH, HEIGHT), (1, 1), (WIDTH + 1, HEIGHT), (WIDTH, HEIGHT - 1),
                                           (HEIGHT, WIDTH), (4000, 3)]))
        fmt = data.draw(st.sampled_from(PICTURE_FORMATS))
        values = data.draw(st.lists(st.integers(0, 255), min_size=1, max_size=3))
        path.write_bytes(picture_bytes(mode, size, fmt, values))
        return f"a {fmt} picture, mode {mode}, {size[0]}x{size[1]}, values {values}"
    if kind == "bomb":
        size = data.draw(st.sampled_from([(50_000, 50_000), (9_500, 9_500), (2**31 - 1, 1), (0, 0)]))
        path.write_bytes(bomb_png(*size))
        return f"a PNG claiming {size[0]}x{size[1]}"
    path.unlink()
    if kind == "folder":
        path.mkdir()
        (path / "inside.png").write_bytes(sibling.read_bytes())
    elif kind == "outside":
        path.symlink_to(space.planted)
    elif kind == "dangling":
        path.symlink_to(path.parent / "nowhere.png")
    elif kind == "loop":
        path.symlink_to(path.name)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "sibling":
        path.symlink_to(sibling.name)
    return kind


# -- COCO-Stuff ----------------------------------------------------------------------------------------------
@cache
def stuff_pristine() -> Path:
    """Six scenes (the sixth unlabelled), written once per process."""
    folder = Path(tempfile.mkdtemp(prefix="ieiw-fuzz-cocostuff-")) / "coco-stuff"
    return make_cocostuff_sample(folder, 6, 0, WIDTH, HEIGHT, STUFF_SPLIT)


def stuff_setup(space: Workspace) -> None:
    shutil.copytree(stuff_pristine(), space.root, dirs_exist_ok=True)


def stuff_builder(space: Workspace) -> CocoStuffBuilder:
    return CocoStuffBuilder(CocoStuffConfig(root=space.root, split=STUFF_SPLIT), context(space))


def stuff_key(row: dict[str, Any]) -> str:
    """A COCO-Stuff record is an image: all its rows (one per class slot) share the image's stem."""
    return str(row["origin"]["image_id"])


def stuff_run(space: Workspace) -> Outcome:
    return run(lambda: stuff_builder(space), space, key=stuff_key)


@cache
def stuff_baseline() -> Outcome:
    with workspace() as space:
        stuff_setup(space)
        outcome = stuff_run(space)
    assert outcome.rows and not outcome.failures and outcome.plan_error is None
    return outcome


@cache
def stuff_stems() -> tuple[str, ...]:
    return tuple(sorted(path.stem for path in (stuff_pristine() / "images" / STUFF_SPLIT).glob("*.jpg")))


def stuff_file(root: Path, folder: str, stem: str) -> Path:
    suffix = ".jpg" if folder == "images" else ".png"
    return root / folder / STUFF_SPLIT / f"{stem}{suffix}"


@share(0.14)
@given(st.data())
def test_cocostuff_a_damaged_image_or_label_map_fails_alone(data):
    baseline = stuff_baseline()
    stems = stuff_stems()
    stem = data.draw(st.sampled_from(stems))
    folder = data.draw(st.sampled_from(["annotations", "images"]))
    with workspace() as space:
        stuff_setup(space)
        path = stuff_file(space.root, folder, stem)
        sibling = stuff_file(space.root, folder, next(s for s in stems if s != stem))
        what = damage_entry(data, path, space, sibling)
        outcome = stuff_run(space)
        count(FAMILY)
        description = f"{folder}/{path.name} {what}"
        assert outcome.plan_error is None, f"{description}: one record stopped the source: {outcome.plan_error}"
        check_outcome(outcome, baseline, space, {stem}, [path.name], description)


NAME_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"), min_size=1,
                    max_size=40)
NAME_BYTES = st.binary(min_size=1, max_size=40).filter(lambda b: b"/" not in b and b"\x00" not in b).map(os.fsdecode)
NAME_FIXED = st.sampled_from(["-rf", " ", "a\nb", "..", "...", ".hidden", "a" * 200, "\u202eevil", "\\..\\x",
                              "*", "[a-z]", "%s%n", "\udcff\udcfe", "caf\u00e9", "NUL", "con"])


@share(0.06)
@given(st.data())
def test_cocostuff_an_image_with_a_hostile_name_fails_or_builds_alone(data):
    """Names come from listing ``images/{split}``: any name a file system holds must become a row or a failure
    of that image alone (text Arrow can write, whatever bytes the name was)."""
    baseline = stuff_baseline()
    stems = stuff_stems()
    stem = data.draw(st.one_of(NAME_TEXT, NAME_BYTES, NAME_FIXED))
    if stem in stems or len(os.fsencode(stem)) > 240:
        return
    with workspace() as space:
        stuff_setup(space)
        donor = data.draw(st.sampled_from(stems))
        try:
            shutil.copy(stuff_file(space.root, "images", donor), stuff_file(space.root, "images", stem))
            shutil.copy(stuff_file(space.root, "annotations", donor), stuff_file(space.root, "annotations", stem))
        except (OSError, ValueError):  # a name this file system refuses cannot be in a dataset either
            return
        outcome = stuff_run(space)
        count(FAMILY)
        description = f"images/{STUFF_SPLIT}/{stem!r}.jpg (a copy of {donor})"
        assert outcome.plan_error is None, f"{description}: one record stopped the source: {outcome.plan_error}"
        check_outcome(outcome, baseline, space, {stem}, [stem], description)


LABEL_LINES = st.one_of(
    st.builds(lambda number, name: f"{number}: {name}", st.sampled_from(["-1", "1e999", "0", "00", "999", str(2**70),
                                                                         "\u0663", "", " 1"]),
              st.sampled_from(["person", "", " ", "a" * 20_000, "x" + " " * 20_000 + "y", "\u202e", "\x0b"])),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=40),
    st.sampled_from(["", ":", "1:", "1 person", "1: " + " " * 20_000 + "x", "1:" + "x" + " " * 20_000 + "y"]),
)


@share(0.05)
@given(st.data())
def test_cocostuff_a_damaged_labels_line_is_named(data):
    """``labels.txt`` is one table (every class may be an absent row's): a bad line may change any row, or
    refuse the file naming it, never crash."""
    baseline = stuff_baseline()
    with workspace() as space:
        stuff_setup(space)
        path = space.root / "labels.txt"
        lines = path.read_text(encoding="utf-8").splitlines()
        index = data.draw(st.integers(0, len(lines)))
        line = data.draw(LABEL_LINES)
        action = data.draw(st.sampled_from(["replace", "insert", "delete"]))
        if action == "replace" and index < len(lines):
            lines[index] = line
        elif action == "delete" and index < len(lines):
            del lines[index]
        else:
            lines.insert(index, line)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        outcome = stuff_run(space)
        count(FAMILY)
        check_outcome(outcome, baseline, space, set(stuff_stems()), ["labels.txt"],
                      f"labels.txt line {index} {action} {line!r:.80}")


@share(0.07)
@given(st.data())
def test_cocostuff_a_damaged_labels_file_is_named(data):
    baseline = stuff_baseline()
    with workspace() as space:
        stuff_setup(space)
        path = space.root / "labels.txt"
        what, damaged = data.draw(byte_damage(path.read_bytes()))
        path.write_bytes(damaged)
        outcome = stuff_run(space)
        count(FAMILY)
        check_outcome(outcome, baseline, space, None, ["labels.txt"], f"labels.txt {what}")


# -- RefCOCO and gRefCOCO ------------------------------------------------------------------------------------
class Python2Pickler(pickle._Pickler):
    """Pickles as Python 2 did (the release's ``refs(unc).p``): a ``bytes`` value is a Python 2 ``str``
    (``SHORT_BINSTRING`` / ``BINSTRING``), which the reader decodes; Python 3 would write a call to
    ``_codecs.encode`` instead, which a refs file never holds."""

    dispatch: ClassVar[dict[type, Any]] = dict(pickle._Pickler.dispatch)

    def save_python2_str(self, value: bytes) -> None:
        if len(value) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(value)]) + value)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(value)) + value)
        self.memoize(value)

    dispatch[bytes] = save_python2_str


def as_python2(value: Any) -> Any:
    """``value`` with every string (dict keys too) a UTF-8 byte string, as a Python 2 program held them."""
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, dict):
        return {as_python2(k): as_python2(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_python2(v) for v in value]
    return value


def field(raw: dict[Any, Any], name: str) -> Any:
    """A ref's field, whether its keys are Python 2 byte strings or text."""
    return raw[name.encode()] if name.encode() in raw else raw.get(name)


@cache
def ref_pristine() -> Path:
    """Five scenes (the fifth in val): ten RefCOCO refs of train, a crowd, RLE and two-part polygons. The
    RefCOCO refs are rewritten as Python 2 pickled them, with the sentences of one ref not ASCII (so a string
    decoded with the wrong codec shows in another record's row)."""
    folder = Path(tempfile.mkdtemp(prefix="ieiw-fuzz-refcoco-")) / "coco_2014"
    root = make_refcoco_sample(folder, 5, 0, WIDTH, HEIGHT)
    refs = pickle.loads((root / REFS["refcoco"]).read_bytes())
    for sentence in refs[1]["sentences"]:
        sentence["sent"] = sentence["raw"] = f"caf\u00e9 {sentence['sent']} \u00fcber"
        sentence["tokens"] = sentence["sent"].lower().split()
    write_refs(root / REFS["refcoco"], as_python2(refs))
    return root


def ref_setup(space: Workspace) -> None:
    shutil.copytree(ref_pristine(), space.root, dirs_exist_ok=True)


def ref_builder(space: Workspace, variant: str) -> RefCocoBuilder:
    model = RefCocoConfig if variant == "refcoco" else GRefCocoConfig
    return RefCocoBuilder(model(root=space.root), context(space), variant)


def ref_run(space: Workspace, variant: str) -> Outcome:
    return run(lambda: ref_builder(space, variant), space)


DEEP = "\x00deep\x00"  # where a pickled refs file gets a list nested 100,000 deep (pickle.dumps would recurse)
DEPTH = 100_000


def cyclic_list() -> list[Any]:
    value: list[Any] = []
    value.append(value)
    return value


# What a pickle holds and JSON cannot: bytes (Python 2 strings), tuples, ints past str()'s 4300 digits, lists
# that contain themselves or nest deeper than Python recurses, dicts with non-string keys.
PICKLE_VALUES = st.sampled_from([
    ("a Python 2 string, not UTF-8", b"\xff\xfetrain"), ("a Python 2 string", b"train"), ("a tuple", (1, 2)),
    ("10**5000", 10**5000),
    ("-10**5000", -(10**5000)), ("a cyclic list", cyclic_list()), (f"a list {DEPTH} deep", DEEP),
    ("an int-keyed dict", {1: "a"}), ("a list of Python 2 strings", [b"x", b"\xe9"]),
])


def write_refs(path: Path, refs: list[Any]) -> None:
    """In the release's format: JSON for gRefCOCO, a protocol-2 pickle for RefCOCO."""
    if path.suffix == ".json":
        path.write_text(json.dumps(refs))
        return
    buffer = BytesIO()
    Python2Pickler(buffer, protocol=2).dump(refs)
    data = buffer.getvalue()
    encoded = DEEP.encode()
    deep = b"]" * DEPTH + b"a" * (DEPTH - 1)  # EMPTY_LIST pushed DEPTH times, each APPENDed into the one below
    path.write_bytes(data.replace(b"X" + struct.pack("<I", len(encoded)) + encoded, deep))


@cache
def ref_docs(variant: str) -> dict[str, Any]:
    root = ref_pristine()
    path = root / REFS[variant]
    refs = json.loads(path.read_bytes()) if path.suffix == ".json" else pickle.loads(path.read_bytes(),
                                                                                     encoding="bytes")
    return {"refs": refs, "instances": json.loads((root / INSTANCES[variant]).read_text())}


@cache
def ref_baseline(variant: str) -> Outcome:
    with workspace() as space:
        ref_setup(space)
        outcome = ref_run(space, variant)
    assert outcome.rows and not outcome.failures and outcome.plan_error is None, outcome.failures[:3]
    return outcome


def an_id(value: Any) -> int | None:
    """A COCO id as the reader takes one: an integral number or digit string within 64 bits."""
    try:
        number = coco_id(value)
    except ValueError:  # "²": a digit to str.isdigit(), not to int()
        return None
    return number if number is not None and abs(number) < 2**64 else None


def ref_key(raw: Any, index: int) -> str:
    """The record key a ref's rows carry: its ``ref_id`` as the reader reads it, else its place."""
    ref_id = an_id(field(raw, "ref_id")) if isinstance(raw, dict) else None
    return str(ref_id) if ref_id is not None else f"#{index}"


def ids_of(value: Any) -> set[int]:
    values = value if isinstance(value, list | tuple) else [value]
    return {v for v in (an_id(x) for x in values) if v is not None}


def refs_where(refs: list[Any], name: str, ids: set[int]) -> set[str]:
    """The keys of the refs whose field ``name`` names one of ``ids``, and of their absent rows."""
    keys = {ref_key(raw, index) for index, raw in enumerate(refs)
            if isinstance(raw, dict) and ids_of(field(raw, name)) & ids}
    return keys | {f"{key}:absent" for key in keys}


def every_absent_key(refs: list[Any]) -> set[str]:
    """Absent rows borrow a sentence from any ref of a category not in their image, so a change to a ref's
    category or sentences, or to where annotations are, may change any of them."""
    return {f"{ref_key(raw, index)}:absent" for index, raw in enumerate(refs)}


def ref_touched(docs: dict[str, Any], where: str, index: int, changed: Any) -> set[str]:
    """The record keys a change of entry ``index`` of ``where`` (``refs``, or an instances list) may affect;
    ``changed`` is the entry after the change."""
    refs = docs["refs"]
    if where == "refs":
        keys = {ref_key(refs[index], index), ref_key(changed, index)}
        return keys | {f"{key}:absent" for key in keys} | every_absent_key(refs)
    original = docs["instances"][where][index]
    ids = ids_of(original.get("id")) | (ids_of(changed.get("id")) if isinstance(changed, dict) else set())
    if where == "images":
        return refs_where(refs, "image_id", ids)
    if where == "annotations":
        return refs_where(refs, "ann_id", ids) | every_absent_key(refs)
    return set()  # categories: the readers do not use them


@st.composite
def ref_entry(draw, variant: str) -> tuple[str, int]:
    docs = ref_docs(variant)
    lists = {"refs": docs["refs"], **{k: docs["instances"][k] for k in ("images", "annotations", "categories")}}
    where = draw(st.sampled_from(sorted(lists)))
    return where, draw(st.integers(0, len(lists[where]) - 1))


def a_damaged_ref_record_fails_alone(data: st.DataObject, variant: str) -> None:
    baseline, docs = ref_baseline(variant), ref_docs(variant)
    where, index = data.draw(ref_entry(variant))
    with workspace() as space:
        ref_setup(space)
        if where == "refs":
            name = REFS[variant]
            record = docs["refs"][index]
            mutation = data.draw(mutations(record, space.names))
            shown = str(mutation)
            if name.endswith(".p") and data.draw(st.integers(0, 3)) == 0:
                label, value = data.draw(PICKLE_VALUES)
                mutation = Mutation(mutation.path, value)
                shown = f"{'/'.join(map(str, mutation.path)) or '<record>'} = {label}"
            refs = list(docs["refs"])
            refs[index] = changed = apply(record, mutation)
            write_refs(space.root / name, refs)
        else:
            name = INSTANCES[variant]
            record = docs["instances"][where][index]
            mutation = data.draw(mutations(record, space.names))
            instances = dict(docs["instances"])
            instances[where] = list(instances[where])
            instances[where][index] = changed = apply(record, mutation)
            (space.root / name).write_text(json.dumps(instances))
            shown = str(mutation)
        outcome = ref_run(space, variant)
        count(FAMILY)
        description = f"{variant}: {name} {where}[{index}] {shown}"
        assert outcome.plan_error is None, f"{description}: one record stopped the source: {outcome.plan_error}"
        check_outcome(outcome, baseline, space, ref_touched(docs, where, index, changed), [Path(name).name],
                      description)


def a_damaged_ref_image_fails_alone(data: st.DataObject, variant: str) -> None:
    baseline, docs = ref_baseline(variant), ref_docs(variant)
    images = docs["instances"]["images"]
    index = data.draw(st.integers(0, len(images) - 1))
    with workspace() as space:
        ref_setup(space)
        path = space.root / IMAGES / images[index]["file_name"]
        sibling = space.root / IMAGES / images[index - 1]["file_name"]
        what = damage_entry(data, path, space, sibling)
        outcome = ref_run(space, variant)
        count(FAMILY)
        description = f"{variant}: {path.name} {what}"
        assert outcome.plan_error is None, f"{description}: one record stopped the source: {outcome.plan_error}"
        check_outcome(outcome, baseline, space, refs_where(docs["refs"], "image_id", {images[index]["id"]}),
                      [path.name], description)


def a_damaged_ref_file_is_named(data: st.DataObject, variant: str) -> None:
    baseline = ref_baseline(variant)
    with workspace() as space:
        ref_setup(space)
        name = data.draw(st.sampled_from([REFS[variant], INSTANCES[variant]]))
        what, damaged = data.draw(byte_damage((space.root / name).read_bytes()))
        (space.root / name).write_bytes(damaged)
        outcome = ref_run(space, variant)
        count(FAMILY)
        check_outcome(outcome, baseline, space, None, [Path(name).name], f"{variant}: {name} {what}")


@share(0.24)
@given(st.data())
def test_refcoco_a_damaged_ref_or_instance_fails_alone(data):
    a_damaged_ref_record_fails_alone(data, "refcoco")


@share(0.24)
@given(st.data())
def test_grefcoco_a_damaged_ref_or_instance_fails_alone(data):
    a_damaged_ref_record_fails_alone(data, "grefcoco")


@share(0.07)
@given(st.data())
def test_refcoco_and_grefcoco_a_damaged_image_fails_alone(data):
    a_damaged_ref_image_fails_alone(data, data.draw(st.sampled_from(["refcoco", "grefcoco"])))


@share(0.06)
@given(st.data())
def test_refcoco_a_damaged_file_is_named(data):
    a_damaged_ref_file_is_named(data, "refcoco")


@share(0.07)
@given(st.data())
def test_grefcoco_a_damaged_file_is_named(data):
    a_damaged_ref_file_is_named(data, "grefcoco")
