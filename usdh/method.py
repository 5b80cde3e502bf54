"""USDH: a hash head on backbone features, trained by four unsupervised criteria.

What the paper's abstract states: VGG-19 features, a hash layer, and four criteria: semantic
(neighbourhoods in feature space kept in Hamming space), quantisation, maximum bit entropy and
rotation invariance. Everything else (term formulas, weights, schedule, threshold) is documented as
ours or DeepBit's in ``docs/usdh.md``; nothing here is presented as the paper's setting.

The class is the hasher face (:class:`usdh.hasher.BaseHasher`) over :func:`usdh.train.train` in
head mode: ``fit`` trains on cached features (plus rotated views when the rotation term is on),
``encode`` thresholds the relaxed codes. :class:`baselines.deepbit.DeepBit` is this class with
DeepBit's terms, weights, stages and threshold as defaults.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
from numpy.typing import ArrayLike, NDArray

from usdh.hasher import BaseHasher, TrainingViews, check_features

__all__ = ["THRESHOLDS", "USDH"]

#: "half": b = 1[h > 0.5] (the sign of the logit); "mean": b = 1[h > mean of h over the training
#: rows], per bit (DeepBit's evaluation)
THRESHOLDS = ("half", "mean")


class USDH(BaseHasher):
    """USDH on cached backbone features (head mode of :mod:`usdh.train`).

    Parameters (defaults are our choices unless noted; see ``docs/usdh.md``):

    * ``loss``: term -> options, merged term by term over ``DEFAULT_LOSS`` (so
      ``{"rotation": {"weight": 0}}`` switches one term off and keeps the rest). Terms: semantic,
      quantization, entropy, rotation (``usdh.losses``). ``None``: ``DEFAULT_LOSS``.
    * ``stages``: a list of ``{"epochs", "lr", "weights"}`` (missing epochs / lr come from
      ``epochs`` / ``lr``; ``weights`` override the loss weights for that stage). ``None``: the
      class's ``DEFAULT_STAGES`` (USDH: one stage).
    * ``epochs``, ``lr``, ``batch_size``, ``momentum``, ``weight_decay``: SGD. Momentum 0.9,
      weight decay 5e-4 and batch 32 are DeepBit's release; lr 1e-2 was chosen on the validation
      split (DeepBit's 1e-3 leaves the head under-trained after 50 epochs).
    * ``val_fraction``, ``patience``: seeded validation rows held out of training; a stage stops
      after ``patience`` epochs without a lower validation loss and keeps its best epoch.
    * ``threshold``: ``"half"`` (b = 1[h > 0.5]) or ``"mean"`` (per-bit mean of h over the
      training rows).
    * ``activation``: ``"sigmoid"`` (h in (0, 1)) or ``"relu"`` (DeepBit's released network).
    * ``device`` (``"auto"``: CUDA when present), ``threads`` (pin CPU threads for bitwise
      repeatability across machines), ``progress`` (tqdm bar): where and how, not what, it learns.

    Learned state: ``weight_`` (n_bits, D), ``bias_`` (n_bits,), ``threshold_`` (n_bits,),
    ``log_`` (epochs, columns) with ``log_columns_`` (the training log: per-term train and
    validation losses), ``best_epochs_`` (the epoch each stage kept) and ``config_`` (the resolved
    training configuration as JSON). ``device_`` says where it trained (not saved).
    """

    _state: ClassVar[tuple[str, ...]] = (
        "weight_",
        "bias_",
        "threshold_",
        "log_",
        "log_columns_",
        "best_epochs_",
        "config_",
    )
    _min_fit_rows: ClassVar[int] = 4

    #: our choice: all four criteria of the abstract, equal weight except the rotation term,
    #: which keeps DeepBit's small weight (its loss is on a different scale)
    DEFAULT_LOSS: ClassVar[dict[str, dict[str, Any]]] = {
        "semantic": {"weight": 3.0, "construction": "cosine"},
        "quantization": {"weight": 1.0},
        "entropy": {"weight": 1.0, "form": "binary_entropy"},
        "rotation": {"weight": 0.001, "sigma": 5.0},
    }
    DEFAULT_STAGES: ClassVar[tuple[dict[str, Any], ...]] = ({},)

    def __init__(
        self,
        n_bits: int = 32,
        random_state: int = 0,
        loss: Mapping[str, Mapping[str, Any]] | None = None,
        stages: Sequence[Mapping[str, Any]] | None = None,
        epochs: int = 50,
        lr: float = 1e-2,
        batch_size: int = 32,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        val_fraction: float = 0.1,
        patience: int | None = 10,
        threshold: str = "half",
        activation: str = "sigmoid",
        device: str = "auto",
        threads: int | None = None,
        progress: bool = True,
    ) -> None:
        super().__init__(n_bits=n_bits, random_state=random_state)
        self.loss = loss
        self.stages = stages
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.val_fraction = val_fraction
        self.patience = patience
        self.threshold = threshold
        self.activation = activation
        self.device = device
        self.threads = threads
        self.progress = progress

    # -- configuration -----------------------------------------------------------------------------
    def loss_config(self) -> dict[str, dict[str, Any]]:
        """``DEFAULT_LOSS`` with ``loss`` merged in, term by term, and checked by
        :func:`usdh.losses.build_loss` (unknown terms or options, negative weights)."""
        from usdh.losses import build_loss

        config = {name: dict(spec) for name, spec in self.DEFAULT_LOSS.items()}
        if self.loss is not None:
            if not isinstance(self.loss, Mapping):
                raise ValueError(f"loss must be a mapping term -> options, got {self.loss!r}")
            for name, spec in self.loss.items():
                if not isinstance(spec, Mapping):
                    raise ValueError(f"loss[{name!r}] must be a mapping of options, got {spec!r}")
                config.setdefault(name, {"weight": 0.0}).update(spec)
        build_loss(config)
        return config

    def train_config(self) -> Any:
        """The :class:`usdh.train.TrainConfig` that ``fit`` runs."""
        from usdh.train import TrainConfig

        stages = self.DEFAULT_STAGES if self.stages is None else self.stages
        if isinstance(stages, Mapping | str) or not isinstance(stages, Sequence):
            raise ValueError(f"stages must be a list of {{epochs, lr, weights}}, got {stages!r}")
        resolved = []
        for s in stages:
            if not isinstance(s, Mapping):
                raise ValueError(f"a stage must be a mapping {{epochs, lr, weights}}, got {s!r}")
            resolved.append({"epochs": self.epochs, "lr": self.lr, **s})
        if self.threshold not in THRESHOLDS:
            raise ValueError(f"threshold must be one of {THRESHOLDS}, got {self.threshold!r}")
        return TrainConfig(
            loss=self.loss_config(),
            stages=resolved,
            batch_size=self.batch_size,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            val_fraction=self.val_fraction,
            patience=self.patience,
            seed=int(self.random_state),
            activation=self.activation,
            device=self.device,
            threads=self.threads,
            progress=self.progress,
        )

    # -- fit ---------------------------------------------------------------------------------------
    def fit(
        self,
        X: ArrayLike,
        y: Any = None,
        *,
        views: TrainingViews | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        resume: bool = False,
    ) -> Self:
        """Train on features ``X`` (N, D); ``views.rotations`` (N, A, D) are X's rows rotated by
        ``views.angles``, needed when the rotation term is on. ``checkpoint_dir`` keeps a
        checkpoint and ``train_log.csv`` per epoch; ``resume`` continues from it."""
        from usdh.train import FeatureBatches, train

        arr = self._check_fit_input(X)
        config = self.train_config()
        views = (views or TrainingViews()).checked(arr)
        data = FeatureBatches(arr, views.rotations, views.angles)
        result = train(data, self.n_bits, config, checkpoint_dir=checkpoint_dir, resume=resume)
        self.set_trained(result, config, lambda: arr)
        self.n_features_in_ = arr.shape[1]
        return self

    def set_trained(
        self, result: Any, config: Any, train_features: Callable[[], NDArray[np.floating]]
    ) -> None:
        """Take the learned state from a :class:`usdh.train.TrainResult` (``fit`` and the
        finetune stage share this). ``train_features()`` gives the training rows' features, read
        only for the ``"mean"`` threshold."""
        linear = result.head.linear
        self.weight_ = linear.weight.detach().cpu().numpy().copy()
        self.bias_ = linear.bias.detach().cpu().numpy().copy()
        self.threshold_ = np.full(self.n_bits, 0.5)
        if self.threshold == "mean":
            self.threshold_ = self._relaxed(train_features()).mean(axis=0)
        self.log_ = result.log_array()
        self.log_columns_ = np.asarray(result.columns, dtype=str)
        self.best_epochs_ = np.asarray(result.best_epochs, dtype=np.int64)
        self.config_ = json.dumps(config.fingerprint(), sort_keys=True)
        self.device_ = str(result.device)

    # -- encode ------------------------------------------------------------------------------------
    def _relaxed(self, X: NDArray[np.floating]) -> NDArray[np.float64]:
        """The trained head's forward pass, ``activation(X W^T + b)``, on the CPU in float64: the
        head's own linear map and activation module (:func:`usdh.train.model.build_activation`),
        so there is one definition of each activation."""
        import torch
        import torch.nn.functional as F

        from usdh.train.model import build_activation

        # F.linear is what nn.Linear computes; building an nn.Linear would also draw an unused
        # initialisation from torch's global generator
        activation = build_activation(self.activation)
        weight = torch.from_numpy(self.weight_.astype(np.float64))
        bias = torch.from_numpy(self.bias_.astype(np.float64))
        with torch.no_grad():
            h = activation(F.linear(torch.from_numpy(np.array(X, dtype=np.float64)), weight, bias))
        return h.numpy()

    def relaxed(self, X: ArrayLike) -> NDArray[np.float64]:
        """Relaxed codes ``h = activation(X W^T + b)`` (sigmoid: in (0, 1)), ``(n, n_bits)``, for
        analyses."""
        self._check_fitted()
        return self._relaxed(check_features(X, n_features=self.n_features_in_, min_rows=0))

    def _project(self, X: NDArray[np.floating]) -> NDArray[np.floating]:
        return self._relaxed(X) - self.threshold_

    def write_log(self, path: str | os.PathLike[str]) -> None:
        """The training log as CSV (epoch, stage, lr, total, terms, val_*, seconds), atomically."""
        from usdh.train import write_log_csv

        self._check_fitted()
        columns = [str(c) for c in self.log_columns_]
        rows = [dict(zip(columns, map(float, r), strict=True)) for r in self.log_]
        write_log_csv(Path(path), columns, rows)
