"""Labels for regions: where "the A" of "change the A to B" comes from.

Every region and exemplar of the replacement source carries a label and ``label_source``, the way it
got it:

| ``label_source`` | meaning |
|---|---|
| ``open-images`` | the dataset's own class (Open Images' segmentation rows name a class; its display name) |
| ``clip-zero-shot`` | an unlabelled region (SA-1B, SAM) labelled by CLIP against a vocabulary (:class:`ZeroShotLabeler`) |
| ``embedded-nearest`` | embedded mode (no CLIP): the label of the nearest labelled exemplar in the embedded feature space (:func:`nearest_labelled`) |

**Zero-shot CLIP.** Each vocabulary name is put into the prompt (``"a photo of {a_phrase}"``: the
placeholders of instruction templates, so "jeans" reads "a photo of some jeans"), the text embeddings
(one per name; with several prompts their normalised mean, re-normalised) are computed once, and a
crop takes the name whose embedding has the highest cosine similarity with the crop's image
embedding. The score is that cosine similarity (about 0.2-0.35 for a good match with OpenAI CLIP
ViT-L/14; only comparable within one model).

**Vocabularies** (:func:`read_vocabulary`):

- the default, ``ieiw/backends/vocab/objects.txt``, shipped with ieiw: a hand-written list of ~340 common
  object names, one per line, ``#`` comments (Open Images' class list cannot be downloaded here);
- Open Images' class-description CSV (``LabelName,DisplayName`` rows such as ``/m/0bt9lr,Dog``, with or
  without that header line, as in ``class-descriptions-boxable.csv`` and ``oidv7-class-descriptions.csv``):
  the display names are the vocabulary;
- any other text file in the first form.

**Embedded mode.** Without a text tower there is no zero-shot labelling; an unlabelled region takes the
label of the labelled exemplar (an Open Images region) nearest to it in the embedded feature space
(``embedded-v1``, cosine similarity), and records the similarity. The descriptor knows colour and
texture, not objects, so these labels are weak: rows say ``label_source: embedded-nearest``, and the
card and stats show how many rows carry which source.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from pydantic import Field, field_validator

from ieiw.schemas.config import ModelPath, StrictModel
from ieiw.schemas.filehash import path_digest
from ieiw.schemas.lazy import locked_cached_property

OPEN_IMAGES = "open-images"
CLIP_ZERO_SHOT = "clip-zero-shot"
EMBEDDED_NEAREST = "embedded-nearest"
LABEL_SOURCES = (OPEN_IMAGES, CLIP_ZERO_SHOT, EMBEDDED_NEAREST)
DEFAULT_VOCABULARY = "vocab/objects.txt"  # inside the ieiw.backends package
DEFAULT_PROMPT = "a photo of {a_phrase}"
OPEN_IMAGES_HEADER = ("labelname", "displayname")


class VocabularyError(ValueError):
    """A vocabulary file ieiw cannot use; the message names the file (and the line)."""


class Label(NamedTuple):
    """A label and its score (zero-shot: the cosine similarity; embedded: the exemplar's similarity)."""

    label: str
    score: float


# -- vocabularies -----------------------------------------------------------------------------------
def _is_open_images_row(row: list[str]) -> bool:
    return len(row) >= 2 and row[0].strip().startswith(("/m/", "/g/"))


def parse_vocabulary(text: str, source: str = "<text>") -> list[str]:
    """Names from a vocabulary's text: Open Images' ``LabelName,DisplayName`` CSV (header optional)
    when its first data line is one, else one name per line with ``#`` comments. Names keep their
    spelling and order; duplicates (case-insensitive) keep the first."""
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise VocabularyError(f"{source}: no names (one per line, or Open Images' LabelName,DisplayName CSV)")
    rows = list(csv.reader(io.StringIO("\n".join(lines))))
    header = tuple(cell.strip().lower() for cell in rows[0][:2])
    if header == OPEN_IMAGES_HEADER or _is_open_images_row(rows[0]):
        names = []
        for number, row in enumerate(rows[1:] if header == OPEN_IMAGES_HEADER else rows, start=1):
            if not _is_open_images_row(row) or not row[1].strip():
                raise VocabularyError(f"{source}: row {number + (header == OPEN_IMAGES_HEADER)} {row!r} is not "
                                      "an Open Images LabelName,DisplayName row")
            names.append(row[1].strip())
    else:
        names = [" ".join(line.split("#", 1)[0].split()) for line in lines]
        names = [name for name in names if name]
    seen: set[str] = set()
    unique = []
    for name in names:
        if name.lower() not in seen:
            seen.add(name.lower())
            unique.append(name)
    return unique


def read_vocabulary(path: str | Path | None = None) -> list[str]:
    """The names of a vocabulary file (:func:`parse_vocabulary`); ``None`` = the shipped default."""
    if path is None:
        resource = resources.files("ieiw.backends").joinpath(DEFAULT_VOCABULARY)
        return parse_vocabulary(resource.read_text(encoding="utf-8"), f"ieiw/builders/{DEFAULT_VOCABULARY}")
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8-sig")  # Open Images' CSVs may start with a byte-order mark
    except FileNotFoundError:
        raise VocabularyError(f"{path}: vocabulary file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise VocabularyError(f"{path}: cannot read: {exc}") from None
    return parse_vocabulary(text, str(path))


def default_vocabulary() -> list[str]:
    return read_vocabulary(None)


# -- zero-shot CLIP ---------------------------------------------------------------------------------
class ZeroShotLabeler:
    """``label(crops)`` -> one :class:`Label` per crop: the vocabulary name CLIP finds most similar.

    ``features`` is an :class:`~ieiw.backends.features.embedded.ImageFeatures` with a text tower (``ClipFeatures``);
    ``prompt`` a template (or a list of them, averaged) with a phrase placeholder."""

    label_source = CLIP_ZERO_SHOT

    def __init__(self, features: Any, vocabulary: Sequence[str], prompt: str | Sequence[str] = DEFAULT_PROMPT):
        from ieiw.phrases import check_template

        if not getattr(features, "has_text", False):
            raise ValueError(f"zero-shot labels need a feature backend with a text tower (clip), not "
                             f"{getattr(features, 'name', features)!r}; embedded mode uses nearest_labelled()")
        self.features = features
        self.vocabulary = list(dict.fromkeys(vocabulary))
        if not self.vocabulary:
            raise ValueError("empty vocabulary")
        self.prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not self.prompts:
            raise ValueError("no prompt")
        for template in self.prompts:
            try:
                check_template(template)
            except ValueError as exc:
                raise ValueError(f"zero-shot prompt {template!r}: {exc}") from None

    def texts(self) -> list[list[str]]:
        """The prompts each vocabulary name is embedded with (names made phrases by ``label_phrase``)."""
        from ieiw.phrases import label_phrase, render

        return [[render(template, label_phrase(name)) for template in self.prompts] for name in self.vocabulary]

    @locked_cached_property
    def text_embeddings(self) -> np.ndarray:
        """(vocabulary, dim) float32, L2-normalised; computed once."""
        texts = self.texts()
        flat = self.features.text_features([text for group in texts for text in group])
        mean = flat.reshape(len(texts), len(self.prompts), -1).mean(axis=1)
        return (mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def similarities(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """(crops, vocabulary) cosine similarities of RGB uint8 crops to every name."""
        if not len(crops):
            return np.zeros((0, len(self.vocabulary)), np.float32)
        return self.features.image_features(list(crops)) @ self.text_embeddings.T

    def label(self, crops: Sequence[np.ndarray]) -> list[Label]:
        scores = self.similarities(crops)
        best = scores.argmax(axis=1) if len(scores) else np.zeros(0, int)
        return [Label(self.vocabulary[int(i)], float(scores[row, i])) for row, i in enumerate(best)]


class ZeroShotLabelsConfig(StrictModel):
    """``labels:`` of a replacement config: where unlabelled regions' names come from."""

    vocabulary: ModelPath = Field(None, description="a names file or Open Images' class-description CSV; "
                                                    "default: the shipped ieiw/backends/vocab/objects.txt")
    prompt: str | list[str] = Field(DEFAULT_PROMPT, description="CLIP prompt(s) with a phrase placeholder")

    @field_validator("prompt")
    @classmethod
    def _valid_prompt(cls, value: str | list[str]) -> str | list[str]:
        from ieiw.phrases import check_template

        for template in [value] if isinstance(value, str) else value:
            check_template(template)
        if not value:
            raise ValueError("give at least one prompt")
        return value

    def names(self) -> list[str]:
        return read_vocabulary(self.vocabulary)

    def preflight(self) -> list[str]:
        if self.vocabulary is not None and not Path(self.vocabulary).expanduser().is_file():
            return [f"labels: vocabulary {self.vocabulary} does not exist"]
        return []

    def fingerprint(self) -> dict[str, Any]:
        """What labels depend on besides the model: the vocabulary's content and the prompt(s)."""
        if self.vocabulary is None:
            resource = resources.files("ieiw.backends").joinpath(DEFAULT_VOCABULARY)
            with resources.as_file(resource) as path:
                digest = path_digest(path)
        else:
            digest = path_digest(Path(self.vocabulary).expanduser())
        return {"vocabulary": digest, "prompt": self.prompt}

    def labeler(self, features: Any) -> ZeroShotLabeler:
        return ZeroShotLabeler(features, self.names(), self.prompt)


# -- embedded: nearest labelled exemplar -----------------------------------------------------------
def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def nearest_labelled_many(vectors: np.ndarray, labelled_vectors: np.ndarray, labels: Sequence[str]) -> list[Label]:
    """For each row of ``vectors`` (N, d): the label of the most similar row of ``labelled_vectors``
    (M, d) by cosine similarity (rows are normalised here, so any scale works), and that similarity.
    Ties go to the first such row."""
    vectors = np.atleast_2d(np.asarray(vectors, np.float32))
    labelled = np.atleast_2d(np.asarray(labelled_vectors, np.float32))
    if len(labels) != len(labelled):
        raise ValueError(f"{len(labelled)} labelled vectors but {len(labels)} labels")
    if not len(labelled):
        raise ValueError("no labelled exemplars to take a label from")
    if vectors.shape[1] != labelled.shape[1]:
        raise ValueError(f"vectors of {vectors.shape[1]} dimensions against labelled ones of {labelled.shape[1]}")
    similarity = _unit_rows(vectors) @ _unit_rows(labelled).T
    best = similarity.argmax(axis=1)
    return [Label(labels[int(j)], float(similarity[i, j])) for i, j in enumerate(best)]


def nearest_labelled(vector: np.ndarray, labelled_vectors: np.ndarray, labels: Sequence[str]) -> Label:
    """The label of the labelled exemplar nearest to ``vector`` (cosine) and its similarity."""
    return nearest_labelled_many(np.asarray(vector)[None] if np.ndim(vector) == 1 else vector,
                                 labelled_vectors, labels)[0]
