"""Keypoint datasets as their files are: COCO, CrowdPose, AIC (COCO-style JSON) and MPII (a JSON list).

The joint names each dataset's official code writes, the default split, the datasets' licence terms, and a
lenient reader of person records (bad content surfaces as a failure when a record is built, not here; a
file that is not the format at all raises :class:`PoseFormatError` naming the file). docs/formats.md,
"Keypoint datasets".

Leniency is per record: an entry that is no object, an id or a licence of a type no dict can hold (a list),
text with lone surrogates, a size of ``1e999``: each stays inside its own :class:`Person` (``record_error``,
a text made writable, a size of 0), so one crafted record never stops the file or changes another's row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ieiw.schemas.paths import path_under
from ieiw.schemas.rows import text_field

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
    record_error: str | None = None  # the entry is no object (then raw is {}): the builder fails it ``bad_record``

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
                self.people.append(Person(f"{index}:", "", self.image_folder, 0, 0, {}, record_error=(
                    f"entry {index} is a {type(entry).__name__}, not an object")))
                continue
            image = entry.get("image")
            label = "" if image is None else text_field(str(image)) or ""  # as written, surrogates made writable
            path, error = self._image_path(image)
            self.people.append(Person(f"{index}:{label}", label, path, 0, 0, entry, path_error=error))

    def _load_coco(self, data: Any) -> None:
        if not isinstance(data, dict) or not isinstance(data.get("annotations"), list) \
                or not isinstance(data.get("images"), list):
            raise PoseFormatError(f"{self.ann_path}: expected a COCO-style object with images and annotations "
                                  "lists")
        # entries whose id no dict can hold (a list, an object) match nothing; a later entry with an id wins,
        # as in the official COCO API
        licenses = {lic.get("id"): text_field(lic.get("name")) for lic in _entries(data.get("licenses"))
                    if _hashable(lic.get("id"))}
        images = {img.get("id"): img for img in _entries(data["images"]) if _hashable(img.get("id"))}
        cats = _entries(data.get("categories"))
        self.person_category = {c.get("id") for c in cats if c.get("keypoints") and _hashable(c.get("id"))} or {1}
        for index, ann in enumerate(data["annotations"]):
            if not isinstance(ann, dict):
                self.people.append(Person(f"#{index}", "", self.image_folder, 0, 0, {}, has_image=False,
                                          record_error=f"annotation {index} is a {type(ann).__name__}, not an object"))
                continue
            image_id = ann.get("image_id")
            info = _lookup(images, image_id) or {}
            path, error = self._image_path(self._file_name(image_id, info))
            self.people.append(Person(
                record_id=_record_id(ann.get("id"), index),
                image_id=text_field(str(image_id)) or "",
                image_path=path,
                width=_int(info.get("width")),
                height=_int(info.get("height")),
                raw=ann,
                url=_url(info),
                license=_lookup(licenses, info.get("license")) if self.dataset == "coco" else LICENSES[self.dataset],
                has_image=bool(info),
                path_error=error,
            ))

    def _image_path(self, name: Any) -> tuple[Path, str | None]:
        """The image file of ``name`` under the image folder, or (the folder, why not): an MPII ``image`` or
        a ``file_name`` of ``../x`` or ``/x``, one symlinked out of the folder, or no text at all, reads
        nothing."""
        try:
            return path_under(self.image_folder, name), None
        except ValueError as exc:  # PathOutsideRoot (or a lone surrogate's UnicodeEncodeError, on resolving)
            return self.image_folder, text_field(str(exc)) or "no file name"

    def _file_name(self, image_id: Any, info: dict[str, Any]) -> Any:
        """As the official loader names the file: COCO ``%012d.jpg``, CrowdPose ``{id}.jpg``, AIC file_name
        (whatever the file holds there: a name that is no text is refused by :meth:`_image_path`)."""
        if self.dataset == "aic" or not isinstance(image_id, int):
            return info.get("file_name", f"{image_id}.jpg")
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
    except UnicodeDecodeError as exc:  # bytes that are no UTF-8 (or a BOM that makes json read UTF-16)
        raise PoseFormatError(f"{path}: not valid JSON (bytes that are no {exc.encoding} at {exc.start}); a "
                              "damaged download? fetch it again") from None
    except RecursionError:
        raise PoseFormatError(f"{path}: not usable JSON (nested too deeply)") from None


def _entries(value: Any) -> list[dict[str, Any]]:
    """The objects of a list of entries (``licenses``, ``categories``); nothing when it is no list."""
    return [entry for entry in value if isinstance(entry, dict)] if isinstance(value, list) else []


def _hashable(value: Any) -> bool:
    """Whether ``value`` can be a dict key (a list or an object, as a crafted id, cannot)."""
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _lookup(table: dict[Any, Any], key: Any) -> Any:
    """``table[key]``, None when it is not there or ``key`` can be no dict key at all."""
    return table.get(key) if _hashable(key) else None


def _url(info: dict[str, Any]) -> str | None:
    """The image's page, as COCO states it (``coco_url``, else ``flickr_url``, else ``url``): the first that
    is text."""
    return next((url for url in map(text_field, (info.get(k) for k in ("coco_url", "flickr_url", "url"))) if url),
                None)


def _record_id(value: Any, index: int) -> str:
    """An annotation's ``id`` as text (surrogates made writable); its place, ``#index``, when it has none that
    is usable (missing, null, empty, not a number or text)."""
    if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
        return text_field(str(value)) or f"#{index}"
    return f"#{index}"


def _int(value: Any) -> int:
    """A stated size; 0 (no size stated) for anything that is no finite number."""
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return 0
