"""The house rules of the code's layout, checked over every import (module level and inside functions alike):

- no import circle between modules;
- data flows one way: a stage imports only what comes before it
  (tasks and the shared modules → teach → curate → train → evaluate → report / export → experiment → api / cli).

An import circle (api → experiment.runner → api) and a lower stage reaching up (teach/adaptive.py importing
curate/ for its votes) were found in review; this keeps them from coming back.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
# Packages by their place in the data flow; everything else under ftcot/ is shared (rank 0).
RANK = {"teach": 1, "curate": 2, "train": 3, "evaluate": 4, "report": 5, "export": 5, "experiment": 6, "api": 7,
        "cli": 7, "__main__": 8}


def _module(path: Path) -> str:
    name = ".".join(path.relative_to(SRC).with_suffix("").parts)
    return name.removesuffix(".__init__")


def _imports() -> dict[str, set[str]]:
    """Module → the ftcot modules it imports (``from package import submodule`` is the submodule)."""
    known = {_module(p) for p in (SRC / "ftcot").rglob("*.py")}
    edges: dict[str, set[str]] = defaultdict(set)
    for path in (SRC / "ftcot").rglob("*.py"):
        module = _module(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ftcot":
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    edges[module].add(sub if sub in known else node.module)
            elif isinstance(node, ast.Import):
                edges[module].update(a.name for a in node.names if a.name.split(".")[0] == "ftcot")
    return {m: {t for t in targets if t in known and t != m} for m, targets in edges.items()}


def _rank(module: str) -> int:
    parts = module.split(".")
    return RANK.get(parts[1], 0) if len(parts) > 1 else 0


def test_no_import_circle():
    graph = _imports()
    seen: dict[str, int] = {}  # 1: on the current path, 2: done
    circles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        seen[module] = 1
        for target in sorted(graph.get(module, ())):
            if seen.get(target) == 1:
                circles.append(path[path.index(target):] + [target] if target in path else [module, target])
            elif target not in seen:
                visit(target, path + [target])
        seen[module] = 2

    for module in sorted(graph):
        if module not in seen:
            visit(module, [module])
    assert not circles, "import circles: " + "; ".join(" → ".join(c) for c in circles)


def test_no_stage_imports_a_later_one():
    wrong = sorted(f"{module} → {target}" for module, targets in _imports().items() for target in targets
                   if _rank(target) > _rank(module))
    assert not wrong, "imports against the data flow: " + ", ".join(wrong)
