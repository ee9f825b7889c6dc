"""Which training samples may be mirrored, and what a mirror does to their instruction.

The official InstructDiffusion config flips per dataset (``configs/instruct_diffusion.yaml``): RefCOCO,
gRefCOCO, GIER and GQA-Inpaint have ``flip_prob: 0.0`` (their sentences say "the man on the left"); the pose
datasets flip and swap the left/right joints (``fliplr_joints``); everything else flips half the time. Here:

- a flip probability per source, keyed like ``source_weights`` ("dataset:task", then dataset, then task),
  the official zeros by default (:data:`OFFICIAL_FLIP`);
- families whose instructions name sides the mirror can swap (:data:`SIDE_SWAPPING_FAMILIES`: keypoints, where
  the disc drawn on the left knee lands, mirrored, where a right knee is): a flipped sample's instruction has
  "left" and "right" exchanged, as the official pose loader relabels its joints;
- any other row whose instruction names a side ("remove the cup on the left") is never flipped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from ieiw.schemas.layout import task_family
from ieiw.training.keys import lookup_by_source

# configs/instruct_diffusion.yaml's flip_prob: 0.0 datasets, by our origin.dataset names (GQA-Inpaint has no
# importer yet; its name is reserved here so a plugin importer gets the official rule).
OFFICIAL_FLIP: dict[str, float] = {"refcoco": 0.0, "grefcoco": 0.0, "gier": 0.0, "gqa-inpaint": 0.0}
DEFAULT_FLIP = 0.5
SIDE_SWAPPING_FAMILIES = frozenset({"keypoints"})

# "left", "rightmost", "left_knee" (snake_case joint names); not "leftover"
SIDE_WORDS = re.compile(r"\b(left|right)(?=most\b|\b|_)", re.IGNORECASE)


@dataclass(frozen=True)
class FlipRule:
    """How one row may be mirrored: with ``probability``; ``swap_sides``: exchange left/right in its text."""

    probability: float
    swap_sides: bool = False


def names_a_side(text: str) -> bool:
    return SIDE_WORDS.search(text) is not None


def swap_sides(text: str) -> str:
    """"left knee, right wrist" -> "right knee, left wrist", keeping each word's case."""

    def swap(match: re.Match[str]) -> str:
        word = match.group(1)
        other = "right" if word.lower() == "left" else "left"
        if word.isupper():
            return other.upper()
        return other.capitalize() if word[0].isupper() else other

    return SIDE_WORDS.sub(swap, text)


def flip_rule(probabilities: Mapping[str, float], default: float, dataset: str | None, task: str | None,
              instruction: str) -> FlipRule:
    """The rule for one row: its source's probability; zero when its instruction names a side its family
    cannot swap."""
    probability = lookup_by_source(probabilities, dataset, task, default)
    swaps = task is not None and task_family(task) in SIDE_SWAPPING_FAMILIES
    if probability > 0 and not swaps and names_a_side(instruction):
        return FlipRule(0.0)
    return FlipRule(float(probability), swap_sides=swaps)
