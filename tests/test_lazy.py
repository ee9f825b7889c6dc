"""Members made once per instance under threads (ieiw.schemas.lazy), and the row helpers' cells."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from ieiw.schemas.lazy import OncePerKey, locked_cached_property
from ieiw.schemas.rows import BUILDER, ORIGIN, builder_cell, canonical_json, origin_cell


class Maker:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail = False

    @locked_cached_property
    def slow(self) -> object:
        """made slowly, so racing threads overlap"""
        self.calls.append("slow")
        time.sleep(0.05)
        return object()

    @locked_cached_property
    def uses_slow(self) -> tuple[object]:
        self.calls.append("uses_slow")
        return (self.slow,)

    @locked_cached_property
    def flaky(self) -> int:
        self.calls.append("flaky")
        if self.fail:
            raise RuntimeError("not yet")
        return 7


def test_racing_threads_get_one_value_made_once():
    maker = Maker()
    with ThreadPoolExecutor(8) as pool:
        values = list(pool.map(lambda _: maker.slow, range(16)))
    assert maker.calls == ["slow"] and all(v is values[0] for v in values)
    assert Maker.slow.__doc__ == "made slowly, so racing threads overlap"


def test_a_member_may_read_another_and_instances_are_apart():
    first, second = Maker(), Maker()
    assert first.uses_slow == (first.slow,) and first.calls == ["uses_slow", "slow"]
    assert second.slow is not first.slow


def test_a_failure_caches_nothing_and_an_assignment_replaces_the_value():
    maker = Maker()
    maker.fail = True
    with pytest.raises(RuntimeError):
        _ = maker.flaky
    maker.fail = False
    assert maker.flaky == 7 and maker.flaky == 7 and maker.calls == ["flaky", "flaky"]
    maker.flaky = 3
    assert maker.flaky == 3


def test_once_per_key():
    made = OncePerKey()
    calls = []
    barrier = threading.Barrier(4)

    def get(key):
        barrier.wait()
        return made.get(key, lambda: calls.append(key) or f"value-{key}")

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(get, ["a", "a", "b", "a"])) == ["value-a", "value-a", "value-b", "value-a"]
    assert sorted(calls) == ["a", "b"]


def test_row_cells_have_every_field_in_schema_order():
    assert list(origin_cell()) == [field.name for field in ORIGIN] and set(origin_cell().values()) == {None}
    assert list(builder_cell()) == [field.name for field in BUILDER] and set(builder_cell().values()) == {None}
    params = {"b": 1, "a": [2, 3]}
    assert builder_cell(name="x", embedded=False, params=params)["params"] == canonical_json(params)
