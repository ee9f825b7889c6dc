"""InstructPix2Pix's generated dataset -> ``edit`` rows: the ``instructpix2pix:`` section (docs/multitask.md,
"Editing data importers").

Two Parquet layouts are read, both as Hugging Face ``datasets`` writes them (image columns are ``{bytes, path}``
structs):

| layout | files | source | instruction | target | also |
|---|---|---|---|---|---|
| the released CLIP-filtered set (``timbrooks/instructpix2pix-clip-filtered``) | ``data/train-NNNNN-of-00262-<hash>.parquet`` | ``original_image`` | ``edit_prompt`` | ``edited_image`` | ``original_prompt``, ``edited_prompt`` |
| the short form (``input_image``, ``edit_prompt``, ``edited_image``; diffusers' example sets) | ``data/train-*.parquet`` | ``input_image`` | ``edit_prompt`` | ``edited_image`` | |

Each file's columns are mapped on their own (the first name present per role; ``columns:`` overrides), so a
folder may mix the two. ``origin.record_id`` is ``<file>:<row>``: the file's path under ``root`` without
``.parquet`` and the row's index in that file (the released set has several rows per prompt pair, one per
seed, so the prompts are no id). ``origin.image_id`` groups rows for the train/val split: the hash of
``original_prompt`` where there is one (all seeds and edits of one caption land in one split), else the source
image's bytes. InstructPix2Pix's pairs are generated at one size, so partners of different sizes are
``size_mismatch`` (``require_same_size: false`` keeps them).

**The original release** (``layout: original``; ``auto`` picks it when ``root`` has a ``seeds.json``), as
InstructPix2Pix's ``dataset_creation/prepare_dataset.py`` leaves it and InstructDiffusion's ``FilteredIP2PDataset``
(``dataset/editing/edit_zip_dataset.py``) reads it::

    clip-filtered-dataset/
      seeds.json                 # [[name, [seed, ...]], ...], sorted by name; seeds as text ("2140692")
      <name>/prompt.json         # {"input": caption, "edit": instruction, "output": edited caption}
      <name>/{seed}_0.jpg        # the source
      <name>/{seed}_1.jpg        # the target
      shard-00.zip ... shard-29.zip   # or the same members (<name>/prompt.json, ...) in zips

A member is looked up as a file under ``root`` first, then in the zips ``shard-NN.zip`` for NN in ``shards``
(InstructDiffusion's ``zip_start_index``, ``zip_end_index``: 0 to 30, ``str(i).zfill(2)``); a member name found
in several zips is read from the last, as InstructDiffusion's name -> zip mapping keeps the last. Zips of the
range that are not there are skipped (the official code would stop). **Split**: as both official loaders,
``splits`` (0.9, 0.05, 0.05) cut the list of *names* (before a name's seeds are listed):
``train`` is ``seeds[floor(0 * n):floor(0.9 * n)]``, ``val`` ``seeds[floor(0.9 * n):floor((0.9 + 0.05) * n)]``,
``test`` the rest (the same float arithmetic), ``all`` every name. ``origin.record_id`` is ``<name>/<seed>``
(InstructDiffusion's id of a pair), ``origin.image_id`` the hash of ``prompt.json``'s ``input`` as in the
clip-filtered Parquet layout (else ``name-<name>``), ``origin.split`` the ``split``.

**The filter list** (``filter_list:``): InstructDiffusion keeps only the pairs whose ``"<name>/<seed>"`` is in
``filtered-ip2p-thres5.5-0.5.json`` (a JSON list of such strings, a keep-list: ``np.isin(ids, filtered_ids)``);
pairs not on it are skipped (``not_in_filter_list``), an item that is no string matches nothing. The Parquet
layouts can be filtered only where each row carries its name and seed (``name`` and ``seed`` columns, or
``columns:``); the Hugging Face release does not, and a filter list then stops the build naming the file.

Failures of the original layout name ``seeds.json`` (or the zip, or the image file) and ``<name>/<seed>``:
``bad_record`` (an entry that is no ``[name, [seeds]]``, a seed that is no text or whole number),
``duplicate_record`` (a name and seed listed before), ``path_outside_root`` (a name or seed that leads out of
the root), ``missing_prompt``, ``unreadable_prompt`` (no JSON object), ``empty_instruction``, ``missing_image``,
``unreadable_image``, ``size_mismatch``. A ``seeds.json`` or filter list that is no JSON list, or a zip whose
directory cannot be read, stops the build naming the file.
"""

from __future__ import annotations

import json
import math
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from ieiw.builders.importers import (
    ImportFormatError,
    ParquetImportBuilder,
    ParquetImportConfig,
    ParquetImporter,
    check_same_size,
    edit_row,
    read_cell_image,
    read_cell_instruction,
    read_image,
    shown,
)
from ieiw.schemas.config import StrictModel
from ieiw.schemas.lazy import locked_cached_property
from ieiw.schemas.paths import PATH_OUTSIDE_ROOT, PathOutsideRoot, path_under
from ieiw.schemas.registry import register_builder
from ieiw.schemas.rows import image_key, stable_hash, text_field
from ieiw.schemas.source_image import SourceImage
from ieiw.schemas.units import BuildContext, SourceRecordError, UnitResult, WorkUnit

NAME = "instructpix2pix"
DATASET = "instructpix2pix"
# The dataset card states no licence; the instruct-pix2pix repository's licence covers its code. Unverified.
LICENSE = "InstructPix2Pix generated dataset (Brooks et al. 2023): no licence stated on the dataset card (unverified)"
ROLES = {
    "source": ("original_image", "input_image"),
    "instruction": ("edit_prompt",),
    "target": ("edited_image",),
    "input_prompt": ("original_prompt",),
    "output_prompt": ("edited_prompt",),
    "name": ("name",),  # read only to match a filter list: the prompt folder's name ...
    "seed": ("seed",),  # ... and the seed of the pair
}
REQUIRED = ("source", "instruction", "target")
SEEDS = "seeds.json"
SPLITS = ("train", "val", "test", "all")
OFFICIAL_SPLITS = (0.9, 0.05, 0.05)
OFFICIAL_SHARDS = (0, 30)
MAX_MEMBER_BYTES = 64 << 20  # a zip member claiming more is damaged or a bomb: one image is a few hundred KB
NOT_LISTED = "not_in_filter_list"
ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, OSError, ValueError,
              KeyError, OverflowError)


class InstructPix2PixSampleSpec(StrictModel):
    """Write the bundled synthetic sample, in one of the three layouts, into ``root`` when it is missing."""

    rows: int = Field(12, ge=1, description="pairs in all, over `files` files (original: names of 1-3 seeds)")
    files: int = Field(2, ge=1)
    row_group: int = Field(3, ge=1, description="rows per Parquet row group (small, so units cross groups)")
    seed: int = 0
    width: int = Field(128, ge=32)
    height: int = Field(128, ge=32)
    layout: Literal["clip-filtered", "short", "original"] = "clip-filtered"
    shards: int = Field(0, ge=0, description="original layout: pack the prompt folders into this many "
                                             "shard-NN.zip (0: folders)")
    bad: bool = Field(False, description="add the bad rows the tests name: an undecodable source, an empty "
                                         "instruction, a target of another size (original: also seeds that are no "
                                         "list, a missing target)")


class InstructPix2PixConfig(ParquetImportConfig):
    """The ``instructpix2pix:`` section."""

    root: Path = Field(description="the dataset folder: a clone of its Hugging Face repository (Parquet) or the "
                                   "original release (seeds.json, prompt folders or shard-NN.zip); or one Parquet "
                                   "file")
    split: str = Field("train", description="Parquet: the files' split; original: train, val, test (the official "
                                            "slices of seeds.json's names) or all")
    limit: int | None = Field(None, ge=1, description="read at most this many rows (Parquet: files in name order; "
                                                      "original: pairs of the split, before the filter list)")
    layout: Literal["auto", "parquet", "original"] = Field(
        "auto", description="auto: original when root has a seeds.json (or the sample is original), else parquet")
    columns: dict[Literal["source", "instruction", "target", "input_prompt", "output_prompt", "name", "seed"], str] = (
        Field(default_factory=dict, description="role -> column name, where a file names them otherwise"))
    require_same_size: bool = True
    splits: tuple[float, float, float] = Field(OFFICIAL_SPLITS, description="original: the train, val and test "
                                                                            "shares of the names (official: 0.9, "
                                                                            "0.05, 0.05)")
    shards: tuple[int, int] = Field(OFFICIAL_SHARDS, description="original: shard-NN.zip for first <= NN < last are "
                                                                 "read, where there")
    filter_list: Path | None = Field(None, description="a JSON list of \"<name>/<seed>\" pairs to keep "
                                                       "(InstructDiffusion's filtered-ip2p-thres5.5-0.5.json)")
    samples: InstructPix2PixSampleSpec | None = Field(None, description="make a synthetic sample at root if missing")

    section: ClassVar[str] = NAME
    missing_hint: ClassVar[str] = " (get it from the Hugging Face hub, docs/multitask.md; or set samples:)"

    @model_validator(mode="after")
    def _check(self) -> InstructPix2PixConfig:
        if any(share < 0 for share in self.splits) or not math.isclose(sum(self.splits), 1.0):
            raise ValueError(f"splits {list(self.splits)} must be shares of at least 0 that add up to 1")
        if not 0 <= self.shards[0] <= self.shards[1]:
            raise ValueError(f"shards {list(self.shards)} must be [first, last] with 0 <= first <= last")
        if self.layout == "original" and self.split not in SPLITS:
            raise ValueError(f"split {self.split!r}: the original layout's splits are {', '.join(SPLITS)}")
        return self

    def resolved_layout(self) -> Literal["parquet", "original"]:
        """``layout``, with ``auto`` decided: original when root holds a seeds.json (or is yet to be made from an
        original-layout sample)."""
        if self.layout != "auto":
            return self.layout
        root = Path(self.root)
        if (root / SEEDS).is_file():
            return "original"
        if not root.exists() and self.samples is not None and self.samples.layout == "original":
            return "original"
        return "parquet"

    def importer(self) -> Ip2pFiles | Ip2pOriginal:
        return Ip2pOriginal(self, 1) if self.resolved_layout() == "original" else Ip2pFiles(self, 1)

    def preflight(self) -> list[str]:
        if not self.enabled:
            return []
        if not Path(self.root).exists() and self.samples is not None:
            return []  # the sample is made by the build's prepare step
        importer = self.importer()
        try:
            importer.check()
        except FileNotFoundError as exc:
            hint = ORIGINAL_HINT if isinstance(importer, Ip2pOriginal) else self.missing_hint
            return [f"{NAME}: {exc}{hint}"]
        except ImportFormatError as exc:
            return [f"{NAME}: {exc}"]
        return []


ORIGINAL_HINT = " (InstructPix2Pix's original release: seeds.json beside the prompt folders or shard-NN.zip)"


# -- the filter list ----------------------------------------------------------------------------------
def load_json_list(path: Path, what: str) -> list[Any]:
    """A JSON file that must hold a list: ``FileNotFoundError`` or :class:`ImportFormatError` naming it."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: not found") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # JSONDecodeError; nesting too deep
        raise ImportFormatError(f"{path}: not JSON ({' '.join(str(exc).split())[:200]})") from None
    except OSError as exc:
        raise ImportFormatError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not isinstance(data, list):
        raise ImportFormatError(f"{path}: {what} is a JSON list, found a {type(data).__name__}")
    return data


def load_filter_list(path: Path) -> frozenset[str]:
    """The pairs a filter list keeps, ``"<name>/<seed>"``. Items that are no text match no pair (an id is always
    text), as in the official ``np.isin``; the list itself missing or not a list raises
    :class:`ImportFormatError` (it is configuration: a build without it would keep every pair)."""
    try:
        items = load_json_list(path, 'a filter list (InstructDiffusion\'s filtered-ip2p-thres5.5-0.5.json) of '
                                     '"<name>/<seed>"')
    except FileNotFoundError as exc:
        raise ImportFormatError(f"filter_list {exc}") from None
    return frozenset(item for item in items if isinstance(item, str))


def filter_digest(keep: frozenset[str] | None) -> str | None:
    return None if keep is None else stable_hash(sorted(keep), length=16)


# -- the Parquet layouts ------------------------------------------------------------------------------
class Ip2pFiles(ParquetImporter):
    name = NAME
    roles = ROLES
    required = REQUIRED

    @locked_cached_property
    def keep(self) -> frozenset[str] | None:
        path = self.config.filter_list
        return None if path is None else load_filter_list(Path(path))

    def check(self) -> None:
        super().check()
        if self.keep is None:
            return
        for part in self.parts:
            columns = self.columns(part)
            if columns["name"] is None or columns["seed"] is None:
                wanted = [self.overrides().get(role, ROLES[role][0]) for role in ("name", "seed")]
                raise ImportFormatError(
                    f"{part.path}: filter_list {self.config.filter_list} keeps pairs by \"<name>/<seed>\", and the "
                    f"rows of this file cannot be matched to it: it has no {' and '.join(wanted)} columns (it has "
                    f"{', '.join(part.columns) or 'no columns'}). The Hugging Face release carries neither; read the "
                    f"original release instead (layout: original: seeds.json beside the prompt folders or "
                    f"shard-NN.zip), name the columns (columns: {{name: ..., seed: ...}}), or drop filter_list")


def parquet_pair(values: dict[str, Any], columns: dict[str, str | None]) -> str | None:
    """A Parquet row's ``"<name>/<seed>"`` (a whole float seed read as its integer), or None when it has none."""
    name = values.get(columns["name"]) if columns["name"] else None
    seed = values.get(columns["seed"]) if columns["seed"] else None
    if isinstance(seed, float) and seed.is_integer():
        seed = int(seed)
    if not isinstance(name, str) or isinstance(seed, bool) or not isinstance(seed, str | int):
        return None
    return f"{name}/{seed}"


# -- the original layout ------------------------------------------------------------------------------
def split_bounds(count: int, split: str, splits: tuple[float, float, float]) -> tuple[int, int]:
    """The names ``[lo, hi)`` of ``split``, computed as the official loaders do (float shares, ``math.floor``)."""
    if split == "all":
        return 0, count
    if split not in SPLITS:
        raise ImportFormatError(f"split {split!r}: the original layout's splits are {', '.join(SPLITS)}")
    split_0, split_1 = {
        "train": (0.0, splits[0]),
        "val": (splits[0], splits[0] + splits[1]),
        "test": (splits[0] + splits[1], 1.0),
    }[split]
    return math.floor(split_0 * count), math.floor(split_1 * count)


@dataclass(frozen=True)
class Pair:
    """One ``(name, seed)`` of the split, or the trouble with an entry of seeds.json."""

    position: int  # the entry's index in seeds.json
    key: str | None  # "<name>/<seed>" as the filter list names it; None when the entry has no such id
    record_id: str  # the key as a row can hold it, else where the entry is
    name: str | None = None
    seed: str | None = None
    problem: tuple[str, str] | None = None  # (reason, message)


class Ip2pOriginal:
    """The original release's reader: seeds.json, the split, the filter list, and the members in folders or
    zips."""

    def __init__(self, config: InstructPix2PixConfig, unit_size: int):
        self.config = config
        self.root = Path(config.root)
        self.unit_rows = config.unit_rows or unit_size

    @property
    def seeds_path(self) -> Path:
        return self.root / SEEDS

    @locked_cached_property
    def seeds(self) -> list[Any]:
        return load_json_list(self.seeds_path, "seeds.json (a list of [name, [seed, ...]])")

    @locked_cached_property
    def keep(self) -> frozenset[str] | None:
        path = self.config.filter_list
        return None if path is None else load_filter_list(Path(path))

    @locked_cached_property
    def pairs(self) -> list[Pair]:
        """The split's pairs in seeds.json order (at most ``limit``), each entry's trouble in its place."""
        seeds = self.seeds
        lo, hi = split_bounds(len(seeds), self.config.split, self.config.splits)
        limit = self.config.limit
        out: list[Pair] = []
        seen: dict[str, int] = {}
        for position in range(lo, hi):
            if limit is not None and len(out) >= limit:
                break
            out.extend(self._entry(position, seeds[position], seen))
        return out[:limit] if limit is not None else out

    def _entry(self, position: int, entry: Any, seen: dict[str, int]) -> list[Pair]:
        where = f"{SEEDS} entry {position}"
        ok = (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str) and entry[0]
              and isinstance(entry[1], list))
        if not ok:
            name = entry[0] if isinstance(entry, list) and entry and isinstance(entry[0], str) and entry[0] else None
            return [Pair(position, None, text_field(name) or f"{SEEDS}:{position}", problem=(
                "bad_record", f"{where}: an entry is [name, [seed, ...]], found {shown(json.dumps(entry), 160)}"))]
        name, values = entry
        pairs = []
        for k, seed in enumerate(values):
            text = None
            if isinstance(seed, str) and seed:
                text = seed
            elif isinstance(seed, int) and not isinstance(seed, bool):
                try:
                    text = str(seed)
                except ValueError:  # more digits than Python converts
                    text = None
            if text is None:
                message = f"{where}: seed {k} is {shown(json.dumps(seed), 160)}, not a seed (text or a whole number)"
                pairs.append(Pair(position, None, f"{text_field(name)}/#{k}", name, problem=("bad_record", message)))
                continue
            key = f"{name}/{text}"
            record_id = text_field(key)
            if record_id in seen:
                pairs.append(Pair(position, key, record_id, name, text, problem=(
                    "duplicate_record", f"{where}: {shown(record_id, 160)} is also listed by entry {seen[record_id]}")))
                continue
            seen[record_id] = position
            pairs.append(Pair(position, key, record_id, name, text))
        return pairs

    @locked_cached_property
    def archives(self) -> tuple[dict[str, Path], list[list[Any]]]:
        """member name -> the zip holding it (the last of the range that has it), and (zip, size) of each zip."""
        mapping: dict[str, Path] = {}
        listed: list[list[Any]] = []
        first, last = self.config.shards
        for index in range(first, last):
            path = self.root / f"shard-{str(index).zfill(2)}.zip"
            if not path.is_file():
                continue
            try:
                with zipfile.ZipFile(path) as archive:
                    names = archive.namelist()
                size = path.stat().st_size
            except ZIP_ERRORS as exc:
                raise ImportFormatError(f"{path}: not a readable zip ({' '.join(str(exc).split())[:200]})") from None
            for name in names:
                mapping[name] = path
            listed.append([path.name, size])
        return mapping, listed

    def check(self) -> None:
        """Everything a unit needs, read now: raises with one line naming the file."""
        _ = (self.pairs, self.keep, self.archives)  # seeds.json and the split, the filter list, the zips

    def fingerprint(self) -> dict[str, Any]:
        c = self.config
        return {"layout": "original", "root": str(self.root.resolve()), "split": c.split, "splits": list(c.splits),
                "seeds": stable_hash(self.seeds, length=16), "shards": list(c.shards), "zips": self.archives[1],
                "limit": c.limit, "unit_rows": self.unit_rows, "require_same_size": c.require_same_size,
                "filter_list": filter_digest(self.keep)}

    def plan(self) -> list[WorkUnit]:
        self.check()
        total = len(self.pairs)
        return [WorkUnit(key=f"{NAME}-{self.config.split}-{index:05d}",
                         payload={"layout": "original", "start": start, "stop": min(start + self.unit_rows, total)})
                for index, start in enumerate(range(0, total, self.unit_rows))]

    def build_unit(self, unit: WorkUnit) -> UnitResult:
        result = UnitResult()
        prompts: dict[str, Any] = {}
        opened: dict[Path, zipfile.ZipFile] = {}
        keep = self.keep
        try:
            for pair in self.pairs[unit.payload["start"]:unit.payload["stop"]]:
                result.records += 1
                if keep is not None and pair.key is not None and pair.key not in keep:
                    result.skipped[NOT_LISTED] += 1
                    continue
                if pair.problem is not None:
                    reason, message = pair.problem
                    result.failures.append(SourceRecordError(reason, pair.record_id, str(self.seeds_path),
                                                             message).failure)
                    continue
                try:
                    result.rows.append(self._row(pair, prompts, opened, result.counters))
                except SourceRecordError as err:
                    result.failures.append(err.failure)
        finally:
            for archive in opened.values():
                archive.close()
        return result

    def _member(self, member: str, pair: Pair, where: str, opened: dict[Path, zipfile.ZipFile], missing: str,
                unreadable: str) -> tuple[bytes, str]:
        """A member's bytes and the file they came from: a file under the root, else the zip that lists it."""
        try:
            path = path_under(self.root, member)
        except PathOutsideRoot as exc:  # a name or seed with ../ or /: nothing outside the root is read
            raise SourceRecordError(PATH_OUTSIDE_ROOT, pair.record_id, str(self.seeds_path),
                                    f"{where}: {shown(str(exc), 160)}") from None
        try:
            found = path.is_file()
        except OSError:  # a name too long for the file system
            found = False
        if found:
            try:
                return path.read_bytes(), str(path)
            except OSError as exc:
                raise SourceRecordError(unreadable, pair.record_id, str(path),
                                        f"{where}: {exc.strerror or exc}") from None
        mapping, listed = self.archives
        archive_path = mapping.get(member)
        if archive_path is None:
            zips = f"{listed[0][0]} ... {listed[-1][0]}" if listed else "no shard-NN.zip"
            raise SourceRecordError(missing, pair.record_id, str(self.seeds_path),
                                    f"{where}: {shown(member, 160)} is neither a file under the root nor in {zips}")
        try:
            archive = opened.get(archive_path)
            if archive is None:
                archive = opened[archive_path] = zipfile.ZipFile(archive_path)
            info = archive.getinfo(member)
            if info.file_size > MAX_MEMBER_BYTES:
                raise ValueError(f"it claims {info.file_size:,} bytes, more than {MAX_MEMBER_BYTES:,}")
            data = archive.read(info)
        except ZIP_ERRORS as exc:
            raise SourceRecordError(unreadable, pair.record_id, str(archive_path),
                                    f"{where}: {shown(member, 160)}: {' '.join(str(exc).split())[:200]}") from None
        return data, str(archive_path)

    def _prompt(self, pair: Pair, prompts: dict[str, Any], opened: dict[Path, zipfile.ZipFile]
                ) -> tuple[dict[str, Any], str]:
        """The name's prompt.json (read once per unit) and its file; its trouble is each of its pairs'."""
        name = pair.name
        assert name is not None
        if name not in prompts:
            where = f"{shown(name, 160)}/prompt.json"
            try:
                data, file = self._member(f"{name}/prompt.json", pair, where, opened, "missing_prompt",
                                          "unreadable_prompt")
                try:
                    texts = json.loads(data.decode("utf-8"))
                except (UnicodeDecodeError, ValueError, RecursionError) as exc:
                    raise SourceRecordError("unreadable_prompt", pair.record_id, file,
                                            f"{where}: not JSON ({' '.join(str(exc).split())[:200]})") from None
                if not isinstance(texts, dict):
                    raise SourceRecordError("unreadable_prompt", pair.record_id, file,
                                            f"{where}: a prompt.json is an object {{input, edit, output}}, found a "
                                            f"{type(texts).__name__}")
                prompts[name] = (texts, file)
            except SourceRecordError as err:
                prompts[name] = err.failure
        found = prompts[name]
        if isinstance(found, tuple):
            return found
        raise SourceRecordError(found.reason, pair.record_id, found.file, found.message)

    def _image(self, member: str, pair: Pair, where: str, opened: dict[Path, zipfile.ZipFile]
               ) -> tuple[SourceImage, str]:
        data, file = self._member(member, pair, where, opened, "missing_image", "unreadable_image")
        return read_image(data, pair.record_id, file, where), file

    def shown_file(self, file: str) -> str:
        """Where a member was read, as a row records it: relative to the root (a zip by its name)."""
        try:
            return Path(file).relative_to(self.root).as_posix()
        except ValueError:
            return Path(file).name

    def _row(self, pair: Pair, prompts: dict[str, Any], opened: dict[Path, zipfile.ZipFile], counters
             ) -> dict[str, Any]:
        name, seed = pair.name, pair.seed
        where = f"{SEEDS} entry {pair.position}: {shown(pair.record_id, 160)}"
        texts, prompt_file = self._prompt(pair, prompts, opened)
        instruction = read_cell_instruction(texts.get("edit"), pair.record_id, prompt_file,
                                            f"{where}: prompt.json edit")
        source, source_file = self._image(f"{name}/{seed}_0.jpg", pair, f"{where}: {seed}_0.jpg", opened)
        target, target_file = self._image(f"{name}/{seed}_1.jpg", pair, f"{where}: {seed}_1.jpg", opened)
        if self.config.require_same_size:
            check_same_size(source, target, pair.record_id, target_file, where)
        counters["reencoded_images"] += int(source.reencoded) + int(target.reencoded)
        input_prompt, output_prompt = texts.get("input"), texts.get("output")
        image_id = (f"prompt-{stable_hash(input_prompt, length=16)}" if isinstance(input_prompt, str) and input_prompt
                    else text_field(f"name-{name}"))
        extra = {"name": text_field(name), "seed": text_field(seed), "input_prompt": text_field(input_prompt),
                 "output_prompt": text_field(output_prompt),
                 "files": [text_field(self.shown_file(f)) for f in (prompt_file, source_file, target_file)]}
        return edit_row(builder=NAME, dataset=DATASET, split=self.config.split, record_id=pair.record_id,
                        image_id=image_id, instruction=instruction, source=source, target=target, mask=None,
                        license=LICENSE, params={"layout": "original", "reencode": "png"}, extra=extra,
                        backend="original-import")


# -- the builder --------------------------------------------------------------------------------------
@register_builder(NAME, InstructPix2PixConfig)
class InstructPix2PixBuilder(ParquetImportBuilder):
    name = NAME

    def __init__(self, config: InstructPix2PixConfig, context: BuildContext):
        self.config = config
        self.unit_size = context.unit_size
        self.files = Ip2pFiles(config, context.unit_size)

    @locked_cached_property
    def original(self) -> Ip2pOriginal | None:
        """The original layout's reader, or None for Parquet (decided at first use, after prepare)."""
        return Ip2pOriginal(self.config, self.unit_size) if self.config.resolved_layout() == "original" else None

    def prepare(self) -> None:
        spec = self.config.samples
        if spec is not None:
            from ieiw.samples.editing import ensure_ip2p_sample

            ensure_ip2p_sample(Path(self.config.root), **spec.model_dump())

    def fingerprint(self) -> dict[str, Any]:
        if self.original is not None:
            return self.original.fingerprint()
        return super().fingerprint()

    def extra_fingerprint(self) -> dict[str, Any]:
        return {} if self.config.filter_list is None else {"filter_list": filter_digest(self.files.keep)}

    def backends(self) -> dict[str, str]:
        return {"pairs": "original-import"} if self.original is not None else super().backends()

    def plan(self) -> list[WorkUnit]:
        if self.original is not None:
            return self.original.plan()
        return super().plan()

    def build_unit(self, unit: WorkUnit) -> UnitResult:
        if unit.payload.get("layout") == "original":
            assert self.original is not None, "an original-layout unit for a Parquet source"
            return self.original.build_unit(unit)
        return super().build_unit(unit)

    def skip_reason(self, values: dict[str, Any], columns: dict[str, str | None]) -> str | None:
        """A pair the official keep-list does not name is left out, as the official loader leaves it out."""
        if self.files.keep is not None and parquet_pair(values, columns) not in self.files.keep:
            return NOT_LISTED
        return None

    def params(self, columns: dict[str, str | None]) -> dict[str, Any]:
        return {"source_column": columns["source"], "target_column": columns["target"],
                "instruction_column": columns["instruction"], "reencode": "png"}

    def _row(self, part, columns: dict[str, str | None], index: int, group: int, values: dict[str, Any],
             counters) -> dict[str, Any]:
        record_id = f"{part.name}:{index}"
        file = str(part.path)
        where = f"row {index} (row group {group})"
        instruction = read_cell_instruction(values[columns["instruction"]], record_id, file,
                                            f"{where}: column {columns['instruction']}")
        source = read_cell_image(values[columns["source"]], part.path.parent, record_id, file,
                                 f"{where}: column {columns['source']}")
        target = read_cell_image(values[columns["target"]], part.path.parent, record_id, file,
                                 f"{where}: column {columns['target']}")
        if self.config.require_same_size:
            check_same_size(source, target, record_id, file, where)
        counters["reencoded_images"] += int(source.reencoded) + int(target.reencoded)
        input_prompt = values.get(columns["input_prompt"]) if columns["input_prompt"] else None
        output_prompt = values.get(columns["output_prompt"]) if columns["output_prompt"] else None
        image_id = (f"prompt-{stable_hash(input_prompt, length=16)}" if isinstance(input_prompt, str) and input_prompt
                    else f"image-{image_key(source.data)[:16]}")
        extra = {"file": part.name, "row": index, "row_group": group, "input_prompt": input_prompt,
                 "output_prompt": output_prompt}
        return edit_row(builder=NAME, dataset=DATASET, split=self.config.split, record_id=record_id,
                        image_id=image_id, instruction=instruction, source=source, target=target, mask=None,
                        license=LICENSE, params=self.params(columns), extra=extra, backend="parquet-import")
