"""The VLM judge (``scoring.scorers: [{backend: vlm-judge, model: ...}]``): a vision-language model looks at
each pair and says whether the target does what the instruction says and nothing else.

As OmniEdit, ImgEdit, X2Edit and Pico-Banana do, every pair is scored on three questions (rubric
``v1``, :data:`RUBRIC_PROMPT`), each an integer 0-10 in the answer, stored divided by 10 (0-1):

- ``instruction``: the edit the instruction asks for is done in the target;
- ``preservation``: everything the instruction does not mention is unchanged;
- ``realism``: the target looks like a real, artefact-free photograph.

The model answers ``instruction: N / preservation: N / realism: N / reason: ...``; locally the answer is
held to that form token by token (:mod:`ieiw.backends.lm.constrain`, ``constrained: true``), over HTTP it is
asked for with vLLM's ``guided_regex``. Parsing is lenient either way (:func:`parse_answer`): a number it
cannot find is null (a rule on it then files the row under ``unscored``). The raw answer is kept.

The row schema has no columns for these, so they live in the scores shard's own ``judge`` column
(struct: instruction, preservation, realism, answer, rubric, backend) and selection reads them as
``judge_instruction`` ... (:func:`ieiw.filters.scoring.decision_scores`): ``min_judge_instruction`` and
the other two rules in ``selection:`` (absolute, ``{quantile: q}``, ``per_task``) re-decide with ``ieiw
select``, never re-running the model. Local weights through ``transformers``' own classes
(``AutoProcessor`` + ``AutoModelForImageTextToText``: Qwen2-VL, Qwen2.5-VL, LLaVA), or an OpenAI-compatible
``endpoint``. docs/language-models.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from ieiw.backends.lm.base import ChatModel, LanguageModelSettings
from ieiw.backends.lm.connect import connect
from ieiw.backends.lm.constrain import Pattern
from ieiw.filters.scoring import PairView, ScoreContext, Scorer
from ieiw.imageio import downscale
from ieiw.schemas import storage
from ieiw.schemas.config import BackendConfig
from ieiw.schemas.lazy import locked_cached_property
from ieiw.schemas.manifest import load_manifest, manifest_path
from ieiw.schemas.registry import register_backend
from ieiw.schemas.shards import read_shard

RUBRIC = "v1"
QUESTIONS = ("instruction", "preservation", "realism")
RUBRIC_PROMPT = (
    "The first image is a photo before an edit, the second the same photo after it. The edit was meant to "
    "follow this instruction: \"{instruction}\"\n\n"
    "Score the edit from 0 (worst) to 10 (best) on three questions:\n"
    "instruction: does the second image do what the instruction asks?\n"
    "preservation: is everything the instruction does not mention left unchanged?\n"
    "realism: does the second image look like a real photo, without artefacts?\n\n"
    "Answer in exactly this form, then one sentence of reasoning:\n"
    "instruction: N\npreservation: N\nrealism: N\nreason: ..."
)
ANSWER = Pattern((("instruction: ",), Pattern.integer(0, 10), ("\npreservation: ",), Pattern.integer(0, 10),
                  ("\nrealism: ",), Pattern.integer(0, 10), ("\nreason: ",)), free_tail=True)
JUDGE_COLUMN = "judge"
JUDGE = pa.struct([("instruction", pa.float32()), ("preservation", pa.float32()), ("realism", pa.float32()),
                   ("answer", pa.string()), ("rubric", pa.string()), ("backend", pa.string())])
_NUMBER = {q: re.compile(rf"{q}[a-z_ ]*\**\s*[:=]\s*\**\s*(\d+(?:\.\d+)?)\s*(/\s*10)?", re.IGNORECASE) for q in QUESTIONS}
_REASON = re.compile(r"reason(?:ing)?\s*[:=]\s*(.*)", re.IGNORECASE | re.DOTALL)


def parse_answer(answer: str) -> dict[str, Any]:
    """{instruction, preservation, realism} in 0-1 (null where the answer has no number 0-10 for it) and
    ``reason`` (the text after "reason:", or None)."""
    out: dict[str, Any] = {}
    for question, pattern in _NUMBER.items():
        match = pattern.search(answer or "")
        value = float(match.group(1)) if match else None
        out[question] = value / 10.0 if value is not None and 0.0 <= value <= 10.0 else None
    reason = _REASON.search(answer or "")
    out["reason"] = reason.group(1).strip() if reason else None
    return out


class VlmJudgeConfig(LanguageModelSettings, BackendConfig):
    """``{backend: vlm-judge, model: Qwen/Qwen2.5-VL-7B-Instruct}`` (a local folder or cached hub id), or
    ``{backend: vlm-judge, endpoint: http://host:8000/v1, model: <served name>}``."""

    kind: ClassVar[str] = "scorer"
    embedded: ClassVar[bool] = False
    fills: ClassVar[tuple[str, ...]] = ()
    side_column: ClassVar[tuple[str, pa.DataType]] = (JUDGE_COLUMN, JUDGE)
    runtime_fields: ClassVar[frozenset[str]] = frozenset({"device", "batch_size", "timeout_s", "api_key_env", "dtype"})

    backend: Literal["vlm-judge"] = "vlm-judge"
    rubric: Literal["v1"] = RUBRIC
    batch_size: int = Field(8, ge=1, description="pairs per generate call (local models)")
    max_new_tokens: int = Field(96, ge=16)
    image_size: int = Field(448, ge=32, description="long side of each image given to the model, px")
    constrained: bool = Field(True, description="hold local answers to the rubric's form token by token")

    def label(self) -> str:
        name = self.model.rstrip("/").split("/")[-1]
        return f"vlm-judge-{self.rubric}:{name}"

    def model_id(self) -> str | None:
        return self.model + (f"@{self.revision}" if self.revision else "")

    def model_digests(self) -> dict[str, str | None]:
        return {"model": self.revision_id()} if self.endpoint is None else {"endpoint": self.endpoint}

    def preflight(self) -> list[str]:
        return [f"scorer vlm-judge: {p}" for p in self.problems()]


@register_backend("scorer", "vlm-judge", VlmJudgeConfig)
class VlmJudge(Scorer):
    """Scores pairs in batches of ``batch_size`` with the model loaded on first use."""

    @locked_cached_property
    def model(self) -> ChatModel:
        return connect(self.config, vision=True)

    def score(self, pairs: Sequence[PairView], context: ScoreContext) -> list[dict[str, Any]]:
        config: VlmJudgeConfig = self.config
        out: list[dict[str, Any]] = []
        for start in range(0, len(pairs), config.batch_size):
            batch = pairs[start:start + config.batch_size]
            conversations = [[{"role": "user", "content": [
                {"type": "image"}, {"type": "image"},
                {"type": "text", "text": RUBRIC_PROMPT.replace("{instruction}", pair.instruction)}]}] for pair in batch]
            images = [[downscale(context.pixels(p.source), config.image_size),
                       downscale(context.pixels(p.target), config.image_size)] for p in batch]
            answers = self.model.chat(conversations, n=1, max_new_tokens=config.max_new_tokens, temperature=0.0,
                                      pattern=ANSWER if config.constrained else None, images=images)
            for answer in answers:
                parsed = parse_answer(answer[0])
                out.append({"judge": {**{q: parsed[q] for q in QUESTIONS}, "answer": answer[0],
                                      "rubric": config.rubric, "backend": self.name}})
        return out


def judge_verdicts(scores_folder: Path) -> dict[str, dict[str, Any]]:
    """Row id -> the judge's cell (instruction, preservation, realism, answer, rubric, backend) for every row
    the scores stage at ``scores_folder`` judged; empty when no judge ran. Reads only the id and ``judge``
    columns of the shards its manifest lists (the report and the card show them; rows do not carry them)."""
    folder = storage.location(scores_folder)
    if not storage.exists(manifest_path(folder)):
        return {}
    verdicts: dict[str, dict[str, Any]] = {}
    for entry in load_manifest(folder)["units"].values():
        path = folder / entry["shard"]
        if JUDGE_COLUMN not in storage.read_schema(path).names:
            continue
        table = read_shard(path, columns=["id", JUDGE_COLUMN])
        for row_id, cell in zip(table["id"].to_pylist(), table[JUDGE_COLUMN].to_pylist(), strict=True):
            if cell is not None:
                verdicts[row_id] = cell
    return verdicts


def judge_numbers(cell: Mapping[str, Any] | None) -> dict[str, float]:
    """A judge cell's scores as selection names them (``judge_instruction``, ...), the missing ones left out."""
    return {f"{JUDGE_COLUMN}_{q}": float(cell[q]) for q in QUESTIONS if cell and cell.get(q) is not None}
