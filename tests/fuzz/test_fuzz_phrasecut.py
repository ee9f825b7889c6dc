"""Fuzz: the PhraseCut reader, through the removal builder that uses it (refer files and image_data_split.json)."""

from __future__ import annotations

import json
import shutil
from functools import cache
from pathlib import Path

from fuzz_harness import Workspace, apply, byte_damage, check_outcome, count, mutations, run, share, workspace
from hypothesis import given
from hypothesis import strategies as st

from ieiw.builders.removal import PhraseCutSourceConfig, RemovalBuilder, RemovalConfig
from ieiw.samples.phrasecut import make_phrasecut_sample
from ieiw.schemas.units import BuildContext
from ieiw.sources.phrasecut import _image_id

FAMILY = "phrasecut"


@cache
def pristine() -> Path:
    """Five scenes at 64x48 (about a dozen records), written once per process."""
    import tempfile

    return make_phrasecut_sample(Path(tempfile.mkdtemp(prefix="ieiw-fuzz-phrasecut-")) / "VGPhraseCut_v0",
                                 5, 3, 64, 48)


def setup(space: Workspace) -> None:
    shutil.copytree(pristine(), space.root, dirs_exist_ok=True)


def builder(space: Workspace) -> RemovalBuilder:
    config = RemovalConfig(source=PhraseCutSourceConfig(root=space.root, splits=["train", "val"]))
    return RemovalBuilder(config, BuildContext(root=space.root, out_dir=space.out, unit_size=4))


@cache
def baseline_and_docs():
    with workspace() as space:
        setup(space)
        outcome = run(lambda: builder(space), space)
        docs = {name: json.loads((space.root / name).read_text())
                for name in ("refer_train.json", "refer_val.json", "image_data_split.json")}
    assert outcome.rows and not outcome.failures and outcome.plan_error is None
    return outcome, docs


def keys_of(docs, name: str, index: int, changed: object) -> set[str]:
    """The record keys a change to entry ``index`` of file ``name`` may affect: an info entry's image's records,
    and those of the image it now claims (``changed``: the entry after the change)."""
    if name == "image_data_split.json":
        claimed = _image_id(changed.get("image_id")) if isinstance(changed, dict) else -1
        images = {docs[name][index]["image_id"], claimed}
        return {str(r["task_id"]) for refer in ("refer_train.json", "refer_val.json") for r in docs[refer]
                if r["image_id"] in images}
    return {str(docs[name][index]["task_id"])}


@st.composite
def record_damage(draw):
    _, docs = baseline_and_docs()
    name = draw(st.sampled_from(sorted(name for name in docs if docs[name])))
    index = draw(st.integers(0, len(docs[name]) - 1))
    return name, index


@share(0.8)
@given(st.data())
def test_a_damaged_record_fails_alone(data):
    baseline, docs = baseline_and_docs()
    name, index = data.draw(record_damage())
    with workspace() as space:
        setup(space)
        mutation = data.draw(mutations(docs[name][index], space.names))
        doc = list(docs[name])
        doc[index] = apply(doc[index], mutation)
        (space.root / name).write_text(json.dumps(doc))
        outcome = run(lambda: builder(space), space)
        count(FAMILY)
        check_outcome(outcome, baseline, space, keys_of(docs, name, index, doc[index]), [name],
                      f"{name}[{index}] {mutation}")


@share(0.2)
@given(st.data())
def test_a_damaged_file_is_named(data):
    baseline, docs = baseline_and_docs()
    name = data.draw(st.sampled_from(sorted(docs)))
    with workspace() as space:
        setup(space)
        what, damaged = data.draw(byte_damage((space.root / name).read_bytes()))
        (space.root / name).write_bytes(damaged)
        outcome = run(lambda: builder(space), space)
        count(FAMILY)
        check_outcome(outcome, baseline, space, None, [name], f"{name} {what}")
