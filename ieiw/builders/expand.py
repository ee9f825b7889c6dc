"""Instruction expansion (``ieiw instructions expand``): the paper's GPT-4 step, with a local or served LLM.

InstructDiffusion writes 10 instructions per task by hand and has GPT-4 "rewrite and expand the diversity"
of them. Here every seed template of a template file (ours, or a user's) is given to a chat model, which
writes ``n`` paraphrases; each is validated, and the seeds plus the accepted paraphrases are written as a
template file of the same form, with a ``provenance:`` mapping, that builders read through ``templates:``.

Validation, in order, each failure a named reason (counted in the provenance and the journal):

- ``empty`` / ``not_one_line``: nothing usable after cleaning (quotes, "Paraphrase:" labels, numbering);
- ``too_short`` / ``too_long``: fewer than ``min_words`` or more than ``max_words`` words;
- ``placeholder_dropped`` / ``placeholder_added``: the placeholders (by name, any capitalisation) differ
  from the seed's: every one kept, none new;
- ``bad_template``: the kind's own rule refuses it (the phrase grammar, stray braces);
- ``language``: not ``language`` by a script heuristic (``en``: Latin letters, mostly ASCII words);
- ``duplicate``: equal, after normalising (case, punctuation, spaces), to a seed or an accepted paraphrase;
- ``self_check_no``: the model, asked whether the paraphrase asks for the same edit as the seed, answers
  no (the answer held to "yes"/"no", AnyEdit's self-check).

Deterministic: each seed's sampling seed is derived from ``seed``, the kind and the seed's text, so the
same model and settings give the same file, however often the run is interrupted. Resumable: a journal
(``<out>.journal.jsonl``) gets one line per finished seed (fsynced); a rerun with the same settings skips
those seeds, one with other settings refuses to mix them (``--restart`` discards the journal).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field

from ieiw.backends.lm.base import ChatModel
from ieiw.backends.lm.constrain import Pattern
from ieiw.builders.template_files import (
    PROVENANCE,
    Rule,
    load_packaged_template_file,
    load_template_file,
    uses_exactly,
)
from ieiw.phrases import template_placeholders
from ieiw.schemas.config import StrictModel
from ieiw.schemas.rows import canonical_json, stable_hash
from ieiw.schemas.storage import atomic_write_bytes

PROMPT_VERSION = "expand-v1"
SYSTEM_PROMPT = "You rewrite instructions for an image-editing model. You answer with one instruction only."
PARAPHRASE_PROMPT = (
    "Rewrite the following image-editing instruction so that it asks for exactly the same edit in different "
    "words. Keep every placeholder in curly braces exactly as written, such as {example}, and add no new "
    "placeholders. Answer with the rewritten instruction only, on one line.\n\nInstruction: {seed}"
)
SELF_CHECK_PROMPT = (
    "Do these two image-editing instructions ask for the same edit? Placeholders in curly braces stand for "
    "the same words in both. Answer yes or no.\n\nA: {seed}\nB: {paraphrase}"
)
YES_NO = Pattern.choice(["yes", "no"])

# Reasons, in the order they are checked.
EMPTY, NOT_ONE_LINE, TOO_SHORT, TOO_LONG = "empty", "not_one_line", "too_short", "too_long"
PLACEHOLDER_DROPPED, PLACEHOLDER_ADDED, BAD_TEMPLATE = "placeholder_dropped", "placeholder_added", "bad_template"
LANGUAGE, DUPLICATE, SELF_CHECK_NO = "language", "duplicate", "self_check_no"


# --- seed families: the template files ieiw ships, with each kind's rule ------------------------------
def seed_families() -> dict[str, tuple[str, dict[str, Rule], tuple[str, ...]]]:
    """family -> (packaged file, {kind: rule}, optional kinds): the template files builders read."""
    from ieiw.builders import enhance, instructions, keypoints, overlay

    families: dict[str, tuple[str, dict[str, Rule], tuple[str, ...]]] = {
        "instructions": (instructions.DEFAULT_TEMPLATES_FILE, dict(instructions.RULES), instructions.OPTIONAL_TASKS),
        "segmentation": (overlay.DEFAULT_TEMPLATES, dict(overlay.TEMPLATE_KINDS), ()),
        "keypoints": (keypoints.DEFAULT_TEMPLATES, dict(keypoints.TEMPLATE_KINDS), ()),
    }
    for task in enhance.TEMPLATE_TASKS:
        families[task] = (f"templates/{task}.yaml", {task: ()}, ())
    return families


def load_seeds(family: str, path: str | Path | None = None) -> tuple[dict[str, tuple[str, ...]], dict[str, Rule], str]:
    """The seed lists of ``family`` (from ``path``, or the shipped file), each kind's rule, and the source."""
    families = seed_families()
    if family not in families:
        raise ValueError(f"unknown template family {family!r}; families: {', '.join(families)}")
    packaged, kinds, optional = families[family]
    if path is None:
        return load_packaged_template_file(packaged, kinds, optional), kinds, packaged
    return load_template_file(path, kinds, optional), kinds, str(path)


def rule_check(kind: str, rule: Rule) -> Callable[[str], None]:
    return rule if callable(rule) else uses_exactly(kind, rule)


# --- settings and validation ------------------------------------------------------------------------
class ExpandSettings(StrictModel):
    """What shapes the output (all of it enters the journal's identity)."""

    n: int = Field(8, ge=1, le=64, description="paraphrases asked for per seed")
    seed: int = 0
    temperature: float = Field(0.9, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_new_tokens: int = Field(64, ge=8)
    min_words: int = Field(2, ge=1)
    max_words: int = Field(40, ge=1)
    language: str = Field("en", description="'en' (a script heuristic) or 'any'")
    self_check: bool = True
    kinds: tuple[str, ...] | None = Field(None, description="expand only these kinds (default: all)")


_LABEL = re.compile(r"^\s*(?:[-*\d.)]+\s+|(?:paraphrase|rewritten instruction|instruction|answer|b)\s*:\s*)", re.IGNORECASE)


def clean(answer: str) -> str:
    """The first non-empty line of a model's answer, without quotes, a label or list numbering."""
    for line in answer.replace("\r", "\n").split("\n"):
        line = line.strip()
        if line:
            previous = None
            while previous != line:
                previous = line
                line = _LABEL.sub("", line).strip().strip('"\u201c\u201d\'`').strip()
            return line
    return ""


def normalise(text: str) -> str:
    """The text duplicates are compared by: lower case, placeholders kept, punctuation and spaces folded."""
    return " ".join(re.sub(r"[^\w{}]+", " ", text.lower()).split())


def placeholder_names(template: str) -> set[str]:
    try:
        return {name.lower() for name in template_placeholders(template)}
    except ValueError:
        return set(re.findall(r"\{([A-Za-z_]\w*)\}", template.lower()))


def looks_like(language: str, text: str) -> bool:
    """A script heuristic, not a language model: ``en`` = letters are Latin and most words plain ASCII."""
    if language == "any":
        return True
    words = [w for w in re.sub(r"\{[^}]*\}", " ", text).split() if any(c.isalpha() for c in w)]
    letters = [c for c in "".join(words) if c.isalpha()]
    if not letters:
        return False
    ascii_letters = sum(c.isascii() for c in letters) / len(letters)
    ascii_words = sum(bool(re.fullmatch(r"[\"'(]?[A-Za-z][A-Za-z'\-]*[.,;:!?)\"]*", w)) for w in words) / len(words)
    return ascii_letters >= 0.95 and ascii_words >= 0.6


def check_paraphrase(seed: str, text: str, check: Callable[[str], None], settings: ExpandSettings,
                     seen: set[str]) -> str | None:
    """Why ``text`` is not a usable paraphrase of ``seed`` (a reason name), or None; ``seen``: the
    normalised seeds and accepted paraphrases of the kind. The self-check is asked separately."""
    if not text.strip():
        return EMPTY
    if "\n" in text.strip():
        return NOT_ONE_LINE
    words = len(text.split())
    if words < settings.min_words:
        return TOO_SHORT
    if words > settings.max_words:
        return TOO_LONG
    wanted, found = placeholder_names(seed), placeholder_names(text)
    if wanted - found:
        return PLACEHOLDER_DROPPED
    if found - wanted:
        return PLACEHOLDER_ADDED
    try:
        check(text)
    except ValueError:
        return BAD_TEMPLATE
    if not looks_like(settings.language, text):
        return LANGUAGE
    if normalise(text) in seen:
        return DUPLICATE
    return None


def self_check(model: ChatModel, seed: str, paraphrases: Sequence[str], rng_seed: int) -> list[bool]:
    """The model's yes/no (held to those two words) on each paraphrase asking for the seed's edit."""
    if not paraphrases:
        return []
    conversations = [[{"role": "user", "content": SELF_CHECK_PROMPT.format(seed=seed, paraphrase=p)}]
                     for p in paraphrases]
    answers = model.chat(conversations, n=1, max_new_tokens=4, temperature=0.0, seed=rng_seed, pattern=YES_NO)
    return [answer[0].strip().lower().startswith("yes") for answer in answers]


# --- the run ---------------------------------------------------------------------------------------
@dataclass
class SeedResult:
    kind: str
    index: int
    seed: str
    accepted: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (text, reason)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "index": self.index, "seed": self.seed, "accepted": self.accepted,
                "rejected": [list(r) for r in self.rejected]}


def expand_seed(model: ChatModel, kind: str, index: int, seed: str, check: Callable[[str], None],
                settings: ExpandSettings, seen: set[str]) -> SeedResult:
    """One seed's ``n`` paraphrases, validated; accepted ones are added to ``seen``."""
    rng = int(stable_hash(settings.seed, kind, seed, length=8), 16)
    prompt = PARAPHRASE_PROMPT.replace("{seed}", seed)
    conversation = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}]
    answers = model.chat([conversation], n=settings.n, max_new_tokens=settings.max_new_tokens,
                         temperature=settings.temperature, top_p=settings.top_p, seed=rng)[0]
    result = SeedResult(kind, index, seed)
    passed: list[str] = []
    for answer in answers:
        text = clean(answer)
        reason = check_paraphrase(seed, text, check, settings, seen | {normalise(p) for p in passed})
        if reason is None:
            passed.append(text)
        else:
            result.rejected.append((text, reason))
    verdicts = self_check(model, seed, passed, rng) if settings.self_check else [True] * len(passed)
    for text, yes in zip(passed, verdicts, strict=True):
        if yes:
            result.accepted.append(text)
            seen.add(normalise(text))
        else:
            result.rejected.append((text, SELF_CHECK_NO))
    return result


@dataclass
class ExpandOutcome:
    path: Path
    lists: dict[str, list[str]]
    counts: dict[str, Any]
    resumed: int  # seeds taken from the journal
    expanded: int  # seeds run now


def journal_path(out: Path) -> Path:
    return out.with_name(out.name + ".journal.jsonl")


def _read_journal(path: Path, identity: dict[str, Any]) -> list[dict[str, Any]]:
    """The finished seeds of a journal written with ``identity`` (a torn last line is ignored)."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    entries = []
    for number, line in enumerate(lines):
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines) - 1:
                break  # killed mid-write
            raise ValueError(f"{path}: line {number + 1} is not JSON; delete the journal or pass --restart") from None
    if not entries:
        return []
    if entries[0].get("identity") != identity:
        raise ValueError(f"{path}: written with other settings, seeds or model ({entries[0].get('identity')}); "
                         "pass --restart to discard it")
    return entries[1:]


def _append(path: Path, entry: Mapping[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(canonical_json(entry) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def expand(model: ChatModel, seeds: Mapping[str, Sequence[str]], rules: Mapping[str, Rule], out: str | Path,
           settings: ExpandSettings, seeds_source: str = "", restart: bool = False,
           progress: Callable[[SeedResult], None] | None = None) -> ExpandOutcome:
    """Expand every seed of ``seeds`` ({kind: templates}) and write the paraphrase file ``out``."""
    out = Path(out)
    kinds = [kind for kind in seeds if settings.kinds is None or kind in settings.kinds]
    unknown = sorted(set(settings.kinds or ()) - set(seeds))
    if unknown:
        raise ValueError(f"kinds {unknown} are not in the seed file (it has {', '.join(seeds)})")
    described = model.describe()
    identity = {"version": PROMPT_VERSION, "model": described, "settings": settings.model_dump(mode="json"),
                "seeds": {kind: list(seeds[kind]) for kind in kinds}}
    journal = journal_path(out)
    if restart and journal.exists():
        journal.unlink()
    done = {(e["kind"], e["index"]): e for e in _read_journal(journal, identity) if "kind" in e}
    started = None
    if not journal.exists() or journal.stat().st_size == 0:
        started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        out.parent.mkdir(parents=True, exist_ok=True)
        journal.write_text("")
        _append(journal, {"identity": identity, "started": started})
    else:
        first = json.loads(journal.read_text(encoding="utf-8").splitlines()[0])
        started = first.get("started")
    lists: dict[str, list[str]] = {}
    counts: dict[str, Any] = {}
    resumed = expanded = 0
    for kind in kinds:
        check = rule_check(kind, rules[kind])
        seen = {normalise(s) for s in seeds[kind]}
        accepted: list[str] = []
        rejected: dict[str, int] = {}
        for index, seed in enumerate(seeds[kind]):
            if (kind, index) in done:
                entry = done[(kind, index)]
                result = SeedResult(kind, index, seed, list(entry["accepted"]), [tuple(r) for r in entry["rejected"]])
                seen.update(normalise(text) for text in result.accepted)
                resumed += 1
            else:
                result = expand_seed(model, kind, index, seed, check, settings, seen)
                _append(journal, result.to_json())
                expanded += 1
            if progress is not None:
                progress(result)
            accepted += result.accepted
            for _, reason in result.rejected:
                rejected[reason] = rejected.get(reason, 0) + 1
        lists[kind] = list(seeds[kind]) + accepted
        counts[kind] = {"seeds": len(seeds[kind]), "asked": len(seeds[kind]) * settings.n,
                        "accepted": len(accepted), "rejected": dict(sorted(rejected.items()))}
    for kind in seeds:  # kinds not expanded are copied as they are, so the file stays complete
        lists.setdefault(kind, list(seeds[kind]))
    provenance = {
        "tool": "ieiw instructions expand", "prompt_version": PROMPT_VERSION, **described,
        "system_prompt": SYSTEM_PROMPT, "prompt": PARAPHRASE_PROMPT, "self_check_prompt": SELF_CHECK_PROMPT,
        "seed": settings.seed, "settings": settings.model_dump(mode="json", exclude={"seed"}),
        "seeds_file": seeds_source, "date": started, "counts": counts,
    }
    write_paraphrase_file(out, lists, provenance)
    return ExpandOutcome(out, lists, counts, resumed, expanded)


def write_paraphrase_file(path: Path, lists: Mapping[str, Sequence[str]], provenance: Mapping[str, Any]) -> None:
    """The template file: a header comment, ``provenance:``, then each kind's list (seeds first); atomic."""
    header = ("# Written by `ieiw instructions expand` (docs/language-models.md): the seed templates first, then\n"
              "# the model's validated paraphrases. A row's template is picked by its row id, so using this file\n"
              "# changes instructions, never row ids.\n")
    body = yaml.safe_dump({PROVENANCE: dict(provenance), **{k: list(v) for k, v in lists.items()}},
                          sort_keys=False, allow_unicode=True, width=1000)
    atomic_write_bytes(path, (header + body).encode("utf-8"))
