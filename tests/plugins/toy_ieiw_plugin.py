"""A third-party builder, as another package would ship it: it lives outside ``ieiw/`` and joins the
build through the ``ieiw.builders`` entry point of its own distribution metadata (next to this file).

The ``toy:`` section makes ``count`` recolour pairs from generated gradients; every ``drop_every``-th
candidate is judged unusable by the builder itself (``drop_reason``), as a real builder does when a
verification fails.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from ieiw.schemas.units import BuildContext, CandidateBuilder, UnitResult, WorkUnit
from ieiw.imageio import encode
from ieiw.schemas.config import BuilderConfig
from ieiw.schemas.registry import register_builder, register_task
from ieiw.schemas.rows import canonical_json, image_cell, row_id

register_task("toy-recolour", family="ieiw", description="a test plugin's task: an IEIW pair, so kept in ieiw/")


class ToyConfig(BuilderConfig):
    count: int = Field(6, ge=1)
    drop_every: int = Field(3, ge=1)
    side: int = 48


@register_builder("toy", ToyConfig)
class ToyBuilder(CandidateBuilder):
    name = "toy"

    def __init__(self, config: ToyConfig, context: BuildContext):
        self.config = config
        self.unit_size = context.unit_size

    def plan(self) -> list[WorkUnit]:
        n, size = self.config.count, self.unit_size
        return [WorkUnit(f"toy-{i:05d}", {"start": s, "stop": min(s + size, n)}) for i, s in enumerate(range(0, n, size))]

    def fingerprint(self) -> dict[str, Any]:
        return self.config.model_dump(mode="json")

    def backends(self) -> dict[str, str]:
        return {"paint": "numpy-gradient"}

    def build_unit(self, unit: WorkUnit) -> UnitResult:
        result = UnitResult()
        side = self.config.side
        ramp = np.linspace(40, 220, side, dtype=np.float32)
        for index in range(unit.payload["start"], unit.payload["stop"]):
            result.records += 1
            rng = np.random.default_rng(index)
            base = np.stack([np.add.outer(ramp, ramp) / 2] * 3, axis=2) + rng.normal(0, 12, (side, side, 3))
            source = np.clip(base, 0, 255).astype(np.uint8)
            target = source[..., ::-1].copy()  # swap red and blue
            rid = row_id("toy", str(index), self.name, {"side": side}, "toy-recolour")
            result.rows.append({
                "id": rid,
                "task": "toy-recolour",
                "instruction": "swap the red and blue channels",
                "source_image": image_cell(encode(source, "png"), f"{index}.png"),
                "target_image": image_cell(encode(target, "png"), f"{index}_t.png"),
                "mask": None,
                "width": side,
                "height": side,
                "origin": {"dataset": "toy", "record_id": str(index), "image_id": str(index)},
                "exemplar": None,
                "scores": None,
                "builder": {"name": self.name, "backend": "numpy-gradient", "embedded": True, "model": None,
                            "seed": index, "params": canonical_json({"side": side})},
                "drop_reason": "toy_unusable" if index % self.config.drop_every == 0 else None,
            })
        return result


# -- a planted inpainter that leaves every object in place (for the removal verification test) -------
from typing import ClassVar, Literal  # noqa: E402

from ieiw.backends.inpaint.base import Inpainter  # noqa: E402
from ieiw.schemas.config import BackendConfig  # noqa: E402
from ieiw.schemas.registry import register_backend  # noqa: E402


class KeepConfig(BackendConfig):
    kind: ClassVar[str] = "inpaint"
    backend: Literal["keep"] = "keep"


@register_backend("inpaint", "keep", KeepConfig)
class KeepInpainter(Inpainter):
    """Returns each image unchanged: the object is still there after "removal"."""

    def inpaint(self, images, masks):
        return [image.copy() for image in images]
