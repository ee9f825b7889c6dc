"""Any folder of images as a replacement source: each image segmented by a ``regions`` backend.

The folder is read recursively, sorted by relative path, each image decoded upright (EXIF orientation
applied) and handed to a proposer (:mod:`ieiw.backends.regions`: SAM, or the embedded CPU segmenter).
Failure reason: ``unreadable_image``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ieiw.schemas.lazy import locked_cached_property
from ieiw.sources.regions import ImageRegions, failure, load_source_image


class ImageFolderSource:
    """Every image under ``root`` (recursively, sorted by relative path), segmented by a proposer made
    from ``regions`` (a ``regions`` backend config) on first use, or the ``proposer`` given."""

    def __init__(self, root: Path, regions: Any, dataset: str = "images",
                 extensions: list[str] | tuple[str, ...] = ("jpg", "jpeg", "png", "webp"), limit: int | None = None,
                 proposer: Any = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: not found (an image folder to segment)")
        self.regions = regions
        self.dataset = dataset
        self.extensions = {e.lower().lstrip(".") for e in extensions}
        self.limit = limit
        if proposer is not None:
            self.proposer = proposer

    @locked_cached_property
    def files(self) -> list[Path]:
        found = sorted((p for p in self.root.rglob("*")
                        if p.is_file() and p.suffix.lower().lstrip(".") in self.extensions),
                       key=lambda p: p.relative_to(self.root).as_posix())
        return found[: self.limit] if self.limit else found

    @locked_cached_property
    def proposer(self) -> Any:
        return self.regions.create()

    def problems(self) -> list[str]:
        if not self.files:
            return [f"{self.root}: no images ({', '.join(sorted(self.extensions))}) in it or below it"]
        return []

    def count(self) -> int:
        return len(self.files)

    def image_id(self, path: Path) -> str:
        return path.relative_to(self.root).with_suffix("").as_posix()

    def read(self, start: int, stop: int) -> list[ImageRegions]:
        from ieiw.imageio import ImageDecodeError, Orientation, decode

        out = []
        for path in self.files[start:stop]:
            image_id = self.image_id(path)
            entry = dict(dataset=self.dataset, image_id=image_id, image_path=path, source_file=str(path),
                         orientation="apply")
            try:
                pixels = decode(path.read_bytes(), Orientation.APPLY).pixels
            except (ImageDecodeError, OSError) as exc:
                out.append(ImageRegions(**entry, width=0, height=0,
                                        failures=(failure("unreadable_image", image_id, path, str(exc)),)))
                continue
            height, width = pixels.shape[:2]
            regions = self.proposer.propose(pixels, dataset=self.dataset, image_id=image_id, image_path=path,
                                            source_file=str(path))
            out.append(ImageRegions(**entry, width=width, height=height, regions=tuple(regions), pixels=pixels))
        return out

    def load_image(self, entry: ImageRegions, fmt: str | None = None, quality: int | None = None):
        return load_source_image(entry, fmt, quality)

