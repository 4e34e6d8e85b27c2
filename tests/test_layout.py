"""The import graph (read with ast, nothing imported): no cycle between modules, and no package imports one
above it. The floors, top down: oracle.cli -> oracle.audit -> oracle.evals -> oracle.organisms ->
oracle.training -> oracle.core (what a user loads and asks) -> oracle.data -> probes -> hooks. Function-level imports
count: a lazy import still ties two modules."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# a package may import only packages on its floor or below; a module's floor is its longest listed prefix
FLOORS = {"hooks": 0, "probes": 1, "oracle.data": 2, "oracle": 3, "oracle.core": 3, "oracle.training": 4, "oracle.organisms": 5,
          "oracle.evals": 6, "oracle.audit": 7, "oracle.cli": 8}
PACKAGES = ("hooks", "probes", "oracle")


def floor_of(module: str) -> int:
    """The floor of a module: that of the longest package in :data:`FLOORS` it belongs to.

    Example:
        >>> floor_of("oracle.training.tasks.base"), floor_of("oracle.core.api"), floor_of("hooks.store")
        (4, 3, 0)
    """
    parts = module.split(".")
    return next(FLOORS[".".join(parts[:i])] for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in FLOORS)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (``from pkg import sub`` points at ``pkg.sub``, not ``pkg``)."""
    files = {_module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(here[: len(here) - node.level + 1] + [node.module or ""]).strip(".") \
                    if node.level else node.module or ""
                subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in files]
                targets.update(subs if len(subs) == len(node.names) else [base, *subs])
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    comp.append(top)
                    if top == node:
                        break
                if len(comp) > 1:
                    cycles.append(sorted(comp))
    return cycles


def test_the_checker_sees_a_cycle_and_an_upward_import():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []
    graph = import_graph()
    assert "hooks.errors" in graph["hooks.models"]          # the graph is not empty by accident
    assert "oracle.training.tasks.base" in graph["oracle.training.tasks.reading"]


def test_no_import_cycles():
    assert find_cycles(import_graph()) == []


def test_imports_only_go_down():
    upward = [f"{m} -> {t}" for m, targets in import_graph().items() for t in targets if floor_of(t) > floor_of(m)]
    assert upward == []


def test_training_imports_neither_evals_nor_audit():
    graph = import_graph()
    bad = [f"{m} -> {t}" for m, targets in graph.items() if m.startswith("oracle.training") for t in targets
           if t.startswith(("oracle.evals", "oracle.audit", "oracle.cli"))]
    assert bad == []


def test_the_floor_checker_sees_an_upward_import():
    assert floor_of("oracle.evals.suite") > floor_of("oracle.training.loop") > floor_of("oracle.core.yes_no")
    assert floor_of("oracle.cli.main") == max(FLOORS.values())


def test_no_top_level_cli_package():
    """The install adds only hooks, probes and oracle to site-packages (the CLI lives at oracle.cli)."""
    assert not (REPO / "cli").exists()
