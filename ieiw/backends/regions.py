"""Region proposals over an image folder: backends of kind ``regions`` (``regions.sam``, ``regions.embedded``).

- ``sam``: segment-anything's own ``SamAutomaticMaskGenerator`` with every parameter from the config
  (defaults are the generator's, docs/formats.md), the model built by ``sam_model_registry[model_type]
  (checkpoint=...)``. Masks come out as compressed COCO RLE (``output_mode="coco_rle"``) and become
  regions through :func:`ieiw.sources.regions.rle_mask`, the path SA-1B JSON takes, with SAM's
  ``predicted_iou`` and ``stability_score``.
- ``embedded``: a classical CPU stand-in. Felzenszwalb-Huttenlocher graph segmentation (scikit-image) at
  a few scales, then, per scale, adjacent segments whose mean CIELAB colours are closer than
  ``merge_threshold`` are merged (a region adjacency graph cut), holes are filled, near-duplicates across
  scales dropped. What it finds are colour-coherent areas: an object of one colour or texture on a
  different background comes out whole (the bundled samples' shapes do). What it does not do: know what an
  object is. A multi-coloured object is split into parts, an object that matches its surroundings merges
  with them, and large background areas come out as regions too (the region policy's ``max_area`` drops
  most). No scores (``predicted_iou`` and ``stability_score`` are None).

The reader that runs a proposer over a folder of images is :class:`ieiw.sources.image_folder.ImageFolderSource`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from ieiw.schemas.config import BackendConfig, ModelPath
from ieiw.schemas.lazy import locked_cached_property
from ieiw.schemas.registry import register_backend
from ieiw.sources.regions import BadRle, Region, rle_mask

CHECKPOINTS = {"vit_h": "sam_vit_h_4b8939.pth", "vit_l": "sam_vit_l_0b3195.pth", "vit_b": "sam_vit_b_01ec64.pth"}


class RegionsConfig(BackendConfig):
    kind: ClassVar[str] = "regions"


# -- SAM ------------------------------------------------------------------------------------------
class SamRegionsConfig(RegionsConfig):
    """SAM automatic mask generation; the generator's parameters with its own defaults."""

    runtime_fields: ClassVar[frozenset[str]] = frozenset({"device", "points_per_batch"})

    backend: Literal["sam"] = "sam"
    checkpoint: ModelPath = Field(None, description="sam_vit_h_4b8939.pth (or the vit_l / vit_b file)")
    model_type: Literal["vit_h", "vit_l", "vit_b"] = "vit_h"
    device: str = "auto"
    points_per_side: int = Field(32, ge=1)
    points_per_batch: int = Field(64, ge=1)
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = Field(0, ge=0)
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = Field(1, ge=1)
    min_mask_region_area: int = Field(0, ge=0)

    def label(self) -> str:
        return f"sam-{self.model_type}"

    def model_id(self) -> str | None:
        return str(self.checkpoint) if self.checkpoint is not None else None

    def generator_params(self) -> dict[str, Any]:
        return self.model_dump(exclude={"backend", "checkpoint", "model_type", "device", "sha256"})

    def preflight(self) -> list[str]:
        lines = []
        try:
            import segment_anything  # noqa: F401
        except ImportError:
            lines.append("regions backend sam: segment-anything is not installed (pip install -e '.[train]')")
        expected = CHECKPOINTS[self.model_type]
        if self.checkpoint is None:
            lines.append(f"regions backend sam: checkpoint is not set; download {expected} (docs/formats.md) and "
                         "set the regions backend's checkpoint to its path")
        elif not Path(self.checkpoint).is_file():
            lines.append(f"regions backend sam: checkpoint {self.checkpoint} does not exist; download {expected} "
                         "(docs/formats.md) to that path")
        elif Path(self.checkpoint).name in CHECKPOINTS.values() and Path(self.checkpoint).name != expected:
            lines.append(f"regions backend sam: checkpoint {Path(self.checkpoint).name} is not a {self.model_type} "
                         f"checkpoint ({expected}); set model_type to match")
        return lines + self.digest_problems()


def _coco_region(item: dict[str, Any], index: int, *, dataset: str, image_id: str, image_path: Path,
                 width: int, height: int, source_file: str, proposer: str) -> Region:
    """A region from one ``SamAutomaticMaskGenerator`` output dict (``coco_rle`` mode): through
    :func:`rle_mask`, as SA-1B annotations go."""
    seg = item["segmentation"]
    counts = seg["counts"].decode() if isinstance(seg["counts"], bytes) else seg["counts"]
    mask, area, bbox = rle_mask(list(seg["size"]), counts, height, width)
    return Region(
        dataset=dataset, record_id=f"{image_id}:{index}", image_id=image_id, image_path=image_path,
        width=width, height=height, mask_source=mask, bbox=bbox, area=area, label=None, label_source=None,
        predicted_iou=float(item["predicted_iou"]), stability_score=float(item["stability_score"]),
        source_file=source_file,
        extra={"proposer": proposer, **{k: item[k] for k in ("bbox", "area", "point_coords", "crop_box") if k in item}},
    )


@register_backend("regions", "sam", SamRegionsConfig)
class SamRegionProposer:
    """Runs ``SamAutomaticMaskGenerator`` on RGB ``uint8`` images; the model loads on first use."""

    def __init__(self, config: SamRegionsConfig, model: Any = None):
        self.config = config
        if model is not None:
            self.model = model

    @classmethod
    def from_model(cls, config: SamRegionsConfig, model: Any) -> SamRegionProposer:
        """For tests: an already-built ``segment_anything.modeling.Sam`` (e.g. a tiny random one) instead
        of the checkpoint; everything after the model is the real path."""
        return cls(config, model)

    def load_model(self) -> Any:
        """``sam_model_registry[model_type](checkpoint=...)`` on the configured device."""
        from segment_anything import sam_model_registry

        from ieiw.backends.models import torch_device

        problems = self.config.preflight()
        if problems:
            raise FileNotFoundError(problems[0])
        model = sam_model_registry[self.config.model_type](checkpoint=str(self.config.checkpoint))
        return model.to(torch_device(self.config.device)).eval()

    @locked_cached_property
    def model(self) -> Any:
        return self.load_model()

    @locked_cached_property
    def generator(self) -> Any:
        from segment_anything import SamAutomaticMaskGenerator

        return SamAutomaticMaskGenerator(self.model, output_mode="coco_rle", **self.config.generator_params())

    def propose(self, pixels: np.ndarray, *, dataset: str, image_id: str, image_path: Path,
                source_file: str | None = None) -> list[Region]:
        height, width = pixels.shape[:2]
        outputs = self.generator.generate(np.ascontiguousarray(pixels, dtype=np.uint8))
        regions = []
        for index, item in enumerate(outputs):
            try:
                region = _coco_region(item, index, dataset=dataset, image_id=image_id, image_path=Path(image_path),
                                      width=width, height=height, source_file=source_file or str(image_path),
                                      proposer=self.config.label())
            except BadRle as exc:  # SAM's own encoder: a bug, not bad input
                raise RuntimeError(f"SAM output {index} for {image_path} is no valid RLE: {exc}") from None
            if region.area:
                regions.append(region)
        return regions


# -- embedded -------------------------------------------------------------------------------------
class EmbeddedRegionsConfig(RegionsConfig):
    """Felzenszwalb segmentation at several scales + colour merging of adjacent segments (CPU)."""

    embedded: ClassVar[bool] = True

    backend: Literal["embedded"] = "embedded"
    max_side: int = Field(384, ge=32, description="segment a copy with this long side (masks are scaled back)")
    scales: list[float] = Field([100.0, 400.0], min_length=1, description="Felzenszwalb scale parameters "
                                                                          "(larger: bigger segments)")
    sigma: float = Field(0.8, ge=0, description="Gaussian pre-smoothing of the Felzenszwalb step")
    min_size: float = Field(0.002, ge=0, le=1, description="smallest Felzenszwalb segment, as a share of the image")
    merge_threshold: float = Field(10.0, ge=0, description="merge adjacent segments whose mean CIELAB colours "
                                                           "are closer than this (0: no merging)")
    fill_holes: bool = True
    dedupe_iou: float = Field(0.85, gt=0, le=1, description="drop a region this similar (IoU) to a kept one")
    max_regions: int = Field(64, ge=1, description="keep the largest this many per image")

    def label(self) -> str:
        return "embedded-felzenszwalb-v1"


@register_backend("regions", "embedded", EmbeddedRegionsConfig)
class EmbeddedRegionProposer:
    def __init__(self, config: EmbeddedRegionsConfig):
        self.config = config

    def segment(self, pixels: np.ndarray) -> list[np.ndarray]:
        """Candidate masks (``bool``, the image's size), largest first."""
        import cv2
        from scipy import ndimage
        from skimage import segmentation

        from ieiw.imageio import downscale

        c = self.config
        height, width = pixels.shape[:2]
        small = downscale(np.ascontiguousarray(pixels), c.max_side)
        lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float64)
        lab[..., 0] *= 100.0 / 255.0  # OpenCV's 8-bit L is 0..255; CIELAB units for the threshold
        lab[..., 1:] -= 128.0
        min_size = max(int(c.min_size * small.shape[0] * small.shape[1]), 1)
        candidates: list[tuple[int, tuple[slice, slice], np.ndarray]] = []  # area, box, mask within the box
        for scale in c.scales:
            labels = segmentation.felzenszwalb(small, scale=scale, sigma=c.sigma, min_size=min_size)
            if c.merge_threshold > 0 and labels.max() > 0:
                labels = merge_similar(labels, lab, c.merge_threshold)
            labels = labels + 1  # find_objects skips label 0
            for value, box in enumerate(ndimage.find_objects(labels), start=1):
                if box is None:
                    continue
                crop = labels[box] == value
                if c.fill_holes:  # a hole inside the box is one in the image: its way out crosses the box
                    crop = ndimage.binary_fill_holes(crop)
                candidates.append((int(crop.sum()), box, crop))
        candidates.sort(key=lambda item: -item[0])
        kept: list[tuple[int, tuple[slice, slice], np.ndarray]] = []
        for candidate in candidates:
            if candidate[0] == 0 or any(_iou(candidate, other) >= c.dedupe_iou for other in kept):
                continue
            kept.append(candidate)
            if len(kept) >= c.max_regions:
                break
        out = []
        for _, box, crop in kept:
            mask = np.zeros(small.shape[:2], dtype=bool)
            mask[box] = crop
            if small.shape[:2] != (height, width):
                mask = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
            if mask.any():
                out.append(mask)
        return out

    def propose(self, pixels: np.ndarray, *, dataset: str, image_id: str, image_path: Path,
                source_file: str | None = None) -> list[Region]:
        return [
            Region.from_mask(mask, dataset=dataset, record_id=f"{image_id}:{index}", image_id=image_id,
                             image_path=Path(image_path), source_file=source_file or str(image_path),
                             extra={"proposer": self.config.label()})
            for index, mask in enumerate(self.segment(pixels))
        ]


def merge_similar(labels: np.ndarray, lab: np.ndarray, threshold: float) -> np.ndarray:
    """Merge 4-adjacent segments whose mean colours (``lab``, CIELAB) are closer than ``threshold``: the
    connected components of the region adjacency graph without its heavier edges (what scikit-image's
    ``rag_mean_color`` + ``cut_threshold`` compute, without their per-pixel Python loop). Returns labels
    0..k-1."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    _, labels = np.unique(labels, return_inverse=True)
    labels = labels.reshape(lab.shape[:2])
    count = int(labels.max()) + 1
    flat = labels.ravel()
    sizes = np.bincount(flat, minlength=count).astype(np.float64)
    means = np.stack([np.bincount(flat, lab[..., ch].ravel(), count) for ch in range(lab.shape[2])], axis=1)
    means /= sizes[:, None]
    pairs = np.concatenate([
        np.stack([labels[:, :-1].ravel(), labels[:, 1:].ravel()], axis=1),
        np.stack([labels[:-1, :].ravel(), labels[1:, :].ravel()], axis=1),
    ])
    pairs = np.unique(pairs[pairs[:, 0] != pairs[:, 1]], axis=0)
    close = np.linalg.norm(means[pairs[:, 0]] - means[pairs[:, 1]], axis=1) < threshold
    pairs = pairs[close]
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(count, count))
    _, component = connected_components(graph, directed=False)
    return component[labels]


def _iou(a: tuple[int, tuple[slice, slice], np.ndarray], b: tuple[int, tuple[slice, slice], np.ndarray]) -> float:
    """IoU of two (area, box, mask-in-box) candidates."""
    (area_a, (ya, xa), mask_a), (area_b, (yb, xb), mask_b) = a, b
    top, bottom = max(ya.start, yb.start), min(ya.stop, yb.stop)
    left, right = max(xa.start, xb.start), min(xa.stop, xb.stop)
    if top >= bottom or left >= right:
        return 0.0
    inter = np.logical_and(mask_a[top - ya.start:bottom - ya.start, left - xa.start:right - xa.start],
                           mask_b[top - yb.start:bottom - yb.start, left - xb.start:right - xb.start]).sum()
    return float(inter / (area_a + area_b - inter)) if inter else 0.0
