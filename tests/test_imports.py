"""The package's import graph: no cycle, and no module importing a layer above its own.

Layers, lowest first: ``errors`` < ``classes`` < the yardsticks ``metrics``/``losses`` < ``engine`` <
``datasets``/``search_space`` < ``models`` (the networks) < ``inference`` (maps, scores, rules) < ``search``/``retrain``
(the two stages) < ``studies`` (experiments that run both stages). Imports inside functions count too;
``docs/design.md`` draws the same picture.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ggmnet"
LAYERS = {"ggmnet": 0, "ggmnet.errors": 0, "ggmnet.classes": 0.5, "ggmnet.metrics": 1, "ggmnet.losses": 1,
          "ggmnet.engine": 2, "ggmnet.datasets": 3, "ggmnet.search_space": 3, "ggmnet.models": 3.5, "ggmnet.inference": 4,
          "ggmnet.search": 5, "ggmnet.retrain": 5, "ggmnet.studies": 6}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        found |= {name for name in names if name in modules}
    return found


def _part(module: str) -> str:
    """The layer entry a module belongs to (its package, or itself for a top-level module)."""
    return max((name for name in LAYERS if module == name or module.startswith(name + ".")), key=len)


def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def test_no_module_imports_a_layer_above_its_own():
    upward = [(a, b) for a, deps in graph().items() for b in deps
              if _part(a) != _part(b) and LAYERS[_part(b)] >= LAYERS[_part(a)]]
    assert not upward


def test_the_import_graph_has_no_cycle():
    edges, state, cycles = graph(), {}, []

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(edges[node]):
            if state.get(dep) == "open":
                cycles.append(path[path.index(dep):] + [dep] if dep in path else [node, dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles
