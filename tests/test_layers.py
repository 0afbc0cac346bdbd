"""The package's dependencies point one way: a module imports its own package and the layers
below it, never a layer above, and no chain of imports (module level or inside functions)
leads back to where it started."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "braincam"

# Lowest first. A package may import packages of its own layer only when listed together
# in one tuple *and* it is the same package; peers (explain, evaluate) stay independent.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "labels"),
    ("device", "runs", "allocator"),
    ("distributed",),
    ("data",),
    ("models",),
    ("explain", "evaluate"),
    ("train",),
    ("audit",),
    ("radiomics",),
    ("report",),
    ("pipeline",),
    ("api",),
    ("serve",),
    ("commands",),
    ("cli",),
    ("__main__",),
)
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every ``braincam...`` module that ``path`` imports, at module level or inside a function."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "braincam":
                found.update(f"braincam.{alias.name}" for alias in node.names)
            elif node.module.startswith("braincam."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("braincam."))
    return found


def top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


MODULES = {module_name(p): imports_of(p) for p in SRC.rglob("*.py")}


def test_every_package_has_a_layer():
    assert {top(m) for m in MODULES} - {"__init__"} <= set(LAYER)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if top(m) != "__init__"))
def test_no_upward_or_sideways_import(module):
    here = top(module)
    bad = [
        target for target in MODULES[module]
        if top(target) != here and LAYER.get(top(target), -1) >= LAYER[here]
    ]
    assert not bad, f"{module} imports {bad}: a layer above or beside {here}"


def test_no_import_cycle():
    known = set(MODULES)

    def resolve(target: str) -> str | None:
        while target and target not in known:
            target = target.rpartition(".")[0]
        return target or None

    graph = {m: {t for t in map(resolve, deps) if t and t != m} for m, deps in MODULES.items()}
    # A package's __init__ re-exports its submodules, so a submodule's import of its own
    # package (ancestor) is not a cycle worth reporting.
    for m in graph:
        graph[m] = {t for t in graph[m] if not m.startswith(t + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
