"""Two queued experiments run one at a time or two at once: `dvc queue start -j 1` against `-j 2`.

Issue 16 asks that running two experiments at once (`dvc exp run --queue`, then `dvc queue start
-j 2`) on the reduced configuration gives the same metrics as running them one after the other,
and is not slower. Each run is a fresh git + DVC project (the reduced Oxford-17 configuration of
tests/test_remote.py: ITQ and USDH, one protocol, seed 0, with torch's default thread count, the
case users run) with two experiments queued that share no stage: input size 32 and 48 px, so
everything from the features on differs. The wall time is from `dvc queue start` until the queue
is empty; the benchmark times `-j 2` and records the serial `-j 1` run it makes first in
``serial_seconds``, whose metrics `-j 2` must equal byte for byte.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_pipeline import OXFORD, dvc
from tests.test_remote import git, git_dvc_project, two_method_params

SIZES = (32, 48)


def _project(folder: Path) -> Path:
    params = two_method_params()
    params["features"]["threads"] = None  # torch's default thread count
    params["methods"]["usdh"]["threads"] = None
    git_dvc_project(folder, params)
    # as in a clone of this repository, the stages' timing records' folder is committed: a queued
    # experiment runs in a copy of the committed tree, and the report stage depends on it (its
    # stages still write their records to the workspace the queue started from, $DVC_ROOT:
    # docs/reliability.md, "Known limits")
    (folder / "metrics" / "timings").mkdir(parents=True)
    (folder / "metrics" / "timings" / ".gitkeep").write_text("")
    git(folder, "add", "-A")
    git(folder, "commit", "-q", "-m", "timing records")
    for size in SIZES:
        dvc(folder, "exp", "run", "--queue", "-n", f"px{size}", "-S", f"features.input_size={size}")
    return folder


def _start_queue(folder: Path, jobs: int) -> None:
    """`dvc queue start`, its output to a file, not a pipe: the queue's daemon and workers keep
    the starting command's output open for as long as they live, so reading it through a pipe
    (as `dvc()` does) waits for the workers to exit, which they need not do (a CI run hung here
    for 15 min with both experiments done)."""
    log = folder / ".queue-start.log"
    with open(log, "w") as out:
        done = subprocess.run(
            [sys.executable, "-m", "dvc", "queue", "start", "-j", str(jobs)],
            cwd=folder,
            env=dict(
                os.environ,
                TQDM_DISABLE="1",
                PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            ),
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    assert done.returncode == 0, f"dvc queue start failed:\n{log.read_text()}"


def _run_queue(folder: Path, jobs: int) -> float:
    start = time.perf_counter()
    _start_queue(folder, jobs)
    while True:
        time.sleep(1.0)
        status = dvc(folder, "queue", "status")
        if "Running" not in status and "Queued" not in status:
            break
    assert status.count("Success") == len(SIZES), status
    return time.perf_counter() - start


def _metrics(folder: Path) -> dict[int, dict[str, bytes]]:
    out = {}
    for size in SIZES:
        dvc(folder, "exp", "apply", f"px{size}")
        metrics = folder / "metrics"
        out[size] = {  # the stages' timing records (metrics/timings/) are wall times, not metrics
            str(p.relative_to(metrics)): p.read_bytes()
            for p in metrics.rglob("*.json")
            if p.relative_to(metrics).parts[0] != "timings"
        }
    return out


@pytest.mark.skipif(not OXFORD.exists(), reason="needs ../shared/data/oxford17-256.tar.gz")
def test_queue_two_at_once(benchmark, tmp_path):
    """The timed run is ``-j 2``; the serial run beside it, in the same test, is both the speed
    reference and the metrics two at once must reproduce byte for byte."""
    benchmark.group = "queue"
    serial = _project(tmp_path / "j1")
    serial_s = _run_queue(serial, 1)
    expected = _metrics(serial)
    shutil.rmtree(serial, ignore_errors=True)  # a lingering queue worker may still write there
    assert all(expected[size] for size in SIZES)

    folder = _project(tmp_path / "j2")
    benchmark.pedantic(_run_queue, (folder, 2), rounds=1, iterations=1)
    assert _metrics(folder) == expected  # two at once change no metric
    shutil.rmtree(folder, ignore_errors=True)
    benchmark.extra_info.update(
        {"jobs": 2, "experiments": len(SIZES), "serial_seconds": round(serial_s, 1)}
    )
