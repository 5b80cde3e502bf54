"""``python -m usdh prepare <dataset>``: find (or download) a dataset, decode it once."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from usdh import layout
from usdh.data import load_dataset, prepare_dataset
from usdh.params import dataset_params, sections_checker

log = logging.getLogger("usdh")

check_params = sections_checker("datasets")


def outputs(params: dict[str, Any], dataset: str) -> list[Path]:
    return [layout.prepared_dir(dataset)]


def run(params: dict[str, Any], dataset: str) -> None:
    """Find (or download) the dataset and decode it once into a compact cache."""
    cfg = dataset_params(params, dataset)
    ds = load_dataset(dataset, path=cfg.get("path"), download=bool(cfg.get("download", False)))
    summary = prepare_dataset(ds, layout.prepared_dir(dataset))
    log.info(
        "prepared %s (%s): %d images in %.1f s",
        dataset,
        ds.source,
        len(ds),
        summary.get("seconds", float("nan")),
    )
