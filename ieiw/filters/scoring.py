"""Scorers: what the score stage runs over each unit's candidate pairs.

A :class:`Scorer` sees whole pairs (:class:`PairView`: source, target, mask, instruction, task and
the builder's own scores), not loose image bytes, so pair-level scores (edit consistency, CLIP
direction, object-gone verification) fit beside per-image ones. Scorers share a :class:`ScoreContext`
per unit: each distinct image is decoded once, and its embedding comes from the ``features`` stage's
stored shard (one feature pass, however many heads read it).

Each scorer declares the score columns it fills (``fills``); two scorers may not fill the same
column. A column a builder filled (the crawl's ``edit_consistency``) is kept unless a scorer fills it.

A scorer whose scores the row schema has no column for (the VLM judge) keeps them in a struct column of
its own beside ``scores`` in the scores shard (its config's ``side_column``: name and struct type, e.g.
``judge``). Selection reads those numbers as ``<column>_<field>`` (``judge_instruction``) next to the
``scores`` columns (:func:`decision_scores`), so rules on them re-decide without re-running the model.

The ``scoring:`` config section::

    scoring:
      features: {backend: embedded}     # the image-feature extractor of the features stage
      scorers:                          # each a registered scorer backend with its own fields
        - {backend: proxy}
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from ieiw.backends.features.base import ImageFeatures
from ieiw.backends.features.embedded import EmbeddedFeaturesConfig
from ieiw.imageio import Orientation, decode
from ieiw.schemas.config import BackendConfig, StrictModel, backend_field
from ieiw.schemas.registry import REGISTRY, register_section
from ieiw.schemas.rows import SCORE_SCHEMA, SCORES, image_key

SCORE_COLUMNS = tuple(f.name for f in SCORES if f.type == pa.float32())
# Which backend-name column describes each score column.
BACKEND_COLUMN = {
    "source_aesthetic": "aesthetic_backend",
    "target_aesthetic": "aesthetic_backend",
    "source_giqa": "giqa_backend",
    "target_giqa": "giqa_backend",
    "edit_consistency": "consistency_backend",
    "verification": "verification_backend",
}


def _default_scorers() -> tuple[BackendConfig, ...]:
    return (REGISTRY.backend("scorer", "proxy").config(),)


@register_section("scoring")
class ScoringConfig(StrictModel):
    """The score stage: one feature extractor, then the scorers."""

    features: backend_field("features") = Field(default_factory=EmbeddedFeaturesConfig)  # type: ignore[valid-type]
    scorers: tuple[backend_field("scorer"), ...] = Field(default_factory=_default_scorers)  # type: ignore[valid-type]

    def extractors(self) -> dict[str, BackendConfig]:
        """Every extractor the features stage must run, by label: the main one, then the scorers' own."""
        out = {self.features.label(): self.features}
        for scorer in self.scorers:
            extra = scorer.extractor() if hasattr(scorer, "extractor") else None
            if extra is not None:
                out.setdefault(extra.label(), extra)
        return out

    def side_columns(self) -> list[pa.Field]:
        """The scorers' own struct columns of the scores shard (module docstring)."""
        return [pa.field(*side) for s in self.scorers if (side := getattr(type(s), "side_column", None))]

    def score_schema(self) -> pa.Schema:
        schema = SCORE_SCHEMA
        for column in self.side_columns():
            schema = schema.append(column)
        return schema

    @model_validator(mode="after")
    def _one_scorer_per_column(self) -> ScoringConfig:
        names = [f.name for f in self.side_columns()]
        if len(names) != len(set(names)) or set(names) & set(SCORE_SCHEMA.names):
            raise ValueError(f"scorers' own columns {names} repeat one another or a scores column")
        seen: dict[str, str] = {}
        for scorer in self.scorers:
            for column in getattr(type(scorer), "fills", ()):
                if column in seen:
                    raise ValueError(f"scores.{column} is filled by both {seen[column]} and {scorer.backend}")
                seen[column] = scorer.backend
        return self


@dataclass(frozen=True)
class ImageRef:
    key: str  # image_key of the bytes: equal images share it
    data: bytes


@dataclass(frozen=True)
class PairView:
    """One candidate pair as scorers see it."""

    id: str
    task: str
    instruction: str
    source: ImageRef
    target: ImageRef
    mask: ImageRef | None
    upstream: Mapping[str, Any]  # the builder's own scores (may be empty)


@dataclass
class ScoreContext:
    """Per-unit shared work: decoded pixels and stored embeddings, by image key (and extractor label)."""

    features: Mapping[str, ImageFeatures] | None  # the build's extractors by label (for text embeddings)
    embeddings: Mapping[str, Mapping[str, np.ndarray]] = field(default_factory=dict)  # label -> key -> vector
    main: str | None = None  # label of scoring.features, what `embedding(image)` reads by default
    _pixels: dict[str, np.ndarray] = field(default_factory=dict)

    def pixels(self, image: ImageRef) -> np.ndarray:
        """RGB pixels as stored in the shard (builders store images upright, so no EXIF step)."""
        if image.key not in self._pixels:
            self._pixels[image.key] = decode(image.data, Orientation.IGNORE).pixels
        return self._pixels[image.key]

    def embedding(self, image: ImageRef, extractor: str | None = None) -> np.ndarray:
        """The image's embedding from the features stage (float32), by the main extractor by default."""
        label = extractor or self.main
        try:
            return self.embeddings[label][image.key]  # type: ignore[index]
        except KeyError:
            raise KeyError(f"image {image.key} has no stored {label} embedding; did the features stage run?") from None

    def text_embeddings(self, texts: Sequence[str], extractor: str | None = None) -> np.ndarray:
        if not self.features:
            raise RuntimeError("no feature extractor in this context")
        return self.features[extractor or self.main].text_features(list(texts))  # type: ignore[index]


class Scorer(abc.ABC):
    """Made from its config by ``config.create()``; loads models on first :meth:`score`."""

    def __init__(self, config: BackendConfig):
        self.config = config
        self.name = config.label()
        self.embedded = config.embedded
        self.fills: tuple[str, ...] = tuple(getattr(type(config), "fills", ()))
        side = getattr(type(config), "side_column", None)
        self.side: str | None = side[0] if side else None

    @abc.abstractmethod
    def score(self, pairs: Sequence[PairView], context: ScoreContext) -> list[dict[str, float | None]]:
        """One dict per pair with a value (or None) for each column in ``fills`` (and, for a scorer with a
        ``side`` column, that column's struct under its name)."""


class ImageScorer(Scorer):
    """A scorer of single images (an aesthetic or quality model): fills ``source_*`` and ``target_*``
    of one family, scoring each distinct image of the unit once (remove/add twins share images)."""

    family: str = "aesthetic"

    @abc.abstractmethod
    def score_image(self, image: ImageRef, context: ScoreContext) -> float:
        """Higher is better."""

    def score(self, pairs: Sequence[PairView], context: ScoreContext) -> list[dict[str, float | None]]:
        cache: dict[str, float] = {}

        def one(image: ImageRef) -> float:
            if image.key not in cache:
                cache[image.key] = float(self.score_image(image, context))
            return cache[image.key]

        return [{f"source_{self.family}": one(p.source), f"target_{self.family}": one(p.target)} for p in pairs]


def _cells(table: pa.Table, column: str) -> list[ImageRef | None]:
    data = pc.struct_field(table[column], "bytes").to_pylist()
    return [ImageRef(image_key(d), d) if d is not None else None for d in data]


def pair_views(table: pa.Table) -> list[PairView]:
    """The candidate table (id, task, instruction, source_image, target_image, mask, scores) as views."""
    sources, targets = _cells(table, "source_image"), _cells(table, "target_image")
    masks = _cells(table, "mask") if "mask" in table.column_names else [None] * table.num_rows
    upstream = table["scores"].to_pylist() if "scores" in table.column_names else [None] * table.num_rows
    return [
        PairView(i, t, ins, s, g, m, u or {})  # type: ignore[arg-type]
        for i, t, ins, s, g, m, u in zip(
            table["id"].to_pylist(), table["task"].to_pylist(), table["instruction"].to_pylist(),
            sources, targets, masks, upstream, strict=True,
        )
    ]


def distinct_images(pairs: Sequence[PairView]) -> list[ImageRef]:
    """Every distinct source and target image of the pairs, in first-seen order."""
    seen: dict[str, ImageRef] = {}
    for pair in pairs:
        for image in (pair.source, pair.target):
            seen.setdefault(image.key, image)
    return list(seen.values())


def score_pairs(pairs: Sequence[PairView], scorers: Sequence[Scorer], context: ScoreContext) -> list[dict[str, Any]]:
    """The ``scores`` struct of every pair: scorers' columns, the builder's own where no scorer fills
    them, one backend name per score family, and ``backend`` naming them all with the feature extractor
    (e.g. ``proxy-v1 + knn-giqa-k1[giqa-reference] over embedded-v1``)."""
    results = [scorer.score(pairs, context) for scorer in scorers]
    scorer_names = {s.name for s in scorers}
    out = []
    for index, pair in enumerate(pairs):
        up = dict(pair.upstream)
        scores: dict[str, Any] = {column: up.get(column) for column in SCORE_COLUMNS}
        backends = {column: up.get(column) for column in set(BACKEND_COLUMN.values())}
        # v1 rows of builders named their one backend in `backend`; it described the columns they filled.
        for column in SCORE_COLUMNS:
            if up.get(column) is not None and not backends.get(BACKEND_COLUMN[column]):
                backends[BACKEND_COLUMN[column]] = up.get("backend")
        embedded = bool(up.get("embedded"))
        for scorer, result in zip(scorers, results, strict=True):
            for column in scorer.fills:
                scores[column] = result[index].get(column)
                backends[BACKEND_COLUMN[column]] = scorer.name
            embedded = embedded or scorer.embedded
        names = [" + ".join(s.name for s in scorers) + (f" over {context.main}" if context.main else "")]
        if scores.get("edit_consistency") is not None and backends["consistency_backend"] not in scorer_names:
            names.append(f"edit_consistency: {backends['consistency_backend']}")
        if scores.get("verification") is not None and backends["verification_backend"] not in scorer_names:
            names.append(f"verification: {backends['verification_backend']}")
        sides = {s.side: result[index].get(s.side) for s, result in zip(scorers, results, strict=True) if s.side}
        # the side columns ride along under their names; the scores stage writes them as columns of their own
        out.append({**scores, **backends, "backend": "; ".join(names), "embedded": embedded, **sides})
    return out


def decision_scores(row: Mapping[str, Any]) -> dict[str, Any] | None:
    """A scores-shard row's ``scores`` with the numbers of its side columns merged in as
    ``<column>_<field>`` (``judge_instruction``): what selection rules read."""
    scores = dict(row.get("scores") or {})
    for name, value in row.items():
        if name in SCORE_SCHEMA.names or not isinstance(value, Mapping):
            continue
        scores.update({f"{name}_{k}": v for k, v in value.items() if isinstance(v, int | float) and not isinstance(v, bool)})
    return scores if (row.get("scores") is not None or len(scores)) else None
