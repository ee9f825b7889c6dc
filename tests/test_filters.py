"""The embedded quality proxy and the paper's two selection rules."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ieiw.builders.imageio import decode, encode
from ieiw.filters.quality import ProxyQualityScorer
from ieiw.filters.selection import QUALITY_GAP_HIGH, TARGET_QUALITY_LOW, UNSCORED, rejection_reason
from ieiw.schemas.config import SelectionConfig


@pytest.fixture(scope="module")
def photo(sample_root) -> np.ndarray:
    return decode((sample_root / "images" / "1.jpg").read_bytes())


def test_proxy_ranks_degraded_images_lower(photo):
    scorer = ProxyQualityScorer()
    original = scorer.score_pixels(photo)
    blurred = scorer.score_pixels(cv2.GaussianBlur(photo, (0, 0), 4))
    grey = scorer.score_pixels(cv2.cvtColor(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB))
    dark = scorer.score_pixels((photo * 0.15).astype(np.uint8))
    flat = scorer.score_pixels(np.full_like(photo, 128))
    assert max(blurred, grey, dark, flat) < original <= 10.0
    assert 1.0 <= flat < min(blurred, grey), "no detail and no colour is worst, short of bad exposure"
    assert scorer.score_pixels(photo) == original, "deterministic"


def test_score_many_scores_each_distinct_image_once(photo, monkeypatch):
    scorer = ProxyQualityScorer()
    a, b = encode(photo), encode(photo[::-1].copy())
    calls = []
    real = scorer.score_pixels
    monkeypatch.setattr(scorer, "score_pixels", lambda pixels: calls.append(1) or real(pixels))
    scores = scorer.score_many([a, b, a, b])
    assert len(calls) == 2 and scores[0] == scores[2] and scores[1] == scores[3]


@pytest.mark.parametrize(
    ("source", "target", "reason"),
    [
        (6.0, 6.5, None),
        (6.0, 4.9, TARGET_QUALITY_LOW),
        (8.0, 6.0, QUALITY_GAP_HIGH),
        (5.0, 6.6, QUALITY_GAP_HIGH),
        (None, 6.0, UNSCORED),
    ],
)
def test_selection_rules_name_their_reason(source, target, reason):
    rules = SelectionConfig(min_target_aesthetic=5.0, max_aesthetic_gap=1.5)
    assert rejection_reason({"source_aesthetic": source, "target_aesthetic": target}, rules) == reason
    assert rejection_reason(None, rules) == UNSCORED
