"""Configuration: one strict pydantic base, one YAML loader and error format, and the build config
composed from the registry.

- :class:`StrictModel` is the base of every config model in ieiw (build, builders, backends,
  training): unknown keys are errors, models are frozen.
- :func:`load_yaml_model` reads a YAML file, applies ``--set key=value`` overrides and validates; a
  bad file raises :class:`ConfigError` naming the file and each bad key, one per line.
- :class:`BuildConfig` holds the keys every build has; :func:`build_config_model` adds one optional
  field per builder section the config names (``removal:``, ``crawl:``, a plugin's own) and one field
  per always-present section (``scoring:``, ``selection:``), each typed by the model its package
  registered. So a builder owns its config model, and adding one edits no list here.
- :class:`BackendConfig` is the base of a backend's parameters. A field typed :func:`backend_field`
  accepts ``{backend: NAME, ...}`` and validates it with the model registered for NAME: a discriminated
  union whose members come from the registry, so plugins add backends too. Only the chosen backend's
  fields exist, so only they reach row ids and fingerprints.

Relative paths in a config resolve against the folder the build runs from (the repo root for
``make build`` and for the deployments in ``prefect.yaml``).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib
import importlib.util
import json
import os
import threading
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from ieiw.schemas import storage
from ieiw.schemas.filehash import path_digest
from ieiw.schemas.registry import REGISTRY, RegistryError
from ieiw.schemas.rows import stable_hash


class StrictModel(BaseModel):
    """Unknown keys are errors; instances are frozen (a stage never mutates its config)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ConfigError(ValueError):
    """A config file that does not validate; the message names the file and each bad key."""


# -- YAML, overrides, errors ----------------------------------------------------------------------
def parse_value(text: str) -> Any:
    """A ``--set`` value as a YAML scalar: 10 -> int, 1e-4 -> float, null -> None, [a, b] -> list."""
    if text.strip().lower() in {"yes", "no", "on", "off"}:
        return text.strip()  # YAML 1.1 would make these booleans; pydantic still reads them as bools
    value = yaml.safe_load(text)
    if isinstance(value, str) and any(c in value for c in ".eE"):
        try:  # PyYAML reads "1e-4" (no dot) as a string
            return float(value)
        except ValueError:
            return value
    return value


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["a.b=1", ...]`` from the command line -> ``{"a.b": 1}``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not key=value (e.g. selection.min_target_aesthetic=5)")
        out[key] = parse_value(value)
    return out


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` with ``{"a.b.c": value}`` set in its nested dicts."""
    out = copy.deepcopy(data)
    for dotted, value in overrides.items():
        keys = dotted.split(".")
        node = out
        for key in keys[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[keys[-1]] = value
    return out


def read_yaml(path: Path | str) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config is a mapping of keys, got {type(data).__name__}")
    return data


def format_errors(source: str, exc: ValidationError) -> ConfigError:
    """The one error format: ``<file>: invalid config`` then ``  dotted.key: message`` per error."""
    lines = [f"{source}: invalid config"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-")) or "<root>"
        lines.append(f"  {loc}: {err['msg']}")
    return ConfigError("\n".join(lines))


def validate_model(model: type[BaseModel], data: dict[str, Any], source: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise format_errors(source, exc) from None


def load_yaml_model(path: Path | str | None, model: type[BaseModel], overrides: dict[str, Any] | None = None) -> Any:
    """Read ``path`` (or start from the defaults when None), apply overrides, validate as ``model``."""
    data = read_yaml(path) if path is not None else {}
    return validate_model(model, apply_overrides(data, overrides or {}), str(path or "<defaults>"))


# -- backends -------------------------------------------------------------------------------------
class ModelFile:
    """Marks a config field that names a model file or folder: its digest enters the fingerprint."""


ModelPath = Annotated[Path | None, ModelFile()]


class ModelDigestError(ValueError):
    """A model file whose sha256 is not the one its config pins (or a ``sha256:`` setting that names no model)."""


class BackendConfig(StrictModel):
    """Parameters of one backend of one kind (``inpaint``, ``features``, ``scorer``, ...)."""

    kind: ClassVar[str]
    embedded: ClassVar[bool] = False  # True for a CPU stand-in for the paper's model
    # Fields that change how fast or where it runs but not what it outputs (device, batch size, URLs).
    runtime_fields: ClassVar[frozenset[str]] = frozenset()

    backend: str
    sha256: str | dict[str, str] | None = Field(
        None, description="the expected sha256 of the model file (or folder) this backend loads, checked before "
        "loading; a mapping field -> digest when it loads several; rows record it in builder.model")

    @field_validator("sha256")
    @classmethod
    def _digests_are_hex(cls, value: str | dict[str, str] | None) -> str | dict[str, str] | None:
        def clean(digest: str) -> str:
            digest = digest.strip().lower().removeprefix("sha256:")
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(f"{digest!r} is not a sha256 digest (64 hex digits)")
            return digest

        if isinstance(value, dict):
            return {name: clean(digest) for name, digest in value.items()}
        return clean(value) if value is not None else None

    def label(self) -> str:
        """The name rows and stats show, e.g. ``opencv-telea``."""
        return self.backend

    def model_files(self) -> dict[str, Path | None]:
        """Every model file or folder this backend loads, by config field (None: not set, or nowhere here)."""
        return {name: Path(getattr(self, name)).expanduser() if getattr(self, name) is not None else None
                for name, field in type(self).model_fields.items()
                if any(isinstance(m, ModelFile) for m in field.metadata)}

    def pinned_digests(self) -> dict[str, str]:
        """The ``sha256:`` setting by field; a single digest pins the backend's only model."""
        if self.sha256 is None:
            return {}
        files = self.model_files()
        if isinstance(self.sha256, dict):
            unknown = sorted(set(self.sha256) - set(files))
            if unknown:
                raise ModelDigestError(f"{self.kind} backend {self.backend}: sha256 names {', '.join(unknown)}, "
                                       f"which it does not load (its model fields: {', '.join(files) or 'none'})")
            return dict(self.sha256)
        if len(files) != 1:
            raise ModelDigestError(f"{self.kind} backend {self.backend}: one sha256 given, but it loads "
                                   f"{len(files)} model files ({', '.join(files) or 'none'}); give a mapping")
        return {next(iter(files)): self.sha256}

    def check_model_digests(self) -> None:
        """Raise :class:`ModelDigestError` when a pinned model file's sha256 differs: a checkpoint is code
        (TorchScript and pickle run what they hold), so a swapped file must never load. A file that is not
        there is left to the loader's own error (or to a download, which calls this again)."""
        files = self.model_files()
        for name, expected in self.pinned_digests().items():
            path = files.get(name)
            if path is None or not path.exists():
                continue
            found = path_digest(path)
            if found != expected:
                raise ModelDigestError(f"{self.kind} backend {self.backend}: {name} {path} has sha256 {found}, but "
                                       f"the config pins {expected}; not loading it (a checkpoint is code)")

    def model_record(self) -> str | None:
        """What rows record in ``builder.model``: :meth:`model_id`, with ``@sha256:<digest>`` per pinned file."""
        model = self.model_id()
        pins = self.pinned_digests()
        if model is None or not pins:
            return model
        return model + "".join(f"@sha256:{digest}" for _, digest in sorted(pins.items()))

    def model_id(self) -> str | None:
        """The model a row records in ``builder.model`` (checkpoint path, hub id@revision); None if none."""
        return None

    def row_params(self) -> dict[str, Any]:
        """The parameters that shape the output (part of row ids): every field but the runtime ones (and the
        pinned digests, which check the model but do not change it)."""
        return self.model_dump(mode="json", exclude={"backend", "sha256", *self.runtime_fields})

    def model_digests(self) -> dict[str, str | None]:
        """sha256 of every :data:`ModelPath` field's file or folder (cached by path, size and mtime)."""
        out: dict[str, str | None] = {}
        for name, field in type(self).model_fields.items():
            if any(isinstance(m, ModelFile) for m in field.metadata):
                value = getattr(self, name)
                out[name] = path_digest(value) if value is not None and Path(value).exists() else None
        return out

    def preflight(self) -> list[str]:
        """One line per model file this backend needs and cannot find, or whose pinned sha256 differs (checked
        before Prefect starts)."""
        out = []
        for name, field in type(self).model_fields.items():
            if any(isinstance(m, ModelFile) for m in field.metadata):
                value = getattr(self, name)
                if value is not None and not Path(value).exists():
                    out.append(f"{self.kind} backend {self.backend}: {name} {value} does not exist")
        return out + self.digest_problems()

    def digest_problems(self) -> list[str]:
        try:
            self.check_model_digests()
        except ModelDigestError as exc:
            return [str(exc)]
        return []

    def fingerprint(self) -> dict[str, Any]:
        """What a stage using this backend records for resume: label, output parameters, model digests."""
        return {"backend": self.label(), "params": self.row_params(), "models": self.model_digests()}

    def create(self) -> Any:
        """The backend object (models load when it is first used, in the process that uses it); a pinned
        model file's sha256 is checked first."""
        self.check_model_digests()
        return REGISTRY.backend(self.kind, self.backend).create(self)

    def uses_gpu(self) -> bool:
        """Whether this backend may run on a GPU of this process: its ``device`` names CUDA, or is ``auto``
        where this process sees CUDA. A backend without a ``device`` runs on the CPU or elsewhere (a
        lama-cleaner or IOPaint server's GPU is the server's); one that differs overrides this."""
        device = getattr(self, "device", None)
        if not isinstance(device, str):
            return False
        device = device.lower()
        return device.startswith("cuda") or (device == "auto" and cuda_visible())


def cuda_visible() -> bool:
    """Whether this process sees a CUDA device (torch's answer; False without torch, which is not imported
    when it is not installed)."""
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def iter_models(value: Any) -> Iterator[BaseModel]:
    """Every pydantic model in ``value``, itself included, depth first (sections, backends, list items)."""
    if isinstance(value, BaseModel):
        yield value
        for name in type(value).model_fields:
            yield from iter_models(getattr(value, name))
    elif isinstance(value, list | tuple):
        for item in value:
            yield from iter_models(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from iter_models(item)


def missing_models(config: BaseModel) -> list[str]:
    """Every section or backend anywhere in ``config`` whose files are missing (its ``preflight()``),
    one line each."""
    found = [line for model in iter_models(config) if callable(getattr(model, "preflight", None))
             for line in model.preflight()]
    return list(dict.fromkeys(found))  # one model used by two sections is named once


def _validate_backend(kind: str, value: Any) -> Any:
    if isinstance(value, BackendConfig):
        return value
    if not isinstance(value, dict) or "backend" not in value:
        raise ValueError(f"a {kind} backend is a mapping with a `backend:` key, e.g. {{backend: NAME, ...}}")
    try:
        spec = REGISTRY.backend(kind, str(value["backend"]))
    except RegistryError as exc:
        raise ValueError(str(exc)) from None
    return spec.config.model_validate(value)


def backend_field(kind: str) -> Any:
    """The type of a config field choosing a backend of ``kind`` from the registry."""
    return Annotated[SerializeAsAny[BackendConfig], BeforeValidator(functools.partial(_validate_backend, kind))]


# -- the build config -----------------------------------------------------------------------------
class BuilderConfig(StrictModel):
    """Base of a builder section: every builder can be switched off without deleting its section."""

    enabled: bool = True

    def preflight(self) -> list[str]:
        """One line per source file or folder this builder needs and cannot find."""
        return []


class SplitConfig(StrictModel):
    """The ``split`` column: a deterministic train/val assignment by source image (rows.assign_split)."""

    val_fraction: float = Field(0.02, ge=0, le=1, description="share of source images held out as `val`")


class RunnerConfig(StrictModel):
    """``runner:``: where the build's tasks run (docs/scale.md). Changes how fast, never what: it is left
    out of the config digest, row ids and fingerprints."""

    kind: Literal["threads", "dask"] = Field(
        "threads", description="threads: this process, `workers` at once; dask: Dask worker processes")
    address: str | None = Field(None, description="dask: an existing cluster's scheduler (tcp://host:8786)")
    n_workers: int | None = Field(None, ge=1, description="dask without address: LocalCluster worker processes "
                                  "(default: workers)")
    threads_per_worker: int = Field(1, ge=1, description="dask without address: tasks at once per worker process, "
                                    "and the OpenMP / MKL / OpenBLAS / OpenCV / torch threads of that process")
    gpus: tuple[int, ...] | None = Field(None, min_length=1, description="dask without address: worker i sees "
                                         "GPU gpus[i % len(gpus)] (CUDA_VISIBLE_DEVICES)")
    gpu_concurrency: int | None = Field(None, ge=1, description="at most this many GPU tasks at once (a Prefect "
                                        "global concurrency limit, ieiw-gpu); null: unbounded")

    @model_validator(mode="after")
    def _consistent(self) -> RunnerConfig:
        # compared with the defaults, not by which keys were given: the JSON form the tasks get has them all
        local = {name for name in ("n_workers", "gpus") if getattr(self, name) is not None}
        local |= {"threads_per_worker"} if self.threads_per_worker != 1 else set()
        if self.kind == "threads" and (local or self.address is not None):
            keys = ", ".join(sorted(local | ({"address"} if self.address is not None else set())))
            raise ValueError(f"{keys}: only with kind: dask (threads use `workers`)")
        if self.address is not None and local:
            raise ValueError(f"{', '.join(sorted(local))}: set these when starting your own cluster's workers; "
                             "with address: ieiw starts no workers (docs/scale.md)")
        return self


# ``out_dir``: a local folder (kept as a Path) or an object-storage URL such as
# ``s3://bucket/prefix`` (kept as its string: a Path would fold ``//``). docs/scale.md, "Object storage".
OutDir = Annotated[Path | str, BeforeValidator(storage.config_value)]


class BuildConfig(StrictModel):
    """The keys every build has. The composed model adds the builder and stage sections as fields."""

    builder_section_names: ClassVar[tuple[str, ...]] = ()

    name: str = "demo"
    out_dir: OutDir = Path("out")
    unit_size: int = Field(16, ge=1, description="source records per work unit (one candidate shard each)")
    workers: int = Field(2, ge=1, description="concurrent tasks (threads) on this machine")
    plugins: tuple[str, ...] = Field((), description="modules to import first (they may register builders)")
    split: SplitConfig = SplitConfig()
    runner: RunnerConfig = RunnerConfig()

    @model_validator(mode="after")
    def _some_builder(self) -> BuildConfig:
        if not self.builder_sections():
            names = ", ".join(REGISTRY.builder_names())
            raise ValueError(f"no builder is enabled: add a builder section (one of: {names})")
        return self

    def builder_sections(self) -> dict[str, BuilderConfig]:
        """The enabled builder sections, in config order."""
        out = {}
        for name in self.builder_section_names:
            section = getattr(self, name, None)
            if section is not None and section.enabled:
                out[name] = section
        return out

    def digest(self) -> str:
        return stable_hash(self.model_dump(mode="json", exclude={"runner"}), length=16)

    def preflight(self) -> list[str]:
        """The output folder must be a folder (or creatable), not inside a file, and writable; a URL's
        storage package must be installed (the bucket itself is first reached by the build)."""
        if storage.is_url(self.out_dir):
            return storage.check_writable(self.out_dir)
        out = Path(self.out_dir)
        if out.exists() and not out.is_dir():
            return [f"out_dir {out} is a file, not a folder"]
        existing = out
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            return [f"out_dir {out} would be inside the file {existing}"]
        if not os.access(existing, os.W_OK | os.X_OK):
            return [f"out_dir {out}: {existing} is not writable by this user"]
        return []


BASE_KEYS = frozenset(BuildConfig.model_fields)


@functools.lru_cache(maxsize=64)
def build_config_model(builder_sections: tuple[str, ...]) -> type[BuildConfig]:
    """The build config model with these builder sections plus every registered default section."""
    fields: dict[str, Any] = {}
    for name in builder_sections:
        spec = REGISTRY.builder(name)
        assert spec is not None, name
        fields[name] = (spec.config | None, None)
    for name, spec in REGISTRY.default_sections().items():
        fields[name] = (spec.config, Field(default_factory=spec.config))
    model = create_model("BuildConfig", __base__=BuildConfig, __module__=__name__, **fields)
    model.builder_section_names = builder_sections
    return model


def import_plugins(modules: Any, source: str) -> None:
    if not isinstance(modules, list | tuple):
        raise ConfigError(f"{source}: invalid config\n  plugins: a list of module names")
    for module in modules:
        try:
            importlib.import_module(str(module))
        except ImportError as exc:
            raise ConfigError(f"{source}: invalid config\n  plugins: cannot import {module!r}: {exc}") from None


def validate_build_config(data: dict[str, Any], source: str = "<config>") -> BuildConfig:
    """Validate a build config mapping; builder sections are looked up in the registry by key."""
    import_plugins(data.get("plugins", ()), source)
    sections, unknown = [], []
    for key in data:
        if key in BASE_KEYS:
            continue
        try:
            if REGISTRY.builder(key) is not None:
                sections.append(key)
            elif REGISTRY.section(key) is None:
                unknown.append(key)
        except RegistryError as exc:
            raise ConfigError(f"{source}: invalid config\n  {key}: {exc}") from None
    if unknown:
        known = ", ".join(REGISTRY.builder_names())
        lines = [f"  {key}: not a config key or a registered builder section (builders: {known})" for key in unknown]
        raise ConfigError("\n".join([f"{source}: invalid config", *lines]))
    return validate_model(build_config_model(tuple(sections)), data, source)


# Kept here, not in the flow module: a Dask worker unpickles the flow's tasks, and a ContextVar cannot be
# pickled. Keys that import code (``plugins:``) come from a config file or from `ieiw build --set` on this machine,
# never from a flow run's parameters: anyone who can reach the Prefect API can start a deployment run.
LOCAL_ONLY_KEYS = ("plugins",)
_local_overrides: ContextVar[Mapping[str, Any]] = ContextVar("ieiw_local_overrides", default={})


@contextlib.contextmanager
def local_overrides(values: Mapping[str, Any]) -> Iterator[None]:
    """Overrides of :data:`LOCAL_ONLY_KEYS` given on this machine's command line, for the flow called inside."""
    token = _local_overrides.set(dict(values))
    try:
        yield
    finally:
        _local_overrides.reset(token)


def local_only_overrides() -> dict[str, Any]:
    """The overrides of :data:`LOCAL_ONLY_KEYS` this machine's command line gave (:func:`local_overrides`)."""
    return dict(_local_overrides.get())


def is_local_only(key: str) -> bool:
    return any(key == name or key.startswith(name + ".") for name in LOCAL_ONLY_KEYS)


def load_config(path: Path | str, overrides: dict[str, Any] | None = None) -> BuildConfig:
    """Read a YAML build config, apply ``{"dotted.key": value}`` overrides, validate.

    Once per process for one file (as it is on disk) and one set of overrides: ``ieiw build`` validates
    before Prefect starts and the flow it runs asks again; configs are frozen, so both share one object."""
    path = Path(path)
    try:
        stat = path.stat()
        version: tuple = (stat.st_mtime_ns, stat.st_size)
    except OSError:
        version = ()  # read_yaml names the problem
    key = (str(path.absolute()), version, json.dumps(overrides or {}, sort_keys=True, default=repr))
    with _loaded_lock:
        config = _loaded.get(key)
    if config is None:
        config = validate_build_config(apply_overrides(read_yaml(path), overrides or {}), str(path))
        with _loaded_lock:
            _loaded[key] = config
            while len(_loaded) > 8:
                _loaded.pop(next(iter(_loaded)))
    return config


_loaded: dict[tuple, BuildConfig] = {}
_loaded_lock = threading.Lock()


def absolute_paths(config: BuildConfig, root: Path | str) -> BuildConfig:
    """``config`` with every relative path (a field value of type ``Path``: ``out_dir``, source roots,
    model files, templates...) made absolute against ``root``, so a worker process whose working
    directory is elsewhere reads and writes the same files. Fields typed ``str`` are left as written
    (the crawl section's dump and cache paths resolve against the worker's working directory)."""
    root = Path(root).absolute()

    def fix(value: Any) -> Any:
        if isinstance(value, Path):
            return value if value.is_absolute() else Path(os.path.normpath(root / value))
        if isinstance(value, BaseModel):
            update = {}
            for name in type(value).model_fields:
                old = getattr(value, name)
                new = fix(old)
                if new is not old:
                    update[name] = new
            return value.model_copy(update=update) if update else value
        if isinstance(value, list | tuple):
            items = [fix(v) for v in value]
            return type(value)(items) if any(a is not b for a, b in zip(items, value, strict=True)) else value
        if isinstance(value, dict):
            fixed = {k: fix(v) for k, v in value.items()}
            return fixed if any(fixed[k] is not value[k] for k in value) else value
        return value

    return fix(config)


@functools.lru_cache(maxsize=8)
def _from_json(text: str) -> BuildConfig:
    import json

    return validate_build_config(json.loads(text), "<flow parameter>")


def config_from_data(data: dict[str, Any]) -> BuildConfig:
    """A validated config from its JSON form (what flow tasks receive); cached per process."""
    from ieiw.schemas.rows import canonical_json

    return _from_json(canonical_json(data))
