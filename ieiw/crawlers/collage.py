"""Find the panels of a before|after collage, so that its "after" panel can be paired with the original.

Editors often answer with the original and their edit side by side (or stacked) in one image. As a whole such
a picture is no derivative of the original's frame (the original covers half of it), but one panel is exactly
the pair the request asked for. This module only proposes panel boxes; ``align.validate_edit`` checks each
panel against the original (one must be the original, unchanged: the "before"; another an accepted edit: the
"after"), so a proposal that is no collage costs a few validations and nothing else.

A layout of ``n`` panels (2 or 3, in a row or a column) is proposed when the candidate's size fits ``n``
copies of the original's aspect ratio. Between panels there is a separator (a band of one colour across the
whole candidate) or none: the panels then abut, each with the original's aspect, and the boundary is the line
where the picture jumps most near its expected place. Margins of the separator's colour around the panels are
trimmed, with the lines JPEG ringing left almost of that colour. A meme or a picture-in-picture has no such
layout, or no panel that is the original: it stays rejected.

Hand-written on NumPy: the profiles are a few reductions, and no library finds collage panels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in the candidate's pixels (x1, y1 exclusive)

BAND_STD = 1.5  # grey std along a line below which it is part of a separator or a margin (JPEG'd photos vary more)
NEAR_BAND = 12.0  # a trimmed line's pixels lie this close to the separator's grey level...
NEAR_SHARE = 0.95  # ...this many of them
WINDOW = 0.2  # separators are searched within this share of a panel's extent around k/n
SEAM = 0.02  # without a separator, the seam is searched within this share of a panel around its expected place
MAX_PANELS = 3


@dataclass(frozen=True)
class Layout:
    """A proposed split of the candidate: ``axis`` "x" (side by side) or "y" (stacked), the panels in order."""

    axis: str
    panels: tuple[Box, ...]


def _runs(flags: np.ndarray, offset: int) -> list[tuple[int, int]]:
    """[start, stop) of each run of True in ``flags``, shifted by ``offset``."""
    padded = np.concatenate([[False], flags, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a) + offset, int(b) + offset) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _band(grey: np.ndarray, at: float, half: float) -> tuple[int, int] | None:
    """The run of uniform columns of ``grey`` nearest column ``at`` (within ``half``): a separator, or None."""
    lo, hi = max(0, int(at - half)), min(grey.shape[1], int(at + half) + 1)
    runs = _runs(grey[:, lo:hi].std(axis=0) < BAND_STD, lo)
    if not runs:
        return None
    start, stop = min(runs, key=lambda run: abs((run[0] + run[1]) / 2 - at))
    # A photo's own uniform edge (a black border) can touch the separator: keep the separator's colour only.
    levels = np.median(grey[:, start:stop], axis=0)
    level = float(levels[(stop - start) // 2])
    keep = np.flatnonzero(np.abs(levels - level) < NEAR_BAND)
    return start + int(keep[0]), start + int(keep[-1]) + 1


def _seam(grey: np.ndarray, at: float, half: float) -> int:
    """The column near ``at`` where the rows jump most (median over rows): where two abutting pictures meet."""
    lo, hi = max(1, int(at - half)), min(grey.shape[1] - 1, int(at + half) + 1)
    if hi <= lo:
        return round(at)
    jumps = np.median(np.abs(grey[:, lo:hi] - grey[:, lo - 1:hi - 1]), axis=0)
    return lo + int(np.argmax(jumps))


def _trim(grey: np.ndarray, start: int, stop: int, level: float | None) -> tuple[int, int]:
    """Shrink [start, stop) along the columns of ``grey`` past margin columns: uniform at ``level`` (any level
    when None), and the columns beside them that are nearly all of that level (JPEG ringing)."""

    def margin(x: int, lvl: float | None) -> float | None:
        column = grey[:, x]
        if column.std() < BAND_STD and (lvl is None or abs(float(np.median(column)) - lvl) < NEAR_BAND):
            return float(np.median(column))
        if lvl is not None and (np.abs(column - lvl) < NEAR_BAND).mean() >= NEAR_SHARE:
            return lvl
        return None

    for step in (1, -1):
        found = level
        while start < stop:
            x = start if step == 1 else stop - 1
            got = margin(x, found)
            if got is None:
                break
            found = got
            if step == 1:
                start += 1
            else:
                stop -= 1
    return start, stop


def _split(grey: np.ndarray, n: int, aspect: float) -> list[Box] | None:
    """``n`` panels side by side in ``grey`` (axis x), margins trimmed; None when there is no such layout."""
    height, width = grey.shape
    extent = width / n
    bands = [_band(grey, k * extent, WINDOW * extent) for k in range(1, n)]
    levels = [float(np.median(grey[:, a:b])) for a, b in (band for band in bands if band)]
    level = levels[0] if levels else None
    y0, y1 = _trim(grey.T, 0, height, level)  # margins above and below every panel
    if y1 - y0 < 16:
        return None
    x_start, x_stop = _trim(grey[y0:y1], 0, width, level)
    if x_stop - x_start < 16 * n:
        return None
    inner = grey[y0:y1]
    extent = (x_stop - x_start) / n
    spans, start = [], x_start
    for k, band in enumerate(bands, start=1):
        if band is None:  # abutting panels: the seam near where the aspect ratio puts it
            at = _seam(inner, x_start + k * extent, max(3.0, SEAM * extent))
            band = (at, at)
        spans.append((start, band[0]))
        start = band[1]
    spans.append((start, x_stop))
    boxes = []
    for x0, x1 in spans:
        x0, x1 = _trim(inner, x0, x1, level)
        if x1 - x0 < 16 or abs(((x1 - x0) / (y1 - y0)) / aspect - 1.0) > 0.15:
            return None
        boxes.append((x0, y0, x1, y1))
    return boxes


def find_layouts(edit: np.ndarray, original_aspect: float, tolerance: float = 0.2) -> list[Layout]:
    """Every plausible collage layout of ``edit`` (RGB) for an original of ``original_aspect`` (width / height)."""
    grey = cv2.cvtColor(edit, cv2.COLOR_RGB2GRAY).astype(np.float32)
    found: list[Layout] = []
    for axis, image, aspect in (("x", grey, original_aspect), ("y", grey.T, 1.0 / original_aspect)):
        length, cross = image.shape[1], image.shape[0]
        estimate = length / (cross * aspect)
        for n in range(2, MAX_PANELS + 1):
            if abs(estimate / n - 1.0) > tolerance:
                continue
            boxes = _split(image, n, aspect)
            if boxes is None:
                continue
            if axis == "y":
                boxes = [(y0, x0, y1, x1) for x0, y0, x1, y1 in boxes]
            found.append(Layout(axis, tuple(boxes)))
    return found
