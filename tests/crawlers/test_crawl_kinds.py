"""Edit kinds of crawled pairs on real photographs (scikit-image's bundled ones): a straightened photo and a
sharpened upscale are edits (``geometric``, ``resolution``), not no-ops; a JPEG re-encode is still a no-op; a
before|after collage gives its after panel, pixel-aligned; a meme around the shrunk original stays rejected;
and the labelled bench (``bench/crawl_validation.py``) meets its goals on the half its thresholds never saw."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from ieiw.crawlers.align import validate_edit
from ieiw.crawlers.config import ValidationConfig
from ieiw.crawlers.kinds import EDIT_KINDS, KindPolicy, join_kinds, policy_reason, split_kinds

BENCH = Path(__file__).resolve().parents[2] / "bench" / "crawl_validation.py"
_spec = importlib.util.spec_from_file_location("crawl_validation_bench_kinds", BENCH)
bench = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = bench
_spec.loader.exec_module(bench)

CFG = ValidationConfig()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return bench.photos()["astronaut"]


@pytest.fixture(scope="module")
def coffee() -> np.ndarray:
    return bench.photos()["coffee"]


def judge(original: np.ndarray, candidate: np.ndarray):
    return validate_edit(bench.jpeg(original), bench.jpeg(candidate), CFG)


# -- frame and detail are edits, a re-encode is not -------------------------------------------------------


def test_a_photo_straightened_by_3_degrees_and_cropped_is_a_geometric_edit(astronaut):
    v = judge(astronaut, bench.rotate(astronaut, 3.0))
    assert v.ok, v.message
    assert v.kinds == ("geometric",) and v.edit_kind == "geometric"
    assert v.method == "homography" and v.scores["geometry"] >= CFG.min_geometry
    # the frame change is the edit: the source is the original as posted, not the aligned rendering
    assert v.source.shape == astronaut.shape and v.scores["source_frame"] == "original"


def test_a_2x_upscale_with_sharpening_is_a_resolution_edit(coffee):
    small, big = bench.upscaled(coffee, 2.0, 0.8)
    assert big.shape[1] == 2 * small.shape[1]
    v = judge(small, big)
    assert v.ok, v.message
    assert v.kinds == ("resolution",) and v.edit_kind == "resolution"
    assert v.method == "resize" and v.scores["edge_gain"] >= CFG.min_edge_gain
    assert v.source.shape == v.target.shape == big.shape  # the original rendered at the edit's resolution


@pytest.mark.parametrize("name", ["astronaut", "coffee", "camera"])
def test_a_jpeg_q50_reencode_stays_a_no_op(name):
    img = bench.photos()[name]
    v = validate_edit(bench.jpeg(img), bench.jpeg(bench.jpeg(img, 50)), CFG)
    assert v.reason == "no_op" and v.edit_kind == "no_op", v.scores
    assert v.message.startswith("nothing changed")


def test_a_plain_upscale_adds_nothing(coffee):
    small, big = bench.upscaled(coffee, 2.0, 0.0)
    v = judge(small, big)
    assert v.reason == "no_op", v.scores


@pytest.mark.parametrize("variant", ["crop", "flip", "perspective"])
def test_other_frame_changes_are_geometric(astronaut, variant):
    candidate = {"crop": lambda i: bench.crop(i, (0.08, 0.12, 0.86, 0.9)),
                 "flip": lambda i: np.ascontiguousarray(i[:, ::-1]),
                 "perspective": lambda i: bench.perspective(i, 0.05)}[variant](astronaut)
    v = judge(astronaut, candidate)
    assert v.ok and v.kinds == ("geometric",), (v.reason, v.message, v.scores)
    assert v.scores.get("flipped", False) == (variant == "flip")


@pytest.mark.parametrize("kind, expected", [("bw", "colour"), ("warm", "colour"), ("saturate", "colour")])
def test_whole_image_colour_mappings_are_colour(coffee, kind, expected):
    v = judge(coffee, bench.colour(coffee, kind))
    assert v.ok and v.edit_kind == expected, (v.reason, v.scores)


def test_two_kinds_are_named_together(astronaut):
    box = bench.busiest(astronaut)
    v = judge(astronaut, bench.crop(bench.remove_region(astronaut, box), (0.1, 0.05, 0.95, 0.9)))
    assert v.ok and v.kinds == ("geometric", "local") and v.edit_kind == "geometric+local"
    assert v.source.shape == v.target.shape  # with a content kind the source is aligned to the target


def test_text_and_a_sticker_are_overlays_a_removal_is_local(astronaut):
    text = judge(astronaut, bench.caption(astronaut, "HAPPY BIRTHDAY", 3, True, 1.0))
    sticker = judge(astronaut, bench.sticker(astronaut, 4, 0.3))
    removal = judge(astronaut, bench.remove_region(astronaut, bench.busiest(astronaut)))
    assert (text.edit_kind, sticker.edit_kind, removal.edit_kind) == ("overlay", "overlay", "local")


# -- collages -------------------------------------------------------------------------------------------


def test_a_before_after_collage_gives_the_after_panel_aligned_within_a_pixel(astronaut):
    box = bench.busiest(astronaut)
    after = bench.remove_region(astronaut, box)
    picture, panel = bench.collage(astronaut, after, "x", gap=12, margin=8, scale=0.75)
    v = judge(astronaut, picture)
    assert v.ok, v.message
    assert v.kinds == ("composite", "local") and v.edit_kind == "composite+local"
    found = v.scores["panel"]
    assert max(abs(a - b) for a, b in zip(found, panel, strict=True)) <= 1, (found, panel)
    x0, y0, x1, y1 = panel
    assert v.target.shape[:2] == (y1 - y0, x1 - x0)  # the target is the after panel
    # pixel-aligned: the homography puts the original's corners on the panel's corners within a pixel...
    H = np.array(v.scores["homography"]).reshape(3, 3)
    h, w = astronaut.shape[:2]
    corners = cv2.perspectiveTransform(np.float32([[0, 0], [w, 0], [w, h], [0, h]]).reshape(-1, 1, 2), H)
    expected = np.float32([[0, 0], [x1 - x0, 0], [x1 - x0, y1 - y0], [0, y1 - y0]]).reshape(-1, 1, 2)
    assert np.abs(corners - expected).max() <= 1.0
    # ...and the source matches the panel's unedited pixels with no shift
    source, target = (cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32) for img in (v.source, v.target))
    (dx, dy), _ = cv2.phaseCorrelate(source, target)
    assert np.hypot(dx, dy) < 1.0
    assert np.median(np.abs(source - target)) < 4


def test_a_stacked_collage_without_a_separator_is_salvaged_too(coffee):
    picture, panel = bench.collage(coffee, bench.colour(coffee, "warm"), "y", gap=0, margin=0, scale=0.6)
    v = judge(coffee, picture)
    assert v.ok and v.edit_kind == "composite+colour", (v.reason, v.message)
    assert max(abs(a - b) for a, b in zip(v.scores["panel"], panel, strict=True)) <= 1


def test_a_meme_around_the_original_shrunk_to_30_percent_stays_rejected(astronaut):
    v = judge(astronaut, bench.meme_around(astronaut, 0.3, 5))
    assert not v.ok and v.reason in ("partial_overlap", "non_derivative"), v.message
    assert v.edit_kind in ("composite", "non_derivative") and v.source is None


def test_a_collage_of_two_unchanged_copies_is_no_pair(astronaut):
    picture, _ = bench.collage(astronaut, astronaut, "x", gap=12, margin=0, scale=0.7)
    assert not judge(astronaut, picture).ok


# -- the kind vocabulary and the policy ------------------------------------------------------------------


def test_kinds_are_written_in_one_order():
    assert join_kinds({"local", "geometric"}) == "geometric+local"
    assert split_kinds("composite+colour") == ("composite", "colour")
    assert split_kinds(None) == ()
    with pytest.raises(ValueError, match="unknown edit kind"):
        join_kinds({"sharpened"})
    assert set(EDIT_KINDS) == set(KindPolicy.model_fields)


def test_the_default_policy_keeps_pixel_aligned_kinds_and_a_frame_change_only_with_another_kind():
    policy = KindPolicy().model_dump()
    assert policy_reason("geometric", policy) == "edit_kind_geometric"
    assert policy_reason("geometric+local", policy) is None
    for kind in ("local", "colour", "resolution", "overlay", "composite+local"):
        assert policy_reason(kind, policy) is None, kind
    assert policy_reason("no_op", policy) is None and policy_reason(None, policy) is None  # not the policy's
    strict = {**policy, "overlay": "reject"}
    assert policy_reason("local+overlay", strict) == "edit_kind_overlay"
    assert policy_reason("geometric", {**policy, "geometric": "keep"}) is None


# -- the bench ------------------------------------------------------------------------------------------


def test_the_bench_has_150_real_photo_cases_of_every_kind_in_two_disjoint_halves():
    cases = bench.kind_cases()
    assert len(cases) >= 150
    tune = {c.name.split("/")[1] for c in cases if c.half == "tune"}
    held = {c.name.split("/")[1] for c in cases if c.half == "held_out"}
    assert tune == set(bench.TUNE) and held == set(bench.HELD_OUT) and not tune & held
    for kind in EDIT_KINDS:
        variants = {c.name.split("/")[2] for c in cases if c.kinds and kind in c.kinds}
        assert len(variants) >= 3, (kind, variants)  # several strengths and forms
    families = {c.family for c in cases if not c.label}
    assert families == set(bench.NOT_DERIVATIVE)


@pytest.fixture(scope="module")
def held_out():
    return [(case, validate_edit(case.original, case.candidate, CFG)) for case in bench.kind_cases("held_out")]


def test_the_held_out_half_meets_the_goals(held_out):
    table = bench.kind_table(held_out)
    derivative = table["derivative"]
    assert derivative["precision"] >= 0.95 and derivative["recall"] >= 0.9, derivative
    for kind in EDIT_KINDS:
        assert table[kind]["accuracy"] >= 0.85, (kind, table[kind])
    for case, v in held_out:
        if not case.label:
            assert v.reason in case.reasons, (case.name, v.reason)


@pytest.mark.parametrize("original, candidate", [
    (np.full((100, 120, 3), 128, np.uint8), np.full((100, 120, 3), 30, np.uint8)),  # flat, no feature at all
    (np.zeros((200, 200, 3), np.uint8), np.zeros((200, 400, 3), np.uint8)),  # black, a two-panel shape
    (np.zeros((1, 1, 3), np.uint8), np.zeros((1, 1, 3), np.uint8)),
    (np.full((10, 400, 3), 200, np.uint8), np.full((10, 800, 3), 200, np.uint8)),  # thinner than any panel
], ids=["flat", "black-collage-shape", "one-pixel", "thin"])
def test_degenerate_images_get_a_verdict_not_an_exception(original, candidate):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NaN mean, no empty slice on the way
        v = validate_edit(original, candidate, CFG)
    assert v.reason in ("no_op", "non_derivative") and v.edit_kind == v.reason
