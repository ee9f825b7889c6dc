"""KNN-GIQA: how close an image lies to a large reference set of real images (Gu et al., GIQA).

Score = sum over the K nearest reference features of 1 / d_k, d = L1 distance (default K = 1), as the
GIQA code computes it by brute force; higher is better and only ranks mean anything. Here the search is
a FAISS index, built once per reference set by ``ieiw giqa-index`` (or generated for the embedded demo)
and reused by every build:

- up to ``exact_below`` vectors (default 100k): ``IndexFlat`` with ``METRIC_L1``, exact, the same
  numbers as the brute-force L1 of the GIQA code;
- above it: ``IndexIVFFlat`` with ``METRIC_L1`` (k-means cells trained on a sample, the vectors stored
  uncompressed), which returns the same exact L1 distances for the neighbours it finds; it may miss the
  true nearest when it lies in a cell not probed (``nprobe``), which then gives a slightly larger d.
  ``bench/giqa.py`` measures the rank agreement with brute force (Spearman) and the speed-up.

Optional PCA (GIQA's ``--pca``, keeping 95% of the variance) is fitted on the reference features and
applied to both sides. A reference folder holds ``index.faiss``, ``meta.json`` (extractor label,
dimension, count, index kind, PCA) and ``pca.npz``; building it streams the features in chunks that
are saved as they are made, so an interrupted build resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from ieiw.backends.features.base import ImageFeatures
from ieiw.filters.scoring import ImageRef, PairView, ScoreContext, Scorer
from ieiw.schemas.config import BackendConfig, ModelPath, StrictModel, backend_field
from ieiw.schemas.registry import register_backend
from ieiw.schemas.storage import atomic_write_bytes

log = logging.getLogger("ieiw")
META = "meta.json"
INDEX = "index.faiss"
PCA_FILE = "pca.npz"
CHUNKS = "chunks"
EPSILON = 1e-6  # an exact duplicate of a reference image would divide by zero


class GiqaError(RuntimeError):
    """A reference folder that is missing, incomplete or made with another feature extractor."""


@dataclass(frozen=True)
class ReferenceMeta:
    extractor: str
    dim: int  # after PCA
    count: int
    kind: Literal["flat-l1", "ivf-flat-l1"]
    pca: bool
    nlist: int | None = None


def fit_pca(features: np.ndarray, variance: float) -> tuple[np.ndarray, np.ndarray]:
    """(mean, components) keeping ``variance`` of the total (GIQA's PCA(0.95)), by SVD: numpy is enough
    for one fit, and it avoids a scikit-learn dependency for three lines."""
    mean = features.mean(axis=0)
    _, singular, vt = np.linalg.svd(features - mean, full_matrices=False)
    explained = np.cumsum(singular**2) / max(float((singular**2).sum()), 1e-12)
    keep = int(np.searchsorted(explained, variance) + 1)
    return mean.astype(np.float32), vt[:keep].astype(np.float32)


def build_index(features: np.ndarray, exact_below: int = 100_000, nlist: int | None = None, seed: int = 0) -> Any:
    """A FAISS L1 index over ``features`` (float32, N x d): exact below ``exact_below``, IVF above."""
    import faiss

    features = np.ascontiguousarray(features, dtype=np.float32)
    count, dim = features.shape
    if count < exact_below:
        index = faiss.IndexFlat(dim, faiss.METRIC_L1)
    else:
        nlist = nlist or int(4 * np.sqrt(count))
        quantizer = faiss.IndexFlat(dim, faiss.METRIC_L1)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_L1)
        sample = np.random.default_rng(seed).choice(count, size=min(count, 64 * nlist), replace=False)
        index.train(features[np.sort(sample)])
    index.add(features)
    return index


def write_reference(folder: Path, features: np.ndarray, extractor: str, pca_variance: float | None = None,
                    exact_below: int = 100_000) -> ReferenceMeta:
    """Fit PCA (optional), build the index, and write the folder; ``meta.json`` last marks it complete."""
    import faiss

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    features = np.asarray(features, dtype=np.float32)
    if pca_variance:
        mean, components = fit_pca(features, pca_variance)
        features = (features - mean) @ components.T
        buffer = _npz(mean=mean, components=components)
        atomic_write_bytes(folder / PCA_FILE, buffer)
    index = build_index(features, exact_below)
    atomic_write_bytes(folder / INDEX, faiss.serialize_index(index).tobytes())
    kind = "flat-l1" if isinstance(index, faiss.IndexFlat) else "ivf-flat-l1"
    meta = ReferenceMeta(extractor, int(features.shape[1]), int(features.shape[0]), kind, bool(pca_variance),
                         getattr(index, "nlist", None))
    atomic_write_bytes(folder / META, json.dumps(meta.__dict__, indent=1).encode())
    return meta


def _npz(**arrays: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


class Reference:
    """A loaded reference folder: ``score(features)`` -> KNN-GIQA scores."""

    def __init__(self, folder: Path, nprobe: int = 16):
        import faiss

        self.folder = Path(folder)
        if not (self.folder / META).exists():
            raise GiqaError(f"{self.folder}: no GIQA reference here (no {META}); build one with `ieiw giqa-index`")
        self.meta = ReferenceMeta(**json.loads((self.folder / META).read_text()))
        self.index = faiss.deserialize_index(np.frombuffer((self.folder / INDEX).read_bytes(), dtype=np.uint8))
        if hasattr(self.index, "nprobe"):
            self.index.nprobe = nprobe
        self.pca: tuple[np.ndarray, np.ndarray] | None = None
        if self.meta.pca:
            with np.load(self.folder / PCA_FILE) as data:
                self.pca = (data["mean"], data["components"])

    def project(self, features: np.ndarray) -> np.ndarray:
        features = np.asarray(features, dtype=np.float32)
        if self.pca is not None:
            features = (features - self.pca[0]) @ self.pca[1].T
        return np.ascontiguousarray(features, dtype=np.float32)

    def score(self, features: np.ndarray, k: int = 1) -> np.ndarray:
        """sum over the k nearest of 1 / L1 distance, per row of ``features``."""
        if len(features) == 0:
            return np.zeros(0, np.float32)
        distances, _ = self.index.search(self.project(features), k)
        return (1.0 / np.maximum(distances, EPSILON)).sum(axis=1)


def brute_force_giqa(features: np.ndarray, reference: np.ndarray, k: int = 1) -> np.ndarray:
    """The GIQA code's computation, in NumPy: the check for the index (tests, bench)."""
    out = []
    for vector in np.asarray(features, dtype=np.float64):
        distances = np.sort(np.abs(reference - vector).sum(axis=1))[:k]
        out.append((1.0 / np.maximum(distances, EPSILON)).sum())
    return np.asarray(out)


# -- building a reference from images, resumably -------------------------------------------------
def chunked(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def build_reference_from_images(folder: Path, images: Iterable[tuple[str, np.ndarray]], extractor: ImageFeatures,
                                chunk_size: int = 512, pca_variance: float | None = None,
                                exact_below: int = 100_000) -> ReferenceMeta:
    """Embed ``(name, pixels)`` in chunks saved as they finish (``chunks/<n>.npy``, each atomic), then
    build the index from all chunks. A rerun skips the chunks already saved, so a build over millions of
    images survives a kill. The order of ``images`` must be the same on a rerun."""
    from ieiw.progress import bar

    folder = Path(folder)
    (folder / CHUNKS).mkdir(parents=True, exist_ok=True)
    done = 0
    with bar(desc="giqa-index", unit="img") as progress:
        for number, chunk in enumerate(chunked(images, chunk_size)):
            progress.update(len(chunk))
            path = folder / CHUNKS / f"{number:06d}.npy"
            if path.exists():
                continue
            vectors = extractor.image_features([pixels for _, pixels in chunk]).astype(np.float32)
            atomic_write_bytes(path, _npy(vectors))
            done += len(chunk)
            log.info("giqa reference: %d images embedded in this run (chunk %d)", done, number)
    parts = [np.load(p) for p in sorted((folder / CHUNKS).glob("*.npy"))]
    if not parts:
        raise GiqaError(f"{folder}: no reference images were given")
    return write_reference(folder, np.concatenate(parts), extractor.name, pca_variance, exact_below)


def _npy(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


# -- the scorer ------------------------------------------------------------------------------------
class GenerateReference(StrictModel):
    """Embedded demo: make the reference from synthetic scenes drawn like the bundled sample's (a stand-in
    for "real images": it ranks images by how much they look like such scenes) when the folder is missing."""

    images: int = Field(200, ge=10)
    seed: int = 1
    width: int = 320
    height: int = 240


class KnnGiqaConfig(BackendConfig):
    """`scoring.scorers: [{backend: knn-giqa, reference: DIR}]`: fills source_giqa / target_giqa."""

    kind: ClassVar[str] = "scorer"
    fills: ClassVar[tuple[str, ...]] = ("source_giqa", "target_giqa")
    runtime_fields: ClassVar[frozenset[str]] = frozenset({"nprobe", "generate"})

    backend: Literal["knn-giqa"] = "knn-giqa"
    reference: ModelPath = Field(description="a reference folder made by `ieiw giqa-index`")
    k: int = Field(1, ge=1, description="neighbours summed (GIQA's default: 1)")
    nprobe: int = Field(16, ge=1, description="IVF cells searched (approximate indexes only)")
    features: backend_field("features") | None = Field(  # type: ignore[valid-type]
        None, description="the extractor the reference was built with; default: scoring.features")
    generate: GenerateReference | None = Field(None, description="embedded demo: synthesise the reference if missing")

    def label(self) -> str:
        name = Path(self.reference).name if self.reference else "?"
        return f"knn-giqa-k{self.k}[{name}]"

    def model_id(self) -> str | None:
        return str(self.reference)

    def extractor(self) -> BackendConfig | None:
        return self.features

    def preflight(self) -> list[str]:
        if self.generate is not None or (Path(self.reference) / META).exists():
            return self.digest_problems()
        return [f"scorer knn-giqa: reference {self.reference} is not a GIQA reference folder (no {META});"
                " build it with `ieiw giqa-index IMAGES --out " + str(self.reference) + "`"]

    def prepare(self, main_features: BackendConfig) -> None:
        """Planned step of the flow (Build.prepare): synthesise the embedded demo's reference set."""
        if self.generate is None or (Path(self.reference) / META).exists():
            return
        from ieiw.samples.base import synthetic_scene

        spec = self.generate
        extractor = (self.features or main_features).create()
        rng = np.random.default_rng(spec.seed)

        def scenes() -> Iterator[tuple[str, np.ndarray]]:
            for index in range(spec.images):
                yield str(index), synthetic_scene(rng, spec.width, spec.height)

        build_reference_from_images(Path(self.reference), scenes(), extractor, chunk_size=64)


@register_backend("scorer", "knn-giqa", KnnGiqaConfig)
class KnnGiqaScorer(Scorer):
    def __init__(self, config: KnnGiqaConfig):
        super().__init__(config)
        self.reference = Reference(Path(config.reference), config.nprobe)
        self.k = config.k
        self.extractor_label = config.features.label() if config.features is not None else None

    def score(self, pairs: Sequence[PairView], context: ScoreContext) -> list[dict[str, float | None]]:
        label = self.extractor_label or context.main
        if label != self.reference.meta.extractor:
            raise GiqaError(f"{self.reference.folder} was built with {self.reference.meta.extractor} features, "
                            f"this build scores with {label}: rebuild the reference or set the scorer's `features`")
        images: dict[str, ImageRef] = {}
        for pair in pairs:
            images.setdefault(pair.source.key, pair.source)
            images.setdefault(pair.target.key, pair.target)
        keys = list(images)
        vectors = np.stack([context.embedding(images[k], label) for k in keys]) if keys else np.zeros((0, 1))
        scores = dict(zip(keys, self.reference.score(vectors, self.k).tolist(), strict=True))
        return [{"source_giqa": scores[p.source.key], "target_giqa": scores[p.target.key]} for p in pairs]
