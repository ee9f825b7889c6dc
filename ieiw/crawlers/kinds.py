"""What a crawled edit is: its kind, how two kinds are written, and the keep / reject policy per kind.

Every ``web`` row carries ``edit_kind``. An accepted edit has one or more of :data:`EDIT_KINDS`, written in
that order and joined by ``+`` (``geometric+local``: straightened and a person removed). The first two are
*frame* kinds (how the target's frame relates to the original's), the others *content* kinds (what changed
inside the frame):

- ``composite``: the target is one panel of a before|after collage (the panel's box is in the row's params);
- ``geometric``: rotation, crop, perspective, flip: the content is the same up to a transform;
- ``resolution``: upscale, sharpen, denoise, deblur: the same content at another level of detail;
- ``colour``: one colour mapping of the whole image (grade, black and white, exposure, saturation);
- ``local``: a region changed (removal, replacement, retouch, a region recoloured);
- ``overlay``: graphics on top (text, stickers, a frame drawn over the edges).

A rejected candidate has one kind that says what it was: ``no_op`` (nothing changed, whatever the frame or
resolution), ``non_derivative`` (not made from the original), ``composite`` (the original found inside a
larger picture: a meme around it, a picture-in-picture) or ``colour`` (every pixel recoloured beyond any
colour mapping, ``changes_everything``).

The policy (:class:`KindPolicy`, ``crawl.validation.kinds``) is applied by selection, not by the crawl, so
``ieiw select`` re-decides it on the stored candidates without fetching anything again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

from ieiw.schemas.config import StrictModel

FRAME_KINDS = ("composite", "geometric")
CONTENT_KINDS = ("resolution", "colour", "local", "overlay")
EDIT_KINDS = FRAME_KINDS + CONTENT_KINDS
NO_OP, NON_DERIVATIVE = "no_op", "non_derivative"
SEPARATOR = "+"

Decision = Literal["keep", "reject", "with_other"]


def join_kinds(kinds: Iterable[str]) -> str:
    """The ``edit_kind`` value of a set of edit kinds: :data:`EDIT_KINDS` order, joined by ``+``."""
    found = set(kinds)
    unknown = found - set(EDIT_KINDS)
    if unknown:
        raise ValueError(f"unknown edit kind(s) {sorted(unknown)}; kinds: {', '.join(EDIT_KINDS)}")
    if not found:
        raise ValueError("an accepted edit has at least one kind")
    return SEPARATOR.join(k for k in EDIT_KINDS if k in found)


def split_kinds(edit_kind: str | None) -> tuple[str, ...]:
    """The kinds of an ``edit_kind`` value (``"geometric+local"`` -> ``("geometric", "local")``)."""
    return tuple(part for part in (edit_kind or "").split(SEPARATOR) if part)


class KindPolicy(StrictModel):
    """What selection does with a kept candidate of each kind: ``keep``, ``reject``, or ``with_other`` (the
    kind does not make a pair on its own: the row is kept when another of its kinds is kept).

    A row with several kinds is rejected when any of them is ``reject``, and when all of them are
    ``with_other``. The defaults suit InstructDiffusion, which learns from pixel-aligned pairs:
    ``geometric`` is ``with_other`` because the source is rendered in the target's frame, so a frame change
    alone leaves source and target the same (the row stores the unaligned original instead, which is not
    pixel-aligned); next to a content kind the aligned pair shows that edit. The content kinds and
    ``composite`` (the salvaged after panel, aligned to the original) are pixel-aligned: kept."""

    local: Decision = "keep"
    colour: Decision = "keep"
    geometric: Decision = "with_other"
    resolution: Decision = "keep"
    overlay: Decision = "keep"
    composite: Decision = "keep"


def policy_reason(edit_kind: str | None, policy: Mapping[str, str]) -> str | None:
    """Why ``policy`` rejects a row of ``edit_kind`` (``edit_kind_<kind>``), or None to keep it.

    Rows without a kind, or with a kind the policy does not name (a rejection kind, another builder's), are
    not this policy's to judge."""
    kinds = [k for k in split_kinds(edit_kind) if k in policy]
    if not kinds:
        return None
    for kind in kinds:
        if policy[kind] == "reject":
            return f"edit_kind_{kind}"
    if all(policy[kind] == "with_other" for kind in kinds):
        return f"edit_kind_{kinds[0]}"
    return None
