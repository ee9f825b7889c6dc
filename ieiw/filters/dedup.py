"""Duplicate pairs: the same task on near-identical source images with near-identical edits.

Each pair gets a signature in the score stage, while its pixels are decoded anyway:

- ``source``: the pHash (64 bits, ``imagehash``) of the source image: robust to re-encoding and resizing;
- ``edit``: where the edit is, as a 16 x 16 = 256-cell map: a cell is set when more than 5% of its pixels
  changed by more than 32 levels (any channel) between source and target, plus the target's pHash.
  Removals of two different objects from one photo share the source hash but not the change map; the
  same object removed twice under two phrasings shares both. The map is computed here rather than with
  ``imagehash.average_hash`` of the difference image: that hash thresholds at the image's mean, which for
  a small edit is set by re-encoding noise, so two small edits anywhere in one photo came out alike
  (measured on the demo sample). When the sizes differ (no pixel correspondence), the map is empty and the
  target pHash decides.

Why not the stored embeddings: they describe whole images (CLIP: what is in them), so two edits of one
photo that differ in a small region are near-identical to them; and they depend on the configured
extractor, while a duplicate is a pixel-level fact.

Grouping runs over the whole build at once (the ``calibrate`` step): pairs of one task are candidates
when a band of their source hash is equal (5 bands of 64 bits: by pigeonhole, two hashes within 4 bits
share at least one band), then confirmed by the source's Hamming distance and by the overlap (Jaccard)
of the change maps' set cells. Overlap, not Hamming distance: two small edits in different places
differ in few cells of 256, yet share none. Groups are closed transitively
(union-find). The survivor of a group is the pair with the best target score, then the smaller id; every
other member is rejected as ``duplicate`` with ``duplicate_of`` = the survivor's id. A remove pair and
its flipped add twin have different tasks, so they are never duplicates of each other.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

SOURCE_BANDS = 5


@dataclass(frozen=True)
class Signature:
    id: str
    task: str
    source: int  # 64-bit pHash of the source
    edit: int  # 256-bit change map
    quality: float  # the target's score used to choose the survivor (higher is better)
    target: int = 0  # 64-bit pHash of the target

    @classmethod
    def from_hashes(cls, id: str, task: str, source_hash: str, edit_hash: str, quality: float) -> Signature:
        return cls(id, task, int(source_hash, 16), int(edit_hash[:64], 16), quality, int(edit_hash[64:] or "0", 16))


SIGNATURE_VERSION = 2  # part of the score stage's fingerprint: a new recipe rescores
CHANGE_LEVEL = 32  # a pixel changed: more than this in some channel (JPEG noise stays well below)
CELL_SHARE = 0.05  # a cell changed: more than this share of its pixels changed
MAP_CELLS = 16


def change_map(source: np.ndarray, target: np.ndarray) -> int:
    """The 256-bit map of where ``target`` differs from ``source`` (0 when their sizes differ)."""
    import cv2

    if source.shape != target.shape:
        return 0
    # |target - source| per channel, exact for uint8, then the largest channel by two element-wise maxima:
    # the same map as np.abs(int16 difference).max(axis=2), 25x faster (numpy reduces a 3-long axis slowly;
    # it was the score stage's top hotspot, bench/stages.py --profile)
    diff = cv2.absdiff(source, target)
    peak = functools.reduce(cv2.max, cv2.split(diff)) if diff.ndim == 3 else diff
    changed = peak > CHANGE_LEVEL
    cells = cv2.resize(changed.astype(np.float32), (MAP_CELLS, MAP_CELLS), interpolation=cv2.INTER_AREA)
    bits = (cells.ravel() > CELL_SHARE).astype(np.uint8)
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def pair_hashes(source: np.ndarray, target: np.ndarray) -> tuple[str, str]:
    """(source pHash, change map + target pHash) as hex strings (stored in the scores shard)."""
    import imagehash

    source_hash = str(imagehash.phash(Image.fromarray(source)))
    target_hash = str(imagehash.phash(Image.fromarray(target)))
    return source_hash, f"{change_map(source, target):064x}{target_hash}"


def _bands(value: int, bands: int = SOURCE_BANDS, bits: int = 64) -> list[int]:
    widths = [bits // bands + (1 if i < bits % bands else 0) for i in range(bands)]
    out, shift = [], 0
    for width in widths:
        out.append((value >> shift) & ((1 << width) - 1))
        shift += width
    return out


def edit_overlap(a: int, b: int) -> float:
    """Jaccard overlap of two change maps' set cells; two maps with no change at all are equal."""
    union = bin(a | b).count("1")
    return 1.0 if union == 0 else bin(a & b).count("1") / union


def find_duplicates(signatures: Sequence[Signature], source_distance: int = 4,
                    edit_similarity: float = 0.8) -> dict[str, str]:
    """{dropped id: survivor id} over ``signatures`` (deterministic whatever their order)."""
    if source_distance >= SOURCE_BANDS:
        raise ValueError(f"source_distance must be below {SOURCE_BANDS} (the band count)")
    ordered = sorted(signatures, key=lambda s: s.id)
    parent = list(range(len(ordered)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    buckets: dict[tuple[str, int, int], list[int]] = {}
    for index, sig in enumerate(ordered):
        for band, value in enumerate(_bands(sig.source)):
            buckets.setdefault((sig.task, band, value), []).append(index)
    for members in buckets.values():
        for a_pos, a in enumerate(members):
            for b in members[a_pos + 1 :]:
                if find(a) == find(b):
                    continue
                sa, sb = ordered[a], ordered[b]
                if (bin(sa.source ^ sb.source).count("1") <= source_distance
                        and bin(sa.target ^ sb.target).count("1") <= source_distance
                        and edit_overlap(sa.edit, sb.edit) >= edit_similarity):
                    parent[find(b)] = find(a)
    groups: dict[int, list[Signature]] = {}
    for index, sig in enumerate(ordered):
        groups.setdefault(find(index), []).append(sig)
    out = {}
    for members in groups.values():
        if len(members) < 2:
            continue
        survivor = min(members, key=lambda s: (-s.quality, s.id))
        out.update({s.id: survivor.id for s in members if s.id != survivor.id})
    return out
