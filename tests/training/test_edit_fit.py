"""`ieiw edit` prepares its input as the official edit_cli.py does: fitted (centre crop + LANCZOS), not
stretched, and the result comes back at the input's own size."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from ieiw.training.edit import fit_back, fit_official, official_size


def disc_extent(image: Image.Image) -> tuple[int, int]:
    """(width, height) of the red disc's pixels."""
    red = np.asarray(image)[..., 0] > 128
    ys, xs = np.nonzero(red)
    return int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def test_the_input_is_fitted_not_stretched():
    image = Image.new("RGB", (200, 140), "black")
    ImageDraw.Draw(image).ellipse([70, 40, 130, 100], fill="red")  # a 61 px circle in the middle
    assert official_size(200, 140, 128) == (128, 128)
    fitted = fit_official(image, 128)
    assert fitted.size == (128, 128)
    width, height = disc_extent(fitted)
    assert abs(width - height) <= 2, (width, height)  # a circle stays a circle
    stretched = image.resize((128, 128), Image.LANCZOS)
    sw, sh = disc_extent(stretched)
    assert abs(sw - sh) >= 10, "the check must tell a stretch apart"


def test_the_result_comes_back_at_the_input_size():
    result = Image.new("RGB", (256, 192), "white")
    assert fit_back(result, (300, 210)).size == (300, 210)
    assert fit_back(result, (256, 192)) is result
