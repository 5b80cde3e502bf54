"""The committed results are the committed code's: dvc.lock agrees with the checkout.

``dvc status`` compares every stage's dependencies with what dvc.lock recorded when the stage last
ran. Data (features, models, codes) is not in git and is absent from a fresh clone, so only what
git tracks is held to it: code and params.yaml (a change means the committed results came from
other code or settings), the command, and the committed metrics and reports (an output that
differs from its lock entry was not written by the locked run). This needs no data, so CI runs it
on every submission. The fix is always the same: ``dvc repro``, then commit code and outputs
together (README, "Development").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tracked_paths() -> set[str]:
    """Every file git tracks, and every folder above one."""
    out = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    paths = set(out)
    for f in out:
        parts = Path(f).parts
        paths.update("/".join(parts[:i]) for i in range(1, len(parts)))
    return paths


def stale_stages(status: dict, tracked: set[str]) -> dict[str, list[str]]:
    """Stage -> why its locked run does not match the checkout (code, params, command, committed
    outputs); changes of untracked data (absent in a fresh clone) are not counted."""
    stale: dict[str, list[str]] = {}
    for stage, entries in status.items():
        reasons = []
        for entry in entries:
            if isinstance(entry, str):  # "changed command", "always changed", ...
                reasons.append(entry)
                continue
            for kind in ("changed deps", "changed outs"):
                for path, what in (entry.get(kind) or {}).items():
                    if isinstance(what, dict):  # params.yaml: {key: "modified"}
                        reasons += [f"param {key} {change}" for key, change in what.items()]
                    elif path in tracked or (what == "new" and kind == "changed deps"):
                        reasons.append(f"{path} {what}")
        if reasons:
            stale[stage] = reasons
    return stale


def test_stale_stages_reads_dvc_status():
    status = {
        "features@cifar10": [{"changed deps": {"data/prepared/cifar10": "deleted"}}],
        "fit@itq-16-0": [
            {"changed deps": {"usdh/hasher.py": "modified", "data/features/cifar10": "deleted"}},
            {"changed outs": {"models/retrieval/cifar10/deepbit/itq/16/0": "not in cache"}},
        ],
        "evaluate@itq-16-0": [
            {"changed deps": {"params.yaml": {"evaluation.radius": "modified"}}},
            {"changed outs": {"metrics/x/0.json": "modified"}},
        ],
        "report": ["changed command"],
    }
    tracked = {"usdh/hasher.py", "metrics/x/0.json"}
    assert stale_stages(status, tracked) == {
        "fit@itq-16-0": ["usdh/hasher.py modified"],
        "evaluate@itq-16-0": ["param evaluation.radius modified", "metrics/x/0.json modified"],
        "report": ["changed command"],
    }


def test_dvc_lock_matches_the_committed_code_and_params():
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    out = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    stale = stale_stages(json.loads(out.stdout or "{}"), tracked_paths())
    lines = [f"  {stage}: {', '.join(why[:4])}" for stage, why in sorted(stale.items())]
    assert not stale, (
        f"dvc.lock does not match the checkout for {len(stale)} stage(s): the committed results "
        f"were made by other code or params. Run `dvc repro` (or `dvc repro "
        f"{' '.join(sorted(stale)[:3])} ...`) and commit the code with dvc.lock, metrics/ and "
        f"reports/.\n" + "\n".join(lines[:30])
    )
