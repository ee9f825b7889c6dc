"""GIER (Grounded Image Editing Requests, Shi et al. 2020) -> ``edit`` rows: the ``gier:`` section
(docs/multitask.md, "Editing data importers").

Layout, as InstructDiffusion's data folder and the GIER release (T2ONet's ``data/GIER``) have it::

    GIER_editing_data/
      GIER.json            # or GIER_new.json (InstructDiffusion), IER2.json (T2ONet): a JSON list of pairs
      images/<post>_<post>.jpg, images/<post>_<edit>.jpg   # the request's photo and an editor's result
      warped/...           # optional: InstructDiffusion's aligned copies, looked in first
      url_dict.json        # optional: image name -> its imgur URL
      masks/               # not read

A pair is ``{"input": name, "output": name, ...}``; the release adds ``request``, ``detailed_request``,
``dataset`` ("zhopped" or "reddit"), ``operator`` ({name: {local, ids}}), ``expert_summary`` and
``amateur_summary`` (lists of instructions annotators wrote); InstructDiffusion's file has ``prompts`` (a list)
instead. The instructions of a pair are its ``prompts`` when there are any, else its ``expert_summary`` then its
``amateur_summary`` (repeats dropped), else its ``instruction``, else its ``request``. The official loader draws
one of them at random per sample; a converter writes rows once, so ``instructions: one`` (default) keeps one per
pair, chosen by a hash of (``seed``, pair), and ``instructions: all`` writes a row per instruction (same images,
ids differ by ``instruction_index``).

An image name is looked up in each of ``image_dirs`` in turn (``warped`` then ``images``), as given and with
``/`` replaced by ``_`` (the release's own rule). ``origin.record_id`` is the output's name without extension
(``<post>_<edit>``, one per pair; the pair's index when the name has none, as ``.`` has not), ``origin.image_id``
the input's (all edits of one photo share a split); ``origin.url`` and ``origin.edit_url`` come from
``url_dict.json`` when it is there. People's edits may change the size (a crop, a border): partners of different
sizes are kept (the trainer fits the target to the source) and counted ``size_differs``; ``require_same_size:
true`` makes them ``size_mismatch`` failures.

Failures name the JSON file and the pair's index: ``bad_record`` (not an object, no input/output name, a name
that is no path under the image folders: absolute, ``..``, symlinked out, no file name at all; see
:mod:`ieiw.schemas.paths`),
``missing_image`` (naming every path looked at), ``unreadable_image``, ``empty_instruction``,
``duplicate_record`` (an output named by an earlier pair). A file that is not a JSON list stops the build.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import Field

from ieiw.builders.importers import (
    ImportFormatError,
    edit_row,
    index_units,
    load_json_list,
    note_sizes,
    read_image,
    shown,
)
from ieiw.schemas.config import BuilderConfig, StrictModel
from ieiw.schemas.lazy import locked_cached_property
from ieiw.schemas.paths import PathOutsideRoot, path_under
from ieiw.schemas.registry import register_builder
from ieiw.schemas.rows import stable_hash, text_field
from ieiw.schemas.units import BuildContext, CandidateBuilder, SourceRecordError, UnitResult, WorkUnit

NAME = "gier"
DATASET = "gier"
ANNOTATIONS = ("GIER.json", "GIER_new.json", "IER2.json")
LICENSE = ("GIER (Shi et al. 2020, Adobe Research): no licence found in the release files; images from "
           "Reddit and Zhopped posts (unverified)")


class GierSampleSpec(StrictModel):
    """Write the bundled synthetic sample (release layout) into ``root`` when it is missing."""

    pairs: int = Field(8, ge=1)
    seed: int = 0
    width: int = Field(128, ge=32)
    height: int = Field(96, ge=32)
    bad: bool = Field(False, description="add the bad pairs the tests name: a missing output, an undecodable "
                                         "input, no instruction, an output named twice")


class GierConfig(BuilderConfig):
    """The ``gier:`` section."""

    root: Path = Field(description="the GIER folder: a pairs JSON, images/ (and warped/)")
    annotations: str | None = Field(None, description="the pairs JSON under root; default: the first of GIER.json, "
                                                      "GIER_new.json, IER2.json that is there")
    image_dirs: tuple[str, ...] = Field(("warped", "images"), min_length=1,
                                        description="folders under root to find images in, in order")
    instructions: Literal["one", "all"] = "one"
    seed: int = 0
    limit: int | None = Field(None, ge=1, description="read at most this many pairs (file order)")
    require_same_size: bool = False
    samples: GierSampleSpec | None = Field(None, description="make a synthetic sample at root if missing")

    def annotations_path(self) -> Path:
        root = Path(self.root)
        if self.annotations is not None:
            return root / self.annotations
        for name in ANNOTATIONS:
            if (root / name).is_file():
                return root / name
        raise FileNotFoundError(f"{root}: no pairs file (looked for {', '.join(ANNOTATIONS)})")

    def preflight(self) -> list[str]:
        if not self.enabled:
            return []
        if not Path(self.root).exists() and self.samples is not None:
            return []
        try:
            load_pairs(self.annotations_path())
        except (FileNotFoundError, ImportFormatError) as exc:
            return [f"{NAME}: {exc}"]
        return []


def load_pairs(path: Path) -> list[Any]:
    """The JSON list of pairs; anything else raises (``FileNotFoundError``, :class:`ImportFormatError`)."""
    return load_json_list(path, "a GIER pairs file is a JSON list of {input, output, ...}")


def instructions_of(pair: dict[str, Any]) -> tuple[list[str], str | None]:
    """A pair's instructions (whitespace evened, repeats dropped) and the field(s) they came from."""

    def texts(values: Any) -> list[str]:
        items = values if isinstance(values, list) else [values]
        return [text_field(" ".join(v.split())) for v in items if isinstance(v, str) and v.strip()]

    def unique(items: list[str]) -> list[str]:
        return list(dict.fromkeys(items))

    if found := unique(texts(pair.get("prompts") or [])):
        return found, "prompts"
    if found := unique(texts(pair.get("expert_summary") or []) + texts(pair.get("amateur_summary") or [])):
        return found, "expert_summary+amateur_summary"
    for key in ("instruction", "request"):
        if found := texts(pair.get(key)):
            return found, key
    return [], None


@dataclass(frozen=True)
class GierSource:
    path: Path  # the pairs JSON
    pairs: list[Any]
    urls: dict[str, str]
    repeats: dict[int, int]  # pair index -> the earlier pair with the same output

    def digest(self) -> str:
        return stable_hash(self.pairs, length=16)


def _stem(name: str) -> str:
    return PurePosixPath(name.replace("\\", "/")).stem


def record_id_of(output: str, index: int) -> str:
    """A pair's record id: its output's name without extension, as a row can hold it; the pair's index when
    the name has no stem (``"."``, ``"/"``), so every failure names a record."""
    return text_field(_stem(output)) or str(index)


@register_builder(NAME, GierConfig)
class GierBuilder(CandidateBuilder):
    name = NAME

    def __init__(self, config: GierConfig, context: BuildContext):
        self.config = config
        self.unit_size = context.unit_size

    @locked_cached_property
    def source(self) -> GierSource:
        path = self.config.annotations_path()
        pairs = load_pairs(path)
        if self.config.limit:
            pairs = pairs[: self.config.limit]
        urls_file = Path(self.config.root) / "url_dict.json"
        urls = {}
        if urls_file.is_file():
            try:
                loaded = json.loads(urls_file.read_text(encoding="utf-8"))
                if isinstance(loaded, dict):
                    urls = {k: text_field(v) for k, v in loaded.items() if isinstance(v, str)}
            except (UnicodeDecodeError, json.JSONDecodeError):
                urls = {}
        seen: dict[str, int] = {}
        repeats: dict[int, int] = {}
        for index, pair in enumerate(pairs):
            if isinstance(pair, dict) and isinstance(pair.get("output"), str):
                key = record_id_of(pair["output"], index)
                if key in seen:
                    repeats[index] = seen[key]
                else:
                    seen[key] = index
        return GierSource(path, pairs, urls, repeats)

    def prepare(self) -> None:
        spec = self.config.samples
        if spec is not None:
            from ieiw.samples.editing import ensure_gier_sample

            ensure_gier_sample(Path(self.config.root), **spec.model_dump())

    def fingerprint(self) -> dict[str, Any]:
        c = self.config
        return {"root": str(Path(c.root).resolve()), "annotations": self.source.path.name,
                "pairs": self.source.digest(), "image_dirs": list(c.image_dirs), "instructions": c.instructions,
                "seed": c.seed, "limit": c.limit, "require_same_size": c.require_same_size,
                "urls": stable_hash(self.source.urls, length=16)}

    def backends(self) -> dict[str, str]:
        return {"pairs": "json-import"}

    def plan(self) -> list[WorkUnit]:
        return index_units(NAME, len(self.source.pairs), self.unit_size)

    def build_unit(self, unit: WorkUnit) -> UnitResult:
        source = self.source
        result = UnitResult()
        for index in range(unit.payload["start"], unit.payload["stop"]):
            result.records += 1
            try:
                rows = self._rows(index, source.pairs[index], result.counters)
            except SourceRecordError as err:
                result.failures.append(err.failure)
                continue
            result.rows.extend(rows)
        return result

    def find(self, name: str, record_id: str, where: str) -> tuple[Path, str]:
        """The image file of ``name`` and the folder it was found in; ``missing_image`` naming every path tried."""
        root = Path(self.config.root)
        tried = []
        for folder in self.config.image_dirs:
            for candidate in dict.fromkeys((name, name.replace("/", "_"))):
                try:
                    path = path_under(root / folder, candidate)
                except PathOutsideRoot as exc:  # ../x, /x, symlinked out: nothing outside the image folders is read
                    raise SourceRecordError("bad_record", record_id, str(self.source.path),
                                            f"{where}: {shown(repr(name))} is not a name under "
                                            f"{', '.join(self.config.image_dirs)}: {shown(exc.why)}") from None
                try:
                    found = path.is_file()
                except OSError:  # a name too long for the file system: no file has it
                    found = False
                if found:
                    return path, folder
                tried.append(shown(str(path)))
        raise SourceRecordError("missing_image", record_id, str(self.source.path),
                                f"{where}: {shown(name)} is not at {' or '.join(tried)}")

    def _image(self, name: str, record_id: str, where: str):
        path, folder = self.find(name, record_id, where)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SourceRecordError("missing_image", record_id, str(path), f"{where}: {exc}") from None
        return read_image(data, record_id, str(path), where), folder

    def _rows(self, index: int, pair: Any, counters) -> list[dict[str, Any]]:
        c = self.config
        file = str(self.source.path)
        where = f"pair {index}"
        if not isinstance(pair, dict) or not all(isinstance(pair.get(k), str) and pair[k] for k in ("input", "output")):
            raise SourceRecordError("bad_record", str(index), file,
                                    f"{where}: a pair is an object with input and output image names, found "
                                    f"{json.dumps(pair)[:120]}")
        record_id, image_id = record_id_of(pair["output"], index), text_field(_stem(pair["input"]))
        if index in self.source.repeats:
            raise SourceRecordError("duplicate_record", record_id, file, f"{where}: output {shown(pair['output'])} "
                                                                         f"is also pair {self.source.repeats[index]}'s")
        texts, field = instructions_of(pair)
        if not texts:
            raise SourceRecordError("empty_instruction", record_id, file,
                                    f"{where}: no prompts, expert_summary, amateur_summary, instruction or request")
        source, source_dir = self._image(pair["input"], record_id, f"{where}: input {shown(pair['input'])}")
        target, target_dir = self._image(pair["output"], record_id, f"{where}: output {shown(pair['output'])}")
        operators = pair.get("operator")
        extra: dict[str, Any] = {"pair": index, "instructions_mode": c.instructions, "input": pair["input"],
                                 "output": pair["output"],
                                 "input_folder": source_dir, "output_folder": target_dir,
                                 "instruction_field": field, "instructions": len(texts),
                                 "request": pair.get("request"), "gier_dataset": pair.get("dataset"),
                                 "operators": sorted(operators) if isinstance(operators, dict) else None}
        note_sizes(source, target, c.require_same_size, record_id, file, where, counters, extra)
        if c.instructions == "one":
            chosen = [int(stable_hash(NAME, c.seed, record_id, length=8), 16) % len(texts)]
        else:
            chosen = list(range(len(texts)))
        rows = []
        for k in chosen:
            # what shapes the row: which instruction (not how it was chosen, so `one` keeps a row of `all`)
            params = {"instruction_index": k, "reencode": "png"}
            rows.append(edit_row(builder=NAME, dataset=DATASET, split=None, record_id=record_id, image_id=image_id,
                                 instruction=texts[k], source=source, target=target, mask=None, license=LICENSE,
                                 params=params, extra=extra, backend="json-import",
                                 seed=c.seed if c.instructions == "one" else None,
                                 url=self.source.urls.get(pair["input"]),
                                 edit_url=self.source.urls.get(pair["output"])))
        return rows
