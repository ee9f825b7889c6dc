"""Instruction-template files: how every builder with templates reads and checks them.

A template file is YAML: a mapping of kinds (``remove:``/``add:``/``replace:``; ``segment:``/``nothing:``;
``keypoints:``; ``deblur:``, ...) to non-empty lists of distinct one-line templates. Each builder says
which kinds a file has, which of them it may leave out, and each kind's rule: either its placeholders
(every template of the kind uses each of them and no other, plain ``{name}`` without a format spec), or a
function that raises ``ValueError`` saying what is wrong with a template (the phrase grammar of
:func:`ieiw.phrases.check_template`). The shipped files (``ieiw/builders/templates/``) go through the
same checks.

A file may also hold a ``provenance:`` mapping (who wrote the templates: ``ieiw instructions expand`` records
its model, revision, prompt, seed and date there); it is metadata, never a kind, and no digest covers it.

A mistake is a :class:`~ieiw.phrases.TemplateError` with one line naming the file and, where one is at
fault, the template: ``bad.yaml: segment[0] 'Mark {thing} in {color}.': unknown placeholder {thing};
allowed: {color}, {object}``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypeAlias

import yaml

from ieiw.phrases import TemplateError, template_placeholders

# a kind's rule: its placeholders, or a check that raises ValueError saying what is wrong with a template
Rule: TypeAlias = Collection[str] | Callable[[str], None]
PROVENANCE = "provenance"  # the one key of a template file that is not a kind (module docstring)


def _braces(names: Collection[str]) -> str:
    return ", ".join("{" + name + "}" for name in sorted(names))


def uses_exactly(kind: str, placeholders: Collection[str]) -> Callable[[str], None]:
    """The rule of a kind whose templates use each of ``placeholders`` and nothing else."""
    allowed = frozenset(placeholders)

    def check(template: str) -> None:
        used = set()
        for name in template_placeholders(template):
            if name not in allowed:
                if not allowed:
                    raise ValueError(f"{kind} templates take no placeholder")
                raise ValueError(f"unknown placeholder {{{name}}}; allowed: {_braces(allowed)}")
            used.add(name)
        if used != allowed:
            raise ValueError(f"a {kind} template uses {_braces(allowed)}")

    return check


def check_templates(templates: Any, rule: Callable[[str], None]) -> tuple[str, ...]:
    """One kind's templates, checked: a non-empty list of distinct strings, each passing ``rule``.

    Raises ``ValueError`` with what is wrong with the list (``empty list; ...``) or with one template
    (``[1] 'Zap {thing}.': unknown placeholder {thing}; ...``), for the caller to prefix with the kind."""
    if not isinstance(templates, (list, tuple)):
        raise ValueError(f"must be a list of templates, found {type(templates).__name__}")
    if not templates:
        raise ValueError("empty list; give at least one template")
    seen: set[str] = set()
    for index, template in enumerate(templates):
        if not isinstance(template, str):
            raise ValueError(f"[{index}]: Input should be a valid string, found {type(template).__name__}")
        try:
            rule(template)
        except ValueError as exc:
            raise ValueError(f"[{index}] {template!r}: {exc}") from None
        if template in seen:
            raise ValueError(f"[{index}] {template!r}: listed twice")
        seen.add(template)
    return tuple(templates)


def _lists(keys: Sequence[str]) -> str:
    """``a keypoints: list``, ``remove: and add: lists``, ``remove:, add: and replace: lists``."""
    if len(keys) == 1:
        return f"a {keys[0]} list"
    return f"{', '.join(keys[:-1])} and {keys[-1]} lists"


def parse_template_file(data: Any, source: str, kinds: Mapping[str, Rule],
                        optional: Collection[str] = ()) -> dict[str, tuple[str, ...]]:
    """The checked lists of a loaded template file (``source`` names it in errors): kind -> templates, for
    every kind the file has. ``kinds``: each kind's :data:`Rule`, in the order they are checked;
    ``optional``: the kinds a file may leave out (or leave null)."""
    required = [f"{kind}:" for kind in kinds if kind not in optional]
    maybe = [kind for kind in kinds if kind in optional]
    also = f" (and optionally {', '.join(f'{k}:' for k in maybe)})" if maybe else ""
    if not isinstance(data, dict):
        raise TemplateError(f"{source}: expected a mapping with {_lists(required)}{also}, found {type(data).__name__}")
    if data.get(PROVENANCE) is not None and not isinstance(data[PROVENANCE], dict):
        raise TemplateError(f"{source}: {PROVENANCE}: expected a mapping, found {type(data[PROVENANCE]).__name__}")
    unknown = sorted(str(key) for key in data if key not in kinds and key != PROVENANCE)
    if unknown:
        more = f" (and {len(unknown) - 1} more unknown key(s))" if len(unknown) > 1 else ""
        known = _lists(required + [f"(optionally) {k}:" for k in maybe])
        raise TemplateError(f"{source}: {unknown[0]}: unknown key; a template file has only {known}{more}")
    lists = {}
    for kind, rule in kinds.items():
        if data.get(kind) is None and kind in optional:
            continue
        if kind not in data:
            raise TemplateError(f"{source}: {kind}: missing; a template file has {_lists(required)}{also}")
        check = rule if callable(rule) else uses_exactly(kind, rule)
        try:
            lists[kind] = check_templates(data[kind], check)
        except ValueError as exc:
            problem = str(exc)
            raise TemplateError(f"{source}: {kind}{problem if problem.startswith('[') else ': ' + problem}") from None
    return lists


def _yaml(text: str, source: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise TemplateError(f"{source}: not valid YAML{where}: {problem}") from None


def load_template_file(path: str | Path, kinds: Mapping[str, Rule],
                       optional: Collection[str] = ()) -> dict[str, tuple[str, ...]]:
    """Read and check the template file ``path`` (:func:`parse_template_file`); :class:`TemplateError`
    names the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TemplateError(f"{path}: template file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    return parse_template_file(_yaml(text, str(path)), str(path), kinds, optional)


def template_file_provenance(path: str | Path) -> dict[str, Any]:
    """The ``provenance:`` mapping of a template file ({} when it has none or cannot be read)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    found = data.get(PROVENANCE) if isinstance(data, dict) else None
    return dict(found) if isinstance(found, dict) else {}


def load_packaged_template_file(name: str, kinds: Mapping[str, Rule],
                                optional: Collection[str] = ()) -> dict[str, tuple[str, ...]]:
    """A template file shipped in the ``ieiw.builders`` package (``name`` relative to it, e.g.
    ``templates/default.yaml``), checked as any other and named ``name`` in errors."""
    text = resources.files("ieiw.builders").joinpath(name).read_text(encoding="utf-8")
    return parse_template_file(_yaml(text, name), name, kinds, optional)


def template_file_problems(where: str, path: str | Path | None, load: Callable[[Path], Any]) -> list[str]:
    """A config's preflight line for its own template file: none when ``path`` is unset or ``load(path)``
    succeeds, else ``"{where}: {what is wrong}"`` (``where`` names the config key, e.g. ``keypoints.templates``)."""
    if path is None:
        return []
    try:
        load(Path(path))
    except ValueError as exc:  # a TemplateError, or a file that lacks a list the builder needs
        return [f"{where}: {exc}"]
    return []
