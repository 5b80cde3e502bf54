"""The OpenMP waiting setting usdh chooses at import (usdh/_omp.py): never a user's, re-chosen by
every process from the load it sees, short spins beside a real competitor."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time

import pytest

from usdh import _omp


def test_room_on_the_cpu_gets_the_longer_spin_and_a_full_cpu_the_shorter():
    env: dict[str, str] = {}
    assert _omp.choose_spin_count(env, others=0) == _omp.SPIN_IDLE
    assert env["GOMP_SPINCOUNT"] == str(_omp.SPIN_IDLE)
    assert _omp.choose_spin_count(env, others=1) == _omp.SPIN_BUSY  # ours: chosen again
    assert env["GOMP_SPINCOUNT"] == env[_omp.MARK] == str(_omp.SPIN_BUSY)


def test_fewer_threads_than_cpus_leave_room_for_others():
    cpus = _omp._cpus()
    env = {"OMP_NUM_THREADS": "1"}
    expected = _omp.SPIN_IDLE if cpus >= 2 else _omp.SPIN_BUSY
    assert _omp.choose_spin_count(env, others=cpus - 1) == expected
    assert _omp.choose_spin_count(env, others=cpus) == _omp.SPIN_BUSY


@pytest.mark.parametrize(
    "env",
    [
        {"GOMP_SPINCOUNT": "300000"},
        {"OMP_WAIT_POLICY": "PASSIVE"},
        {"GOMP_SPINCOUNT": "1000", _omp.MARK: "10000"},  # changed after usdh set it: the user's
    ],
)
def test_a_users_own_waiting_setting_is_never_overridden(env):
    before = dict(env)
    assert _omp.choose_spin_count(env, others=5) is None
    assert env == before


def _child_choice(env: dict[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "-c", "import os, usdh; print(os.environ['GOMP_SPINCOUNT'])"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


@pytest.mark.skipif(_omp.other_runnable() is None, reason="reads Linux's /proc/stat")
def test_a_process_started_beside_a_busy_one_chooses_short_spins():
    # the parent's own choice travels in the environment; the child must choose again
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["GOMP_SPINCOUNT"] = env[_omp.MARK] = str(_omp.SPIN_IDLE)
    # one busy thread per CPU: whatever the machine, ours no longer fit
    busy = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(_omp._cpus())
    ]
    try:
        time.sleep(0.5)
        assert _omp.other_runnable() >= 1
        assert _child_choice(env) == str(_omp.SPIN_BUSY)
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
    env["GOMP_SPINCOUNT"] = "300000"  # the user's own, even beside a busy CPU
    assert _child_choice(env) == "300000"


def test_the_process_own_running_threads_are_not_taken_for_competitors():
    """numpy or torch may start threads before usdh is imported; they run for us, not against us."""
    cpus = _omp._cpus()
    stop = threading.Event()
    block = b"x" * (1 << 20)

    def hash_until_stopped() -> None:
        while not stop.is_set():
            hashlib.sha256(block).digest()  # releases the GIL: the thread stays runnable

    workers = [threading.Thread(target=hash_until_stopped) for _ in range(cpus)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(0.2)
        assert _omp._own_running() >= 2  # the reader and at least one hashing thread
        # counted as others, our own cpus hashing threads alone would fill the CPU
        assert _omp.other_runnable() < cpus
    finally:
        stop.set()
        for worker in workers:
            worker.join()


def test_usdh_is_imported_before_torch_in_every_stage_entry_point():
    """The setting only works if usdh's __init__ runs before torch loads libgomp: the CLI is
    ``python -m usdh``, so usdh/__init__.py runs first; this checks it sets the variable there."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, usdh, os; print('torch' in sys.modules, 'GOMP_SPINCOUNT' in os.environ)",
        ],
        env=_omp.without_waiting(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == ["False", "True"]
