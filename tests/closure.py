"""The project files a module runs: its import closure inside the project, read from the code.

Every ``import`` and ``from ... import`` statement counts, at module level or inside a function
(the stages import heavy modules lazily, so a lazy import is still code the stage runs). A package
brings its ``__init__.py``; ``from package import name`` brings ``package/name.py`` when ``name``
is a submodule. Only files of the project's own packages are followed.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("usdh", "baselines")


def module_file(name: str) -> Path | None:
    """The project file of module ``name`` (``a.b`` -> a/b.py or a/b/__init__.py), if any."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def module_name(path: Path) -> str:
    """The dotted name of a project file (a package's ``__init__.py``: the package)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node, except the bodies of ``if TYPE_CHECKING:`` blocks (never run)."""
    out, todo = [], [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        if _is_type_checking(node):
            todo.extend(node.orelse)  # type: ignore[attr-defined]
            continue
        todo.extend(ast.iter_child_nodes(node))
    return out


def import_statements(path: Path, runtime_only: bool = True) -> list[tuple[str, tuple[str, ...]]]:
    """``(module, names)`` for each import in a file, relative imports resolved (``import a.b``
    gives ``("a.b", ())``, ``from a import b, c`` gives ``("a", ("b", "c"))``). With
    ``runtime_only``, the bodies of ``if TYPE_CHECKING:`` blocks are skipped (never run)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out: list[tuple[str, tuple[str, ...]]] = []
    for node in _runtime_nodes(tree) if runtime_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((alias.name, ()) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            out.append((module, tuple(alias.name for alias in node.names)))
    return out


@cache
def direct_imports(path: Path) -> frozenset[str]:
    """Module names a file imports (absolute; relative imports resolved), with their packages."""
    names: set[str] = set()
    for module, imported in import_statements(path):
        names.add(module)
        names.update(f"{module}.{name}" for name in imported)
    out: set[str] = set()
    for name in names:
        parts = name.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return frozenset(out)


def closure(*modules: str) -> set[Path]:
    """Every project file that importing ``modules`` can run, transitively."""
    todo = [m for m in modules]
    for m in modules:  # a module's parent packages run first
        parts = m.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
    seen: set[Path] = set()
    while todo:
        path = module_file(todo.pop())
        if path is None or path in seen:
            continue
        seen.add(path)
        todo.extend(direct_imports(path))
    return seen


# -- the pipeline's stages, as DVC expands them --------------------------------------------------
def stage_options(cmd: str) -> tuple[str, list[str], dict[str, str]]:
    """A stage command's sub-command, positional arguments and options (``--protocol P``,
    ``--experiment E`` when not the default), as the project's CLI parses them."""
    from usdh.cli import COMMANDS, build_parser

    parsed = vars(build_parser().parse_args(cmd.split()[3:]))
    command = parsed["command"]
    names = COMMANDS[command][0]
    args = [str(parsed[n]) for n in names if parsed.get(n) is not None]
    options = {k: v for k, v in parsed.items() if k in ("protocol", "setting") and v is not None}
    if parsed.get("experiment", "experiment") != "experiment":
        options["experiment"] = parsed["experiment"]
    return command, args, options


def stage_modules(cmd: str, params: dict) -> tuple[str, list[str], list[str]]:
    """For a stage command ``python -m usdh <command> <args...>``: the command, its arguments and
    the modules it runs (its stage module, and the hasher module of the method it fits)."""
    from usdh.cli import stage_module
    from usdh.registry import get_method, methods

    words = cmd.split()
    if words[:3] != ["python", "-m", "usdh"]:
        raise ValueError(f"a stage command must be 'python -m usdh ...', got {cmd!r}")
    command, args, options = stage_options(cmd)
    modules = ["usdh.__main__", stage_module(command)]
    if command in ("fit", "encode", "classify", "finetune", "validate"):
        variants = params.get(options.get("experiment", "experiment"), {}).get("variants") or {}
        method = variants[args[0]]["method"] if args[0] in variants else args[0]
        modules.append(get_method(method).module)
    elif command == "ablate":
        modules.append(get_method(params["ablations"]["variants"][args[0]]["method"]).module)
    elif command == "check":
        # the check reads every registered method's signature (usdh.paramcheck.method_keys)
        modules.extend(spec.module for spec in methods().values())
    elif command == "diagnose":
        modules.extend(get_method(m).module for m in params["experiment"]["methods"])
    return command, args, modules


def load_stages(folder: Path) -> list:
    """Every stage of ``folder``'s dvc.yaml and params.yaml, as DVC expands them."""
    from dvc.repo import Repo

    with Repo(str(folder)) as repo:
        return list(repo.index.stages)


# -- writing dvc.yaml's code deps ----------------------------------------------------------------
#: folders dvc.yaml lists as one dependency instead of file by file
FOLDERS = ("usdh/data", "usdh/report", "usdh/train", "baselines")


def _listed(files: set[str]) -> list[str]:
    out = set()
    for f in files:
        out.add(next((d for d in FOLDERS if f.startswith(d + "/")), f))
    return sorted(out)


def write_code_deps(dvc_yaml: Path = ROOT / "dvc.yaml") -> dict[str, int]:
    """Rewrite every stage's code deps in ``dvc_yaml`` as the union of the closures of its
    expansions (what tests/test_dvc_deps.py checks); other deps are kept, and every stage but
    ``check`` depends on the check's record. Returns the number of code files per stage."""
    import re
    import shutil
    import tempfile

    import yaml

    from tests.test_dvc_deps import CODE, _params_with_every_stage

    folder = Path(tempfile.mkdtemp())
    shutil.copy(dvc_yaml, folder / "dvc.yaml")
    params = _params_with_every_stage()
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    (folder / ".dvc").mkdir()
    (folder / ".dvc" / "config").write_text("[core]\n    no_scm = true\n")
    runs: dict[str, set[str]] = {}
    for stage in load_stages(folder):
        _, _, modules = stage_modules(stage.cmd, params)
        files = {str(p.relative_to(ROOT)) for p in closure(*modules)}
        runs.setdefault(stage.name.split("@")[0], set()).update(files)
    shutil.rmtree(folder)
    out: list[str] = []
    template, indent, kept = None, "", None
    for line in dvc_yaml.read_text().splitlines(keepends=True):
        m = re.match(r"^  ([a-z-]+):\s*$", line)
        if m:
            template = m.group(1)
        if re.match(r"^\s+deps:\s*$", line):
            indent, kept = re.match(r"^(\s+)", line).group(1), []
            out.append(line)
            continue
        if kept is not None:
            if line.startswith(indent + "- "):
                dep = line.strip()[2:]
                if not dep.startswith(CODE):
                    kept.append(dep)
                continue
            first = [] if template == "check" else ["data/params-checked.json"]
            for dep in [*first, *(k for k in kept if k not in first), *_listed(runs[template])]:
                out.append(f"{indent}- {dep}\n")
            kept = None
        out.append(line)
    dvc_yaml.write_text("".join(out))
    return {k: len(v) for k, v in runs.items()}


if __name__ == "__main__":  # python -m tests.closure: rewrite dvc.yaml's code deps
    print(write_code_deps())
