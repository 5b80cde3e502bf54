"""Atomic file writing: nothing half-written is ever left where a reader (or DVC) looks.

A process killed mid-write (SIGKILL, out of memory) cannot clean up its hidden temporary sibling
(``.<name>.*.tmp``, or ``.<name>.old-*`` during a folder swap); the next write of the same path
removes them. That assumes one writer per path at a time, which DVC's repository lock gives the
pipeline.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "atomic_path",
    "atomic_paths",
    "json_text",
    "read_json",
    "save_json",
    "save_npy",
    "save_npys",
    "save_text",
    "staged_dir",
    "sweep",
    "unreadable",
]


def reader_said(exc: BaseException) -> str:
    """The first line of a reader's error, short; never its advice to unpickle (numpy's
    allow_pickle=True, torch's weights_only=False), which would run the file's code."""
    said = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    advises_pickle = "pickle" in said.lower() or "weights_only" in said
    if isinstance(exc, pickle.UnpicklingError) or advises_pickle:
        return "not a file of plain arrays or tensors; unpickling it is never tried"
    return f"{type(exc).__name__}: {said[:200]}" if said else type(exc).__name__


def unreadable(path: str | os.PathLike[str], exc: BaseException, fix: str) -> ValueError:
    """The error for a file that exists but cannot be read: its path, what the reader said, and
    how to get a good one back."""
    return ValueError(f"{path} cannot be read ({reader_said(exc)}); {fix}")


def read_json(
    path: str | os.PathLike[str], fix: str, required: Sequence[str] = ()
) -> dict[str, Any]:
    """The JSON object in ``path``, with every key of ``required``; else FileNotFoundError (no
    file) or ValueError naming the file, what is wrong (truncated, empty, not an object, a key
    missing) and ``fix``, how to get a good one back."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; {fix}")
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise unreadable(path, exc, fix) from exc
    if not isinstance(record, dict):
        raise ValueError(
            f"{path} holds a JSON {type(record).__name__}, not an object of named values; {fix}"
        )
    missing = [k for k in required if k not in record]
    if missing:
        what = "is empty" if not record else f"lacks {', '.join(map(repr, missing))}"
        raise ValueError(f"{path} {what} (half-written, or from an older version?); {fix}")
    return record


def _disk_full(exc: BaseException, folder: Path) -> bool:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    try:
        return shutil.disk_usage(folder).free < _FULL_BYTES
    except OSError:
        return False


#: below this much free space, a failed write is blamed on the full disk
_FULL_BYTES = 16 * 2**20


def sweep(parent: Path, name: str) -> None:
    """Remove what killed writers of ``parent / name`` left behind."""
    if not parent.is_dir():
        return
    for leftover in (*parent.glob(f".{name}.*.tmp"), *parent.glob(f".{name}.old-*")):
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; renamed over ``path`` only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep(target.parent, target.name)
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
    except (OSError, RuntimeError) as exc:
        # a full disk surfaces as ENOSPC, or as a library's own error (torch's zip writer:
        # "[enforce fail at inline_container.cc] ... file write failed"); name the file
        if _disk_full(exc, target.parent):
            raise OSError(errno.ENOSPC, "No space left on device", str(target)) from exc
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_paths(*paths: str | os.PathLike[str]) -> Iterator[list[Path]]:
    """:func:`atomic_path` for files that belong together (a run's query and database codes,
    its metrics and curves): each is renamed over its target only once the block has written
    them all, so a failure while writing leaves every old file (or none). The renames come one
    after another: a failure between two of them (a full disk cannot cause one; a killed process
    can) leaves a mix, which the readers' checks then refuse (codes of another run, a run with
    metrics but no per-query file)."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(atomic_path(p)) for p in paths]


def save_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write one array as ``.npy``, atomically."""
    save_npys({path: array})


def save_npys(arrays: Mapping[str | os.PathLike[str], np.ndarray]) -> None:
    """Write arrays that belong together (a run's query and database codes) as ``.npy`` files,
    all or none (:func:`atomic_paths`)."""
    with atomic_paths(*arrays) as tmps:
        for tmp, array in zip(tmps, arrays.values(), strict=True):
            with open(tmp, "wb") as fh:
                np.save(fh, array, allow_pickle=False)


def save_text(path: str | os.PathLike[str], text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def json_text(obj: Any) -> str:
    """The project's JSON text: sorted keys, indented, a trailing newline (stable diffs)."""
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def save_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write :func:`json_text` of ``obj``, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json_text(obj))


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
    sweep(out.parent, out.name)
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
