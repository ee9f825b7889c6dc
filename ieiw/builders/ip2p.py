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
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from ieiw.builders.importers import (
    ParquetImportBuilder,
    ParquetImportConfig,
    ParquetImporter,
    check_same_size,
    edit_row,
    read_cell_image,
    read_cell_instruction,
)
from ieiw.schemas.config import StrictModel
from ieiw.schemas.registry import register_builder
from ieiw.schemas.rows import image_key, stable_hash
from ieiw.schemas.units import BuildContext

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
}
REQUIRED = ("source", "instruction", "target")


class InstructPix2PixSampleSpec(StrictModel):
    """Write the bundled synthetic sample, in one of the two Parquet layouts, into ``root`` when it is missing."""

    rows: int = Field(12, ge=1, description="pairs in all, over `files` files")
    files: int = Field(2, ge=1)
    row_group: int = Field(3, ge=1, description="rows per Parquet row group (small, so units cross groups)")
    seed: int = 0
    width: int = Field(128, ge=32)
    height: int = Field(128, ge=32)
    layout: Literal["clip-filtered", "short"] = "clip-filtered"
    bad: bool = Field(False, description="add the three bad rows the tests name: an undecodable source, an empty "
                                         "instruction, a target of another size")


class InstructPix2PixConfig(ParquetImportConfig):
    """The ``instructpix2pix:`` section."""

    columns: dict[Literal["source", "instruction", "target", "input_prompt", "output_prompt"], str] = Field(
        default_factory=dict, description="role -> column name, where a file names them otherwise")
    require_same_size: bool = True
    samples: InstructPix2PixSampleSpec | None = Field(None, description="make a synthetic sample at root if missing")

    section: ClassVar[str] = NAME
    missing_hint: ClassVar[str] = " (get it from the Hugging Face hub, docs/multitask.md; or set samples:)"

    def importer(self) -> ParquetImporter:
        return Ip2pFiles(self, 1)


class Ip2pFiles(ParquetImporter):
    name = NAME
    roles = ROLES
    required = REQUIRED


@register_builder(NAME, InstructPix2PixConfig)
class InstructPix2PixBuilder(ParquetImportBuilder):
    name = NAME

    def __init__(self, config: InstructPix2PixConfig, context: BuildContext):
        self.config = config
        self.files = Ip2pFiles(config, context.unit_size)

    def prepare(self) -> None:
        spec = self.config.samples
        if spec is not None:
            from ieiw.samples.editing import ensure_ip2p_sample

            ensure_ip2p_sample(Path(self.config.root), **spec.model_dump())

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
