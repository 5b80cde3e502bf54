"""``python -m usdh bank <dataset> [--experiment calibration]``: backbone features of seeded
augmented views of a subset of the training images (:mod:`usdh.augment`), for the methods that
train on two views of an image (CIBHash). A stage of its own, so that listing such a method (or
not) never reruns the features stage; when no listed method needs the bank, it records that and
computes nothing. With ``--experiment calibration``, the bank through that section's backbone
(GIST), for the settings that run the experiment's methods on those features."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from usdh import layout
from usdh.data import load_prepared, load_split
from usdh.features import VERSIONED_EXTRA, save_bank
from usdh.params import (
    dataset_params,
    features_params,
    read_check_record,
    section,
    sections_checker,
)
from usdh.provenance import package_versions
from usdh.stages.features import augmented_views, check_read, rotation_rows

log = logging.getLogger("usdh")

check_params = sections_checker("datasets", "split_seed", "features", "calibration")

#: what the bank's provenance keeps of the extraction record
STABLE_KEYS = (
    "backbone",
    "weights",
    "layer",
    "feature_dim",
    "input_size",
    "interpolation",
    "resize",
    "normalization",
    "dtype",
    "engine",
    "engine_versions",
    "augmentation",
    "device",
    "batch_size",
    "torch_threads",
    "deterministic",
    "n_images",
    "n_forward",
)


def outputs(params: dict[str, Any], dataset: str, experiment: str = "experiment") -> list[Path]:
    return [layout.bank_dir(dataset, features_params(params, experiment)["backbone"])]


def run(
    params: dict[str, Any], dataset: str, experiment: str = "experiment"
) -> dict[str, Any] | None:
    """The bank of every protocol's augmentation subset (default: its training images), or, when
    no listed method needs one, a provenance record saying so."""
    check_read(params, dataset, experiment)
    cfg = dataset_params(params, dataset)
    fp = features_params(params, experiment, dataset)
    seed = int(section(params, "split_seed"))
    out = layout.bank_dir(dataset, fp["backbone"])
    # which listed methods train on two views: the check stage's decision, so that this stage
    # needs no method code (usdh/stages/check.py)
    methods = read_check_record(dataset, fp["backbone"])["two_view_methods"]
    if not methods:
        save_bank(
            out,
            None,
            None,
            shape=(0, 0),
            provenance={"dataset": dataset, "methods": [], "bank": None},
        )
        log.info(
            "bank %s/%s: no listed method trains on augmented views; none computed",
            dataset,
            fp["backbone"],
        )
        return
    ds = load_prepared(layout.prepared_dir(dataset))
    splits = [load_split(layout.split_dir(dataset, p), ds) for p in cfg["protocols"]]
    rows = rotation_rows(splits, "augmentation_subset")
    views, info = augmented_views(params, ds, rows, dataset=dataset, experiment=experiment)
    # nothing that changes from run to run (times, the git revision): a rerun that computes the
    # same views writes the same files, so DVC leaves the fits downstream alone
    provenance = {k: info[k] for k in STABLE_KEYS} | {
        "dataset": ds.name,
        "source": ds.source,
        "seed": seed,
        "methods": methods,
        "protocols": list(cfg["protocols"]),
        "versions": package_versions(VERSIONED_EXTRA),
    }
    save_bank(
        out,
        views,
        rows,
        shape=(len(ds), int(info["feature_dim"])),
        provenance=provenance,
        dtype=fp["storage_dtype"],
    )
    log.info(
        "bank %s/%s: %s views of %d images in %.1f s (%.1f views/s) -> %s",
        dataset,
        fp["backbone"],
        views.shape[1],
        views.shape[0],
        info["wall_time_s"],
        info["images_per_s"] or 0.0,
        out,
    )
    return {"bank": {k: info[k] for k in ("n_forward", "wall_time_s", "images_per_s")}}
