"""How usdh makes OpenMP's idle workers wait (usdh/_omp.py): libgomp's short "throttled" spins
while other processes crowd the CPU, its defaults otherwise, never against a user's setting."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable

import pytest

from usdh import _omp

LINUX = _omp.can_watch()
needs_proc = pytest.mark.skipif(not LINUX, reason="reads Linux's /proc")


def _busy(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.kill()
        proc.wait()


def _wait_for(condition, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_one_competitor_crowds_a_cpu_our_threads_fill():
    cpus = _omp._cpus()
    assert not _omp.overfilled(0, {})
    assert _omp.overfilled(1, {})
    # with fewer threads of ours, the others may have the rest
    assert not _omp.overfilled(cpus - 1, {"OMP_NUM_THREADS": "1"})
    assert _omp.overfilled(cpus, {"OMP_NUM_THREADS": "1"})


@pytest.mark.parametrize("env", [{"GOMP_SPINCOUNT": "300000"}, {"OMP_WAIT_POLICY": "PASSIVE"}])
def test_a_users_own_waiting_setting_starts_no_watch(env):
    assert _omp.watch(env) is None


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


@needs_proc
def test_teams_are_held_in_every_loaded_libgomp_while_crowded_and_let_go_after():
    import torch

    torch.ones(1 << 20).add_(1)  # loads torch's libgomp and starts its pool
    libraries = _omp.gomp_libraries()
    assert libraries, "torch runs on GNU OpenMP here"
    before = _threads()
    watcher = _omp.Watcher(patience=2)
    assert watcher.poll(others=0) is False
    assert watcher.poll(others=5) is False  # one crowded look is not enough
    assert watcher.poll(others=0) is False
    assert watcher.poll(others=5) is False
    assert watcher.poll(others=5) is True  # two in a row are
    assert watcher.held == libraries
    # per library: the helper thread and the cpus OpenMP threads it adds, all asleep
    assert _threads() == before + len(libraries) * (_omp._cpus() + 1)
    assert watcher.poll(others=0) is True
    assert watcher.poll(others=0) is False
    assert watcher.held == [] and _wait_for(lambda: _threads() == before)
    assert watcher.switches == 2


@needs_proc
def test_the_first_look_decides_at_once():
    watcher = _omp.Watcher(patience=3)
    try:
        assert watcher.poll(others=5) is (len(_omp.gomp_libraries()) > 0)
        assert watcher.crowded
    finally:
        watcher.stop()
    assert watcher.held == [] and not watcher.crowded


_SPIN_CPU = textwrap.dedent(
    """
    import json, time
    import torch
    from usdh import _omp

    torch.set_num_threads(2)
    x = torch.zeros(1 << 20)

    def idle_cpu_s():
        # short parallel regions with pauses: the workers' CPU time is mostly their waiting
        t0 = time.process_time()
        for _ in range(40):
            x.add_(1)
            time.sleep(0.02)
        return time.process_time() - t0

    idle_cpu_s()
    watcher = _omp.Watcher()
    default = idle_cpu_s()
    watcher.poll(others=5)
    held = idle_cpu_s()
    watcher.stop()
    print(json.dumps({"default": default, "held": held, "after": idle_cpu_s()}))
    """
)


@needs_proc
@pytest.mark.skipif(_omp._cpus() < 2, reason="one CPU: no OpenMP team to wait")
def test_held_teams_cut_the_idle_workers_spinning_in_torch():
    """The effect itself, in CPU time rather than speed: after each of 40 short parallel regions
    the default spins keep a worker busy for milliseconds; the throttled spins barely at all."""
    out = subprocess.run(
        [sys.executable, "-c", _SPIN_CPU],
        env=_omp.without_waiting(),
        capture_output=True,
        text=True,
        check=True,
    )
    cpu = json.loads(out.stdout.strip().splitlines()[-1])
    assert cpu["held"] < cpu["default"] / 3, cpu
    assert cpu["after"] > 2 * cpu["held"], cpu  # the default is back once the teams are let go


@needs_proc
def test_a_competitor_that_starts_later_is_seen_and_its_end_too():
    watcher = _omp.Watcher(interval_s=0.1).start()
    busy = _busy(_omp._cpus())  # one busy thread per CPU: crowded on any machine
    try:
        assert _wait_for(lambda: watcher.crowded), "the busy processes were not seen"
    finally:
        _stop(busy)
    try:
        assert _wait_for(lambda: not watcher.crowded), "their end was not seen"
    finally:
        watcher.stop()


@needs_proc
def test_a_stage_started_beside_a_busy_process_holds_short_spins_from_the_start():
    child = textwrap.dedent(
        """
        import json, time
        from usdh import _omp
        watcher = _omp.watch()
        time.sleep(0.3)
        print(json.dumps(None if watcher is None else watcher.crowded))
        """
    )
    busy = _busy(_omp._cpus())
    try:
        time.sleep(0.5)
        run = [sys.executable, "-c", child]
        got = subprocess.run(run, env=_omp.without_waiting(), capture_output=True, text=True)
        assert json.loads(got.stdout) is True, got.stderr
        users = _omp.without_waiting() | {"GOMP_SPINCOUNT": "300000"}
        got = subprocess.run(run, env=users, capture_output=True, text=True)
        assert json.loads(got.stdout) is None, got.stderr  # the user's own, even beside a busy CPU
    finally:
        _stop(busy)


def test_every_stage_starts_the_watch(monkeypatch, tmp_path):
    from usdh import cli

    started = []
    monkeypatch.setattr(cli, "watch", lambda: started.append(True))
    missing = tmp_path / "missing.yaml"
    assert cli.main(["--params", str(missing), "prepare", "cifar10"]) == 2
    assert started == [True]


def _hash_threads(n: int, block_bytes: int = 1 << 20, pause_s: float = 0.0) -> Callable[[], None]:
    """Start ``n`` threads of ours that hash (releasing the GIL: runnable) and, with ``pause_s``,
    sleep between blocks; returns the function that stops and joins them."""
    stop = threading.Event()
    block = b"x" * block_bytes

    def hash_until_stopped() -> None:
        while not stop.is_set():
            hashlib.sha256(block).digest()
            if pause_s:
                time.sleep(pause_s)

    workers = [threading.Thread(target=hash_until_stopped) for _ in range(n)]
    for worker in workers:
        worker.start()

    def stop_all() -> None:
        stop.set()
        for worker in workers:
            worker.join()

    return stop_all


@needs_proc
def test_the_process_own_running_threads_are_not_taken_for_competitors():
    """numpy or torch run threads of their own; they run for us, not against us."""
    cpus = _omp._cpus()
    stop = _hash_threads(cpus)
    try:
        time.sleep(0.2)
        # counted as others, our own cpus hashing threads alone would fill the CPU
        assert _omp.other_runnable() < cpus
    finally:
        stop()


_THREADED_COMPETITOR = textwrap.dedent(
    """
    import hashlib, sys, threading, time
    block = b"x" * (1 << 20)

    def spin():
        while True:
            hashlib.sha256(block).digest()

    for _ in range(int(sys.argv[1])):
        threading.Thread(target=spin, daemon=True).start()
    print("ready", flush=True)
    time.sleep(60)  # the main thread sleeps: the process's own state reads "S"
    """
)


@needs_proc
def test_every_running_thread_of_a_competitor_counts_not_its_main_thread_state():
    """A competitor whose main thread sleeps while its workers run (torch, faiss) is busy all
    the same: the count is by thread, from /proc/<pid>/task, not by process."""
    quiet = _omp.other_runnable()
    proc = subprocess.Popen(
        [sys.executable, "-c", _THREADED_COMPETITOR, "2"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.2)
        with open(f"/proc/{proc.pid}/stat") as f:
            assert f.read().rsplit(")", 1)[1].split()[0] == "S"  # the main thread sleeps
        assert _omp.other_runnable() >= quiet + 2
    finally:
        _stop([proc])
    assert _wait_for(lambda: _omp.other_runnable() <= quiet)


@needs_proc
def test_a_busy_competitor_is_never_taken_for_gone_while_our_threads_come_and_go():
    """With the short spins on, our OpenMP workers sleep and wake many times a millisecond. A
    count made as the kernel's runnable total less our own, read a moment apart, then took a
    busy competitor for gone (7 switches in a 15 s head fit); the direct count never may."""
    cpus = _omp._cpus()
    busy = _busy(cpus)
    # each runs for a few microseconds without the GIL, then sleeps a moment, as a throttled
    # OpenMP worker does
    stop = _hash_threads(cpus, block_bytes=1 << 14, pause_s=0.0001)
    try:
        time.sleep(0.3)
        seen = [_omp.other_runnable(samples=1) for _ in range(300)]
    finally:
        stop()
        _stop(busy)
    assert min(seen) >= cpus, f"fewest seen {min(seen)}, {sum(n < cpus for n in seen)} of 300 low"


@needs_proc
def test_a_runtime_without_gomp_parallel_is_skipped_with_a_warning(monkeypatch, caplog):
    """A file that looks like libgomp but is not one must neither hang nor stop the watch."""
    import ctypes.util

    libc = ctypes.util.find_library("c")
    assert libc
    real = _omp.gomp_libraries()
    monkeypatch.setattr(_omp, "gomp_libraries", lambda: sorted([libc, *real]))
    watcher = _omp.Watcher()
    try:
        with caplog.at_level("WARNING", logger="usdh._omp"):
            watcher.poll(others=5)
            watcher.poll(others=5)  # tried once, not at every look
        assert watcher.held == real
        # (this thread's records: a watcher another test's in-process CLI call started polls
        # in its own thread, and may meet the same patched list)
        here = threading.get_ident()
        assert sum(libc in r.getMessage() for r in caplog.records if r.thread == here) == 1
    finally:
        watcher.stop()
