"""``python -m usdh features <dataset> [--experiment calibration]``: backbone features of every
image, and of rotated views of every protocol's rotation subset; with ``--experiment``, the
features that section names (calibration: GIST) into a folder of their own."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from usdh import layout
from usdh.augment import Augmentation
from usdh.backbones import Backbone, build_backbone
from usdh.data import load_prepared, load_split, training_rows
from usdh.features import extract_features, feature_provenance, save_features
from usdh.params import dataset_params, features_params, section, sections_checker

log = logging.getLogger("usdh")

check_params = sections_checker("datasets", "split_seed", "features", "calibration")
#: images of the speed probe every features stage runs (the first of the dataset)
PROBE_IMAGES = 512


def outputs(params: dict[str, Any], dataset: str, experiment: str = "experiment") -> list[Path]:
    return [layout.features_dir(dataset, features_params(params, experiment)["backbone"])]


def pipeline_backbone(
    params: dict[str, Any], experiment: str = "experiment", dataset: str | None = None
) -> Backbone:
    """The backbone of ``features:`` (as ``experiment`` sees it on ``dataset``), seeded with
    ``split_seed`` (it matters for random weights).

    The features stage and the finetune stage both build it here, so fine-tuning starts from the
    very network whose features are cached.
    """
    fp = features_params(params, experiment, dataset)
    return build_backbone(
        fp["backbone"],
        weights=fp["weights"],
        seed=int(params["split_seed"]),
        input_size=fp["input_size"],
        options=fp.get("gist"),
    )


def extraction_settings(fp: Mapping[str, Any]) -> dict[str, Any]:
    """The ``extract_features`` settings of ``features:``, one place for every stage that runs the
    backbone (features, bank, bank study), so none of them can drift from the others."""
    keys = ("input_size", "batch_size", "device", "dtype", "num_workers", "threads")
    return {**{k: fp[k] for k in keys}, "engine": fp.get("engine", "eager")}


def augmented_views(
    params: dict[str, Any],
    images: Any,
    rows: np.ndarray,
    views: int | None = None,
    first: int = 0,
    dataset: str | None = None,
    experiment: str = "experiment",
) -> tuple[np.ndarray, dict[str, Any]]:
    """Features of the seeded augmented views ``first..views-1`` (default: the recipe's count)
    of ``rows`` of ``dataset``, through the backbone ``experiment``'s features use (calibration:
    GIST), with the bank's recipe and the features stage's settings; and the run's info. The bank
    stage and the bank study both call it, so a larger bank extends the stage's."""
    fp = features_params(params, experiment, dataset)
    recipe = dict(fp.get("augmentation") or {})
    if views is not None:
        recipe["views"] = views
    augmentation = Augmentation.from_params(recipe, int(section(params, "split_seed")))
    info: dict[str, Any] = {}
    out = extract_features(
        images,
        pipeline_backbone(params, experiment, dataset),
        **extraction_settings(fp),
        indices=rows,
        augmentation=augmentation,
        augmentation_views=range(first, augmentation.views),
        info=info,
    )
    return out, info


def rotation_rows(
    splits: list[Mapping[str, np.ndarray]], subset: str = "rotation_subset"
) -> np.ndarray:
    """The images whose rotated (or, with ``subset="augmentation_subset"``, augmented) views are
    computed: every protocol's subset (default: its training images), once each, in the order of
    the first protocol, then the next's new ones.

    Each fit uses only its own split's subset of them (:func:`usdh.fitting.stored_views`).
    """
    rows: list[np.ndarray] = []
    seen: set[int] = set()
    for split in splits:
        part = split[subset] if subset in split else training_rows(split)
        new = np.asarray([i for i in part.tolist() if i not in seen], dtype=np.int64)
        seen.update(new.tolist())
        rows.append(new)
    return np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)


def probe_speed(
    images: Any, backbone: Backbone, settings: Mapping[str, Any], n: int = PROBE_IMAGES
) -> dict[str, Any]:
    """The machine's speed, as every timing is read against: eager PyTorch on the dataset's first
    ``n`` images with the stage's settings (the figure the docs quote machines by)."""
    info: dict[str, Any] = {}
    probe = {**settings, "engine": "eager"}
    extract_features(
        images, backbone, indices=np.arange(min(n, len(images))), info=info, progress=False, **probe
    )
    return {"images": info["n_images"], "engine": "eager", "images_per_s": info["images_per_s"]}


def check_read(params: Mapping[str, Any], dataset: str, experiment: str) -> None:
    """Refuse features that nothing would read: another section's features (``--experiment``)
    serve that section's one dataset only (the main features serve every configured dataset)."""
    if experiment == "experiment":
        return
    wanted = section(params, experiment)["dataset"]
    if dataset != wanted:
        raise ValueError(
            f"nothing reads {experiment} features of {dataset}: the {experiment} section runs on "
            f"{wanted} ({experiment}.dataset); run features {wanted} --experiment {experiment}, "
            f"or set {experiment}.dataset: {dataset}"
        )


def run(params: dict[str, Any], dataset: str, experiment: str = "experiment") -> dict[str, Any]:
    """Backbone features of every image, and of rotated views of the rotation subset (default:
    every training image); returns the timings for the stage's record."""
    check_read(params, dataset, experiment)
    cfg = dataset_params(params, dataset)
    fp = features_params(params, experiment, dataset)
    seed = int(section(params, "split_seed"))
    ds = load_prepared(layout.prepared_dir(dataset))
    splits = [load_split(layout.split_dir(dataset, p), ds) for p in cfg["protocols"]]
    rot_idx = rotation_rows(splits)
    backbone = pipeline_backbone(params, experiment, dataset)
    common = extraction_settings(fp)
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
        rotation_protocol=list(cfg["protocols"]),
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
    timings = {"features": {k: info[k] for k in ("n_forward", "wall_time_s", "images_per_s")}}
    if rotations is not None:
        timings["rotations"] = {k: rinfo[k] for k in ("n_forward", "wall_time_s", "images_per_s")}
    if fp["backbone"] != "gist":
        timings["probe"] = probe_speed(ds, backbone, common)
    return timings
