"""Object replacement: IEIW's second source ("change the A to B", docs/replacement.md).

Three steps, as in the paper, over region sources (SA-1B, Open Images, or SAM / embedded proposals on
an image folder):

1. **index stage, per unit** (:meth:`ReplacementBuilder.index_unit`): read the unit's images and
   regions, apply the region policy (skips counted by reason), cut each kept region out (its box, the
   pixels outside its mask set to white: the object alone), embed the crops with the configured
   feature backend (CLIP on the real path, the embedded descriptor otherwise) and, where the region
   has no label and the backend has a text tower, label it zero-shot against the vocabulary. One
   shard per unit under ``exemplars/``: crops, RLE masks, labels and vectors.
2. **index, once** (:meth:`build_index`): every unit's vectors into one FAISS index
   (:mod:`ieiw.builders.exemplars`: flat below a size, IVF-PQ above), persisted with its id map. In
   embedded mode unlabelled regions take the label of the nearest labelled exemplar of another image
   here, where every labelled one is known.
3. **candidates, per unit** (:meth:`build_unit`): each region queries the index for the nearest
   exemplar of another image (never its own, no near-duplicate, another label), and the repaint
   backend paints that exemplar (cut from its own image as Paint-by-Example cuts its reference: the
   box plus ``repaint.exemplar_pad`` px of natural background) into the dilated region (Paint-by-Example, or Poisson blending in
   embedded mode). Pixels outside the dilated mask stay the source's own, so targets are stored as PNG
   (lossless): the source's pixels survive exactly.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import Field

from ieiw.backends.features.embedded import EmbeddedFeaturesConfig
from ieiw.backends.labels import CLIP_ZERO_SHOT, ZeroShotLabelsConfig
from ieiw.backends.repaint import EmbeddedRepaintConfig, exemplar_crop
from ieiw.builders.exemplar_shards import build_exemplar_index, labelled_by, open_regions
from ieiw.builders.exemplars import ExemplarIndex, ExemplarIndexConfig
from ieiw.builders.instructions import Templates, default_templates, load_templates, replace_instruction
from ieiw.builders.region_policy import RegionPolicy, choose, replacement_policy
from ieiw.builders.region_sources import RegionSourceConfig
from ieiw.builders.template_files import template_file_problems
from ieiw.builders.vector_store import arrow_vectors
from ieiw.imageio import encode, extension
from ieiw.phrases import label_phrase, phrase_forms
from ieiw.schemas import storage
from ieiw.schemas.config import BuilderConfig, backend_field
from ieiw.schemas.layout import index_folder
from ieiw.schemas.lazy import OncePerKey, locked_cached_property
from ieiw.schemas.manifest import load_manifest
from ieiw.schemas.registry import register_builder
from ieiw.schemas.rows import builder_cell, image_cell, origin_cell, row_id, stable_hash
from ieiw.schemas.shards import read_shard
from ieiw.schemas.storage import atomic_write_bytes
from ieiw.schemas.units import BuildContext, CandidateBuilder, Failure, SourceRecordError, UnitResult, WorkUnit
from ieiw.sources.regions import ImageRegions, load_source_image

LICENSES = {
    "sa-1b": "SA-1B Dataset Research License",
    "open-images": "CC BY 2.0 (images, as given by their authors); CC BY 4.0 (annotations)",
}
EXEMPLAR_SCHEMA = pa.schema([
    ("position", pa.int32()),  # row within the unit's shard
    ("source", pa.int32()),  # index into replacement.sources
    ("dataset", pa.string()),
    ("record_id", pa.string()),
    ("image_id", pa.string()),
    ("image_path", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("orientation", pa.string()),
    ("source_file", pa.string()),
    ("bbox", pa.list_(pa.int32())),
    ("area", pa.int64()),
    ("label", pa.string()),
    ("label_source", pa.string()),
    ("label_score", pa.float32()),
    ("rle", pa.string()),  # the region's mask, COCO compressed RLE counts (size = height x width)
    ("crop", pa.binary()),  # PNG of the object on white
    ("vector", pa.list_(pa.float32())),
])
# what a candidates worker reads of an exemplar's region (its dataset, label source and where to cut it)
EXEMPLAR_COLUMNS = ["dataset", "image_id", "image_path", "width", "height", "source_file", "orientation", "bbox",
                    "label_source"]


class ReplacementConfig(BuilderConfig):
    """Region replacement with exemplars: the `replacement:` section."""

    sources: list[RegionSourceConfig] = Field(min_length=1, description="SA-1B, Open Images or image-folder sources")
    regions: RegionPolicy = Field(default_factory=replacement_policy)
    features: backend_field("features") = Field(  # type: ignore[valid-type]
        default_factory=EmbeddedFeaturesConfig, description="embeds the object crops (clip on the real path)")
    index: ExemplarIndexConfig = Field(default_factory=lambda: ExemplarIndexConfig(exclude_same_label=True))
    labels: ZeroShotLabelsConfig = Field(default_factory=ZeroShotLabelsConfig)
    repaint: backend_field("repaint") = Field(default_factory=EmbeddedRepaintConfig)  # type: ignore[valid-type]
    mask_dilation: int = Field(15, ge=0, description="side of the square dilation kernel of the repainted region")
    templates: Path | None = Field(None, description="a paraphrase file with a replace: list (docs/removal.md)")
    seed: int = 0

    def preflight(self) -> list[str]:
        return template_file_problems("replacement.templates", self.templates,
                                      lambda path: load_templates(path).for_task("replace"))


def object_crop(pixels: np.ndarray, mask: np.ndarray, bbox: tuple[int, int, int, int]) -> np.ndarray:
    """The region's box with everything outside its mask white: the object alone, as an exemplar."""
    x, y, w, h = bbox
    crop = pixels[y:y + h, x:x + w].copy()
    crop[~mask[y:y + h, x:x + w].astype(bool)] = 255
    return crop


def label_problem(label: str | None) -> str | None:
    """Why a source's label cannot name its object in "change the A to B", or None: a label with no words
    (an empty Open Images DisplayName, only a qualifier such as "(Animal)", only punctuation) would fail every
    row that names it, its own and those it is the exemplar of, so such a region fails ``bad_label`` and is
    never indexed."""
    if label is None:
        return None
    try:
        phrase_forms(" ".join(label_phrase(label).split()))  # what replace_instruction makes of it
    except ValueError:
        return f"label {label!r:.80} has no words to name the object by"
    return None


def _dilate(mask: np.ndarray, size: int) -> np.ndarray:
    from ieiw.builders.removal import dilate

    return dilate(mask.astype(np.uint8), size)


@register_builder("replacement", ReplacementConfig)
class ReplacementBuilder(CandidateBuilder):
    name = "replacement"
    uses_index = True

    def __init__(self, config: ReplacementConfig, context: BuildContext):
        self.config = config
        self.context = context
        self.unit_size = context.unit_size
        self._made = OncePerKey()  # per source, index fingerprint and exemplar unit

    # -- lazily made parts --------------------------------------------------------------------------
    def reader(self, index: int) -> Any:
        return self._made.get(f"source-{index}", lambda: self.config.sources[index].open(self.context.root))

    @locked_cached_property
    def features(self) -> Any:
        return self.config.features.create()

    @locked_cached_property
    def repainter(self) -> Any:
        return self.config.repaint.create()

    @locked_cached_property
    def labeler(self) -> Any:
        return self.config.labels.labeler(self.features)

    @functools.cached_property
    def templates(self) -> Templates:
        return load_templates(self.config.templates) if self.config.templates else default_templates()

    @property
    def index_path(self) -> Path:
        return index_folder(self.context.out_dir, self.name)

    def index(self) -> tuple[ExemplarIndex, pa.Table, dict[str, int]]:
        """The persisted index and its region table, loaded once per process (per index fingerprint).
        An index on object storage is first copied to the local cache (once per fingerprint): faiss reads
        local files."""
        stamp = storage.read_json(self.index_path / "fingerprint.json")["fingerprint"]

        def load() -> tuple[ExemplarIndex, pa.Table, dict[str, int]]:
            folder = storage.local_copy(self.index_path, stamp)
            return ExemplarIndex.load(folder, self.config.index), *open_regions(folder)

        return self._made.get(f"index-{stamp}", load)

    # -- the builder interface ----------------------------------------------------------------------
    def prepare(self) -> None:
        for source in self.config.sources:
            source.prepare(self.context.root)

    def params(self) -> dict[str, Any]:
        """What shapes a row's pixels (part of row ids; the exemplar's record id is added per row)."""
        repaint = self.config.repaint
        return {"repaint": repaint.label(), "model": repaint.model_id(), **repaint.row_params(),
                "dilation": self.config.mask_dilation, "features": self.config.features.label(),
                "seed": self.config.seed}

    @functools.cached_property
    def _index_unit_fingerprint(self) -> dict[str, Any]:
        c = self.config
        return {"sources": [s.fingerprint() for s in c.sources], "regions": c.regions.model_dump(),
                "features": c.features.fingerprint(), "labels": c.labels.fingerprint()}

    def index_unit_fingerprint(self) -> dict[str, Any]:
        """The exemplar shards depend on the sources, the region policy, the embedding and the labels only."""
        return self._index_unit_fingerprint

    def fingerprint(self) -> dict[str, Any]:
        """The candidates: the above, the repaint, the query settings (the index's own build parameters
        reach them through the index's fingerprint) and the templates."""
        c = self.config
        return {**self.params(), **self._index_unit_fingerprint, "repaint_models": c.repaint.model_digests(),
                "query": c.index.model_dump(mode="json"), "templates": self.templates.digest_for(("replace",))}

    def index_fingerprint(self) -> dict[str, Any]:
        return {"index": self.config.index.build_key()}

    def backends(self) -> dict[str, str]:
        c = self.config
        return {kind: b.label() + (" (embedded)" if b.embedded else "")
                for kind, b in (("features", c.features), ("repaint", c.repaint))}

    def plan(self) -> list[WorkUnit]:
        units = []
        for number, source in enumerate(self.config.sources):
            total = self.reader(number).count()
            for index, start in enumerate(range(0, total, self.unit_size)):
                payload = {"source": number, "start": start, "stop": min(start + self.unit_size, total)}
                units.append(WorkUnit(key=f"replace-{source.type}{number}-{index:05d}", payload=payload))
        return units

    # -- stage 1: regions -> crops + vectors --------------------------------------------------------------
    def index_unit(self, unit: WorkUnit) -> tuple[pa.Table, dict[str, Any]]:
        p = unit.payload
        reader = self.reader(p["source"])
        entries = reader.read(p["start"], p["stop"])
        failures: list[Failure] = []
        skipped: Counter = Counter()
        rows: list[dict[str, Any]] = []
        crops: list[np.ndarray] = []
        for entry in entries:
            failures.extend(entry.failures)
            usable = []
            for region in entry.regions:
                problem = label_problem(region.label)
                if problem:
                    failures.append(Failure("bad_label", region.record_id, region.source_file, problem))
                else:
                    usable.append(region)
            kept, skips = choose(usable, self.config.regions)
            skipped.update(skips)
            if not kept:
                continue
            try:
                pixels = entry.pixels if entry.pixels is not None else load_source_image(entry).pixels
            except SourceRecordError as err:
                failures.append(err.failure)
                continue
            for region in kept:
                crop = object_crop(pixels, region.mask, region.bbox)
                crops.append(crop)
                rows.append({
                    "position": len(rows), "source": p["source"], "dataset": region.dataset,
                    "record_id": region.record_id, "image_id": region.image_id, "image_path": str(entry.image_path),
                    "width": entry.width, "height": entry.height, "orientation": entry.orientation,
                    "source_file": entry.source_file, "bbox": list(region.bbox), "area": region.area,
                    "label": region.label, "label_source": region.label_source, "label_score": None,
                    "rle": region.rle()["counts"], "crop": encode(crop, "png"),
                })
        vectors = np.asarray(self.features.image_features(crops) if crops else np.zeros((0, 1)), np.float32)
        norms = np.linalg.norm(vectors, axis=1) if len(vectors) else np.zeros(0)
        usable = np.isfinite(norms) & (norms > 0)  # a NaN / zero embedding (fp16 overflow) has no direction
        for i in np.flatnonzero(~usable):
            failures.append(Failure("bad_vector", rows[i]["record_id"], rows[i]["source_file"],
                                    f"the {self.config.features.label()} embedding of region {rows[i]['record_id']}"
                                    f" is {'zero' if norms[i] == 0 else 'not finite'}; region not indexed"))
        rows = [dict(row, position=at) for at, row in enumerate(r for r, ok in zip(rows, usable, strict=True) if ok)]
        crops = [crop for crop, ok in zip(crops, usable, strict=True) if ok]
        vectors = vectors[usable]
        unlabelled = [i for i, row in enumerate(rows) if row["label"] is None]
        if unlabelled and getattr(self.features, "has_text", False):
            for i, found in zip(unlabelled, self.labeler.label([crops[i] for i in unlabelled]), strict=True):
                rows[i].update(label=found.label, label_source=CLIP_ZERO_SHOT, label_score=found.score)
        stats = {
            "records": len(entries),
            "regions": len(rows),
            "failures": dict(Counter(f.reason for f in failures)),
            # every failure in full, so the candidates stage reports them as its own (the stats read those)
            "failure_list": [[f.reason, f.record_id, f.file, f.message] for f in failures],
            "skipped": dict(skipped),
        }
        light = pa.Table.from_pylist(rows, schema=EXEMPLAR_SCHEMA.remove(EXEMPLAR_SCHEMA.get_field_index("vector")))
        dim = vectors.shape[1] if len(vectors) else 0
        column = pa.ListArray.from_arrays(pa.array(np.arange(len(vectors) + 1, dtype=np.int32) * dim),
                                          pa.array(vectors.reshape(-1)))  # the buffer, not a Python float each
        return light.append_column(EXEMPLAR_SCHEMA.field("vector"), column), stats

    # -- stage 2: one index over every unit -----------------------------------------------------------
    def build_index(self, shards: list[Path], folder: Path, fingerprint: str) -> dict[str, Any]:
        """Stream every unit's vectors into the index's store and the light columns into regions.arrow
        (:mod:`ieiw.builders.exemplar_shards`): memory is a function of the region count, not of the
        vectors (docs/PERFORMANCE.md, "Exemplar index")."""
        try:
            index, light = build_exemplar_index(shards, folder, self.config.index, fingerprint,
                                                drop=["vector", "crop", "rle"])
        except RuntimeError as error:
            if "nothing to index" in str(error):
                raise RuntimeError(f"{self.name}: {error}") from error
            raise
        atomic_write_bytes(folder / "fingerprint.json", json.dumps({"fingerprint": fingerprint}).encode())
        return {"exemplars": index.count, "kind": index.kind, "labelled_by": labelled_by(light),
                "nprobe": index.nprobe if index.kind == "ivfpq" else None,
                "calibration": index.manifest().get("calibration")}

    # -- stage 3: candidates ------------------------------------------------------------------------------
    def _index_unit_stats(self, unit: WorkUnit) -> dict[str, Any]:
        manifest = load_manifest(self.context.out_dir / "exemplars")
        return (manifest["units"].get(unit.key) or {}).get("stats", {})

    def _exemplar(self, exemplar: dict[str, Any], images: dict[str, Any]) -> np.ndarray:
        """The exemplar the repaint backend gets: its region's box with ``exemplar_pad`` px of natural
        background, cut from its own image (Paint-by-Example's reference crop, not the indexed crop on
        white); images are loaded once per unit."""
        if exemplar["image_path"] not in images:
            entry = ImageRegions(dataset=exemplar["dataset"], image_id=exemplar["image_id"],
                                 image_path=Path(exemplar["image_path"]), width=exemplar["width"],
                                 height=exemplar["height"], source_file=exemplar["source_file"],
                                 orientation=exemplar["orientation"])
            images[exemplar["image_path"]] = load_source_image(entry)
        return exemplar_crop(images[exemplar["image_path"]].pixels, exemplar["bbox"], self.config.repaint.exemplar_pad)

    def build_unit(self, unit: WorkUnit) -> UnitResult:
        import pycocotools.mask as mask_utils

        made = self._index_unit_stats(unit)
        result = UnitResult(records=made.get("records", 0))
        result.skipped.update(made.get("skipped", {}))
        result.failures.extend(Failure(*fields) for fields in made.get("failure_list", []))
        shard = self.context.out_dir / "exemplars" / f"{unit.key}.parquet"
        table = read_shard(shard, without=["crop"])
        if not table.num_rows:
            return result
        index, regions, starts = self.index()
        if unit.key not in starts:
            raise RuntimeError(f"{self.name}: unit {unit.key} is not in the exemplar index {self.index_path};"
                               " rebuild the index stage")
        vectors = arrow_vectors(table.column("vector"), index.dim, where=str(shard))
        mine = table.drop_columns(["vector"]).to_pylist()
        # A region's index row is its unit's first row plus its position in the unit's shard, not its record
        # id: two sources (two SA-1B folders, say) may hold the same record id, and a region must get its
        # own label, not the other's.
        own = pa.array([starts[unit.key] + row["position"] for row in mine], pa.int64())
        labels = regions.column("label").take(own).to_pylist()
        label_sources = regions.column("label_source").take(own).to_pylist()
        matches = index.query(vectors, [row["image_id"] for row in mine], labels, k=1)
        chosen = [found[0].row for found in matches if found]
        exemplars = dict(zip(chosen, regions.select(EXEMPLAR_COLUMNS).take(pa.array(chosen, pa.int64())).to_pylist(),
                             strict=True))

        images: dict[str, Any] = {}  # by image file: two sources (or a crafted file) may share an image id
        jobs = []
        for row, label, label_source, found in zip(mine, labels, label_sources, matches, strict=True):
            if not found:
                result.skipped["no_exemplar"] += 1
                continue
            if label is None:
                result.skipped["unlabelled"] += 1
                continue
            entry = ImageRegions(dataset=row["dataset"], image_id=row["image_id"], image_path=Path(row["image_path"]),
                                 width=row["width"], height=row["height"], source_file=row["source_file"],
                                 orientation=row["orientation"])
            try:
                if row["image_path"] not in images:
                    images[row["image_path"]] = load_source_image(entry)
            except SourceRecordError as err:
                result.failures.append(err.failure)
                continue
            match = found[0]
            try:
                exemplar = self._exemplar(exemplars[match.row], images)
            except SourceRecordError as err:
                result.failures.append(err.failure)
                continue
            rle = {"size": [row["height"], row["width"]], "counts": row["rle"].encode()}
            mask = _dilate(mask_utils.decode(rle), self.config.mask_dilation)
            jobs.append((row, label, label_source, match, exemplars[match.row], images[row["image_path"]], mask,
                         exemplar))
        if not jobs:
            return result
        seeds = [int(stable_hash(self.config.seed, job[0]["record_id"], length=8), 16) for job in jobs]
        targets = self.repainter.repaint([j[5].pixels for j in jobs], [j[6] for j in jobs], [j[7] for j in jobs], seeds)
        for (row, label, label_source, match, found, image, mask, _), target, seed in zip(jobs, targets, seeds,
                                                                                         strict=True):
            result.rows.append(self._row(row, label, label_source, match, found["dataset"], found["label_source"],
                                         image, mask, target, seed))
        result.counters["repainted"] = len(jobs)
        return result

    def _row(self, row: dict[str, Any], label: str, label_source: str | None, match: Any, exemplar_dataset: str,
             exemplar_label_source: str | None, image: Any, mask: np.ndarray, target: np.ndarray, seed: int
             ) -> dict[str, Any]:
        params = self.params()
        rid = row_id(row["dataset"], row["record_id"], self.name, {**params, "exemplar": match.record_id}, "replace")
        target_bytes = encode(target, "png")  # lossless: outside the mask the source's pixels, exactly
        repaint = self.config.repaint
        return {
            "id": rid,
            "task": "replace",
            "instruction": replace_instruction(label, match.label, rid, self.templates),
            "source_image": image_cell(image.data, f"{row['image_id']}.{extension(image.data)}"),
            "target_image": image_cell(target_bytes, f"{row['image_id']}_{rid[:8]}_replaced.png"),
            "mask": image_cell(encode(mask * 255, "png"), f"{row['image_id']}_{rid[:8]}_mask.png"),
            "width": int(row["width"]),
            "height": int(row["height"]),
            "origin": origin_cell(dataset=row["dataset"], record_id=row["record_id"], image_id=row["image_id"],
                                  phrase=label, license=LICENSES.get(row["dataset"])),
            "exemplar": {"dataset": exemplar_dataset, "record_id": match.record_id, "label": match.label,
                         "similarity": float(match.similarity), "label_source": exemplar_label_source,
                         "source_label_source": label_source},
            "scores": None,
            "builder": builder_cell(name=self.name, backend=repaint.label(), embedded=bool(repaint.embedded),
                                    model=repaint.model_record(), seed=seed,
                                    params={**params, "exemplar": match.record_id, "source_image": image.provenance(),
                                            "templates": self.templates.record(("replace",))}),
            "drop_reason": None,
        }
