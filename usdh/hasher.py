"""The one face every hasher shares, shallow or deep.

``Method(n_bits=32, random_state=0, **params).fit(X)`` returns the fitted hasher, ``encode(X)``
returns packed codes (see :mod:`usdh.codes`), and ``save`` / ``load`` round-trip the fitted state.
As in scikit-learn, hyperparameters are set in ``__init__`` and never changed by ``fit``; learned
state lives in attributes whose names end in ``_``.
"""

from __future__ import annotations

import inspect
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
from numpy.typing import ArrayLike, NDArray

from usdh.codes import check_n_bits, pack_bits
from usdh.io import atomic_path, unreadable

__all__ = ["BaseHasher", "NotFittedError", "TrainingViews", "check_features", "check_views"]


class NotFittedError(ValueError):
    """Raised when ``encode`` or ``save`` is called before ``fit``."""


def check_features(
    X: ArrayLike, name: str = "X", n_features: int | None = None, min_rows: int = 1
) -> NDArray[np.floating]:
    """Return features as a finite 2-D float array, or raise a ValueError saying what is wrong."""
    arr = np.asarray(X)
    if arr.dtype.kind not in "fiub":
        raise ValueError(f"{name} must be numeric features, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array (n_samples, n_features), got shape {arr.shape}"
        )
    if arr.shape[0] < min_rows:
        raise ValueError(f"{name} has {arr.shape[0]} rows; at least {min_rows} are needed")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has zero feature columns")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(
            f"{name} has {arr.shape[1]} features, but the hasher was fitted on {n_features}; "
            f"encode features from the same backbone and layer as the training features"
        )
    if arr.dtype.kind != "f":
        arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        bad = int(np.count_nonzero(~np.isfinite(arr).all(axis=1)))
        raise ValueError(
            f"{name} contains NaN or infinite values in {bad} row(s); clean or drop them first"
        )
    return arr


def check_views(
    name: str,
    shape: tuple[int, ...],
    rows: ArrayLike | None,
    n_rows: int,
    n_features: int,
    *,
    axis: str = "A",
    two_views: bool = False,
) -> NDArray[Any] | None:
    """Check that views of ``shape`` ``(M, <axis>, D)`` belong to training features ``X`` of
    shape ``(n_rows, n_features)``: row ``j`` holds the views of row ``rows[j]`` of X (without
    ``rows``: of row ``j``, M = N), the rows distinct indices of X; with ``two_views``, at least
    two views per row (training draws two distinct ones). Returns ``rows`` as an array (None
    stays None). The one check of :class:`TrainingViews` and the trainer's batches."""
    idx = None if rows is None else np.asarray(rows)
    m = n_rows if idx is None else idx.shape[0]
    if len(shape) != 3 or shape[0] != m or shape[2] != n_features:
        raise ValueError(
            f"{name} must have shape (M, {axis}, D) = ({m}, {axis}, {n_features}), one row of "
            f"views per row of X that has them, got {tuple(shape)}"
        )
    if idx is not None and (
        idx.ndim != 1
        or idx.dtype.kind not in "iu"
        or (idx.size and (idx.min() < 0 or idx.max() >= n_rows))
        or np.unique(idx).size != idx.size
    ):
        raise ValueError(f"{name}: rows must be distinct row indices of X (0..{n_rows - 1})")
    if two_views and shape[1] < 2:
        raise ValueError(
            f"{name} hold {shape[1]} view(s) per image; training draws two distinct views, so at "
            f"least 2 are needed"
        )
    return idx


def _check_rows_views(
    name: str, views: Any, rows: Any, X: NDArray[np.floating], **how: Any
) -> tuple[NDArray[np.floating], NDArray[np.int64] | None]:
    """Views of the rows ``rows`` of ``X`` (:func:`check_views`), checked to belong to ``X`` and
    to be finite."""
    arr = np.asarray(views)
    idx = check_views(name, arr.shape, rows, X.shape[0], X.shape[1], **how)
    check_features(arr.reshape(-1, arr.shape[2]), name=name)
    return arr, idx


@dataclass(frozen=True)
class TrainingViews:
    """Extra training inputs of a deep fit, beside the features of its training rows.

    ``rotations`` (M, A, D): row ``j`` holds the features of training row ``rows[j]`` (without
    ``rows``: row ``j``, M = N) rotated by each of ``angles`` (A degrees, positive =
    counter-clockwise), as the features stage stores them. ``augmentations`` (M', V, D): the bank
    of V augmented views of training row ``augmentation_rows[j]`` (:mod:`usdh.augment`).
    """

    rotations: NDArray[np.floating] | None = None
    angles: tuple[float, ...] | None = None
    rows: NDArray[np.int64] | None = None
    augmentations: NDArray[np.floating] | None = None
    augmentation_rows: NDArray[np.int64] | None = None

    def checked(self, X: NDArray[np.floating]) -> TrainingViews:
        """These views, once checked to belong to the training features ``X`` (N, D)."""
        aug, aug_rows = None, None
        if self.augmentations is not None:
            aug, aug_rows = _check_rows_views(
                "augmentations",
                self.augmentations,
                self.augmentation_rows,
                X,
                axis="V",
                two_views=True,
            )
        elif self.augmentation_rows is not None:
            raise ValueError("augmentation_rows given without augmentations")
        if self.rotations is None:
            if self.angles is not None or self.rows is not None:
                raise ValueError("angles or rows given without rotations")
            return TrainingViews(augmentations=aug, augmentation_rows=aug_rows)
        rot, rows = _check_rows_views("rotations", self.rotations, self.rows, X)
        if self.angles is None or len(self.angles) != rot.shape[1]:
            raise ValueError(
                f"angles must list the {rot.shape[1]} rotation angles (degrees) of the views, "
                f"got {self.angles!r}"
            )
        return TrainingViews(rot, tuple(float(a) for a in self.angles), rows, aug, aug_rows)


class BaseHasher:
    """Base class: parameter handling, input validation, packing and persistence.

    Subclasses implement ``_fit(X)`` (set learned ``*_`` attributes) and ``_project(X)``
    (real-valued outputs whose sign gives the bits) and list their learned attributes in ``_state``.
    """

    _state: ClassVar[tuple[str, ...]] = ()
    #: smallest number of training rows the method accepts
    _min_fit_rows: ClassVar[int] = 2

    def __init__(self, n_bits: int = 32, random_state: int = 0) -> None:
        self.n_bits = n_bits
        self.random_state = random_state

    # -- parameters --------------------------------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self) -> dict[str, Any]:
        """Hyperparameters, as passed to ``__init__`` (JSON-serialisable)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # -- fit / encode ------------------------------------------------------------------------
    def fit(self, X: ArrayLike, y: Any = None) -> Self:
        """Learn the hash functions from training features (labels, if given, are ignored)."""
        arr = self._check_fit_input(X)
        self._validate_params(arr)
        self._fit(arr)
        self.n_features_in_ = arr.shape[1]
        return self

    def trained_on(self, part: str, n_rows: int) -> tuple[str, int]:
        """Which rows the last ``fit`` trained on, when it was given the ``n_rows`` rows of the
        split's ``part``: that part's name and its number of rows. By default every row it was
        given; a method that trains on a subset of them says which (two-view methods: the
        images of their bank, :meth:`usdh.method.USDH.trained_on`)."""
        return part, n_rows

    def check_params(self) -> Self:
        """Check every hyperparameter that needs no data (types, ranges, names from their sets),
        so that a bad value in params.yaml fails before any stage works
        (:mod:`usdh.paramcheck` calls this); ``fit`` checks the rest against the data."""
        check_n_bits(self.n_bits)
        rs = self.random_state
        if isinstance(rs, bool) or not isinstance(rs, int | np.integer) or rs < 0:
            raise ValueError(
                f"random_state must be a non-negative integer (seeds are recorded with every "
                f"result), got {rs!r}"
            )
        self._check_params()
        return self

    def _check_params(self) -> None:
        """The data-free checks of a method's own hyperparameters; override to add them."""

    def _check_fit_input(self, X: ArrayLike) -> NDArray[np.floating]:
        """Check the hyperparameters and the training features; return the features."""
        self.check_params()
        return check_features(X, min_rows=self._min_fit_rows)

    def encode(self, X: ArrayLike) -> NDArray[np.uint8]:
        """Packed ``(n, n_bits // 8)`` uint8 codes of ``X``."""
        self._check_fitted()
        arr = check_features(X, n_features=self.n_features_in_, min_rows=0)
        return pack_bits(self._project(arr))

    def _validate_params(self, X: NDArray[np.floating]) -> None:
        """Check hyperparameters against the training data; override to add checks."""

    def _fit(self, X: NDArray[np.floating]) -> None:
        raise NotImplementedError

    def _project(self, X: NDArray[np.floating]) -> NDArray[np.floating]:
        raise NotImplementedError

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_features_in_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit(X) first")

    # -- persistence -------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write hyperparameters and fitted state to one ``.npz`` file (atomically, no pickle)."""
        self._check_fitted()
        arrays = {name: np.asarray(getattr(self, name)) for name in self._state}
        meta = {
            "class": type(self).__name__,
            "params": self.get_params(),
            "n_features_in_": int(self.n_features_in_),
        }
        arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Self:
        """Read a hasher written by :meth:`save`; a file that is not one (truncated, empty, text,
        another class, arrays that contradict the metadata) is a ValueError naming it."""
        fix = "fit the method again (the fit stage of its run, e.g. dvc repro -f -s fit@...)"
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path} not found; {fix}")
        try:
            with np.load(path, allow_pickle=False) as data:
                if "__meta__" not in data:
                    raise ValueError("no metadata record: not a saved hasher")
                meta = json.loads(data["__meta__"].tobytes().decode())
                if meta["class"] != cls.__name__:
                    raise ValueError(
                        f"{path} holds a {meta['class']}, not a {cls.__name__}; "
                        f"load it with {meta['class']}.load"
                    )
                obj = cls(**meta["params"])
                for name in cls._state:
                    value = data[name]
                    setattr(obj, name, value.item() if value.ndim == 0 else value)
            obj.n_features_in_ = int(meta["n_features_in_"])
        except ValueError as exc:
            if str(exc).startswith(str(path)):
                raise
            raise unreadable(path, exc, fix) from exc
        except (OSError, EOFError, KeyError, TypeError, zipfile.BadZipFile) as exc:
            raise unreadable(path, exc, fix) from exc
        obj._check_loaded(path, fix)
        return obj

    def _check_loaded(self, path: str | os.PathLike[str], fix: str) -> None:
        """The loaded arrays must give the codes the metadata promises: one row of zeros goes
        through ``_project`` and must come out ``(1, n_bits)``."""
        try:
            out = np.asarray(self._project(np.zeros((1, self.n_features_in_))))
        except (ValueError, IndexError, TypeError) as exc:
            raise unreadable(path, exc, fix) from exc
        n_bits = getattr(self, "n_bits", None)
        if out.shape != (1, n_bits):
            raise ValueError(
                f"{path} contradicts itself: its metadata says {n_bits} bits of "
                f"{self.n_features_in_} features, its arrays give {out.shape[-1]}-bit codes; "
                f"{fix}"
            )
