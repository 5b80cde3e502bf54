"""``python -m usdh bank <dataset>``: backbone features of seeded augmented views of a subset of the
training images (:mod:`usdh.augment`), for the methods that train on two views of an image
(CIBHash). A stage of its own, so that listing such a method (or not) never reruns the features
stage; when no listed method needs the bank, it records that and computes nothing."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from usdh import layout
from usdh.augment import Augmentation
from usdh.data import load_prepared, load_split
from usdh.features import VERSIONED_EXTRA, extract_features, save_bank
from usdh.params import features_params, section
from usdh.provenance import package_versions
from usdh.registry import get_method
from usdh.stages.common import dataset_params
from usdh.stages.features import extraction_settings, pipeline_backbone, rotation_rows

log = logging.getLogger("usdh")

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
    "augmentation",
    "device",
    "batch_size",
    "torch_threads",
    "deterministic",
    "n_images",
    "n_forward",
)


def outputs(params: dict[str, Any], dataset: str) -> list[Path]:
    return [layout.bank_dir(dataset, section(params, "features", "backbone"))]


def bank_methods(params: dict[str, Any], dataset: str) -> list[str]:
    """The methods listed on ``dataset`` (retrieval, ablations, classification) that declare
    ``augmentations`` in the registry."""
    listed: list[str] = []
    exp = section(params, "experiment")
    if exp["dataset"] == dataset:
        listed += list(exp["methods"])
        abl = params.get("ablations") or {}
        listed += [abl["method"]] if abl.get("method") else []
    cls = params.get("classification") or {}
    if cls.get("dataset") == dataset:
        listed += list(cls.get("methods") or [])
    return [m for m in dict.fromkeys(listed) if "augmentations" in get_method(m).views]


def run(params: dict[str, Any], dataset: str) -> None:
    """The bank of every protocol's augmentation subset (default: its training images), or, when
    no listed method needs one, a provenance record saying so."""
    cfg = dataset_params(params, dataset)
    fp = features_params(params)
    seed = int(section(params, "split_seed"))
    out = layout.bank_dir(dataset, fp["backbone"])
    methods = bank_methods(params, dataset)
    if not methods:
        save_bank(
            out,
            None,
            None,
            shape=(0, 0),
            provenance={"dataset": dataset, "methods": [], "bank": None},
        )
        log.info("bank %s: no listed method trains on augmented views; none computed", dataset)
        return
    ds = load_prepared(layout.prepared_dir(dataset))
    splits = [load_split(layout.split_dir(dataset, p), ds) for p in cfg["protocols"]]
    rows = rotation_rows(splits, "augmentation_subset")
    augmentation = Augmentation.from_params(fp.get("augmentation"), seed)
    backbone = pipeline_backbone(params)
    info: dict[str, Any] = {}
    views = extract_features(
        ds,
        backbone,
        **extraction_settings(fp),
        indices=rows,
        augmentation=augmentation,
        info=info,
    )
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
        shape=(len(ds), backbone.feature_dim),
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
