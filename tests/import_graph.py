"""The import graph of a package's own modules, read from the source with ``ast``, and its circles.

Shared by the core's and the generated project's tests. An edge A -> B means that module A
imports module B: at the top, or inside a function (a deferred import still ties the two
modules together). Imports under ``if TYPE_CHECKING:`` are left out: they name a type for the
checker and never run. Parent packages that Python imports on the way (``a.b`` before
``a.b.c``) are not edges; an explicit ``from a import name`` is an edge to ``a`` (or to
``a.name`` when that is a module).
"""

from __future__ import annotations

import ast
from pathlib import Path


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement in ``tree``, except those in the body of ``if TYPE_CHECKING:``."""
    found, stack = [], [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))
    return found


def modules_of(package_dir: Path) -> dict[str, Path]:
    """Map each module of the package in ``package_dir`` to its file (``pkg.sub`` for ``pkg/sub/__init__.py``)."""
    root = package_dir.parent
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """The package's import graph: each module mapped to the package modules it imports."""
    modules = modules_of(package_dir)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        here = name.split(".") if is_package else name.split(".")[:-1]
        edges = graph[name] = set()
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = here[: len(here) - node.level + 1] if node.level else []
                source = ".".join([*base, node.module] if node.module else base)
                # ``from pkg import sub`` imports the module pkg.sub when there is one.
                targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names]
            edges.update(t for t in targets if t in modules and t != name)
    return graph


def import_cycles(package_dir: Path) -> list[list[str]]:
    """Each circle in the package's import graph, as the modules along it (first repeated last)."""
    graph = import_graph(package_dir)
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return cycles
