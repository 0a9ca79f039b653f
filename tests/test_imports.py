"""The import graph of the three packages, read from their source with `ast`:

- finetune_contract imports neither of the other two (nor torch or kopf): it is the leaf;
- finetune_trainer imports nothing of finetune_operator, only the contract;
- finetune_operator imports finetune_trainer only in its local runner, the one place that
  trains on this machine;
- no module imports itself through others: the graph has no circle.

Every import counts, at the top of a module or inside a function, guarded or not.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SOURCES = {
    "finetune_contract": ROOT / "operator" / "finetune_contract",
    "finetune_operator": ROOT / "operator" / "finetune_operator",
    "finetune_trainer": ROOT / "trainer_image" / "finetune_trainer",
}
LOCAL_RUNNER = "finetune_operator.local.runner"


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the three packages."""
    found = {}
    for package, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


MODULES = module_files()


def imported_names(module: str, path: Path) -> set[str]:
    """Every module name `module` imports: `from pkg import sub` names pkg.sub, not pkg
    (a package's parents run first on any import, which is no edge of the graph)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, package)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                names.add(submodule if submodule in MODULES else base)
    return names


def _absolute(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    base = ".".join(parts[: len(parts) - node.level + 1])
    return f"{base}.{node.module}" if node.module else base


def graph() -> dict[str, set[str]]:
    """module -> the modules of the three packages it imports."""
    return {module: {name for name in imported_names(module, path) if name in MODULES}
            for module, path in MODULES.items()}


GRAPH = graph()


def importers_of(package: str, within: str) -> set[str]:
    return {module for module, targets in GRAPH.items() if module.startswith(f"{within}.")
            or module == within
            if any(t == package or t.startswith(f"{package}.") for t in targets)}


def test_every_package_was_read():
    for package in SOURCES:
        assert sum(m.startswith(package) for m in MODULES) > 3, package


def test_the_trainer_imports_the_contract_and_nothing_of_the_operator():
    assert importers_of("finetune_operator", "finetune_trainer") == set()
    assert importers_of("finetune_contract", "finetune_trainer")


def test_the_operator_imports_the_trainer_only_in_its_local_runner():
    assert importers_of("finetune_trainer", "finetune_operator") == {LOCAL_RUNNER}


def test_the_contract_imports_neither_package_nor_a_framework():
    assert importers_of("finetune_operator", "finetune_contract") == set()
    assert importers_of("finetune_trainer", "finetune_contract") == set()
    allowed = {"pydantic", "yaml", "finetune_contract", *sys.stdlib_module_names}
    for module, path in MODULES.items():
        if module.startswith("finetune_contract"):
            outside = {name.split(".")[0] for name in imported_names(module, path)} - allowed
            assert not outside, f"{module} imports {sorted(outside)}"


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node, or a node importing itself
    (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_module_is_part_of_an_import_circle():
    assert circles(GRAPH) == []


def test_the_subpackages_import_each_other_in_one_direction():
    """Folded to the packages and the first level below them (finetune_operator.controller,
    finetune_operator.lifecycle, ...): still no circle."""
    def fold(module: str) -> str:
        return ".".join(module.split(".")[:2])

    folded: dict[str, set[str]] = {}
    for module, targets in GRAPH.items():
        folded.setdefault(fold(module), set()).update(
            fold(t) for t in targets if fold(t) != fold(module))
    assert circles(folded) == []


@pytest.mark.parametrize("edges,expected", [
    ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
    ({"a": {"a"}}, [["a"]]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
])
def test_the_circle_finder_finds_circles(edges, expected):
    assert circles(edges) == expected
