"""``python -m usdh split <dataset>``: the seeded index files of every configured protocol."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from usdh import layout
from usdh.data import load_prepared, make_split, save_split
from usdh.params import dataset_params, section, sections_checker

log = logging.getLogger("usdh")

check_params = sections_checker("datasets", "split_seed")


def outputs(params: dict[str, Any], dataset: str) -> list[Path]:
    return [layout.split_dir(dataset)]


def run(params: dict[str, Any], dataset: str) -> None:
    """Write the seeded index files of every protocol configured for the dataset."""
    cfg = dataset_params(params, dataset)
    seed = int(section(params, "split_seed"))
    ds = load_prepared(layout.prepared_dir(dataset))
    for protocol in cfg["protocols"]:
        split = make_split(
            ds,
            protocol,
            seed=seed,
            train_subset=cfg.get("train_subset"),
            rotation_subset=cfg.get("rotation_subset"),
            validation_queries=cfg.get("validation_queries"),
            augmentation_subset=cfg.get("augmentation_subset"),
        )
        save_split(split, layout.split_dir(dataset, protocol))
        sizes = ", ".join(f"{k} {len(v)}" for k, v in split.items())
        log.info("split %s/%s (seed %d): %s", dataset, protocol, seed, sizes)
