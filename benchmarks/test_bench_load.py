"""Throughput alone and while one other CPU-bound process runs, for OpenMP's waiting settings.

Torch (and MKL and oneDNN inside it) run their parallel regions on GNU OpenMP worker threads,
which by default spin for a while at the end of each region instead of sleeping. When another
process holds one of the two cores, a spinning worker burns the core its partner needs and every
region waits for the scheduler: the collapse issue 16 measured (28x for a features stage beside
another one). What a waiting setting costs alone and saves under load is measured here, for the
three CPU-heavy kinds of work of the pipeline:

- ``features``: EfficientNet-Lite0 at 160 px (random weights: the speed is the same), batch 8;
- ``fit``: USDH's head fit with the pipeline's settings (one epoch, no rotation term) on 5,000
  rows of 1280-d features;
- ``evaluate``: every retrieval metric of 1,000 queries against 50,000 64-bit codes (numba).

Each measurement runs in a fresh child process (the OpenMP runtime reads its settings once, when
it loads) for a fixed time after a warm-up and reports units per second (``extra_info``). The
competitor is a single-threaded busy loop: ``load="busy"`` starts it before the child, so the
child sees it from the start; ``load="late"`` starts it once the child has warmed up and begins
to measure, the case a choice made at start-up misses. The thread count is never changed, since
results depend on it (docs/reliability.md); only how idle workers wait. ``default``,
``spin-1000`` and ``passive`` are fixed settings; ``usdh`` is what every stage does
(``usdh/_omp.py``): a watcher thread that holds libgomp in its short "throttled" spins while the
CPU is crowded, and the share of the measurement it held them is kept in ``extra_info``. In
short mode (``--benchmark-disable``, what CI runs) each child measures for half a second.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest

from tests.test_omp import _busy, _stop
from usdh import _omp

SETTINGS = {
    "default": {"GOMP_SPINCOUNT": "300000"},  # libgomp's own (usdh leaves a user's setting alone)
    "spin-1000": {"GOMP_SPINCOUNT": "1000"},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "usdh": {},  # what every stage does: usdh/_omp.py's watcher
}
WORKLOADS = ("features", "fit", "evaluate")
UNITS = {"features": "images_per_s", "fit": "codes_per_s", "evaluate": "queries_per_s"}

_CHILD = textwrap.dedent(
    """
    import json, sys, threading, time
    import numpy as np
    from usdh import _omp

    kind, seconds = sys.argv[1], float(sys.argv[2])
    watcher = _omp.watch()  # as usdh.cli.main does; None where a fixed setting is given
    rng = np.random.default_rng(0)
    if kind == "features":
        from usdh.backbones import build_backbone
        from usdh.features import ArrayImages, extract_features

        model = build_backbone("efficientnet_lite0", "random", input_size=160, progress=False)
        images = ArrayImages(rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8))

        def step():
            extract_features(images, model, 160, batch_size=8, device="cpu", progress=False)
            return 16
    elif kind == "fit":
        from pathlib import Path

        import yaml
        from usdh.registry import methods

        params = yaml.safe_load(Path("params.yaml").read_text())["methods"]["usdh"]
        params.update(epochs=1, progress=False)
        params["loss"]["rotation"]["weight"] = 0.0  # no rotated views in this setting
        x = np.maximum(rng.normal(size=(5000, 1280)), 0).astype(np.float32)
        cls = methods()["usdh"].load()

        def step():
            cls(n_bits=32, random_state=0, **params).fit(x)
            return 5000
    else:
        from usdh.metrics import evaluate_retrieval

        q = np.packbits(rng.integers(0, 2, (1000, 64)), axis=1)
        db = np.packbits(rng.integers(0, 2, (50000, 64)), axis=1)
        ql, dl = rng.integers(0, 10, 1000), rng.integers(0, 10, 50000)

        def step():
            evaluate_retrieval(q, db, ql, dl, topk=1000)
            return 1000
    step()  # warm-up: compiled kernels, allocator, first-touch
    print("ready", flush=True)
    sys.stdin.readline()  # the parent starts a late competitor first
    held, measuring = [], threading.Event()
    measuring.set()

    def sample_watcher():  # whether the short spins are on, every 0.1 s of the measurement
        while watcher is not None and measuring.is_set():
            held.append(watcher.crowded)
            time.sleep(0.1)

    threading.Thread(target=sample_watcher, daemon=True).start()
    done, t0 = 0, time.perf_counter()
    while True:
        done += step()
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            break
    measuring.clear()
    share = None if watcher is None else sum(held) / max(len(held), 1)
    print(json.dumps({"rate": done / elapsed, "held_share": share}))
    """
)


def _rate(workload: str, setting: str, load: str, seconds: float) -> dict:
    """Units per second (``rate``) and, for ``usdh``, the share of the measurement during which
    the watcher held the short spins (``held_share``)."""
    # the parent's own waiting setting must not leak into the child
    env = _omp.without_waiting() | SETTINGS[setting]
    busy = _busy(1) if load == "busy" else []
    if busy:
        time.sleep(0.5)
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, workload, str(seconds)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        if load == "late":
            busy = _busy(1)
        out, _ = child.communicate("go\n")
        assert child.returncode == 0, f"the {workload} child failed"
    finally:
        if child.poll() is None:
            child.kill()
        _stop(busy)
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("load", ["alone", "busy", "late"])
@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("workload", WORKLOADS)
def test_throughput_under_load(benchmark, request, workload, setting, load):
    benchmark.group = f"load-{workload}"
    seconds = 0.5 if request.config.getoption("benchmark_disable", False) else 10.0
    got = benchmark.pedantic(_rate, (workload, setting, load, seconds), rounds=1, iterations=1)
    assert got["rate"] > 0
    assert (got["held_share"] is None) == (setting != "usdh")
    if setting == "usdh" and load != "alone" and seconds >= 5:
        assert got["held_share"] > 0.5, "the watcher missed the busy loop most of the time"
    benchmark.extra_info.update(
        {
            "setting": setting,
            "load": load,
            "held_share": got["held_share"],
            UNITS[workload]: round(got["rate"], 1),
        }
    )
