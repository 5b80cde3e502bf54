"""What every result records about how it was made: versions, machine, device, code revision."""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

_PACKAGES = ("numpy", "scipy", "scikit-learn", "numba", "torch", "torchvision", "faiss-cpu")


def package_versions(extra: tuple[str, ...] = ()) -> dict[str, str | None]:
    """Installed versions of the packages that can change a number (None: not installed)."""
    out: dict[str, str | None] = {}
    for name in (*_PACKAGES, *extra):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_revision(root: str | os.PathLike[str] | None = None) -> str | None:
    """The commit the code ran from, with '+dirty' when tracked files differ (None outside git)."""
    cwd = Path(root) if root else Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return rev + ("+dirty" if dirty else "")


#: instruction sets that change which kernels torch, oneDNN and the BLAS run, so the numbers
_CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's block of /proc/cpuinfo (read once per process: every record asks)."""
    cpu: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "vendor_id", "cpu family", "model", "stepping", "flags"):
                    cpu.setdefault(key, value.strip())
                if not line.strip() and cpu:
                    break  # the first processor's block is enough
    except OSError:
        pass
    return cpu


def machine() -> dict[str, Any]:
    """The processor and the cores this process may use: what decides which kernels run (results
    are bitwise repeatable on one CPU model with the same software, not across models)."""
    cpu = _cpuinfo()
    flags = set(cpu.get("flags", "").split())
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {
        "cpu": cpu.get("model name") or platform.processor() or platform.machine(),
        "vendor": cpu.get("vendor_id"),
        "family": cpu.get("cpu family"),
        "model": cpu.get("model"),
        "stepping": cpu.get("stepping"),
        "isa": [f for f in _CPU_FLAGS if f in flags],
        "cores": usable,
        "os": platform.platform(),
    }


#: the lines of ``torch.__config__.show()`` that name the math libraries torch was built with
_TORCH_BUILD_KEYS = ("Math Kernel", "MKL-DNN", "oneDNN", "OpenMP", "LAPACK", "BLAS")


def libraries() -> dict[str, Any]:
    """The math libraries this process has loaded and the threads they use (BLAS, OpenMP; torch's
    oneDNN and MKL builds and the CPU capability its kernels dispatch to, if torch is loaded):
    with the processor, what decides which kernels compute a number. No file paths, so two
    clones in different folders record the same. Torch is never imported here, so the torch-free
    stages stay so (their records then have no ``torch`` entry)."""
    out: dict[str, Any] = {}
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover - a dependency of scikit-learn
        out["threadpools"] = None
    else:
        pools = [{k: v for k, v in p.items() if k != "filepath"} for p in threadpool_info()]
        # a total order: threadpoolctl lists two copies of one library (numpy's and scipy's
        # OpenBLAS) in the order this process happened to load them
        out["threadpools"] = sorted(pools, key=lambda p: json.dumps(p, sort_keys=True, default=str))
    torch = sys.modules.get("torch")
    if torch is not None:
        build = [
            line.strip().lstrip("- ")
            for line in torch.__config__.show().splitlines()
            if any(k in line for k in _TORCH_BUILD_KEYS) and "Build settings" not in line
        ]
        out["torch"] = {
            "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "build": build,
        }
    return out


def cpu_id(cpu: dict[str, Any]) -> str | None:
    """'AuthenticAMD family 25 model 17': the processor kind that bitwise equality holds on."""
    if not cpu or cpu.get("family") is None:
        return None
    return f"{cpu.get('vendor')} family {cpu.get('family')} model {cpu.get('model')}"


def machine_columns(env: dict[str, Any]) -> dict[str, Any]:
    """What a row of results says about its machine (:data:`usdh.report.results.MACHINE_COLUMNS`
    but the features' processor), from an :func:`environment` record: the processor kind, its
    instruction sets and cores, the OS, the software and the math libraries."""
    cpu = env.get("cpu") or {}
    packages = env.get("packages") or {}
    software = ", ".join(
        [f"Python {env.get('python')}", *(f"{k} {v}" for k, v in packages.items() if v)]
    )
    libs = env.get("libraries") or {}
    # sorted: the order threadpoolctl lists two libraries of one kind (numpy's and scipy's
    # OpenBLAS) is the order the process happened to load them in
    pools = sorted(
        f"{p.get('internal_api')} {p.get('version')} ({p.get('num_threads')} threads)"
        for p in libs.get("threadpools") or []
    )
    torch = libs.get("torch")
    if torch:
        pools.append(
            f"torch kernels {torch.get('cpu_capability')} ({torch.get('threads')} threads)"
        )
    return {
        "cpu": cpu.get("cpu"),
        "cpu_id": cpu_id(cpu),
        "isa": " ".join(cpu.get("isa") or []) or None,
        "cores": cpu.get("cores"),
        "os": cpu.get("os"),
        "software": software,
        "math_libraries": "; ".join(pools) or None,
    }


def environment(device: str | None = None, packages: tuple[str, ...] = ()) -> dict[str, Any]:
    """A record of the software and machine, to store beside a result (``packages``: more
    packages to name, e.g. a features engine). Nothing in it changes from run to run on one
    machine (no times, paths or code revision: those go to the stage's timing record,
    usdh/timing.py), so a rerun that computes the same numbers writes the same bytes."""
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu": machine(),  # its "os" is the platform, its "cores" those this process may use
        "device": device,
        "packages": package_versions(packages),
        "libraries": libraries(),
    }
