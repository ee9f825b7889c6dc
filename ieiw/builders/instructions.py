"""Instruction templates, written in the paper's detailed, natural style (docs/paper.md, "Instructions").

The template is chosen from the row id, so a row's instruction never changes between runs and the
choice is spread evenly over the templates. The trainer can still draw a fresh template per sample.
"""

from __future__ import annotations

REMOVE_TEMPLATES = (
    "remove the {phrase}",
    "Please remove the {phrase} from the image.",
    "Erase the {phrase} and fill in the background naturally.",
    "Get rid of the {phrase}.",
    "Take the {phrase} out of the picture while keeping everything else unchanged.",
    "Delete the {phrase} from this photo.",
    "Make the {phrase} disappear.",
    "Can you remove the {phrase} and leave the rest of the scene as it is?",
    "Clear away the {phrase}.",
    "Edit the photo so that the {phrase} is no longer there.",
    "Wipe out the {phrase}, keeping the surroundings intact.",
    "Remove the {phrase} and restore what is behind it.",
)

ADD_TEMPLATES = (
    "add the {phrase}",
    "Please add the {phrase} to the image.",
    "Put the {phrase} into the scene.",
    "Insert the {phrase} where it fits naturally.",
    "Place the {phrase} in the picture while keeping everything else unchanged.",
    "Make the {phrase} appear in this photo.",
    "Can you add the {phrase} to the scene?",
    "Draw the {phrase} into the image.",
    "Edit the photo so that it includes the {phrase}.",
    "Bring the {phrase} into the picture.",
    "Include the {phrase} in this image and leave the rest as it is.",
    "Add the {phrase}, blending it into the surroundings.",
)

TEMPLATES = {"remove": REMOVE_TEMPLATES, "add": ADD_TEMPLATES}


def clean_phrase(phrase: str) -> str:
    """Referring phrases arrive lower-case with stray spaces; a leading article would double up."""
    words = phrase.strip().split()
    if words and words[0].lower() in ("a", "an", "the"):
        words = words[1:]
    return " ".join(words)


def instruction_for(task: str, phrase: str, row_id: str) -> str:
    """The instruction of ``task`` for ``phrase``, picked deterministically by the (hex) row id."""
    templates = TEMPLATES[task]
    return templates[int(row_id[:8], 16) % len(templates)].format(phrase=clean_phrase(phrase))
