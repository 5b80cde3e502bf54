"""Batch adapters: the only place where the trainer's two modes differ.

Each turns a batch of row indices into model inputs (:class:`Batch`) and builds the model it
feeds. :class:`FeatureBatches` (head mode, the CPU default) serves cached backbone features and
rotated views; :class:`ImageBatches` (finetune mode, for a GPU) makes every view from the images
with :func:`usdh.features.prepare_image`, the code that made the cached features, and trains the
backbone's last units with the head. Both fingerprint their data, so a checkpoint is resumed only
on the data that wrote it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike

from usdh.augment import Augmentation
from usdh.backbones import Backbone
from usdh.checks import check_angles
from usdh.features import DEEPBIT_ANGLES, ROTATION_MODES, ImageSource, mean_colour, prepare_image
from usdh.hasher import check_views
from usdh.train.model import HashHead, HashModel

__all__ = ["Batch", "Batches", "FeatureBatches", "ImageBatches", "two_views"]


@dataclass
class Batch:
    """Model inputs for one batch: ``x`` (B, ...), rotated views ``x_rot`` (B' * A, ...) or None,
    the semantic term's features (B, D), ``rot_mask`` (B,): which rows the B' rotated views
    belong to (None: every row), and ``x_pair`` (B, ...): a second augmented view of each row
    (then ``x`` is the first), for the terms that compare two views of an image."""

    x: torch.Tensor
    x_rot: torch.Tensor | None
    features: torch.Tensor
    rot_mask: torch.Tensor | None = None
    x_pair: torch.Tensor | None = None


def two_views(n: int, n_views: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """For each of ``n`` images, two distinct view numbers in ``0..n_views - 1``, uniformly over
    the ordered pairs: the first uniform, the second uniform among the others."""
    first = torch.randint(n_views, (n,), generator=generator)
    second = (first + torch.randint(1, n_views, (n,), generator=generator)) % n_views
    return first, second


def _as_float32(name: str, array: ArrayLike, ndim: int) -> torch.Tensor:
    arr = np.asarray(array)
    if arr.ndim != ndim or arr.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be a {ndim}-D numeric array, got {arr.dtype} {arr.shape}")
    # a copy: the input may be a read-only memory map, and training must not depend on it
    return torch.tensor(arr, dtype=torch.float32)


class FeatureBatches:
    """Head mode: cached backbone features ``(N, D)`` and, optionally, rotated views ``(M, A, D)``
    and a bank of augmented views ``(N, V, D)``.

    Row ``j`` of ``rotations`` holds the features of row ``rotation_rows[j]`` (default: row ``j``,
    M = N) rotated by each of ``angles`` (degrees, positive = counter-clockwise, as the features
    stage makes them). With a subset, the rotation term of a batch sees the batch's rows that are
    in it, and every other term sees the whole batch. Row ``j`` of ``augmentations`` holds V
    augmented views of row ``j`` (:mod:`usdh.augment`); a batch for the two-view terms draws two
    distinct ones of each row.
    """

    mode = "head"

    def __init__(
        self,
        features: ArrayLike,
        rotations: ArrayLike | None = None,
        angles: Iterable[float] | None = None,
        rotation_rows: ArrayLike | None = None,
        augmentations: ArrayLike | None = None,
    ) -> None:
        self.features = _as_float32("features", features, 2)
        self.augmentations: torch.Tensor | None = None
        n, d = self.features.shape
        if augmentations is not None:
            aug = _as_float32("augmentations", augmentations, 3)
            check_views("augmentations", tuple(aug.shape), None, n, d, axis="V", two_views=True)
            self.augmentations = aug
        self.rotations: torch.Tensor | None = None
        self.angles: tuple[float, ...] | None = None
        self.rotation_rows: torch.Tensor | None = None
        self._rot_pos: torch.Tensor | None = None
        if rotations is not None:
            rot = _as_float32("rotations", rotations, 3)
            rows = check_views("rotations", tuple(rot.shape), rotation_rows, n, d)
            if rows is not None:
                self.rotation_rows = torch.as_tensor(rows, dtype=torch.int64)
                pos = torch.full((n,), -1, dtype=torch.int64)
                pos[self.rotation_rows] = torch.arange(len(rows))
                self._rot_pos = pos
            if angles is None:
                raise ValueError("rotations given without their angles (degrees, one per view)")
            self.rotations = rot
            self.angles = check_angles(angles, rot.shape[1])
        elif angles is not None:
            raise ValueError("angles given without rotations")

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def has_rotations(self) -> bool:
        return self.rotations is not None

    @property
    def has_pairs(self) -> bool:
        return self.augmentations is not None

    @property
    def in_features(self) -> int:
        return int(self.features.shape[1])

    def build_model(self, head: HashHead) -> HashModel:
        return HashModel(head)

    def to(self, device: torch.device) -> None:
        self.features = self.features.to(device)
        if self.augmentations is not None:
            self.augmentations = self.augmentations.to(device)
        if self.rotations is not None:
            self.rotations = self.rotations.to(device)
        if self._rot_pos is not None:
            self._rot_pos = self._rot_pos.to(device)

    def batch(
        self, idx: torch.Tensor, rotations: bool, pairs: torch.Generator | None = None
    ) -> Batch:
        """The batch of rows ``idx``; rotated views if ``rotations``; with ``pairs`` (the
        generator of the view draws), two augmented views of each row as ``x`` and ``x_pair``."""
        idx = idx.to(self.features.device)
        x = self.features[idx]
        features, x_pair = x, None
        if pairs is not None:
            if self.augmentations is None:
                raise ValueError("two-view terms need augmented views; none were given")
            first, second = two_views(len(idx), self.augmentations.shape[1], pairs)
            x = self.augmentations[idx, first.to(idx.device)]
            x_pair = self.augmentations[idx, second.to(idx.device)]
        x_rot, mask = None, None
        if rotations:
            assert self.rotations is not None
            rows = idx
            if self._rot_pos is not None:
                pos = self._rot_pos[idx]
                mask = pos >= 0
                rows = pos[mask]
            x_rot = self.rotations[rows].reshape(-1, self.features.shape[1])
        return Batch(x, x_rot, features, mask, x_pair)

    def fingerprint(self) -> dict[str, Any]:
        digest = hashlib.sha256(self.features.cpu().numpy().tobytes())
        if self.rotations is not None:
            digest.update(self.rotations.cpu().numpy().tobytes())
        if self.rotation_rows is not None:
            digest.update(self.rotation_rows.numpy().tobytes())
        if self.augmentations is not None:  # only then, so that other fits keep their digest
            digest.update(self.augmentations.cpu().numpy().tobytes())
        return {
            "mode": self.mode,
            "shape": list(self.features.shape),
            "rotations": None if self.rotations is None else list(self.rotations.shape),
            "angles": self.angles,
            "sha256": digest.hexdigest(),
        }


class ImageBatches:
    """Finetune mode: images, the pretrained backbone's cached features of them, the backbone.

    ``features`` (N, D) are the semantic term's targets (the pretrained backbone's features of the
    same images, in the same order). The backbone's last ``n_trainable`` units train; views are
    made by :func:`usdh.features.prepare_image` at ``input_size`` (default: the backbone's), the
    rotated ones by ``angles`` with ``rotation_mode``, as the features stage makes them.
    """

    mode = "finetune"

    def __init__(
        self,
        images: ImageSource,
        features: ArrayLike,
        backbone: Backbone,
        *,
        n_trainable: int = 1,
        input_size: int | None = None,
        angles: Iterable[float] | None = DEEPBIT_ANGLES,
        rotation_mode: str = "crop",
        tail_dropout: bool = False,
        augmentation: Augmentation | None = None,
    ) -> None:
        if not isinstance(images, ImageSource):
            raise TypeError("images must have __len__ and image(i) -> PIL.Image (ImageSource)")
        self.images = images
        self.features = _as_float32("features", features, 2)
        if self.features.shape != (len(images), backbone.feature_dim):
            raise ValueError(
                f"features must be the backbone's features of the images, shape "
                f"({len(images)}, {backbone.feature_dim}), got {tuple(self.features.shape)}"
            )
        if rotation_mode not in ROTATION_MODES:
            raise ValueError(
                f"rotation_mode must be one of {ROTATION_MODES}, got {rotation_mode!r}"
            )
        self.backbone = backbone
        self.n_trainable = n_trainable
        self.input_size = int(input_size or backbone.default_input_size)
        self.angles = check_angles(angles)
        self.rotation_mode = rotation_mode
        self.tail_dropout = tail_dropout
        self.augmentation = augmentation
        self._fill = mean_colour(backbone.mean)
        self._device = torch.device("cpu")

    @property
    def has_rotations(self) -> bool:
        return bool(self.angles)

    @property
    def has_pairs(self) -> bool:
        return self.augmentation is not None

    def __len__(self) -> int:
        return len(self.images)

    @property
    def in_features(self) -> int:
        return int(self.backbone.feature_dim)

    def build_model(self, head: HashHead) -> HashModel:
        body, tail = self.backbone.freeze(self.n_trainable)
        return HashModel(head, body, tail, tail_dropout=self.tail_dropout)

    def to(self, device: torch.device) -> None:
        self.features = self.features.to(device)
        self._device = device

    def _pixels(self, views: list[np.ndarray]) -> torch.Tensor:
        x = torch.from_numpy(np.stack(views)).to(self._device)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        return self.backbone.normalize(x)

    def batch(
        self, idx: torch.Tensor, rotations: bool, pairs: torch.Generator | None = None
    ) -> Batch:
        """With ``pairs``, two fresh augmented views of every image (``x``, ``x_pair``), drawn
        with the recipe of the bank (:mod:`usdh.augment`) under a seed drawn from ``pairs``."""
        plain, rotated, second = [], [], []
        step_seed = None
        if pairs is not None:
            if self.augmentation is None:
                raise ValueError("two-view terms need an augmentation recipe; none was given")
            step_seed = int(torch.randint(2**31 - 1, (1,), generator=pairs))
            recipe = dataclasses.replace(self.augmentation, seed=step_seed)
        for i in idx.tolist():
            img = self.images.image(int(i))
            if step_seed is not None:
                plain.append(recipe.view(img, int(i), 0, self.input_size))
                second.append(recipe.view(img, int(i), 1, self.input_size))
            else:
                plain.append(prepare_image(img, self.input_size))
            if rotations:
                assert self.angles is not None
                rotated.extend(
                    prepare_image(
                        img, self.input_size, a, rotation_mode=self.rotation_mode, fill=self._fill
                    )
                    for a in self.angles
                )
        x_rot = self._pixels(rotated) if rotations else None
        x_pair = self._pixels(second) if second else None
        features = self.features[idx.to(self.features.device)]
        return Batch(self._pixels(plain), x_rot, features, None, x_pair)

    def fingerprint(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "n_images": len(self.images),
            "features_sha256": hashlib.sha256(self.features.cpu().numpy().tobytes()).hexdigest(),
            "backbone": self.backbone.name,
            "weights": self.backbone.weights,
            "n_trainable": self.n_trainable,
            "input_size": self.input_size,
            "angles": self.angles,
            "rotation_mode": self.rotation_mode,
            "tail_dropout": self.tail_dropout,
            **({"augmentation": self.augmentation.record()} if self.augmentation else {}),
        }


#: what :func:`usdh.train.train` accepts as its data
Batches = FeatureBatches | ImageBatches
