"""Bundled samples of the editing datasets, each in its release format (docs/multitask.md, "Editing data
importers"), deterministic: the same arguments give byte-identical files.

| dataset | files | images |
|---|---|---|
| InstructPix2Pix, ``clip-filtered`` | ``data/train-NNNNN-of-NNNNN-<hash>.parquet``: ``original_prompt``, ``original_image``, ``edit_prompt``, ``edited_prompt``, ``edited_image`` | JPEG in ``{bytes, path}`` |
| InstructPix2Pix, ``short`` | the same files: ``input_image``, ``edit_prompt``, ``edited_image`` | JPEG |
| MagicBrush | ``data/train-*.parquet``, ``data/dev-*.parquet``: ``img_id``, ``turn_index``, ``source_img``, ``mask_img``, ``instruction``, ``target_img`` | PNG; the mask an RGBA copy of the source, the edited region transparent |
| GIER | ``GIER.json`` (release fields), ``images/<post>_<post>.jpg`` + ``images/<post>_<edit>.{jpg,png}``, one output only in ``warped/``, ``url_dict.json`` | JPEG / PNG files |
| InstructPix2Pix, ``original`` | ``seeds.json``, ``<name>/prompt.json`` + ``<name>/{seed}_0.jpg``, ``{seed}_1.jpg`` (or the same in ``shard-NN.zip``), ``filtered-ip2p-thres5.5-0.5.json`` | JPEG files |
| GQA-Inpaint | ``meta_info.json`` (``../datasets/...`` paths), ``images/<id>.jpg``, ``images_inpainted/<id>/<object>.jpg``, ``masks/`` | JPEG files |

Parquet files carry the Hugging Face ``datasets`` features in their metadata (image columns are ``Image``), as
the hub's files do, and small row groups, so units cross row-group boundaries. Every edit is drawn: a shape of a
named colour added (InstructPix2Pix, MagicBrush: "add a red circle"), a global adjustment or an object removed
(GIER, GQA-Inpaint: "remove the red circle"), so a mis-paired row shows. MagicBrush sessions chain turns (turn k's source is turn k-1's target, byte for
byte) and one session's masks are stored at twice the image size, as some of MagicBrush's are. ``bad: true`` adds
the rows the tests name (see each spec in the importer modules). ``SAMPLE.json`` (the parameters; part of no
format) is written last and marks a finished sample.
"""

from __future__ import annotations

import json
import math
import zipfile
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from ieiw.samples.base import COLOURS, ensure_sample, synthetic_scene
from ieiw.schemas.rows import stable_hash

MARKER = "SAMPLE.json"
IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
SHAPES = ("circle", "square", "triangle")
NOT_AN_IMAGE = b"<html><body>503 Service Unavailable</body></html>"


# -- drawing --------------------------------------------------------------------------------------
def add_shape(pixels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str, np.ndarray]:
    """``pixels`` with one filled shape of a named colour added: (edited pixels, "a red circle", region 0/1) where
    the region is the shape's circumscribed disc, grown by 3 px (what an annotator would erase)."""
    height, width = pixels.shape[:2]
    colour = str(rng.choice(list(COLOURS)))
    kind = str(rng.choice(SHAPES))
    radius = float(rng.uniform(0.12, 0.2) * min(width, height))
    cx = float(rng.uniform(radius + 2, width - radius - 2))
    cy = float(rng.uniform(radius + 2, height - radius - 2))
    corners = {"circle": 32, "square": 4, "triangle": 3}[kind]
    turn = float(rng.uniform(0, math.pi))
    outline = [(cx + radius * math.cos(turn + 2 * math.pi * i / corners),
                cy + radius * math.sin(turn + 2 * math.pi * i / corners)) for i in range(corners)]
    canvas = Image.fromarray(pixels)
    ImageDraw.Draw(canvas).polygon(outline, fill=COLOURS[colour])
    yy, xx = np.mgrid[0:height, 0:width]
    region = ((xx - cx) ** 2 + (yy - cy) ** 2 <= (radius + 3) ** 2).astype(np.uint8)
    return np.asarray(canvas), f"a {colour} {kind}", region


def _encode(pixels: np.ndarray, fmt: str, mode: str | None = None) -> bytes:
    buffer = BytesIO()
    image = Image.fromarray(pixels, mode) if mode else Image.fromarray(pixels)
    if fmt == "JPEG":
        image.save(buffer, format="JPEG", quality=90)
    else:
        image.save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def _resized(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(Image.fromarray(pixels).resize((width, height), Image.Resampling.BICUBIC))


def _hf_metadata(features: dict[str, str]) -> dict[bytes, bytes]:
    """The ``huggingface`` schema metadata the hub's Parquet files carry: column -> ``Image`` or a ``Value``."""
    info = {name: {"_type": "Image"} if kind == "image" else {"dtype": kind, "_type": "Value"}
            for name, kind in features.items()}
    return {b"huggingface": json.dumps({"info": {"features": info}}).encode()}


def _write(path: Path, rows: list[dict[str, Any]], features: dict[str, str], row_group: int) -> None:
    types = {"image": IMAGE, "string": pa.string(), "int32": pa.int32()}
    schema = pa.schema([(name, types[kind]) for name, kind in features.items()], metadata=_hf_metadata(features))
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, row_group_size=row_group, compression="snappy")


def _hub_name(split: str, index: int, count: int, seed: int, dataset: str) -> str:
    """``data/{split}-00000-of-00002-<16 hex>.parquet``, the hub's naming (the hash is the file's, made up here)."""
    return f"data/{split}-{index:05d}-of-{count:05d}-{stable_hash(dataset, seed, split, index, length=16)}.parquet"


def _chunks(items: list, count: int) -> list[list]:
    bounds = np.linspace(0, len(items), count + 1).round().astype(int)
    return [items[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _marker(root: Path, **params: Any) -> None:
    (root / MARKER).write_text(json.dumps(params, sort_keys=True))


# -- InstructPix2Pix -----------------------------------------------------------------------------
IP2P_FEATURES = {
    "clip-filtered": {"original_prompt": "string", "original_image": "image", "edit_prompt": "string",
                      "edited_prompt": "string", "edited_image": "image"},
    "short": {"input_image": "image", "edit_prompt": "string", "edited_image": "image"},
}
IP2P_BAD = {1: "unreadable_image", 3: "empty_instruction", 5: "size_mismatch"}  # global row -> what is wrong


def make_ip2p_sample(root: Path, rows: int = 12, files: int = 2, row_group: int = 3, seed: int = 0,
                     width: int = 128, height: int = 128, layout: str = "clip-filtered", bad: bool = False,
                     shards: int = 0) -> Path:
    """InstructPix2Pix pairs in the hub's Parquet layout (module docstring). Two consecutive rows share a caption
    (the release has several seeds per prompt). With ``bad``, global rows 1, 3 and 5 (of at least 6) get an
    undecodable source, a blank instruction and a target of half the size (:data:`IP2P_BAD`). ``layout:
    original`` writes the original release instead (:func:`make_ip2p_original_sample`; ``files`` and
    ``row_group`` are Parquet's, ``shards`` its)."""
    if layout == "original":
        return make_ip2p_original_sample(root, rows=rows, shards=shards, seed=seed, width=width, height=height,
                                         bad=bad)
    if layout not in IP2P_FEATURES:
        raise ValueError(f"no InstructPix2Pix layout {layout!r}; layouts: {', '.join(IP2P_FEATURES)}, original")
    root = Path(root)
    rng = np.random.default_rng(seed)
    records = []
    for k in range(max(rows, 6) if bad else rows):
        source = synthetic_scene(rng, width, height)
        target, thing, _ = add_shape(source, rng)
        caption = f"a picture of shapes on a soft background, number {k // 2}"
        source_bytes, target_bytes = _encode(source, "JPEG"), _encode(target, "JPEG")
        edit = f"add {thing}"
        if bad and IP2P_BAD.get(k) == "unreadable_image":
            source_bytes = NOT_AN_IMAGE
        if bad and IP2P_BAD.get(k) == "empty_instruction":
            edit = "   "
        if bad and IP2P_BAD.get(k) == "size_mismatch":
            target_bytes = _encode(_resized(target, width // 2, height // 2), "JPEG")
        source_cell = {"bytes": source_bytes, "path": f"{k:07d}_0.jpg"}
        target_cell = {"bytes": target_bytes, "path": f"{k:07d}_1.jpg"}
        if layout == "clip-filtered":
            records.append({"original_prompt": caption, "original_image": source_cell, "edit_prompt": edit,
                            "edited_prompt": f"{caption}, with {thing}", "edited_image": target_cell})
        else:
            records.append({"input_image": source_cell, "edit_prompt": edit, "edited_image": target_cell})
    for index, chunk in enumerate(_chunks(records, files)):
        name = _hub_name("train", index, files, seed, "instructpix2pix")
        _write(root / name, chunk, IP2P_FEATURES[layout], row_group)
    _marker(root, dataset="instructpix2pix", rows=rows, files=files, row_group=row_group, seed=seed, width=width,
            height=height, layout=layout, bad=bad)
    return root


IP2P_FILTER_FILE = "filtered-ip2p-thres5.5-0.5.json"  # InstructDiffusion's name for its keep-list
IP2P_ORIGINAL_BAD = {1: "empty_instruction", 3: "bad_record", 5: "unreadable_image", 7: "missing_image",
                     8: "size_mismatch"}  # position in seeds.json -> what is wrong with that name's one seed
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # every member's date: the same arguments give the same bytes


def _zip_member(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    archive.writestr(info, data)


def make_ip2p_original_sample(root: Path, rows: int = 12, shards: int = 0, seed: int = 0, width: int = 128,
                              height: int = 128, bad: bool = False) -> Path:
    """InstructPix2Pix's original release, as ``dataset_creation/prepare_dataset.py`` leaves it and
    InstructDiffusion reads it (``ieiw.builders.ip2p``): ``seeds.json``, a sorted list of ``[name, [seed, ...]]``
    (seeds as text), and per name a folder ``<name>/`` with ``prompt.json`` (``input``, ``edit``, ``output``),
    ``metadata.jsonl`` (the generator's CLIP scores, not read) and ``{seed}_0.jpg`` / ``{seed}_1.jpg``. Name i has
    ``1 + i % 3`` seeds, ``rows`` pairs in all. ``shards`` > 0 packs the folders into ``shard-00.zip``, ... (name i
    in shard ``i % shards``) instead. Beside them, :data:`IP2P_FILTER_FILE`: InstructDiffusion's keep-list format,
    a JSON list of ``"<name>/<seed>"``, here every pair but each name's second seed, and one pair that is
    nowhere. With ``bad`` (then at least 6 good names), five more names of one seed at seeds.json positions 1, 3,
    5, 7, 8 (:data:`IP2P_ORIGINAL_BAD`, all in the 90 % train slice and on the keep-list): a blank edit, seeds
    that are no list, an undecodable source, a missing target, a target of half the size."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    plan: list[int] = []  # seeds per good name; with bad, at least 6 names, so the bad ones sit in the train slice
    while sum(plan) < rows or (bad and len(plan) < 6):
        plan.append(max(1, min(1 + len(plan) % 3, rows - sum(plan))))
    total = len(plan) + (len(IP2P_ORIGINAL_BAD) if bad else 0)
    bad_at = IP2P_ORIGINAL_BAD if bad else {}
    good = iter(plan)
    entries: list[Any] = []
    members: dict[str, list[tuple[str, bytes]]] = {}
    keep: list[str] = []
    for position in range(total):
        name = f"{position * 37 + 11:07d}"
        what = bad_at.get(position)
        count = 1 if what else next(good)
        seeds = sorted(str(int(rng.integers(0, 1 << 32))) for _ in range(count))
        caption = f"a picture of shapes on a soft background, number {position}"
        files: list[tuple[str, bytes]] = []
        metadata = []
        edit = None
        for k, value in enumerate(seeds):
            source = synthetic_scene(rng, width, height)
            target, thing, _ = add_shape(source, rng)
            edit = edit or f"add {thing}"
            source_bytes, target_bytes = _encode(source, "JPEG"), _encode(target, "JPEG")
            if what == "unreadable_image":
                source_bytes = NOT_AN_IMAGE
            if what == "size_mismatch":
                target_bytes = _encode(_resized(target, width // 2, height // 2), "JPEG")
            files.append((f"{value}_0.jpg", source_bytes))
            if what != "missing_image":
                files.append((f"{value}_1.jpg", target_bytes))
            metadata.append({"seed": int(value), "p2p_threshold": round(float(rng.uniform(0.1, 0.9)), 4),
                             "cfg_scale": round(float(rng.uniform(7.5, 15)), 4),
                             "clip_sim_0": 0.25, "clip_sim_1": 0.26, "clip_sim_dir": 0.3, "clip_sim_image": 0.8})
            if k != 1:
                keep.append(f"{name}/{value}")
        prompt = {"input": caption, "edit": "   " if what == "empty_instruction" else edit,
                  "output": f"{caption}, with {edit.removeprefix('add ')}"}
        files.insert(0, ("prompt.json", json.dumps(prompt).encode()))
        files.append(("metadata.jsonl", "".join(json.dumps(m) + "\n" for m in metadata).encode()))
        members[name] = files
        entries.append([name, seeds[0] if what == "bad_record" else seeds])
    keep.append("9999999/123")  # a pair seeds.json does not have: the list is matched, never read as records
    root.mkdir(parents=True, exist_ok=True)
    if shards > 0:
        archives = [zipfile.ZipFile(root / f"shard-{j:02d}.zip", "w") for j in range(shards)]
        for position, (name, files) in enumerate(members.items()):
            for file, data in files:
                _zip_member(archives[position % shards], f"{name}/{file}", data)
        for archive in archives:
            archive.close()
    else:
        for name, files in members.items():
            (root / name).mkdir()
            for file, data in files:
                (root / name / file).write_bytes(data)
    (root / "seeds.json").write_text(json.dumps(entries))
    (root / IP2P_FILTER_FILE).write_text(json.dumps(sorted(keep)))
    _marker(root, dataset="instructpix2pix", rows=rows, seed=seed, width=width, height=height, layout="original",
            shards=shards, bad=bad)
    return root


def ensure_ip2p_sample(root: Path, **kwargs: Any) -> bool:
    """:func:`make_ip2p_sample` at ``root`` unless it is there (race-safe:
    :func:`ieiw.samples.base.ensure_sample`)."""
    return ensure_sample(root, lambda folder: make_ip2p_sample(folder, **kwargs), MARKER)


# -- MagicBrush ----------------------------------------------------------------------------------
MAGICBRUSH_FEATURES = {"img_id": "string", "turn_index": "int32", "source_img": "image", "mask_img": "image",
                       "instruction": "string", "target_img": "image"}
MAGICBRUSH_VERBS = ("add {thing}", "put {thing} in the picture", "let there be {thing}")


def _mask_image(source: np.ndarray, region: np.ndarray, scale: int) -> bytes:
    """The source with ``region`` transparent (how MagicBrush stores a mask), at ``scale`` times its size."""
    alpha = np.where(region > 0, 0, 255).astype(np.uint8)
    rgba = np.dstack([source, alpha])
    if scale != 1:
        height, width = region.shape
        big = Image.fromarray(rgba, "RGBA").resize((width * scale, height * scale), Image.Resampling.NEAREST)
        rgba = np.asarray(big)
    return _encode(np.ascontiguousarray(rgba), "PNG", "RGBA")


def make_magicbrush_sample(root: Path, sessions: int = 6, row_group: int = 4, seed: int = 0, width: int = 128,
                           height: int = 128, bad: bool = False) -> Path:
    """MagicBrush sessions in the hub's layout: session s has 1 + s % 3 turns; every fourth session is ``dev``,
    the rest ``train`` over two files. Session 1's masks are stored at twice the image size. With ``bad``, the
    first train file ends with four more rows: an undecodable target, a blank instruction, a target 16 px wider,
    and a copy of its first row (a repeated ``img_id`` and ``turn_index``)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    split_rows: dict[str, list[dict[str, Any]]] = {"train": [], "dev": []}
    for s in range(sessions):
        img_id = str(int(rng.integers(1, 581_000)))
        current = _encode(synthetic_scene(rng, width, height), "PNG")
        pixels = np.asarray(Image.open(BytesIO(current)).convert("RGB"))
        for turn in range(1, 2 + s % 3):
            edited, thing, region = add_shape(pixels, rng)
            target = _encode(edited, "PNG")
            verb = MAGICBRUSH_VERBS[int(rng.integers(len(MAGICBRUSH_VERBS)))]
            split_rows["dev" if s % 4 == 3 else "train"].append({
                "img_id": img_id, "turn_index": turn,
                "source_img": {"bytes": current,
                               "path": f"{img_id}-input.png" if turn == 1 else f"{img_id}-output{turn - 1}.png"},
                "mask_img": {"bytes": _mask_image(pixels, region, 2 if s == 1 else 1),
                             "path": f"{img_id}-mask{turn}.png"},
                "instruction": verb.format(thing=thing),
                "target_img": {"bytes": target, "path": f"{img_id}-output{turn}.png"},
            })
            current, pixels = target, edited
    files = {"train": _chunks(split_rows["train"], 2), "dev": [split_rows["dev"]]}
    if bad:
        first = files["train"][0]
        base = dict(first[0])
        extra = []
        for k, what in enumerate(("unreadable", "blank", "wider")):
            row = dict(base, img_id=str(900_001 + k), turn_index=1)
            if what == "unreadable":
                row["target_img"] = {"bytes": NOT_AN_IMAGE, "path": "900001-output1.png"}
            elif what == "blank":
                row["instruction"] = ""
            else:
                wide = np.asarray(Image.open(BytesIO(base["target_img"]["bytes"])).convert("RGB"))
                row["target_img"] = {"bytes": _encode(_resized(wide, width + 16, height), "PNG"),
                                     "path": "900003-output1.png"}
            extra.append(row)
        first.extend(extra + [dict(base)])
    for split, chunks in files.items():
        for index, chunk in enumerate(chunks):
            name = _hub_name(split, index, len(chunks), seed, "magicbrush")
            _write(root / name, chunk, MAGICBRUSH_FEATURES, row_group)
    _marker(root, dataset="magicbrush", sessions=sessions, row_group=row_group, seed=seed, width=width, height=height,
            bad=bad)
    return root


def ensure_magicbrush_sample(root: Path, **kwargs: Any) -> bool:
    """:func:`make_magicbrush_sample` at ``root`` unless it is there (race-safe)."""
    return ensure_sample(root, lambda folder: make_magicbrush_sample(folder, **kwargs), MARKER)


# -- GIER ----------------------------------------------------------------------------------------
ALNUM = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
GIER_EDITS = {  # operator -> (expert summaries, amateur summaries, the user's request)
    "brightness": (["make the photo brighter", "increase the brightness of the image"], ["lighten it up"],
                   "Can someone brighten this up? It came out so dark"),
    "contrast": (["increase the contrast", "add more contrast to the picture"], ["more contrast please"],
                 "This looks flat, could anyone make it pop?"),
    "saturation": (["turn the image black and white", "make the picture grayscale"], ["remove all colour"],
                   "Black and white version please!"),
    "inpaint_obj": (["remove the {thing}", "erase the {thing} from the picture"], ["get rid of the {thing}"],
                    "Please remove the {thing}, it ruins the shot"),
}


def _adjust(op: str, pixels: np.ndarray) -> np.ndarray:
    """A global edit of :data:`GIER_EDITS` applied to ``pixels``."""
    values = pixels.astype(np.float64)
    if op == "brightness":
        return np.clip(values * 1.25 + 12, 0, 255).astype(np.uint8)
    if op == "contrast":
        return np.clip((values - 128) * 1.4 + 128, 0, 255).astype(np.uint8)
    grey = values @ np.array([0.299, 0.587, 0.114])
    return np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def _token(rng: np.random.Generator, length: int) -> str:
    return "".join(ALNUM[int(i)] for i in rng.integers(0, len(ALNUM), size=length))


def make_gier_sample(root: Path, pairs: int = 8, seed: int = 0, width: int = 128, height: int = 96,
                     bad: bool = False) -> Path:
    """GIER pairs in the release layout (module docstring). Pair k edits photo ``2k // 3``, so some photos have
    two edits; the edits cycle through brightness, contrast, saturation (black and white) and an object removal
    (that photo has the object, the output is the photo without it). Pair 1's output is 1.5 times larger
    (people's edits may resize); pair 2's output is only in ``warped/``. With ``bad``, four more pairs: an output
    that is nowhere, an undecodable input, no instruction at all, and a second pair naming pair 0's output."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ops = list(GIER_EDITS)
    photo_of = [k * 2 // 3 for k in range(pairs)]
    op_of = [ops[k % len(ops)] for k in range(pairs)]
    photos: dict[int, tuple[str, np.ndarray, np.ndarray, str]] = {}
    for index in sorted(set(photo_of)):
        post = f"{index + 1}{_token(rng, 5).lower()}"
        base = synthetic_scene(rng, width, height)
        photo, thing = base, ""
        if any(op_of[k] == "inpaint_obj" for k in range(pairs) if photo_of[k] == index):
            photo, thing, _ = add_shape(base, rng)
            thing = thing.split(" ", 1)[1]
        photos[index] = (post, base, photo, thing)
        (root / "images" / f"{post}_{post}.jpg").write_bytes(_encode(photo, "JPEG"))
    records, urls = [], {}
    for k in range(pairs):
        post, base, photo, thing = photos[photo_of[k]]
        op = op_of[k]
        target = base if op == "inpaint_obj" else _adjust(op, photo)
        if k == 1:
            target = _resized(target, width * 3 // 2, height * 3 // 2)
        edit, ext = _token(rng, 7), "png" if k % 3 == 0 else "jpg"
        inp, out = f"{post}_{post}.jpg", f"{post}_{edit}.{ext}"
        folder = root / ("warped" if k == 2 else "images")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / out).write_bytes(_encode(target, "PNG" if ext == "png" else "JPEG"))
        expert, amateur, request = GIER_EDITS[op]
        local = op == "inpaint_obj"
        records.append({
            "input": inp, "output": out, "segment": f"{post}/{post}.jpg", "palette": f"{post}/{post}plt.jpg",
            "request": request.format(thing=thing), "detailed_request": "",
            "dataset": "reddit" if k % 2 else "zhopped", "workerId": "A" + _token(rng, 12).upper(),
            "operator": {op: {"local": local, "ids": [0] if local else []}},
            "expert_summary": [e.format(thing=thing) for e in expert],
            "amateur_summary": [a.format(thing=thing) for a in amateur],
        })
        urls[inp] = f"https://example.invalid/imgur/{post}.jpg"
        urls[out] = f"https://example.invalid/imgur/{edit}.{ext}"
    if bad:
        first = records[0]
        post = first["input"].split("_")[0]
        broken = "9" + _token(rng, 5).lower()
        (root / "images" / f"{broken}_{broken}.jpg").write_bytes(NOT_AN_IMAGE)
        records += [
            dict(first, output=f"{post}_{_token(rng, 7)}.jpg"),  # an output written nowhere
            dict(first, input=f"{broken}_{broken}.jpg", output=f"{broken}_{_token(rng, 7)}.jpg"),
            dict(first, output=f"{post}_{_token(rng, 7)}.jpg", expert_summary=[], amateur_summary=[], request=""),
            dict(first),
        ]
    (root / "url_dict.json").write_text(json.dumps(urls, sort_keys=True))
    (root / "GIER.json").write_text(json.dumps(records))
    _marker(root, dataset="gier", pairs=pairs, seed=seed, width=width, height=height, bad=bad)
    return root


def ensure_gier_sample(root: Path, **kwargs: Any) -> bool:
    """:func:`make_gier_sample` at ``root`` unless it is there (race-safe)."""
    return ensure_sample(root, lambda folder: make_gier_sample(folder, **kwargs), MARKER)


# -- GQA-Inpaint -----------------------------------------------------------------------------------
GQA_SOURCE_PREFIX = "../datasets/images"  # how InstructDiffusion's meta_info.json names an original photo
GQA_TARGET_PREFIX = "../datasets/gqa-inpaint/images_inpainted"  # ... and an inpainted one
GQA_BAD = {0: "bad_record", 1: "bad_record", 2: "path_outside_root", 3: "missing_image", 4: "unreadable_image",
           5: "empty_instruction"}  # index after the good records -> what is wrong


def _where(region: np.ndarray) -> str:
    """Where a region lies across the picture, as GQA-Inpaint's instructions say it: left, center or right."""
    xs = np.nonzero(region)[1]
    third = region.shape[1] / 3
    centre = float(xs.mean()) if xs.size else region.shape[1] / 2
    return "left" if centre < third else "right" if centre >= 2 * third else "center"


def make_gqa_inpaint_sample(root: Path, pairs: int = 8, seed: int = 0, width: int = 128, height: int = 96,
                            bad: bool = False) -> Path:
    """GQA-Inpaint pairs in InstructDiffusion's layout (``ieiw.builders.gqa_inpaint``): ``images/<id>.jpg`` (the
    photo, with its objects), ``images_inpainted/<id>/<object>.jpg`` (the photo with that object painted over by
    the background), ``masks/<id>/<object>.jpg`` and ``meta_info.json`` naming them with the official
    ``../datasets`` prefixes, source = the photo, target = the inpainted one, "remove the red circle (at the
    left)". Pair k removes an object of photo ``2k // 3``, so some photos lose either of two objects. Pair 1's
    inpainted image is stored at half the size. With ``bad``, six more records (:data:`GQA_BAD`): a string, an
    object without a target path, a target path leading out of the root, a target that is not there, an
    undecodable source, a blank instruction."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    photo_of = [k * 2 // 3 for k in range(pairs)]
    photos: dict[int, tuple[str, np.ndarray, np.ndarray, list[tuple[str, str, np.ndarray]]]] = {}
    (root / "images").mkdir(parents=True, exist_ok=True)
    for index in sorted(set(photo_of)):  # (image id, background, the photo with its objects, the objects)
        image_id = str(int(rng.integers(2_300_000, 2_420_000)))
        base = synthetic_scene(rng, width, height)
        photo, objects = base, []
        for _ in range(photo_of.count(index)):
            photo, thing, region = add_shape(photo, rng)
            objects.append((str(int(rng.integers(1_000_000, 4_000_000))), thing.split(" ", 1)[1], region))
        photos[index] = (image_id, base, photo, objects)
        (root / "images" / f"{image_id}.jpg").write_bytes(_encode(photo, "JPEG"))
    records: list[Any] = []
    used = dict.fromkeys(photos, 0)
    for k in range(pairs):
        image_id, base, photo, objects = photos[photo_of[k]]
        object_id, thing, region = objects[used[photo_of[k]]]
        used[photo_of[k]] += 1
        inpainted = np.where(region[..., None] > 0, base, photo).astype(np.uint8)
        if k == 1:
            inpainted = _resized(inpainted, width // 2, height // 2)
        folder = root / "images_inpainted" / image_id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{object_id}.jpg").write_bytes(_encode(inpainted, "JPEG"))
        (root / "masks" / image_id).mkdir(parents=True, exist_ok=True)
        (root / "masks" / image_id / f"{object_id}.jpg").write_bytes(_encode((region * 255).astype(np.uint8), "JPEG"))
        instruction = f"remove the {thing}" + (f" at the {_where(region)}" if k % 2 else "")
        records.append({"source_image_path": f"{GQA_SOURCE_PREFIX}/{image_id}.jpg",
                        "target_image_path": f"{GQA_TARGET_PREFIX}/{image_id}/{object_id}.jpg",
                        "instruction": instruction})
    if bad:
        first = records[0]
        broken = str(int(rng.integers(2_420_000, 2_500_000)))
        (root / "images" / f"{broken}.jpg").write_bytes(NOT_AN_IMAGE)
        records += [
            first["source_image_path"],  # not an object
            {"source_image_path": first["source_image_path"], "instruction": first["instruction"]},
            dict(first, target_image_path="../datasets/gqa-inpaint/../../outside/planted.jpg"),
            dict(first, target_image_path=f"{GQA_TARGET_PREFIX}/{broken}/1.jpg"),
            dict(first, source_image_path=f"{GQA_SOURCE_PREFIX}/{broken}.jpg"),
            dict(first, instruction="  "),
        ]
    (root / "meta_info.json").write_text(json.dumps(records))
    _marker(root, dataset="gqa-inpaint", pairs=pairs, seed=seed, width=width, height=height, bad=bad)
    return root


def ensure_gqa_inpaint_sample(root: Path, **kwargs: Any) -> bool:
    """:func:`make_gqa_inpaint_sample` at ``root`` unless it is there (race-safe)."""
    return ensure_sample(root, lambda folder: make_gqa_inpaint_sample(folder, **kwargs), MARKER)
