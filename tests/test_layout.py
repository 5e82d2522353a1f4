"""How the package is laid out: short functions, no import cycle, no private names shared.

Read from the source with :mod:`ast`, so these checks see every import, also those inside
functions (``if TYPE_CHECKING:`` blocks, which never run, excepted).
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "invgraph"
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, ast.Module]:
    """Every module of the package by dotted name."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = ast.parse(path.read_text(), filename=str(path))
    return modules


MODULES = _modules()


def _is_package(name: str) -> bool:
    return (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists()


def _imports(name: str, tree: ast.Module) -> list[tuple[str, list[str], int]]:
    """``(imported module, imported names, line)`` for every runtime import in ``tree``."""
    base = name if _is_package(name) else name.rpartition(".")[0]
    skipped = {
        id(node)
        for statement in ast.walk(tree)
        if isinstance(statement, ast.If) and ast.unparse(statement.test) == "TYPE_CHECKING"
        for node in ast.walk(statement)
    }
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                anchor = base.rsplit(".", node.level - 1)[0] if node.level > 1 else base
                module = f"{anchor}.{module}" if module else anchor
            names = [alias.name for alias in node.names]
            found.append((module, names, node.lineno))
    return found


def _import_graph() -> nx.DiGraph:
    """invgraph's modules, with an edge from each module to every module it imports."""
    graph = nx.DiGraph()
    graph.add_nodes_from(MODULES)
    for name, tree in MODULES.items():
        for module, names, _ in _imports(name, tree):
            # "from package import submodule" imports the submodule.
            targets = [f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES]
            for target in targets or [module]:
                if target in MODULES and target != name:
                    graph.add_edge(name, target)
    return graph


def _code_lines(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """The lines of a function from its ``def`` to its end, its docstring not counted (the
    standards ask for docstrings with the math and an example: they should not be short)."""
    lines = function.end_lineno - function.lineno + 1
    first = function.body[0]
    docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
    if docstring and isinstance(first.value.value, str):
        lines -= first.end_lineno - first.lineno + 1
    return lines


def test_no_function_is_longer_than_80_lines():
    long = [
        f"{name}.{node.name} ({_code_lines(node)} lines)"
        for name, tree in MODULES.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and _code_lines(node) > MAX_FUNCTION_LINES
    ]
    assert not long, long


def test_no_import_cycle():
    graph = _import_graph()
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, [" -> ".join([*cycle, cycle[0]]) for cycle in cycles[:5]]


def test_the_framework_does_not_import_drawing_below_the_networks():
    """Drawing only draws: what it needs of a graph comes from the framework's lower layers,
    and only the networks (which offer ``draw()``) import it."""
    importers = {u for u, v in _import_graph().edges if v == "invgraph.drawing"}
    framework = {name for name in importers if name.startswith("invgraph.framework")}
    assert framework == {"invgraph.framework.network"}


def test_no_private_name_is_imported_from_another_module():
    shared = [
        f"{name}:{line} imports {module}.{imported}"
        for name, tree in MODULES.items()
        for module, names, line in _imports(name, tree)
        if module.startswith("invgraph")
        for imported in names
        if imported.startswith("_") and not imported.startswith("__")
    ]
    assert not shared, shared


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_declares_its_public_names(name):
    tree = MODULES[name]
    declared = any(
        isinstance(node, ast.Assign)
        and any(getattr(t, "id", "") == "__all__" for t in node.targets)
        for node in tree.body
    )
    assert declared or name.rpartition(".")[2].startswith("_") or name.endswith("__main__")


def test_the_names_a_user_reaches_for_are_at_top_level():
    import invgraph as ig

    for name in ("FlowDensity", "LatentMixture", "MLP", "ConvNet", "multiscale_flow"):
        assert name in ig.__all__ and getattr(ig, name) is not None
    assert ig.check_block is ig.testing.check_block and ig.picture is ig.drawing.picture
    assert all(hasattr(ig, name) for name in ig.__all__)
