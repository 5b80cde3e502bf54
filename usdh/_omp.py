"""Short OpenMP spins while another process shares the CPU, libgomp's own defaults otherwise.

Torch (with MKL and oneDNN) and numba's ``omp`` layer run on GNU OpenMP, whose idle workers spin
300,000 times before they sleep. On a shared CPU that spinning takes the core another process
needs: a features stage ran 28x slower beside a second one (issue 16; docs/load.md). The thread
count would cure it too, but results depend on it; how workers wait changes no result, and
libgomp has a second way to wait built in: while it manages more threads than there are CPUs it
spins only 100 times (its "throttled" count; GCC's libgomp/env.c and config/linux/wait.h).

:func:`watch` starts one daemon thread that, twice a second, counts the runnable threads of the
other processes it can see in ``/proc``. While those and ours do not fit on the CPU, it holds an
idle OpenMP team of ``cpus + 1`` threads in every libgomp the process has loaded (torch bundles
its own, numba and faiss may use others). Those threads sleep, but libgomp counts them, so every
wait in that runtime spins briefly and leaves the core to the other process. When the competitor
has gone the teams are let go and the default returns. Alone nothing changes: no team is held,
and a count costs about a millisecond of CPU (a few hundred small file reads). A competitor that
starts after the process is seen within a second. A user's own ``GOMP_SPINCOUNT`` or
``OMP_WAIT_POLICY`` is never overridden: with either set, no watch starts.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)

WAITING = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")  # a user's own waiting setting: left alone


def without_waiting(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``environ`` (default ``os.environ``) with no waiting setting, so a child process
    waits as a freshly started stage would."""
    env = os.environ if environ is None else environ
    return {k: v for k, v in env.items() if k not in WAITING}


def _state(stat_file: str) -> bytes:
    """The state letter of one thread (b"R": running or runnable), b"" if it has ended."""
    try:
        fd = os.open(stat_file, os.O_RDONLY)
    except OSError:  # the thread ended between listing and reading
        return b""
    try:
        stat = os.read(fd, 4096)
    except OSError:
        return b""
    finally:
        os.close(fd)
    close = stat.rfind(b")")  # the name may hold spaces and parentheses
    return stat[close + 2 : close + 3]


def _running_elsewhere() -> int:
    """Running or runnable threads of every other process we can see, counted one by one.

    Counted directly rather than as the kernel's ``procs_running`` less our own: those two are
    read a moment apart, and with the short spins our workers sleep and wake many times a
    millisecond, so the difference took a busy competitor for gone (docs/load.md, "The third
    version"). Our own child processes (data loader workers) count as others, as they did."""
    own = str(os.getpid())
    running = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or pid == own:
            continue
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:  # the process ended, or is not ours to read
            continue
        running += sum(_state(f"/proc/{pid}/task/{tid}/stat") == b"R" for tid in tasks)
    return running


def can_watch() -> bool:
    """Whether this system shows threads' states in ``/proc`` (Linux)."""
    return os.path.isdir("/proc/self/task")


def other_runnable(samples: int = 3, interval_s: float = 0.002) -> int:
    """Runnable threads of other processes: the fewest over a few counts, so a thread that runs
    for a moment (a daemon, a kernel worker) is not taken for a competitor. A count of none
    ends the look at once: alone, a look is one count."""
    fewest = _running_elsewhere()
    for _ in range(samples - 1):
        if fewest == 0:
            break
        time.sleep(interval_s)
        fewest = min(fewest, _running_elsewhere())
    return fewest


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def overfilled(others: int, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``others`` runnable threads and our OpenMP threads (``OMP_NUM_THREADS``, else one
    per CPU) overfill the CPUs this process may use."""
    env = os.environ if environ is None else environ
    cpus = _cpus()
    try:
        threads = int(env.get("OMP_NUM_THREADS", cpus))
    except ValueError:
        threads = cpus
    return others + threads > cpus


def gomp_libraries() -> list[str]:
    """Every GNU OpenMP runtime mapped into this process, by file: each keeps its own count."""
    found = set()
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            for line in f:
                path = line.rstrip("\n").split(maxsplit=5)[-1]
                if path.startswith("/") and os.path.basename(path).startswith("libgomp"):
                    found.add(path)
    except OSError:
        return []
    return sorted(found)


class _IdleTeam:
    """An OpenMP team of ``size`` threads in one libgomp, asleep until :meth:`release`.

    A helper thread runs one empty parallel region (each thread calls ``free(NULL)``, a C no-op
    that needs no GIL); the team's threads stay in the helper's pool, asleep, and libgomp counts
    them until the helper exits, when libgomp lets the pool go."""

    def __init__(self, library: str, size: int) -> None:
        # OSError / AttributeError here: not a libgomp with GOMP_parallel (GCC 4.9 and later)
        parallel = ctypes.CDLL(library).GOMP_parallel
        parallel.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
        parallel.restype = None
        free = ctypes.cast(ctypes.CDLL(None).free, ctypes.c_void_p)
        self._done = threading.Event()
        started = threading.Event()
        failed: list[BaseException] = []

        def hold() -> None:
            try:
                parallel(free, None, size, 0)
            except BaseException as exc:  # handed to the caller below
                failed.append(exc)
                return
            finally:
                started.set()
            self._done.wait()

        self._thread = threading.Thread(target=hold, name="usdh-omp-idle-team", daemon=True)
        self._thread.start()
        started.wait()
        if failed:
            raise OSError(f"could not start an idle OpenMP team in {library}: {failed[0]}")

    def release(self) -> None:
        self._done.set()
        self._thread.join()


class Watcher:
    """Holds idle teams while the CPU is crowded (see the module's docstring).

    ``patience`` polls in a row must agree before the state changes, so a process that runs for
    a moment neither starts nor ends the short spins; the very first poll decides at once."""

    def __init__(self, interval_s: float = 0.5, patience: int = 2) -> None:
        self.interval_s = interval_s
        self.patience = patience
        self.switches = 0
        self._teams: dict[str, _IdleTeam] = {}
        self._failed: set[str] = set()  # libraries in which no team could be started
        self._crowded = False
        self._streak = 0
        self._looked = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def held(self) -> list[str]:
        """The libgomp files in which an idle team is held now."""
        return sorted(self._teams)

    @property
    def crowded(self) -> bool:
        return self._crowded

    def poll(self, others: int | None = None) -> bool:
        """One look at the other processes (``others`` overrides their count); returns whether
        teams are held."""
        if others is None:
            others = other_runnable()
        now = overfilled(others)
        first, self._looked = not self._looked, True
        self._streak = self._streak + 1 if now != self._crowded else 0
        if now != self._crowded and (first or self._streak >= self.patience):
            self._crowded, self._streak = now, 0
            self.switches += 1
            log.debug("CPU crowded: %s, so OpenMP's %s spins", now, "short" if now else "default")
        if self._crowded:
            for library in gomp_libraries():  # a runtime loaded since the last poll, too
                if library in self._teams or library in self._failed:
                    continue
                try:
                    self._teams[library] = _IdleTeam(library, _cpus() + 1)
                except (OSError, AttributeError) as exc:
                    # that runtime keeps its default spins; the stage itself is not at stake
                    self._failed.add(library)
                    log.warning("%s; its idle workers keep libgomp's default spins", exc)
        else:
            self._let_go()
        return bool(self._teams)

    def _let_go(self) -> None:
        for team in self._teams.values():
            team.release()
        self._teams.clear()

    def start(self) -> Watcher:
        def run() -> None:
            while not self._stop.is_set():
                self.poll()
                self._stop.wait(self.interval_s)

        self._thread = threading.Thread(target=run, name="usdh-omp-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching and let every team go: libgomp's defaults return."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._let_go()
        self._crowded = False


_watcher: Watcher | None = None
_lock = threading.Lock()


def watch(environ: Mapping[str, str] | None = None) -> Watcher | None:
    """Start this process's watcher once (every stage does, in ``usdh.cli.main``) and return it;
    ``None`` where the user set their own waiting or the machine has no ``/proc`` to read."""
    global _watcher
    env = os.environ if environ is None else environ
    if any(k in env for k in WAITING) or not can_watch():
        return None
    with _lock:
        if _watcher is None:
            _watcher = Watcher().start()
        return _watcher
