"""Names a dataset supplies (an image's ``file_name``, an Open Images ``ImageID``, an object key) made into
paths under a root, never outside it (docs/formats.md, "Names that become paths").

A crafted annotation file must not be able to put any file the machine can read into a published corpus,
nor a crafted object key write outside a cache folder. So every name that comes from a dataset's files
goes through :func:`path_under` before it is opened or written; the root is what the user configured
(trusted, and followed through its own symlinks), the name is not. Refused: a name that is not a string,
an empty name, a NUL byte, text no file name can hold (a lone surrogate), an absolute path (``/x``, ``\\x``,
a drive on Windows), a ``..`` component (with ``/`` or ``\\`` as the separator, even when it would land inside
the root again), and a name that resolves outside the root through a symlink (the file itself or a folder on
the way). Readers turn the refusal into a record-level failure :data:`PATH_OUTSIDE_ROOT` naming the file and
the record, so the rest builds.

The check is made when the name is turned into a path: a symlink changed between the check and the read
is not caught (a dataset folder someone rewrites while the build runs is out of scope).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

PATH_OUTSIDE_ROOT = "path_outside_root"  # the record-level failure reason readers use for a refused name
_SEPARATORS = re.compile(r"[\\/]")


class PathOutsideRoot(ValueError):
    """A dataset-supplied name that is not a path under its root; the message names both."""

    reason = PATH_OUTSIDE_ROOT

    def __init__(self, name: Any, root: str | os.PathLike, why: str):
        super().__init__(f"{name!r} is not a path under {root}: {why}")
        self.name, self.root, self.why = name, Path(root), why


def path_under(root: str | os.PathLike, name: Any) -> Path:
    """``root / name`` when ``name`` is a relative path that stays under ``root``, symlinks followed;
    :class:`PathOutsideRoot` (a ``ValueError``) otherwise. The path returned is the joined one, not the
    resolved one, so messages and records show the name as the dataset wrote it."""
    root = Path(root)
    if not isinstance(name, str):
        raise PathOutsideRoot(name, root, f"a name is a string, not {type(name).__name__}")
    if not name:
        raise PathOutsideRoot(name, root, "the name is empty")
    if "\x00" in name:
        raise PathOutsideRoot(name, root, "the name holds a NUL byte")
    try:
        os.fsencode(name)
    except UnicodeEncodeError:  # a lone surrogate from JSON ("\ud800"): no file on this system has that name
        raise PathOutsideRoot(name, root, "the name cannot be encoded as a file name") from None
    if name[0] in "/\\" or Path(name).is_absolute() or Path(name).drive:
        raise PathOutsideRoot(name, root, "an absolute path")
    if ".." in _SEPARATORS.split(name):
        raise PathOutsideRoot(name, root, "a '..' component")
    path = root / name
    try:
        base, resolved = root.resolve(), path.resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
        raise PathOutsideRoot(name, root, f"it cannot be resolved ({exc})") from None
    if not resolved.is_relative_to(base):
        raise PathOutsideRoot(name, root, f"it resolves to {resolved} through a symlink")
    return path
