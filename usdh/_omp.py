"""How OpenMP's idle worker threads wait, chosen before torch or numba load their runtime.

Torch (with MKL and oneDNN) and numba's ``omp`` layer run on GNU OpenMP, whose idle workers spin
300,000 times before they sleep. On a shared CPU that spinning takes the core another process
needs, and a features stage ran 28x slower beside a second one (issue 16; docs/load.md). The
thread count would cure it too, but results depend on it; how workers wait does not change a
single result, so only that is set here, once, when ``usdh`` is imported:

- ``SPIN_IDLE`` spins when the CPU has room for our threads: libgomp's own default, so a process
  that runs alone runs exactly as it would without usdh (shorter spins cost features up to 11%
  alone, docs/load.md);
- ``SPIN_BUSY`` spins when other runnable threads already fill it: workers soon sleep and leave the
  core to the other process.

The measurements behind both numbers, and what no single number achieves, are in docs/load.md.
A user's own ``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY`` is never overridden. The choice is made
when the process starts; a competitor that starts later is not seen.
"""

from __future__ import annotations

import os
import time
from collections.abc import MutableMapping

SPIN_IDLE = 300_000  # libgomp's default when OMP_WAIT_POLICY is unset
SPIN_BUSY = 1_000
MARK = "USDH_GOMP_SPINCOUNT"  # says the GOMP_SPINCOUNT beside it is ours, so a child re-chooses
WAITING = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", MARK)  # every variable that decides the waiting


def without_waiting(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``environ`` (default ``os.environ``) with no waiting setting, so a child process
    chooses its own, as a freshly started stage would."""
    env = os.environ if environ is None else environ
    return {k: v for k, v in env.items() if k not in WAITING}


def _own_running() -> int:
    """This process's threads that are running or runnable now (the reader among them): numpy's
    or torch's threads started before usdh was imported are ours, not a competitor's."""
    running = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 1
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/stat", encoding="ascii", errors="replace") as f:
                stat = f.read()
        except OSError:  # the thread ended between listing and reading
            continue
        state = stat[stat.rfind(")") + 2 : stat.rfind(")") + 3]  # the name may hold spaces
        running += state == "R"
    return max(running, 1)


def other_runnable(samples: int = 5, interval_s: float = 0.002) -> int | None:
    """Runnable threads of other processes: the fewest seen over a few reads of the kernel's
    ``procs_running`` less this process's own running threads, so a thread that runs for a moment
    is not taken for a competitor. ``None`` where ``/proc/stat`` does not exist (not Linux)."""
    seen = []
    for i in range(samples):
        try:
            with open("/proc/stat", encoding="ascii") as f:
                line = next(row for row in f if row.startswith("procs_running"))
        except (OSError, StopIteration):
            return None
        seen.append(int(line.split()[1]) - _own_running())
        if i + 1 < samples:
            time.sleep(interval_s)
    return max(0, min(seen))


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def choose_spin_count(
    environ: MutableMapping[str, str] | None = None, others: int | None = None
) -> int | None:
    """Set ``GOMP_SPINCOUNT`` in ``environ`` (default ``os.environ``) and return it, or return
    ``None`` where the user set their own waiting. ``others`` overrides the measured number of
    other runnable threads."""
    env = os.environ if environ is None else environ
    own = env.get("GOMP_SPINCOUNT")
    if "OMP_WAIT_POLICY" in env or (own is not None and env.get(MARK) != own):
        return None
    if others is None:
        others = other_runnable() or 0
    cpus = _cpus()
    try:
        threads = int(env.get("OMP_NUM_THREADS", cpus))
    except ValueError:
        threads = cpus
    spins = SPIN_BUSY if others + threads > cpus else SPIN_IDLE
    env["GOMP_SPINCOUNT"] = env[MARK] = str(spins)
    return spins
