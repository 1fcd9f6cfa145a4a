"""The modules of the converters package import each other without a cycle,
counting imports at any level (a function-level import hides a cycle from
Python at load time, not from a reader)."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "converters"


def intra_package_imports(path: Path, modules: set[str]) -> set[str]:
    """The package modules that the file at ``path`` imports, at any level."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            absolute = node.level == 0 and (node.module or "").split(".")[0] == PACKAGE.name
            if not (node.level == 1 or absolute):
                continue
            inside = (node.module or "").removeprefix(PACKAGE.name).lstrip(".") if absolute else node.module
            if inside:
                found.add(inside.split(".")[0])
            else:  # from . import a, b: submodules, or names of the package's __init__
                found |= {a.name if a.name in modules else "__init__" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith(f"{PACKAGE.name}.")}
    return found & modules


def import_graph() -> dict[str, set[str]]:
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    return {m: intra_package_imports(PACKAGE / f"{m}.py", modules) - {m} for m in modules}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle as a list of modules (first == last), or None (depth-first search)."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = "open"
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                return path[path.index(n):] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        state[m] = "done"
        path.pop()
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_converters_modules_import_without_cycles():
    graph = import_graph()
    assert {"read_modules", "read_fx", "wire_program", "program"} <= set(graph)
    assert "read_fx" in graph["read_modules"]  # the walk sees the real imports
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


@pytest.mark.parametrize("source, expected", [
    ("from . import program\nfrom .errors import ConversionError", {"program", "errors"}),
    ("def f():\n    from .read_modules import read_module", {"read_modules"}),
    ("import converters.load\nfrom converters.fold import from_graph", {"load", "fold"}),
    ("from . import ConversionError\nfrom torch import nn\nfrom .. import graphnfn", {"__init__"}),
])
def test_imports_are_found_at_any_level(tmp_path, source, expected):
    path = tmp_path / "m.py"
    path.write_text(source)
    assert intra_package_imports(path, {"program", "errors", "read_modules", "load", "fold", "__init__"}) == expected


def test_a_function_level_cycle_is_found():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
