"""The house's import rules: no import cycles, and no module imports another module's private
names (a private helper that two rooms need moves to a shared public place)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.closure import ROOT, import_statements, module_file, module_name

FILES = sorted(p for pkg in ("usdh", "baselines") for p in (ROOT / pkg).rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    """Project modules a file imports: ``import m`` -> m, ``from m import n`` -> m.n when that
    is a module, else m (parent packages are not edges: Python imports them first). Imports
    under ``if TYPE_CHECKING:`` count too, so that they could never hide a cycle."""
    out = set()
    for module, names in import_statements(path, runtime_only=False):
        if not names:
            out.add(module)
        for name in names:
            sub = f"{module}.{name}"
            out.add(sub if module_file(sub) is not None else module)
    here = module_name(path)
    return {m for m in out if module_file(m) is not None and m != here}


def _graph() -> dict[str, set[str]]:
    return {module_name(p): imported_modules(p) for p in FILES}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles():
    cycle = _find_cycle(_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_finder_finds_one():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def private_imports(source: str, here: str) -> list[str]:
    """``from X import _name`` where ``_name`` is not a submodule of the importer's own package."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
            continue
        for alias in node.names:
            if not alias.name.startswith("_"):
                continue
            submodule = module_file(f"{node.module}.{alias.name}") is not None
            same_package = here.startswith(node.module + ".")
            if not (submodule and same_package):
                out.append(f"{here} imports {node.module}.{alias.name}")
    return out


def test_no_module_imports_another_modules_private_names():
    found = [line for p in FILES for line in private_imports(p.read_text(), module_name(p))]
    assert not found, "\n".join(found)


def test_private_import_check_catches_one():
    source = "from usdh.features import _inscribed_box\nfrom usdh import _kernels\n"
    assert private_imports(source, "usdh.probe") == [
        "usdh.probe imports usdh.features._inscribed_box"
    ]
    assert private_imports(source.splitlines()[1], "baselines.probe") == [
        "baselines.probe imports usdh._kernels"
    ]
