"""The features' files: writing and reading the features, rotated views and banks of augmented
views that the features and bank stages compute (:mod:`usdh.features`).

Kept apart from the extraction so that the stages that only read features (every fit, encode and
evaluation of a shallow method) never import torch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from usdh.io import save_json, save_npy, staged_dir, unreadable

__all__ = [
    "STORAGE_DTYPES",
    "Bank",
    "FeatureSet",
    "check_indices",
    "load_bank",
    "load_features",
    "save_bank",
    "save_features",
]

STORAGE_DTYPES: tuple[str, ...] = ("float32", "float16")
FEATURES_FILE = "features.npy"
ROTATIONS_FILE = "rotations.npy"
ROTATION_INDICES_FILE = "rotation_indices.npy"
AUGMENTATIONS_FILE = "augmentations.npy"
AUGMENTATION_INDICES_FILE = "augmentation_indices.npy"
PROVENANCE_FILE = "provenance.json"
_OUR_FILES = frozenset(
    {
        FEATURES_FILE,
        ROTATIONS_FILE,
        ROTATION_INDICES_FILE,
        AUGMENTATIONS_FILE,
        AUGMENTATION_INDICES_FILE,
        PROVENANCE_FILE,
    }
)


def check_indices(indices: ArrayLike | None, n: int) -> NDArray[np.int64]:
    """``indices`` as int64 rows of ``n`` images (all of them when None), checked."""
    if indices is None:
        return np.arange(n, dtype=np.int64)
    idx = np.asarray(indices)
    if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
        raise ValueError(f"indices must be a 1-D array of integers, got {idx.dtype} {idx.shape}")
    idx = idx.astype(np.int64, copy=False)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(
            f"indices must lie in 0..{n - 1} (the images' range), got {idx.min()}..{idx.max()}"
        )
    return idx


# -- storage ---------------------------------------------------------------------------------------
@dataclass
class FeatureSet:
    """What ``load_features`` returns."""

    features: NDArray[np.floating]
    rotations: NDArray[np.floating] | None
    rotation_indices: NDArray[np.int64] | None
    provenance: dict[str, Any]


def _as_storage(name: str, array: ArrayLike, storage: str, ndim: int) -> NDArray[np.floating]:
    arr = np.asarray(array)
    if arr.ndim != ndim or arr.dtype.kind != "f":
        raise ValueError(f"{name} must be a {ndim}-D float array, got {arr.dtype} {arr.shape}")
    with np.errstate(over="ignore"):  # an overflow becomes inf, reported just below
        out = arr.astype(storage, copy=False)
    if not np.isfinite(out).all():
        hint = " (float16 overflows above 65504: store float32)" if storage == "float16" else ""
        raise ValueError(f"{name} holds NaN or infinite values{hint}")
    return np.ascontiguousarray(out)


def _stored_views(
    name: str,
    views: ArrayLike | None,
    indices: ArrayLike | None,
    shape: tuple[int, ...],
    dtype: str,
) -> tuple[NDArray[np.floating], NDArray[np.int64]] | None:
    """Extra views ``(m, n_views, D)`` (``name``: rotations, augmentations) of the rows
    ``indices`` of features of ``shape`` ``(n, D)``, checked and in their storage dtype."""
    index_name = f"{name.rstrip('s')}_indices"  # rotation_indices, augmentation_indices
    if views is None:
        if indices is not None:
            raise ValueError(f"{index_name} given without {name}")
        return None
    arr = _as_storage(name, views, dtype, 3)
    if arr.shape[2] != shape[1]:
        raise ValueError(f"{name} have {arr.shape[2]} feature columns, features {shape[1]}")
    if indices is None:
        raise ValueError(f"{index_name} (the rows of features that {name} are views of) is needed")
    idx = check_indices(indices, shape[0])
    if idx.shape[0] != arr.shape[0]:
        raise ValueError(f"{idx.shape[0]} {index_name} for {arr.shape[0]} images' {name}")
    return arr, idx


def save_features(
    out_dir: str | os.PathLike[str],
    features: ArrayLike,
    rotations: ArrayLike | None = None,
    *,
    provenance: Mapping[str, Any],
    rotation_indices: ArrayLike | None = None,
    dtype: str = "float32",
) -> Path:
    """Write ``features.npy``, ``rotations.npy`` (+ ``rotation_indices.npy``), ``provenance.json``.

    ``features`` is ``(n, D)``; ``rotations`` ``(m, n_angles, D)`` for the images
    ``rotation_indices`` (rows of ``features``; required with ``rotations``). Stored as float32 by
    default, which keeps the features bit-exact as extracted (so reruns compare byte for byte, and
    DVC sees no change when nothing changed); ``dtype="float16"`` halves the disk (VGG's 4096-d
    CIFAR-10 features: 983 MB -> 492 MB) at ~3 significant digits, ample for hashing.

    The directory is written as a whole: files go to a hidden sibling first, which replaces
    ``out_dir`` only when every file is written, so a failure leaves the old directory (or none).
    ``out_dir`` must not hold files of its own: it is replaced entirely.
    """
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"dtype must be one of {STORAGE_DTYPES}, got {dtype!r}")
    feats = _as_storage("features", features, dtype, 2)
    rots = _stored_views("rotations", rotations, rotation_indices, feats.shape, dtype)
    arrays = {FEATURES_FILE: feats}
    if rots is not None:
        arrays.update({ROTATIONS_FILE: rots[0], ROTATION_INDICES_FILE: rots[1]})
    _write_views(Path(out_dir), arrays, provenance, dtype)
    return Path(out_dir)


def save_bank(
    out_dir: str | os.PathLike[str],
    views: ArrayLike | None,
    indices: ArrayLike | None,
    *,
    shape: tuple[int, int],
    provenance: Mapping[str, Any],
    dtype: str = "float32",
) -> Path:
    """Write the bank of augmented views: ``augmentations.npy`` ``(m, n_views, D)`` of the images
    ``indices`` (rows of the features, of ``shape`` ``(n, D)``) and ``provenance.json``;
    ``views=None`` writes the provenance alone (no listed method needs a bank). Atomic, as
    :func:`save_features`."""
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"dtype must be one of {STORAGE_DTYPES}, got {dtype!r}")
    bank = _stored_views("augmentations", views, indices, shape, dtype)
    arrays = {}
    if bank is not None:
        arrays = {AUGMENTATIONS_FILE: bank[0], AUGMENTATION_INDICES_FILE: bank[1]}
    _write_views(Path(out_dir), arrays, provenance, dtype)
    return Path(out_dir)


def _write_views(
    out: Path, arrays: Mapping[str, NDArray[Any]], provenance: Mapping[str, Any], dtype: str
) -> None:
    """``arrays`` (file name -> array) and the provenance, which records their shapes, written
    as one directory that replaces ``out`` only once complete."""
    record = dict(provenance)
    record["files"] = {
        name: {"shape": list(a.shape), "dtype": "int64" if a.dtype.kind == "i" else dtype}
        for name, a in arrays.items()
    }
    record["storage_dtype"] = dtype
    text = json.dumps(record, indent=2, sort_keys=True, default=str)  # fail before writing anything
    with staged_dir(out, owned=lambda name: name in _OUR_FILES) as stage:
        for name, a in arrays.items():
            save_npy(stage / name, a)
        save_json(stage / PROVENANCE_FILE, json.loads(text))


def _reader(folder: Path, recorded: Mapping[str, Any], fix: str):  # type: ignore[no-untyped-def]
    """``read(name, mmap)``: one array of ``folder``, checked against its recorded shape."""

    def read(name: str, mmap: str | None) -> np.ndarray:
        try:
            arr = np.load(folder / name, mmap_mode=mmap, allow_pickle=False)  # type: ignore[arg-type]
        except (OSError, ValueError, EOFError) as exc:
            raise unreadable(folder / name, exc, fix) from exc
        want = recorded.get(name)
        if isinstance(want, dict) and "shape" in want and list(arr.shape) != list(want["shape"]):
            raise ValueError(
                f"{folder / name} holds {list(arr.shape)}, its provenance records "
                f"{list(want['shape'])}: the files of {folder} do not belong together; {fix}"
            )
        if arr.dtype.kind == "f":
            _check_finite(folder / name, arr, fix)
        if mmap is None and arr.dtype == np.float16:
            arr = arr.astype(np.float32)
        return arr

    return read


#: bytes of one block of rows that ``_check_finite`` looks at at a time
_BLOCK_BYTES = 32 << 20


def _check_finite(path: Path, arr: NDArray[np.floating], fix: str) -> None:
    """Refuse a stored array with NaN or infinite values (the writers never store them: the file
    was damaged or written by other code), naming the file, its bad rows and ``fix``, rather
    than let a fit fail later on "X contains NaN" with neither. Block by block of rows, in the
    stored dtype, so a memory-mapped file is read once and never copied whole."""
    n = arr.shape[0] if arr.ndim else 0
    row_bytes = max(1, arr.itemsize * (arr.size // n)) if n else 1
    step = max(1, _BLOCK_BYTES // row_bytes)
    first: list[int] = []  # the first five bad rows, for the message
    count = 0
    for start in range(0, n, step):
        block = np.isfinite(arr[start : start + step])
        ok = block.reshape(block.shape[0], -1).all(axis=1)
        if not ok.all():
            rows = np.flatnonzero(~ok) + start
            count += rows.size
            first.extend(rows[: 5 - len(first)].tolist())
    if count:
        shown = ", ".join(map(str, first)) + (", ..." if count > len(first) else "")
        raise ValueError(
            f"{path} holds NaN or infinite values in {count} of its {n} rows "
            f"({'row' if count == 1 else 'rows'} {shown}); its writer never stores such values, "
            f"so the file was damaged or written by other code: {fix}"
        )


def _provenance(folder: Path, fix: str) -> dict[str, Any]:
    prov_path = folder / PROVENANCE_FILE
    try:
        return json.loads(prov_path.read_text()) if prov_path.is_file() else {}
    except (OSError, ValueError) as exc:
        raise unreadable(prov_path, exc, fix) from exc


def load_features(out_dir: str | os.PathLike[str], *, mmap_mode: str | None = None) -> FeatureSet:
    """Read what ``save_features`` wrote. Features come back as float32 unless memory-mapped."""
    folder = Path(out_dir)
    path = folder / FEATURES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run the features stage first")
    fix = f"rerun the features stage that writes {folder} (dvc repro -f -s features@...)"
    provenance = _provenance(folder, fix)
    read = _reader(folder, provenance.get("files") or {}, fix)
    rotations = indices = None
    if (folder / ROTATIONS_FILE).is_file():
        rotations = read(ROTATIONS_FILE, mmap_mode)
        indices = read(ROTATION_INDICES_FILE, None)
    return FeatureSet(read(FEATURES_FILE, mmap_mode), rotations, indices, provenance)


@dataclass
class Bank:
    """What ``load_bank`` returns: the augmented views ``(m, n_views, D)`` of the rows
    ``indices`` (both None when the bank stage built none) and the provenance."""

    views: NDArray[np.floating] | None
    indices: NDArray[np.int64] | None
    provenance: dict[str, Any]


def load_bank(out_dir: str | os.PathLike[str]) -> Bank:
    """Read what ``save_bank`` wrote (float32)."""
    folder = Path(out_dir)
    fix = f"rerun the bank stage that writes {folder} (dvc repro -f -s bank@...)"
    if not (folder / PROVENANCE_FILE).is_file():
        raise FileNotFoundError(f"{folder / PROVENANCE_FILE} not found; run the bank stage first")
    provenance = _provenance(folder, fix)
    if not (folder / AUGMENTATIONS_FILE).is_file():
        return Bank(None, None, provenance)
    read = _reader(folder, provenance.get("files") or {}, fix)
    return Bank(read(AUGMENTATIONS_FILE, None), read(AUGMENTATION_INDICES_FILE, None), provenance)
