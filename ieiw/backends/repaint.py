"""Repainting a region with an exemplar: the "change the A to B" edit of the replacement source.

``Repainter.repaint(images, masks, exemplars, seeds)`` takes RGB ``uint8`` HWC source images, 0/1 masks
of the region to repaint (already dilated by the caller), RGB ``uint8`` exemplar crops (the object to
paint in) and one integer seed per item, and returns RGB ``uint8`` images of each source's own size.

Backends (``replacement.repaint: {backend: ...}``, registered under ``repaint.<name>``):

- ``paint-by-example`` (the paper's): diffusers' ``PaintByExamplePipeline``, fed as the original
  Paint-by-Example was trained (Fantasy-Studio/Paint-by-Example, ``ldm/data/open-images.py``): a
  **square window** around the region, resized to ``resolution`` x ``resolution`` (512), never the
  whole squashed photo. The window (:func:`square_window`) is centred on the dilated region's box,
  ``context`` times the box's long side (default 2: the region fills about half of it), shifted inward
  to stay in the image, and at most the image's long side; where it is wider than the image in one
  direction that side is filled by reflection (``BORDER_REFLECT_101``; the mask is 0 there, so nothing
  is painted in it) instead of squashing. The window is resized with the area filter when it shrinks and
  bicubic when it grows, its mask with the area filter and ``> 0`` (a pixel the region touches at all is
  repainted), repainted in batches of ``batch_size`` with one ``torch.Generator(seed)`` per item (on
  the CPU, so a seed gives the same noise on any device), resized back to the window's size and put
  back at the window's place in the source: the rest of the image is never resampled.
  The exemplar is squashed (aspect not kept, as the original's ``Resize(224, 224)``) to
  ``exemplar_size`` (default: the pipeline's image processor's crop size, 224 for the published
  model), so the processor's short-side resize and centre crop leave it whole.
  Batching changes nothing but speed: an item's output is that of its own seed (up to 1 grey level from
  float rounding in batched kernels).
- ``embedded`` (CPU, no weights): the exemplar crop scaled to the region's bounding box (``fit``:
  ``stretch``, the default, squashes the whole exemplar into the box as Paint-by-Example squashes it to
  224 x 224; ``cover`` keeps its aspect ratio and centre-crops) and pasted with Poisson
  blending (``cv2.seamlessClone``, ``NORMAL_CLONE``); deterministic, seeds are ignored. Plain
  seamlessClone leaves a region's rim with the old object's gradients and cannot repaint the rows and
  columns of a region that touches the image border; :func:`poisson_paste` works around both (a
  padded window, a grown clone mask, the exemplar as the boundary beyond the image border).

The exemplar both backends receive is cut by the caller with :func:`exemplar_crop`: the exemplar
region's box grown by ``exemplar_pad`` px (10, the original's) on each side, clipped at the image
border, with its natural background (not the object on white).

Both end with the same composite (:func:`composite`), so **pixels outside the dilated mask are the
source's own, exactly** (bit for bit), whatever the model did elsewhere:

    alpha = smoothstep(min(d / f, 1)),  f = min(feather, max d)
    out   = round(source + alpha * (repainted - source))   inside the mask,  source   outside

where ``d`` is each mask pixel's Euclidean distance to the nearest pixel outside the mask
(``cv2.distanceTransform``: 1 on the mask's edge) and ``feather`` is the config's width in px at the
source's size. So the feathering lies inside the dilated mask: alpha is 0 outside it (those pixels are
copied, not blended), rises from the mask's edge and reaches 1 ``feather`` px inside. A region thinner
than ``2 * feather`` gets a shorter ramp (``f = max d``) so its middle is still fully repainted;
``feather: 0`` is a hard paste of the whole mask.

Targets should be stored losslessly (PNG): the exact-outside-mask property holds for the decoded
pixels only when nothing lossy runs after the composite (a JPEG re-encode changes the pixels outside
the mask too). The acceptance tests compare the arrays before any encoding.

Models are never downloaded: ``model`` is a local folder (``save_pretrained`` layout, or a copy of the
hub repository) or a hub id already in the local Hugging Face cache. diffusers 0.42 moved the pipeline
to ``diffusers.pipelines.deprecated`` and ``PaintByExamplePipeline.from_pretrained(folder)`` fails
there ("no class PaintByExampleImageEncoder"), so each component is loaded with its own class's
``from_pretrained(folder, subfolder=...)`` and the pipeline is constructed from them. The safety checker
is not loaded (it would black out whole images; a dataset builder filters instead).
"""

from __future__ import annotations

import abc
import contextlib
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import cv2
import numpy as np
from pydantic import Field, field_validator

from ieiw.backends.models import HubModelFields
from ieiw.schemas.config import BackendConfig
from ieiw.schemas.registry import register_backend

DEFAULT_MODEL = "Fantasy-Studio/Paint-by-Example"
EXEMPLAR_PAD = 10  # px around the exemplar's box: Paint-by-Example's bbox_pad (ldm/data/open-images.py)


# -- the composite ----------------------------------------------------------------------------------
def feather_alpha(mask: np.ndarray, feather: float) -> np.ndarray:
    """float32 alpha in [0, 1]: 0 outside ``mask`` (exactly), a smoothstep ramp from the mask's edge to
    ``feather`` px inside it (shortened for regions thinner than ``2 * feather``), 1 beyond."""
    region = (np.asarray(mask) > 0).astype(np.uint8)
    if feather <= 0 or not region.any():
        return region.astype(np.float32)
    distance = cv2.distanceTransform(region, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    width = min(float(feather), float(distance.max()))
    t = np.minimum(distance / width, 1.0)
    alpha = t * t * (3.0 - 2.0 * t)
    alpha[region == 0] = 0.0
    return alpha.astype(np.float32)


def composite(source: np.ndarray, repainted: np.ndarray, mask: np.ndarray, feather: float) -> np.ndarray:
    """``repainted`` blended into ``source`` inside ``mask`` with :func:`feather_alpha`; every pixel
    outside the mask is copied from ``source`` (see the module docstring)."""
    if repainted.shape != source.shape:
        raise ValueError(f"repainted image {repainted.shape} and source {source.shape} differ in size")
    out = np.array(source, dtype=np.uint8, copy=True)
    region = (np.asarray(mask) > 0).astype(np.uint8)
    x, y, w, h = cv2.boundingRect(region)
    if not w or not h:
        return out
    alpha = feather_alpha(region, feather)[y : y + h, x : x + w, None]
    src = source[y : y + h, x : x + w].astype(np.float32)
    blended = np.rint(src + alpha * (repainted[y : y + h, x : x + w].astype(np.float32) - src))
    inside = region[y : y + h, x : x + w].astype(bool)
    window = out[y : y + h, x : x + w]
    window[inside] = np.clip(blended, 0, 255).astype(np.uint8)[inside]
    return out


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area filter when shrinking, bicubic when enlarging (clipped back to uint8)."""
    if image.shape[1] == width and image.shape[0] == height:
        return image
    shrink = width * height < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def resize_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """A 0/1 mask at another size, conservatively: a pixel is set when the region covers any part of it
    (area filter, then > 0), so a small region never vanishes at the model's size."""
    return cv2.resize((mask > 0).astype(np.uint8) * 255, (width, height), interpolation=cv2.INTER_AREA) > 0


def _check_inputs(images, masks, exemplars, seeds) -> None:
    if not len(images) == len(masks) == len(exemplars) == len(seeds):
        raise ValueError(f"repaint: {len(images)} images, {len(masks)} masks, {len(exemplars)} exemplars and "
                         f"{len(seeds)} seeds; give one of each per item")
    for index, (image, mask, exemplar) in enumerate(zip(images, masks, exemplars, strict=True)):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"repaint item {index}: image must be RGB uint8 HxWx3, got {image.dtype} {image.shape}")
        if mask.shape[:2] != image.shape[:2]:
            raise ValueError(f"repaint item {index}: mask {mask.shape} does not match image {image.shape}")
        if exemplar.ndim != 3 or exemplar.shape[2] != 3 or exemplar.dtype != np.uint8 or not exemplar.size:
            raise ValueError(f"repaint item {index}: exemplar must be RGB uint8 HxWx3, got "
                             f"{exemplar.dtype} {exemplar.shape}")


# -- the interface ----------------------------------------------------------------------------------
class Repainter(abc.ABC):
    """Made from its config by ``config.create()``; loads its model (if any) in ``__init__``."""

    def __init__(self, config: RepaintConfig):
        self.config = config
        self.name = config.label()
        self.embedded = config.embedded
        self.model = config.model_record()

    def repaint(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray], exemplars: Sequence[np.ndarray],
                seeds: Sequence[int]) -> list[np.ndarray]:
        """Repaint each image's masked region with its exemplar; outside the mask the source is kept
        exactly (:func:`composite`). An empty mask returns the source unchanged."""
        _check_inputs(images, masks, exemplars, seeds)
        masks01 = [(np.asarray(m) > 0).astype(np.uint8) for m in masks]
        images = [np.ascontiguousarray(image) for image in images]
        out: list[np.ndarray | None] = [None] * len(images)
        todo = []
        for index, mask in enumerate(masks01):
            if mask.any():
                todo.append(index)
            else:
                out[index] = images[index].copy()
        if todo:
            raw = self._repaint([images[i] for i in todo], [masks01[i] for i in todo],
                                [np.ascontiguousarray(exemplars[i]) for i in todo], [int(seeds[i]) for i in todo])
            for index, repainted in zip(todo, raw, strict=True):
                out[index] = composite(images[index], repainted, masks01[index], self.config.feather)
        return out  # type: ignore[return-value]

    @abc.abstractmethod
    def _repaint(self, images: list[np.ndarray], masks: list[np.ndarray], exemplars: list[np.ndarray],
                 seeds: list[int]) -> list[np.ndarray]:
        """The backend's own output at each source's size (composited by :meth:`repaint`)."""


class RepaintConfig(BackendConfig):
    kind: ClassVar[str] = "repaint"
    feather: float = Field(4.0, ge=0, description="width in px (at the source's size) of the blend ramp, which "
                                                   "lies inside the mask: alpha is 0 outside it")
    exemplar_pad: int = Field(EXEMPLAR_PAD, ge=0, description="px of natural background kept around the exemplar's "
                                                               "box (clipped at its image's border); the original's 10")


# -- the exemplar and the window --------------------------------------------------------------------
def exemplar_crop(pixels: np.ndarray, bbox: Sequence[int], pad: int = EXEMPLAR_PAD) -> np.ndarray:
    """The exemplar as Paint-by-Example cuts its reference: the region's ``(x, y, w, h)`` box grown by
    ``pad`` px on each side where the image allows (``bbox_pad`` in the original's dataset), with the
    natural background around the object."""
    x, y, w, h = (int(v) for v in bbox)
    height, width = pixels.shape[:2]
    x0, y0 = max(x - pad, 0), max(y - pad, 0)
    x1, y1 = min(x + w + pad, width), min(y + h + pad, height)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"exemplar box {tuple(bbox)} lies outside its {width}x{height} image")
    return np.ascontiguousarray(pixels[y0:y1, x0:x1])


@dataclass(frozen=True)
class Window:
    """A square ``side`` x ``side`` window whose top-left corner is ``(left, top)`` in source pixels; it
    may reach beyond the image (by at most the difference between the image's sides)."""

    left: int
    top: int
    side: int

    def clip(self, width: int, height: int) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)``: the part of the window inside a ``width`` x ``height`` image."""
        return (max(self.left, 0), max(self.top, 0), min(self.left + self.side, width),
                min(self.top + self.side, height))


def square_window(mask: np.ndarray, context: float) -> Window:
    """The square the model repaints for ``mask``: ``context`` x the long side of the mask's box (at
    least the long side, at most the image's long side), centred on the box, shifted inward to stay in
    the image; where the image is narrower than the window it is centred on the image instead."""
    height, width = mask.shape[:2]
    x, y, w, h = cv2.boundingRect((np.asarray(mask) > 0).astype(np.uint8))
    if not w or not h:
        raise ValueError("square_window: the mask is empty")
    side = min(max(math.ceil(context * max(w, h)), w, h, 8), max(width, height))

    def place(start: int, extent: int, size: int) -> int:
        if side >= size:
            return (size - side) // 2
        return min(max(start + extent // 2 - side // 2, 0), size - side)

    return Window(place(x, w, width), place(y, h, height), side)


def cut_window(array: np.ndarray, window: Window, fill_reflect: bool) -> np.ndarray:
    """``array``'s pixels in ``window``; outside the image filled by reflection (images) or 0 (masks)."""
    height, width = array.shape[:2]
    x0, y0, x1, y1 = window.clip(width, height)
    top, left = y0 - window.top, x0 - window.left
    bottom, right = window.side - top - (y1 - y0), window.side - left - (x1 - x0)
    inside = np.ascontiguousarray(array[y0:y1, x0:x1])
    if not (top or bottom or left or right):
        return inside
    if fill_reflect:
        return cv2.copyMakeBorder(inside, top, bottom, left, right, cv2.BORDER_REFLECT_101)
    return cv2.copyMakeBorder(inside, top, bottom, left, right, cv2.BORDER_CONSTANT, value=0)


def put_window(image: np.ndarray, painted: np.ndarray, window: Window) -> np.ndarray:
    """A copy of ``image`` with ``painted`` (the whole window, ``side`` x ``side``) written where the
    window lies inside the image."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = window.clip(width, height)
    out = image.copy()
    top, left = y0 - window.top, x0 - window.left
    out[y0:y1, x0:x1] = painted[top : top + (y1 - y0), left : left + (x1 - x0)]
    return out


# -- embedded: Poisson blending ---------------------------------------------------------------------
class EmbeddedRepaintConfig(RepaintConfig):
    """The exemplar scaled to the region's box and Poisson-blended in (CPU, no weights)."""

    embedded: ClassVar[bool] = True

    backend: Literal["embedded"] = "embedded"
    fit: Literal["cover", "stretch"] = Field("stretch", description="stretch: squash the whole exemplar into the box "
                                                                    "(as Paint-by-Example squashes it to 224 x 224); "
                                                                    "cover: keep its aspect ratio and centre-crop it")

    def label(self) -> str:
        return "poisson-clone-v1"


def fit_to_box(exemplar: np.ndarray, width: int, height: int, fit: str = "cover") -> np.ndarray:
    """``exemplar`` resized to ``width`` x ``height``: stretched, or scaled to cover it and centre-cropped."""
    if fit == "stretch":
        return _resize(exemplar, width, height)
    eh, ew = exemplar.shape[:2]
    scale = max(width / ew, height / eh)
    sw, sh = max(width, math.ceil(ew * scale)), max(height, math.ceil(eh * scale))
    scaled = _resize(exemplar, sw, sh)
    left, top = (sw - width) // 2, (sh - height) // 2
    return np.ascontiguousarray(scaled[top : top + height, left : left + width])


CLONE_GROW = 4  # px the clone mask is grown by: 1 + the 3 px OpenCV erodes it by before taking the source's gradients
CLONE_PAD = CLONE_GROW + 2  # px around the region's box in the clone window (edge-replicated at borders)


def poisson_paste(image: np.ndarray, mask: np.ndarray, exemplar: np.ndarray, fit: str = "cover") -> np.ndarray:
    """``exemplar`` fitted to the bounding box of ``mask`` and cloned into ``image`` there with
    ``cv2.seamlessClone(..., NORMAL_CLONE)``. Returns the whole image (not yet composited).

    OpenCV's clone (opencv/modules/photo/src/seamless_cloning*.cpp) zeroes the outermost ring of the
    mask array (in place: never hand it a mask you still need), solves only inside the mask's bounding
    rectangle, keeps the destination's pixels on that rectangle's edge, and takes the source's gradients
    only inside the mask eroded by 3 px (the destination's elsewhere). Used directly, a region keeps a
    rim of the old object's gradients, and one at the image border keeps its border rows and columns
    unrepainted. So the clone runs on a window of the region's box plus :data:`CLONE_PAD` px, with the
    clone mask grown by :data:`CLONE_GROW` px and the exemplar fitted to that grown box: the exemplar's
    gradients cover the whole region and a 1 px ring around it, and the fixed values on the solved
    rectangle's edge are context pixels a few px outside the region. Where the box meets the image
    border the window is padded by edge replication of the exemplar-filled canvas, so on that side the
    fixed values are the exemplar's own (there is no context to blend with)."""
    region = (mask > 0).astype(np.uint8)
    x, y, w, h = cv2.boundingRect(region)
    if not w or not h:
        return image.copy()
    height, width = image.shape[:2]
    pad = CLONE_PAD
    x0, y0, x1, y1 = max(x - pad, 0), max(y - pad, 0), min(x + w + pad, width), min(y + h + pad, height)
    top, bottom, left, right = pad - (y - y0), pad - (y1 - y - h), pad - (x - x0), pad - (x1 - x - w)
    window = cv2.copyMakeBorder(np.ascontiguousarray(image[y0:y1, x0:x1]), top, bottom, left, right,
                                cv2.BORDER_REPLICATE)
    # The region's box sits at (pad, pad) in the window; the grown box at (pad - grow, pad - grow).
    grow = CLONE_GROW
    canvas = window.copy()
    canvas[pad - grow : pad + h + grow, pad - grow : pad + w + grow] = fit_to_box(exemplar, w + 2 * grow,
                                                                                 h + 2 * grow, fit)
    if top or bottom or left or right:
        # Beyond the image border there is no context to blend with: the fixed values there are the
        # exemplar's own (edge-replicated), so the region keeps the exemplar's colours at the border
        # instead of being pulled back to the old object's edge pixels.
        outside = np.ones(window.shape[:2], bool)
        outside[top : window.shape[0] - bottom, left : window.shape[1] - right] = False
        canvas = cv2.copyMakeBorder(canvas[top : window.shape[0] - bottom, left : window.shape[1] - right],
                                    top, bottom, left, right, cv2.BORDER_REPLICATE)
        window[outside] = canvas[outside]
    clone_mask = np.zeros(window.shape[:2], np.uint8)
    clone_mask[pad : pad + h, pad : pad + w] = region[y : y + h, x : x + w] * 255
    clone_mask = cv2.dilate(clone_mask, np.ones((2 * grow + 1, 2 * grow + 1), np.uint8))
    # OpenCV centres the mask's bounding rectangle on ``center`` with integer halving of its size
    center = (pad - grow + (w + 2 * grow) // 2, pad - grow + (h + 2 * grow) // 2)
    cloned = cv2.seamlessClone(canvas, window, clone_mask, center, cv2.NORMAL_CLONE)
    out = image.copy()
    out[y : y + h, x : x + w] = cloned[pad : pad + h, pad : pad + w]
    return out


@register_backend("repaint", "embedded", EmbeddedRepaintConfig)
class PoissonRepainter(Repainter):
    """Deterministic: seeds are accepted and ignored."""

    def _repaint(self, images, masks, exemplars, seeds):
        return [poisson_paste(image, mask, exemplar, self.config.fit)
                for image, mask, exemplar in zip(images, masks, exemplars, strict=True)]


# -- Paint-by-Example -------------------------------------------------------------------------------
class PaintByExampleConfig(HubModelFields, RepaintConfig):
    """diffusers' ``PaintByExamplePipeline`` in this process (CPU or CUDA)."""

    runtime_fields: ClassVar[frozenset[str]] = frozenset({"device", "batch_size", "dtype"})

    backend: Literal["paint-by-example"] = "paint-by-example"
    model: str = Field(DEFAULT_MODEL, description="a local pipeline folder, or a hub id already in the local HF cache")
    steps: int = Field(50, ge=1, description="denoising steps (num_inference_steps)")
    guidance_scale: float = Field(5.0, ge=0, description="classifier-free guidance on the exemplar; <= 1 turns it off")
    resolution: int = Field(512, ge=8, description="the side the square window and its mask are resized to "
                                                   "(multiple of 8)")
    context: float = Field(2.0, ge=1.0, description="side of the square window around the region, as a multiple of "
                                                    "the long side of the dilated region's box")
    exemplar_size: int | None = Field(None, ge=1, description="side the exemplar is squashed to; default: the "
                                                              "pipeline's image processor's crop size (224, the "
                                                              "original's)")
    device: str = Field("auto", description="'auto' (cuda when available), 'cpu', 'cuda', 'cuda:1', ...")
    dtype: Literal["auto", "float32", "float16"] = Field("auto", description="auto: float16 on CUDA, else float32")
    batch_size: int = Field(4, ge=1, description="items per pipeline call")

    @field_validator("resolution")
    @classmethod
    def _multiple_of_8(cls, value: int) -> int:
        if value % 8:
            raise ValueError(f"{value} is not a multiple of 8 (the pipeline needs sides divisible by 8)")
        return value

    def label(self) -> str:
        return f"paint-by-example:{self.model_name()}"

    def missing_message(self) -> str:
        where = repr(self.model) + (f" (revision {self.revision})" if self.revision else "")
        return (f"repaint backend paint-by-example: model {where} is neither a local folder nor in the local "
                "Hugging Face cache (weights are never downloaded: `huggingface-cli download "
                f"{DEFAULT_MODEL}`, or point replacement.repaint.model at a saved pipeline folder)")

    def preflight(self) -> list[str]:
        return self.digest_problems() if self.model_folder() is not None else [self.missing_message()]


def load_paint_by_example(folder: Path, dtype: Any = None) -> Any:
    """A ``PaintByExamplePipeline`` from a pipeline folder, component by component (the diffusers 0.42
    workaround, module docstring); the scheduler class is the one ``model_index.json`` names."""
    import diffusers
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from diffusers.pipelines.deprecated.paint_by_example import PaintByExampleImageEncoder, PaintByExamplePipeline
    from transformers import CLIPImageProcessor

    folder = Path(folder)
    scheduler_class: Any = PNDMScheduler
    index = folder / "model_index.json"
    if index.is_file():
        entry = json.loads(index.read_text()).get("scheduler") or [None, None]
        scheduler_class = getattr(diffusers, str(entry[-1]), None) or PNDMScheduler
    common = {"local_files_only": True}
    with _quiet_loading():
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=dtype, **common)
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=dtype, **common)
        encoder = PaintByExampleImageEncoder.from_pretrained(str(folder), subfolder="image_encoder", dtype=dtype,
                                                             **common)
        scheduler = scheduler_class.from_pretrained(folder, subfolder="scheduler", **common)
        processor = CLIPImageProcessor.from_pretrained(str(folder), subfolder="feature_extractor", **common)
        return PaintByExamplePipeline(vae=vae, image_encoder=encoder, unet=unet, scheduler=scheduler,
                                      safety_checker=None, feature_extractor=processor, requires_safety_checker=False)


@contextlib.contextmanager
def _quiet_loading():
    """Two expected warnings, silenced while loading: transformers' "a model of type clip_vision_model
    to instantiate a model of type clip" (PaintByExampleImageEncoder is a CLIPPreTrainedModel over a
    vision config, as the hub checkpoint is) and diffusers' "PaintByExamplePipeline has been deprecated"."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    levels = (transformers_logging.get_verbosity(), diffusers_logging.get_verbosity())
    transformers_logging.set_verbosity_error()
    diffusers_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        transformers_logging.set_verbosity(levels[0])
        diffusers_logging.set_verbosity(levels[1])


@register_backend("repaint", "paint-by-example", PaintByExampleConfig)
class PaintByExampleRepainter(Repainter):
    """Loads the pipeline here (``config.create()`` runs on first use)."""

    def __init__(self, config: PaintByExampleConfig):
        super().__init__(config)
        import torch

        from ieiw.backends.models import ModelNotFoundError, torch_device

        self.config: PaintByExampleConfig = config
        self.torch = torch
        self.device = torch_device(config.device)
        if config.dtype == "auto":
            self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        else:
            self.dtype = getattr(torch, config.dtype)
        folder = config.model_folder()
        if folder is None:
            raise ModelNotFoundError(config.missing_message())
        try:
            self.pipe = load_paint_by_example(folder, self.dtype)
        except OSError as exc:  # a folder without the pipeline's components
            raise ModelNotFoundError(f"{config.missing_message()}: {exc}") from exc
        self.pipe.to(self.device)
        self.pipe.set_progress_bar_config(disable=True)

    def exemplar_side(self) -> int:
        """The side exemplars are squashed to: the config's, else the image processor's crop size."""
        if self.config.exemplar_size:
            return self.config.exemplar_size
        crop = getattr(self.pipe.feature_extractor, "crop_size", None)
        if isinstance(crop, int):
            return crop
        if isinstance(crop, dict):  # older transformers
            sides = [crop.get("height"), crop.get("width")]
        else:  # transformers 5: a SizeDict
            sides = [getattr(crop, "height", None), getattr(crop, "width", None)]
        sides = [int(v) for v in sides if v]
        return min(sides) if sides else 224

    def _repaint(self, images, masks, exemplars, seeds):
        torch, c = self.torch, self.config
        side, example_side = c.resolution, self.exemplar_side()
        out: list[np.ndarray] = []
        for start in range(0, len(images), c.batch_size):
            stop = start + c.batch_size
            windows = [square_window(mask, c.context) for mask in masks[start:stop]]
            batch = np.stack([_resize(cut_window(image, window, True), side, side)
                              for image, window in zip(images[start:stop], windows, strict=True)])
            small = np.stack([resize_mask(cut_window(mask, window, False), side, side)
                              for mask, window in zip(masks[start:stop], windows, strict=True)])
            examples = [_resize(exemplar, example_side, example_side) for exemplar in exemplars[start:stop]]
            pixels = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 127.5 - 1.0
            mask = torch.from_numpy(small[:, None].astype(np.float32))  # 1 = repaint (the pipeline inverts it)
            generators = [torch.Generator(device="cpu").manual_seed(seed % (1 << 63)) for seed in seeds[start:stop]]
            result = self.pipe(example_image=examples, image=pixels, mask_image=mask,
                               height=side, width=side, num_inference_steps=c.steps,
                               guidance_scale=c.guidance_scale, generator=generators, output_type="np").images
            for image, window, generated in zip(images[start:stop], windows, result, strict=True):
                painted = np.clip(np.rint(np.asarray(generated, np.float32) * 255), 0, 255).astype(np.uint8)
                out.append(put_window(image, _resize(painted, window.side, window.side), window))
        return out
