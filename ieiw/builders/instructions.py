"""Instruction templates, written in the paper's detailed, natural style (docs/paper.md, "Instructions").

The template is chosen from the row id, so a row's instruction never changes between runs and the
choice is spread evenly over the templates (instructions are not part of row ids). The trainer can
still draw a fresh template per sample.

Templates do not paste the phrase after a fixed "the": a placeholder asks for the form the sentence
needs, and the phrase is analysed once (its determiner, its head noun and whether that is plural, via
``inflect``) so that "two dogs", "his hat", "a dog", "man's shirt", "trees on the hill" and "grass" all
come out grammatical: "Remove the two dogs", "Remove his hat", "Remove the dog", "Remove the man's
shirt", "so that the trees on the hill are no longer there", "Add some grass".

## Paraphrase files

The instruction templates ship in `ieiw/builders/templates/default.yaml`. A file of your own in the same
form replaces them (`ieiw.builders.instructions.load_templates(path)`). It is YAML with the keys
`remove:` and `add:` and, optionally, `replace:`, each a non-empty list of one-line templates (a file
without `replace:` still loads; it just has no replace templates, and asking it for one is an error):

```yaml
# my_templates.yaml
remove:
  - "Remove {the_phrase}."
  - "Edit the photo so that {the_phrase} {is} no longer there."
  - "{The_phrase} should not be in this picture; take {them} out."
add:
  - "Add {a_phrase}."
  - "Put {a_phrase} into the scene so that {they} fit{s} in naturally."
replace:
  - "Change {the_source} to {a_target}."
  - "Edit the image so that {a_target} {target_is} where {the_source} {was}."
```

A row's template is picked by its row id (the id's first 8 hex digits modulo the number of templates),
so the same file always gives the same instruction to the same row; instructions are not part of row ids.

Placeholders (anything else in braces is an error):

| placeholder | singular phrase | plural phrase |
|---|---|---|
| `{phrase}` | the phrase as written: "dog on the left" | "trees on the hill" |
| `{the_phrase}` | definite: "the dog", "his hat", "this car", "the man's shirt" | "the two dogs", "some people", "the trees on the hill" |
| `{a_phrase}` | indefinite: "a dog", "an apple", "some grass" (mass nouns), "his hat" | "two dogs", "some trees on the hill" |
| `{is}` = `{are}` | is | are |
| `{was}` = `{were}` | was | were |
| `{has}` = `{have}` | has | have |
| `{does}` = `{do}` | does | do |
| `{it}` = `{them}` (object) | it | them |
| `{they}` (subject) | it | they |
| `{its}` = `{their}` | its | their |
| `{this}` = `{these}` | this | these |
| `{s}` (verb ending: "fit{s}") | s | (nothing) |
| `{es}` (verb ending: "match{es}") | es | (nothing) |

- The two names of a pair are one placeholder: write whichever reads naturally.
- A capital first letter capitalises the value, for the start of a sentence: `{The_phrase}`, `{They}`, `{It}`.
- A phrase that has its own determiner keeps it: "his hat", "this car", "some people", "each chair",
  "two of the dogs". "a dog" becomes "the dog" in `{the_phrase}`, and "the dog" becomes "a dog" in `{a_phrase}`.
  Numbers take "the" ("the two dogs"); possessive nouns take an article ("the man's shirt").
- Agreement follows the head noun: the noun before a preposition, relative clause or participle ("dog on the
  left" -> dog, "people walking" -> people); nouns joined by "and" are plural ("cup and saucer"). Write
  "restore what was behind {them}", not "what {is} behind {them}" ("what" is that verb's subject).
- Every template names the object with `{phrase}`, `{the_phrase}` or `{a_phrase}`. Format specs
  (`{phrase:>10}`), attribute access and positional `{}` are refused; a literal brace is `{{` or `}}`;
  the same template twice in a list is refused.
- A mistake fails with `TemplateError`, one line naming the file and the template, e.g.
  `my_templates.yaml: remove[1] 'Zap {thing}.': unknown placeholder {thing}; allowed: ...`.

### Replace templates ("change the A to B")

A replace template names two objects, the region's label (the source) and the exemplar's (the
target). They take the same forms as a phrase, under their own names, and the agreement words follow
the source unless prefixed with `target_`:

| placeholder | source "dog" -> target "grapes" |
|---|---|
| `{source}`, `{the_source}`, `{a_source}` | "dog", "the dog", "a dog" |
| `{target}`, `{the_target}`, `{a_target}` | "grapes", "the grapes", "some grapes" |
| `{is}`, `{was}`, `{it}`, `{they}`, `{s}`, ... (the table above) | of the source: "is", "was", "it", "it", "s" |
| `{target_is}`, `{target_was}`, `{target_it}`, `{target_they}`, `{target_s}`, ... | of the target: "are", "were", "them", "they", "" |

Capitals work as above (`{The_source}`, `{A_target}`, `{Target_they}`). Every replace template names
both objects (`{source}`, `{the_source}` or `{a_source}`, and `{target}`, `{the_target}` or
`{a_target}`) and may not use `{phrase}` forms; remove and add templates may not use these.

Labels are class names (Open Images' "Human face", "Jaguar (Animal)"; the vocabulary's "dog"), so
:func:`replace_instruction` first makes each a phrase with :func:`label_phrase` ("human face",
"jaguar"); a label that already has a determiner ("a dog", "his hat", "some people") keeps working as
for phrases. The template is picked by the row id as for the other tasks:
`replace_instruction("dog", "cat", row_id)` or `instruction_for("replace", "dog", row_id, target="cat")`.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, PrivateAttr, field_validator

from ieiw.builders.template_files import check_templates, load_packaged_template_file, load_template_file
from ieiw.phrases import check_template, label_phrase, render, render_replace

TASKS = ("remove", "add", "replace")
DEFAULT_TEMPLATES_FILE = "templates/default.yaml"  # inside the ieiw.builders package
OPTIONAL_TASKS = ("replace",)  # a file without replace: loads; asking it for a replace template is an error
# each task's templates follow the phrase grammar of ieiw.phrases.check_template
RULES = {task: functools.partial(check_template, task=task) for task in TASKS}

# --- templates -----------------------------------------------------------------------------------


class Templates(BaseModel):
    """Instruction templates per task; build with :func:`load_templates` or ``Templates(remove=[...],
    add=[...], replace=[...])`` (``replace`` is optional)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    remove: tuple[str, ...]
    add: tuple[str, ...]
    replace: tuple[str, ...] | None = None
    _source: str = PrivateAttr("code")

    @field_validator("remove", "add", "replace")
    @classmethod
    def _valid(cls, templates: tuple[str, ...] | None, info) -> tuple[str, ...] | None:
        if templates is None and info.field_name in OPTIONAL_TASKS:
            return None
        return check_templates(templates, RULES[info.field_name])

    @property
    def source(self) -> str:
        """Where the templates came from: a file path, or ``"code"``."""
        return self._source

    @property
    def digest(self) -> str:
        """Identity of the template set (changes whenever a template does), e.g. for a build fingerprint.
        Absent tasks are left out, so a set without replace templates has the digest of its remove and
        add lists alone."""
        return self.digest_for(TASKS)

    def digest_for(self, tasks: Sequence[str]) -> str:
        """Identity of the templates of ``tasks`` only (absent ones are left out), so a builder that
        makes remove/add rows can fingerprint just those and ignore edits to the replace list."""
        chosen = {task: list(getattr(self, task)) for task in tasks if getattr(self, task, None) is not None}
        canonical = json.dumps(chosen, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def record(self, tasks: Sequence[str]) -> dict[str, str]:
        """What a row records of the templates its instruction came from (in ``builder.params``): the file
        (``"code"`` or the shipped file's name for the defaults) and the digest of ``tasks``' lists."""
        return {"file": self.source, "digest": self.digest_for(tasks)}

    def for_task(self, task: str) -> tuple[str, ...]:
        if task not in TASKS:
            raise ValueError(f"no templates for task {task!r}; tasks are {', '.join(TASKS)}")
        templates = getattr(self, task)
        if templates is None:
            raise ValueError(f"no {task} templates in {self.source}: add a {task}: list "
                             "(ieiw/builders/templates/default.yaml has one to copy)")
        return templates

    def pick(self, task: str, row_id: str) -> str:
        """The template of ``task`` for ``row_id``: its first 8 hex digits modulo the number of templates."""
        templates = self.for_task(task)
        try:
            key = int(row_id[:8], 16)
        except ValueError:
            key = int(hashlib.sha256(row_id.encode()).hexdigest()[:8], 16)
        return templates[key % len(templates)]


def _templates(lists: Mapping[str, tuple[str, ...]], source: str) -> Templates:
    templates = Templates(**lists)
    templates._source = source
    return templates


def load_templates(path: str | Path) -> Templates:
    """Read and check a paraphrase file (module docstring); :class:`TemplateError` names what is wrong."""
    return _templates(load_template_file(path, RULES, OPTIONAL_TASKS), str(Path(path)))


@functools.lru_cache(maxsize=1)
def default_templates() -> Templates:
    """The templates shipped with ieiw (``ieiw/builders/templates/default.yaml``)."""
    return _templates(load_packaged_template_file(DEFAULT_TEMPLATES_FILE, RULES, OPTIONAL_TASKS),
                      DEFAULT_TEMPLATES_FILE)


REMOVE_TEMPLATES = default_templates().remove
ADD_TEMPLATES = default_templates().add
REPLACE_TEMPLATES: tuple[str, ...] = default_templates().replace or ()


def instruction_for(
    task: str, phrase: str, row_id: str, templates: Templates | None = None, head: str | None = None,
    target: str | None = None,
) -> str:
    """The instruction of ``task`` for ``phrase``, its template picked deterministically by the (hex)
    row id from ``templates`` (default: the shipped set). ``head`` is the optional head-noun hint
    (VGPhraseCut's ``phrase_structure.name``). For ``replace``, ``phrase`` is the source label and
    ``target`` the target label (:func:`replace_instruction`). Raises ``ValueError`` for an empty phrase."""
    if task == "replace":
        if target is None:
            raise ValueError("a replace instruction needs target= (the exemplar's label)")
        return replace_instruction(phrase, target, row_id, templates)
    if target is not None:
        raise ValueError(f"target= is for replace instructions, not {task!r}")
    return render((templates or default_templates()).pick(task, row_id), phrase, head)


def replace_instruction(source_label: str, target_label: str, row_id: str, templates: Templates | None = None) -> str:
    """"Change the A to B": the replace template for ``row_id`` (its first 8 hex digits modulo the number
    of templates) filled in with both labels, each made a phrase by :func:`label_phrase` first."""
    template = (templates or default_templates()).pick("replace", row_id)
    return render_replace(template, label_phrase(source_label), label_phrase(target_label))
