"""The repo stands on its own: no line points a user at a file outside it, and every document it names
is in it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

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
                 "docs/crawl.md", "docs/training.md"):
        assert (REPO / name).stat().st_size > 1000, name
