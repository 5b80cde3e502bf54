"""``python -m usdh classify-features``: the linear classifier on the real-valued backbone
features, the reference for the classification on codes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from usdh import layout
from usdh.classification import PARTS, classify_codes
from usdh.data import load_prepared, load_split
from usdh.feature_store import load_features
from usdh.io import save_json
from usdh.paramcheck import check_relations as check_params  # noqa: F401 (the CLI calls it)
from usdh.params import section

log = logging.getLogger("usdh")


def outputs(params: dict[str, Any]) -> list[Path]:
    cfg = section(params, "classification")
    return [layout.features_reference(cfg["dataset"], cfg["protocol"])]


def run(params: dict[str, Any]) -> None:
    """The reference: the same linear classifier on the real-valued backbone features."""
    cfg = section(params, "classification")
    dataset, protocol = cfg["dataset"], cfg["protocol"]
    backbone = section(params, "features", "backbone")
    ds = load_prepared(layout.prepared_dir(dataset))
    split = load_split(layout.split_dir(dataset, protocol), ds)
    features = np.asarray(load_features(layout.features_dir(dataset, backbone)).features)
    y = ds.labels
    result = classify_codes(*(a for p in PARTS for a in (features[split[p]], y[split[p]])), 0)
    save_json(
        layout.features_reference(dataset, protocol),
        {
            "dataset": dataset,
            "protocol": protocol,
            "source": ds.source,
            "backbone": backbone,
            "method": "features",
            "dim": int(features.shape[1]),
            **result,
        },
    )
    log.info("classify features (%d-d): accuracy %.4f", features.shape[1], result["accuracy"])
