"""Rewrite the generated parts of the reference in docs/ from the code, so they cannot drift from it.

    .venv/bin/python scripts/gen_reference.py           # rewrite every generated block
    .venv/bin/python scripts/gen_reference.py --check   # exit 1 naming each stale block (tests/test_docs.py)

A generated block sits between two markers and is replaced whole; everything around it is written by hand:

    <!-- generated: commands (scripts/gen_reference.py; edit the code, not this block) -->
    ...
    <!-- end generated: commands -->

Blocks and where they come from:

- ``commands`` (docs/commands.md): every ``ieiw`` subcommand and its options, from the argparse parsers
  (``ieiw.cli.command_parsers``, the delegated training commands' own parsers included);
- ``config`` (docs/config.md): every build config key, from the pydantic models: ``BuildConfig``, every
  builder section (``REGISTRY.builder_names()``) and every always-present section
  (``REGISTRY.default_sections()``), nested models expanded, with type, default and description;
- ``backends`` (docs/config.md): every registered backend of every kind, with its own keys;
- ``schema`` (docs/schema.md): the pair row and the rejected row, from ``ieiw.schemas.rows``; the meaning of
  each column is written here, in ``MEANINGS``, and a column without one stops the script.

Only ieiw's own builders, sections and backends are listed, never a plugin's; run it as a script (a fresh
process), so no plugin a test imported has registered tasks of its own.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BLOCK = re.compile(
    r"(?P<start><!-- generated: (?P<name>[\w-]+) [^\n]*-->\n)(?P<body>.*?)(?P<end><!-- end generated: (?P=name) -->)",
    re.DOTALL,
)
START_NOTE = "(scripts/gen_reference.py; edit the code, not this block)"


def cell(text: Any) -> str:
    """Text safe inside a markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def code(text: Any) -> str:
    text = str(text)
    return f"``{text}``" if "`" in text else f"`{text}`"


# -- commands ------------------------------------------------------------------------------------------
def _metavar(action: argparse.Action) -> str:
    if action.metavar is not None:
        return str(action.metavar)
    if action.choices is not None:
        return "{" + ",".join(map(str, action.choices)) + "}"
    return action.dest.upper()


def _takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0


def _invocation(action: argparse.Action) -> str:
    if not action.option_strings:
        value = _metavar(action)
        return {"?": f"[{value}]", "*": f"[{value} ...]", "+": f"{value} [{value} ...]"}.get(action.nargs, value)
    option = max(action.option_strings, key=len)  # the long form
    return f"{option} {_metavar(action)}" if _takes_value(action) else option


def _usage(prog: str, parser: argparse.ArgumentParser) -> str:
    groups = {id(a): g for g in parser._mutually_exclusive_groups for a in g._group_actions}
    parts, done = [prog], set()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or id(action) in done:
            continue
        group = groups.get(id(action))
        if group is not None:
            members = [a for a in group._group_actions]
            done.update(id(a) for a in members)
            inner = " | ".join(_invocation(a) for a in members)
            parts.append(f"({inner})" if group.required else f"[{inner}]")
            continue
        text = _invocation(action)
        if isinstance(action, argparse._AppendAction):
            text += " ..."
        parts.append(text if (action.required or not action.option_strings) else f"[{text}]")
    return " ".join(parts)


def _default(action: argparse.Action) -> str:
    default = action.default
    if (default is None or default is False or default == [] or default == argparse.SUPPRESS
            or isinstance(action, argparse._StoreTrueAction)):
        return ""
    if isinstance(default, list | tuple):
        return code(",".join(map(str, default)))
    return code(default)


def commands_block() -> str:
    from ieiw.cli import command_parsers

    out = []
    for name, (summary, parser) in command_parsers().items():
        out += [f"### `ieiw {name}`", "", cell(parser.description or summary), ""]
        out += ["```", _usage(f"ieiw {name}", parser), "```", ""]
        rows = [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]
        if rows:
            out += ["| argument | default | meaning |", "|---|---|---|"]
            for action in rows:
                notes = [action.help or ""]
                if isinstance(action, argparse._AppendAction) and "repeatable" not in (action.help or ""):
                    notes.append("(repeatable)")
                if action.required and action.option_strings:
                    notes.append("(required)")
                out.append(f"| {code(_invocation(action))} | {_default(action)} | {cell(' '.join(n for n in notes if n))} |")
            out.append("")
    return "\n".join(out)


# -- config --------------------------------------------------------------------------------------------
def _own(config: type) -> bool:
    return config.__module__.split(".")[0] == "ieiw"


def _strip(annotation: Any) -> tuple[Any, str | None]:
    """(the annotation without Annotated, the backend kind if it is a backend field)."""
    from ieiw.schemas.config import _validate_backend

    while typing.get_origin(annotation) is typing.Annotated:
        for meta in annotation.__metadata__:
            func = getattr(meta, "func", None)
            if isinstance(func, functools.partial) and func.func is _validate_backend:
                return annotation, func.args[0]
        annotation = typing.get_args(annotation)[0]
    return annotation, None


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _is_model(annotation: Any) -> bool:
    from pydantic import BaseModel

    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _backend_kind(field: Any) -> str | None:
    """The kind of a field typed backend_field(kind), Optional of it, or a list of them."""
    from ieiw.schemas.config import _validate_backend

    for meta in field.metadata:  # pydantic moves a bare Annotated's validators here
        func = getattr(meta, "func", None)
        if isinstance(func, functools.partial) and func.func is _validate_backend:
            return func.args[0]
    stripped, kind = _strip(field.annotation)
    if kind:
        return kind
    if _is_union(stripped) or typing.get_origin(stripped) in (list, tuple):
        for arg in typing.get_args(stripped):
            if arg is not Ellipsis and _strip(arg)[1]:
                return _strip(arg)[1]
    return None


def type_text(annotation: Any) -> str:
    from ieiw.schemas.config import BackendConfig

    annotation, kind = _strip(annotation)
    if kind:
        return f"`{kind}` backend"
    if annotation is type(None):
        return "null"
    if _is_union(annotation):
        args = typing.get_args(annotation)
        parts = [type_text(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " / ".join(code(v) for v in typing.get_args(annotation))
    if origin in (list, tuple):
        args = typing.get_args(annotation)
        if origin is tuple and args and args[-1] is not Ellipsis:
            return "[" + ", ".join(type_text(a) for a in args) + "]"
        return f"list of {_inner(args[0])}" if args else "list"
    if origin is dict:
        key, value = typing.get_args(annotation)
        return f"map of {_inner(key)} to {_inner(value)}"
    if _is_model(annotation):
        if issubclass(annotation, BackendConfig):
            return "backend"
        fields = ", ".join(f"{n}: {type_text(f.annotation)}" for n, f in annotation.model_fields.items())
        return "{" + fields + "}"
    names = {str: "string", int: "int", float: "number", bool: "bool", Path: "path"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _inner(annotation: Any) -> str:
    text = type_text(annotation)
    return f"({text})" if " or " in text else text


def value_text(value: Any) -> str:
    import yaml
    from pydantic import BaseModel
    from pydantic_core import PydanticUndefined

    if value is PydanticUndefined:
        return "(required)"

    def plain(v: Any) -> Any:
        if isinstance(v, BaseModel):
            return plain(v.model_dump(mode="json"))
        if isinstance(v, Path):
            return v.as_posix()
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        return v

    text = yaml.safe_dump(plain(value), default_flow_style=True, width=10**6, sort_keys=False).strip()
    text = text.removesuffix("...").strip()
    return code(text)


def _field_default(field: Any, parent_default: Any, name: str) -> Any:
    from pydantic_core import PydanticUndefined

    if parent_default is not None and parent_default is not PydanticUndefined:
        return getattr(parent_default, name)
    if field.default_factory is not None:
        return field.default_factory()
    return field.default


def _models_in(annotation: Any) -> tuple[str, list[type]]:
    """('', [M]) for a model, ('[]', [M...]) for a list of models (or of a union of them), else ('', [])."""
    from ieiw.schemas.config import BackendConfig

    annotation, kind = _strip(annotation)
    if kind:
        return "", []
    if _is_union(annotation):
        found = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(found) == 1:
            return _models_in(found[0])
        return "", []
    if typing.get_origin(annotation) in (list, tuple):
        args = typing.get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis or len(args) == 1:
            inner, _ = _strip(args[0])
            members = typing.get_args(inner) if _is_union(inner) else (inner,)
            members = [_strip(m)[0] for m in members]
            if members and all(_is_model(m) and not issubclass(m, BackendConfig) for m in members):
                return "[]", members
        return "", []
    if _is_model(annotation) and not issubclass(annotation, BackendConfig):
        return "", [annotation]
    return "", []


def _discriminator(model: type) -> str:
    for name, field in model.model_fields.items():
        args = typing.get_args(field.annotation)
        if typing.get_origin(field.annotation) is typing.Literal and len(args) == 1:
            return f"{name}={args[0]}"
    return model.__name__


def config_rows(model: type, prefix: str, default: Any, used_by: dict[str, list[str]]) -> list[str]:
    from pydantic_core import PydanticUndefined

    from ieiw.schemas.config import BackendConfig

    rows = []
    for name, field in model.model_fields.items():
        key = prefix + name
        value = _field_default(field, default, name)
        kind = _backend_kind(field)
        description = cell(field.description or "")
        if kind:
            used_by.setdefault(kind, []).append(key)
            shown = code(f"{{backend: {value.backend}}}") if isinstance(value, BackendConfig) else value_text(value)
            text = f"see [`{kind}` backends](#{kind}-backends)"
            rows.append(f"| {code(key)} | {type_text(field.annotation)} | {shown} | "
                        f"{description + '; ' if description else ''}{text} |")
            continue
        suffix, members = _models_in(field.annotation)
        if members and len(members) == 1 and not suffix:
            shown = "(required)" if value is PydanticUndefined else ("null" if value is None else "")
            rows.append(f"| {code(key)} | mapping | {shown} | {description} |")
            inner_default = value if value not in (None, PydanticUndefined) else None
            rows += config_rows(members[0], key + ".", inner_default, used_by)
            continue
        if members:
            rows.append(f"| {code(key)} | list of mappings | {value_text(value)} | {description} |")
            for member in members:
                label = f"{key}[]" if len(members) == 1 else f"{key}[{_discriminator(member)}]"
                rows += config_rows(member, label + ".", None, used_by)
            continue
        rows.append(f"| {code(key)} | {cell(type_text(field.annotation))} | {cell(value_text(value))} | {description} |")
    return rows


HEADER = ["| key | type | default | meaning |", "|---|---|---|---|"]


def top_level_keys() -> dict[str, type]:
    """Every top-level build config key ieiw itself defines: name -> the model of its value (None: plain)."""
    from ieiw.schemas.config import BuildConfig
    from ieiw.schemas.registry import REGISTRY

    keys: dict[str, Any] = dict.fromkeys(BuildConfig.model_fields)
    for name in REGISTRY.builder_names():
        spec = REGISTRY.builder(name)
        if spec is not None and _own(spec.config):
            keys[name] = spec.config
    for name, spec in REGISTRY.default_sections().items():
        if _own(spec.config):
            keys[name] = spec.config
    return keys


def config_block(used_by: dict[str, list[str]]) -> str:
    from ieiw.schemas.config import BuildConfig
    from ieiw.schemas.registry import REGISTRY

    out = ["### Keys every build has", "", *HEADER, *config_rows(BuildConfig, "", None, used_by), ""]
    sections = top_level_keys()
    builders = set(REGISTRY.builder_names())
    for name, model in sections.items():
        if model is None:
            continue
        what = "builder section" if name in builders else "always present, with these defaults"
        doc = (model.__doc__ or "").strip().split("\n\n")[0]
        out += [f"### `{name}:` ({what})", ""]
        if doc and not doc.startswith(("Base of", "A base")):
            out += [cell(doc), ""]
        out += [f"Model: `{model.__module__}.{model.__name__}`.", "", *HEADER]
        out += config_rows(model, name + ".", None, used_by)
        out.append("")
    return "\n".join(out)


def backends_block(used_by: dict[str, list[str]]) -> str:
    from ieiw.schemas.registry import REGISTRY

    names: dict[str, set[str]] = {"scorer": set(REGISTRY.entry_points("scorer"))}
    for entry in REGISTRY.entry_points("backend"):
        kind, _, name = entry.partition(".")
        names.setdefault(kind, set()).add(name)
    out = []
    for kind in sorted(names):
        specs = {n: s for n in sorted(names[kind]) if _own((s := REGISTRY.backend(kind, n)).config)}
        if not specs:
            continue
        where = ", ".join(code(k) for k in dict.fromkeys(used_by.get(kind, []))) or "(no build config key)"
        out += [f"### `{kind}` backends", "", f"Chosen by {where}: `{{backend: NAME, ...}}`; names: "
                + ", ".join(code(n) for n in specs) + ".", ""]
        for name, spec in specs.items():
            config = spec.config
            stand_in = " A CPU stand-in (embedded): rows it makes or scores say so." if config.embedded is True else ""
            out += [f"#### `{kind}: {name}`", "", f"`{config.__module__}.{config.__name__}`.{stand_in}", ""]
            rows = config_rows(config, "", None, used_by={})
            rows = [r for r in rows if not r.startswith("| `backend` ")]
            out += ([*HEADER, *rows] if rows else ["No keys of its own."]) + [""]
    return "\n".join(out)


# -- row schema ----------------------------------------------------------------------------------------
MEANINGS = {
    "id": "deterministic: hash of source dataset + record id + builder + the parameters that shape the pixels"
          " + task",
    "task": "a registered task (the table below); plugins may register more",
    "instruction": "the edit instruction",
    "source_image": "encoded image, kept byte for byte from the dataset unless it had to be re-oriented or"
                    " converted; `path` carries the extension",
    "target_image": "the edited image, encoded like `source_image`",
    "mask": "PNG of the edited region (after dilation)",
    "width": "image width in px",
    "height": "image height in px",
    "origin": "where the pair came from",
    "origin.dataset": "`phrasecut`, `sa1b`, `openimages`, `reddit`, ...",
    "origin.split": "the source dataset's own split (not the `split` column)",
    "origin.record_id": "the source's own id (PhraseCut task_id, post id, ...)",
    "origin.image_id": "the source image's id",
    "origin.phrase": "referring phrase or class label of the edited region",
    "origin.url": "the source image's or thread's URL",
    "origin.license": "the source's licence",
    "origin.authors": "poster first, then the editor, where known",
    "origin.edit_url": "crawled pairs: the editor's image",
    "origin.created_utc": "crawled pairs: when the post was made (Unix time)",
    "exemplar": "replacement only: the object painted in",
    "exemplar.dataset": "the exemplar's dataset",
    "exemplar.record_id": "the exemplar region's record id",
    "exemplar.label": "its label (the B of \"change the A to B\")",
    "exemplar.similarity": "similarity of the exemplar to the replaced region in the index's feature space",
    "exemplar.label_source": "where the exemplar's label came from: the dataset's class (`open-images`), CLIP"
                             " zero-shot (`clip-zero-shot`) or the nearest labelled exemplar (`embedded-nearest`)",
    "exemplar.source_label_source": "the same for the replaced region's label (the A)",
    "scores": "filled by the score stage; null in `candidates/`",
    "scores.backend": "every scorer that filled the numbers, joined, e.g. `proxy-v1` or `laion-v2+knn-giqa`",
    "scores.embedded": "true when a CPU stand-in, not the paper's model, produced them",
    "scores.source_aesthetic": "aesthetic score of the source (LAION head, or the embedded proxy)",
    "scores.target_aesthetic": "aesthetic score of the target",
    "scores.source_giqa": "KNN-GIQA of the source",
    "scores.target_giqa": "KNN-GIQA of the target",
    "scores.edit_consistency": "how well the target derives from the source (crawl: alignment)",
    "scores.verification": "removal: how surely the object is gone (higher = gone)",
    "scores.aesthetic_backend": "the backend of the aesthetic scores",
    "scores.giqa_backend": "the backend of the GIQA scores",
    "scores.consistency_backend": "the backend of `edit_consistency`",
    "scores.verification_backend": "the backend of `verification`",
    "builder": "what made the pair",
    "builder.name": "the builder section: `removal`, `replacement`, `crawl`, ...",
    "builder.backend": "e.g. `opencv-telea`, `lama-torchscript`, `iopaint-http`",
    "builder.embedded": "true when the CPU stand-in, not the paper's model, made the pair",
    "builder.model": "checkpoint path / hub id@revision / model name; null for embedded backends",
    "builder.seed": "the row's seed",
    "builder.params": "canonical JSON of the parameters that shaped this row",
    "split": "`train` or `val`: a hash of (dataset, source image id), so every row of one image (remove/add"
             " twins included) shares it; `split.val_fraction` sets the share; assigned at selection",
    "drop_reason": "set by a builder on a candidate it judged unusable; such rows are in `rejected/`, never in"
                   " the kept folders",
    "duplicate_of": "the id of the row this one duplicates (dedup); such rows are rejected as `duplicate`",
    "edit_kind": "crawled (`web`) rows: what the edit is, `local`, `colour`, `geometric`, `resolution`, `overlay`,"
                 " `composite`, several joined by `+` in that order (`geometric+local`); a candidate validation"
                 " rejected says what it was (`no_op`, `non_derivative`, `composite`, `colour`); null for other"
                 " builders (docs/crawl.md, \"Edit kinds\")",
    "reason": "why the row was rejected (`target_quality_low`, `duplicate`, `object_not_removed`, ...)",
    "rejected_by": "`builder` (its `drop_reason`) or `selection` (a rule)",
}
# Columns of the rejected row that mean what they mean in the pair row are described there.
REJECTED_OWN = ("reason", "rejected_by")


def arrow_type(t: Any) -> str:
    import pyarrow as pa

    if pa.types.is_struct(t):
        names = [t.field(i).name for i in range(t.num_fields)]
        return "struct{" + ", ".join(names) + "}" if names == ["bytes", "path"] else "struct"
    if pa.types.is_list(t):
        return f"list<{arrow_type(t.value_type)}>"
    return str(t)


def schema_rows(schema: Any, used: set[str], own: tuple[str, ...] | None = None) -> list[str]:
    import pyarrow as pa

    rows = ["| column | type | nullable | meaning |", "|---|---|---|---|"]
    for field in schema:
        if own is not None and field.name not in own:
            meaning = "as in the pair row"
        else:
            if field.name not in MEANINGS:
                raise SystemExit(f"scripts/gen_reference.py: add a meaning for column {field.name!r} to MEANINGS")
            meaning = MEANINGS[field.name]
            used.add(field.name)
        rows.append(f"| {code(field.name)} | {code(arrow_type(field.type))} | {'yes' if field.nullable else 'no'}"
                    f" | {cell(meaning)} |")
        if pa.types.is_struct(field.type) and arrow_type(field.type) == "struct" and (own is None or field.name in own):
            for i in range(field.type.num_fields):
                child = field.type.field(i)
                key = f"{field.name}.{child.name}"
                if key not in MEANINGS:
                    raise SystemExit(f"scripts/gen_reference.py: add a meaning for column {key!r} to MEANINGS")
                used.add(key)
                rows.append(f"| {code(key)} | {code(arrow_type(child.type))} | | {cell(MEANINGS[key])} |")
    return rows


def schema_block() -> str:
    from ieiw.schemas.registry import REGISTRY
    from ieiw.schemas.rows import PAIR_SCHEMA, REJECTED_SCHEMA, SCHEMA_VERSION

    used: set[str] = set()
    out = [f"### The pair row (schema v{SCHEMA_VERSION}: `PAIR_SCHEMA`)", "",
           "The same columns in `candidates/`, `ieiw/` and every other kept folder.", "",
           *schema_rows(PAIR_SCHEMA, used), "",
           "### Task values (the registry's tasks)", "",
           ("A task's family names the folder its kept rows go to: `ieiw/` for IEIW's own, `<family>/` beside it"
            " for the others."), "",
           "| task | family | what it is |", "|---|---|---|",
           *[f"| {code(name)} | {code(spec.family)} | {cell(spec.description)} |"
             for name, spec in REGISTRY.tasks.items()], "",
           "### The rejected row (`REJECTED_SCHEMA`)", "",
           "In `rejected/`: no images (they stay in `candidates/`), the reason, and enough to tune a threshold.", "",
           *schema_rows(REJECTED_SCHEMA, used, own=REJECTED_OWN), ""]
    unused = sorted(set(MEANINGS) - used)
    if unused:
        raise SystemExit(f"scripts/gen_reference.py: MEANINGS names columns the schema lacks: {', '.join(unused)}")
    return "\n".join(out)


# -- the files -----------------------------------------------------------------------------------------
def generated() -> dict[str, dict[str, str]]:
    """file (relative to the repo) -> block name -> the block's body."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    used_by: dict[str, list[str]] = {}
    config = config_block(used_by)  # first: it records which keys choose each backend kind
    return {
        "docs/commands.md": {"commands": commands_block()},
        "docs/config.md": {"config": config, "backends": backends_block(used_by)},
        "docs/schema.md": {"schema": schema_block()},
    }


def rewrite(text: str, blocks: dict[str, str], path: str) -> str:
    found = set()

    def replace(match: re.Match) -> str:
        name = match["name"]
        if name not in blocks:
            raise SystemExit(f"{path}: unknown generated block {name!r}")
        found.add(name)
        return f"<!-- generated: {name} {START_NOTE} -->\n{blocks[name].rstrip()}\n\n{match['end']}"

    new = BLOCK.sub(replace, text)
    missing = set(blocks) - found
    if missing:
        raise SystemExit(f"{path}: no markers for block(s) {', '.join(sorted(missing))}")
    return new


def stale_blocks() -> list[str]:
    """'file: block' for every generated block whose text differs from what the code gives now."""
    out = []
    for name, blocks in generated().items():
        path = REPO / name
        text = path.read_text()
        if rewrite(text, blocks, name) != text:
            current = {m["name"]: m.group(0) for m in BLOCK.finditer(text)}
            fresh = {m["name"]: m.group(0) for m in BLOCK.finditer(rewrite(text, blocks, name))}
            out += [f"{name}: {block}" for block in blocks if current.get(block) != fresh.get(block)]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 naming each stale block")
    args = ap.parse_args(argv)
    if args.check:
        stale = stale_blocks()
        for line in stale:
            print(f"stale: {line}", file=sys.stderr)
        if stale:
            print("regenerate: .venv/bin/python scripts/gen_reference.py", file=sys.stderr)
        return 1 if stale else 0
    for name, blocks in generated().items():
        path = REPO / name
        text = path.read_text()
        new = rewrite(text, blocks, name)
        if new != text:
            path.write_text(new)
            print(f"rewrote {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
