"""The package's shape: imports flow down the pipeline, no import cycles, every module
imports on an install made from setup.cfg alone.

The import graph is read from the source (every ``import`` statement, also those inside
functions, which are still dependencies; only ``if TYPE_CHECKING:`` blocks are left
out, since they never run).
"""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "nasplat"

# Modules every stage may use (no stage imports of their own).
BASE = {"errors", "registry", "io", "paths", "ui", "checkpoint", "onnxio", "ray_address", "cli_args", "_lazy",
        "lock", "provenance", "device", "ray_runtime"}
# Composition roots: they wire the stages together and nothing below imports them.
ROOTS = {"nasplat", "nasplat.cli", "nasplat.pipeline", "nasplat.experiment", "nasplat.api", "nasplat.bench_cli"}
# Which stages each stage may import, besides BASE ("down the pipeline").
ALLOWED = {
    "space": set(),
    "data": set(),
    "supernet": {"space", "data"},
    "train": {"space", "data", "supernet", "experiment"},  # Ray Train workers rebuild the experiment
    "hw": {"space", "data", "supernet"},
    "predict": {"space", "data", "supernet", "hw"},
    "search": {"space", "data", "supernet", "hw", "predict"},
    "export": {"space", "data", "supernet", "hw", "predict"},  # the manifest: measured + predicted latency
}


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or \
        (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    out: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                out.append(child)
            visit(child)

    visit(tree)
    return out


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        for node in _imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    src = ".".join(base + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                targets = [f"{src}.{a.name}" if f"{src}.{a.name}" in files else src for a in node.names]
            for t in targets:
                while t and t not in files and "." in t:
                    t = t.rsplit(".", 1)[0]  # `import nasplat.x.y` without a module y: its package
                if t in files and t != mod:
                    graph[mod].add(t)
    return graph


def stage_of(mod: str) -> str | None:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else None


def is_root(mod: str) -> bool:
    return mod in ROOTS or mod.endswith(".cli")


def test_no_import_cycle():
    graph = import_graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = stack[stack.index(n):] + [n]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if n not in state:
                dfs(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            dfs(m)


def test_imports_flow_down_the_pipeline():
    graph = import_graph()
    wrong = []
    for mod, targets in sorted(graph.items()):
        if is_root(mod):
            continue
        src = stage_of(mod)
        for t in sorted(targets):
            dst = stage_of(t)
            if dst is None or dst == src or dst in BASE:
                continue
            if src in BASE or dst not in ALLOWED.get(src, set()):
                wrong.append(f"{mod} imports {t}")
    assert not wrong, "upward imports:\n" + "\n".join(wrong)


def test_the_graph_sees_what_it_should():
    """The checker itself: it finds a real edge, a function-level edge and skips
    TYPE_CHECKING blocks (else the two tests above could pass on an empty graph)."""
    graph = import_graph()
    assert "nasplat.supernet._base" in graph["nasplat.export.stage"] or "nasplat.supernet" in graph["nasplat.export.stage"]
    assert "nasplat.supernet.standalone" in graph["nasplat.export.stage"]  # imported inside a function
    assert "nasplat.experiment" not in graph["nasplat.export.stage"]  # only under TYPE_CHECKING
    assert "nasplat.train.engine" in graph["nasplat.train.run"]


def test_every_module_imports():
    """Every module of the installed package imports (catches a dependency used but not
    declared in setup.cfg, since CI installs from setup.cfg alone)."""
    mods = sorted(import_graph())
    assert "nasplat.search.runner" in mods and "nasplat.train.engine" in mods  # the walk found the package
    for mod in mods:
        assert importlib.import_module(mod).__name__ == mod
