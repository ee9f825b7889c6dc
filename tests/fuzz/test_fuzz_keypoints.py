"""Fuzz: the four keypoint readers (COCO, CrowdPose and AIC COCO-style JSON, MPII's JSON list), through the
keypoints builder that draws their joints. Each example draws the dataset, then damages one record of its
annotation file (or the file's bytes, or an image's)."""

from __future__ import annotations

import json
import shutil
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

from fuzz_harness import (
    DELETE,
    Mutation,
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

from ieiw.builders.keypoints import KeypointsBuilder, KeypointsConfig
from ieiw.samples.pose import make_pose_sample
from ieiw.schemas.units import BuildContext
from ieiw.sources.keypoints import DATASETS

FAMILY = "keypoints"
SECTIONS = ("images", "annotations", "categories", "licenses")  # the COCO-style lists whose entries are records


@cache
def pristine(dataset: str) -> Path:
    """Three images at 96x48 (six to eight person records), in ``dataset``'s layout, written once per process."""
    folder = Path(tempfile.mkdtemp(prefix=f"ieiw-fuzz-{dataset}-")) / dataset
    return make_pose_sample(folder, dataset, images=3, width=96, height=48)


def setup(space: Workspace, dataset: str) -> None:
    shutil.copytree(pristine(dataset), space.root, dirs_exist_ok=True)


def config(root: Path, dataset: str) -> KeypointsConfig:
    return KeypointsConfig(dataset=dataset, root=root)


def annotation_name(dataset: str) -> str:
    """The annotation file, relative to the dataset root."""
    return str(config(Path("."), dataset).annotation_path())


def builder(space: Workspace, dataset: str) -> KeypointsBuilder:
    return KeypointsBuilder(config(space.root, dataset), BuildContext(root=space.root, out_dir=space.out, unit_size=4))


@cache
def baseline_and_doc(dataset: str):
    """The undamaged build (rows, no failures) and the annotation file as parsed JSON."""
    with workspace() as space:
        setup(space, dataset)
        outcome = run(lambda: builder(space, dataset), space)
        doc = json.loads((space.root / annotation_name(dataset)).read_text())
    assert outcome.rows and not outcome.failures and outcome.plan_error is None, dataset
    return outcome, doc


def record_keys(dataset: str, doc: Any, index: int | None = None) -> set[str]:
    """The record keys (``origin.record_id``) of the file's people: all of them, or that of entry ``index``
    (MPII's list, a COCO-style ``annotations``)."""
    if dataset == "mpii":
        people = list(enumerate(doc)) if index is None else [(index, doc[index])]
        return {f"{place}:{entry['image']}" for place, entry in people}
    annotations = doc["annotations"] if index is None else [doc["annotations"][index]]
    return {str(ann["id"]) for ann in annotations}


def keys_of(dataset: str, doc: Any, where: tuple[Any, ...], changed: Any) -> set[str]:
    """The record keys a change to ``where`` may affect; ``changed`` is the damaged entry."""
    section, index = where
    if dataset == "mpii" or section == "annotations":
        return record_keys(dataset, doc, index)
    if section is None:  # a whole top-level value: ``info`` feeds no row, every other key may feed all of them
        return set() if index == "info" else record_keys(dataset, doc)
    if section == "images":  # its people; and those of the image whose id it now claims (the later entry wins)
        ids = [doc["images"][index]["id"]]
        if isinstance(changed, dict) and "id" in changed:
            ids.append(changed["id"])
        return {str(ann["id"]) for ann in doc["annotations"] if any(ann["image_id"] == i for i in ids)}
    return record_keys(dataset, doc)  # a category or a licence: every person may change


def entries(doc: Any, section: str | None) -> Any:
    """The list (or, for ``None``, the top-level object) that ``(section, index)`` indexes into."""
    return doc if section in (None, "entries") else doc[section]


@st.composite
def record_damage(draw, dataset: str):
    """Where to damage the file: ``("entries", index)`` of MPII's list, ``(section, index)`` of a COCO-style
    list, or ``(None, key)`` of a COCO-style file's top-level object."""
    _, doc = baseline_and_doc(dataset)
    if dataset == "mpii":
        return ("entries", draw(st.integers(0, len(doc) - 1)))
    choices = [(section, index) for section in SECTIONS if isinstance(doc.get(section), list)
               for index in range(len(doc[section]))]
    choices += [(None, key) for key in doc if key not in ("images", "annotations")]
    return draw(st.sampled_from(choices))


@share(0.8)
@given(st.data())
def test_a_damaged_record_fails_alone(data):
    dataset = data.draw(st.sampled_from(DATASETS), label="dataset")
    baseline, doc = baseline_and_doc(dataset)
    where = data.draw(record_damage(dataset), label="where")
    name = annotation_name(dataset)
    with workspace() as space:
        setup(space, dataset)
        damaged = json.loads(json.dumps(doc))
        section, index = where
        original = entries(doc, section)[index]
        mutation = data.draw(mutations(original, space.names), label="mutation")
        changed = apply(original, mutation)
        if section is None and data.draw(st.integers(0, 4), label="delete the key") == 0:
            mutation = Mutation((), DELETE)
            del damaged[index]
        else:
            entries(damaged, section)[index] = changed
        (space.root / name).write_text(json.dumps(damaged))
        outcome = run(lambda: builder(space, dataset), space)
        count(FAMILY)
        check_outcome(outcome, baseline, space, keys_of(dataset, doc, where, changed), [name],
                      f"{dataset} {name} {where} {mutation}")


@share(0.2)
@given(st.data())
def test_a_damaged_file_is_named(data):
    dataset = data.draw(st.sampled_from(DATASETS), label="dataset")
    baseline, _ = baseline_and_doc(dataset)
    images = sorted(str(p.relative_to(pristine(dataset))) for p in pristine(dataset).rglob("*.jpg"))
    name = data.draw(st.sampled_from([annotation_name(dataset), *images]), label="file")
    with workspace() as space:
        setup(space, dataset)
        what, damaged = data.draw(byte_damage((space.root / name).read_bytes()), label="damage")
        (space.root / name).write_bytes(damaged)
        outcome = run(lambda: builder(space, dataset), space)
        count(FAMILY)
        check_outcome(outcome, baseline, space, None, [name], f"{dataset} {name} {what}")
