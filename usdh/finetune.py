"""The paper's setting: a deep hasher fine-tuned end to end with the backbone's last units.

Head mode (the default pipeline) trains only the hash layer on cached features. Here the same
trainer (:func:`usdh.train.train`, :class:`usdh.train.ImageBatches`) and the same loss modules
train the backbone's last ``n_trainable`` units too, on images, so every code must then be made
through the fine-tuned layers: the database and queries are re-encoded from their images. This is
work for a GPU (`device: auto` takes it when present); on a CPU it is practical only for small
images and datasets, which is how it is tested.

Artifacts (``python -m usdh finetune <method> <bits> <seed>``):

    models/finetune/<dataset>/<protocol>/<method>/<bits>/<seed>/   model.npz (the head), tail.pt
        (the fine-tuned backbone units), fit.json, train_log.csv (the per-epoch checkpoint stays in
        the run's scratch folder until the fit is saved)
    codes/finetune/<dataset>/<protocol>/<method>/<bits>/<seed>/    query.npy, database.npy
    metrics/finetune/<dataset>/<protocol>/<method>/<bits>/<seed>.json (and the PR / P@N curves)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image

from usdh.augment import Augmentation
from usdh.backbones import Backbone
from usdh.data import training_part
from usdh.features import ImageSource, extract_features
from usdh.fitting import Fitted, make_hasher, save_fitted
from usdh.io import atomic_path, save_npy
from usdh.layout import Run
from usdh.method import USDH
from usdh.registry import get_method
from usdh.train import ImageBatches, TrainConfig, train

__all__ = ["finetune_method"]


class _Rows:
    """The images of ``rows`` of a source, in that order (an ImageSource)."""

    def __init__(self, source: ImageSource, rows: np.ndarray) -> None:
        self.source, self.rows = source, np.asarray(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def image(self, i: int) -> Image.Image:
        return self.source.image(int(self.rows[i]))


def finetune_method(
    name: str,
    bits: int,
    seed: int,
    images: ImageSource,
    features: np.ndarray,
    split: dict[str, np.ndarray],
    backbone: Backbone,
    run: Run,
    *,
    method_params: dict[str, Any] | None = None,
    n_trainable: int = 1,
    input_size: int | None = None,
    angles: list[float] | None = None,
    rotation_mode: str = "crop",
    batch_size: int | None = None,
    record: dict[str, Any] | None = None,
    augmentation: Augmentation | None = None,
) -> USDH:
    """Fine-tune ``backbone``'s last units and a deep method's head; save both and the codes.

    ``features`` are the pretrained backbone's cached features of every image (the semantic
    term's targets); training uses the rows every method trains on
    (:func:`usdh.data.training_rows`).
    """
    hasher = _finetunable_hasher(name, bits, seed, method_params)
    config: TrainConfig = hasher.train_config()
    part = training_part(split)
    rows = split[part]
    data = ImageBatches(
        _Rows(images, rows),
        features[rows],
        backbone,
        n_trainable=n_trainable,
        input_size=input_size,
        angles=angles,
        rotation_mode=rotation_mode,
        augmentation=augmentation,
    )
    start = time.perf_counter()
    result = train(data, bits, config, checkpoint_dir=run.checkpoints, resume=True)
    train_seconds = time.perf_counter() - start
    views = 1 + (len(angles or ()) if "rotation" in result.columns else 0)
    epochs = len(result.log)
    size = data.input_size
    encode_rows = _image_encoder(images, backbone, size, batch_size, config)

    hasher.n_features_in_ = int(backbone.feature_dim)
    hasher.set_trained(result, config, lambda: encode_rows(rows))
    _save_tail(run, backbone, n_trainable)
    n_encoded, encode_seconds = _save_codes(run, hasher, split, encode_rows)
    save_fitted(
        run,
        Fitted(name, hasher, part, len(rows), train_seconds),
        {
            "mode": "finetune",
            "backbone": backbone.name,
            "weights": backbone.weights,
            "n_trainable": n_trainable,
            "trained_units": backbone.learnable_unit_names[-n_trainable:] if n_trainable else [],
            "input_size": size,
            "epochs": epochs,
            "train_seconds": round(train_seconds, 3),
            "train_images_per_s": round(len(rows) * epochs * views / max(train_seconds, 1e-9), 1),
            "encode_images_per_s": round(n_encoded / max(encode_seconds, 1e-9), 1),
            **(record or {}),
        },
        device=str(result.device),
    )
    return hasher


def _finetunable_hasher(
    name: str, bits: int, seed: int, method_params: dict[str, Any] | None
) -> USDH:
    """A new, unfitted hasher of method ``name``; it must declare that it can be fine-tuned and
    train a USDH-style head."""
    spec = get_method(name)
    if not spec.finetunable:
        raise ValueError(f"method {name!r} does not declare that it can be fine-tuned")
    hasher = make_hasher(name, bits, seed, method_params)
    if not isinstance(hasher, USDH):
        raise ValueError(f"fine-tuning trains a USDH-style head; {name!r} is not one")
    return hasher


def _image_encoder(
    images: ImageSource,
    backbone: Backbone,
    size: int,
    batch_size: int | None,
    config: TrainConfig,
) -> Callable[[np.ndarray], np.ndarray]:
    """``rows -> features`` of those images through the (fine-tuned) backbone."""

    def encode_rows(part_rows: np.ndarray) -> np.ndarray:
        return extract_features(
            images,
            backbone,
            input_size=size,
            batch_size=batch_size,
            device=config.device,
            indices=part_rows,
            progress=config.progress,
            threads=config.threads,
        )

    return encode_rows


def _save_tail(run: Run, backbone: Backbone, n_trainable: int) -> None:
    """The fine-tuned backbone units' weights: ``tail.pt`` in the run's model folder."""
    tail = {
        k: v.detach().cpu() for k, v in backbone.trainable_tail(n_trainable).state_dict().items()
    }
    with atomic_path(run.model_dir / "tail.pt") as tmp:
        torch.save(tail, tmp)


def _save_codes(
    run: Run,
    hasher: USDH,
    split: dict[str, np.ndarray],
    encode_rows: Callable[[np.ndarray], np.ndarray],
) -> tuple[int, float]:
    """Encode and save the query and database codes; how many images and how many seconds."""
    start = time.perf_counter()
    n_encoded = 0
    for part_name in ("query", "database"):
        codes = hasher.encode(encode_rows(split[part_name]))
        n_encoded += len(codes)
        save_npy(run.code_file(part_name), codes)
    return n_encoded, time.perf_counter() - start
