"""The one "fit this method on these rows" path, shared by fit, ablate, classify, validate and
finetune.

A run's hasher is made from the registry (:mod:`usdh.registry`) and the method's params.yaml
section merged with any overrides (:func:`merge_params`, recursive, everywhere); every method
trains on the rows :func:`usdh.data.training_rows` picks (the protocol's training pool, or its
seeded ``train_subset``: the same rows for all, shallow or deep) with the extra inputs it
declares (:class:`usdh.hasher.TrainingViews`: the rotated views of those of its rows that have
them); the fitted state and a record of the run (params, rows, seconds, environment) are saved
where :mod:`usdh.layout` says.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from usdh.data import training_part
from usdh.hasher import BaseHasher, TrainingViews
from usdh.io import atomic_path, save_json
from usdh.layout import Run
from usdh.provenance import environment
from usdh.registry import MethodSpec, get_method

#: ``views(spec, rows, subset)``: a deep method's stored extra inputs for its training rows
Views = Callable[..., TrainingViews | None]

__all__ = [
    "Fitted",
    "fit_on_rows",
    "make_hasher",
    "merge_params",
    "save_fitted",
    "stored_views",
    "views_from_features",
]


def merge_params(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` merged in, recursively for nested mappings (copies)."""
    out = {k: (merge_params(v, {}) if isinstance(v, Mapping) else v) for k, v in base.items()}
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_params(out[key], value)
        else:
            out[key] = merge_params(value, {}) if isinstance(value, Mapping) else value
    return out


def make_hasher(
    name: str, bits: int, seed: int, method_params: Mapping[str, Any] | None = None
) -> BaseHasher:
    """The registered method's hasher with its params (``n_bits`` and seed from the run)."""
    return get_method(name).load()(n_bits=bits, random_state=seed, **dict(method_params or {}))


def stored_views(
    spec: MethodSpec,
    rows: np.ndarray,
    rotations: np.ndarray | None,
    rotation_indices: np.ndarray | None,
    angles: Any,
    subset: np.ndarray | None = None,
) -> TrainingViews | None:
    """The views the features stage stored of those ``rows`` that have them (and are in
    ``subset``, the split's rotation subset, when given), for a method that declares it uses them
    (``views.rows``: their positions in ``rows``). The features stage stores the views of every
    protocol's subset; ``subset`` keeps a run to its own protocol's."""
    if "rotations" not in spec.views or rotations is None:
        return None
    if rotation_indices is None:
        raise ValueError("the stored rotated views have no row indices; rerun the features stage")
    stored = np.asarray(rotation_indices)
    order = np.argsort(rows, kind="stable")
    where = np.searchsorted(rows, stored, sorter=order)
    where = np.minimum(where, len(rows) - 1)
    hit = rows[order[where]] == stored
    if subset is not None:
        hit &= np.isin(stored, np.asarray(subset))
    if not hit.any():
        raise ValueError(
            "none of the stored rotated views belongs to the rows this run trains on; rerun the "
            "features stage after changing the split"
        )
    views = np.asarray(rotations)[hit] if not hit.all() else np.asarray(rotations)
    return TrainingViews(views, tuple(float(a) for a in angles), order[where[hit]])


def views_from_features(fs: Any) -> Views:
    """``views(spec, rows, subset)`` over a stored feature set's rotated views (a
    :class:`usdh.features.FeatureSet`), for :func:`fit_on_rows`."""
    prov = fs.provenance
    angles = (prov.get("rotations") or {}).get("angles") or prov.get("angles")
    rotations = None if fs.rotations is None else np.asarray(fs.rotations)

    def views(
        spec: MethodSpec, rows: np.ndarray, subset: np.ndarray | None = None
    ) -> TrainingViews | None:
        return stored_views(spec, rows, rotations, fs.rotation_indices, angles, subset)

    return views


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
) -> Fitted:
    """Fit method ``name`` on its training rows of ``split``.

    ``views(spec, rows, subset)`` gives a deep method's extra inputs (``subset``: the split's
    rotation subset); with ``run``, a deep method keeps
    a checkpoint in the run's scratch folder (:attr:`usdh.layout.Run.checkpoints`) and resumes
    from it; ``monitor`` (deep methods) is logged
    after every epoch (see :meth:`usdh.method.USDH.fit`).
    """
    spec = get_method(name)
    hasher = make_hasher(name, bits, seed, method_params)
    part = training_part(split)
    rows = split[part]
    kwargs: dict[str, Any] = {}
    if spec.deep:
        subset = split.get("rotation_subset")
        kwargs["views"] = views(spec, rows, subset) if views is not None else None
        if run is not None:
            kwargs.update(checkpoint_dir=run.checkpoints, resume=True)
        if monitor is not None:
            kwargs["monitor"] = monitor
    start = time.perf_counter()
    hasher.fit(features[rows], **kwargs)
    return Fitted(name, hasher, part, len(rows), time.perf_counter() - start)


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
    shutil.rmtree(run.checkpoints, ignore_errors=True)
