"""The layers of ieiw/: a module imports only from its own layer or the ones below, and nothing imports in a
circle, neither module to module nor top-level package to top-level package.

Every import counts: at module level, inside a function, under ``if TYPE_CHECKING:``, and
``importlib.import_module("ieiw...")`` with a literal name. ``from pkg import name`` is an import of the
submodule ``pkg.name`` when ``name`` is one. A module that is in no layer of :data:`LAYERS` fails the
test: a new top-level module or package is placed in the table on purpose.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from ieiw_testing import REPO

# Lowest first. A key names a module and everything under it, except "ieiw", which is the package's
# own __init__ only. builders, filters and training share a layer: they may import each other, but the
# package-cycle check keeps those imports one-way.
LAYERS: list[tuple[str, ...]] = [
    ("ieiw", "ieiw.schemas", "ieiw.imageio", "ieiw.phrases", "ieiw.progress", "ieiw.localserver"),
    ("ieiw.sources",),
    ("ieiw.backends",),
    ("ieiw.crawlers",),
    ("ieiw.samples",),
    ("ieiw.builders", "ieiw.filters", "ieiw.training"),
    ("ieiw.audit", "ieiw.stats", "ieiw.exports", "ieiw.card", "ieiw.report"),
    ("ieiw.stages", "ieiw.runner"),
    ("ieiw.flows",),
    ("ieiw.cli", "ieiw.__main__"),
]


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module of the package (a submodule when ``from pkg import sub`` names one)
    where: str  # path:line of the import statement

    def __str__(self) -> str:
        return f"{self.where}: {self.source} imports {self.target}"


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of ``root/package``."""
    files = {}
    for path in sorted((root / package).rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts = path.relative_to(root).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def imports_of(root: Path, package: str) -> tuple[dict[str, Path], list[Import]]:
    """Every module of ``package`` under ``root`` and every import of one of its modules by another."""
    files = module_files(root, package)

    def resolve(name: str) -> str | None:
        """The module ``name`` or, for ``pkg.attr`` where attr is no module, its nearest module."""
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    found: list[Import] = []
    for module, path in files.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), filename=str(path))
        relative = path.relative_to(root)
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from the module's package, one level up per extra dot
                    base = module if is_package else module.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        base = base.rpartition(".")[0]
                    origin = f"{base}.{node.module}" if node.module else base
                else:
                    origin = node.module or ""
                if origin != package and not origin.startswith(package + "."):
                    continue
                targets = [f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in files else origin
                           for alias in node.names]
            elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
                  and isinstance(node.args[0].value, str)
                  and (getattr(node.func, "attr", None) or getattr(node.func, "id", None)) == "import_module"):
                targets = [node.args[0].value]
            for target in targets:
                if target != package and not target.startswith(package + "."):
                    continue
                resolved = resolve(target)
                if resolved is not None and resolved != module:
                    found.append(Import(module, resolved, f"{relative}:{node.lineno}"))
    return files, list(dict.fromkeys(found))  # one per (module, target, line): ``from m import a, b`` is one


def layer_of(module: str, layers: list[tuple[str, ...]]) -> int | None:
    best: tuple[int, int] | None = None  # (length of the matching key, layer)
    for index, keys in enumerate(layers):
        for key in keys:
            exact_only = "." not in key  # the package itself: its __init__, not everything under it
            matches = module == key or (not exact_only and module.startswith(key + "."))
            if matches and (best is None or len(key) > best[0]):
                best = (len(key), index)
    return None if best is None else best[1]


def top_package(module: str) -> str:
    """``ieiw.builders.removal`` -> ``ieiw.builders``; ``ieiw.stats`` -> itself; ``ieiw`` -> itself."""
    return ".".join(module.split(".")[:2])


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def unplaced(files: dict[str, Path], layers: list[tuple[str, ...]], root: Path) -> list[str]:
    return [f"{path.relative_to(root)}: {module} is in no layer"
            for module, path in files.items() if layer_of(module, layers) is None]


def upward(found: list[Import], layers: list[tuple[str, ...]]) -> list[str]:
    out = []
    for imp in found:
        mine, theirs = layer_of(imp.source, layers), layer_of(imp.target, layers)
        if mine is not None and theirs is not None and theirs > mine:
            out.append(f"{imp} (layer {theirs} {layers[theirs]} above layer {mine} {layers[mine]})")
    return out


def one_cycle(component: list[str], edges: dict[str, set[str]]) -> list[str]:
    """A shortest cycle through the component's first node, as the nodes in order (first one again last)."""
    start, inside = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(edges.get(node, ())):
            if nxt == start:
                return paths[node] + [start]
            if nxt in inside and nxt not in paths:
                paths[nxt] = paths[node] + [nxt]
                queue.append(nxt)
    raise AssertionError(f"{component} is no cycle")


def report_cycles(found: list[Import], key, what: str) -> list[str]:
    """One line per import on one cycle of each strongly connected component of the graph of ``key``."""
    edges: dict[str, set[str]] = defaultdict(set)
    for imp in found:
        if key(imp.source) != key(imp.target):
            edges[key(imp.source)].add(key(imp.target))
    out = []
    for component in cycles(edges):
        path = one_cycle(component, edges)
        lines = [f"  {imp}" for a, b in pairwise(path)
                 for imp in found if key(imp.source) == a and key(imp.target) == b]
        out.append(f"{what} cycle {' -> '.join(path)}:\n" + "\n".join(lines))
    return out


def module_cycles(found: list[Import]) -> list[str]:
    return report_cycles(found, lambda module: module, "import")


def package_cycles(found: list[Import]) -> list[str]:
    return report_cycles(found, top_package, "package")


FILES, IMPORTS = imports_of(REPO, "ieiw")


def test_every_module_is_in_a_layer():
    problems = unplaced(FILES, LAYERS, REPO)
    assert not problems, "place these in tests/test_layers.py LAYERS:\n" + "\n".join(problems)


def test_no_module_imports_a_higher_layer():
    problems = upward(IMPORTS, LAYERS)
    assert not problems, "imports of a higher layer:\n" + "\n".join(problems)


def test_no_import_cycle_between_modules():
    problems = module_cycles(IMPORTS)
    assert not problems, "\n".join(problems)


def test_no_import_cycle_between_top_level_packages():
    problems = package_cycles(IMPORTS)
    assert not problems, "\n".join(problems)


def test_the_checks_see_what_they_forbid(tmp_path):
    """On a made-up package: a module in no layer, an upward import inside a function, a module cycle
    through a relative ``from . import`` and a literal import_module, and a cycle between two packages of
    one layer without a module cycle (``from pkg import submodule``) are each reported."""
    pkg = tmp_path / "toy"
    for name, text in {
        "__init__.py": "",
        "stray.py": "",
        "base/__init__.py": "",
        "base/core.py": "def f():\n    from toy.top import cli\n",
        "mid/__init__.py": "",
        "mid/a.py": "from toy.base import core\nfrom . import b\n",
        "mid/b.py": "import importlib\nimportlib.import_module('toy.mid.a')\n",
        "left/__init__.py": "",
        "left/x.py": "import toy.right.y\n",
        "left/z.py": "",
        "right/__init__.py": "",
        "right/y.py": "from toy.left import z\n",
        "top/__init__.py": "",
        "top/cli.py": "",
    }.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(text)
    layers = [("toy", "toy.base"), ("toy.mid", "toy.left", "toy.right"), ("toy.top",)]
    files, found = imports_of(tmp_path, "toy")
    assert unplaced(files, layers, tmp_path) == ["toy/stray.py: toy.stray is in no layer"]
    assert upward(found, layers) == [
        "toy/base/core.py:2: toy.base.core imports toy.top.cli (layer 2 ('toy.top',) above layer 0 ('toy', 'toy.base'))"]
    assert module_cycles(found) == [(
        "import cycle toy.mid.a -> toy.mid.b -> toy.mid.a:\n"
        "  toy/mid/a.py:2: toy.mid.a imports toy.mid.b\n"
        "  toy/mid/b.py:2: toy.mid.b imports toy.mid.a")]
    assert package_cycles(found) == [(
        "package cycle toy.left -> toy.right -> toy.left:\n"
        "  toy/left/x.py:1: toy.left.x imports toy.right.y\n"
        "  toy/right/y.py:1: toy.right.y imports toy.left.z")]


def test_every_import_is_written_one_way():
    """Absolute imports only, sorted, ieiw's own last (pyproject's [tool.ruff]); ruff comes with the dev extra."""
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--select", "I,TID252",
                           "--output-format", "concise", "ieiw"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, f"imports written another way (fix: ruff check --select I,TID252 --fix ieiw):\n{proc.stdout}{proc.stderr}"
