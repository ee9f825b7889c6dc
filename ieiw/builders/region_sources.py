"""Where the replacement builder's regions come from: the ``source:`` config of each region source.

Each config validates its keys, names its problems before any work starts (``preflight``), makes the
bundled synthetic sample when ``samples`` is set and the root is missing (``prepare``), and opens its reader
(:mod:`ieiw.sources.sa1b`, :mod:`ieiw.sources.openimages`, :mod:`ieiw.sources.image_folder`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from ieiw.schemas.config import StrictModel, backend_field


class ReplaceSampleSpec(StrictModel):
    """Make the bundled synthetic replacement sample (:mod:`ieiw.samples.replacement`) when the
    source's root is missing: both formats are written side by side into the root's parent
    (``sa1b/`` and ``open-images/``), so the root must be named after its format."""

    images: int = Field(30, ge=1, description="images per format")
    seed: int = 0
    width: int = Field(320, ge=64)
    height: int = Field(240, ge=64)


def _resolve(path: Path, base: Path | None) -> Path:
    path = Path(path)
    return path if path.is_absolute() or base is None else Path(base) / path


class _SourceConfig(StrictModel):
    root: Path
    limit: int | None = Field(None, ge=1, description="read at most this many images")

    def resolved_root(self, base: Path | None = None) -> Path:
        return _resolve(self.root, base)

    def prepare(self, base: Path | None = None) -> None:
        """Make the bundled sample when ``samples`` is set and the root is missing (race-safe)."""
        samples = getattr(self, "samples", None)
        if samples is not None:
            from ieiw.samples.replacement import ensure_replace_samples

            ensure_replace_samples(self.resolved_root(base).parent, samples.images, samples.seed, samples.width,
                                   samples.height)

    def fingerprint(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"samples"}) | {
            "samples": None if getattr(self, "samples", None) is None else self.samples.model_dump()}

    def preflight(self, base: Path | None = None) -> list[str]:
        if getattr(self, "samples", None) is not None and not self.resolved_root(base).exists():
            return []  # made by prepare()
        try:
            return self.open(base).problems()
        except (ValueError, FileNotFoundError) as exc:
            return [str(exc)]


def _sample_root_named(config: Any, name: str) -> Any:
    if config.samples is not None and Path(config.root).name != name:
        raise ValueError(f"with samples set, root must be a folder named {name!r} (the sample writes sa1b/ "
                         f"and open-images/ side by side), not {str(config.root)!r}")
    return config


class SA1BSourceConfig(_SourceConfig):
    """SA-1B: a folder (searched recursively, e.g. one subfolder per extracted tar shard) of
    ``sa_<id>.jpg`` + ``sa_<id>.json``."""

    type: Literal["sa1b"] = "sa1b"
    samples: ReplaceSampleSpec | None = Field(None, description="make the bundled sample if root is missing")

    @model_validator(mode="after")
    def _sample_root(self) -> SA1BSourceConfig:
        return _sample_root_named(self, "sa1b")

    def open(self, base: Path | None = None):
        from ieiw.sources.sa1b import SA1BSource

        return SA1BSource(self.resolved_root(base), limit=self.limit)


class OpenImagesSourceConfig(_SourceConfig):
    """Open Images V7 segmentation: the mask CSV, the class-description CSV (with or without its header),
    mask PNGs (a folder, or the 16 ``*-masks-<hex>.zip`` files in it) and images, all under ``root``."""

    type: Literal["open-images"] = "open-images"
    annotations: str = Field("train-annotations-object-segmentation.csv", description="mask CSV, relative to root")
    classes: str = Field("oidv7-class-descriptions.csv", description="LabelName,DisplayName CSV, relative to root")
    images: str = Field("images", description="image folder, relative to root: <images>/<ImageID>.<image_ext>")
    image_ext: str = "jpg"
    masks: str = Field("masks", description="folder of mask PNGs and/or the masks zips, relative to root")
    samples: ReplaceSampleSpec | None = Field(None, description="make the bundled sample if root is missing")

    @model_validator(mode="after")
    def _sample_root(self) -> OpenImagesSourceConfig:
        return _sample_root_named(self, "open-images")

    def open(self, base: Path | None = None):
        from ieiw.sources.openimages import OpenImagesSource

        return OpenImagesSource(self.resolved_root(base), annotations=self.annotations, classes=self.classes,
                                images=self.images, image_ext=self.image_ext, masks=self.masks, limit=self.limit)


class ImageFolderSourceConfig(_SourceConfig):
    """Any folder of images, segmented by a ``regions`` backend (``sam`` or ``embedded``)."""

    type: Literal["proposals"] = "proposals"
    dataset: str = Field("images", description="the name regions and exemplars record as their dataset")
    extensions: list[str] = Field(["jpg", "jpeg", "png", "webp"], description="file name endings read (any case)")
    regions: backend_field("regions") = Field(  # type: ignore[valid-type]
        {"backend": "embedded"}, validate_default=True, description="the proposal backend")

    def open(self, base: Path | None = None):
        from ieiw.sources.image_folder import ImageFolderSource

        return ImageFolderSource(self.resolved_root(base), self.regions, dataset=self.dataset,
                                 extensions=self.extensions, limit=self.limit)

    def fingerprint(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"regions"}) | {"regions": self.regions.fingerprint()}

    def preflight(self, base: Path | None = None) -> list[str]:
        return self.regions.preflight() + super().preflight(base)


RegionSourceConfig = Annotated[
    SA1BSourceConfig | OpenImagesSourceConfig | ImageFolderSourceConfig, Field(discriminator="type")
]
