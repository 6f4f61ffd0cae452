"""The import graph among the sub-packages of ``biomarkers`` has no cycle.

Every ``import``/``from ... import`` of every module is read with :mod:`ast` (module level and
inside functions alike, since a deferred import is still a dependency), mapped to the
sub-package or top-level module of ``biomarkers`` it names (``biomarkers.dicom``,
``biomarkers.io``, ...), and the resulting graph is searched for a cycle. A failure prints
the cycle and, for each edge of it, the files and lines that create it.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import biomarkers

ROOT = Path(biomarkers.__file__).resolve().parent


def _node(module: str) -> str | None:
    """``biomarkers.dicom.index`` -> ``dicom``; ``biomarkers.io`` -> ``io``; outside biomarkers -> None."""
    parts = module.split(".")
    if parts[0] != "biomarkers" or len(parts) < 2:
        return None
    return parts[1]


def _imports(path: Path) -> list[tuple[str, int]]:
    """Absolute names of the modules ``path`` imports (relative imports resolved), with line numbers."""
    rel = path.relative_to(ROOT.parent).with_suffix("")
    package = list(rel.parts if rel.name == "__init__" else rel.parts[:-1])
    if package and package[-1] == "__init__":
        package = package[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # ``from biomarkers import tracking`` imports the sub-package ``tracking``
            names = [f"{mod}.{a.name}" for a in node.names] if mod == "biomarkers" else [mod]
            out += [(n, node.lineno) for n in names]
    return out


def import_graph() -> dict[str, dict[str, list[str]]]:
    """``{node: {imported node: ["file:line", ...]}}`` over every module of ``biomarkers``."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(ROOT.rglob("*.py")):
        src = _node(".".join(path.relative_to(ROOT.parent).with_suffix("").parts))
        if src is None or src.startswith("__"):  # biomarkers/__init__.py, __main__.py: the package's entry points
            continue
        for name, line in _imports(path):
            dst = _node(name)
            if dst is not None and dst != src:
                graph[src][dst].append(f"{path.relative_to(ROOT.parent)}:{line}")
    return graph


def find_cycle(graph: dict[str, dict[str, list[str]]]) -> list[str]:
    """One cycle as ``[a, b, ..., a]`` (empty when the graph is acyclic); depth-first search."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(n: str) -> list[str]:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, {})):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (cyc := visit(m)):
                return cyc
        stack.pop()
        state[n] = 2
        return []

    for n in sorted(graph):
        if n not in state and (cyc := visit(n)):
            return cyc
    return []


def test_find_cycle_finds_a_cycle_and_accepts_a_dag():
    assert find_cycle({"a": {"b": ["x"]}, "b": {"c": ["y"]}, "c": {"a": ["z"]}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": ["x"], "c": ["y"]}, "b": {"c": ["z"]}}) == []


def test_relative_and_deferred_imports_are_edges():
    g = import_graph()
    # the CLI imports every area inside its commands (deferred imports)
    assert {"dicom", "features", "pipeline"} <= set(g["cli"])
    assert "errors" in g["cli"]  # ``from ..errors import ...``


def test_subpackages_import_graph_is_acyclic():
    g = import_graph()
    cycle = find_cycle(g)
    where = "\n".join(f"  {a} -> {b}: {', '.join(g[a][b][:3])}" for a, b in zip(cycle, cycle[1:]))
    assert not cycle, f"import cycle among biomarkers sub-packages: {' -> '.join(cycle)}\n{where}"
