"""The repo stands on its own: no line points a user at a file outside it, and every document it names
is in it. The docs keep up with the code: every command, option, top-level config key and row column is
documented, the generated reference matches the code (scripts/gen_reference.py), every ieiw/ path they
name exists, and the README stays a front page."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest
from ieiw_testing import REPO

# The team's own notes, which users do not have: named here in pieces so this file does not match itself.
OUTSIDE = [
    re.escape("../" + "shared"),
    r"\b" + "shared" + r"/[A-Z]",
    *[r"\b" + name + r"\.md\b" for name in ("PAPER", "FORMATS", "ENVIRONMENT", "DESIGN", "STYLE")],
    "design" + " card",
]
TEXT_SUFFIXES = {".md", ".py", ".yaml", ".yml", ".toml", ".sh", ".txt", ".cfg", ".ini", ""}
MD_NAME = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w.-]+\.md)\b")


def repo_text_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout.split()
    files = [REPO / name for name in listed]
    return [p for p in files if p.is_file() and p.suffix in TEXT_SUFFIXES and "/data/" not in p.as_posix()
            and "/sample/" not in p.as_posix()]


def test_no_line_points_outside_the_repo():
    problems = []
    for path in repo_text_files():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for pattern in OUTSIDE:
                if re.search(pattern, line):
                    problems.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not problems, "lines that name documents users do not have:\n" + "\n".join(problems)


def test_every_named_markdown_document_exists():
    files = repo_text_files()
    names = {p.name for p in files}
    missing = []
    for path in files:
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for name in MD_NAME.findall(line):
                if (REPO / name).exists() or (path.parent / name).exists() or Path(name).name in names:
                    continue
                missing.append(f"{path.relative_to(REPO)}:{number}: {name}")
    assert not missing, "documents named but not in the repo:\n" + "\n".join(missing)


def test_the_user_documents_are_there():
    for name in ("README.md", "docs/ARCHITECTURE.md", "docs/formats.md", "docs/paper.md", "docs/environment.md",
                 "docs/crawl.md", "docs/training.md", "docs/commands.md", "docs/config.md", "docs/schema.md",
                 "docs/demo.md", "docs/status.md"):
        assert (REPO / name).stat().st_size > 1000, name


# -- the docs keep up with the code ------------------------------------------------------------------
README_MAX_LINES = 250  # a front page: the full reference lives in docs/


def docs_text() -> str:
    return "\n".join(path.read_text() for path in sorted((REPO / "docs").glob("*.md")))


def documented_keys(text: str) -> set[str]:
    """Names that head a markdown table row (| `key` |, | `key.sub` |, | `key[...]...` |) or a heading
    (### `key:` ...): what counts as documenting a command or a config key, not a passing mention."""
    rows = re.findall(r"^\|\s*`([\w-]+)[`.:\[]", text, re.MULTILINE)
    headings = re.findall(r"^#+ .*?`([\w -]+?):?`", text, re.MULTILINE)
    return set(rows) | set(headings)


def subcommands() -> dict[str, argparse.ArgumentParser]:
    from ieiw.cli import parser

    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_readme_is_a_front_page():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) < README_MAX_LINES, (
        f"README.md has {len(lines)} lines (limit {README_MAX_LINES}): move reference material into docs/")


def test_every_command_is_documented():
    """Each `ieiw` subcommand, the ones handed to ieiw.training included, has its own heading in docs/."""
    headings = set(re.findall(r"^#+ `ieiw ([\w-]+)`", docs_text(), re.MULTILINE))
    missing = sorted(set(subcommands()) - headings)
    assert not missing, f"ieiw subcommands without a '### `ieiw NAME`' heading in docs/: {missing}"


def test_every_delegated_command_names_its_parser():
    from ieiw.cli import DELEGATED, DELEGATED_PARSERS

    assert set(DELEGATED) == set(DELEGATED_PARSERS)
    assert set(DELEGATED) <= set(subcommands())


def test_every_option_of_every_command_is_documented():
    pytest.importorskip("torch")  # `ieiw train`'s parser lives in the trainer's module
    from ieiw.cli import command_parsers

    text = (REPO / "docs" / "commands.md").read_text()
    missing = [f"ieiw {name} {option}" for name, (_, own) in command_parsers().items()
               for action in own._actions if not isinstance(action, argparse._HelpAction)
               for option in action.option_strings if option.startswith("--") and option not in text]
    assert not missing, "options missing from docs/commands.md:\n" + "\n".join(missing)


def top_level_config_keys() -> set[str]:
    """BuildConfig's own keys, every builder section and every always-present section ieiw registers."""
    from ieiw.schemas.config import BuildConfig
    from ieiw.schemas.registry import REGISTRY

    def own(spec) -> bool:  # a plugin a test registered is not ieiw's to document
        return spec is not None and spec.config.__module__.split(".")[0] == "ieiw"

    builders = {name for name in REGISTRY.builder_names() if own(REGISTRY.builder(name))}
    sections = {name for name, spec in REGISTRY.default_sections().items() if own(spec)}
    assert {"removal", "replacement", "crawl"} <= builders and {"scoring", "selection"} <= sections
    return set(BuildConfig.model_fields) | builders | sections


def test_every_top_level_config_key_is_documented():
    missing = sorted(top_level_config_keys() - documented_keys(docs_text()))
    assert not missing, f"top-level config keys with no table row or heading of their own in docs/: {missing}"


def test_every_row_column_is_documented():
    from ieiw.schemas.rows import PAIR_SCHEMA, REJECTED_SCHEMA

    text = (REPO / "docs" / "schema.md").read_text()
    columns = set(PAIR_SCHEMA.names) | set(REJECTED_SCHEMA.names)
    missing = sorted(c for c in columns if not re.search(rf"^\| `{re.escape(c)}` \|", text, re.MULTILINE))
    assert not missing, f"row columns missing from docs/schema.md: {missing}"


def test_the_generated_reference_is_current():
    """scripts/gen_reference.py --check, in a fresh process (no plugin a test registered is loaded there)."""
    pytest.importorskip("torch")  # `ieiw train`'s options are read from the trainer's parser
    done = subprocess.run([sys.executable, "scripts/gen_reference.py", "--check"], cwd=REPO, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr + done.stdout


# A path the docs name only as an example of where a new file would go.
EXAMPLE_PATHS = {"ieiw/builders/folder_pairs.py"}
IEIW_PATH = re.compile(r"(?<![\w./-])(ieiw/(?:[\w.-]+/)*[\w.-]+(?:\.\w+|/))")


def test_every_ieiw_path_the_docs_name_exists():
    """No stale module path (ieiw/converters/, ieiw/hubmodels.py, ...) in the README or docs/."""
    missing = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for name in IEIW_PATH.findall(line):
                if name in EXAMPLE_PATHS or (REPO / name).exists():
                    continue
                missing.append(f"{path.relative_to(REPO)}:{number}: {name}")
    assert not missing, "paths under ieiw/ that do not exist:\n" + "\n".join(missing)
