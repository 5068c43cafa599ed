"""The bench modules import each other without a circle (shared constants live in the leaf `constants`)."""

from __future__ import annotations

import ast
from pathlib import Path

import adaspec.runtime.bench

PACKAGE = "adaspec.runtime.bench"
ROOT = Path(next(iter(adaspec.runtime.bench.__path__)))


def import_graph(root: Path) -> dict[str, set[str]]:
    """Return module -> the bench modules it imports, at the top or inside functions."""
    modules = {p.stem for p in root.glob("*.py") if p.stem != "__init__"}
    graph: dict[str, set[str]] = {}
    for name in modules:
        deps: set[str] = set()
        for node in ast.walk(ast.parse((root / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            else:
                continue
            deps |= {f.removeprefix(f"{PACKAGE}.") for f in found if f.startswith(f"{PACKAGE}.")}
        graph[name] = (deps & modules) - {name}
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """Return one import circle as a path of module names, or None."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        for dep in sorted(graph[name]):
            if dep in path:
                return [*path[path.index(dep) :], dep]
            if dep not in done:
                found = visit(dep, [*path, dep])
                if found:
                    return found
        done.add(name)
        return None

    for name in sorted(graph):
        found = visit(name, [name])
        if found:
            return found
    return None


def test_the_cycle_finder_finds_a_planted_circle() -> None:
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


def test_bench_modules_import_without_a_circle() -> None:
    graph = import_graph(ROOT)
    assert {"args", "commands", "drift", "constants"} <= set(graph)
    assert graph["constants"] == set()
    assert cycle(graph) is None, f"import circle: {' -> '.join(cycle(graph) or [])}"
