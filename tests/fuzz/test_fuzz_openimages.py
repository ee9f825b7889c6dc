"""Fuzz: the Open Images V7 segmentation reader (the mask CSV, the class-description CSV, mask PNGs and images),
through the replacement builder that reads it (index stage + candidates, embedded CPU backends).

A record is a CSV row. A damaged row is written back as a crafted CSV holds it: text as is (a lone surrogate as
the bytes ``surrogatepass`` gives, which are not UTF-8), other JSON values as JSON text, a deleted column as a
missing cell (a short row), a row replaced by a list as that many cells.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import tempfile
import zipfile
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from fuzz_harness import Workspace, apply, byte_damage, check_outcome, count, mutations, run, share, workspace
from hypothesis import given
from hypothesis import strategies as st
from replacement_runner import builder, dependents, open_images_source, replacement

from ieiw.samples.replacement import OI_ANNOTATIONS, OI_CLASSES, OI_COLUMNS, OPEN_IMAGES_DIR, make_replace_samples
from ieiw.sources.openimages import OpenImagesFormatError, OpenImagesSource
from ieiw.sources.regions import ImageRegions

FAMILY = "openimages"
IMAGES = 4  # 4 images of 2-4 labelled objects (2 units)
CLASS_COLUMNS = ("LabelName", "DisplayName")  # the boxable class file has no header row


@cache
def pristine() -> Path:
    """The Open Images half of the replacement sample at 48x32, written once per process; the masks of the
    images whose ImageID starts as the first one's are moved into ``train-masks-<char>.zip`` (deflated), as the
    release ships them, so the zip path is fuzzed too."""
    made = make_replace_samples(Path(tempfile.mkdtemp(prefix="ieiw-fuzz-openimages-")) / "samples", IMAGES, 11, 48, 32)
    root = made / OPEN_IMAGES_DIR
    masks = sorted((root / "masks").glob("*.png"))
    char = masks[0].name[0]
    with zipfile.ZipFile(root / "masks" / f"train-masks-{char}.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        for path in masks:
            if path.name.startswith(char):
                archive.write(path, path.name)
                path.unlink()
    return root


def setup(space: Workspace) -> None:
    shutil.copytree(pristine(), space.root, dirs_exist_ok=True)


def make(space: Workspace):
    return builder(space, [open_images_source(space.root, OI_CLASSES)])


def read_csv(path: Path, columns: tuple[str, ...], header: bool) -> list[dict[str, str]]:
    rows = list(csv.reader(io.StringIO(path.read_text())))
    if header:
        assert tuple(rows[0]) == columns
        rows = rows[1:]
    return [dict(zip(columns, row, strict=True)) for row in rows]


def cell(value: Any) -> str:
    """A JSON value as the text a CSV cell holds."""
    return value if isinstance(value, str) else "" if value is None else json.dumps(value)


def cells(record: Any, columns: tuple[str, ...]) -> list[str]:
    """A (damaged) record as a CSV row: a mapping's values in column order (a deleted column is no cell), a
    list's items, or one scalar."""
    if isinstance(record, dict):
        ordered = [c for c in columns if c in record] + [k for k in record if k not in columns]
        return [cell(record[c]) for c in ordered]
    if isinstance(record, list):
        return [cell(v) for v in record]
    return [cell(record)]


def write_csv(path: Path, rows: list[list[str]], header: tuple[str, ...] | None) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header:
        writer.writerow(header)
    writer.writerows(rows)
    path.write_bytes(buffer.getvalue().encode("utf-8", errors="surrogatepass"))


def stem(mask_path: Any) -> str | None:
    return mask_path[: -len(".png")] if isinstance(mask_path, str) and mask_path.endswith(".png") else None


@cache
def baseline_and_docs():
    with workspace() as space:
        setup(space)
        outcome = run(lambda: make(space), space)
        docs = {OI_ANNOTATIONS: read_csv(space.root / OI_ANNOTATIONS, OI_COLUMNS, header=True),
                OI_CLASSES: read_csv(space.root / OI_CLASSES, CLASS_COLUMNS, header=False)}
    assert outcome.rows and not outcome.failures and outcome.plan_error is None
    return outcome, docs


def keys_of(docs: dict, name: str, before: dict[str, str], after: Any) -> set[str]:
    """The record keys a changed row may affect: a mask row's own (and, with a changed MaskPath, the one it
    claims); a class row's: every mask row of that class."""
    if name == OI_CLASSES:
        return {stem(row["MaskPath"]) for row in docs[OI_ANNOTATIONS] if row["LabelName"] == before["LabelName"]}
    claimed = stem(after.get("MaskPath")) if isinstance(after, dict) else None
    return {stem(before["MaskPath"])} | ({claimed} if claimed else set())


@share(0.8)
@given(st.data())
def test_a_damaged_record_fails_alone(data):
    baseline, docs = baseline_and_docs()
    name = data.draw(st.sampled_from(sorted(docs)))
    index = data.draw(st.integers(0, len(docs[name]) - 1))
    columns, header = (OI_COLUMNS, OI_COLUMNS) if name == OI_ANNOTATIONS else (CLASS_COLUMNS, None)
    with workspace() as space:
        setup(space)
        mutation = data.draw(mutations(docs[name][index], space.names))
        damaged = apply(docs[name][index], mutation)
        rows = [cells(row, columns) for row in docs[name]]
        rows[index] = cells(damaged, columns)
        write_csv(space.root / name, rows, header)
        outcome = run(lambda: make(space), space)
        count(FAMILY)
        touched = dependents(baseline, keys_of(docs, name, docs[name][index], damaged))
        if name == OI_CLASSES and outcome.plan_error is not None:
            # The class file is the source's dictionary: a row that is not LabelName,DisplayName refuses the file
            # (OpenImagesFormatError, from plan(), naming it and the line), as the reader always has.
            touched = None
        check_outcome(outcome, baseline, space, touched, [name], f"{name}[{index}] {mutation}")


@share(0.2)
@given(st.data())
def test_a_damaged_file_is_named(data):
    baseline, _ = baseline_and_docs()
    with workspace() as space:
        setup(space)
        files = sorted(p.relative_to(space.root).as_posix() for p in space.root.rglob("*") if p.is_file())
        name = data.draw(st.one_of(st.sampled_from([OI_ANNOTATIONS, OI_CLASSES]), st.sampled_from(files)))
        what, damaged = data.draw(byte_damage((space.root / name).read_bytes()))
        (space.root / name).write_bytes(damaged)
        outcome = run(lambda: make(space), space)
        count(FAMILY)
        check_outcome(outcome, baseline, space, None, [name], f"{name} {what}")


# -- regressions: what the fuzz found (each fails on the code before its fix) -------------------------------


def oi_copy(tmp_path: Path) -> Path:
    root = tmp_path / "open-images"
    shutil.copytree(pristine(), root)
    return root


def read_all(root: Path) -> dict[str, ImageRegions]:
    source = OpenImagesSource(root, classes=OI_CLASSES)
    return {entry.image_id: entry for entry in source.read(0, source.count())}


def test_a_mask_row_with_bytes_that_are_not_utf8_fails_alone(tmp_path):
    """One byte that is not UTF-8 anywhere in the mask CSV raised UnicodeDecodeError out of count(): the whole
    source was refused, by a message that did not name the file."""
    root = oi_copy(tmp_path)
    lines = (root / OI_ANNOTATIONS).read_bytes().split(b"\n")
    lines[2] = lines[2] + b"\xff"  # the second row's Clicks
    (root / OI_ANNOTATIONS).write_bytes(b"\n".join(lines))
    entries = read_all(root)
    assert [(f.reason, f.record_id) for f in entries["<line 3>"].failures] == [("bad_row", "<line 3>")]
    assert "not UTF-8" in entries["<line 3>"].failures[0].message
    regions = [r.record_id for e in entries.values() for r in e.regions]
    assert len(regions) == len(read_csv(pristine() / OI_ANNOTATIONS, OI_COLUMNS, header=True)) - 1


def test_an_image_id_too_long_for_a_file_name_fails_its_rows(tmp_path):
    """An ImageID longer than a file name may be raised OSError (ENAMETOOLONG) out of read()."""
    root = oi_copy(tmp_path)
    rows = read_csv(root / OI_ANNOTATIONS, OI_COLUMNS, header=True)
    rows[0]["ImageID"] = "a" * 300
    write_csv(root / OI_ANNOTATIONS, [cells(row, OI_COLUMNS) for row in rows], OI_COLUMNS)
    entries = read_all(root)
    assert [f.reason for f in entries["a" * 300].failures] == ["bad_row"]
    assert sum(len(e.regions) for e in entries.values()) == len(rows) - 1


def test_file_level_problems_are_refused_by_count_naming_the_file(tmp_path):
    """A class file that is not two columns was found only by read(), inside a unit (the index stage crashed);
    an unclosed quote past the CSV field limit raised csv.Error, which named no file."""
    root = oi_copy(tmp_path)
    path = root / OI_CLASSES
    path.write_text(path.read_text().replace("\n", ",x\n", 1))
    with pytest.raises(OpenImagesFormatError, match=f"{OI_CLASSES}: line 1: expected LabelName,DisplayName"):
        OpenImagesSource(root, classes=OI_CLASSES).count()
    root = oi_copy(tmp_path / "quote")
    path = root / OI_ANNOTATIONS
    path.write_bytes(path.read_bytes() + b'"' + b"x" * 200_000 + b"\n")
    with pytest.raises(OpenImagesFormatError, match=f"{OI_ANNOTATIONS}: line .*field larger than field limit"):
        OpenImagesSource(root, classes=OI_CLASSES).count()


def test_class_file_bytes_that_are_not_utf8_read_as_replacement_characters(tmp_path):
    """One byte that is not UTF-8 in the class file raised UnicodeDecodeError out of read()."""
    root = oi_copy(tmp_path)
    path = root / OI_CLASSES
    mid = read_csv(root / OI_ANNOTATIONS, OI_COLUMNS, header=True)[0]["LabelName"]
    name = {row["LabelName"]: row["DisplayName"] for row in read_csv(path, CLASS_COLUMNS, header=False)}[mid]
    path.write_bytes(path.read_bytes().replace(name.encode(), name.encode() + b"\xff"))
    labels = {r.label for e in read_all(root).values() for r in e.regions}
    assert f"{name}\ufffd" in labels


def test_a_mask_archive_that_is_no_zip_fails_only_its_masks(tmp_path):
    """A cut-short *-masks-<c>.zip raised BadZipFile out of read(): the whole unit failed."""
    root = oi_copy(tmp_path)
    archive = next((root / "masks").glob("*.zip"))
    archive.write_bytes(archive.read_bytes()[:100])
    entries = read_all(root)
    char = archive.stem[-1]
    for image_id, entry in entries.items():
        if image_id.startswith(char):
            assert entry.failures and {f.reason for f in entry.failures} == {"unreadable_mask"}
            assert all(archive.name in f.message for f in entry.failures) and not entry.regions
        else:
            assert entry.regions and not entry.failures


def test_a_label_with_no_words_fails_its_regions_not_the_unit():
    """A DisplayName with no words ("(Animal)", empty) raised ValueError out of build_unit (replace_instruction):
    the whole unit failed."""
    _, docs = baseline_and_docs()
    mid = docs[OI_ANNOTATIONS][0]["LabelName"]
    classes = [dict(row, DisplayName="(Animal)") if row["LabelName"] == mid else row for row in docs[OI_CLASSES]]
    with workspace() as space:
        setup(space)
        write_csv(space.root / OI_CLASSES, [cells(row, CLASS_COLUMNS) for row in classes], None)
        outcome = run(lambda: make(space), space)
    failed = {stem(row["MaskPath"]) for row in docs[OI_ANNOTATIONS] if row["LabelName"] == mid}
    assert {(f.reason, f.record_id) for f in outcome.failures} == {("bad_label", key) for key in failed}
    assert outcome.rows and not failed & set(outcome.rows)


def test_regions_of_two_sources_with_the_same_record_ids_keep_their_own_labels(tmp_path):
    """A region found its own index row by record id: of two sources holding the same record ids (two copies of
    a release, relabelled), every region took the last source's label."""
    first, second = oi_copy(tmp_path / "a"), oi_copy(tmp_path / "b")
    classes = read_csv(second / OI_CLASSES, CLASS_COLUMNS, header=False)
    write_csv(second / OI_CLASSES, [[row["LabelName"], row["DisplayName"] + " b"] for row in classes], None)
    made = replacement(tmp_path, tmp_path / "out",
                       [open_images_source(first, OI_CLASSES), open_images_source(second, OI_CLASSES)])
    made.prepare()
    units = made.plan()
    for unit in units:
        rows = made.build_unit(unit).rows
        assert rows
        second_source = unit.payload["source"] == 1
        assert all(row["origin"]["phrase"].endswith(" b") == second_source for row in rows), unit.key


def test_a_mask_path_of_a_bare_slash_names_its_line(tmp_path):
    """`make fuzz` find: MaskPath "/" has no stem, so its bad_row failure named no record."""
    root = oi_copy(tmp_path)
    rows = read_csv(root / OI_ANNOTATIONS, OI_COLUMNS, header=True)
    rows[0]["MaskPath"] = "/"
    write_csv(root / OI_ANNOTATIONS, [cells(row, OI_COLUMNS) for row in rows], OI_COLUMNS)
    failures = [f for e in read_all(root).values() for f in e.failures]
    assert [(f.reason, f.record_id) for f in failures] == [("bad_row", f"{rows[0]['ImageID']}:line 2")]
