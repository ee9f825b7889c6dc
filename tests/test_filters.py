"""The embedded quality proxy and the paper's two selection rules."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ieiw.filters.quality import ProxyQualityScorer
from ieiw.filters.scoring import ImageRef, PairView, ScoreContext, score_pairs
from ieiw.filters.selection import QUALITY_GAP_HIGH, TARGET_QUALITY_LOW, UNSCORED, SelectionConfig, rejection_reason
from ieiw.imageio import decode_rgb, encode
from ieiw.schemas.rows import image_key


@pytest.fixture(scope="module")
def photo(sample_root) -> np.ndarray:
    return decode_rgb((sample_root / "images" / "1.jpg").read_bytes())


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


def ref(data: bytes) -> ImageRef:
    return ImageRef(image_key(data), data)


def test_scorers_see_pairs_and_score_each_distinct_image_once(photo, monkeypatch):
    """Remove/add twins share their two images: each is decoded and scored once per unit."""
    scorer = ProxyQualityScorer()
    a, b = ref(encode(photo)), ref(encode(photo[::-1].copy()))
    pairs = [PairView("r", "remove", "remove it", a, b, None, {}), PairView("a", "add", "add it", b, a, None, {})]
    calls = []
    real = scorer.score_pixels
    monkeypatch.setattr(scorer, "score_pixels", lambda pixels: calls.append(1) or real(pixels))
    context = ScoreContext(features=None)
    scores = score_pairs(pairs, [scorer], context)
    assert len(calls) == 2 and len(context._pixels) == 2
    assert scores[0]["source_aesthetic"] == scores[1]["target_aesthetic"] == real(decode_rgb(a.data))
    assert scores[0]["aesthetic_backend"] == "proxy-v1" and scores[0]["embedded"] is True


def test_builder_scores_are_kept_and_named_beside_the_scorers(photo):
    """A column a builder filled (the crawl's alignment similarity) survives scoring, with its backend."""
    a, b = ref(encode(photo)), ref(encode(photo[:, ::-1].copy()))
    upstream = {"backend": "opencv-orb-ransac", "embedded": False, "edit_consistency": 0.97}
    [scores] = score_pairs([PairView("w", "web", "fix it", a, b, None, upstream)], [ProxyQualityScorer()],
                           ScoreContext(features=None))
    assert scores["edit_consistency"] == 0.97 and scores["consistency_backend"] == "opencv-orb-ransac"
    assert scores["backend"] == "proxy-v1; edit_consistency: opencv-orb-ransac"
    assert scores["source_aesthetic"] is not None and scores["giqa_backend"] is None


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
