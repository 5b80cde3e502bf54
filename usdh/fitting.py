"""The one "fit this method on these rows" path, shared by fit, ablate, classify, validate and
finetune.

A run's hasher is made from the registry (:mod:`usdh.registry`) and the method's params.yaml
section merged with any overrides (:func:`merge_params`, recursive, everywhere); every method
trains on the rows :func:`usdh.data.training_rows` picks (the protocol's training pool, or its
seeded ``train_subset``: the same rows for all, shallow or deep) with the extra inputs it
declares (:class:`usdh.hasher.TrainingViews`: the rotated views of those of its rows that have
them, the bank of augmented views of those in the bank); the fitted state and a record of the
run (params, rows, seconds, environment) are saved where :mod:`usdh.layout` says.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from usdh.data import training_part
from usdh.hasher import BaseHasher, TrainingViews
from usdh.io import atomic_path, save_json
from usdh.layout import CHECKPOINTS, Run
from usdh.params import merge_params
from usdh.provenance import environment
from usdh.registry import MethodSpec, get_method

if TYPE_CHECKING:
    from usdh.feature_store import Bank

#: ``views(spec, rows, split)``: a deep method's stored extra inputs for its training rows
Views = Callable[..., TrainingViews | None]

__all__ = [
    "Fitted",
    "bank_for",
    "fit_on_rows",
    "make_hasher",
    "merge_params",
    "remove_checkpoints",
    "save_fitted",
    "stored_views",
    "views_from_features",
]


def make_hasher(
    name: str, bits: int, seed: int, method_params: Mapping[str, Any] | None = None
) -> BaseHasher:
    """The registered method's hasher with its params (``n_bits`` and seed from the run)."""
    return get_method(name).load()(n_bits=bits, random_state=seed, **dict(method_params or {}))


def _positions(
    rows: np.ndarray, stored: np.ndarray, subset: np.ndarray | None, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """Which of the ``stored`` image indices are among ``rows`` (and in ``subset``, when given):
    the mask over ``stored`` and their positions in ``rows``."""
    stored = np.asarray(stored)
    order = np.argsort(rows, kind="stable")
    where = np.searchsorted(rows, stored, sorter=order)
    where = np.minimum(where, len(rows) - 1)
    hit = rows[order[where]] == stored
    if subset is not None:
        hit &= np.isin(stored, np.asarray(subset))
    if not hit.any():
        raise ValueError(
            f"none of the stored {what} belongs to the rows this run trains on; rerun the stage "
            f"that stores them after changing the split"
        )
    return hit, order[where[hit]]


def stored_views(
    spec: MethodSpec,
    rows: np.ndarray,
    split: Mapping[str, np.ndarray],
    *,
    rotations: np.ndarray | None = None,
    rotation_indices: np.ndarray | None = None,
    angles: Any = None,
    bank: Bank | None = None,
) -> TrainingViews | None:
    """The stored views of those ``rows`` that have them, for the kinds the method declares: the
    rotated views of the features stage (of the split's ``rotation_subset``, when drawn) and the
    augmented views of the bank stage (of its ``augmentation_subset``). The stages store the
    views of every protocol's subset; the split keeps a run to its own protocol's. Positions
    (``views.rows``, ``views.augmentation_rows``) index ``rows``."""
    out: dict[str, Any] = {}
    if "rotations" in spec.views and rotations is not None:
        if rotation_indices is None:
            raise ValueError(
                "the stored rotated views have no row indices; rerun the features stage"
            )
        hit, pos = _positions(rows, rotation_indices, split.get("rotation_subset"), "rotated views")
        views = np.asarray(rotations)[hit] if not hit.all() else np.asarray(rotations)
        out.update(rotations=views, angles=tuple(float(a) for a in angles), rows=pos)
    if "augmentations" in spec.views:
        if bank is None or bank.views is None or bank.indices is None:
            raise ValueError(
                f"method {spec.name!r} trains on augmented views, but no bank holds them; list "
                f"it in params.yaml and run the bank stage (python -m usdh bank <dataset>)"
            )
        hit, pos = _positions(
            rows, bank.indices, split.get("augmentation_subset"), "augmented views"
        )
        views = bank.views[hit] if not hit.all() else bank.views
        out.update(augmentations=views, augmentation_rows=pos)
    return TrainingViews(**out) if out else None


def views_from_features(fs: Any, bank: Bank | None = None) -> Views:
    """``views(spec, rows, split)`` over a stored feature set's rotated views (a
    :class:`usdh.features.FeatureSet`) and a bank's augmented views, for :func:`fit_on_rows`."""
    prov = fs.provenance
    angles = (prov.get("rotations") or {}).get("angles") or prov.get("angles")
    rotations = None if fs.rotations is None else np.asarray(fs.rotations)

    def views(
        spec: MethodSpec, rows: np.ndarray, split: Mapping[str, np.ndarray]
    ) -> TrainingViews | None:
        return stored_views(
            spec,
            rows,
            split,
            rotations=rotations,
            rotation_indices=fs.rotation_indices,
            angles=angles,
            bank=bank,
        )

    return views


def bank_for(methods: Iterable[str], bank_dir: Path) -> Bank | None:
    """The bank of augmented views when one of ``methods`` trains on them, else None (so the
    other methods' stages never read it)."""
    if not any("augmentations" in get_method(m).views for m in methods):
        return None
    from usdh.feature_store import load_bank

    return load_bank(bank_dir)


@dataclass
class Fitted:
    """A fitted hasher, what it trained on and how long it took."""

    name: str
    hasher: BaseHasher
    part: str
    n_train: int
    seconds: float


def fit_on_rows(
    name: str,
    bits: int,
    seed: int,
    features: np.ndarray,
    split: Mapping[str, np.ndarray],
    *,
    method_params: Mapping[str, Any] | None = None,
    views: Views | None = None,
    run: Run | None = None,
    monitor: Callable[[Any], float] | None = None,
    part: str | None = None,
) -> Fitted:
    """Fit method ``name`` on its training rows of ``split``.

    ``views(spec, rows, split)`` gives a deep method's extra inputs
    (:func:`views_from_features`); with ``run``, a deep method keeps
    a checkpoint in the run's scratch folder (:attr:`usdh.layout.Run.checkpoints`) and resumes
    from it; ``monitor`` (deep methods) is logged
    after every epoch (see :meth:`usdh.method.USDH.fit`); ``part`` trains on that part of the
    split (which must lie in the training pool) instead of the pool or its ``train_subset``.
    """
    spec = get_method(name)
    hasher = make_hasher(name, bits, seed, method_params)
    pool = training_part(split)
    if part is not None and part not in split:
        raise ValueError(
            f"the split has no part {part!r} to train on (it has {', '.join(sorted(split))}); "
            f"configure it under datasets and rerun the split stage"
        )
    part = part or pool
    rows = split[part]
    if part != pool and not np.isin(rows, split[pool]).all():
        raise ValueError(f"the split's {part!r} holds images outside its training pool {pool!r}")
    kwargs: dict[str, Any] = {}
    if spec.deep:
        kwargs["views"] = views(spec, rows, split) if views is not None else None
        if run is not None:
            kwargs.update(checkpoint_dir=run.checkpoints, resume=True)
        if monitor is not None:
            kwargs["monitor"] = monitor
    start = time.perf_counter()
    hasher.fit(features[rows], **kwargs)
    seconds = time.perf_counter() - start
    # a method may train on a subset of the rows it was given (two-view ones: their bank's)
    part, n_train = hasher.trained_on(part, len(rows))
    return Fitted(name, hasher, part, n_train, seconds)


def _schedule(hasher: BaseHasher, n_train: int) -> dict[str, int]:
    """A deep fit's epochs and SGD steps (from its training log), for the report."""
    log = getattr(hasher, "log_", None)
    batch = getattr(hasher, "batch_size", None)
    if log is None or not batch:
        return {}
    per_epoch = n_train // batch if n_train > batch else 1
    return {"epochs": len(log), "steps": len(log) * per_epoch}


def save_fitted(
    run: Run, fitted: Fitted, record: Mapping[str, Any] | None = None, device: str | None = None
) -> None:
    """The fitted state (``model.npz``) and ``fit.json``: params, rows, seconds, environment; a
    deep fit's epoch log moves from its checkpoint folder to the model's, and the checkpoint
    folder, now of no use, is removed."""
    hasher = fitted.hasher
    hasher.save(run.model)
    save_json(
        run.fit_record,
        {
            "method": fitted.name,
            "bits": run.bits,
            "seed": run.seed,
            "params": hasher.get_params(),
            "n_train": fitted.n_train,
            "train_rows": fitted.part,
            "fit_seconds": round(fitted.seconds, 3),
            **_schedule(hasher, fitted.n_train),
            **(
                {"resumed_at_epoch": hasher.resumed_at_}
                if getattr(hasher, "resumed_at_", None) is not None
                else {}
            ),
            "environment": environment(device or getattr(hasher, "device_", None)),
            **(record or {}),
        },
    )
    log = run.checkpoints / run.train_log.name  # the trainer's log (usdh.train LOG_FILE)
    if log.is_file():
        with atomic_path(run.train_log) as tmp:
            shutil.copyfile(log, tmp)
    remove_checkpoints(run)


def remove_checkpoints(run: Run) -> None:
    """Remove the run's checkpoint folder and then each parent folder it leaves empty, up to but
    not including ``.checkpoints/`` itself (a parent that still holds another run's checkpoint
    stays)."""
    shutil.rmtree(run.checkpoints, ignore_errors=True)
    top = run.root / CHECKPOINTS
    folder = run.checkpoints.parent
    while folder != top and top in folder.parents:
        try:
            folder.rmdir()
        except FileNotFoundError:  # already gone: the one above may be empty now
            pass
        except OSError:  # not empty: neither is any folder above it
            break
        folder = folder.parent
