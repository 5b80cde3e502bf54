"""Where torch runs, and how to make it repeat itself: device strings, seeding, determinism.

Every stage that runs a network takes a device string from params.yaml or the command line, so the
string is resolved in one place with one clear error. Determinism on the CPU needs a fixed thread
count as well as fixed seeds: oneDNN and the BLAS split reductions by thread, and a different split
rounds differently, so ``torch_determinism`` pins the count for the duration of a block.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
from collections.abc import Iterator

import numpy as np
import torch

from usdh.checks import check_device_name

__all__ = ["resolve_device", "seed_everything", "torch_determinism"]

_CUDA_RE = re.compile(r"^cuda(?::(\d+))?$")
# cuBLAS is only deterministic with a fixed workspace; torch raises unless this is set (CUDA only).
_CUBLAS_WORKSPACE = ":4096:8"


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into a usable ``torch.device``.

    ``"auto"`` is the first CUDA device when one is visible and the CPU otherwise. Asking for CUDA
    on a machine without it is an error rather than a silent fall-back, so a run never reports GPU
    settings while it quietly ran on the CPU.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    if not isinstance(spec, str):
        raise TypeError(f"device must be a string such as 'auto', 'cpu' or 'cuda:0', got {spec!r}")
    text = check_device_name(spec)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = _CUDA_RE.match(text)
    assert match is not None  # check_device_name accepted it
    if not torch.cuda.is_available():
        raise RuntimeError(
            f"device {spec!r} was requested but CUDA is not available on this machine "
            f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
            "use device 'cpu' or 'auto'"
        )
    index = int(match.group(1)) if match.group(1) is not None else torch.cuda.current_device()
    count = torch.cuda.device_count()
    if index >= count:
        raise RuntimeError(
            f"device {spec!r} was requested but only {count} CUDA device(s) are visible "
            f"(cuda:0 .. cuda:{count - 1})"
        )
    return torch.device("cuda", index)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's global and torch's (CPU and every CUDA device) generators."""
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - legacy global state is what third-party code reads
    torch.manual_seed(seed)  # also seeds every CUDA device


@contextlib.contextmanager
def torch_determinism(threads: int | None = None) -> Iterator[None]:
    """Run a block with deterministic torch kernels (and, if given, a fixed CPU thread count).

    Inside the block ``torch.use_deterministic_algorithms(True, warn_only=True)`` is on (an op with
    no deterministic kernel warns instead of failing), cuDNN autotuning is off and cuDNN is
    restricted to deterministic algorithms; ``CUBLAS_WORKSPACE_CONFIG`` is set when unset, as
    cuBLAS requires. ``threads`` pins ``torch.set_num_threads`` for the block: CPU results are
    bitwise repeatable for a given machine, library versions and thread count, so record the count.
    Everything is restored on exit.
    """
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    saved_alg = torch.are_deterministic_algorithms_enabled()
    saved_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    saved_bench = torch.backends.cudnn.benchmark
    saved_cudnn_det = torch.backends.cudnn.deterministic
    saved_threads = torch.get_num_threads()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", _CUBLAS_WORKSPACE)
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        if threads is not None:
            torch.set_num_threads(threads)
        yield
    finally:
        torch.use_deterministic_algorithms(saved_alg, warn_only=saved_warn)
        torch.backends.cudnn.benchmark = saved_bench
        torch.backends.cudnn.deterministic = saved_cudnn_det
        if torch.get_num_threads() != saved_threads:
            torch.set_num_threads(saved_threads)
