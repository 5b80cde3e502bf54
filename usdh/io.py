"""Atomic file writing: nothing half-written is ever left where a reader (or DVC) looks."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["atomic_path", "save_json", "save_npy", "staged_dir"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; renamed over ``path`` only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give the result the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def save_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write one array as ``.npy``, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)


def save_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write JSON (sorted keys, indented, trailing newline), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def staged_dir(out_dir: str | os.PathLike[str], owned: Callable[[str], bool]) -> Iterator[Path]:
    """Yield an empty hidden sibling folder; it replaces ``out_dir`` only if the block succeeds.

    So a failure (or a crash) leaves the old ``out_dir`` (or none), never a mix. ``out_dir`` may
    only hold files that ``owned`` accepts: anything else means the path is wrong, and we refuse
    rather than delete someone's files.
    """
    out = Path(out_dir)
    if out.exists():
        if not out.is_dir():
            raise NotADirectoryError(f"{out} exists and is not a directory")
        foreign = sorted(p.name for p in out.iterdir() if not owned(p.name))
        if foreign:
            raise FileExistsError(
                f"refusing to replace {out}: it holds files this step did not write "
                f"({', '.join(foreign[:5])}); choose an empty or dedicated folder"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        yield stage
        for p in stage.iterdir():
            p.chmod(0o644)
        stage.chmod(0o755)
        _swap_in(stage, out)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def _swap_in(stage: Path, out: Path) -> None:
    """Move the finished ``stage`` folder to ``out``, replacing an old one (two renames)."""
    if not out.exists():
        os.replace(stage, out)
        return
    trash = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(out, trash)
    try:
        os.replace(stage, out)
    except BaseException:
        os.replace(trash, out)
        raise
    shutil.rmtree(trash, ignore_errors=True)
