"""The plugins' layout: light to load, no private cross-imports, no import cycles, entry points = fallback list."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from synthagent.core.registry import builtin_modules

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
HEAVY = ("langgraph", "langchain_core", "torch", "transformers", "trl", "ray", "redis", "datasets", "networkx",
         "numpy", "matplotlib", "httpx")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PLUGINS).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(("synthagent", "plugins", *parts))


def _imports(path: Path) -> list[ast.ImportFrom | ast.Import]:
    return [n for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))) if isinstance(n, (ast.Import, ast.ImportFrom))]


def test_loading_every_plugin_imports_no_heavy_library() -> None:
    code = ("import json, sys; from synthagent.core.registry import load_plugins; load_plugins(); "
            f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout) == []


def test_no_plugin_imports_another_modules_private_names() -> None:
    found = []
    for path in sorted(PLUGINS.rglob("*.py")):
        for node in _imports(path):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("synthagent.plugins"):
                found += [f"{path.relative_to(PLUGINS)}: {node.module}.{a.name}" for a in node.names
                          if a.name.startswith("_")]
    assert found == []


def test_plugin_modules_import_each_other_without_cycles() -> None:
    """Counting function-local imports too: a cycle hidden in a function is still a cycle."""
    modules = {_module_name(p): p for p in PLUGINS.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in _imports(path):
            if isinstance(node, ast.ImportFrom) and node.module in modules:
                targets.add(node.module)
                targets |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules}
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name in modules}
        graph[name] = targets - {name}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert cycles == []


def test_entry_points_are_named_by_their_folder() -> None:
    eps = {ep.name: ep.value for ep in metadata.entry_points(group="synthagent")
           if ep.dist is not None and ep.dist.name == "synthagent"}
    assert eps == dict(builtin_modules())  # the installed entry points are pyproject.toml's
    assert all(module == "synthagent.plugins." + name for name, module in eps.items())
    kinds = {name.split(".")[0] for name in eps}
    assert kinds == {"generators", "simulators", "mapping", "rubrics", "backends", "executors", "training", "benchmarks"}
