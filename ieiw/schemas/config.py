"""Build configuration: YAML files validated by pydantic, so a typo fails before any work starts.

Relative paths in a config resolve against the folder the build runs from (the repo root for
``make build`` and for the deployments in ``prefect.yaml``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ieiw.crawlers.config import CrawlConfig
from ieiw.schemas.rows import stable_hash


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SampleSpec(StrictModel):
    """Generate the bundled synthetic PhraseCut-layout sample into ``root`` when it is missing."""

    images: int = Field(120, ge=1)
    seed: int = 0
    width: int = Field(320, ge=64)
    height: int = Field(240, ge=64)


class PhraseCutSource(StrictModel):
    root: Path = Field(description="folder holding image_data_split.json, refer_{split}.json and images/")
    splits: list[str] = ["train"]
    limit: int | None = Field(None, ge=1, description="read at most this many records per split")
    samples: SampleSpec | None = Field(None, description="make a synthetic sample here if root is missing")


class InpaintConfig(StrictModel):
    backend: Literal["opencv"] = "opencv"
    method: Literal["telea", "ns"] = "telea"
    radius: int = Field(5, ge=1)


class RemovalConfig(StrictModel):
    """PhraseCut removal (+ the flipped add pair)."""

    enabled: bool = True
    source: PhraseCutSource
    inpaint: InpaintConfig = InpaintConfig()
    mask_dilation: int = Field(7, ge=0, description="side of the square dilation kernel in px (0 = none)")
    min_mask_fraction: float = Field(0.002, ge=0, le=1)
    max_mask_fraction: float = Field(0.5, ge=0, le=1)
    flip_add: bool = True
    image_format: Literal["jpeg", "png"] = "jpeg"
    jpeg_quality: int = Field(95, ge=50, le=100)
    seed: int = 0


class ScoringConfig(StrictModel):
    backend: Literal["proxy"] = "proxy"


class SelectionConfig(StrictModel):
    """The paper's two rules: drop low-quality targets, and pairs whose quality changes a lot."""

    min_target_aesthetic: float = 3.5
    max_aesthetic_gap: float = 1.5


class BuildConfig(StrictModel):
    name: str = "demo"
    out_dir: Path = Path("out")
    unit_size: int = Field(16, ge=1, description="source records per work unit (one candidate shard each)")
    workers: int = Field(2, ge=1, description="concurrent tasks (threads) on this machine")
    removal: RemovalConfig | None = None
    crawl: CrawlConfig | None = Field(None, description="photoshop-request pairs (docs/crawl.md); {} = bundled sample")
    scoring: ScoringConfig = ScoringConfig()
    selection: SelectionConfig = SelectionConfig()

    @model_validator(mode="after")
    def _some_builder(self) -> BuildConfig:
        if not any(section is not None and section.enabled for section in (self.removal, self.crawl)):
            raise ValueError("no builder is enabled: add a `removal:` or a `crawl:` section")
        return self

    def digest(self) -> str:
        return stable_hash(self.model_dump(mode="json"), length=16)


class ConfigError(ValueError):
    """A config file that does not validate; the message names the file and each bad key."""


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
            raise ValueError(f"override {item!r} is not key=value (e.g. selection.min_target_aesthetic=5)")
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


def load_config(path: Path | str, overrides: dict[str, Any] | None = None) -> BuildConfig:
    """Read a YAML build config, apply ``{"dotted.key": value}`` overrides, validate."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from exc
    data = apply_overrides(data, overrides or {})
    try:
        return BuildConfig.model_validate(data)
    except ValidationError as exc:
        lines = [f"{path}: invalid config"]
        for err in exc.errors():
            lines.append(f"  {'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}")
        raise ConfigError("\n".join(lines)) from None
