"""A member made on first use, once per instance, however many threads ask at once.

The flow may run several units of one builder in threads, and what a builder, source or backend makes
lazily (a model, a file listing, a parsed annotation file) is costly or must exist once. Decorate the
method that makes it with :class:`locked_cached_property`::

    class RemovalBuilder:
        @locked_cached_property
        def inpainter(self) -> Inpainter:
            return self.config.inpaint.create()

The first access runs the method under a per-instance, per-member lock; every other thread waits for
that result instead of making its own. The value is then kept in the instance's ``__dict__``, so later
reads are plain attribute reads (as with :func:`functools.cached_property`, which does not lock), and
assigning the attribute replaces it (tests put stand-ins there). A method that raises caches nothing:
the next access tries again. The locks are re-entrant, and each member has its own, so making one member
may read another (the replacement builder's labeler reads its features).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")

LOCKS = "_locked_cached_property_locks"  # the instance's __dict__ key of its {member: lock}


class locked_cached_property(Generic[T]):  # lower case, as functools.cached_property
    """:func:`functools.cached_property` whose value is made once per instance even under threads."""

    def __init__(self, make: Callable[[Any], T]):
        self.make = make
        self.name: str | None = None
        self.__doc__ = make.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        if self.name is not None and name != self.name:
            raise TypeError(f"one locked_cached_property under two names ({self.name!r} and {name!r})")
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> locked_cached_property[T]: ...

    @overload
    def __get__(self, instance: object, owner: type | None = None) -> T: ...

    def __get__(self, instance: object | None, owner: type | None = None) -> Any:
        if instance is None:
            return self
        name = self.name
        if name is None:
            raise TypeError("locked_cached_property used without a name (assign it in a class body)")
        values = instance.__dict__
        # dict.setdefault is atomic: racing threads get the same lock (at most a spare one is made)
        with values.setdefault(LOCKS, {}).setdefault(name, threading.RLock()):
            if name not in values:
                values[name] = self.make(instance)
            return values[name]


class OncePerKey:
    """The keyed sibling of :class:`locked_cached_property`: one value per key (a source's index, an index's
    fingerprint), made by the first :meth:`get` of that key under the key's own lock and kept."""

    def __init__(self) -> None:
        self._values: dict[Any, Any] = {}
        self._locks: dict[Any, threading.RLock] = {}

    def get(self, key: Any, make: Callable[[], T]) -> T:
        with self._locks.setdefault(key, threading.RLock()):
            if key not in self._values:
                self._values[key] = make()
            return self._values[key]
