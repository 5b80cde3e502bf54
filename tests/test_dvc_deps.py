"""Every stage lists, as code dependencies, exactly the project files its command runs.

The code a stage runs is computed from the code itself (tests/closure.py: the import closure of its
command's module and of the hasher it fits), never from a hand list, so adding an import without
adding the dependency to dvc.yaml fails here, naming the stage and the file
(``python -m tests.closure`` rewrites the lists from the code). "Nothing much more":
a listed code dependency must be run by at least one stage of its dvc.yaml entry (a matrix shares
one deps list, so ``fit@lsh`` lists the deep methods' trainer too).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.closure import PACKAGES, ROOT, closure, load_stages, stage_modules

CODE = tuple(f"{p}/" for p in PACKAGES) + PACKAGES


def _params_with_every_stage() -> dict:
    """The shipped params, with the finetune matrix switched on so that every stage expands."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["finetune"]["methods"] = [
        m for m in params["experiment"]["methods"] if m in ("usdh", "deepbit")
    ]
    return params


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline")
    shutil.copy(ROOT / "dvc.yaml", folder / "dvc.yaml")
    (folder / "params.yaml").write_text(yaml.safe_dump(_params_with_every_stage()))
    (folder / ".dvc").mkdir()
    (folder / ".dvc" / "config").write_text("[core]\n    no_scm = true\n")
    return load_stages(folder), _params_with_every_stage()


def covered(path: str, deps: set[str]) -> bool:
    """A file is covered by itself or by a listed folder above it."""
    parts = Path(path).parts
    return any("/".join(parts[:i]) in deps for i in range(1, len(parts) + 1))


def dependency_problems(
    name: str, deps: set[str], runs: set[str], template_runs: set[str]
) -> list[str]:
    """What is wrong with one stage's code deps: files it runs that are not listed, and listed
    code that no stage of its dvc.yaml entry runs."""
    problems = [
        f"stage {name!r} runs {f} but dvc.yaml does not list it under deps"
        for f in sorted(runs)
        if not covered(f, deps)
    ]
    for dep in sorted(deps):
        if not dep.startswith(CODE):
            continue
        if not any(f == dep or f.startswith(dep + "/") for f in template_runs):
            problems.append(f"stage {name!r} lists {dep}, which none of its commands runs")
    return problems


def _code_runs(stage, params) -> set[str]:
    _, _, modules = stage_modules(stage.cmd, params)
    return {str(p.relative_to(ROOT)) for p in closure(*modules)}


def test_every_stage_lists_exactly_the_code_it_runs(stages):
    expanded, params = stages
    runs = {s.name: _code_runs(s, params) for s in expanded}
    by_template: dict[str, set[str]] = {}
    for s in expanded:
        by_template.setdefault(s.name.split("@")[0], set()).update(runs[s.name])
    names = {s.name.split("@")[0] for s in expanded}
    assert {"prepare", "features", "fit", "evaluate", "ablate", "diagnose", "classify"} <= names
    assert {"classify-features", "finetune", "report"} <= names
    problems = []
    for s in expanded:
        deps = {d.def_path for d in s.deps if d.def_path != "params.yaml"}
        template = by_template[s.name.split("@")[0]]
        problems += dependency_problems(s.name, deps, runs[s.name], template)
    fix = "\n(python -m tests.closure rewrites dvc.yaml's code deps from the code)"
    assert not problems, "\n".join(problems[:40]) + fix


def test_a_missing_dependency_is_named_with_its_stage():
    runs = {"usdh/cli.py", "usdh/search.py", "usdh/data/cifar10.py"}
    deps = {"usdh/cli.py", "usdh/data", "usdh/report"}
    problems = dependency_problems("evaluate@itq-16-0", deps, runs, runs)
    assert problems == [
        "stage 'evaluate@itq-16-0' runs usdh/search.py but dvc.yaml does not list it under deps",
        "stage 'evaluate@itq-16-0' lists usdh/report, which none of its commands runs",
    ]


def test_the_closure_follows_lazy_imports_and_skips_type_checking_ones():
    files = {str(p.relative_to(ROOT)) for p in closure("usdh.stages.evaluate")}
    assert {"usdh/search.py", "usdh/_kernels.py", "usdh/codes.py", "usdh/params.py"} <= files
    assert "usdh/features.py" not in files and "usdh/report/build.py" not in files
    # the registry names its hashers as strings and imports BaseHasher only for type checkers
    registry = {str(p.relative_to(ROOT)) for p in closure("usdh.registry")}
    assert "usdh/hasher.py" not in registry and "baselines/itq.py" not in registry
    # a method's module pulls in what its fit runs lazily (the trainer)
    usdh = {str(p.relative_to(ROOT)) for p in closure("usdh.method")}
    assert {"usdh/train/__init__.py", "usdh/losses.py"} <= usdh
