"""Region sources for replacement (issue #9 item 1-2, 6): SA-1B JSON with COCO RLE, Open Images CSV + PNG
masks (class file with and without header), SAM automatic mask generation (a tiny random SAM through the
real generator), embedded proposals, the region choice policy, and the bundled sample generator."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import pickle
import struct
import zipfile
import zlib
from collections import Counter
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pytest
from ieiw_testing import PLANTED, plant_outside
from PIL import Image
from pycocotools import mask as mask_utils

from ieiw.schemas.units import SourceRecordError
from ieiw.sources import openimages
from ieiw.sources.openimages import (
    OpenImagesFormatError,
    OpenImagesSource,
    decode_oi_mask,
    read_class_descriptions,
    write_class_descriptions,
)
from ieiw.backends.regions import EmbeddedRegionProposer, EmbeddedRegionsConfig, SamRegionProposer, SamRegionsConfig
from ieiw.sources.image_folder import ImageFolderSource
from ieiw.builders.region_policy import REASONS, RegionPolicy, choose
from ieiw.builders.region_sources import ImageFolderSourceConfig, OpenImagesSourceConfig, SA1BSourceConfig
from ieiw.sources.regions import Region, rle_runs
from ieiw.samples.replacement import (
    MARKER,
    OI_CLASSES,
    ensure_replace_samples,
    make_replace_samples,
    open_images_classes,
)
from ieiw.sources.sa1b import SA1BSource
from ieiw.samples.base import IncompleteSample
from ieiw.imageio import decode, downscale, encode

SA1B_IMAGE_KEYS = {"image_id", "width", "height", "file_name"}
SA1B_ANN_KEYS = {"id", "segmentation", "bbox", "area", "predicted_iou", "stability_score", "crop_box", "point_coords"}
OI_HEADER = "MaskPath,ImageID,LabelName,BoxID,BoxXMin,BoxXMax,BoxYMin,BoxYMax,PredictedIoU,Clicks"


@pytest.fixture(scope="session")
def replace_sample(tmp_path_factory) -> Path:
    """The bundled sample at its default size (30 images per format, 320x240), made once."""
    root = tmp_path_factory.mktemp("replace") / "replace-sample"
    assert ensure_replace_samples(root)
    return root


# -- SA-1B ----------------------------------------------------------------------------------------
def random_masks(rng: np.random.Generator, height: int, width: int, count: int) -> list[np.ndarray]:
    """Blobs with holes, several parts, one touching the border: what RLE has to get right."""
    masks = []
    for index in range(count):
        mask = np.zeros((height, width), np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
            axes = (int(rng.integers(3, width // 3)), int(rng.integers(3, height // 3)))
            cv2.ellipse(mask, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        if index % 2:
            cv2.circle(mask, (int(mask.nonzero()[1].mean()), int(mask.nonzero()[0].mean())), 2, 0, -1)  # a hole
        if index == 0:
            mask[: height // 4, : width // 4] = 1
        masks.append(mask)
    return masks


def write_sa1b_image(root: Path, number: int, pixels: np.ndarray, masks: list[np.ndarray], rng) -> dict:
    """One SA-1B image, field for field as docs/formats.md gives it."""
    height, width = pixels.shape[:2]
    (root / f"sa_{number}.jpg").write_bytes(encode(pixels, "jpeg"))
    annotations = []
    for index, mask in enumerate(masks):
        rle = mask_utils.encode(np.asfortranarray(mask))
        ys, xs = np.nonzero(mask)
        annotations.append({
            "id": number * 1000 + index,
            "segmentation": {"size": [height, width], "counts": rle["counts"].decode()},
            "bbox": [float(v) for v in mask_utils.toBbox(rle)],
            "area": int(mask_utils.area(rle)),
            "predicted_iou": float(rng.uniform(0.8, 1.0)),
            "stability_score": float(rng.uniform(0.9, 1.0)),
            "crop_box": [0, 0, width, height],
            "point_coords": [[float(xs[0]), float(ys[0])]],
        })
    doc = {"image": {"image_id": number, "width": width, "height": height, "file_name": f"sa_{number}.jpg"},
           "annotations": annotations}
    (root / f"sa_{number}.json").write_text(json.dumps(doc))
    return doc


def test_sa1b_fixture_decodes_to_the_encoded_masks(tmp_path):
    rng = np.random.default_rng(3)
    written = {}
    for number, (height, width) in enumerate([(120, 160), (97, 131), (64, 64)], start=1):
        pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        masks = random_masks(rng, height, width, 5)
        written[str(number)] = (write_sa1b_image(tmp_path, number, pixels, masks, rng), masks)
    source = SA1BSource(tmp_path)
    assert source.count() == 3 and source.problems() == []
    entries = source.read(0, 3)
    assert [e.image_id for e in entries] == ["1", "2", "3"]  # sa_1, sa_2, sa_3 by path
    for entry in entries:
        doc, masks = written[entry.image_id]
        assert set(doc["image"]) == SA1B_IMAGE_KEYS and all(set(a) == SA1B_ANN_KEYS for a in doc["annotations"])
        assert entry.failures == () and len(entry.regions) == len(masks)
        assert (entry.width, entry.height) == (doc["image"]["width"], doc["image"]["height"])
        for region, mask, ann in zip(entry.regions, masks, doc["annotations"], strict=True):
            assert region.mask.dtype == bool and region.mask.shape == mask.shape
            assert np.array_equal(region.mask, mask.astype(bool))
            assert region.area == int(mask.sum()) == ann["area"]
            assert list(region.bbox) == [int(v) for v in ann["bbox"]]
            assert region.record_id == f"{entry.image_id}:{ann['id']}"
            assert region.predicted_iou == ann["predicted_iou"] and region.stability_score == ann["stability_score"]
            assert region.label is None and region.label_source is None and region.dataset == "sa-1b"
            assert region.extra["crop_box"] == ann["crop_box"] and region.extra["point_coords"] == ann["point_coords"]
            assert region.rle() == ann["segmentation"]
        image = source.load_image(entry)
        assert image.pixels.shape == (entry.height, entry.width, 3) and not image.reencoded


def test_rle_runs_parse_pycocotools_strings():
    rng = np.random.default_rng(0)
    for mask in random_masks(rng, 90, 70, 6) + [np.zeros((5, 4), np.uint8), np.ones((5, 4), np.uint8)]:
        rle = mask_utils.encode(np.asfortranarray(mask))
        runs = rle_runs(rle["counts"].decode())
        flat = np.repeat(np.arange(len(runs)) % 2, runs).astype(np.uint8)
        assert np.array_equal(flat.reshape(mask.shape[::-1]).T, mask)  # column-major, as COCO


def sa1b_bad_records(root: Path) -> None:
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
    masks = random_masks(rng, 40, 50, 2)
    write_sa1b_image(root, 1, pixels, masks, rng)  # good
    doc = write_sa1b_image(root, 2, pixels, masks, rng)
    good = doc["annotations"][0]
    anns = [good,
            dict(good, id=21, segmentation={"size": [50, 40], "counts": good["segmentation"]["counts"]}),
            dict(good, id=22, segmentation={"size": [40, 50], "counts": ""}),
            dict(good, id=23, segmentation={"size": [40, 50], "counts": "0"}),
            dict(good, id=24, segmentation={"size": [40, 50], "counts": good["segmentation"]["counts"][:-2]}),
            dict(good, id=25, segmentation={"size": [40, 50], "counts": "\x7f\x7f"}),
            dict(good, id=26, segmentation=[[1, 2, 3, 4]]),
            dict(good, id=27, segmentation={"size": [40, 50],
                                            "counts": mask_utils.encode(np.zeros((40, 50), np.uint8, order="F"))
                                            ["counts"].decode()}),
            "not an annotation"]
    (root / "sa_2.json").write_text(json.dumps(dict(doc, annotations=anns)))
    (root / "sa_3.jpg").write_bytes(encode(pixels, "jpeg"))
    (root / "sa_3.json").write_text('{"image": {"image_id": 3, "width": 50, "height": 40,')  # truncated
    (root / "sa_4.json").write_text(json.dumps({"image": {"image_id": 4, "width": 50, "height": 40,
                                                          "file_name": "sa_4.jpg"}, "annotations": []}))  # no jpg
    (root / "sa_5.json").write_text(json.dumps([1, 2]))
    (root / "sa_6.jpg").write_bytes(encode(pixels, "jpeg"))
    (root / "sa_6.json").write_text(json.dumps({"image": {"image_id": 6, "width": "50", "height": 40},
                                                "annotations": []}))
    (root / "sa_7.jpg").write_bytes(encode(pixels[:20], "jpeg"))  # 50x20 where the JSON says 50x40
    write_sa1b_image(root, 7, pixels, masks, rng)
    (root / "sa_7.jpg").write_bytes(encode(pixels[:20], "jpeg"))
    (root / "sa_8.jpg").write_bytes(b"<html>not an image</html>")
    (root / "sa_8.json").write_text((root / "sa_1.json").read_text().replace('"image_id": 1', '"image_id": 8')
                                    .replace("sa_1.jpg", "sa_8.jpg"))


def test_sa1b_bad_records_have_named_reasons(tmp_path):
    sa1b_bad_records(tmp_path)
    source = SA1BSource(tmp_path)
    entries = {e.image_id: e for e in source.read(0, source.count())}
    assert len(entries["1"].regions) == 2 and not entries["1"].failures
    two = entries["2"]
    assert [r.record_id for r in two.regions] == ["2:2000"]  # the good annotation still reads
    reasons = {f.record_id: f.reason for f in two.failures}
    assert reasons == {"2:21": "rle_size_mismatch", "2:22": "bad_rle", "2:23": "bad_rle", "2:24": "bad_rle",
                       "2:25": "bad_rle", "2:26": "bad_segmentation", "2:27": "empty_mask", "2:#8": "bad_annotation"}
    for f in two.failures:
        assert f.file == str(tmp_path / "sa_2.json") and f"record {f.record_id}:" in str(f)
    mismatch = next(f for f in two.failures if f.reason == "rle_size_mismatch")
    assert "[50, 40]" in mismatch.message and "50x40" in mismatch.message
    (bad_json,) = entries["sa_3"].failures
    assert bad_json.reason == "bad_json" and bad_json.file == str(tmp_path / "sa_3.json")
    assert "line 1 column" in bad_json.message and "char" in bad_json.message
    assert [f.reason for f in entries["4"].failures] == ["missing_image"]
    assert str(tmp_path / "sa_4.jpg") in entries["4"].failures[0].message
    assert [f.reason for f in entries["sa_5"].failures] == ["bad_layout"]
    assert [f.reason for f in entries["6"].failures] == ["bad_image_info"]
    assert all(not entries[k].regions for k in ("sa_3", "4", "sa_5", "6"))
    with pytest.raises(SourceRecordError) as size:
        source.load_image(entries["7"])
    assert size.value.failure.reason == "image_size_mismatch" and size.value.failure.record_id == "7"
    with pytest.raises(SourceRecordError) as unreadable:
        source.load_image(entries["8"])
    assert unreadable.value.failure.reason == "unreadable_image"
    assert unreadable.value.failure.file == str(tmp_path / "sa_8.jpg")


def test_sa1b_reads_shard_folders_in_path_order(tmp_path):
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
    for shard, number in (("sa_000001", 9), ("sa_000000", 12), ("sa_000000", 10)):
        (tmp_path / shard).mkdir(exist_ok=True)
        write_sa1b_image(tmp_path / shard, number, pixels, random_masks(rng, 30, 40, 1), rng)
    source = SA1BSource(tmp_path, limit=2)
    assert [e.image_id for e in source.read(0, source.count())] == ["10", "12"]
    assert SA1BSource(tmp_path).count() == 3


# -- Open Images ----------------------------------------------------------------------------------
def write_open_images(root: Path, header: bool, mask_scale: float = 1.0, zipped: bool = False) -> dict:
    """Two images, three masks, in Open Images' layout; returns the masks by MaskPath."""
    rng = np.random.default_rng(5)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    classes = {"/m/011k07": "Tortoise", "/m/0cmf2": "Airplane", "/m/01yrx": "Cat"}
    write_class_descriptions(root / "oidv7-class-descriptions.csv", classes, header=header)
    rows, truth = [], {}
    archive = zipfile.ZipFile(root / "masks" / "train-masks-0.zip", "w") if zipped else None
    for image_id, labels in (("0a1b2c3d4e5f6071", ["/m/011k07", "/m/01yrx"]), ("0f00000000000001", ["/m/0cmf2"])):
        height, width = 60, 80
        (root / "images" / f"{image_id}.jpg").write_bytes(encode(rng.integers(0, 255, (height, width, 3),
                                                                              dtype=np.uint8), "jpeg"))
        for index, mid in enumerate(labels):
            mask = np.zeros((height, width), np.uint8)
            cv2.rectangle(mask, (10 + 20 * index, 8), (30 + 20 * index, 40), 255, -1)
            stored = mask
            if mask_scale != 1.0:
                stored = cv2.resize(mask, (round(width * mask_scale), round(height * mask_scale)),
                                    interpolation=cv2.INTER_NEAREST)
            box_id = f"{index:08x}"
            name = f"{image_id}_{mid.replace('/', '')}_{box_id}.png"
            data = encode(stored, "png")
            if archive is not None:
                archive.writestr(name, data)
            else:
                (root / "masks" / name).write_bytes(data)
            rows.append(f"{name},{image_id},{mid},{box_id},0.125,0.375,0.133333,0.666667,0.87,"
                        "0.2 0.3 1;0.25 0.5 1;0.9 0.9 0")
            truth[name] = (stored, classes[mid])
    if archive is not None:
        archive.close()
    (root / "train-annotations-object-segmentation.csv").write_text(OI_HEADER + "\n" + "\n".join(rows) + "\n")
    return truth


@pytest.mark.parametrize("header", [True, False], ids=["v7-header", "boxable-no-header"])
def test_open_images_reads_class_files_with_and_without_header(tmp_path, header):
    truth = write_open_images(tmp_path, header)
    assert read_class_descriptions(tmp_path / "oidv7-class-descriptions.csv") == {
        "/m/011k07": "Tortoise", "/m/0cmf2": "Airplane", "/m/01yrx": "Cat"}
    source = OpenImagesSource(tmp_path)
    assert source.problems() == [] and source.count() == 2
    entries = source.read(0, 2)
    regions = [r for e in entries for r in e.regions]
    assert not [f for e in entries for f in e.failures]
    assert [r.label for r in regions] == ["Tortoise", "Cat", "Airplane"]
    assert {r.label_source for r in regions} == {"open-images"} and {r.dataset for r in regions} == {"open-images"}
    for region in regions:
        stored, _ = truth[region.extra["mask_path"]]
        assert np.array_equal(region.mask, stored > 122) and region.area == int((stored > 122).sum())
        assert region.record_id == region.extra["mask_path"][:-4] and region.predicted_iou == 0.87
        assert region.stability_score is None and region.extra["box"] == [0.125, 0.375, 0.133333, 0.666667]
    assert source.load_image(entries[0]).pixels.shape == (60, 80, 3)


def test_open_images_class_file_with_bom_and_bad_rows(tmp_path):
    path = tmp_path / "classes.csv"
    path.write_bytes("\ufeffLabelName,DisplayName\n/m/011k07,Tortoise\n/m/0x,\"Comma, in name\"\n".encode())
    assert read_class_descriptions(path) == {"/m/011k07": "Tortoise", "/m/0x": "Comma, in name"}
    path.write_text("/m/011k07,Tortoise\n/m/0x,a,b\n")
    with pytest.raises(OpenImagesFormatError, match=r"classes.csv: line 2: expected LabelName,DisplayName"):
        read_class_descriptions(path)


@pytest.mark.parametrize("scale", [0.5, 0.37, 2.0])
def test_open_images_masks_are_resized_nearest_to_the_image(tmp_path, scale):
    write_open_images(tmp_path, header=True, mask_scale=scale)
    entry = OpenImagesSource(tmp_path).read(0, 1)[0]
    for region in entry.regions:
        stored = np.asarray(Image.open(tmp_path / "masks" / region.extra["mask_path"]))
        expected = cv2.resize(stored, (80, 60), interpolation=cv2.INTER_NEAREST) > 122
        assert region.mask.shape == (60, 80) and np.array_equal(region.mask, expected)
        assert region.extra["mask_size"] == (stored.shape[1], stored.shape[0])


def test_open_images_mask_threshold_is_above_122():
    grey = np.array([[0, 122, 123, 255]], np.uint8)
    mask, stored = decode_oi_mask(encode(grey, "png"), 4, 1)
    assert mask.tolist() == [[False, False, True, True]] and stored == (4, 1)
    one_bit = Image.fromarray(grey > 122).convert("1")
    from io import BytesIO
    buffer = BytesIO()
    one_bit.save(buffer, format="PNG")
    assert decode_oi_mask(buffer.getvalue(), 4, 1)[0].tolist() == [[False, False, True, True]]


def test_open_images_masks_read_from_the_release_zips(tmp_path):
    truth = write_open_images(tmp_path, header=True, zipped=True)
    assert not list((tmp_path / "masks").glob("*.png"))
    entries = OpenImagesSource(tmp_path).read(0, 2)
    assert sum(len(e.regions) for e in entries) == 3 and not [f for e in entries for f in e.failures]
    for region in (r for e in entries for r in e.regions):
        assert np.array_equal(region.mask, truth[region.extra["mask_path"]][0] > 122)


def test_open_images_bad_records_have_named_reasons(tmp_path):
    write_open_images(tmp_path, header=False)
    csv_path = tmp_path / "train-annotations-object-segmentation.csv"
    lines = csv_path.read_text().splitlines()
    image = "0a1b2c3d4e5f6071"
    (tmp_path / "masks" / f"{image}_m0_empty.png").write_bytes(encode(np.zeros((60, 80), np.uint8), "png"))
    (tmp_path / "masks" / f"{image}_m0_junk.png").write_bytes(b"junk")
    lines += [
        f"{image}_m0zzz_1.png,{image},/m/0zzz,1,0.1,0.2,0.1,0.2,0.5,",  # line 5
        f"{image}_m011k07_nomask.png,{image},/m/011k07,2,0.1,0.2,0.1,0.2,0.5,",
        f"{image}_m0_empty.png,{image},/m/011k07,3,0.1,0.2,0.1,0.2,,",
        f"{image}_m0_junk.png,{image},/m/011k07,4,0.1,0.2,0.1,0.2,0.5,",
        f"{image}_m011k07_x.png,{image},/m/011k07,5,left,0.2,0.1,0.2,0.5,",
        "ffff000000000000_m011k07_1.png,ffff000000000000,/m/011k07,1,0.1,0.2,0.1,0.2,0.5,",  # no image
        "orphan.png,,/m/011k07",  # line 11: short, no ImageID
    ]
    csv_path.write_text("\n".join(lines) + "\n")
    source = OpenImagesSource(tmp_path)
    entries = {e.image_id: e for e in source.read(0, source.count())}
    first = entries[image]
    assert [r.label for r in first.regions] == ["Tortoise", "Cat"]
    reasons = {f.record_id: (f.reason, f.file) for f in first.failures}
    assert reasons == {
        f"{image}_m0zzz_1": ("unknown_label", f"{csv_path}:5"),
        f"{image}_m011k07_nomask": ("missing_mask", str(tmp_path / "masks" / f"{image}_m011k07_nomask.png")),
        f"{image}_m0_empty": ("empty_mask", str(tmp_path / "masks" / f"{image}_m0_empty.png")),
        f"{image}_m0_junk": ("unreadable_mask", str(tmp_path / "masks" / f"{image}_m0_junk.png")),
        f"{image}_m011k07_x": ("bad_row", f"{csv_path}:9"),
    }
    assert [f.reason for f in entries["ffff000000000000"].failures] == ["missing_image"]
    assert [(f.reason, f.file) for f in entries["<line 11>"].failures] == [("bad_row", f"{csv_path}:11")]
    csv_path.write_text("\n".join(lines[1:]) + "\n")  # no header row
    with pytest.raises(OpenImagesFormatError, match="line 1 is not the mask CSV header"):
        OpenImagesSource(tmp_path).count()
    assert any("not the mask CSV header" in line for line in OpenImagesSource(tmp_path).problems())


def test_open_images_names_outside_the_root_are_failures(tmp_path):
    """An ImageID of ../x or /x, an image or a mask symlinked out of its folder: a named failure each, nothing
    of the file outside is read, the other images still read (docs/formats.md, "Names that become paths")."""
    root = tmp_path / "oi"
    write_open_images(root, header=True)
    planted, _ = plant_outside(tmp_path / "elsewhere", (80, 60), f"{PLANTED}.jpg")
    outside_mask = tmp_path / "elsewhere" / "mask.png"
    mask = np.zeros((60, 80), np.uint8)
    mask[10:40, 10:50] = 255
    outside_mask.write_bytes(encode(mask, "png"))
    (root / "masks" / "evil.png").write_bytes(encode(mask, "png"))  # a good mask: only the image is wrong
    (root / "images" / "linked.jpg").symlink_to(planted)
    (root / "masks" / "linkmask.png").symlink_to(outside_mask)
    csv_path = root / "train-annotations-object-segmentation.csv"
    crafted = {"../../elsewhere/" + PLANTED: 5, str(tmp_path / "elsewhere" / PLANTED): 6, "linked": 7}
    lines = csv_path.read_text().splitlines()
    lines += [f"evil.png,{image_id},/m/011k07,1,0.1,0.2,0.1,0.2,0.5," for image_id in crafted]
    lines.append("linkmask.png,0f00000000000001,/m/011k07,9,0.1,0.2,0.1,0.2,0.5,")  # line 8
    csv_path.write_text("\n".join(lines) + "\n")
    source = OpenImagesSource(root)
    entries = {e.image_id: e for e in source.read(0, source.count())}
    for image_id, line in crafted.items():
        entry = entries[image_id]
        assert not entry.regions, f"{image_id}: regions from a file outside images/"
        assert [(f.reason, f.record_id, f.file) for f in entry.failures] == [
            ("path_outside_root", image_id, f"{csv_path}:{line}")]
        assert image_id in entry.failures[0].message and str(root / "images") in entry.failures[0].message
        assert Path(entry.image_path).resolve() != planted.resolve()
    good = entries["0f00000000000001"]
    assert [r.label for r in good.regions] == ["Airplane"]  # its own mask still reads
    assert [(f.reason, f.record_id, f.file) for f in good.failures] == [
        ("path_outside_root", "linkmask", f"{csv_path}:8")]
    assert len(entries["0a1b2c3d4e5f6071"].regions) == 2
    for region in (r for e in entries.values() for r in e.regions):
        assert Path(region.image_path).resolve() != planted.resolve() and region.extra["mask_path"] != "linkmask.png"


def test_sa1b_names_outside_the_root_are_failures(tmp_path):
    """A file_name of ../x or /x, or an image beside the JSON that is a symlink out of its folder."""
    root = tmp_path / "sa1b"
    root.mkdir()
    rng = np.random.default_rng(4)
    pixels = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    planted, _ = plant_outside(tmp_path / "elsewhere", (64, 48))
    write_sa1b_image(root, 1, pixels, random_masks(rng, 48, 64, 2), rng)  # good
    names = {2: f"../elsewhere/{planted.name}", 3: str(planted), 4: "sa_4.jpg"}
    for number, name in names.items():
        doc = write_sa1b_image(root, number, pixels, random_masks(rng, 48, 64, 2), rng)
        (root / f"sa_{number}.jpg").unlink()
        doc["image"]["file_name"] = name
        (root / f"sa_{number}.json").write_text(json.dumps(doc))
    (root / "sa_4.jpg").symlink_to(planted)  # the name is fine, the file leads out
    source = SA1BSource(root)
    entries = {e.image_id: e for e in source.read(0, source.count())}
    assert len(entries["1"].regions) == 2 and not entries["1"].failures
    for number, name in names.items():
        entry = entries[str(number)]
        assert not entry.regions
        assert [(f.reason, f.record_id, f.file) for f in entry.failures] == [
            ("path_outside_root", str(number), str(root / f"sa_{number}.json"))]
        assert repr(name) in entry.failures[0].message
        assert Path(entry.image_path).resolve() != planted.resolve()


def png_header(width: int, height: int) -> bytes:
    """A PNG declaring ``width`` x ``height`` with no real pixel data: all Pillow's header parse reads."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [20_000, 10_000], ids=["bomb-error", "bomb-warning"])
def test_open_images_decompression_bomb_fails_only_its_image(tmp_path, side):
    """Issue 24 item 7a: a header above Pillow's limit (twice it raises, once it warns) used to raise out of
    read() and fail the whole unit (or pass, to fail at load time); now it is that image's unreadable_image."""
    write_open_images(tmp_path, header=True)
    bomb = "0c00000000000002"
    (tmp_path / "images" / f"{bomb}.jpg").write_bytes(png_header(side, side))
    with (tmp_path / "train-annotations-object-segmentation.csv").open("a") as handle:
        handle.write(f"{bomb}_m011k07_1.png,{bomb},/m/011k07,1,0.1,0.2,0.1,0.2,0.5,\n")
    entries = {e.image_id: e for e in OpenImagesSource(tmp_path).read(0, 3)}
    (failed,) = entries[bomb].failures
    assert failed.reason == "unreadable_image" and failed.file == str(tmp_path / "images" / f"{bomb}.jpg")
    assert "decompression bomb" in failed.message and not entries[bomb].regions
    others = [entries["0a1b2c3d4e5f6071"], entries["0f00000000000001"]]
    assert [len(e.regions) for e in others] == [2, 1] and not [f for e in others for f in e.failures]


def rewrite_zip_member(path: Path, name: str, data: bytes) -> None:
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    members[name] = data
    with zipfile.ZipFile(path, "w") as archive:  # stored, as write_open_images writes it
        for member, content in members.items():
            archive.writestr(member, content)


@pytest.mark.parametrize("zipped", [False, True], ids=["loose", "zip"])
def test_open_images_mask_over_the_size_cap_fails_alone(tmp_path, monkeypatch, zipped):
    """Issue 24 item 7b: a mask file or zip member is read only up to MAX_MASK_BYTES (declared and read)."""
    truth = write_open_images(tmp_path, header=True, zipped=zipped)
    name = min(truth)
    big = encode(np.random.default_rng(0).integers(0, 256, (60, 80), dtype=np.uint8), "png")  # noise: ~5 KB
    assert len(big) > 4000 and all(len(encode(stored, "png")) < 1000 for stored, _ in truth.values())
    if zipped:
        rewrite_zip_member(tmp_path / "masks" / "train-masks-0.zip", name, big)
    else:
        (tmp_path / "masks" / name).write_bytes(big)
    entries = OpenImagesSource(tmp_path).read(0, 2)
    assert sum(len(e.regions) for e in entries) == 3 and not [f for e in entries for f in e.failures]  # 32 MiB
    monkeypatch.setattr(openimages, "MAX_MASK_BYTES", 2000)
    entries = OpenImagesSource(tmp_path).read(0, 2)
    failures = [f for e in entries for f in e.failures]
    assert [(f.record_id, f.reason, f.file) for f in failures] == [
        (name[:-4], "mask_too_large", str(tmp_path / "masks" / name))]
    assert f"{len(big)} bytes" in failures[0].message and "2000-byte cap" in failures[0].message
    assert ("train-masks-0.zip" in failures[0].message) == zipped
    assert sum(len(e.regions) for e in entries) == 2


def test_open_images_corrupt_zip_member_is_an_unreadable_mask(tmp_path):
    """A member whose bytes fail their CRC used to raise out of read(); now it is that mask's failure."""
    truth = write_open_images(tmp_path, header=True, zipped=True)
    path = tmp_path / "masks" / "train-masks-0.zip"
    name = min(truth)
    raw = bytearray(path.read_bytes())
    start = bytes(raw).index(encode(truth[name][0], "png"))  # stored: the member's bytes are the PNG's
    raw[start + 40] ^= 0xFF
    path.write_bytes(bytes(raw))
    entries = OpenImagesSource(tmp_path).read(0, 2)
    failures = [f for e in entries for f in e.failures]
    assert [(f.record_id, f.reason) for f in failures] == [(name[:-4], "unreadable_mask")]
    assert "train-masks-0.zip" in failures[0].message and "CRC" in failures[0].message
    assert sum(len(e.regions) for e in entries) == 2


def test_open_images_mask_of_another_shape_is_refused_not_stretched(tmp_path):
    """Issue 24 item 7c: a mask whose aspect ratio is not its image's (beyond 1 px of rounding per side)
    fails mask_aspect_mismatch instead of being resized into a stretched mask."""
    truth = write_open_images(tmp_path, header=True)
    name = min(truth)
    squashed = cv2.resize(truth[name][0], (80, 30), interpolation=cv2.INTER_NEAREST)
    (tmp_path / "masks" / name).write_bytes(encode(squashed, "png"))
    entries = OpenImagesSource(tmp_path).read(0, 2)
    failures = [f for e in entries for f in e.failures]
    assert [(f.record_id, f.reason, f.file) for f in failures] == [
        (name[:-4], "mask_aspect_mismatch", str(tmp_path / "masks" / name))]
    assert "80x30" in failures[0].message and "80x60" in failures[0].message
    assert sum(len(e.regions) for e in entries) == 2
    # the tolerance: 40x31 for 80x60 is half size with one side 1 px off (resized); 40x33 and 40x32 are not
    mask, stored = decode_oi_mask(encode(np.full((31, 40), 255, np.uint8), "png"), 80, 60)
    assert stored == (40, 31) and mask.shape == (60, 80) and mask.all()
    for rows in (32, 33):
        with pytest.raises(openimages.MaskAspectMismatch, match=f"40x{rows}"):
            decode_oi_mask(encode(np.full((rows, 40), 255, np.uint8), "png"), 80, 60)


def test_open_images_non_finite_and_absurd_numbers_are_bad_rows(tmp_path):
    """Issue 24 item 9: float() takes nan, inf and 1e999; box values and PredictedIoU must be finite and in
    range (boxes [0, 1] give or take 0.01, IoU [0, 1]), else the row fails bad_row naming the column."""
    truth = write_open_images(tmp_path, header=True)
    csv_path = tmp_path / "train-annotations-object-segmentation.csv"
    image, masks = "0a1b2c3d4e5f6071", tmp_path / "masks"
    good = next(n for n in sorted(truth) if n.startswith(image))
    bad = {"iou_nan": ("0.1,0.2,0.1,0.2,nan", "PredictedIoU 'nan'"),
           "iou_inf": ("0.1,0.2,0.1,0.2,inf", "PredictedIoU 'inf'"),
           "iou_overflow": ("0.1,0.2,0.1,0.2,1e999", "PredictedIoU '1e999'"),
           "iou_above": ("0.1,0.2,0.1,0.2,1.5", "PredictedIoU '1.5'"),
           "iou_negative": ("0.1,0.2,0.1,0.2,-0.2", "PredictedIoU '-0.2'"),
           "box_nan": ("NaN,0.2,0.1,0.2,0.5", "BoxXMin 'NaN'"),
           "box_inf": ("0.1,-inf,0.1,0.2,0.5", "BoxXMax '-inf'"),
           "box_far": ("0.1,0.2,1e12,0.2,0.5", "BoxYMin '1e12'"),
           "box_negative": ("0.1,0.2,0.1,-3,0.5", "BoxYMax '-3'")}
    lines = csv_path.read_text().splitlines()
    first_new = len(lines) + 1
    for number, (name, (values, _)) in enumerate(bad.items()):
        lines.append(f"{image}_{name}.png,{image},/m/011k07,{number},{values},")
    for name in ("empty_numbers", "slack"):  # accepted: copies of a good mask
        (masks / f"{image}_{name}.png").write_bytes((masks / good).read_bytes())
    lines.append(f"{image}_empty_numbers.png,{image},/m/011k07,10,,,,,,")
    lines.append(f"{image}_slack.png,{image},/m/011k07,11,-0.005,1.005,0,1,1.0,")
    csv_path.write_text("\n".join(lines) + "\n")
    entry = next(e for e in OpenImagesSource(tmp_path).read(0, 2) if e.image_id == image)
    failures = {f.record_id: f for f in entry.failures}
    assert set(failures) == {f"{image}_{name}" for name in bad}
    for line, (name, (_, named)) in enumerate(bad.items(), start=first_new):
        found = failures[f"{image}_{name}"]
        assert (found.reason, found.file) == ("bad_row", f"{csv_path}:{line}") and named in found.message
        assert "finite number in" in found.message
    regions = {r.record_id: r for r in entry.regions}
    assert len(regions) == 4
    empty = regions[f"{image}_empty_numbers"]
    assert empty.predicted_iou is None and empty.extra["box"] == [None] * 4  # empty cells: None, as stored
    slack = regions[f"{image}_slack"]
    assert slack.predicted_iou == 1.0 and slack.extra["box"] == [-0.005, 1.005, 0.0, 1.0]


def test_sa1b_non_finite_and_absurd_values_fail_their_annotation(tmp_path):
    """Issue 24 item 9: JSON's NaN / Infinity (Python's parser takes them), text, and out-of-range scores or
    stored geometry fail their annotation (bad_score, bad_geometry); null scores are None; an image stating
    more pixels than any decode accepts fails bad_image_info."""
    rng = np.random.default_rng(4)
    pixels = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
    doc = write_sa1b_image(tmp_path, 1, pixels, random_masks(rng, 40, 50, 1), rng)
    good = doc["annotations"][0]
    nan, inf = float("nan"), float("inf")
    scores = {31: {"predicted_iou": nan}, 32: {"stability_score": inf}, 33: {"stability_score": 1.5},
              34: {"predicted_iou": "0.9"}, 35: {"predicted_iou": -inf}, 36: {"predicted_iou": True}}
    geometry = {41: {"bbox": [nan, 0.0, 5.0, 5.0]}, 42: {"bbox": [0.0, 0.0, 1e12, 5.0]}, 43: {"area": nan},
                44: {"area": -1}, 45: {"point_coords": [[1e12, 3.0]]}, 46: {"crop_box": [0, 0, inf, 40]},
                47: {"bbox": [0, 0, -5, 5]}, 48: {"area": 1e30}, 49: {"bbox": [1, 2, 3]}}
    fine = {51: {"predicted_iou": None, "stability_score": None},  # null: unscored, as the format allows
            52: {"predicted_iou": 1.02}}  # SAM's IoU head has no sigmoid: a little above 1 is genuine
    anns = [good] + [{**good, "id": key, **fields} for key, fields in {**scores, **geometry, **fine}.items()]
    (tmp_path / "sa_1.json").write_text(json.dumps(dict(doc, annotations=anns)))
    assert "NaN" in (tmp_path / "sa_1.json").read_text() and "Infinity" in (tmp_path / "sa_1.json").read_text()
    huge = {"image_id": 2, "width": 100_000, "height": 100_000, "file_name": "sa_1.jpg"}
    (tmp_path / "sa_2.json").write_text(json.dumps({"image": huge, "annotations": [good]}))
    entries = {e.image_id: e for e in SA1BSource(tmp_path).read(0, 2)}
    one = entries["1"]
    reasons = {f.record_id: f.reason for f in one.failures}
    assert reasons == {**{f"1:{k}": "bad_score" for k in scores}, **{f"1:{k}": "bad_geometry" for k in geometry}}
    messages = {f.record_id: f.message for f in one.failures}
    assert "predicted_iou nan is not a finite number" in messages["1:31"]
    assert "bbox" in messages["1:42"] and "2 image sizes" in messages["1:42"] and "area" in messages["1:43"]
    kept = {r.record_id: r for r in one.regions}
    assert list(kept) == [f"1:{good['id']}", "1:51", "1:52"]
    assert kept["1:51"].predicted_iou is None and kept["1:51"].stability_score is None
    assert kept["1:52"].predicted_iou == 1.02
    (too_large,) = entries["2"].failures
    assert too_large.reason == "bad_image_info" and "100000x100000" in too_large.message
    assert not entries["2"].regions


# -- the policy -----------------------------------------------------------------------------------
class Untouchable:
    """A mask source that fails if choose() ever decodes it."""

    def __init__(self, mask):
        self.shape = mask.shape

    def load(self):
        raise AssertionError("choose() decoded a mask")


def region(box, image=(100, 100), iou=None, stability=None, index=[0]):
    index[0] += 1
    mask = np.zeros(image, bool)
    x, y, w, h = box
    mask[y:y + h, x:x + w] = True
    made = Region.from_mask(mask, dataset="t", record_id=f"r{index[0]}", image_id="img", image_path=Path("img.jpg"),
                            source_file="t.json", predicted_iou=iou, stability_score=stability)
    return Region(**{**made.__dict__, "mask_source": Untouchable(mask)})


def test_policy_counts_each_skip_under_its_first_reason():
    policy = RegionPolicy(min_area=0.01, max_area=0.5, min_predicted_iou=0.8, min_stability_score=0.9,
                          border="skip", border_margin=2, max_per_image=2)
    regions = [
        region((40, 40, 5, 5)),                      # 25 px = 0.0025: too small
        region((0, 0, 80, 80), iou=0.1),             # 0.64: too large (first reason wins over the score)
        region((20, 20, 20, 20), iou=0.5),           # low predicted IoU
        region((20, 20, 20, 20), iou=0.9, stability=0.5),  # low stability
        region((1, 30, 20, 20)),                     # within 2 px of the left edge
        region((30, 79, 20, 20)),                    # bottom edge: rows 79..98, row 98 is within 2 px
        region((30, 30, 10, 10)),                    # kept candidates: 100, 400, 900 px
        region((50, 10, 20, 20)),
        region((10, 50, 30, 30), iou=None),          # no score: the thresholds do not apply
    ]
    kept, skipped = choose(regions, policy)
    assert skipped == Counter(region_too_small=1, region_too_large=1, low_predicted_iou=1, low_stability=1,
                              touches_border=2, over_per_image_limit=1)
    assert [r.area for r in kept] == [400, 900]  # the two largest, in input order
    assert set(skipped) <= set(REASONS) and sum(skipped.values()) + len(kept) == len(regions)


def test_policy_rank_by_score_and_defaults():
    regions = [region((10, 10, 30, 30), iou=0.90, stability=0.95), region((10, 10, 20, 20), iou=0.99),
               region((10, 10, 25, 25), iou=0.90, stability=0.97), region((10, 10, 40, 40))]
    kept, skipped = choose(regions, RegionPolicy(max_per_image=2, rank="score"))
    assert [r.record_id for r in kept] == [regions[1].record_id, regions[2].record_id]
    assert skipped == Counter(over_per_image_limit=2)
    kept, _ = choose(regions, RegionPolicy(max_per_image=2, rank="area"))
    assert [r.area for r in kept] == [900, 1600]
    assert choose([], RegionPolicy()) == ([], Counter())
    kept, skipped = choose(regions, RegionPolicy(max_per_image=None, border="keep"))
    assert len(kept) == 4 and not skipped
    edge = region((0, 0, 30, 30))
    assert choose([edge], RegionPolicy())[0] == [edge]  # border: keep by default
    assert choose([edge], RegionPolicy(border="skip"))[1] == Counter(touches_border=1)


def test_policy_is_nan_safe():
    """Issue 24 item 9: a comparison with NaN is False, so a NaN score passed every threshold and a NaN share
    every area bound; now a NaN or infinite score fails its threshold, a NaN share is too small, and a NaN score
    ranks as no score (a NaN sort key left the order to chance)."""
    nan, inf = float("nan"), float("inf")
    policy = RegionPolicy(min_area=0.01, max_area=0.5, min_predicted_iou=0.5, min_stability_score=0.5,
                          max_per_image=None)
    regions = [region((20, 20, 20, 20), iou=nan), region((20, 20, 20, 20), iou=0.9, stability=nan),
               region((20, 20, 20, 20), iou=inf), region((20, 20, 20, 20), iou=0.9, stability=0.9),
               region((20, 20, 20, 20))]  # unscored: thresholds do not apply
    kept, skipped = choose(regions, policy)
    assert skipped == Counter(low_predicted_iou=2, low_stability=1) and kept == regions[3:]

    def never(margin: int) -> bool:
        return False

    assert policy.skip_reason(nan, never) == "region_too_small"
    assert RegionPolicy(min_area=0).skip_reason(nan, never) == "region_too_small"
    assert RegionPolicy(min_area=0).skip_reason(0.2, never) is None
    ranked = [region((10, 10, 30, 30), iou=nan), region((10, 10, 20, 20), iou=0.8), region((10, 10, 25, 25), iou=0.9)]
    kept, skipped = choose(ranked, RegionPolicy(max_per_image=2, rank="score"))
    assert kept == ranked[1:] and skipped == Counter(over_per_image_limit=1)


def test_policy_rejects_mixed_images_and_bad_bounds():
    a, b = region((10, 10, 20, 20)), region((10, 10, 20, 20))
    other = Region(**{**b.__dict__, "image_id": "other"})
    with pytest.raises(ValueError, match="one image"):
        choose([a, other], RegionPolicy())
    with pytest.raises(ValueError, match="min_area"):
        RegionPolicy(min_area=0.6, max_area=0.5)
    with pytest.raises(ValueError):
        RegionPolicy(max_per_image=0)


def test_region_pickles_without_its_decoded_mask(tmp_path):
    rng = np.random.default_rng(0)
    write_sa1b_image(tmp_path, 1, rng.integers(0, 255, (300, 400, 3), dtype=np.uint8),
                     random_masks(rng, 300, 400, 1), rng)
    (entry,) = SA1BSource(tmp_path).read(0, 1)
    mask = entry.regions[0].mask
    data = pickle.dumps(entry.regions[0])
    assert len(data) < mask.size // 20  # the RLE travels, not the decoded mask
    assert np.array_equal(pickle.loads(data).mask, mask)
    labelled = entry.regions[0].with_label("cat", "clip")
    assert (labelled.label, labelled.label_source, labelled.record_id) == ("cat", "clip", entry.regions[0].record_id)


# -- SAM ------------------------------------------------------------------------------------------
def tiny_sam(seed: int = 0, size: int = 256):
    """segment-anything's real classes at toy sizes, random weights (0.1-0.2 s per small image on a CPU)."""
    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(seed)
    embed = 32
    return Sam(
        image_encoder=ImageEncoderViT(img_size=size, embed_dim=64, depth=2, num_heads=2, patch_size=16,
                                      out_chans=embed, window_size=4, global_attn_indexes=[1], use_rel_pos=True,
                                      norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), qkv_bias=True, mlp_ratio=2),
        prompt_encoder=PromptEncoder(embed_dim=embed, image_embedding_size=(size // 16, size // 16),
                                     input_image_size=(size, size), mask_in_chans=4),
        mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(
            depth=2, embedding_dim=embed, mlp_dim=64, num_heads=2), transformer_dim=embed, iou_head_depth=2,
            iou_head_hidden_dim=32),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375],
    ).eval()


TINY_SAM = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, device="cpu")


def test_tiny_sam_masks_take_the_sa1b_region_path(tmp_path, replace_sample):
    pytest.importorskip("segment_anything")
    # Random weights give near-identical whole-image masks, which box NMS would fold into one: keep them all.
    # At 160x120: SAM's per-mask RLE of random (noisy) masks costs seconds at 320x240.
    config = SamRegionsConfig(**TINY_SAM, box_nms_thresh=1.0)
    proposer = SamRegionProposer.from_model(config, tiny_sam())
    images = tmp_path / "images"
    images.mkdir()
    for name in ("sa_1.jpg", "sa_2.jpg"):
        pixels = decode((replace_sample / "sa1b" / name).read_bytes()).pixels
        (images / name).write_bytes(encode(downscale(pixels, 160), "png"))
    source = ImageFolderSource(images, config, dataset="sam-test", proposer=proposer)
    entries = source.read(0, source.count())
    assert [e.image_id for e in entries] == ["sa_1", "sa_2"]
    policy = RegionPolicy(min_area=0.0, max_area=1.0, min_predicted_iou=0.0, max_per_image=3, rank="score")
    for entry in entries:
        assert len(entry.regions) > 3 and not entry.failures and entry.pixels.shape == (120, 160, 3)
        for r in entry.regions:
            assert r.predicted_iou is not None and r.stability_score is not None and r.label is None
            assert r.mask.shape == (120, 160) and r.mask.sum() == r.area > 0
            assert r.extra["proposer"] == "sam-vit_h"
        # Written as SA-1B JSON and read back, SAM's regions are the same regions and choose() the same.
        folder = tmp_path / f"as-sa1b-{entry.image_id}"
        folder.mkdir()
        (folder / f"{entry.image_id}.jpg").write_bytes((images / f"{entry.image_id}.jpg").read_bytes())
        anns = [{"id": i, "segmentation": r.rle(), "bbox": list(r.extra["bbox"]), "area": r.extra["area"],
                 "predicted_iou": r.predicted_iou, "stability_score": r.stability_score,
                 "crop_box": r.extra["crop_box"], "point_coords": r.extra["point_coords"]}
                for i, r in enumerate(entry.regions)]
        (folder / f"{entry.image_id}.json").write_text(json.dumps({"image": {
            "image_id": entry.image_id, "width": 160, "height": 120, "file_name": f"{entry.image_id}.jpg"},
            "annotations": anns}))
        (back,) = SA1BSource(folder).read(0, 1)
        assert [(r.area, r.bbox, r.predicted_iou) for r in back.regions] == \
               [(r.area, r.bbox, r.predicted_iou) for r in entry.regions]
        assert all(np.array_equal(a.mask, b.mask) for a, b in zip(back.regions, entry.regions, strict=True))
        kept, skipped = choose(entry.regions, policy)
        kept_back, skipped_back = choose(back.regions, policy)
        assert [r.record_id for r in kept] == [r.record_id for r in kept_back] and skipped == skipped_back
        assert len(kept) == 3 and sum(skipped.values()) == len(entry.regions) - 3  # random IoUs may be < 0
        strict = RegionPolicy(min_area=0.0, max_area=1.0, min_predicted_iou=max(0.0, float(np.median(
            [r.predicted_iou for r in entry.regions]))), max_per_image=None)
        assert choose(entry.regions, strict)[1] == choose(back.regions, strict)[1]
        assert choose(entry.regions, strict)[1]["low_predicted_iou"] > 0


def test_sam_checkpoint_path_goes_through_the_registry(tmp_path, monkeypatch):
    """The real loading path: the config's ``create()`` (entry point regions.sam) builds the model with
    ``sam_model_registry[model_type](checkpoint=...)``; the registry entry here builds the tiny model and
    loads the state dict as segment-anything's ``_build_sam`` does."""
    torch = pytest.importorskip("torch")
    import segment_anything

    checkpoint = tmp_path / "sam_vit_b_01ec64.pth"
    torch.save(tiny_sam(seed=1).state_dict(), checkpoint)
    calls = []

    def build(checkpoint=None):
        calls.append(checkpoint)
        model = tiny_sam(seed=2)
        with open(checkpoint, "rb") as handle:
            model.load_state_dict(torch.load(handle))
        return model

    monkeypatch.setitem(segment_anything.sam_model_registry, "vit_b", build)
    config = ImageFolderSourceConfig.model_validate(
        {"root": str(tmp_path), "regions": {"backend": "sam", "model_type": "vit_b", "checkpoint": str(checkpoint),
                                            **TINY_SAM}}).regions
    assert config.preflight() == [] and config.model_id() == str(checkpoint)
    proposer = config.create()
    assert isinstance(proposer, SamRegionProposer)
    pixels = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    got = proposer.propose(pixels, dataset="d", image_id="x", image_path=Path("x.jpg"))
    assert calls == [str(checkpoint)]
    reference = SamRegionProposer.from_model(config, tiny_sam(seed=1)).propose(
        pixels, dataset="d", image_id="x", image_path=Path("x.jpg"))
    assert [r.rle() for r in got] == [r.rle() for r in reference]


def test_sam_preflight_names_the_checkpoint(tmp_path):
    unset = SamRegionsConfig().preflight()
    assert len(unset) == 1 and "checkpoint is not set" in unset[0] and "sam_vit_h_4b8939.pth" in unset[0]
    missing = SamRegionsConfig(checkpoint=tmp_path / "nope.pth").preflight()
    assert len(missing) == 1 and str(tmp_path / "nope.pth") in missing[0] and "does not exist" in missing[0]
    wrong = tmp_path / "sam_vit_b_01ec64.pth"
    wrong.write_bytes(b"x")
    (line,) = SamRegionsConfig(checkpoint=wrong, model_type="vit_h").preflight()
    assert "set model_type" in line
    with pytest.raises(FileNotFoundError, match="checkpoint is not set"):
        SamRegionProposer(SamRegionsConfig()).generator
    folder = ImageFolderSourceConfig.model_validate({"root": str(tmp_path), "regions": {"backend": "sam"}})
    assert any("checkpoint is not set" in line for line in folder.preflight())
    assert SamRegionsConfig(device="cuda").row_params() == SamRegionsConfig(device="cpu").row_params()


# -- embedded proposals ---------------------------------------------------------------------------
def test_embedded_proposals_find_the_planted_objects(replace_sample):
    truth = json.loads((replace_sample / MARKER).read_text())["open_images"][:12]
    source = OpenImagesSourceConfig(root=replace_sample / "open-images", classes=OI_CLASSES).open()
    by_id = {e.image_id: e for e in source.read(0, source.count())}
    images = tmp = ImageFolderSource(replace_sample / "open-images" / "images", EmbeddedRegionsConfig(),
                                     dataset="folder")
    assert isinstance(tmp.proposer, EmbeddedRegionProposer)
    found = total = kept_found = 0
    for item in truth:
        entry = images.read(images.files.index(images.root / f"{item['image_id']}.jpg"),
                            images.files.index(images.root / f"{item['image_id']}.jpg") + 1)[0]
        assert all(r.predicted_iou is None and r.stability_score is None for r in entry.regions)
        kept, _ = choose(entry.regions, RegionPolicy())
        for planted in by_id[item["image_id"]].regions:
            total += 1
            ious = [np.logical_and(r.mask, planted.mask).sum() / np.logical_or(r.mask, planted.mask).sum()
                    for r in entry.regions]
            found += max(ious) >= 0.5
            kept_found += any(np.logical_and(r.mask, planted.mask).sum() / np.logical_or(r.mask, planted.mask).sum()
                              >= 0.5 for r in kept)
    assert total >= 30
    assert found / total >= 0.9 and kept_found / total >= 0.85, (found, kept_found, total)


def test_embedded_proposals_on_a_photo_are_bounded():
    data = pytest.importorskip("skimage.data")
    config = EmbeddedRegionsConfig(max_regions=20)
    pixels = data.coffee()
    regions = EmbeddedRegionProposer(config).propose(pixels, dataset="d", image_id="coffee", image_path=Path("c.jpg"))
    assert 2 <= len(regions) <= 20
    assert all(r.mask.shape == pixels.shape[:2] and r.area == r.mask.sum() for r in regions)
    assert [r.area for r in regions] == sorted((r.area for r in regions), reverse=True)
    again = EmbeddedRegionProposer(config).propose(pixels, dataset="d", image_id="coffee", image_path=Path("c.jpg"))
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(regions, again, strict=True))


# -- the bundled sample ---------------------------------------------------------------------------
def tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_sample_is_deterministic_and_follows_both_formats(tmp_path, replace_sample):
    again = make_replace_samples(tmp_path / "again", 30, 0, 320, 240)
    assert tree_digest(again) == tree_digest(replace_sample)
    assert tree_digest(make_replace_samples(tmp_path / "other", 3, 1, 320, 240)) != tree_digest(
        make_replace_samples(tmp_path / "other0", 3, 0, 320, 240))
    oi = replace_sample / "open-images"
    assert (oi / "train-annotations-object-segmentation.csv").read_text().splitlines()[0] == OI_HEADER
    first_class = (oi / OI_CLASSES).read_text().splitlines()[0]
    assert first_class.startswith("/m/") and first_class.count(",") == 1  # no header, as the boxable file
    for doc in (json.loads(p.read_text()) for p in sorted((replace_sample / "sa1b").glob("sa_*.json"))):
        assert set(doc["image"]) == SA1B_IMAGE_KEYS and all(set(a) == SA1B_ANN_KEYS for a in doc["annotations"])
        assert all(isinstance(a["segmentation"]["counts"], str) for a in doc["annotations"])


def test_sample_reads_back_through_both_readers(replace_sample):
    truth = json.loads((replace_sample / MARKER).read_text())
    sa1b = SA1BSourceConfig(root=replace_sample / "sa1b").open()
    entries = sa1b.read(0, sa1b.count())
    assert len(entries) == 30 and not [f for e in entries for f in e.failures]
    for entry, planted in zip(entries, sorted(truth["sa1b"], key=lambda t: f"sa_{t['image_id']}.json"),
                              strict=True):
        assert entry.image_id == planted["image_id"]
        regions = {r.record_id: r for r in entry.regions}
        for obj in planted["objects"]:
            assert list(regions[obj["record_id"]].bbox) == obj["bbox"] and regions[obj["record_id"]].area == obj["area"]
        stuff = regions[planted["stuff_record_id"]]
        assert not np.logical_and(stuff.mask, np.logical_or.reduce(
            [regions[o["record_id"]].mask for o in planted["objects"]])).any()
        kept, skipped = choose(entry.regions, RegionPolicy())
        assert skipped["region_too_large"] == 1  # the background
        assert {r.record_id for r in kept} == {o["record_id"] for o in planted["objects"]}
        pixels = sa1b.load_image(entry).pixels
        for obj in planted["objects"]:  # the object's pixels are its colour, not the background
            r = regions[obj["record_id"]]
            inner = cv2.erode(r.mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
            assert pixels[inner].std(axis=0).max() < 12
    oi = OpenImagesSourceConfig(root=replace_sample / "open-images", classes=OI_CLASSES).open()
    entries = oi.read(0, oi.count())
    assert oi.problems() == [] and len(entries) == 30 and not [f for e in entries for f in e.failures]
    planted = {t["image_id"]: t["objects"] for t in truth["open_images"]}
    labels = set(open_images_classes().values())
    for entry in entries:
        got = sorted((r.record_id, r.label, list(r.bbox), r.area) for r in entry.regions)
        assert got == sorted((o["record_id"], o["label"], o["bbox"], o["area"]) for o in planted[entry.image_id])
        assert all(r.label in labels and r.label_source == "open-images" for r in entry.regions)
    assert len({r.label for e in entries for r in e.regions}) >= 10


def _ensure(root: str) -> bool:
    return ensure_replace_samples(Path(root), 4, 0, 96, 80)


def test_ensure_is_atomic_and_race_safe(tmp_path):
    root = tmp_path / "race" / "replace-sample"
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        made = pool.map(_ensure, [str(root)] * 2)
    assert sum(made) >= 1 and (root / MARKER).exists()
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".tmp-")]
    assert tree_digest(root) == tree_digest(make_replace_samples(tmp_path / "ref", 4, 0, 96, 80))
    assert _ensure(str(root)) is False
    half = tmp_path / "half"
    (half / "sa1b").mkdir(parents=True)
    with pytest.raises(IncompleteSample, match="no samples.json"):
        ensure_replace_samples(half)


def test_source_configs(tmp_path):
    with pytest.raises(ValueError, match="named 'sa1b'"):
        SA1BSourceConfig(root=tmp_path / "elsewhere", samples={})
    config = SA1BSourceConfig(root="demo/sa1b", samples={"images": 3, "width": 96, "height": 80})
    assert config.preflight(tmp_path) == []  # prepare() will make it
    config.prepare(tmp_path)
    assert SA1BSourceConfig(root="demo/sa1b").open(tmp_path).count() == 3
    oi = OpenImagesSourceConfig(root="demo/open-images", classes=OI_CLASSES, samples={"images": 3, "width": 96,
                                                                                      "height": 80})
    assert oi.preflight(tmp_path) == [] and oi.open(tmp_path).count() == 3
    assert "samples" in config.fingerprint() and config.fingerprint()["root"] == "demo/sa1b"
    missing = OpenImagesSourceConfig(root=tmp_path / "none").preflight()
    assert len(missing) == 1 and "not found" in missing[0]
    wrong_classes = OpenImagesSourceConfig(root="demo/open-images").preflight(tmp_path)
    assert any("oidv7-class-descriptions.csv: not found" in line for line in wrong_classes)
    folder = ImageFolderSourceConfig(root="demo/open-images/images")
    assert isinstance(folder.regions, EmbeddedRegionsConfig)
    assert folder.fingerprint()["regions"]["backend"] == "embedded-felzenszwalb-v1"
    assert folder.open(tmp_path).count() == 3 and folder.preflight(tmp_path) == []
    with pytest.raises(ValueError, match="regions"):
        ImageFolderSourceConfig.model_validate({"root": "x", "regions": {"backend": "nope"}})
