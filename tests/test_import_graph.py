"""The library's import graph is a DAG and points away from the CLI.

Every ``import``/``from ... import`` in ``leffa/`` counts, including those inside functions (a deferred import
hides a cycle from the interpreter but not from a reader: the two modules still depend on each other). An edge
goes to the module named; ``from leffa.x import y`` goes to ``leffa.x.y`` when that is a module, else to ``leffa.x``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ROOT / "leffa"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def library_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(LIBRARY.rglob("*.py"))}


def imported_names(path: Path, name: str, modules: set[str] | frozenset[str] = frozenset()) -> set[str]:
    """Every absolute module name ``path`` imports (relative imports resolved against ``name``).

    ``from p import y`` names ``p.y`` when that is one of ``modules`` (importing a submodule), else ``p``.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = parts[: len(parts) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in modules else base)
    return found


def import_graph() -> dict[str, set[str]]:
    """``{module: leffa modules it imports}``, plus any ``leffa_cli`` module named, so the test can reject it."""
    modules = library_modules()
    names = set(modules)
    return {
        name: {
            target
            for target in imported_names(path, name, names)
            if target != name and (target in modules or target.split(".")[0] == "leffa_cli")
        }
        for name, path in modules.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or ``None``: depth-first search with colours."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_graph_sees_function_level_and_relative_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import os\n\ndef f():\n    from leffa.export.backend import X\n    from . import sibling\n")
    names = imported_names(module, "leffa.export.m", {"leffa.export.backend", "leffa.export.sibling"})
    assert names == {"os", "leffa.export.backend", "leffa.export.sibling"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_among_leffa_modules():
    graph = import_graph()
    assert len(graph) > 30  # the walk found the library
    cycle = find_cycle({name: {e for e in edges if e in graph} for name, edges in graph.items()})
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_library_never_imports_the_cli():
    offenders = sorted(
        f"{name} imports {edge}"
        for name, edges in import_graph().items()
        for edge in edges
        if edge.startswith("leffa_cli")
    )
    assert not offenders, "; ".join(offenders)


def test_no_module_imports_another_modules_private_names():
    """A name starting with ``_`` is its module's own business; reuse goes through public names."""
    offenders = []
    for folder in (ROOT / "leffa", ROOT / "leffa_cli"):
        for path in sorted(folder.rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("leffa", "leffa_cli"):
                    offenders += [
                        f"{path.relative_to(ROOT)}: {node.module}.{alias.name}"
                        for alias in node.names
                        if alias.name.startswith("_") and not alias.name.startswith("__")
                    ]
    assert not offenders, "; ".join(offenders)


def test_the_model_never_reaches_training_sampling_or_the_probe():
    graph = import_graph()
    reached, todo = set(), ["leffa.model"]
    while todo:
        for target in graph.get(todo.pop(), ()):
            if target not in reached:
                reached.add(target)
                todo.append(target)
    above = {name for name in reached if name.startswith(("leffa.train", "leffa.sampler", "leffa.probe"))}
    assert not above, f"leffa.model imports (directly or not) {sorted(above)}"
