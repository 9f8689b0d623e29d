# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""No import cycles among the modules of ``scripts/`` and ``bundle/``: what two modules share lives in a third that
both import. Imports at module level and inside functions both count (a function-level import only postpones a
cycle); relative imports are resolved, and ``from package import name`` counts as importing ``package.name`` when
that is a module."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("scripts", "bundle")


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the packages (``__init__`` is the package itself)."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of ``modules`` that module ``name`` (at ``path``) imports, anywhere in its code. Importing
    ``a.b.c`` also runs ``a`` and ``a.b``, but a package's ``__init__`` importing its own submodules is no cycle, so
    only the module named (or the module a ``from`` import takes a name of) is an edge."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package, one level up per extra dot
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [
                f"{module}.{alias.name}" if f"{module}.{alias.name}" in modules else module for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # "scripts.io.tiff.read" -> the module it names
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = module_files(root)
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each as one cycle through them."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
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
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [cycle_through(graph, set(c)) for c in components]


def cycle_through(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """One cycle inside ``component``, from its first module back to it: ``[a, b, a]``."""
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    while queue:  # breadth first, so the cycle named is a shortest one
        node = queue.pop(0)
        for nxt in sorted(graph[node] & component):
            if nxt == start:
                return paths[node] + [start]
            if nxt not in paths:
                paths[nxt] = paths[node] + [nxt]
                queue.append(nxt)
    return sorted(component)


def test_no_import_cycles() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_check_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    """A planted cycle through a function-level import and a relative import is found and named."""
    (tmp_path / "scripts" / "sub").mkdir(parents=True)
    (tmp_path / "bundle").mkdir()
    (tmp_path / "scripts" / "__init__.py").write_text("")
    (tmp_path / "scripts" / "sub" / "__init__.py").write_text("from .a import f\n")
    (tmp_path / "scripts" / "sub" / "a.py").write_text("def f():\n    from ..b import g\n")
    (tmp_path / "scripts" / "b.py").write_text("from scripts.sub import a\n")
    (tmp_path / "bundle" / "__init__.py").write_text("")
    (tmp_path / "bundle" / "cli.py").write_text("import scripts.b\n")
    graph = import_graph(tmp_path)
    assert graph["scripts.sub.a"] == {"scripts.b"} and graph["scripts.b"] == {"scripts.sub.a"}
    assert find_cycles(graph) == [["scripts.b", "scripts.sub.a", "scripts.b"]]
