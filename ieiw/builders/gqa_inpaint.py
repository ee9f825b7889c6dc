"""GQA-Inpaint (Yildirim et al. 2023, the Inst-Inpaint paper) -> ``edit`` rows as InstructDiffusion reads it: the
``gqa_inpaint:`` section (docs/multitask.md, "Editing data importers").

Layout, as InstructDiffusion's ``dataset/README.md`` lists its ``data/gqa-inpaint`` folder (the GQA-Inpaint zip
unpacked, GQA's ``images.zip`` beside it)::

    gqa-inpaint/
      meta_info.json                          # InstructDiffusion's list of pairs (below)
      images/<image_id>.jpg                   # GQA's original photos
      images_inpainted/<image_id>/<object_id>.jpg   # the photo with that object inpainted away
      masks/<image_id>/<object_id>.jpg        # the object's mask (not read: the official loader does not)
      train_scenes.json                       # GQA scene graphs (not read)

``meta_info.json`` is a JSON list of ``{"source_image_path", "target_image_path", "instruction"}``. The paths are
written relative to the folder the official code ran in, so they start ``../datasets/...``; the official loader
(``GQAInpaintDataset.__getitem__``, ``dataset/editing/edit_zip_dataset.py``) replaces ``../datasets`` with its
``path`` in the source path, but ``../datasets/gqa-inpaint`` in the target path. So a source
``../datasets/images/<id>.jpg`` is ``<root>/images/<id>.jpg`` and a target
``../datasets/gqa-inpaint/images_inpainted/<id>/<obj>.jpg`` is ``<root>/images_inpainted/<id>/<obj>.jpg``. This
reader does the same with the two prefixes (``source_prefix``, ``target_prefix``), as a prefix only: a path that
starts with the prefix and ``/`` loses that part and the rest is read under ``root``; any other path is read under
``root`` as it is written (the official code would open it relative to its working directory). Every name goes
through :func:`~ieiw.schemas.paths.path_under`: absolute, ``..`` or symlinked out is ``path_outside_root``.

**Direction.** The official loader makes ``source_image_path`` the model's input (``c_concat``) and
``target_image_path`` the edited output (``edited``), and so does this reader: ``source_image`` is the record's
``source_image_path``, ``target_image`` its ``target_image_path``. With the prefixes above the source is GQA's
original photo (under ``images/``, outside the GQA-Inpaint zip) and the target the inpainted one (under
``images_inpainted/``): the pair removes an object, and the instruction says which ("remove the ..."). The
``meta_info.json`` file itself is not published; that the source paths name ``images/`` and the target paths
``images_inpainted/`` is what the two prefixes and the folder list imply, not something read from the file.

``origin.record_id`` is ``meta_info:<index>`` (the record's place in the list, as the official loader indexes it:
one file may list a pair twice, with another instruction), ``origin.image_id`` the source's file name without
extension (GQA's image id: every object removed from one photo lands in one split). The official ``flip_prob``
is 0 (``configs/instruct_diffusion.yaml``), which the trainer's flip table has under ``gqa-inpaint``, this
reader's ``origin.dataset``. Neither the release nor the official loader (which resizes both images straight to
256 x 256) says that a target has its source's size, so partners of different sizes are kept, counted
``size_differs`` and their target size recorded; ``require_same_size: true`` makes them ``size_mismatch``.

Failures name ``meta_info.json`` and the record's index: ``bad_record`` (not an object; a path that is missing, no
string, empty or only the prefix), ``path_outside_root``, ``missing_image`` (naming the path looked at),
``unreadable_image`` (the image file), ``empty_instruction``, ``size_mismatch``. A file that is not a JSON list
stops the build.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import Field

from ieiw.builders.importers import (
    ImportFormatError,
    edit_row,
    index_units,
    load_json_list,
    note_sizes,
    read_cell_instruction,
    read_image,
    shown,
)
from ieiw.schemas.config import BuilderConfig, StrictModel
from ieiw.schemas.lazy import locked_cached_property
from ieiw.schemas.paths import PATH_OUTSIDE_ROOT, PathOutsideRoot, path_under
from ieiw.schemas.registry import register_builder
from ieiw.schemas.rows import stable_hash, text_field
from ieiw.schemas.source_image import SourceImage
from ieiw.schemas.units import BuildContext, CandidateBuilder, SourceRecordError, UnitResult, WorkUnit

NAME = "gqa_inpaint"
DATASET = "gqa-inpaint"  # the trainer's source_weights and flip tables use this name
ANNOTATIONS = "meta_info.json"
SOURCE_PREFIX = "../datasets"  # what the official loader replaces with its path in source_image_path
TARGET_PREFIX = "../datasets/gqa-inpaint"  # ... and in target_image_path
PATH_KEYS = ("source_image_path", "target_image_path")
LICENSE = ("GQA-Inpaint (Yildirim et al. 2023): no dataset licence found (the inst-inpaint repository's MIT "
           "licence covers its code); photos from GQA / Visual Genome (unverified)")


class GqaInpaintSampleSpec(StrictModel):
    """Write the bundled synthetic sample (InstructDiffusion's layout) into ``root`` when it is missing."""

    pairs: int = Field(8, ge=1)
    seed: int = 0
    width: int = Field(128, ge=32)
    height: int = Field(96, ge=32)
    bad: bool = Field(False, description="add the bad records the tests name: not an object, no target path, a "
                                         "path out of the root, a missing target, an undecodable source, no "
                                         "instruction")


class GqaInpaintConfig(BuilderConfig):
    """The ``gqa_inpaint:`` section."""

    root: Path = Field(description="the gqa-inpaint folder: meta_info.json, images/, images_inpainted/")
    annotations: str = Field(ANNOTATIONS, description="the pairs JSON under root")
    source_prefix: str = Field(SOURCE_PREFIX, description="a source_image_path starting with this and / is read "
                                                          "under root without it (the official loader's)")
    target_prefix: str = Field(TARGET_PREFIX, description="the same for target_image_path")
    limit: int | None = Field(None, ge=1, description="read at most this many records (file order)")
    require_same_size: bool = False
    samples: GqaInpaintSampleSpec | None = Field(None, description="make a synthetic sample at root if missing")

    def annotations_path(self) -> Path:
        return Path(self.root) / self.annotations

    def preflight(self) -> list[str]:
        if not self.enabled:
            return []
        if not Path(self.root).exists() and self.samples is not None:
            return []
        try:
            load_records(self.annotations_path())
        except (FileNotFoundError, ImportFormatError) as exc:
            return [f"{NAME}: {exc}"]
        return []


def load_records(path: Path) -> list[Any]:
    """The JSON list of records; anything else raises (``FileNotFoundError``, :class:`ImportFormatError`)."""
    return load_json_list(path, "a GQA-Inpaint meta_info.json is a JSON list of {source_image_path, "
                                "target_image_path, instruction}")


def mapped(name: str, prefix: str) -> str:
    """``name`` as a path under the dataset root: without ``prefix`` and the ``/`` after it when it starts with
    them (the official ``str.replace`` of the prefix by the root, for the paths it was meant for), else as it
    is."""
    prefix = prefix.rstrip("/")
    if prefix and name.startswith(prefix + "/"):
        return name[len(prefix) + 1:]
    return name


@dataclass(frozen=True)
class GqaSource:
    path: Path  # meta_info.json
    records: list[Any]

    def digest(self) -> str:
        return stable_hash(self.records, length=16)


@register_builder(NAME, GqaInpaintConfig)
class GqaInpaintBuilder(CandidateBuilder):
    name = NAME

    def __init__(self, config: GqaInpaintConfig, context: BuildContext):
        self.config = config
        self.unit_size = context.unit_size

    @locked_cached_property
    def source(self) -> GqaSource:
        path = self.config.annotations_path()
        records = load_records(path)
        if self.config.limit:
            records = records[: self.config.limit]
        return GqaSource(path, records)

    def prepare(self) -> None:
        spec = self.config.samples
        if spec is not None:
            from ieiw.samples.editing import ensure_gqa_inpaint_sample

            ensure_gqa_inpaint_sample(Path(self.config.root), **spec.model_dump())

    def fingerprint(self) -> dict[str, Any]:
        c = self.config
        return {"root": str(Path(c.root).resolve()), "annotations": c.annotations, "records": self.source.digest(),
                "source_prefix": c.source_prefix, "target_prefix": c.target_prefix, "limit": c.limit,
                "require_same_size": c.require_same_size}

    def backends(self) -> dict[str, str]:
        return {"pairs": "json-import"}

    def plan(self) -> list[WorkUnit]:
        return index_units(NAME, len(self.source.records), self.unit_size)

    def build_unit(self, unit: WorkUnit) -> UnitResult:
        records = self.source.records
        result = UnitResult()
        for index in range(unit.payload["start"], unit.payload["stop"]):
            result.records += 1
            try:
                result.rows.append(self._row(index, records[index], result.counters))
            except SourceRecordError as err:
                result.failures.append(err.failure)
        return result

    def record_id(self, index: int) -> str:
        return f"{PurePosixPath(self.config.annotations).stem or 'meta_info'}:{index}"

    def _image(self, written: str, name: str, record_id: str, where: str) -> tuple[SourceImage, Path]:
        file = str(self.source.path)
        try:
            path = path_under(Path(self.config.root), name)
        except PathOutsideRoot as exc:  # ../x, /x, symlinked out: nothing outside the root is read
            named = shown(repr(written)) + ("" if name == written else f" (read as {shown(repr(name))})")
            raise SourceRecordError(PATH_OUTSIDE_ROOT, record_id, file,
                                    f"{where}: {named} is not a path under the root: {shown(exc.why)}") from None
        try:
            data = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise SourceRecordError("missing_image", record_id, file,
                                    f"{where}: {shown(str(path))} is not there") from None
        except OSError as exc:  # a folder, a name too long for the file system, no permission
            raise SourceRecordError("missing_image", record_id, file,
                                    f"{where}: {shown(str(path))} cannot be read ({exc.strerror or exc})") from None
        return read_image(data, record_id, str(path), where), path

    def _row(self, index: int, record: Any, counters) -> dict[str, Any]:
        c = self.config
        file = str(self.source.path)
        record_id = self.record_id(index)
        where = f"record {index}"
        if not isinstance(record, dict):
            raise SourceRecordError("bad_record", record_id, file,
                                    f"{where}: a record is an object with source_image_path, target_image_path and "
                                    f"instruction, found {shown(json.dumps(record), 120)}")
        for key in PATH_KEYS:
            value = record.get(key)
            if not isinstance(value, str) or not value:
                what = "missing" if key not in record else f"{shown(json.dumps(value), 120)}, not a path"
                raise SourceRecordError("bad_record", record_id, file, f"{where}: {key} is {what}")
        instruction = read_cell_instruction(record.get("instruction"), record_id, file, f"{where}: instruction")
        written = {key: record[key] for key in PATH_KEYS}
        names = {"source_image_path": mapped(written["source_image_path"], c.source_prefix),
                 "target_image_path": mapped(written["target_image_path"], c.target_prefix)}
        for key, name in names.items():
            if not name.strip("/"):  # "../datasets/": the prefix and nothing after it
                raise SourceRecordError("bad_record", record_id, file,
                                        f"{where}: {key} {shown(repr(written[key]))} names no file")
        source, source_path = self._image(written["source_image_path"], names["source_image_path"], record_id,
                                          f"{where}: source_image_path")
        target, _ = self._image(written["target_image_path"], names["target_image_path"], record_id,
                                f"{where}: target_image_path")
        extra: dict[str, Any] = {"record": index,
                                 "source_image_path": text_field(written["source_image_path"]),
                                 "target_image_path": text_field(written["target_image_path"]),
                                 "source_file": text_field(names["source_image_path"]),
                                 "target_file": text_field(names["target_image_path"])}
        note_sizes(source, target, c.require_same_size, record_id, file, where, counters, extra)
        image_id = text_field(source_path.stem) or record_id
        return edit_row(builder=NAME, dataset=DATASET, split=None, record_id=record_id, image_id=image_id,
                        instruction=instruction, source=source, target=target, mask=None, license=LICENSE,
                        params={"reencode": "png"}, extra=extra, backend="json-import")
