"""Progress bars for the long commands (build, giqa-index, export, report, train), shown only to a person.

tqdm on stderr when stderr is a terminal; nothing under CI (``CI`` set), in a pipe, or in a log file,
where a bar would only add noise. ``IEIW_PROGRESS=1`` / ``0`` forces it on or off.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def enabled() -> bool:
    forced = os.environ.get("IEIW_PROGRESS")
    if forced is not None:
        return forced not in ("", "0", "false", "no")
    return sys.stderr.isatty() and not os.environ.get("CI")


def bar(total: int | None = None, desc: str = "", unit: str = "it") -> Any:
    """A tqdm bar (or a disabled one that costs nothing); use as a context manager and call ``update``."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled(), leave=False, dynamic_ncols=True)


def track(items: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it") -> Iterator[T]:
    with bar(total, desc, unit) as progress:
        for item in items:
            yield item
            progress.update(1)
