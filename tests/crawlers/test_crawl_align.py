"""Validation with real cv2 on real derivatives: a crop + edit, an unrelated image, a no-op, and more."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from crawl_images import jpeg_bytes

from ieiw.crawlers.align import validate_edit
from ieiw.crawlers.config import ValidationConfig
from ieiw.imageio import decode_rgb, orientation_of
from ieiw.samples.crawl import crop_scale, paint_patch, recolour_region, synthetic_photo

CFG = ValidationConfig()


def via_jpeg(rgb: np.ndarray) -> np.ndarray:
    """Round-trip through JPEG like every image on the web does."""
    return decode_rgb(jpeg_bytes(rgb, 88))


@pytest.fixture(scope="module")
def original() -> np.ndarray:
    return synthetic_photo(21, 480, 360)


def test_crop_plus_edit_is_accepted_and_aligned(original):
    edited = paint_patch(original, 4, 0.15)
    box = (0.1, 0.15, 0.85, 0.9)
    edit = crop_scale(edited, box, 0.8)
    v = validate_edit(via_jpeg(original), via_jpeg(edit), CFG)
    assert v.ok, v.message
    assert v.method == "homography"
    assert v.source.shape == v.target.shape == edit.shape
    # the aligned source is the same crop of the original: compare outside the painted patch
    expected = crop_scale(original, box, 0.8)
    diff = np.abs(v.source.astype(int) - expected.astype(int)).mean(axis=2)
    assert np.median(diff) < 6
    # homography maps native original -> edit: scale 0.8, offset -(0.1*480*0.8, 0.15*360*0.8)
    H = np.array(v.scores["homography"]).reshape(3, 3)
    assert H[0, 0] == pytest.approx(0.8, abs=0.02) and H[1, 1] == pytest.approx(0.8, abs=0.02)
    assert H[0, 2] == pytest.approx(-38.4, abs=3) and H[1, 2] == pytest.approx(-43.2, abs=3)
    assert 0.01 < v.scores["changed_fraction"] < 0.3 and v.scores["similarity"] > 0.95


def test_unrelated_image_is_not_a_derivative(original):
    v = validate_edit(via_jpeg(original), via_jpeg(synthetic_photo(22, 480, 360)), CFG)
    assert v.reason == "non_derivative"
    assert v.scores["similarity"] < CFG.min_similarity
    assert v.source is None


def test_unrelated_image_of_another_shape_is_not_a_derivative(original):
    v = validate_edit(via_jpeg(original), via_jpeg(synthetic_photo(23, 300, 400)), CFG)
    assert v.reason == "non_derivative" and v.method == "none"


@pytest.mark.parametrize("scale", [1.0, 0.5], ids=["same-size", "rescaled"])
def test_no_op_is_rejected(original, scale):
    edit = cv2.resize(original, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale != 1 else original
    v = validate_edit(via_jpeg(original), via_jpeg(edit), CFG)
    assert v.reason == "no_op", v.message
    assert v.method == ("identity" if scale == 1 else "resize")


def test_edit_that_changes_everything_is_rejected(original):
    v = validate_edit(via_jpeg(original), via_jpeg(recolour_region(original, (0, 0, 1, 1), 90)), CFG)
    assert v.reason == "changes_everything"
    assert v.scores["changed_fraction"] > CFG.max_changed


def test_scaled_local_edit_keeps_the_edit_frame(original):
    edit = cv2.resize(recolour_region(original, (0.5, 0.5, 0.9, 0.9)), (240, 180), interpolation=cv2.INTER_AREA)
    v = validate_edit(via_jpeg(original), via_jpeg(edit), CFG)
    assert v.ok and v.method == "resize"
    assert v.source.shape == (180, 240, 3)


def test_large_edit_is_capped_at_max_side(original):
    big = cv2.resize(paint_patch(original, 5), (1600, 1200), interpolation=cv2.INTER_LINEAR)
    v = validate_edit(via_jpeg(original), via_jpeg(big), CFG.model_copy(update={"max_side": 800}))
    assert v.ok and v.target_rendered
    assert v.target.shape == v.source.shape == (600, 800, 3)


def test_exif_rotated_images_decode_upright(original):
    import io

    from PIL import Image

    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(original).save(buf, format="JPEG", exif=exif)
    rotated = buf.getvalue()
    assert orientation_of(rotated) == 6 and orientation_of(jpeg_bytes(original)) == 1
    assert decode_rgb(rotated).shape == (original.shape[1], original.shape[0], 3)
