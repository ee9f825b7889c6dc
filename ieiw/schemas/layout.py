"""The layout of a build's out folder: every folder and file name, and where a task family's rows go.

    <out_dir>/
      exemplars/  candidates/  features/  scores/     per-unit shards of the stages, each with manifest.json
      ieiw/                                            the paper's corpus: kept remove/add/replace/web pairs
      <family>/                                        kept rows of other task families (segmentation/, ...)
      rejected/                                        every row selection dropped, with its reason
      index-<builder>/                                 a builder's index (the replacement exemplars)
      calibration.json  stats.json  report.html  README.md

Every module that names one of these takes the name from here, so a folder is renamed in one place.
"""

from __future__ import annotations

from pathlib import Path

from ieiw.schemas import storage
from ieiw.schemas.registry import REGISTRY

EXEMPLARS = "exemplars"  # per-unit index inputs of builders with an index stage (replacement: object crops)
CANDIDATES = "candidates"
FEATURES = "features"
SCORES = "scores"
PAIRS = "ieiw"
REJECTED = "rejected"
STAGES = (EXEMPLARS, CANDIDATES, FEATURES, SCORES, PAIRS, REJECTED)  # in the order a unit goes through them
WORK_FOLDERS = frozenset({EXEMPLARS, CANDIDATES, FEATURES, SCORES})  # per-unit inputs of selection, not rows

CALIBRATION = "calibration.json"
STATS = "stats.json"
REPORT = "report.html"
CARD = "README.md"
MANIFEST = "manifest.json"
INDEX_PREFIX = "index-"
CRAWL_INDEX = "crawl-index"  # the crawl's dump index, a local cache each machine can rebuild

IEIW_FAMILY = "ieiw"
DERIVED_FAMILIES = frozenset({"adaptation"})  # rows a converter writes beside its own (ieiw/builders/captions.py)


class NotABuildError(ValueError):
    """A path that is not a build's out folder nor its corpus folder."""


def index_folder(out: Path, builder: str) -> Path:
    """Where a builder's index lives (``<out>/index-<builder>/``)."""
    return out / f"{INDEX_PREFIX}{builder}"


def task_family(task: str) -> str:
    """The registered family of a task value (``ieiw`` for remove/add/replace/web); unknown -> ``ieiw``."""
    spec = REGISTRY.task(task)
    return spec.family if spec is not None else IEIW_FAMILY


def family_folder(family: str) -> str:
    """Where a family's kept rows go: ``ieiw/`` for the paper's corpus, ``<family>/`` beside it otherwise."""
    return PAIRS if family == IEIW_FAMILY else family


def other_family_folders(out: Path) -> list[Path]:
    """The folders of kept rows that are not IEIW (``segmentation/``, ``keypoints/``, ...) in a build."""
    families = {spec.family for spec in REGISTRY.tasks.values()} - {IEIW_FAMILY}
    return sorted((out / f for f in families if storage.exists(out / f / MANIFEST)), key=str)


def build_root(path: Path | str) -> Path:
    """The out folder of a build, given it or its ``ieiw/`` (local or a URL); :class:`NotABuildError` else."""
    path = storage.location(path)
    if storage.exists(path / PAIRS / MANIFEST):
        return path
    if storage.exists(path / MANIFEST) and storage.exists(path.parent / PAIRS / MANIFEST):
        return path.parent  # given out/ieiw: the build's other folders are its siblings
    raise NotABuildError(f"{path}: no {PAIRS}/{MANIFEST} here; give a build's out folder (e.g. out)")


def pairs_folder(path: Path | str) -> Path:
    """The corpus folder for ``path``: a build's out folder (its ``ieiw/``) or that folder itself (local
    or on object storage)."""
    path = storage.location(path)
    if storage.exists(path / PAIRS / MANIFEST):
        return path / PAIRS
    if storage.exists(path / MANIFEST):
        stage = storage.read_json(path / MANIFEST).get("stage")  # a snapshot's stage never changes
        if stage != PAIRS:
            raise NotABuildError(f"{path}: a {stage!r} stage folder; give the build's out folder or its {PAIRS}/")
        return path
    raise NotABuildError(f"{path}: no {PAIRS}/{MANIFEST} here; give a build's out folder (or its {PAIRS}/)")
