"""The registry: which builders, config sections, backends and task values exist.

Every part registers itself with one line next to its own code, keyed by the name a config uses::

    @register_builder("removal", RemovalConfig)          # a `removal:` section builds with this class
    class RemovalBuilder(CandidateBuilder): ...

    register_backend("inpaint", "opencv", OpenCVInpaintConfig, "ieiw.backends.inpaint.opencv:OpenCVInpainter")
    register_task("keypoints", family="keypoints", description="...")

Modules are found through ``importlib.metadata`` entry points, so the same lookup works in the process
that reads the config, in a Prefect worker and in a Dask worker, and a third-party package joins by
declaring entry points in its own ``pyproject.toml`` (no file of ieiw changes)::

    [project.entry-points."ieiw.builders"]
    mysource = "my_package.builder"                       # entry point name = config section

Groups: ``ieiw.builders`` (builder sections), ``ieiw.sections`` (other sections, always composed:
``scoring``, ``selection``), ``ieiw.scorers`` (scorer backends, named by backend), ``ieiw.backends``
(other backends, named ``<kind>.<name>``, e.g. ``inpaint.lama``) and ``ieiw.tasks``. Loading an entry
point imports its module; the decorators in it do the registering. Modules load lazily, when a config
names them, so a build that does not crawl never imports the crawler.

This module imports no feature package: the contract stays at the bottom of the import graph.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

log = logging.getLogger("ieiw")

GROUPS = {
    "builder": "ieiw.builders",
    "section": "ieiw.sections",
    "scorer": "ieiw.scorers",
    "backend": "ieiw.backends",
    "task": "ieiw.tasks",
}


class RegistryError(LookupError):
    """A name a config uses that no registered part answers to."""


def resolve(target: Any) -> Any:
    """``"package.module:attr"`` -> the object (imported now); anything else is returned as is."""
    if not isinstance(target, str):
        return target
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class BuilderSpec:
    section: str  # the config key, e.g. "removal"
    config: type  # its pydantic model (a subclass of ieiw.schemas.config.BuilderConfig)
    factory: Any  # the CandidateBuilder class, or "module:Class" to import when first built

    def create(self, config: Any, context: Any) -> Any:
        return resolve(self.factory)(config, context)


@dataclass(frozen=True)
class SectionSpec:
    section: str
    config: type  # pydantic model with defaults for every field: the section may be left out


@dataclass(frozen=True)
class BackendSpec:
    kind: str  # "inpaint", "features", "scorer", ...
    name: str  # the value of `backend:` in the config
    config: type  # pydantic model (subclass of ieiw.schemas.config.BackendConfig)
    factory: Any  # class or "module:Class"; called with the validated config

    def create(self, config: Any) -> Any:
        return resolve(self.factory)(config)


@dataclass(frozen=True)
class TaskSpec:
    name: str  # the value of a row's `task` column
    family: str  # "ieiw" for the paper's corpus; "segmentation", "keypoints", "enhancement", "editing"...
    description: str = ""


class Registry:
    """Holds the specs; looks names up in the entry points on a miss."""

    def __init__(self) -> None:
        self.builders: dict[str, BuilderSpec] = {}
        self.sections: dict[str, SectionSpec] = {}
        self.backends: dict[str, dict[str, BackendSpec]] = {}
        self.tasks: dict[str, TaskSpec] = {}
        self._loaded: set[tuple[str, str]] = set()
        self._lock = threading.RLock()

    # -- registering ----------------------------------------------------------------------------
    def register_builder(self, section: str, config: type, factory: Any = None) -> Callable:
        """Register a builder; usable as a decorator on the builder class or called with a factory."""

        def add(target: Any) -> Any:
            self._put(self.builders, section, BuilderSpec(section, config, target), "builder section")
            return target

        return add if factory is None else add(factory)

    def register_section(self, section: str, config: type | None = None) -> Any:
        """Register an always-present config section; usable as a decorator on its model."""

        def add(model: type) -> type:
            self._put(self.sections, section, SectionSpec(section, model), "config section")
            return model

        return add if config is None else add(config)

    def register_backend(self, kind: str, name: str, config: type, factory: Any = None) -> Callable:
        def add(target: Any) -> Any:
            self._put(self.backends.setdefault(kind, {}), name, BackendSpec(kind, name, config, target), f"{kind} backend")
            return target

        return add if factory is None else add(factory)

    def register_task(self, name: str, family: str, description: str = "") -> TaskSpec:
        spec = TaskSpec(name, family, description)
        self._put(self.tasks, name, spec, "task")
        return spec

    def _put(self, table: dict[str, Any], key: str, spec: Any, what: str) -> None:
        with self._lock:
            old = table.get(key)
            if old is not None and old != spec:
                raise RegistryError(f"{what} {key!r} is registered twice ({old} and {spec})")
            table[key] = spec

    # -- entry points ---------------------------------------------------------------------------
    @staticmethod
    def entry_points(kind: str) -> dict[str, EntryPoint]:
        return {ep.name: ep for ep in entry_points(group=GROUPS[kind])}

    def _load(self, kind: str, name: str) -> None:
        """Import the module behind entry point ``name`` of ``kind``'s group (once)."""
        with self._lock:
            if (kind, name) in self._loaded:
                return
            self._loaded.add((kind, name))
            ep = self.entry_points(kind).get(name)
            if ep is not None:
                try:
                    ep.load()
                except ImportError as exc:
                    raise RegistryError(
                        f"{GROUPS[kind]} entry point {name!r} ({ep.value}) cannot be imported: {exc}. "
                        "Is the package that provides it (and its extras) installed?"
                    ) from exc

    # -- lookups --------------------------------------------------------------------------------
    def builder(self, section: str) -> BuilderSpec | None:
        if section not in self.builders:
            self._load("builder", section)
        return self.builders.get(section)

    def section(self, section: str) -> SectionSpec | None:
        if section not in self.sections:
            self._load("section", section)
        return self.sections.get(section)

    def default_sections(self) -> dict[str, SectionSpec]:
        """Sections every build config has (each with defaults): all of the ``ieiw.sections`` group."""
        names = set(self.entry_points("section")) | set(self.sections)
        return {name: spec for name in sorted(names) if (spec := self.section(name)) is not None}

    def backend(self, kind: str, name: str) -> BackendSpec:
        if name not in self.backends.get(kind, {}):
            self._load("scorer" if kind == "scorer" else "backend", name if kind == "scorer" else f"{kind}.{name}")
        spec = self.backends.get(kind, {}).get(name)
        if spec is None:
            raise RegistryError(f"unknown {kind} backend {name!r}; known: {', '.join(self.backend_names(kind))}")
        return spec

    def backend_names(self, kind: str) -> list[str]:
        if kind == "scorer":
            found = set(self.entry_points("scorer"))
        else:
            found = {n.split(".", 1)[1] for n in self.entry_points("backend") if n.startswith(kind + ".")}
        return sorted(found | set(self.backends.get(kind, {})))

    def builder_names(self) -> list[str]:
        return sorted(set(self.entry_points("builder")) | set(self.builders))

    def task(self, name: str) -> TaskSpec | None:
        if name not in self.tasks:
            self._load("task", name)
        return self.tasks.get(name)


REGISTRY = Registry()
register_builder = REGISTRY.register_builder
register_section = REGISTRY.register_section
register_backend = REGISTRY.register_backend
register_task = REGISTRY.register_task

# The task vocabulary of schema v2. IEIW's own four, then the full model's other data (converters and
# importers add rows with these). A plugin registers more with register_task or an `ieiw.tasks` entry point.
for _name, _family, _text in (
    ("remove", "ieiw", "object removal: source has the object, target does not"),
    ("add", "ieiw", "the flipped removal pair: the object appears"),
    ("replace", "ieiw", "an object repainted as another (exemplar-guided)"),
    ("web", "ieiw", "a person's photoshop request and an editor's result"),
    ("segment", "segmentation", "semantic segmentation rendered as a colour overlay"),
    ("refer-segment", "segmentation", "referring segmentation rendered as a colour overlay"),
    ("keypoints", "keypoints", "named joints marked with coloured discs"),
    ("enhance", "enhancement", "deblurring, denoising, watermark removal"),
    ("edit", "editing", "imported instruction-editing data (InstructPix2Pix, MagicBrush, GIER)"),
    ("caption-overlay", "adaptation", "adaptation stage: a rendered colour overlay with its image's caption"),
    ("caption-keypoints", "adaptation", "adaptation stage: marked joints with its image's caption"),
):
    register_task(_name, _family, _text)
