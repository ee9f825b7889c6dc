"""Fuzz: the SA-1B reader (per-image ``sa_<id>.json`` with COCO RLE masks, beside ``sa_<id>.jpg``), through the
replacement builder that reads it (index stage + candidates, embedded CPU backends).

SA-1B has no labels: its regions take the label of the nearest labelled Open Images exemplar, so the builder
also reads a pristine Open Images sample (never damaged here; ``test_fuzz_openimages.py`` damages it).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from functools import cache
from pathlib import Path

import pytest
from fuzz_harness import Workspace, apply, byte_damage, check_outcome, count, mutations, run, share, workspace
from hypothesis import given
from hypothesis import strategies as st
from replacement_runner import builder, dependents, open_images_source, sa1b_source

from ieiw.samples.replacement import OI_CLASSES, make_replace_samples
from ieiw.sources.regions import BadRle, ImageRegions, rle_mask
from ieiw.sources.sa1b import SA1BSource

FAMILY = "sa1b"
IMAGES = 3  # per format: 3 SA-1B images of 3-5 annotations each (2 units), 3 labelled Open Images ones


@cache
def pristine() -> Path:
    """Both sample formats at 48x32, written once per process."""
    return make_replace_samples(Path(tempfile.mkdtemp(prefix="ieiw-fuzz-sa1b-")) / "samples", IMAGES, 7, 48, 32)


def setup(space: Workspace) -> None:
    shutil.copytree(pristine(), space.root, dirs_exist_ok=True)


def make(space: Workspace):
    return builder(space, [sa1b_source(space.root / "sa1b"),
                           open_images_source(space.root / "open-images", OI_CLASSES)])


@cache
def baseline_and_docs():
    with workspace() as space:
        setup(space)
        outcome = run(lambda: make(space), space)
        docs = {path.relative_to(space.root).as_posix(): json.loads(path.read_text())
                for path in sorted((space.root / "sa1b").glob("sa_*.json"))}
    assert outcome.rows and not outcome.failures and outcome.plan_error is None
    assert any(key.split(":")[0].isdigit() for key in outcome.rows), "SA-1B regions made rows"
    return outcome, docs


def image_keys(doc: dict) -> set[str]:
    """The record keys of every annotation of one image (``<image_id>:<annotation id>``)."""
    return {f"{doc['image']['image_id']}:{ann['id']}" for ann in doc["annotations"]}


def claimed_keys(doc: dict, ann: object) -> set[str]:
    """The record key an annotation has (or, damaged, claims: an ``id`` changed to another annotation's takes
    that one's key, and the reader keeps the first annotation with it)."""
    if isinstance(ann, dict) and isinstance(ann.get("id"), int | str):
        return {f"{doc['image']['image_id']}:{ann['id']}"}
    return set()


@share(0.8)
@given(st.data())
def test_a_damaged_record_fails_alone(data):
    baseline, docs = baseline_and_docs()
    name = data.draw(st.sampled_from(sorted(docs)))
    doc = docs[name]
    part = data.draw(st.sampled_from(["document", "image", *range(len(doc["annotations"]))]))
    with workspace() as space:
        setup(space)
        if isinstance(part, int):  # one annotation: its own rows (and the rows it was the exemplar of)
            mutation = data.draw(mutations(doc["annotations"][part], space.names))
            damaged = dict(doc, annotations=list(doc["annotations"]))
            damaged["annotations"][part] = apply(doc["annotations"][part], mutation)
            touched = claimed_keys(doc, doc["annotations"][part]) | claimed_keys(doc, damaged["annotations"][part])
        elif part == "image":
            mutation = data.draw(mutations(doc["image"], space.names))
            damaged = dict(doc, image=apply(doc["image"], mutation))
            touched = image_keys(doc)
        else:
            mutation = data.draw(mutations(doc, space.names))
            damaged = apply(doc, mutation)
            touched = image_keys(doc)
        (space.root / name).write_text(json.dumps(damaged))
        outcome = run(lambda: make(space), space)
        count(FAMILY)
        check_outcome(outcome, baseline, space, dependents(baseline, touched), [name],
                      f"{name} {part} {mutation}")


@share(0.2)
@given(st.data())
def test_a_damaged_file_is_named(data):
    baseline, docs = baseline_and_docs()
    name = data.draw(st.sampled_from(sorted([*docs, *(n.replace(".json", ".jpg") for n in docs)])))
    with workspace() as space:
        setup(space)
        what, damaged = data.draw(byte_damage((space.root / name).read_bytes()))
        (space.root / name).write_bytes(damaged)
        outcome = run(lambda: make(space), space)
        count(FAMILY)
        check_outcome(outcome, baseline, space, None, [name], f"{name} {what}")


# -- regressions: what the fuzz found (each fails on the code before its fix) -------------------------------


def sa1b_copy(tmp_path: Path) -> Path:
    root = tmp_path / "sa1b"
    shutil.copytree(pristine() / "sa1b", root)
    return root


def edit(path: Path, change) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def by_file(root: Path) -> dict[str, ImageRegions]:
    source = SA1BSource(root)
    return {Path(entry.source_file).name: entry for entry in source.read(0, source.count())}


def test_ids_with_lone_surrogates_are_writable_and_ids_of_other_types_fail_alone(tmp_path):
    """A JSON "\\ud800" escape in an id gave a record id Arrow cannot write (the whole shard failed); an id that
    is a list or an object became a record id like "1:{'a': 1}"."""
    root = sa1b_copy(tmp_path)
    edit(root / "sa_1.json", lambda doc: doc["annotations"][0].update(id="\ud800"))
    edit(root / "sa_1.json", lambda doc: doc["annotations"][1].update(id={"a": 1}))
    edit(root / "sa_2.json", lambda doc: doc["image"].update(image_id="\ud800"))
    edit(root / "sa_3.json", lambda doc: doc["image"].update(image_id=[3]))
    entries = by_file(root)
    one, two, three = entries["sa_1.json"], entries["sa_2.json"], entries["sa_3.json"]
    assert one.regions[0].record_id == "1:\ufffd" and len(one.regions) == len(pristine_doc(1)["annotations"]) - 1
    assert [(f.reason, f.record_id) for f in one.failures] == [("bad_annotation", "1:#1")]
    assert two.image_id == "\ufffd" and two.regions and all(r.record_id.startswith("\ufffd:") for r in two.regions)
    assert [(f.reason, f.record_id) for f in three.failures] == [("bad_image_info", "sa_3")] and not three.regions


def test_a_file_name_no_file_can_have_fails_its_image(tmp_path):
    """A file_name the file system cannot encode, or one too long for it, raised out of read()."""
    root = sa1b_copy(tmp_path)
    edit(root / "sa_1.json", lambda doc: doc["image"].update(file_name="\ud800"))
    edit(root / "sa_2.json", lambda doc: doc["image"].update(file_name="a" * 300 + ".jpg"))
    entries = by_file(root)
    for name in ("sa_1.json", "sa_2.json"):
        assert [f.reason for f in entries[name].failures] == ["bad_image_info"] and not entries[name].regions
        assert entries[name].failures[0].file == str(root / name)
    assert entries["sa_3.json"].regions and not entries["sa_3.json"].failures


def test_a_repeated_annotation_id_fails_the_later_annotation(tmp_path):
    """Two annotations with one id were two regions with one record id (and one row id)."""
    root = sa1b_copy(tmp_path)
    first = pristine_doc(1)["annotations"][0]["id"]
    edit(root / "sa_1.json", lambda doc: doc["annotations"][1].update(id=first))
    one = by_file(root)["sa_1.json"]
    ids = [r.record_id for r in one.regions]
    assert len(ids) == len(set(ids)) and ids[0] == f"1:{first}"
    assert [(f.reason, f.record_id) for f in one.failures] == [("duplicate_id", f"1:{first}")]


def compressed(runs: list[int]) -> str:
    """COCO's compressed RLE string of ``runs`` (pycocotools' rleToString, for runs no uint32 holds)."""
    out = []
    for index, run_length in enumerate(runs):
        value = run_length - runs[index - 2] if index > 2 else run_length
        more = True
        while more:
            group = value & 0x1F
            value >>= 5
            more = value != -1 if group & 0x10 else value != 0
            out.append(chr(group + (0x20 if more else 0) + 48))
    return "".join(out)


@pytest.mark.parametrize("counts", [
    [2**70],  # OverflowError out of numpy
    [2**63 - 1, 2**63 - 1, 48 * 32 + 2],  # wraps around int64 to exactly the image's pixels
    compressed([2**58] * 64 + [48 * 32]),  # 60-bit numbers whose int64 sum wraps to the image's pixels
], ids=["huge", "list-wraps", "string-wraps"])
def test_runs_beyond_the_image_are_bad_rle(counts):
    with pytest.raises(BadRle):
        rle_mask([32, 48], counts, 32, 48)


def test_images_sharing_an_image_id_keep_their_own_pixels():
    """Rows of two images with one image_id in one unit were all painted on the first image's pixels."""
    _, docs = baseline_and_docs()
    with workspace() as space:
        setup(space)
        edit(space.root / "sa1b" / "sa_2.json", lambda doc: doc["image"].update(image_id=1))
        outcome = run(lambda: make(space), space)
        pixels = {name: (space.root / "sa1b" / name).read_bytes() for name in ("sa_1.jpg", "sa_2.jpg")}
    for number, name in ((1, "sa_1.jpg"), (2, "sa_2.jpg")):
        keys = {f"1:{ann['id']}" for ann in docs[f"sa1b/sa_{number}.json"]["annotations"]}
        made = [row for key in keys for row in outcome.rows.get(key, [])]
        assert made and all(row["source_image"]["bytes"] == pixels[name] for row in made)


def pristine_doc(number: int) -> dict:
    return json.loads((pristine() / "sa1b" / f"sa_{number}.json").read_text())
