"""Keypoint datasets as their files are: COCO, CrowdPose, AIC (COCO-style JSON) and MPII (a JSON list).

The joint names each dataset's official code writes, the default split, the datasets' licence terms, and a
lenient reader of person records (bad content surfaces as a failure when a record is built, not here; a
file that is not the format at all raises :class:`PoseFormatError` naming the file). docs/formats.md,
"Keypoint datasets".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ieiw.schemas.paths import PathOutsideRoot, path_under

DATASETS = ("coco", "crowdpose", "mpii", "aic")

# Joint names as the official code writes them (docs/formats.md "Keypoint datasets").
JOINTS: dict[str, tuple[str, ...]] = {
    "coco": ("nose", "left eye", "right eye", "left ear", "right ear", "left shoulder", "right shoulder",
             "left elbow", "right elbow", "left wrist", "right wrist", "left hip", "right hip", "left knee",
             "right knee", "left ankle", "right ankle"),
    "crowdpose": ("left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
                  "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "top_head",
                  "neck"),
    "aic": ("right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist",
            "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle", "head_top", "neck"),
    "mpii": ("right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "pelvis", "thorax",
             "upper_neck", "head_top", "right_wrist", "right_elbow", "right_shoulder", "left_shoulder",
             "left_elbow", "left_wrist"),
}
WORDS = {"top_head": "top of the head", "head_top": "top of the head"}

LICENSES = {  # COCO rows take the image's own licence from the file; these are the datasets' terms
    "coco": None,
    "crowdpose": "CrowdPose terms (images from COCO, MPII and AI Challenger)",
    "aic": "AI Challenger terms",
    "mpii": "MPII Human Pose terms",
}


def default_split(dataset: str) -> str:
    return "train2017" if dataset == "coco" else "train"


class PoseFormatError(ValueError):
    """An annotation file ieiw cannot use at all; the one-line message names the file."""


@dataclass(frozen=True)
class Person:
    """One person record, read leniently (bad content surfaces as a failure when the record is built)."""

    record_id: str
    image_id: str
    image_path: Path
    width: int  # 0 when the annotation file states no size (MPII)
    height: int
    raw: dict[str, Any]
    url: str | None = None
    license: str | None = None
    has_image: bool = True  # False: a COCO-style image_id missing from the file's images list
    path_error: str | None = None  # the image name is no path under the image folder (then image_path is the
    # folder): the builder fails the record ``path_outside_root`` and reads nothing

    @property
    def tag(self) -> str:
        """The record's part of file names: the annotation id, or MPII's entry index."""
        return self.record_id.split(":", 1)[0]


@dataclass
class PoseSource:
    """The parsed annotation file: person records in file order, with their images' entries."""

    dataset: str
    ann_path: Path
    image_folder: Path
    limit: int | None = None
    people: list[Person] = field(default_factory=list)
    person_category: set[Any] = field(default_factory=set)

    @classmethod
    def load(cls, dataset: str, ann_path: Path, image_folder: Path, limit: int | None = None) -> PoseSource:
        src = cls(dataset, ann_path, image_folder, limit)
        data = _read_json(src.ann_path)
        if dataset == "mpii":
            src._load_mpii(data)
        else:
            src._load_coco(data)
        if src.limit:
            src.people = src.people[: src.limit]
        return src

    def _load_mpii(self, data: Any) -> None:
        if not isinstance(data, list):
            raise PoseFormatError(f"{self.ann_path}: expected MPII's list of {{image, center, scale, joints, "
                                  f"joints_vis}}, found {type(data).__name__}")
        for index, entry in enumerate(data):
            if not isinstance(entry, dict):
                raise PoseFormatError(f"{self.ann_path}: entry {index} is a {type(entry).__name__}, not an object")
            image = str(entry.get("image", ""))
            path, error = self._image_path(image)
            self.people.append(Person(f"{index}:{image}", image, path, 0, 0, entry, path_error=error))

    def _load_coco(self, data: Any) -> None:
        if not isinstance(data, dict) or not isinstance(data.get("annotations"), list) \
                or not isinstance(data.get("images"), list):
            raise PoseFormatError(f"{self.ann_path}: expected a COCO-style object with images and annotations "
                                  "lists")
        licenses = {lic.get("id"): lic.get("name") for lic in data.get("licenses") or [] if isinstance(lic, dict)}
        images = {img.get("id"): img for img in data["images"] if isinstance(img, dict)}
        cats = [c for c in data.get("categories") or [] if isinstance(c, dict)]
        self.person_category = {c.get("id") for c in cats if c.get("keypoints")} or {1}
        for index, ann in enumerate(data["annotations"]):
            if not isinstance(ann, dict):
                raise PoseFormatError(f"{self.ann_path}: annotation {index} is a {type(ann).__name__}, not an object")
            image_id = ann.get("image_id")
            info = images.get(image_id, {})
            path, error = self._image_path(self._file_name(image_id, info))
            self.people.append(Person(
                record_id=str(ann.get("id", f"#{index}")),
                image_id=str(image_id),
                image_path=path,
                width=_int(info.get("width")),
                height=_int(info.get("height")),
                raw=ann,
                url=info.get("coco_url") or info.get("flickr_url") or info.get("url"),
                license=licenses.get(info.get("license")) if self.dataset == "coco" else LICENSES[self.dataset],
                has_image=bool(info),
                path_error=error,
            ))

    def _image_path(self, name: str) -> tuple[Path, str | None]:
        """The image file of ``name`` under the image folder, or (the folder, why not): an MPII ``image`` or
        a ``file_name`` of ``../x`` or ``/x``, or one symlinked out of the folder, reads nothing."""
        try:
            return path_under(self.image_folder, name), None
        except PathOutsideRoot as exc:
            return self.image_folder, str(exc)

    def _file_name(self, image_id: Any, info: dict[str, Any]) -> str:
        """As the official loader names the file: COCO ``%012d.jpg``, CrowdPose ``{id}.jpg``, AIC file_name."""
        if self.dataset == "aic" or not isinstance(image_id, int):
            return str(info.get("file_name", f"{image_id}.jpg"))
        return f"{image_id:012d}.jpg" if self.dataset == "coco" else f"{image_id}.jpg"


def _read_json(path: Path) -> Any:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: annotation file not found") from None
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise PoseFormatError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); a "
                              "truncated download? fetch it again") from None


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
