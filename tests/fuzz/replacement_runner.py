"""The replacement builder for the SA-1B and Open Images fuzz families: its three stages in one process.

The replacement builder is the one that reads both region sources (``index_unit`` reads the regions, then
``build_unit`` repaints them with exemplars from the index). :class:`IndexedReplacement` runs the index stage
(one exemplar shard per unit, recorded in the ``exemplars/`` manifest, then the index) inside ``plan()``, as
the flow does before the candidates, so :func:`fuzz_harness.run` builds every unit as it does for any other
builder. An exception out of the index stage is re-raised as :class:`IndexStageCrash`, which ``run`` does not
take for a file-level refusal: a reader's bad record must become a failure there too.

Rows of one record depend on other records only through the exemplar index: a row names its exemplar (the
nearest region of another image) and is painted with it. :func:`dependents` gives, for the records a damage
touches, the records whose baseline rows used one of them as an exemplar: those rows may change too.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fuzz_harness import Outcome, Workspace

from ieiw.builders.exemplars import ExemplarIndexConfig
from ieiw.builders.region_sources import OpenImagesSourceConfig, SA1BSourceConfig
from ieiw.builders.replacement import ReplacementBuilder, ReplacementConfig
from ieiw.schemas.layout import index_folder
from ieiw.schemas.manifest import Manifest
from ieiw.schemas.shards import write_shard
from ieiw.schemas.units import BuildContext, WorkUnit

EXEMPLARS = "exemplars"
UNIT_SIZE = 2  # images per unit: several units, so a bad record's unit and the others are both exercised


class IndexStageCrash(RuntimeError):
    """An exception out of ``index_unit`` or ``build_index``: a crash, never a file-level refusal."""


class IndexedReplacement(ReplacementBuilder):
    """The replacement builder whose ``plan()`` also runs the index stage, as the flow does before any
    candidates unit (``ieiw.stages.make_index_unit`` then ``make_index``)."""

    def plan(self) -> list[WorkUnit]:
        units = super().plan()  # a file-level refusal (a mask CSV without its header) comes from here
        try:
            self._index_stage(units)
        except Exception as exc:  # whatever it is, it is a crash of the index stage
            raise IndexStageCrash(f"index stage: {type(exc).__name__}: {exc}") from exc
        return units

    def _index_stage(self, units: list[WorkUnit]) -> None:
        out = Path(self.context.out_dir)
        manifest = Manifest(out / EXEMPLARS, EXEMPLARS, {"unit_size": self.unit_size})
        shards, regions = [], 0
        for unit in units:
            table, stats = self.index_unit(unit)
            shard = write_shard(table, out / EXEMPLARS / f"{unit.key}.parquet")
            manifest.record(unit.key, shard, unit.key, stats)
            shards.append(out / EXEMPLARS / shard.name)
            regions += table.num_rows
        if regions:  # no region at all: the flow's index stage stops the build ("nothing to index")
            folder = index_folder(out, self.name)
            self.build_index(shards, folder, "fuzz")


def builder(space: Workspace, sources: list[Any]) -> IndexedReplacement:
    """The replacement builder over ``sources`` in ``space`` (see :func:`replacement`)."""
    return replacement(space.root, space.out, sources)


def replacement(root: Path, out: Path, sources: list[Any]) -> IndexedReplacement:
    """The replacement builder over ``sources`` (embedded features and repaint: CPU only, no model files; one
    FAISS thread, as OpenMP's spinning threads cost more than a tiny index's search on a shared machine)."""
    config = ReplacementConfig(sources=sources, index=ExemplarIndexConfig(exclude_same_label=True, threads=1))
    return IndexedReplacement(config, BuildContext(root=root, out_dir=out, unit_size=UNIT_SIZE))


def sa1b_source(root: Path) -> SA1BSourceConfig:
    return SA1BSourceConfig(root=root)


def open_images_source(root: Path, classes: str) -> OpenImagesSourceConfig:
    return OpenImagesSourceConfig(root=root, classes=classes)


def dependents(baseline: Outcome, keys: Iterable[str]) -> set[str]:
    """``keys`` and every record whose baseline rows took one of them as its exemplar."""
    keys = set(keys)
    return keys | {key for key, rows in baseline.rows.items()
                   if any(row["exemplar"]["record_id"] in keys for row in rows)}
