"""What every result records about how it was made: versions, machine, device, code revision."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
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


def environment(device: str | None = None) -> dict[str, Any]:
    """A record of the software and machine, to store beside a result."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "device": device,
        "packages": package_versions(),
        "git_revision": git_revision(),
    }
