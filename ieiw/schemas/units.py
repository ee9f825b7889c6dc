"""The shape every candidate builder has, so the flow can run any of them the same way.

A builder splits its source into work units (:meth:`CandidateBuilder.plan`) and turns one unit into
pair rows (:meth:`CandidateBuilder.build_unit`). Bad records never raise out of ``build_unit``:
they come back as :class:`Failure` values with a short reason (counted in the stats) and a message
that names the file and the record. Only transient trouble (a full disk, a dropped server) raises,
so the flow's retries can deal with it.

A builder is made from its config section and a :class:`BuildContext` (cheap: no model loads, no
files written). Work that must happen once before any unit (writing a bundled sample, building an
index) is :meth:`CandidateBuilder.prepare`, a planned step of the flow; models load on first use,
inside ``build_unit``, in the process that runs it. A builder may judge a candidate it made unusable
(an object still visible after removal, an edit that is no derivative): it sets the row's
``drop_reason`` and selection files the row under ``rejected/`` with that reason. Builders never write
``ieiw/`` or ``rejected/`` themselves.
"""

from __future__ import annotations

import abc
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class BuildContext:
    """What every builder gets besides its own section."""

    root: Path  # relative paths in the config resolve against this (the folder the build runs from)
    out_dir: Path  # a location (ieiw.schemas.storage): a Path, or a UPath when out_dir is a URL
    unit_size: int


@dataclass(frozen=True)
class WorkUnit:
    """A chunk of source records; ``key`` names the shard, ``payload`` is what the builder needs."""

    key: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class Failure:
    """A record that could not become a pair, and why."""

    reason: str  # short and stable: the stats count by it and tests assert it
    record_id: str
    file: str | None
    message: str

    def __post_init__(self) -> None:
        # A name read from a dataset may hold lone surrogates (non-UTF-8 bytes); the stats, the log and the
        # HTML report write these strings as UTF-8, so they are made writable here, once.
        from ieiw.schemas.rows import text_field

        for name in ("reason", "record_id", "file", "message"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, text_field(value))

    def __str__(self) -> str:
        where = f"{self.file}: " if self.file else ""
        return f"{where}record {self.record_id}: {self.reason}: {self.message}"


class SourceRecordError(Exception):
    """Raised inside a builder for one bad record; turned into a :class:`Failure` by the caller."""

    def __init__(self, reason: str, record_id: str, file: str | None, message: str):
        super().__init__(f"{file}: record {record_id}: {reason}: {message}")
        self.failure = Failure(reason=reason, record_id=record_id, file=file, message=message)


def row_failure(row: dict[str, Any], reason: str, message: str) -> Failure:
    """A failure of the record a finished row came from (its origin's record id, else the row id), for what the
    stage finds after the builder: the file is unknown there, so the dataset stands for it."""
    origin = row.get("origin") if isinstance(row.get("origin"), dict) else {}
    return Failure(reason=reason, record_id=str(origin.get("record_id") or row.get("id")),
                   file=str(origin.get("dataset")) if origin.get("dataset") else None, message=message)


# What Arrow raises for a value it cannot hold (ArrowInvalid and ArrowTypeError are ValueError / TypeError).
UNWRITABLE = (TypeError, ValueError, OverflowError, UnicodeError)


@dataclass
class UnitResult:
    """Rows and failures of one work unit, plus counters for the stats.

    ``failures`` are bad input (a file or record that cannot be read); ``skipped`` counts records a
    builder's policy leaves out on purpose (a region too small, touching the border), by reason."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    records: int = 0
    counters: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)

    def writable_table(self) -> Any:
        """The rows as a ``pyarrow.Table``. A row Arrow cannot hold (a value of the wrong type, a lone surrogate:
        a reader that let odd input through) becomes an ``unwritable_row`` failure of its record instead of
        failing the whole unit; the readers are fuzzed so that this never happens (``docs/security.md``)."""
        from ieiw.schemas.rows import rows_to_table

        self.drop_repeated_ids()
        try:
            return rows_to_table(self.rows)
        except UNWRITABLE:
            pass
        kept = []
        for row in self.rows:
            try:
                rows_to_table([row])
            except UNWRITABLE as exc:
                self.failures.append(row_failure(row, "unwritable_row",
                                                 f"row {row.get('id')}: {type(exc).__name__}: {str(exc)[:200]}"))
            else:
                kept.append(row)
        self.rows = kept
        return rows_to_table(kept)

    def drop_repeated_ids(self) -> None:
        """A row id made twice (a dump holding the same comment twice, an edit listed twice on a page) is one
        pair: the first row is kept, each later one is a ``duplicate_row`` failure of its record."""
        seen: set[Any] = set()
        kept = []
        for row in self.rows:
            if row.get("id") in seen:
                self.failures.append(row_failure(row, "duplicate_row",
                                                 f"row {row.get('id')} was made twice in this unit; the first is kept"))
                continue
            seen.add(row.get("id"))
            kept.append(row)
        self.rows = kept

    def stats(self, max_messages: int = 50) -> dict[str, Any]:
        return {
            "records": self.records,
            "candidates": len(self.rows),
            "failures": dict(Counter(f.reason for f in self.failures)),
            "failure_messages": [str(f) for f in self.failures[:max_messages]],
            "skipped": dict(self.skipped),
            "counters": dict(self.counters),
        }


class CandidateBuilder(abc.ABC):
    """One source + one way of making pairs from it (PhraseCut removal, web crawl, ...)."""

    name: str

    def prepare(self) -> None:
        """Once per build, before :meth:`plan`: make what the units need (e.g. a bundled sample).

        Must be safe when several processes prepare the same fresh build at once."""

    # -- an optional index stage, for builders whose units need a database made from all units -----
    # (the replacement builder's exemplar objects). The flow runs, before this builder's candidates:
    # ``index_unit`` per unit (a shard under ``exemplars/``), then ``build_index`` once over all of
    # those shards (fingerprinted by their sha256). Data flows one way: candidates may read the index,
    # the index never reads candidates.
    uses_index: bool = False

    def index_unit(self, unit: WorkUnit) -> tuple[Any, dict[str, Any]]:
        """One unit's contribution to the index: (a ``pyarrow.Table``, stats)."""
        raise NotImplementedError

    def build_index(self, shards: list[Path], folder: Path, fingerprint: str) -> dict[str, Any]:
        """Build the index from every unit's shard into ``folder`` (atomically); returns stats."""
        raise NotImplementedError

    def index_unit_fingerprint(self) -> dict[str, Any]:
        """What shapes a unit's index shard (sources, regions, the embedding), so that changing only what
        the candidates do (a repaint parameter) does not embed everything again."""
        return self.fingerprint()

    def index_fingerprint(self) -> dict[str, Any]:
        """What shapes the index beyond its input shards (index type, build parameters)."""
        return {}

    @abc.abstractmethod
    def plan(self) -> list[WorkUnit]:
        """Split the source into units deterministically (same source, same config -> same units)."""

    @abc.abstractmethod
    def build_unit(self, unit: WorkUnit) -> UnitResult:
        """Turn one unit into candidate rows; bad records become failures, never exceptions."""

    @abc.abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """Everything that shapes the rows (parameters, backend names, model ids) for resume checks."""

    @abc.abstractmethod
    def backends(self) -> dict[str, str]:
        """Human-readable backend names for the manifest and stats (e.g. {"inpaint": "opencv-telea"})."""

    def kind_policy(self) -> dict[str, str]:
        """What selection does with this builder's rows by their ``edit_kind`` ({kind: "keep" | "reject" |
        "with_other"}; empty: no policy). Applied by selection, not by the builder, so changing it re-runs
        selection only (the crawl: ``crawl.validation.kinds``)."""
        return {}
