"""``python -m usdh features <dataset>``: backbone features of every image, and of rotated views
of the main protocol's rotation subset."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from usdh import layout
from usdh.backbones import Backbone, build_backbone
from usdh.data import load_prepared, load_split, training_rows
from usdh.features import extract_features, feature_provenance, save_features
from usdh.params import section
from usdh.stages.common import dataset_params

log = logging.getLogger("usdh")


def outputs(params: dict[str, Any], dataset: str) -> list[Path]:
    return [layout.features_dir(dataset)]


def pipeline_backbone(params: dict[str, Any]) -> Backbone:
    """The backbone of ``features:``, seeded with ``split_seed`` (it matters for random weights).

    The features stage and the finetune stage both build it here, so fine-tuning starts from the
    very network whose features are cached.
    """
    fp = section(params, "features")
    return build_backbone(fp["backbone"], weights=fp["weights"], seed=int(params["split_seed"]))


def run(params: dict[str, Any], dataset: str) -> None:
    """Backbone features of every image, and of rotated views of the rotation subset (default:
    every training image)."""
    cfg = dataset_params(params, dataset)
    fp = section(params, "features")
    seed = int(section(params, "split_seed"))
    ds = load_prepared(layout.prepared_dir(dataset))
    main_protocol = cfg["protocols"][0]
    split = load_split(layout.split_dir(dataset, main_protocol), ds)
    rot_idx = training_rows(split)
    if "rotation_subset" in split:
        rot_idx = split["rotation_subset"]
    backbone = pipeline_backbone(params)
    common = {
        "input_size": fp["input_size"],
        "batch_size": fp["batch_size"],
        "device": fp["device"],
        "dtype": fp["dtype"],
        "num_workers": fp["num_workers"],
        "threads": fp["threads"],
    }
    info: dict[str, Any] = {}
    feats = extract_features(ds, backbone, info=info, **common)
    rinfo: dict[str, Any] = {}
    angles = fp["rotation_angles"]
    rotations = None
    if angles:
        rotations = extract_features(
            ds,
            backbone,
            angles=angles,
            indices=rot_idx,
            rotation_mode=fp["rotation_mode"],
            info=rinfo,
            **common,
        )
    provenance = feature_provenance(
        info,
        dataset=ds.name,
        source=ds.source,
        seed=seed,
        rotations_run=rinfo if rotations is not None else None,
        rotation_protocol=main_protocol,
    )
    out = layout.features_dir(dataset, fp["backbone"])
    save_features(
        out,
        feats,
        rotations,
        provenance=provenance,
        rotation_indices=rot_idx if rotations is not None else None,
        dtype=fp["storage_dtype"],
    )
    log.info("features %s/%s: %s -> %s", dataset, fp["backbone"], feats.shape, out)
