"""Adaptation-stage rows: a converter's rendered target paired with a caption of its image (issue #13 item 4).

The paper's first training stage fine-tunes Stable Diffusion, text to image, on pictures of the output
domains (colour overlays, marked joints), each captioned with its image's own caption plus a domain
suffix ("with a few different color patches here and there"). A converter with ``captions:`` set writes,
beside each edit row whose target it rendered, one more row:

- task ``caption-overlay`` (segmentation converters) or ``caption-keypoints`` (keypoints), family
  ``adaptation``, so selection writes it to ``out/adaptation/``;
- the same source, target and mask cells as the edit row (the target is the rendered picture the
  adapt stage learns to draw);
- ``instruction`` = one caption of the image (picked by the edit row's id among the image's captions),
  **without** the suffix: the trainer appends it exactly once (``data.caption_suffixes``, keyed by task),
  so one folder serves any suffix wording.

Rows whose target is the untouched source (an absent class, gRefCOCO's no-target refs) get no caption
row: they show no output-domain picture. An image the captions file does not caption gets none either;
it is counted (``uncaptioned_rows``), not a failure.

Captions come from a COCO captions file (``annotations/captions_train2017.json``, or ``_train2014`` for
RefCOCO's images): ``{"images": [{"id", "file_name", ...}], "annotations": [{"id", "image_id",
"caption"}]}``. Captions are matched to an image by its id, or else by its file name through ``images``
(so a captions file for another dataset, in COCO's format, works too). Text is tidied the way real COCO
captions need: whitespace runs and newlines collapsed, a final full stop dropped (the suffix follows a
comma), exact repeats of one image's caption kept once. An annotation with no text or no usable image id
is counted in ``unusable`` and left out.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ieiw.schemas.filehash import path_digest
from ieiw.schemas.rows import canonical_json, row_id

OVERLAY_TASK = "caption-overlay"  # registered (family "adaptation") in ieiw.schemas.registry
KEYPOINTS_TASK = "caption-keypoints"

# The trainer's default domain suffixes (ieiw.training.config.DataConfig.caption_suffixes), by task. The
# paper quotes "with a few different color patches here and there" and "surrounded with a red circle"
# without saying which domain each belongs to; our keypoint targets carry discs of up to nine colours, so
# their suffix says so.
DEFAULT_SUFFIXES = {
    OVERLAY_TASK: "with a few different color patches here and there",
    KEYPOINTS_TASK: "with a few different color circles here and there",
}


class CaptionsFormatError(ValueError):
    """A captions file that cannot be used at all; the one-line message names the file."""


@dataclass(frozen=True)
class Caption:
    id: Any  # the annotation's id as written (int in COCO)
    text: str


def tidy(text: str) -> str:
    """One line, single spaces, no final full stop: ``"A man riding a horse . \\n"`` -> ``"A man riding a horse"``."""
    text = " ".join(text.split())
    while text.endswith((".", ",", ";")):
        text = text[:-1].rstrip()
    return text


def coco_id(value: Any) -> int | None:
    """A COCO id as written in the wild: an int, an integral float, or a digit string ("000000000139")."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdecimal():  # isdigit() also takes "²"
        try:
            return int(value.strip())
        except ValueError:  # more digits than int() converts (4300)
            return None
    return None


def _key(value: Any) -> int | str | None:
    """An image id as a dict key: the integer when it is one, else the trimmed text."""
    number = coco_id(value)
    if number is not None:
        return number
    return value.strip() if isinstance(value, str) and value.strip() else None


class Captions:
    """The captions of one COCO-format file, by image id (read once per process, see :func:`load_captions`)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            data = json.loads(self.path.read_text(encoding="utf-8-sig"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.path}: captions file not found") from None
        except UnicodeDecodeError as exc:
            raise CaptionsFormatError(f"{self.path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        except json.JSONDecodeError as exc:
            raise CaptionsFormatError(f"{self.path}:{exc.lineno}:{exc.colno}: not JSON ({exc.msg})") from None
        if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
            raise CaptionsFormatError(f"{self.path}: expected COCO captions, an object with an 'annotations' list")
        self.by_image: dict[Any, list[Caption]] = {}
        self.unusable = 0
        for ann in data["annotations"]:
            image = _key(ann.get("image_id")) if isinstance(ann, dict) else None
            text = tidy(ann["caption"]) if image is not None and isinstance(ann.get("caption"), str) else ""
            if not text:
                self.unusable += 1
                continue
            found = self.by_image.setdefault(image, [])
            if all(c.text != text for c in found):
                found.append(Caption(ann.get("id"), text))
        for found in self.by_image.values():  # file order does not decide which caption a row gets
            found.sort(key=lambda c: (str(type(c.id)), c.id if isinstance(c.id, int | str) else str(c.id), c.text))
        self.by_file: dict[str, Any] = {}
        for info in data.get("images") or []:
            if isinstance(info, dict) and isinstance(info.get("file_name"), str) and _key(info.get("id")) is not None:
                self.by_file[Path(info["file_name"]).name] = _key(info["id"])
        if not self.by_image:
            raise CaptionsFormatError(f"{self.path}: no annotation with an image_id and caption text")

    def for_image(self, image_id: Any, file_name: str | None = None) -> list[Caption]:
        found = self.by_image.get(_key(image_id))
        if not found and file_name:
            found = self.by_image.get(self.by_file.get(Path(file_name).name))
        return found or []


@functools.lru_cache(maxsize=8)
def _cached(path: str, mtime_ns: int, size: int) -> Captions:
    return Captions(Path(path))


def load_captions(path: str | Path) -> Captions:
    """The file's :class:`Captions`, parsed once per process and again only when the file changes."""
    resolved = Path(path).expanduser().resolve()
    try:
        stat = os.stat(resolved)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: captions file not found") from None
    return _cached(str(resolved), stat.st_mtime_ns, stat.st_size)


def caption_row(row: dict[str, Any], captions: list[Caption], task: str) -> dict[str, Any]:
    """The adaptation row of edit row ``row``: same cells, one caption (chosen by the edit row's id), ``task``."""
    if not captions:
        raise ValueError(f"row {row['id']}: no caption to use")
    caption = captions[int(row["id"][:8], 16) % len(captions)]
    origin = dict(row["origin"])
    origin["record_id"] = f"{origin['record_id']}:caption"
    builder = dict(row["builder"])
    params = json.loads(builder["params"]) if builder.get("params") else {}
    params.pop("redraw", None)  # a caption row trains as stored: its text is a caption, not a template's
    builder["params"] = canonical_json({**params, "caption_of": row["id"], "caption_id": caption.id})
    rid = row_id(origin["dataset"], origin["record_id"], builder["name"], {"caption_of": row["id"]}, task)
    return {**row, "id": rid, "task": task, "instruction": caption.text, "origin": origin, "builder": builder}


def add_caption_rows(rows: list[dict[str, Any]], captions_path: Path | None, task: str,
                     counters: Any, rendered: Any = lambda row: True) -> list[dict[str, Any]]:
    """``rows`` plus, after each rendered one with a caption for its image, its adaptation row."""
    if captions_path is None:
        return rows
    captions = load_captions(captions_path)
    out: list[dict[str, Any]] = []
    for row in rows:
        out.append(row)
        if not rendered(row):
            continue
        origin = row["origin"]
        found = captions.for_image(origin.get("image_id"), (row.get("source_image") or {}).get("path"))
        if found:
            out.append(caption_row(row, found, task))
            counters["caption_rows"] += 1
        else:
            counters["uncaptioned_rows"] += 1
    return out


def captions_fingerprint(path: Path | None) -> str | None:
    """The captions file's content digest (part of a converter's fingerprint: new captions, new rows)."""
    return None if path is None or not Path(path).exists() else path_digest(Path(path))


def captions_preflight(section: str, path: Path | None) -> list[str]:
    """One line when the section's captions file is missing or unusable."""
    if path is None:
        return []
    try:
        load_captions(path)
    except (FileNotFoundError, CaptionsFormatError) as exc:
        return [f"{section}.captions: {exc}"]
    return []


# -- samples -------------------------------------------------------------------------------------
