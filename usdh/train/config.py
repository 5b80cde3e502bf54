"""What a training run is asked to do and what it returns: stages, the configuration, the result.

:class:`TrainConfig` holds everything that decides the trained weights (plus where and how it runs:
device, threads, the progress bar), checked when it is made, and gives the fingerprint a checkpoint
is matched against. A :class:`Stage` is one run of SGD with its own learning rate and loss-weight
overrides, so DeepBit's two stages are data, not code. :class:`TrainResult` is what
:func:`usdh.train.train` returns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from usdh.checks import check_device_name, check_positive_int
from usdh.train.model import HashHead, HashModel, build_activation, build_binarizer

__all__ = ["OPTIMIZERS", "Stage", "TrainConfig", "TrainResult"]

#: "sgd": SGD with momentum (DeepBit's solver); "adam": Adam (betas 0.9, 0.999)
OPTIMIZERS = ("sgd", "adam")


def _number(name: str, value: Any, *, low: float, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < low or (low_open and v == low):
        op = ">" if low_open else ">="
        raise ValueError(f"{name} must be a finite number {op} {low}, got {v}")
    return v


@dataclass(frozen=True)
class Stage:
    """One training stage: ``epochs`` at learning rate ``lr``, with loss ``weights`` overridden.

    ``weights`` maps term names to weights that replace the base loss config's for this stage
    (a weight of 0 switches a term off, so it is not computed).
    """

    epochs: int
    lr: float
    weights: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_positive_int("stage epochs", self.epochs)
        _number("stage lr", self.lr, low=0.0, low_open=True)
        if not isinstance(self.weights, Mapping):
            raise ValueError(
                f"stage weights must be a mapping term -> weight, got {self.weights!r}"
            )
        for name, w in self.weights.items():
            _number(f"stage weight of {name!r}", w, low=0.0)

    @classmethod
    def from_dict(cls, spec: Stage | Mapping[str, Any]) -> Stage:
        if isinstance(spec, Stage):
            return spec
        if not isinstance(spec, Mapping):
            raise ValueError(f"a stage must be a mapping with epochs, lr, weights; got {spec!r}")
        unknown = set(spec) - {"epochs", "lr", "weights"}
        if unknown:
            raise ValueError(
                f"unknown stage key(s) {sorted(unknown)}; a stage has epochs, lr and weights"
            )
        if "epochs" not in spec or "lr" not in spec:
            raise ValueError(f"a stage needs 'epochs' and 'lr', got {dict(spec)!r}")
        return cls(spec["epochs"], spec["lr"], dict(spec.get("weights") or {}))


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the trained weights (plus device, threads and the progress bar).

    ``loss``: the base config of :func:`usdh.losses.build_loss` (term -> {"weight": w, ...});
    ``stages``: run in order, each with its own learning rate and weight overrides. ``optimizer``
    (:data:`OPTIMIZERS`) with ``momentum`` (SGD) and ``weight_decay``; ``batch_size`` rows per step
    (the last partial batch of an epoch is dropped when there is more than one batch, since batch
    statistics of a handful of rows are noise). ``val_fraction`` of the rows (seeded) are held out
    for validation; ``patience`` epochs without improvement end a stage early (``None``: never).
    The head: ``hidden`` units of one hidden layer (``None``: linear), ``activation``, and the
    ``binarizer`` (with ``binarizer_options``) whose codes the loss terms compare.
    """

    loss: Mapping[str, Mapping[str, Any]]
    stages: Sequence[Stage]
    batch_size: int = 32
    momentum: float = 0.9
    weight_decay: float = 5e-4
    val_fraction: float = 0.1
    patience: int | None = None
    seed: int = 0
    activation: str = "sigmoid"
    hidden: int | None = None
    binarizer: str = "none"
    binarizer_options: Mapping[str, Any] = field(default_factory=dict)
    optimizer: str = "sgd"
    device: str = "auto"
    threads: int | None = None
    progress: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(Stage.from_dict(s) for s in self.stages))
        if not self.stages:
            raise ValueError("at least one training stage is needed")
        check_positive_int("batch_size", self.batch_size)
        _number("momentum", self.momentum, low=0.0)
        _number("weight_decay", self.weight_decay, low=0.0)
        v = _number("val_fraction", self.val_fraction, low=0.0)
        if v >= 1.0:
            raise ValueError(f"val_fraction must lie in [0, 1), got {v}")
        if self.patience is not None:
            check_positive_int("patience", self.patience)
        check_positive_int("seed", self.seed, 0)
        build_activation(self.activation)  # a ValueError naming the activations, if unknown
        object.__setattr__(self, "binarizer_options", dict(self.binarizer_options or {}))
        build_binarizer(self.binarizer, self.binarizer_options)
        if self.hidden is not None:
            check_positive_int("hidden", self.hidden)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        check_device_name(self.device)
        if self.threads is not None:
            check_positive_int("threads", self.threads)
        if not isinstance(self.progress, bool):
            raise ValueError(f"progress must be true or false, got {self.progress!r}")

    def stage_loss_config(self, index: int) -> dict[str, dict[str, Any]]:
        """The loss config of stage ``index``: the base config with the stage's weights."""
        config = {name: dict(spec) for name, spec in self.loss.items()}
        for name, w in self.stages[index].weights.items():
            if name not in config:
                raise ValueError(
                    f"stage {index + 1} sets a weight for {name!r}, which is not a term of the "
                    f"loss config ({', '.join(config)})"
                )
            config[name]["weight"] = w
        return config

    def fingerprint(self) -> dict[str, Any]:
        """What decides the weights (not device, threads or the progress bar)."""
        out = asdict(self)
        for key in ("device", "threads", "progress"):
            out.pop(key)
        out["loss"] = {k: dict(v) for k, v in self.loss.items()}
        out["binarizer_options"] = dict(self.binarizer_options)
        out["stages"] = [
            {"epochs": s.epochs, "lr": s.lr, "weights": dict(s.weights)} for s in self.stages
        ]
        return out


@dataclass
class TrainResult:
    """What :func:`usdh.train.train` returns: the trained model (on its device), the epoch log."""

    model: HashModel
    columns: list[str]
    log: list[dict[str, float]]
    best_epochs: list[int]  # per stage: the (global, 1-based) epoch whose weights the stage kept
    stopped_early: list[bool]
    device: torch.device
    resumed_at: int | None  # epochs already done when this call started (None: fresh run)

    @property
    def head(self) -> HashHead:
        return self.model.head

    def log_array(self) -> NDArray[np.float64]:
        """The log as a float array ``(epochs, len(columns))``, NaN where a value is absent."""
        return np.array(
            [[float(row.get(c, math.nan)) for c in self.columns] for row in self.log],
            dtype=np.float64,
        ).reshape(len(self.log), len(self.columns))
