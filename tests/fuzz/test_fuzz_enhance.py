"""Fuzz: the enhancement converter's listings (GoPro, REDS, SIDD: training and release layouts; CLWD;
synthetic), through :class:`~ieiw.builders.enhance.EnhanceBuilder`.

These readers list folders: no annotation file names a path, the file system does. So a "record" here is one
pair's files (a synthetic image's one file), and its hostile forms are what a crafted or broken download holds
in a folder: an image's bytes damaged or swapped for another mode, size or format (or a decompression bomb),
the file deleted, renamed to a hostile name (not UTF-8, path-like, very long, hidden, without an image
suffix), copied under a second extension, replaced by a symlink (out of the root, dangling, a loop, a device)
or by a folder or a FIFO. A "file" is one of the layout's folders: deleted, renamed, replaced by a file, or
symlinked out of the root or back into it. Each change says which files it removes or adds; the pair keys
those files carry by the dataset's naming rule (docs/multitask.md, "Enhancement") are the keys it may touch.
"""

from __future__ import annotations

import atexit
import io
import json
import os
import shutil
import struct
import tempfile
import zlib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path, PurePosixPath

import numpy as np
from fuzz_harness import TEXTS, Outcome, Workspace, byte_damage, check_outcome, count, run, share, workspace
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from ieiw.builders.enhance import EnhanceBuilder, EnhanceConfig
from ieiw.imageio import decode
from ieiw.samples.enhance import MARKER, make_enhance_sample
from ieiw.schemas.rows import rows_to_table, text_field
from ieiw.schemas.units import BuildContext

FAMILY = "enhance"
WIDTH, HEIGHT = 64, 48  # the planted image's size: a pair read through a way out of the root would build
CASES = [("gopro", "training"), ("gopro", "release"), ("reds", "training"), ("reds", "release"),
         ("sidd", "training"), ("sidd", "release"), ("clwd", "training"), ("synthetic", "training")]
SAME_NAME = {  # (degraded, clean) folders whose partners share a relative name (extension aside)
    ("gopro", "training"): ("train/input", "train/target"),
    ("reds", "training"): ("train/blur", "train/sharp"),
    ("reds", "release"): ("train/train_blur", "train/train_sharp"),
    ("sidd", "training"): ("train/input", "train/gt"),
    ("clwd", "training"): ("train/Watermarked_image", "train/Watermark_free_image"),
}
NOISY, GT = "_NOISY_SRGB_", "_GT_SRGB_"
Case = tuple[str, str]


# -- the source and its baseline ---------------------------------------------------------------------------
@cache
def pristine(case: Case) -> Path:
    """Three pairs (synthetic: three clean images) at 64x48 in ``case``'s layout, written once per process;
    the sample's own marker file, part of no dataset, is left out."""
    dataset, layout = case
    folder = Path(tempfile.mkdtemp(prefix=f"ieiw-fuzz-enhance-{dataset}-{layout}-"))
    atexit.register(shutil.rmtree, folder, True)
    root = make_enhance_sample(folder / dataset, dataset, pairs=3, width=WIDTH, height=HEIGHT, layout=layout)
    (root / MARKER).unlink()
    return root


def setup(space: Workspace, case: Case) -> None:
    shutil.copytree(pristine(case), space.root, dirs_exist_ok=True, symlinks=True)


def builder(space: Workspace, case: Case) -> EnhanceBuilder:
    config = EnhanceConfig(dataset=case[0], root=space.root)
    return EnhanceBuilder(config, BuildContext(root=space.root, out_dir=space.out, unit_size=2))


def image_key(row: dict) -> str:
    """The pair key (synthetic: the image's path), which every row of one pair or image shares."""
    return str(row["origin"]["image_id"])


def build(space: Workspace, case: Case) -> Outcome:
    return run(lambda: builder(space, case), space, key=image_key)


@cache
def baseline(case: Case) -> Outcome:
    with workspace() as space:
        setup(space, case)
        outcome = build(space, case)
    assert outcome.rows and not outcome.failures and outcome.plan_error is None, case
    return outcome


@cache
def files(case: Case) -> tuple[str, ...]:
    """Every file of the pristine source, relative (GoPro's unread ``blur_gamma`` included)."""
    root = pristine(case)
    return tuple(sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()))


@cache
def folders(case: Case) -> tuple[str, ...]:
    root = pristine(case)
    return tuple(sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_dir()))


@cache
def partners(case: Case) -> dict[str, str]:
    """Each paired file's partner, from the baseline's rows."""
    out: dict[str, str] = {}
    for rows in baseline(case).rows.values():
        for row in rows:
            params = json.loads(row["builder"]["params"])
            if "degraded_file" in params:
                out[params["degraded_file"]] = params["clean_file"]
                out[params["clean_file"]] = params["degraded_file"]
    return out


def _stem(relative: str) -> str:
    try:
        return PurePosixPath(relative).with_suffix("").as_posix()
    except ValueError:
        return relative


def keys_of(case: Case, relative: str) -> set[str]:
    """The pair keys a file at ``relative`` may carry by the layout's naming rule (docs/multitask.md), as a
    row holds them; empty for a file the layout does not list."""
    dataset = case[0]
    keys: set[str] = set()
    if dataset == "synthetic":
        keys.add(relative)
    elif case in SAME_NAME:
        keys.update(_stem(relative[len(folder) + 1:]) for folder in SAME_NAME[case]
                    if relative.startswith(folder + "/"))
    elif dataset == "gopro":  # release: train/<seq>/{blur,sharp}/<frame>
        parts = relative.split("/")
        if len(parts) >= 4 and parts[0] == "train" and parts[2] in ("blur", "sharp"):
            keys.add(f"{parts[1]}/{_stem('/'.join(parts[3:]))}")
    elif relative.startswith("Data/"):  # sidd release: Data/<scene>/<id>_{NOISY,GT}_SRGB_<n>
        stem = _stem(relative[len("Data/"):])
        keys.update({stem.replace(NOISY, "_SRGB_"), stem.replace(GT, "_SRGB_")})
    return {text_field(key) or "" for key in keys}


@dataclass
class Damage:
    """What one change did: its description, and the files (relative) it took away or put in."""

    what: str
    removed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)

    def touched(self, case: Case) -> set[str]:
        return {key for relative in self.removed + self.added for key in keys_of(case, relative)}


# -- hostile file names and images ---------------------------------------------------------------------------
NAME_PARTS = st.one_of(
    TEXTS,
    st.binary(min_size=1, max_size=12).map(os.fsdecode),  # bytes that are not UTF-8, as the file system has them
    st.sampled_from(["a\\b", "..", "...", "a..b", " ", "#", "a#blur", "%2e%2e", "..\\..\\outside\\planted", "CON",
                     "nul", "x" * 300, "\u202egnp", "\n", "~", "-", "*", "?", "[a]", "$HOME", "GOPR0372_07_00_000049",
                     "00000001", "1", "0001_010", "0001_NOISY_SRGB_010", "0001_GT_SRGB_010"]),
)
SUFFIXES = st.sampled_from(["", ".png", ".PNG", ".jpg", ".JPEG", ".webp", ".bmp", ".tif", ".txt", ".png.txt",
                            ".Png", "."])


def file_name(base: str, suffix: str) -> str:
    """``base + suffix`` as one name the file system takes: no ``/`` or NUL, at most 240 bytes (cut bytes may
    leave half a UTF-8 character: a name that is not UTF-8), never ``.``/``..``; lone surrogates that bytes
    cannot hold become U+FFFD."""
    base = base.replace("/", "_").replace("\x00", "_")
    try:
        raw = os.fsencode(base)
    except UnicodeEncodeError:
        raw = os.fsencode(text_field(base) or "_")
    name = os.fsdecode(raw[: 240 - len(os.fsencode(suffix))]) + suffix
    return "_" + name if name in ("", ".", "..") else name


@st.composite
def new_name(draw, old: str) -> str:
    """A hostile name for a file now called ``old`` (SIDD release names keep their NOISY/GT part, so that
    a renamed pair still pairs)."""
    base = draw(NAME_PARTS)
    suffix = draw(st.one_of(st.just(PurePosixPath(old).suffix), SUFFIXES))
    for marker in (NOISY, GT):
        if marker in old and draw(st.booleans()):
            base = base[:100] + marker + "001"
    return file_name(base, suffix)


def _png_bomb() -> bytes:
    """A PNG header that claims 100000 x 100000 pixels (a few bytes that would decode to 30 GB)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


def _save(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _with_orientation(image: Image.Image, tag: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = tag
    return _save(image, "JPEG", exif=exif.tobytes())


IMAGES = {  # what a file may hold instead of its image: other modes, formats, sizes, orientations, not an image
    "grey": lambda im: _save(im.convert("L"), "PNG"),
    "grey+alpha": lambda im: _save(im.convert("LA"), "PNG"),
    "rgba": lambda im: _save(im.convert("RGBA"), "PNG"),
    "palette": lambda im: _save(im.convert("P"), "PNG"),
    "palette+transparency": lambda im: _save(im.convert("P"), "PNG", transparency=0),
    "bilevel": lambda im: _save(im.convert("1"), "PNG"),
    "16-bit": lambda im: _save(Image.fromarray(np.asarray(im.convert("L")).astype(np.uint16) * 257), "PNG"),
    "32-bit tiff": lambda im: _save(im.convert("I"), "TIFF"),
    "float tiff": lambda im: _save(im.convert("F"), "TIFF"),
    "cmyk jpeg": lambda im: _save(im.convert("CMYK"), "JPEG"),
    "exif 6": lambda im: _with_orientation(im, 6),
    "exif 8": lambda im: _with_orientation(im, 8),
    "exif 99": lambda im: _with_orientation(im, 99),
    "gif, two frames": lambda im: _save(im, "GIF", save_all=True, append_images=[im.rotate(90)]),
    "webp": lambda im: _save(im, "WEBP"),
    "bmp": lambda im: _save(im, "BMP"),
    "tiff, two pages": lambda im: _save(im, "TIFF", save_all=True, append_images=[im]),
    "transposed": lambda im: _save(im.transpose(Image.Transpose.TRANSPOSE), "PNG"),
    "1x1": lambda im: _save(im.resize((1, 1)), "PNG"),
    "one wider": lambda im: _save(im.resize((im.width + 1, im.height)), "PNG"),
    "empty": lambda im: b"",
    "html": lambda im: b"<html>not an image</html>",
    "svg": lambda im: b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="48"/>',
    "png signature only": lambda im: b"\x89PNG\r\n\x1a\n",
    "jpeg start only": lambda im: b"\xff\xd8\xff",
    "decompression bomb": lambda im: _png_bomb(),
    "pdf": lambda im: b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n",
    "psd": lambda im: b"8BPS\x00\x01" + b"\x00" * 20,
}


# -- changes to one pair's files ----------------------------------------------------------------------------
def symlink_targets(space: Workspace, path: Path, partner: Path | None) -> list[str]:
    """Where a crafted file's symlink may point: out of the root (absolute, relative, the harness's crafted
    names as they stand), nowhere, at itself, at a device, at a folder; or inside the root (its partner)."""
    targets = [str(space.planted), os.path.relpath(space.planted, path.parent), os.path.relpath(space.outside,
               path.parent), "nowhere.png", path.name, "/dev/zero", "/etc/passwd", "/proc/self/environ", ".",
               *space.names]
    if partner is not None:
        targets.append(os.path.relpath(partner, path.parent))
    return targets


@st.composite
def pair_damage(draw, space: Workspace, case: Case) -> Damage:
    """One change to one file of the source (applied to ``space.root``)."""
    relative = draw(st.sampled_from(files(case)))
    path = space.root / relative
    partner_relative = partners(case).get(relative)
    partner = space.root / partner_relative if partner_relative else None
    kind = draw(st.sampled_from(["bytes", "image", "delete", "rename", "rename pair", "extra", "duplicate",
                                 "symlink", "folder", "fifo"]))
    damage = Damage(f"{relative}: {kind}", removed=[relative])
    if kind == "bytes":
        what, data = draw(byte_damage(path.read_bytes()))
        path.write_bytes(data)
        damage.what += f" {what}"
    elif kind == "image":
        variant = draw(st.sampled_from(sorted(IMAGES)))
        with Image.open(path) as image:
            data = IMAGES[variant](image.convert("RGB"))
        path.write_bytes(data)
        damage.what += f" {variant}"
    elif kind == "delete":
        path.unlink()
    elif kind in ("rename", "extra", "rename pair"):
        name = draw(new_name(path.name))
        nested = draw(st.sampled_from(["", "", "sub/", "a\\b/", os.fsdecode(b"\xff/")]))
        moved = [(path, path.parent / nested / name)]
        damage.removed = []
        if kind == "rename pair" and partner is not None:
            partner_name = name.replace(NOISY, GT) if NOISY in path.name else name.replace(GT, NOISY)
            moved.append((partner, partner.parent / nested / partner_name))
        for old, new in moved:
            new.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copyfile if kind == "extra" else os.replace)(old, new)
            damage.added.append(new.relative_to(space.root).as_posix())
            if kind != "extra":
                damage.removed.append(old.relative_to(space.root).as_posix())
        damage.what += f" -> {[str(new.relative_to(space.root)) for _, new in moved]!r}"
    elif kind == "duplicate":
        suffix = draw(st.sampled_from([".PNG", ".png", ".jpg", ".JPEG", ".webp", ".Png", ".bmp", ".TIF"])
                      .filter(lambda s: s != path.suffix))
        copy = path.with_suffix(suffix)
        shutil.copyfile(path, copy)
        damage.added.append(copy.relative_to(space.root).as_posix())
        damage.what += f" as {copy.name!r} too"
    elif kind == "symlink":
        target = draw(st.sampled_from(symlink_targets(space, path, partner)))
        path.unlink()
        path.symlink_to(target)
        damage.what += f" -> {target!r}"
    elif kind == "folder":
        data = path.read_bytes()
        path.unlink()
        path.mkdir()
        (path / path.name).write_bytes(data)
        damage.added.append(f"{relative}/{path.name}")
    else:
        path.unlink()
        os.mkfifo(path)
    return damage


def check(outcome: Outcome, expected: Outcome, space: Workspace, case: Case, damage: Damage) -> None:
    """The harness's checks, and one of this family's: a failure's text is writable as UTF-8 (file names
    come from the file system, where a name need not be UTF-8; the stats, manifest and report write them)."""
    what = f"{case[0]} {case[1]}: {damage.what}"
    check_outcome(outcome, expected, space, damage.touched(case), [str(space.root)], what)
    for failure in outcome.failures:
        try:
            str(failure).encode()
        except UnicodeEncodeError as exc:
            raise AssertionError(f"{what}: failure not writable as UTF-8 ({exc}): {failure!r}") from None


@share(0.8)
@given(st.data())
def test_a_damaged_pair_fails_alone(data):
    case = data.draw(st.sampled_from(CASES), label="case")
    expected = baseline(case)
    with workspace() as space:
        setup(space, case)
        damage = data.draw(pair_damage(space, case))
        outcome = build(space, case)
        count(FAMILY)
        check(outcome, expected, space, case, damage)


# -- changes to one of the layout's folders ------------------------------------------------------------------
def _under(case: Case, folder: str) -> list[str]:
    return [f for f in files(case) if f.startswith(folder + "/")]


@st.composite
def folder_damage(draw, space: Workspace, case: Case) -> Damage:
    """One change to one folder of the source: gone, renamed, a file, a FIFO, a symlink out of the root, or a
    symlink inside it (back to itself, to a sibling: followed or not, only what it reaches may change)."""
    relative = draw(st.sampled_from(folders(case)))
    path = space.root / relative
    kind = draw(st.sampled_from(["delete", "rename", "file", "fifo", "empty", "symlink out", "link inside"]))
    damage = Damage(f"{relative}/: {kind}")
    if kind == "link inside":
        target = draw(st.sampled_from([".", "..", str(space.root), *[os.path.relpath(space.root / f, path)
                                                                     for f in folders(case)]]))
        name = file_name(draw(NAME_PARTS), "")
        while os.path.lexists(path / name):
            name = "_" + name
        (path / name).symlink_to(target)
        reached = (path / target).resolve().relative_to(space.root.resolve()).as_posix()
        damage.added = [f"{relative}/{name}/{f[len(reached) + 1:] if reached != '.' else f}"
                        for f in files(case) if reached == "." or f.startswith(reached + "/")]
        damage.what += f" {name!r} -> {target!r}"
        return damage
    damage.removed = _under(case, relative)
    if kind == "rename":
        name = file_name(draw(NAME_PARTS), "")
        new = path.parent / name
        if new == path:
            return damage
        if os.path.lexists(new):
            shutil.rmtree(new) if new.is_dir() and not new.is_symlink() else new.unlink()
        os.replace(path, new)
        renamed = new.relative_to(space.root).as_posix()
        damage.added = [renamed + f[len(relative):] for f in damage.removed]
        damage.removed += _under(case, renamed)
        damage.what += f" -> {name!r}"
        return damage
    shutil.rmtree(path)
    if kind == "file":
        path.write_bytes(b"not a folder")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "empty":
        path.mkdir()
    elif kind == "symlink out":
        target = draw(st.sampled_from([str(space.outside), os.path.relpath(space.outside, path.parent)]))
        path.symlink_to(target, target_is_directory=True)
        damage.added = [f"{relative}/{space.planted.name}"]
        damage.what += f" -> {target!r}"
    return damage


@share(0.2)
@given(st.data())
def test_a_damaged_folder_is_named(data):
    case = data.draw(st.sampled_from(CASES), label="case")
    expected = baseline(case)
    with workspace() as space:
        setup(space, case)
        damage = data.draw(folder_damage(space, case))
        outcome = build(space, case)
        count(FAMILY)
        check(outcome, expected, space, case, damage)


# -- regressions --------------------------------------------------------------------------------------------
def test_a_pair_named_in_bytes_that_are_not_utf8_makes_a_writable_row(tmp_path):
    """A pair whose file name is not UTF-8 (``b"\\xff\\xfe.png"`` in both folders) built a row holding lone
    surrogates in its record id, image id and image names, which Arrow cannot write: the whole shard failed."""
    root = make_enhance_sample(tmp_path / "gopro", "gopro", pairs=2, width=WIDTH, height=HEIGHT)
    name = os.fsdecode(b"\xff\xfe.png")
    for folder in ("input", "target"):
        first = min((root / "train" / folder).iterdir())
        os.replace(first, first.parent / name)
    config = EnhanceConfig(dataset="gopro", root=root)
    built = EnhanceBuilder(config, BuildContext(root=root, out_dir=tmp_path / "out", unit_size=4))
    rows = [row for unit in built.plan() for row in built.build_unit(unit).rows]
    assert len(rows) == 2
    rows_to_table(rows)
    weird = next(row for row in rows if "\ufffd" in row["origin"]["record_id"])
    assert weird["origin"]["image_id"] == "\ufffd\ufffd" and decode(weird["source_image"]["bytes"])


def test_a_file_named_in_bytes_that_are_not_utf8_fails_in_writable_text(tmp_path):
    """An orphan named ``b"\\xff.png"`` gave a failure whose file, record and message held lone surrogates:
    the report (``page.encode()``) and any UTF-8 log of the stats could not write it."""
    root = make_enhance_sample(tmp_path / "clwd", "clwd", pairs=2, width=WIDTH, height=HEIGHT)
    shutil.copyfile(root / "train" / "Watermarked_image" / "1.jpg",
                    root / "train" / "Watermarked_image" / os.fsdecode(b"\xff.jpg"))
    config = EnhanceConfig(dataset="clwd", root=root)
    built = EnhanceBuilder(config, BuildContext(root=root, out_dir=tmp_path / "out", unit_size=4))
    failures = [failure for unit in built.plan() for failure in built.build_unit(unit).failures]
    assert [(f.reason, f.record_id) for f in failures] == [("no_partner", "\ufffd")]
    str(failures[0]).encode()
    assert failures[0].file.endswith("Watermarked_image/\ufffd.jpg")


def test_a_tree_thousands_of_folders_deep_is_listed(tmp_path):
    """A folder nested 1,100 deep in ``train/input`` made ``plan()`` raise ``RecursionError`` (``rglob``
    recurses per level): one crafted folder stopped the whole source instead of failing alone."""
    root = make_enhance_sample(tmp_path / "gopro", "gopro", pairs=2, width=WIDTH, height=HEIGHT)
    chain = [root / "train" / "input" / "deep"]
    for _ in range(1_100):
        chain.append(chain[-1] / "a")
    try:
        for folder in chain:
            folder.mkdir()
        shutil.copyfile(next((root / "train" / "input").glob("*.png")), chain[-1] / "x.png")
        config = EnhanceConfig(dataset="gopro", root=root)
        built = EnhanceBuilder(config, BuildContext(root=root, out_dir=tmp_path / "out", unit_size=4))
        results = [built.build_unit(unit) for unit in built.plan()]
        assert sum(len(r.rows) for r in results) == 2
        failures = [f for r in results for f in r.failures]
        assert [(f.reason, f.record_id.count("/")) for f in failures] == [("no_partner", 1_101)]
    finally:  # shutil.rmtree (pytest's clean-up) recurses per level too
        (chain[-1] / "x.png").unlink(missing_ok=True)
        for folder in reversed(chain):
            if folder.exists():
                folder.rmdir()
