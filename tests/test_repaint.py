"""Repaint backends (ieiw/backends/repaint.py): a tiny random Paint-by-Example pipeline through the real
backend, the Poisson-blending embedded backend (regions at the image border included), and the
composite that keeps every pixel outside the dilated mask exactly the source's."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from ieiw_testing import tiny_paint_by_example_folder, tiny_paint_by_example_pipeline

from ieiw.backends.repaint import (
    EmbeddedRepaintConfig,
    PaintByExampleConfig,
    Window,
    composite,
    feather_alpha,
    fit_to_box,
    poisson_paste,
    square_window,
)
from ieiw.schemas.config import BackendConfig
from ieiw.schemas.registry import REGISTRY


@pytest.fixture(autouse=True)
def hash_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IEIW_CACHE_DIR", str(tmp_path / "ieiw-cache"))


def scene(seed: int, height: int, width: int) -> np.ndarray:
    """A smooth random scene (blurred noise) so resizing and blending behave as on photos."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (max(height // 8, 2), max(width // 8, 2), 3), dtype=np.uint8)
    return cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)


def ellipse_mask(height: int, width: int, center: tuple[int, int], axes: tuple[int, int], dilate: int = 3) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    cv2.ellipse(mask, center, axes, 0, 0, 360, 1, -1)
    return cv2.dilate(mask, np.ones((2 * dilate + 1, 2 * dilate + 1), np.uint8))  # the caller's dilation


def assert_outside_exact(out: np.ndarray, source: np.ndarray, mask: np.ndarray) -> None:
    assert out.shape == source.shape and out.dtype == np.uint8
    outside = mask == 0
    assert np.array_equal(out[outside], source[outside]), "a pixel outside the dilated mask changed"


# -- the composite ----------------------------------------------------------------------------------
def test_feathering_lies_inside_the_mask():
    mask = np.zeros((60, 80), np.uint8)
    mask[10:50, 10:70] = 1
    alpha = feather_alpha(mask, feather=6)
    assert alpha.dtype == np.float32
    assert np.all(alpha[mask == 0] == 0), "alpha is exactly 0 outside the mask"
    assert np.all(alpha[mask == 1] > 0), "every mask pixel takes some of the repaint, the edge included"
    assert alpha[30, 40] == 1.0 and alpha[10, 40] < 0.1 and alpha[16, 40] == 1.0  # ramp of 6 px from the edge
    assert np.all(np.diff(alpha[10:20, 40]) >= 0)
    # a region thinner than 2 x feather: the ramp shortens so its middle is still fully repainted
    thin = np.zeros((40, 40), np.uint8)
    thin[18:23, 5:35] = 1
    assert feather_alpha(thin, feather=8)[20, 20] == 1.0
    # feather 0: a hard paste of the whole mask
    assert np.array_equal(feather_alpha(mask, 0), mask.astype(np.float32))
    # a mask reaching the image border: the border is not "outside", so alpha stays 1 there
    corner = np.zeros((40, 40), np.uint8)
    corner[:20, :20] = 1
    assert feather_alpha(corner, 4)[0, 0] == 1.0


def test_composite_copies_the_outside_and_blends_only_inside():
    rng = np.random.default_rng(1)
    source = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    repainted = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    mask = ellipse_mask(48, 64, (30, 20), (12, 9), dilate=2)
    out = composite(source, repainted, mask, feather=4)
    assert_outside_exact(out, source, mask)
    core = feather_alpha(mask, 4) == 1
    assert np.array_equal(out[core], repainted[core])
    assert np.array_equal(composite(source, repainted, np.zeros_like(mask), 4), source)
    with pytest.raises(ValueError, match="differ in size"):
        composite(source, repainted[:10], mask, 4)


# -- Paint-by-Example through the real backend -------------------------------------------------------
@pytest.fixture(scope="module")
def pbe_folder(tmp_path_factory) -> Path:
    return tiny_paint_by_example_folder(tmp_path_factory.mktemp("models") / "tiny-paint-by-example")


@pytest.fixture(scope="module")
def pbe(pbe_folder):
    return PaintByExampleConfig(model=str(pbe_folder), resolution=64, steps=2, batch_size=2).create()


def items(count: int = 3):
    sizes = [(50, 70), (90, 40), (33, 33), (64, 64)]
    images, masks, exemplars = [], [], []
    for i in range(count):
        h, w = sizes[i % len(sizes)]
        images.append(scene(i, h, w))
        masks.append(ellipse_mask(h, w, (w // 2, h // 3), (w // 5, h // 6)))
        exemplars.append(scene(100 + i, 24 + 4 * i, 30))
    return images, masks, exemplars


def test_paint_by_example_config_names_the_model_and_keeps_runtime_fields_out_of_ids(pbe_folder):
    config = PaintByExampleConfig(model=str(pbe_folder), device="cpu", batch_size=7, dtype="float32")
    assert config.label() == "paint-by-example:tiny-paint-by-example" and config.model_id() == str(pbe_folder)
    assert set(config.row_params()) == {"model", "revision", "steps", "guidance_scale", "resolution", "feather",
                                        "context", "exemplar_size", "exemplar_pad"}
    assert config.preflight() == []
    assert config.model_digests()["model"] is not None
    defaults = PaintByExampleConfig()
    assert (defaults.model, defaults.steps, defaults.guidance_scale, defaults.resolution) == \
        ("Fantasy-Studio/Paint-by-Example", 50, 5.0, 512)
    assert (defaults.context, defaults.exemplar_size, defaults.exemplar_pad) == (2.0, None, 10)
    with pytest.raises(ValueError, match="multiple of 8"):
        PaintByExampleConfig(resolution=500)
    assert REGISTRY.backend("repaint", "paint-by-example").config is PaintByExampleConfig
    assert REGISTRY.backend("repaint", "embedded").config is EmbeddedRepaintConfig
    assert issubclass(PaintByExampleConfig, BackendConfig) and not PaintByExampleConfig.embedded


def test_tiny_paint_by_example_runs_through_the_real_backend(pbe):
    images, masks, exemplars = items(3)  # batch_size 2: a full batch and a partial one
    started = time.perf_counter()
    out = pbe.repaint(images, masks, exemplars, [11, 12, 13])
    elapsed = time.perf_counter() - started
    assert len(out) == 3
    for target, source, mask in zip(out, images, masks, strict=True):
        assert target.shape == source.shape, "the target has the source's size"
        assert_outside_exact(target, source, mask)  # compared before any (lossy) encoding
        assert np.abs(target.astype(int) - source)[mask > 0].mean() > 1, "the region is repainted"
    again = pbe.repaint(images, masks, exemplars, [11, 12, 13])
    assert all(np.array_equal(a, b) for a, b in zip(out, again, strict=True)), "same seed, same output"
    other = pbe.repaint(images, masks, exemplars, [11, 99, 13])
    assert np.array_equal(other[0], out[0]) and np.array_equal(other[2], out[2])
    assert not np.array_equal(other[1], out[1]), "the seed is per item"
    print(f"tiny Paint-by-Example, 3 items at 64 px, 2 steps: {elapsed:.2f} s")


def test_an_item_does_not_depend_on_its_batch(pbe_folder, pbe):
    images, masks, exemplars = items(3)
    batched = pbe.repaint(images, masks, exemplars, [5, 6, 7])
    single = PaintByExampleConfig(model=str(pbe_folder), resolution=64, steps=2, batch_size=1).create()
    alone = single.repaint(images[1:2], masks[1:2], exemplars[1:2], [6])[0]
    # batched kernels may round differently in the last float bit: at most 1 level after uint8 rounding
    assert np.abs(alone.astype(int) - batched[1]).max() <= 1


def test_the_backend_calls_the_pipeline_as_documented(pbe_folder, pbe):
    """Raw backend output (before the composite) against diffusers' pipeline built in memory from the
    same seeded weights and called the documented way on the square window: PIL image, white = repaint
    mask, the exemplar squashed to the processor's size, CPU generator. Outside the window: the source."""
    import torch
    from PIL import Image

    image = scene(5, 96, 128)
    mask = ellipse_mask(96, 128, (70, 40), (20, 14))  # box 47 x 35 px: a 94 px square window, enlarged to 64
    exemplar = scene(6, 30, 24)
    raw = pbe._repaint([image], [mask], [exemplar], [3])[0]
    pipe = tiny_paint_by_example_pipeline()
    pipe.set_progress_bar_config(disable=True)
    x0, y0, side = 23, 0, 94  # centred on the box (x 47..93, y 23..57), shifted down into the image
    assert square_window(mask, 2.0) == Window(x0, y0, side)
    window, window_mask = image[y0:y0 + side, x0:x0 + side], mask[y0:y0 + side, x0:x0 + side]
    small = cv2.resize(window, (64, 64), interpolation=cv2.INTER_AREA)
    small_mask = cv2.resize(window_mask * 255, (64, 64), interpolation=cv2.INTER_AREA) > 0
    squashed = cv2.resize(exemplar, (32, 32), interpolation=cv2.INTER_CUBIC)  # the processor's crop size
    expected = pipe(example_image=Image.fromarray(squashed), image=Image.fromarray(small),
                    mask_image=Image.fromarray(small_mask.astype(np.uint8) * 255), num_inference_steps=2,
                    guidance_scale=5.0, generator=[torch.Generator("cpu").manual_seed(3)], output_type="np").images[0]
    expected = cv2.resize(np.rint(expected * 255).clip(0, 255).astype(np.uint8), (side, side),
                          interpolation=cv2.INTER_CUBIC)
    assert raw.shape == image.shape
    assert np.array_equal(raw[:, :x0], image[:, :x0]) and np.array_equal(raw[:, x0 + side:], image[:, x0 + side:])
    assert np.abs(raw[y0:y0 + side, x0:x0 + side].astype(int) - expected).max() <= 1


def test_an_empty_mask_returns_the_source_without_a_model_call(pbe):
    images, masks, exemplars = items(2)
    masks[0] = np.zeros_like(masks[0])
    out = pbe.repaint(images, masks, exemplars, [1, 2])
    assert np.array_equal(out[0], images[0]) and out[0] is not images[0]
    with pytest.raises(ValueError, match="one of each per item"):
        pbe.repaint(images, masks, exemplars, [1])
    with pytest.raises(ValueError, match="mask .* does not match"):
        pbe.repaint(images[:1], masks[1:], exemplars[:1], [1])


def test_a_hub_id_loads_from_the_local_cache_only(pbe_folder, tmp_path, monkeypatch):
    import shutil

    from huggingface_hub import constants

    from ieiw.backends.models import ModelNotFoundError

    cache = tmp_path / "hub"
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--tiny-org--tiny-pbe"
    shutil.copytree(pbe_folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = PaintByExampleConfig(model="tiny-org/tiny-pbe", resolution=64, steps=1)
    assert config.preflight() == [] and config.model_digests() == {"model": commit}
    images, masks, exemplars = items(1)
    out = config.create().repaint(images, masks, exemplars, [0])[0]
    assert_outside_exact(out, images[0], masks[0])

    missing = PaintByExampleConfig(model="nobody/no-such-paint-by-example")
    [line] = missing.preflight()
    assert "repaint backend paint-by-example" in line and "nobody/no-such-paint-by-example" in line
    assert "local Hugging Face cache" in line
    with pytest.raises(ModelNotFoundError, match="nobody/no-such-paint-by-example.*never downloaded"):
        missing.create()
    folder = tmp_path / "no-such-folder"
    assert str(folder) in PaintByExampleConfig(model=str(folder)).preflight()[0]
    with pytest.raises(ModelNotFoundError, match="no-such-folder"):
        PaintByExampleConfig(model=str(folder)).create()
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    with pytest.raises(ModelNotFoundError, match="empty-folder"):
        PaintByExampleConfig(model=str(empty)).create()


# -- embedded: Poisson blending ---------------------------------------------------------------------
def photo_and_exemplar():
    skimage_data = pytest.importorskip("skimage.data")
    return skimage_data.astronaut(), np.ascontiguousarray(skimage_data.coffee()[60:300, 180:420])


def gradients(image: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return np.stack([cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1)], -1)


def test_embedded_pastes_the_exemplar_with_poisson_blending():
    photo, cup = photo_and_exemplar()
    mask = ellipse_mask(512, 512, (300, 330), (70, 50), dilate=4)
    repainter = EmbeddedRepaintConfig().create()
    assert repainter.embedded and repainter.name == "poisson-clone-v1" and repainter.model is None
    out = repainter.repaint([photo], [mask], [cup], [0])[0]
    assert_outside_exact(out, photo, mask)
    # inside (away from the seam) the result has the exemplar's gradients, not the source's
    x, y, w, h = cv2.boundingRect(mask)
    assert repainter.config.fit == "stretch", "the default squashes the whole exemplar, as Paint-by-Example does"
    fitted = fit_to_box(cup, w + 8, h + 8, "stretch")[4:-4, 4:-4]  # fitted to the box grown by CLONE_GROW px
    core = cv2.erode(mask, np.ones((15, 15), np.uint8))[y : y + h, x : x + w] > 0
    got = gradients(out[y : y + h, x : x + w])[core].ravel()
    want = gradients(fitted)[core].ravel()
    before = gradients(photo[y : y + h, x : x + w])[core].ravel()
    assert np.corrcoef(got, want)[0, 1] > 0.98 and abs(np.corrcoef(got, before)[0, 1]) < 0.2
    assert out is not photo and np.array_equal(repainter.repaint([photo], [mask], [cup], [99])[0], out)


def test_embedded_fit_cover_keeps_the_aspect_and_stretch_does_not():
    exemplar = np.zeros((20, 40, 3), np.uint8)
    exemplar[:, :20] = 255  # left half white
    cover = fit_to_box(exemplar, 20, 20, "cover")  # scaled to 20x40, centre-cropped: half white, half black
    stretch = fit_to_box(exemplar, 20, 20, "stretch")
    assert cover.shape == stretch.shape == (20, 20, 3)
    assert cover[:, :8].min() == 255 and cover[:, 12:].max() == 0
    assert stretch[:, :9].min() == 255 and stretch[:, 11:].max() == 0
    assert fit_to_box(exemplar, 7, 13, "cover").shape == (13, 7, 3)


@pytest.mark.parametrize(
    "box",
    [(0, 0, 100, 80), (412, 0, 512, 90), (0, 430, 120, 512), (400, 420, 512, 512), (200, 0, 300, 60),
     (0, 0, 512, 512), (0, 200, 4, 300), (150, 200, 260, 300)],
    ids=["top-left", "top-right", "bottom-left", "bottom-right", "top", "whole-image", "edge-strip", "inside"],
)
def test_embedded_regions_at_the_image_border(box):
    # mid-dark texture and a bright striped exemplar: no clipping at 0 or 255 hides a repainted pixel
    source = (40 + scene(7, 512, 512) // 3).astype(np.uint8)
    exemplar = np.full((90, 120, 3), 200, np.uint8)
    exemplar[::6] = 240
    exemplar[:, ::9] = 160
    left, top, right, bottom = box
    mask = np.zeros(source.shape[:2], np.uint8)
    mask[top:bottom, left:right] = 1
    out = EmbeddedRepaintConfig(feather=0).create().repaint([source], [mask], [exemplar], [0])[0]
    assert_outside_exact(out, source, mask)
    changed = np.any(out != source, axis=2)
    assert changed[mask > 0].mean() > 0.95
    fitted = fit_to_box(exemplar, right - left + 8, bottom - top + 8, "stretch")[4:-4, 4:-4]
    sides = {"top": (top == 0, np.s_[top, left:right], np.s_[0, :]),
             "bottom": (bottom == 512, np.s_[bottom - 1, left:right], np.s_[-1, :]),
             "left": (left == 0, np.s_[top:bottom, left], np.s_[:, 0]),
             "right": (right == 512, np.s_[top:bottom, right - 1], np.s_[:, -1])}
    for side, (at_border, line, in_box) in sides.items():
        if at_border:
            # the region's rows/columns on the image border are repainted (plain seamlessClone keeps
            # them) and take the exemplar's own values there, not the old object's
            assert changed[line].mean() > 0.95, side
            if min(right - left, bottom - top) < 10:
                continue  # a strip a few px wide is as close to the context on its other side
            error = np.abs(out[line].astype(int) - fitted[in_box]).mean()
            assert error < 0.25 * np.abs(source[line].astype(int) - fitted[in_box]).mean(), side


def test_plain_seamless_clone_leaves_a_border_region_partly_unpainted():
    """Why poisson_paste pads: OpenCV clears the mask's outer ring and keeps its rectangle's edge."""
    photo, cup = photo_and_exemplar()
    mask = np.zeros(photo.shape[:2], np.uint8)
    mask[0:80, 0:100] = 255
    canvas = photo.copy()
    canvas[0:80, 0:100] = fit_to_box(cup, 100, 80)
    plain = cv2.seamlessClone(canvas, photo, mask.copy(), (50, 40), cv2.NORMAL_CLONE)  # it zeroes its mask's rim in place
    assert np.array_equal(plain[0, 0:100], photo[0, 0:100]) and np.array_equal(plain[0:80, 0], photo[0:80, 0])
    ours = poisson_paste(photo, mask, cup)
    assert np.any(ours[0, 0:100] != photo[0, 0:100], axis=1).mean() > 0.8


def test_embedded_on_tiny_images_and_thin_masks():
    rng = np.random.default_rng(3)
    for h, w in [(1, 1), (2, 5), (7, 3), (16, 16)]:
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        mask = np.zeros((h, w), np.uint8)
        mask[h // 2, :] = 1
        out = EmbeddedRepaintConfig().create().repaint([image], [mask], [rng.integers(0, 256, (5, 9, 3), np.uint8)], [0])[0]
        assert_outside_exact(out, image, mask)
