"""The runtime's imports, read from the source (every import statement, lazy ones inside functions
included, and ``importlib.import_module`` / ``__import__`` of a literal name):

- nothing under ``ada3d_edge/runtime/``, nor ``bundle.py``, ``preprocess.py`` or the video reader,
  imports torch, models, train or export (ARCHITECTURE.md section 2), nor data beyond the
  torch-free video reader and list parser;
- the package's import graph (runtime/backends, bench <-> bench_report, everywhere) has no cycle.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "ada3d_edge"
FORBIDDEN = ("torch", "torchvision", "ada3d_edge.models", "ada3d_edge.train", "ada3d_edge.export",
             "ada3d_edge.torch_backend", "ada3d_edge.bench_torch")
DATA_ALLOWED = ("ada3d_edge.data.video", "ada3d_edge.data.lists")
TORCH_FREE = sorted(PKG.joinpath("runtime").rglob("*.py")) + [
    PKG / "bundle.py", PKG / "preprocess.py", PKG / "data" / "video.py", PKG / "data" / "lists.py",
    PKG / "latency_lut.py"]


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``, wherever it is."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((node.lineno, mod))
            out += [(node.lineno, f"{mod}.{a.name}") for a in node.names]  # `from . import x` names a module
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__"):
                out.append((node.lineno, node.args[0].value))
    return out


def _is(mod: str, prefix: str) -> bool:
    return mod == prefix or mod.startswith(prefix + ".")


@pytest.mark.parametrize("path", TORCH_FREE, ids=lambda p: str(p.relative_to(PKG)))
def test_torch_free_modules_import_no_torch_models_train_export(path: Path) -> None:
    bad = [(line, mod) for line, mod in imports(path)
           if any(_is(mod, f) for f in FORBIDDEN)
           or (_is(mod, "ada3d_edge.data") and mod != "ada3d_edge.data"
               and not any(_is(mod, a) for a in DATA_ALLOWED))]
    assert not bad, f"{path.relative_to(PKG)} imports {bad}"


def test_the_ast_check_sees_lazy_and_dynamic_imports(tmp_path: Path) -> None:
    src = PKG / "runtime" / "_probe_for_test.py"
    src.write_text("def f():\n    import torch\n    from ..models import build_backbone\n"
                   "    import importlib\n    importlib.import_module('ada3d_edge.train.checkpoint')\n")
    try:
        found = {mod for _, mod in imports(src)}
    finally:
        src.unlink()
    assert {"torch", "ada3d_edge.models", "ada3d_edge.train.checkpoint"} <= found


def _graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        for _, target in imports(path):
            if target in modules and target != mod:
                graph[mod].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_package_import_graph_has_no_cycle() -> None:
    cycles = _cycles(_graph())  # lazy imports count: a cycle hidden in a function is still a cycle
    assert not cycles, cycles


def test_cycle_finder_finds_one() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_backend_table_modules_exist_and_runtime_rows_stay_in_the_runtime() -> None:
    from ada3d_edge.runtime.backends import BACKENDS

    modules = {module_name(p) for p in PKG.rglob("*.py")}
    for spec in BACKENDS.values():
        assert spec.module in modules, spec
        assert spec.module.startswith("ada3d_edge.runtime.") == spec.runs_bundle, spec
