"""Paint-by-Example fed as the original feeds it (issue #23, parts 3-4): a square window around the
region of a large photo, resized to the model's resolution and put back at native resolution, and the
exemplar cut with its natural background and squashed whole to the image processor's size."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from ieiw_testing import tiny_paint_by_example_folder
from test_repaint import assert_outside_exact, ellipse_mask, scene

from ieiw.backends.repaint import PaintByExampleConfig, exemplar_crop, square_window

HEIGHT, WIDTH = 2250, 1500  # an SA-1B-sized portrait photo


@pytest.fixture(autouse=True)
def hash_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IEIW_CACHE_DIR", str(tmp_path / "ieiw-cache"))


@pytest.fixture(scope="module")
def pbe_folder(tmp_path_factory):
    return tiny_paint_by_example_folder(tmp_path_factory.mktemp("models") / "tiny-paint-by-example")


class Spy:
    """Wraps a pipeline: records what each call receives, then calls it (or an ``ideal`` painter)."""

    def __init__(self, pipe, ideal: bool = False):
        self.pipe, self.ideal, self.calls = pipe, ideal, []
        self.feature_extractor = pipe.feature_extractor

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        if not self.ideal:
            return self.pipe(**kwargs)
        # A perfect model: the exemplar it is given, resized into the mask's box at the model's resolution.
        images = (kwargs["image"].permute(0, 2, 3, 1).numpy() + 1.0) / 2.0
        for out, example, mask in zip(images, kwargs["example_image"], kwargs["mask_image"][:, 0].numpy(), strict=True):
            x, y, w, h = cv2.boundingRect((mask > 0).astype(np.uint8))
            out[y:y + h, x:x + w] = cv2.resize(example, (w, h), interpolation=cv2.INTER_AREA) / 255.0
        return SimpleNamespace(images=images)


def one_percent_region() -> tuple[np.ndarray, np.ndarray]:
    image = scene(3, HEIGHT, WIDTH)
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    mask[1400:1625, 300:450] = 1  # 150 x 225 px = 1 % of the photo
    return image, cv2.dilate(mask, np.ones((15, 15), np.uint8))  # the builder's dilation: box 164 x 239


def checkerboard(side: int, cell: int) -> np.ndarray:
    ys, xs = np.mgrid[:side, :side]
    board = (((ys // cell) + (xs // cell)) % 2 * 200 + 28).astype(np.uint8)
    return np.repeat(board[..., None], 3, axis=2)


def high_frequency(image: np.ndarray) -> float:
    return float(np.abs(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.CV_32F)).mean())


def test_the_pipeline_gets_a_square_window_around_the_region_and_only_the_mask_changes(pbe_folder):
    image, mask = one_percent_region()
    repainter = PaintByExampleConfig(model=str(pbe_folder), resolution=64, steps=2, device="cpu").create()
    spy = repainter.pipe = Spy(repainter.pipe)
    out = repainter.repaint([image], [mask], [scene(9, 80, 60)], [7])[0]
    # the window, worked out by hand: the box (293..457, 1393..1632) has long side 239 -> side 478,
    # centred on the box's centre (375, 1512)
    x0, y0, side = 375 - 239, 1512 - 239, 478
    assert square_window(mask, 2.0).side == side and square_window(mask, 2.0).left == x0
    [call] = spy.calls
    assert call["height"] == call["width"] == 64 and tuple(call["image"].shape) == (1, 3, 64, 64)
    expected = cv2.resize(image[y0:y0 + side, x0:x0 + side], (64, 64), interpolation=cv2.INTER_AREA)
    got = np.rint((call["image"][0].permute(1, 2, 0).numpy() + 1) * 127.5)
    assert np.abs(got - expected).max() <= 1, "the pipeline sees the square window, not the squashed photo"
    got_mask = call["mask_image"][0, 0].numpy() > 0
    expected_mask = cv2.resize(mask[y0:y0 + side, x0:x0 + side] * 255, (64, 64), interpolation=cv2.INTER_AREA) > 0
    assert np.array_equal(got_mask, expected_mask) and 0.15 < got_mask.mean() < 0.25  # 164 x 239 in 478 x 478
    assert_outside_exact(out, image, mask)
    assert np.abs(out.astype(int) - image)[mask > 0].mean() > 1, "the region is repainted"


def test_a_high_frequency_exemplar_keeps_its_detail_in_a_small_region(pbe_folder):
    image, mask = one_percent_region()
    exemplar = checkerboard(224, 6)
    repainter = PaintByExampleConfig(model=str(pbe_folder), resolution=512, steps=1, device="cpu",
                                     exemplar_size=224).create()
    repainter.pipe = Spy(repainter.pipe, ideal=True)
    out = repainter.repaint([image], [mask], [exemplar], [0])[0]
    assert_outside_exact(out, image, mask)
    x, y, w, h = cv2.boundingRect(mask)
    core = slice(y + 20, y + h - 20), slice(x + 20, x + w - 20)
    ideal = cv2.resize(exemplar, (w, h), interpolation=cv2.INTER_AREA)[20:-20, 20:-20]  # pasted at native size
    kept = high_frequency(out[core]) / high_frequency(ideal)
    # the old path (the whole photo squashed to 512) drew it in a 56 x 56 px box and upscaled it 3-4x: 0.28
    print(f"detail kept: {kept:.2f}")
    assert kept > 0.6, f"only {kept:.2f} of the exemplar's detail survived"


def test_the_exemplar_is_the_padded_box_with_its_background_squashed_whole(pbe_folder):
    photo = scene(4, 300, 200)
    photo[100:260, 80:120] = (128, 128, 128)
    photo[100:140, 80:120] = (255, 0, 0)  # a tall object: red top, blue bottom
    photo[220:260, 80:120] = (0, 0, 255)
    crop = exemplar_crop(photo, (80, 100, 40, 160), pad=10)
    assert crop.shape == (180, 60, 3) and np.array_equal(crop, photo[90:270, 70:130]), "natural background"
    assert exemplar_crop(photo, (5, 290, 40, 10), pad=10).shape == (20, 55, 3), "clipped at the border"

    repainter = PaintByExampleConfig(model=str(pbe_folder), resolution=64, steps=1, device="cpu").create()
    spy = repainter.pipe = Spy(repainter.pipe)
    image = scene(5, 64, 64)
    repainter.repaint([image], [ellipse_mask(64, 64, (32, 32), (10, 10))], [crop], [1])
    [example] = spy.calls[0]["example_image"]
    assert example.shape == (32, 32, 3), "squashed to the processor's crop size (224 for the real model)"
    seen = spy.feature_extractor(images=[example], return_tensors="np").pixel_values[0]  # what CLIP sees

    def colours(pixels):
        mean = np.array(spy.feature_extractor.image_mean)[:, None, None]
        std = np.array(spy.feature_extractor.image_std)[:, None, None]
        rgb = (pixels * std + mean).transpose(1, 2, 0)
        return rgb[:3].reshape(-1, 3).mean(0), rgb[-3:].reshape(-1, 3).mean(0)

    top, bottom = colours(seen)
    assert top[0] > 0.6 > top[2] and bottom[2] > 0.6 > bottom[0], "the whole tall object reaches the encoder"
    # the processor alone (short side resize + centre crop) keeps the middle third: both ends lost
    top, bottom = colours(spy.feature_extractor(images=[crop], return_tensors="np").pixel_values[0])
    assert top[0] < 0.6 and bottom[2] < 0.6


def test_the_replacement_builder_paints_the_padded_exemplar_cut_from_its_own_image(tmp_path):
    """The builder's call site: the exemplar region's row of the region table -> its image -> exemplar_crop."""
    import pyarrow as pa

    from ieiw.builders.region_sources import SA1BSourceConfig
    from ieiw.builders.replacement import ReplacementBuilder, ReplacementConfig
    from ieiw.imageio import encode
    from ieiw.schemas.units import BuildContext

    photo = scene(8, 120, 90)
    (tmp_path / "a.png").write_bytes(encode(photo, "png"))
    config = ReplacementConfig(sources=[SA1BSourceConfig(root=tmp_path)], repaint={"backend": "embedded",
                                                                                   "exemplar_pad": 6})
    builder = ReplacementBuilder(config, BuildContext(root=tmp_path, out_dir=tmp_path / "out", unit_size=4))
    regions = pa.Table.from_pylist([{"dataset": "sa-1b", "image_id": "a", "image_path": str(tmp_path / "a.png"),
                                     "width": 90, "height": 120, "source_file": "a.json", "orientation": "match",
                                     "bbox": [80, 30, 10, 50]}])
    images: dict = {}
    got = builder._exemplar(regions.to_pylist()[0], images)
    assert np.array_equal(got, photo[24:86, 74:90]), "box + 6 px of natural background, clipped at the right border"
    assert list(images) == [str(tmp_path / "a.png")], "the image is loaded once per unit"
