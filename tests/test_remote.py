"""The grid split across machines through DVC's own machinery: git, a shared remote, the run-cache.

Two git clones of one project (standing in for two machines), a bare repository as their git
origin and one local directory as their DVC remote, on a reduced Oxford-17 configuration:

- machine A runs one method's stages, pushes the data and the run-cache to the DVC remote, and
  commits and pushes what git tracks (dvc.lock, metrics/, plots/, reports/);
- machine B pulls both; its `dvc repro` reruns none of A's stages, runs the rest and writes the
  report, and its `metrics/` come out byte for byte as in A's own run of the whole grid (A goes on
  alone afterwards: the single-machine run).

The run-cache is what lets a third machine that never saw A's dvc.lock (a parallel branch) still
restore A's stages: checked on a clone without A's commit. README "Running the grid on several
machines" gives these commands.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from tests.test_pipeline import OXFORD, dvc, project_copy, reduced_params

GIT_ENV = {
    "GIT_AUTHOR_NAME": "usdh-bench test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "usdh-bench test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
}


def git(folder: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", *args],
        cwd=folder,
        env={**os.environ, **GIT_ENV},
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, f"git {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def git_dvc_project(folder: Path, params: dict, remote: Path | None = None) -> Path:
    """The project with ``params``, as a git repository with DVC initialised and one commit;
    with ``remote``, that directory is the default DVC remote in the committed .dvc/config."""
    project_copy(folder, params)
    git(folder, "init", "-q", "-b", "main")
    dvc(folder, "init", "-q")
    if remote is not None:
        dvc(folder, "remote", "add", "-d", "shared", str(remote))
    git(folder, "add", "-A")
    git(folder, "commit", "-q", "-m", "project")
    return folder


def _origin(tmp_path: Path, params: dict) -> Path:
    """A bare origin holding the project, with the DVC remote in its committed .dvc/config."""
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin))
    seed = git_dvc_project(tmp_path / "seed", params, remote=tmp_path / "dvc-remote")
    git(seed, "push", "-q", str(origin), "main")
    return origin


def _clone(origin: Path, folder: Path) -> Path:
    git(origin.parent, "clone", "-q", str(origin), str(folder))
    return folder


def _ran(log: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", log))


def _restored(log: str) -> set[str]:
    return set(re.findall(r"Stage '([^']+)' is cached - skipping run", log))


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def two_method_params() -> dict:
    """The reduced configuration cut to two methods (a shallow and a deep one), one protocol, one
    seed and one ablation: every kind of stage, in a few minutes."""
    params = reduced_params()
    params["experiment"].update(methods=["itq", "usdh"], protocols=["retrieval"], seeds=[0])
    params["ablations"].update(
        variants={
            "no_rotation": {"method": "usdh", "params": {"loss": {"rotation": {"weight": 0.0}}}}
        }
    )
    params["classification"].update(methods=["itq"])
    params["calibration"].update(methods=["itq"])
    return params


@pytest.mark.slow
@pytest.mark.skipif(not OXFORD.exists(), reason="needs ../shared/data/oxford17-256.tar.gz")
def test_machine_b_reruns_none_of_machine_a_stages(tmp_path):
    origin = _origin(tmp_path, two_method_params())
    a = _clone(origin, tmp_path / "a")
    b = _clone(origin, tmp_path / "b")
    c = _clone(origin, tmp_path / "c")  # a parallel branch: never pulls A's commit

    # machine A: USDH's part of the grid (and what it needs upstream)
    part = ("fit@usdh-retrieval", "evaluate@usdh-retrieval")
    mine = _ran(dvc(a, "repro", *part))
    assert set(part) <= mine and "fit@itq-retrieval" not in mine
    dvc(a, "push", "--run-cache")
    git(a, "add", "-A")
    git(a, "commit", "-q", "-m", "grid: usdh")
    git(a, "push", "-q", "origin", "main")

    # machine B: pull A's commit and data, then the whole grid
    git(b, "pull", "-q", "origin", "main")
    dvc(b, "fetch", "--run-cache")
    log_b = dvc(b, "repro", "--pull")
    assert not mine & _ran(log_b), log_b
    assert {"fit@itq-retrieval", "evaluate@itq-retrieval", "report"} <= _ran(log_b)
    assert "Running stage" not in dvc(b, "repro")

    # machine C, without A's dvc.lock: the run-cache restores every A stage whose outputs DVC
    # caches (DVC does not push the run-cache copies of `cache: false` outputs, the metrics and
    # plots, so evaluate@ stages come back through git, as on B)
    # (the check stage's record is such an output too: C reruns the check, which writes the same
    # bytes, and every stage below it is restored)
    dvc(c, "fetch", "--run-cache")
    cached_only = {s for s in mine if not s.startswith("evaluate@") and s != "check"}
    log_c = dvc(c, "repro", "--pull", *sorted(cached_only))
    assert _restored(log_c) == cached_only and _ran(log_c) <= {"check"}, log_c

    # A alone finishes the grid: the single-machine run B must agree with, byte for byte
    dvc(a, "repro")
    # (but for the stages' timing records, metrics/timings/: wall times of two runs)
    timings = [k for k in _tree(a / "metrics") if k.startswith("timings/")]
    assert timings and set(timings) == {k for k in _tree(b / "metrics") if k.startswith("timings/")}
    untimed = {k: v for k, v in _tree(a / "metrics").items() if not k.startswith("timings/")}
    assert {
        k: v for k, v in _tree(b / "metrics").items() if not k.startswith("timings/")
    } == untimed
    # the report's results agree too, but for the wall-clock columns of the stages B ran itself
    clock = ["fit_seconds", "codes_per_s"]
    res_a, res_b = (pd.read_csv(m / "reports" / "results.csv") for m in (a, b))
    pd.testing.assert_frame_equal(res_a.drop(columns=clock), res_b.drop(columns=clock))
