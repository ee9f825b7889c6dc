"""The fuzz suite's shared parts: hostile values, mutations of real-format files, a file-access guard, and the
checks every reader must pass on any input.

Each reader family (``test_fuzz_*.py``) writes a small valid source in its real format, builds it once for a
baseline, then lets ``hypothesis`` corrupt it: one record's field deleted or replaced by a hostile value (wrong
type, NaN / inf, huge or negative numbers, non-UTF-8 text, a name that points outside the dataset), or the file
itself truncated or given bytes that are not UTF-8. Whatever is drawn, :func:`check_outcome` asserts what
``docs/security.md`` promises:

- nothing escapes ``plan()`` / ``build_unit()`` but a file-level error that names the file (a file that cannot be
  parsed at all) -- every bad record is a :class:`~ieiw.schemas.units.Failure` naming its file and record;
- every row of a record the mutation did not touch is exactly the baseline's row (bytes included);
- no file outside the dataset root is read and nothing outside the out dir is written (a ``sys.addaudithook``
  guard sees every ``open``/``rename``/``mkdir`` Python makes; a planted image outside the root also must never
  reach a row, for readers that open files from C code);
- a record costs bounded time.

The bounded profile (``make test``) is derandomised, so CI sees the same examples every run; ``make fuzz``
(``--hypothesis-profile=fuzz``) draws 10,000 examples per reader family at random.
"""

from __future__ import annotations

import copy
import math
import os
import pickle
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from ieiw_testing import plant_outside

from ieiw.schemas.rows import rows_to_table
from ieiw.schemas.units import CandidateBuilder, Failure, UnitResult

SECONDS_PER_RECORD = 2.0  # generous on a loaded 2-core CI machine; a ReDoS or a stalled read costs far more
SECONDS_PER_RUN = 10.0

# -- hostile values -----------------------------------------------------------------------------------------


def outside_names(planted: Path) -> list[str]:
    """Names that point at the planted file outside the root, in the forms real crafted files use."""
    return [
        f"../outside/{planted.name}",
        f"../../outside/{planted.name}",
        str(planted),
        f"images/../../outside/{planted.name}",
        f"./../outside/{planted.name}",
        "/etc/passwd",
        "..",
        "/",
        f"file://{planted}",
        f"..\\outside\\{planted.name}",
    ]


NUMBERS = st.one_of(
    st.sampled_from([0, -1, -(2**31), 2**31, 2**63, -(2**63) - 1, 10**30, 1e999, -1e999, 1e308, 5e-324, -0.0]),
    st.just(math.nan),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
)
TEXTS = st.one_of(
    st.sampled_from(["", " ", "\x00", "\ud800", "null", "NaN", "Infinity", "-1", "1e999", "true", "\u202e",
                     "a" * 20_000, "Removed " + "a " * 5_000, "[" * 5_000, "{}", "[]", "\\", "%s%n", "\r\n"]),
    st.text(max_size=40),
    st.binary(max_size=24).map(lambda b: b.decode("latin-1")),  # bytes that were never UTF-8, as text
)


def hostile_values(names: list[str] | None = None) -> st.SearchStrategy[Any]:
    """Any JSON value a crafted or broken file may hold where a record's field should be."""
    scalars = st.one_of(st.none(), st.booleans(), NUMBERS, TEXTS, *( [st.sampled_from(names)] if names else []))
    return st.one_of(
        scalars,
        st.lists(scalars, max_size=4),
        st.dictionaries(st.text(max_size=6), scalars, max_size=3),
        st.just([[]]), st.just([[1]]), st.just([[[1e999, 0]]]), st.just({"": None}),
    )


DELETE = object()  # a mutation that removes the key (or list item) instead of replacing its value


@dataclass
class Mutation:
    path: tuple[Any, ...]  # keys / indexes from the record down to the changed value
    value: Any  # the new value, or DELETE

    def __str__(self) -> str:
        what = "deleted" if self.value is DELETE else f"= {self.value!r:.80}"
        return f"{'/'.join(map(str, self.path)) or '<record>'} {what}"


def _paths(value: Any, prefix: tuple[Any, ...] = (), depth: int = 5) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if depth == 0:
        return
    if isinstance(value, dict):
        for key in value:
            yield from _paths(value[key], (*prefix, key), depth - 1)
    elif isinstance(value, list):
        for index, item in enumerate(value[:4]):
            yield from _paths(item, (*prefix, index), depth - 1)


@st.composite
def mutations(draw, record: Any, names: list[str] | None = None, whole: bool = True) -> Mutation:
    """One change somewhere inside ``record`` (a JSON value): a key or item deleted, or a value replaced by
    a hostile one. ``whole``: the record itself may be replaced (by a non-object, say)."""
    paths = [p for p in _paths(record) if p or whole]
    path = draw(st.sampled_from(paths))
    if path and draw(st.integers(0, 4)) == 0:
        return Mutation(path, DELETE)
    return Mutation(path, draw(hostile_values(names)))


def apply(record: Any, mutation: Mutation) -> Any:
    """A deep copy of ``record`` with ``mutation`` applied."""
    if not mutation.path:
        return mutation.value
    record = copy.deepcopy(record)
    parent = record
    for key in mutation.path[:-1]:
        parent = parent[key]
    last = mutation.path[-1]
    if mutation.value is DELETE:
        del parent[last]
    else:
        parent[last] = mutation.value
    return record


@st.composite
def byte_damage(draw, data: bytes) -> tuple[str, bytes]:
    """A file's bytes damaged the way real downloads and crafted files are: cut short, or with bytes that are
    not UTF-8 (or NULs) put in somewhere."""
    kind = draw(st.sampled_from(["truncate", "insert", "overwrite"]))
    at = draw(st.integers(0, max(len(data) - 1, 0)))
    if kind == "truncate":
        return f"truncated at {at} of {len(data)}", data[:at]
    junk = draw(st.sampled_from([b"\xff\xfe", b"\x00", b"\xc3(", b"\xed\xa0\x80", b"\x80" * 7]))
    if kind == "insert":
        return f"{junk!r} inserted at {at}", data[:at] + junk + data[at:]
    return f"{junk!r} written over {at}", data[:at] + junk + data[at + len(junk):]


# -- the workspace and the file guard -------------------------------------------------------------------------


@dataclass
class Workspace:
    """One example's folders: the dataset ``root``, the ``out`` dir, and ``outside`` with a planted image
    (where the crafted names point)."""

    base: Path
    root: Path
    out: Path
    outside: Path
    planted: Path
    planted_bytes: bytes

    @property
    def names(self) -> list[str]:
        return outside_names(self.planted)


@contextmanager
def workspace() -> Iterator[Workspace]:
    base = Path(tempfile.mkdtemp(prefix="ieiw-fuzz-"))
    try:
        planted, data = plant_outside(base / "outside")
        (base / "root").mkdir()
        (base / "out").mkdir()
        yield Workspace(base, base / "root", base / "out", base / "outside", planted, data)
    finally:
        shutil.rmtree(base, ignore_errors=True)


WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


class FileGuard:
    """Records what a run opens and writes, through Python's audit events (PEP 578). One hook per process,
    switched on by :meth:`watch`; it costs a dict lookup when off."""

    installed = False
    active: FileGuard | None = None

    def __init__(self, space: Workspace):
        self.space = space
        self.outside = space.outside.resolve()
        self.base = space.base.resolve()
        self.out = space.out.resolve()
        self.reads_outside: list[str] = []
        self.writes_outside: list[str] = []

    @classmethod
    def _install(cls) -> None:
        if not cls.installed:
            sys.addaudithook(cls._hook)
            cls.installed = True

    @staticmethod
    def _hook(event: str, args: tuple) -> None:
        guard = FileGuard.active
        if guard is None:
            return
        if event == "open":
            path, mode, flags = (args + (None, None))[:3]
            writing = bool(mode and any(c in str(mode) for c in "wax+")) or bool(
                isinstance(flags, int) and flags & WRITE_FLAGS)
            guard._saw(path, writing)
        elif event in ("os.rename", "os.replace", "os.link", "os.symlink"):
            guard._saw(args[1], True)
        elif event in ("os.mkdir", "os.remove", "os.rmdir", "os.truncate", "os.chmod", "shutil.rmtree"):
            guard._saw(args[0], True)

    def _saw(self, path: Any, writing: bool) -> None:
        if isinstance(path, int) or path is None:
            return
        try:
            path = Path(os.fsdecode(path))
            resolved = path.resolve() if path.is_absolute() else (Path.cwd() / path).resolve()
        except (TypeError, ValueError, OSError, RuntimeError):
            return
        if resolved.is_relative_to(self.outside):
            self.reads_outside.append(str(path))
        if writing and resolved.is_relative_to(self.base) and not resolved.is_relative_to(self.out):
            self.writes_outside.append(str(path))

    @contextmanager
    def watch(self) -> Iterator[FileGuard]:
        self._install()
        FileGuard.active = self
        try:
            yield self
        finally:
            FileGuard.active = None


# -- running a builder and checking what it did ---------------------------------------------------------------


@dataclass
class Outcome:
    """What a builder made of a source: rows by record, failures, and a file-level error if plan() refused."""

    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    plan_error: BaseException | None = None
    records: int = 0
    seconds: float = 0.0
    guard: FileGuard | None = None

    def all_rows(self) -> list[dict[str, Any]]:
        return [row for rows in self.rows.values() for row in rows]


def record_key(row: dict[str, Any]) -> str:
    """The source record a row came from (its origin's record id, else its image id)."""
    origin = row.get("origin") or {}
    return str(origin.get("record_id") or origin.get("image_id"))


def run(make: Callable[[], CandidateBuilder], space: Workspace, key: Callable[[dict], str] = record_key,
        file_errors: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError)) -> Outcome:
    """Build every unit of the builder ``make()`` returns, under the file guard. An exception out of
    ``plan()`` that is one of ``file_errors`` is a file-level refusal (kept in ``plan_error``); any other
    exception, and any exception out of ``build_unit()``, fails the test."""
    outcome = Outcome()
    guard = FileGuard(space)
    start = time.perf_counter()
    with guard.watch():
        builder = make()
        try:
            builder.prepare()
            units = builder.plan()
        except file_errors as exc:
            outcome.plan_error = exc
            units = []
        for unit in units:
            result: UnitResult = builder.build_unit(unit)
            result.drop_repeated_ids()  # as the candidates stage does: a row made twice in a unit is written once
            outcome.records += result.records
            outcome.failures.extend(result.failures)
            for row in result.rows:
                outcome.rows.setdefault(key(row), []).append(row)
    outcome.seconds = time.perf_counter() - start
    outcome.guard = guard
    return outcome


def _comparable(row: dict[str, Any]) -> bytes:
    return pickle.dumps(sorted(row.items(), key=lambda item: item[0]))


def check_outcome(outcome: Outcome, baseline: Outcome, space: Workspace, touched: set[str] | None,
                  file_names: list[str], what: str) -> None:
    """The promises, for one damaged source. ``touched``: the record keys the damage may change (None: any,
    for damaged bytes); ``file_names``: the names a file-level error may cite; ``what``: the damage,
    for the assertion messages."""
    guard = outcome.guard
    assert guard is not None
    assert not guard.reads_outside, f"{what}: read outside the dataset root: {guard.reads_outside[:3]}"
    assert not guard.writes_outside, f"{what}: wrote outside the out dir: {guard.writes_outside[:3]}"
    rows = outcome.all_rows()
    rows_to_table(rows)  # what the candidates stage does with them: a type or a string it cannot write fails here
    ids = Counter(row.get("id") for row in rows)
    repeated = [rid for rid, n in ids.items() if n > 1]
    assert not repeated, f"{what}: row ids made twice, in different units: {repeated[:3]}"
    for row in rows:
        blob = pickle.dumps(row)
        assert space.planted_bytes not in blob, \
            f"{what}: row {row.get('id')} carries the image planted outside the root"
    if outcome.plan_error is not None:
        message = str(outcome.plan_error)
        assert any(name in message for name in file_names), \
            f"{what}: plan() refused without naming the file ({file_names}): {message!r}"
        assert touched is None or len(touched) > 1 or not baseline.rows, \
            f"{what}: one bad record stopped the whole source: {message!r}"
    for failure in outcome.failures:
        assert failure.reason and isinstance(failure.reason, str), f"{what}: failure without a reason: {failure}"
        str(failure).encode("utf-8")  # the stats, the log and the report write it
        assert failure.record_id not in (None, ""), f"{what}: failure names no record: {failure}"
        assert failure.file, f"{what}: failure names no file: {failure}"
    if outcome.plan_error is None and touched is not None:  # damaged bytes may change any record they hit
        for key, expected in baseline.rows.items():
            if touched is not None and key in touched:
                continue
            got = outcome.rows.get(key, [])
            assert [_comparable(r) for r in got] == [_comparable(r) for r in expected], \
                f"{what}: rows of record {key}, which the damage did not touch, changed"
        new = [key for key in outcome.rows if key not in baseline.rows]
        assert touched is None or len(new) <= len(touched), \
            f"{what}: rows appeared for records {new[:3]}, more than the damage touched"
    bound = SECONDS_PER_RUN + SECONDS_PER_RECORD * max(outcome.records, baseline.records)
    assert outcome.seconds < bound, f"{what}: took {outcome.seconds:.1f} s (bound {bound:.0f} s)"


def share(fraction: float) -> settings:
    """Settings for a test that runs ``fraction`` of its family's examples (the profile's ``max_examples`` is
    per reader family: 10,000 under ``make fuzz``)."""
    return settings(max_examples=max(1, round(settings.default.max_examples * fraction)))


FUZZ_COUNTS: Counter = Counter()  # examples run per reader family, printed at the end of the session


def count(family: str) -> None:
    FUZZ_COUNTS[family] += 1
