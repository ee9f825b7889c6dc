"""The derivative rule of the crawl's validation, on the labelled set of ``bench/crawl_validation.py``.

A candidate is a derivative when, after alignment, the original's content covers at least half of it;
it is accepted when it is also a usable edit (something changed, not everything). Every case of the bench
runs here: derivatives are accepted, and each non-derivative class is rejected with its stable reason.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from ieiw.crawlers.align import validate_edit
from ieiw.crawlers.config import ValidationConfig

BENCH = Path(__file__).resolve().parents[2] / "bench" / "crawl_validation.py"
_spec = importlib.util.spec_from_file_location("crawl_validation_bench", BENCH)
bench = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = bench  # dataclasses look their module up while the class is built
_spec.loader.exec_module(bench)

CFG = ValidationConfig()
CASES = {case.name: case for case in bench.cases()}
STABLE_REASONS = {"non_derivative", "partial_overlap", "no_op", "changes_everything"}


@pytest.fixture(scope="module")
def verdicts() -> dict:
    return {name: validate_edit(case.original, case.candidate, CFG) for name, case in CASES.items()}


def test_the_set_spans_every_class_with_real_and_synthetic_originals():
    assert len(CASES) >= 40
    kinds = {case.kind for case in CASES.values()}
    assert kinds == set(bench.KINDS)
    names = {name.split("/")[1] for name in CASES}
    assert {"astronaut", "coffee", "chelsea", "rocket", "motorcycle", "camera", "moon"} <= names  # real photos
    assert any(n.startswith("synth_") for n in names) and any(n.startswith("featureless") for n in names)
    for kind in bench.REJECT_REASONS:
        assert sum(case.kind == kind for case in CASES.values()) >= 4, kind


@pytest.mark.parametrize("name", sorted(CASES))
def test_verdict_matches_the_label(name, verdicts):
    case, v = CASES[name], verdicts[name]
    assert v.reason in case.reasons, f"{name}: {v.reason} ({v.message}) {v.scores}"
    assert v.ok == case.label
    if v.ok:
        assert v.source is not None and v.source.shape == v.target.shape
    else:
        assert v.source is None and v.reason in STABLE_REASONS


def test_precision_and_recall_meet_the_goal(verdicts):
    tp = sum(verdicts[n].ok and c.label for n, c in CASES.items())
    fp = sum(verdicts[n].ok and not c.label for n, c in CASES.items())
    fn = sum(not verdicts[n].ok and c.label for n, c in CASES.items())
    assert fp == 0  # every non-derivative class is rejected
    assert tp / (tp + fp) >= 0.95 and tp / (tp + fn) >= 0.9


def test_unrelated_image_with_a_small_smooth_remainder_is_rejected(verdicts):
    """0 inliers, most of the image changed, and a high similarity on what was left.

    A rule that falls back to a resize and judges by the similarity outside the changed area accepts
    these (``resize_rule_accepts`` checks that they are such cases); the structure over the whole aligned
    pair rejects them.
    """
    for name in ("unrelated/horse/from coins", "unrelated/synth_scene41/from synth_scene42"):
        s = verdicts[name].scores
        resize_rule_accepts = (
            s["inliers"] < CFG.min_inliers
            and 0.5 < s["changed_fraction"] <= CFG.max_changed
            and s["similarity"] >= CFG.min_similarity
        )
        assert resize_rule_accepts, (name, s)
        assert verdicts[name].reason == "non_derivative"
        assert s["structure"] < 0.1 < CFG.min_structure
    assert verdicts["unrelated/horse/from coins"].scores["similarity"] > 0.95


def test_textured_original_needs_inliers(verdicts):
    v = verdicts["unrelated/camera/from coins"]
    assert v.scores["texture"] == "textured" and v.scores["inliers"] < CFG.min_inliers
    assert v.reason == "non_derivative" and "inliers" in v.message


def test_flat_original_with_edges_is_judged_by_structure_without_inliers(verdicts):
    """Synthetic scenes (flat colours, a few shapes) have few ORB corners: no inlier minimum, structure decides."""
    ok = verdicts["text_added/synth_scene41/HELLO"]
    assert ok.ok and ok.scores["texture"] == "flat" and ok.scores["structure"] >= CFG.min_structure
    bad = verdicts["unrelated/synth_scene43/from synth_scene41"]
    assert bad.scores["texture"] == "flat" and bad.reason == "non_derivative"
    assert bad.scores["structure"] < CFG.min_structure


def test_featureless_original_has_its_own_path():
    """No corners and no edges: the downscaled colour field must cover half of the candidate."""
    original = bench.jpeg(bench.featureless(11))
    edit = bench.jpeg(bench.rescale(bench.soft_edit(bench.featureless(11), (0.3, 0.2, 0.6, 0.6), (240, 220, 90)), 0.6))
    v = validate_edit(original, edit, CFG)
    assert v.ok, v.message
    assert v.method == "resize" and v.scores["inliers"] == 0 and v.scores["texture"] == "flat"
    assert v.scores["flat_agreement"] >= CFG.min_flat_agreement
    other = bench.jpeg(bench.unrelated(bench.featureless(12), bench.featureless(11)))
    v = validate_edit(original, other, CFG)
    assert v.reason == "non_derivative" and v.scores["flat_agreement"] < CFG.min_flat_agreement
    assert "featureless" in v.message


def test_grade_is_an_edit_and_full_recolour_changes_everything(verdicts):
    grade = verdicts["colour_grade/synth_scene42/warm"]
    assert grade.ok and grade.scores["changed_fraction"] > CFG.max_changed  # every pixel moved, one tone curve
    assert grade.scores["grade_residual"] <= CFG.max_grade_residual
    for name, case in CASES.items():
        if case.kind == "full_recolour":
            s = verdicts[name].scores
            assert s["structure"] >= CFG.min_structure  # derived: the structure is all there
            assert s["grade_residual"] > CFG.max_grade_residual


def test_memes_reusing_a_small_part_are_not_derivatives(verdicts):
    for name, case in CASES.items():
        if case.kind == "meme" and verdicts[name].reason == "non_derivative":
            assert verdicts[name].scores["structure"] < CFG.min_structure
    assert sum(verdicts[n].reason == "non_derivative" for n, c in CASES.items() if c.kind == "meme") >= 4
