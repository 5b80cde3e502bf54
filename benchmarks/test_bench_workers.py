"""Two head fits at once, one torch thread each, against one at a time on every core.

This is what a fit stage would gain on the 2-core machine if it ran its (bits, seed) runs in two
worker processes. The benchmark also checks whether the thread count moves the codes
(docs/cost.md, "Two runs at once, one thread each").

Setting:
- USDH with its params.yaml settings, but 4 epochs, at 32 bits, seeds 0 and 1;
- 20,000 rows of 1280-d synthetic features, with rotated views of 2,000 of them.

Compared, each in freshly spawned processes, so that both pay one start-up:
- ``one_at_a_time``: one process with torch's default threads fits seed 0, then seed 1;
- ``two_at_once``: two processes, each pinned to one thread (``threads: 1``), fit one seed each,
  started together behind a barrier.

What the benchmark records:
- the benchmark's own time includes spawning the processes and importing torch;
- ``extra_info["fit_wall_s"]`` is the wall time of the fits alone, from the first start to the
  last end, as the workers measured it;
- ``extra_info["same_codes"]`` says whether the two seeds' codes came out bit for bit the same
  both ways.

On the project's AMD EPYC (family 25, model 17), two real stages ran 1.32x (``fit usdh``) and
1.38x (``fit cibhash``) faster two at once. Their codes were the same for every run.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from benchmarks import clustered_features, noisy_views

N, DIM, N_ROT, BITS, EPOCHS = 20_000, 1280, 2_000, 32, 4
ANGLES = (-10.0, -5.0, 5.0, 10.0)
SEEDS = (0, 1)
PARAMS = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())


def _data() -> tuple[np.ndarray, Any]:
    """The same synthetic features and rotated views in every process (seeded)."""
    from usdh.hasher import TrainingViews

    rng = np.random.default_rng(0)
    x = clustered_features(rng, N, DIM)
    rows = rng.choice(N, N_ROT, replace=False)
    return x, TrainingViews(noisy_views(rng, x, rows, len(ANGLES), 0.1), ANGLES, rows)


def _fit(seeds: tuple[int, ...], threads: int | None, barrier: Any, out: Any) -> None:
    """Fit USDH for each seed, in turn, after every worker is ready. Put ``(seed, start, end,
    codes)`` on ``out`` for each seed."""
    from usdh.registry import methods

    x, views = _data()
    params = {**PARAMS["methods"]["usdh"], "epochs": EPOCHS, "threads": threads}
    cls = methods()["usdh"].load()
    barrier.wait()
    for seed in seeds:
        start = time.time()
        hasher = cls(n_bits=BITS, random_state=seed, progress=False, **params).fit(x, views=views)
        codes = hasher.encode(x)
        out.put((seed, start, time.time(), codes.tobytes()))


def _run(jobs: list[tuple[tuple[int, ...], int | None]]) -> tuple[float, dict[int, bytes]]:
    """Spawn one process per job, all started behind one barrier. Return the wall time of the
    fits and each seed's codes."""
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(len(jobs)), ctx.Queue()
    procs = [ctx.Process(target=_fit, args=(seeds, t, barrier, out)) for seeds, t in jobs]
    for p in procs:
        p.start()
    results = [out.get(timeout=600) for _ in SEEDS]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0, f"a fitting process failed (exit code {p.exitcode})"
    wall = max(r[2] for r in results) - min(r[1] for r in results)
    return wall, {r[0]: r[3] for r in results}


@pytest.fixture(scope="module")
def codes() -> dict[str, dict[int, bytes]]:
    return {}


@pytest.mark.parametrize(
    "mode, jobs",
    [
        ("one_at_a_time", [(SEEDS, None)]),
        ("two_at_once", [((s,), 1) for s in SEEDS]),
    ],
)
def test_two_usdh_fits(benchmark, codes, mode, jobs):
    benchmark.group = "two-fits-20k-32b"
    wall, got = benchmark.pedantic(lambda: _run(jobs), rounds=1, iterations=1)
    assert sorted(got) == list(SEEDS)
    assert all(len(c) == N * BITS // 8 for c in got.values())
    codes[mode] = got
    benchmark.extra_info.update(fit_wall_s=round(wall, 2), epochs=EPOCHS, rows=N, mode=mode)
    if len(codes) == 2:
        same = codes["one_at_a_time"] == codes["two_at_once"]
        benchmark.extra_info["same_codes"] = same
