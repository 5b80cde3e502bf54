"""One layout: the paths dvc.yaml spells out are the ones usdh/layout.py gives the commands."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from tests.closure import stage_options
from tests.test_dvc_deps import stages  # noqa: F401  (the expanded-stages fixture)
from usdh import layout
from usdh.cli import stage_module


def test_dvc_outputs_are_the_layouts(stages):  # noqa: F811
    expanded, params = stages
    problems = []
    for s in expanded:
        command, args, options = stage_options(s.cmd)
        module = importlib.import_module(stage_module(command))
        typed = [int(a) if a.isdigit() else a for a in args]
        expected = {str(p) for p in module.outputs(params, *typed, **options)}
        declared = {o.def_path for o in s.outs}
        if expected != declared:
            problems.append(f"{s.name}: dvc.yaml {sorted(declared)} != {sorted(expected)}")
    assert not problems, "\n".join(problems[:20])


def test_every_kind_of_run_artifact_has_the_same_order_of_parts():
    run = layout.Run("ablations", "cifar10", "deepbit", "no_rotation", 32, 1)
    tail = Path("ablations/cifar10/deepbit/no_rotation/32")
    assert run.model_dir == Path("models") / tail / "1"
    assert run.codes_dir == Path("codes") / tail / "1"
    assert run.metrics == Path("metrics") / tail / "1.json"
    assert run.pr_curve == Path("plots/precision_recall") / tail / "1.csv"
    assert run.p_at_n == Path("plots/precision_at_n") / tail / "1.csv"
    for kind in layout.KINDS:  # a stage's output folder holds every run of its method
        folder = layout.method_dir(kind, "ablations", "cifar10", "deepbit", "no_rotation")
        assert run.model_dir.parent.parent.name == folder.name == "no_rotation"
    assert run.train_log == Path("models") / tail / "1/train_log.csv"
    assert run.checkpoints == Path(".checkpoints") / tail / "1"  # outside every stage output


def test_find_runs_reads_back_what_the_layout_writes(tmp_path):
    written = [
        layout.Run("retrieval", "cifar10", "deepbit", "itq", 16, 0, tmp_path),
        layout.Run("retrieval", "cifar10", "deepbit", "itq", 16, 12, tmp_path),
        layout.Run("retrieval", "oxford17", "retrieval", "usdh", 64, 2, tmp_path),
        layout.Run("ablations", "cifar10", "deepbit", "no_entropy", 32, 0, tmp_path),
    ]
    for run in written:
        for path in (run.metrics, run.pr_curve):
            path.parent.mkdir(parents=True, exist_ok=True)
        run.metrics.write_text("{}")
        run.pr_curve.write_text("")  # curves live in a tree of their own, not runs
    found = list(layout.find_runs("retrieval", root=tmp_path))
    assert sorted(found, key=str) == sorted(written[:3], key=str)
    assert list(layout.find_runs("ablations", root=tmp_path)) == written[3:]


@pytest.mark.parametrize(
    "name", ["../../elsewhere", "a/b", "", ".hidden", "x..y", "with space", "/abs"]
)
def test_names_that_become_path_parts_are_checked(name):
    with pytest.raises(ValueError, match="cannot be used in a path"):
        layout.Run("ablations", "cifar10", "deepbit", name, 16, 0)


def test_unknown_group_is_refused():
    with pytest.raises(ValueError, match="groups"):
        layout.Run("main", "cifar10", "deepbit", "itq", 16, 0)
