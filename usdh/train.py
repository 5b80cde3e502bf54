"""The one trainer of the deep hashers (USDH, DeepBit): stages, SGD, validation, checkpoints, logs.

A deep hasher here is a hash head (linear ``D -> K``, sigmoid) on a backbone, trained by
minimising a :class:`usdh.losses.CompositeLoss` of relaxed codes ``h`` in (0, 1). There is one
training loop and two ways of turning a batch of row indices into what the loss needs,
``(h, features, h_rot)``:

* **head** (:class:`FeatureBatches`, the CPU default): the backbone is frozen, so its features are
  computed once by the features stage and the head trains on the cached ``(N, D)`` features and,
  when the rotation term is active, the cached rotated views ``(N, A, D)``. Minutes on a CPU.
* **finetune** (:class:`ImageBatches`, for a GPU): end to end on images, with the backbone's last
  ``n_trainable`` units trainable (:meth:`usdh.backbones.Backbone.freeze`). Every view is made on
  the fly by :func:`usdh.features.prepare_image`, the code that made the cached features, so the
  two modes see the same pixels. The semantic term's features are the pretrained backbone's cached
  features, passed in, so its neighbourhood targets do not drift as the backbone trains.

Training runs a list of :class:`Stage` (epochs, learning rate, loss-weight overrides): DeepBit's
two stages are data, not code. Each stage starts a fresh SGD optimiser (as a second Caffe solver
run from the first stage's weights does). Within a stage the model is evaluated on a seeded
validation subset carved from the training rows after every epoch; training stops after
``patience`` epochs without a lower validation total, and the stage ends on its best validation
epoch (the totals of different stages weigh different terms, so they are compared only within a
stage). With ``val_fraction=0`` there is no validation and a stage ends on its last epoch.

Determinism: all randomness (head init, validation split, shuffling, dropout) comes from ``seed``
through a seeded ``torch.Generator`` and torch's generator (forked, so the caller's state is left
alone), under :func:`usdh.device.torch_determinism`. On the CPU the same inputs, seed and thread
count give bitwise identical weights. A checkpoint (model, optimiser, position, RNG states, best
state, log) is written atomically after every epoch; ``resume=True`` continues from it and ends
bitwise where an uninterrupted run ends.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import nn
from tqdm.auto import tqdm

from usdh.backbones import Backbone
from usdh.device import resolve_device, seed_everything, torch_determinism
from usdh.features import (
    DEEPBIT_ANGLES,
    ROTATION_MODES,
    ImageSource,
    _check_positive_int,
    _mean_colour,
    prepare_image,
)
from usdh.features import _check_angles as _check_feature_angles
from usdh.io import atomic_path
from usdh.losses import CompositeLoss, build_loss

__all__ = [
    "ACTIVATIONS",
    "CHECKPOINT_FILE",
    "INIT_STD",
    "LOG_FILE",
    "FeatureBatches",
    "HashHead",
    "HashModel",
    "ImageBatches",
    "NonFiniteLossError",
    "Stage",
    "TrainConfig",
    "TrainResult",
    "train",
    "write_log_csv",
]

CHECKPOINT_FILE = "checkpoint.pt"
LOG_FILE = "train_log.csv"
#: DeepBit's fc8 initialisation (Gaussian, std 0.01, zero bias)
INIT_STD = 0.01
#: "sigmoid": h in (0, 1) (the USDH reconstruction); "relu": DeepBit's released prototxt
#: (``relu8_kevin`` after fc8), h >= 0, thresholded at 0.5 all the same
ACTIVATIONS = ("sigmoid", "relu")
_CHECKPOINT_VERSION = 1


class NonFiniteLossError(RuntimeError):
    """A loss term (or the weights) became NaN or infinite; the message names epoch and terms."""


# -- the model -------------------------------------------------------------------------------------
class HashHead(nn.Module):
    """Linear ``D -> n_bits`` then sigmoid (or ReLU): relaxed codes ``h``, bit = ``h > threshold``.

    Initialised as DeepBit's fc8 (Gaussian, std 0.01, zero bias) from ``generator``, so the
    initial weights depend on the seed only, not on the global generator's history.
    """

    def __init__(
        self,
        in_features: int,
        n_bits: int,
        generator: torch.Generator | None = None,
        activation: str = "sigmoid",
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.activation = activation
        self.linear = nn.Linear(in_features, n_bits)
        with torch.no_grad():
            self.linear.weight.normal_(0.0, INIT_STD, generator=generator)
            self.linear.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(x)
        return torch.sigmoid(z) if self.activation == "sigmoid" else torch.relu(z)


class HashModel(nn.Module):
    """``head(tail(body(x)))``: a frozen body (no gradients), a trainable tail, the hash head.

    Head mode has neither body nor tail (``x`` are cached features). The body stays in eval mode;
    the tail trains in eval mode too unless ``tail_dropout`` (VGG's fc7 unit opens with dropout),
    so by default fine-tuning sees the same deterministic features the head mode caches.
    """

    def __init__(
        self,
        head: HashHead,
        body: nn.Module | None = None,
        tail: nn.Module | None = None,
        tail_dropout: bool = False,
    ) -> None:
        super().__init__()
        self.head = head
        self.body = body
        self.tail = tail
        self.tail_dropout = tail_dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.body is not None:
            with torch.no_grad():
                x = self.body(x)
        if self.tail is not None:
            x = self.tail(x)
        return self.head(x)

    def train(self, mode: bool = True) -> HashModel:
        super().train(mode)
        if self.body is not None:
            self.body.eval()
        if self.tail is not None and not self.tail_dropout:
            self.tail.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Head and tail tensors (what a checkpoint holds; the frozen body never changes)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("body.")}

    def load_trainable_state(self, state: Mapping[str, torch.Tensor]) -> None:
        result = self.load_state_dict(dict(state), strict=False)
        missing = [k for k in result.missing_keys if not k.startswith("body.")]
        if missing or result.unexpected_keys:
            raise ValueError(
                f"checkpoint does not match the model: missing {missing[:5]}, "
                f"unexpected {result.unexpected_keys[:5]}"
            )


# -- batches: the only place where the two modes differ --------------------------------------------
@dataclass
class Batch:
    """Model inputs for one batch: ``x`` (B, ...), rotated views ``x_rot`` (B * A, ...) or None,
    and the semantic term's features (B, D)."""

    x: torch.Tensor
    x_rot: torch.Tensor | None
    features: torch.Tensor


def _as_float32(name: str, array: ArrayLike, ndim: int) -> torch.Tensor:
    arr = np.asarray(array)
    if arr.ndim != ndim or arr.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be a {ndim}-D numeric array, got {arr.dtype} {arr.shape}")
    # a copy: the input may be a read-only memory map, and training must not depend on it
    return torch.tensor(arr, dtype=torch.float32)


def _check_angles(angles: Iterable[float] | None, n: int | None) -> tuple[float, ...] | None:
    """The features stage's check of rotation angles, plus: one angle per stored view."""
    out = _check_feature_angles(angles)
    if out is not None and n is not None and len(out) != n:
        raise ValueError(f"{len(out)} angles given for rotated views of {n} angles each")
    return out


class FeatureBatches:
    """Head mode: cached backbone features ``(N, D)`` and, optionally, rotated views ``(N, A, D)``.

    Row ``i`` of ``rotations`` holds the features of image ``i`` rotated by each of ``angles``
    (degrees, positive = counter-clockwise, as the features stage makes them).
    """

    mode = "head"

    def __init__(
        self,
        features: ArrayLike,
        rotations: ArrayLike | None = None,
        angles: Iterable[float] | None = None,
    ) -> None:
        self.features = _as_float32("features", features, 2)
        self.rotations: torch.Tensor | None = None
        self.angles: tuple[float, ...] | None = None
        if rotations is not None:
            rot = _as_float32("rotations", rotations, 3)
            if rot.shape[0] != self.features.shape[0] or rot.shape[2] != self.features.shape[1]:
                raise ValueError(
                    f"rotations must have shape (N, A, D) = ({self.features.shape[0]}, A, "
                    f"{self.features.shape[1]}) to match the features, got {tuple(rot.shape)}"
                )
            if angles is None:
                raise ValueError("rotations given without their angles (degrees, one per view)")
            self.rotations = rot
            self.angles = _check_angles(angles, rot.shape[1])
        elif angles is not None:
            raise ValueError("angles given without rotations")

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def has_rotations(self) -> bool:
        return self.rotations is not None

    @property
    def in_features(self) -> int:
        return int(self.features.shape[1])

    def build_model(self, head: HashHead) -> HashModel:
        return HashModel(head)

    def to(self, device: torch.device) -> None:
        self.features = self.features.to(device)
        if self.rotations is not None:
            self.rotations = self.rotations.to(device)

    def batch(self, idx: torch.Tensor, rotations: bool) -> Batch:
        idx = idx.to(self.features.device)
        x = self.features[idx]
        x_rot = None
        if rotations:
            assert self.rotations is not None
            x_rot = self.rotations[idx].reshape(-1, self.features.shape[1])
        return Batch(x, x_rot, x)

    def fingerprint(self) -> dict[str, Any]:
        digest = hashlib.sha256(self.features.cpu().numpy().tobytes())
        if self.rotations is not None:
            digest.update(self.rotations.cpu().numpy().tobytes())
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
        self.angles = _check_angles(angles, None)
        self.rotation_mode = rotation_mode
        self.tail_dropout = tail_dropout
        self._fill = _mean_colour(backbone.mean)
        self._device = torch.device("cpu")

    @property
    def has_rotations(self) -> bool:
        return bool(self.angles)

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

    def batch(self, idx: torch.Tensor, rotations: bool) -> Batch:
        plain, rotated = [], []
        for i in idx.tolist():
            img = self.images.image(int(i))
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
        return Batch(self._pixels(plain), x_rot, self.features[idx.to(self.features.device)])

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
        }


Batches = FeatureBatches | ImageBatches


# -- configuration ---------------------------------------------------------------------------------
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
        _check_positive_int("stage epochs", self.epochs, 1)
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
    ``stages``: run in order, each with its own learning rate and weight overrides. SGD with
    ``momentum`` and ``weight_decay``; ``batch_size`` rows per step (the last partial batch of an
    epoch is dropped when there is more than one batch, since batch statistics of a handful of rows
    are noise). ``val_fraction`` of the rows (seeded) are held out for validation; ``patience``
    epochs without improvement end a stage early (``None``: never).
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
    device: str = "auto"
    threads: int | None = None
    progress: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(Stage.from_dict(s) for s in self.stages))
        if not self.stages:
            raise ValueError("at least one training stage is needed")
        _check_positive_int("batch_size", self.batch_size, 1)
        _number("momentum", self.momentum, low=0.0)
        _number("weight_decay", self.weight_decay, low=0.0)
        v = _number("val_fraction", self.val_fraction, low=0.0)
        if v >= 1.0:
            raise ValueError(f"val_fraction must lie in [0, 1), got {v}")
        if self.patience is not None:
            _check_positive_int("patience", self.patience, 1)
        _check_positive_int("seed", self.seed, 0)
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")

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
        out["stages"] = [
            {"epochs": s.epochs, "lr": s.lr, "weights": dict(s.weights)} for s in self.stages
        ]
        return out


# -- the result ------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    """What :func:`train` returns: the trained model (on its device) and the epoch log."""

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


def write_log_csv(
    path: str | Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]
) -> None:
    """Write the epoch log as CSV (atomically); absent values (NaN) are left empty."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        cells = []
        for c in columns:
            v = row.get(c, math.nan)
            cells.append("" if isinstance(v, float) and math.isnan(v) else repr(v))
        writer.writerow(cells)
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


# -- the loop --------------------------------------------------------------------------------------
def _split(n: int, val_fraction: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (train, validation) row indices; validation rows are never trained on."""
    n_val = round(val_fraction * n)
    if val_fraction > 0:
        n_val = max(n_val, 1)
    if n - n_val < 2:
        raise ValueError(
            f"{n} training rows leave {n - n_val} to train on after holding out "
            f"val_fraction={val_fraction}; at least 2 are needed"
        )
    perm = torch.randperm(n, generator=gen)
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def _batches(idx: torch.Tensor, batch_size: int, gen: torch.Generator | None) -> list[torch.Tensor]:
    """Shuffled (``gen``) or ordered batches; a partial last batch is dropped if others exist."""
    if gen is not None:
        idx = idx[torch.randperm(len(idx), generator=gen)]
        if len(idx) > batch_size:
            idx = idx[: len(idx) // batch_size * batch_size]
    return list(idx.split(batch_size))


def _loss_of(
    model: HashModel,
    loss_fn: CompositeLoss,
    data: Batches,
    idx: torch.Tensor,
    angles: torch.Tensor | None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The one place a batch becomes ``(h, features, h_rot)`` and a loss."""
    need_rot = "rotations" in loss_fn.needs
    b = data.batch(idx, need_rot)
    x = b.x if b.x_rot is None else torch.cat([b.x, b.x_rot])
    out = model(x)
    n = b.x.shape[0]
    h = out[:n]
    h_rot = out[n:].reshape(n, -1, out.shape[1]) if need_rot else None
    features = b.features if "features" in loss_fn.needs else None
    index = idx if "index" in loss_fn.needs else None
    return loss_fn(
        h, features=features, h_rot=h_rot, angles=angles if need_rot else None, index=index
    )


def _check_finite(total: torch.Tensor, terms: Mapping[str, float], where: str, lr: float) -> None:
    if bool(torch.isfinite(total)):
        return
    bad = [f"{k}={v}" for k, v in terms.items() if not math.isfinite(v)]
    what = ", ".join(bad) if bad else f"the weighted total ({float(total.detach())})"
    raise NonFiniteLossError(
        f"the loss became non-finite in {where}: {what}. Check the features for NaN/inf and "
        f"try a lower learning rate (this stage's lr = {lr:g})"
    )


def _fingerprint(config: TrainConfig, data: Batches, n_bits: int) -> str:
    record = {"config": config.fingerprint(), "data": data.fingerprint(), "n_bits": n_bits}
    text = json.dumps(record, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _rng_state(gen: torch.Generator, device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"generator": gen.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: Mapping[str, Any], gen: torch.Generator, device: torch.device) -> None:
    gen.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _snapshot(model: HashModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.trainable_state().items()}


@dataclass
class _Progress:
    """Where training stands after an epoch: all a checkpoint needs besides weights and RNG."""

    stage: int = 0
    epoch_in_stage: int = 0
    epoch: int = 0
    log: list[dict[str, float]] = field(default_factory=list)
    best_val: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    best_epochs: list[int] = field(default_factory=list)
    stopped_early: list[bool] = field(default_factory=list)


def train(
    data: Batches,
    n_bits: int,
    config: TrainConfig,
    *,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    callback: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train a hash head (and, in finetune mode, the backbone's tail) through ``config.stages``.

    ``data`` is :class:`FeatureBatches` (head mode) or :class:`ImageBatches` (finetune mode).
    With ``checkpoint_dir``, ``checkpoint.pt`` and ``train_log.csv`` are rewritten there
    (atomically) after every epoch; ``resume=True`` continues from the checkpoint when it was made
    by the same configuration and data (otherwise it warns and starts afresh) and returns at once
    if that run had finished. ``callback(row)`` is called with each epoch's log row after its
    checkpoint is written (an exception from it interrupts training, as a crash would).
    Raises :class:`NonFiniteLossError` naming the stage, epoch, batch and term when a loss goes
    NaN or infinite.
    """
    if not isinstance(data, FeatureBatches | ImageBatches):
        raise TypeError(f"data must be FeatureBatches or ImageBatches, got {type(data).__name__}")
    _check_positive_int("n_bits", n_bits, 1)
    device = resolve_device(config.device)
    loss_fns = [build_loss(config.stage_loss_config(s)) for s in range(len(config.stages))]
    for s, fn in enumerate(loss_fns):
        if not fn.active:
            raise ValueError(f"stage {s + 1} has no active loss term (every weight is 0)")
        if "rotations" in fn.needs and not data.has_rotations:
            raise ValueError(
                f"the rotation term is active in stage {s + 1} but there are no rotated views; "
                f"pass rotations and angles, or set the rotation weight to 0"
            )
    terms: list[str] = []
    for fn in loss_fns:
        terms.extend(t for t in fn.active if t not in terms)
    columns = ["epoch", "stage", "lr", "total", *terms, "val_total"]
    columns += [f"val_{t}" for t in terms] + ["seconds"]

    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir is not None else None
    fingerprint = _fingerprint(config, data, n_bits)
    cuda_devices = [device.index or 0] if device.type == "cuda" else []

    with torch.random.fork_rng(devices=cuda_devices), torch_determinism(config.threads):
        seed_everything(config.seed)
        gen = torch.Generator().manual_seed(config.seed)
        head = HashHead(data.in_features, n_bits, gen, config.activation)
        model = data.build_model(head).to(device)
        data.to(device)
        for fn in loss_fns:
            fn.to(device)
            # global targets (a kNN graph, distance thresholds) from every training row, seeded
            fn.prepare(data.features, torch.Generator().manual_seed(config.seed))
        angles = (
            torch.tensor(data.angles, dtype=torch.float32, device=device) if data.angles else None
        )
        train_idx, val_idx = _split(len(data), config.val_fraction, gen)

        prog = _Progress()
        best: dict[str, torch.Tensor] | None = None
        opt_state: dict[str, Any] | None = None
        resumed_at = None
        if resume and ckpt_path is not None and ckpt_path.is_file():
            ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
            if ckpt.get("version") != _CHECKPOINT_VERSION or ckpt.get("fingerprint") != fingerprint:
                warnings.warn(
                    f"{ckpt_path} was written by a different configuration or data; "
                    f"ignoring it and training from scratch",
                    stacklevel=2,
                )
            else:
                model.load_trainable_state(ckpt["model"])
                prog = _Progress(**ckpt["progress"])
                best = ckpt["best"]
                opt_state = ckpt["optimizer"]
                _set_rng_state(ckpt["rng"], gen, device)
                resumed_at = prog.epoch

        n_train, bs = len(train_idx), config.batch_size
        n_batches = n_train // bs if n_train > bs else 1
        total_epochs = sum(s.epochs for s in config.stages)
        bar = tqdm(
            total=total_epochs * n_batches,
            initial=sum(s.epochs for s in config.stages[: prog.stage]) * n_batches
            + prog.epoch_in_stage * n_batches,
            unit="batch",
            desc=f"train {data.mode}",
            disable=not config.progress,
        )
        with bar:
            while prog.stage < len(config.stages):
                stage = config.stages[prog.stage]
                loss_fn = loss_fns[prog.stage]
                optimizer = torch.optim.SGD(
                    model.trainable_parameters(),
                    lr=stage.lr,
                    momentum=config.momentum,
                    weight_decay=config.weight_decay,
                )
                if opt_state is not None:
                    optimizer.load_state_dict(opt_state)
                while True:  # one epoch per iteration, until this stage ends
                    start = time.perf_counter()
                    where = f"stage {prog.stage + 1}, epoch {prog.epoch + 1}"
                    row: dict[str, float] = {
                        "epoch": prog.epoch + 1,
                        "stage": prog.stage + 1,
                        "lr": stage.lr,
                    }
                    model.train()
                    sums: dict[str, float] = {}
                    count = 0
                    for i, idx in enumerate(_batches(train_idx, config.batch_size, gen)):
                        total, parts = _loss_of(model, loss_fn, data, idx, angles)
                        _check_finite(total, parts, f"{where}, batch {i + 1}", stage.lr)
                        optimizer.zero_grad(set_to_none=True)
                        total.backward()
                        optimizer.step()
                        n = len(idx)
                        count += n
                        for k, v in {"total": float(total.detach()), **parts}.items():
                            sums[k] = sums.get(k, 0.0) + v * n
                        bar.update(1)
                    row.update({k: v / count for k, v in sums.items()})
                    val_rows = _evaluate(model, loss_fn, data, val_idx, angles, bs, where, stage.lr)
                    row.update({f"val_{k}": v for k, v in val_rows})
                    for p in model.trainable_parameters():
                        if not bool(torch.isfinite(p).all()):
                            raise NonFiniteLossError(
                                f"the weights became non-finite in {where} (the loss was still "
                                f"finite); try a lower learning rate (lr = {stage.lr:g})"
                            )
                    row["seconds"] = round(time.perf_counter() - start, 4)
                    prog.log.append(row)
                    prog.epoch += 1
                    prog.epoch_in_stage += 1
                    bar.set_postfix(
                        epoch=prog.epoch,
                        loss=f"{row['total']:.4g}",
                        val=row.get("val_total"),
                        refresh=False,  # the next update draws it, at tqdm's own interval
                    )

                    # model selection within the stage (without validation: the last epoch)
                    val = row.get("val_total", math.nan)
                    if len(val_idx) == 0 or val < prog.best_val:
                        prog.best_val = val if len(val_idx) else math.inf
                        prog.best_epoch = prog.epoch
                        prog.bad_epochs = 0
                        best = _snapshot(model) if len(val_idx) else None
                    else:
                        prog.bad_epochs += 1
                    early = config.patience is not None and prog.bad_epochs >= config.patience
                    done = early or prog.epoch_in_stage >= stage.epochs
                    if done:
                        if best is not None:
                            model.load_trainable_state(best)
                        prog.best_epochs.append(prog.best_epoch)
                        prog.stopped_early.append(early and prog.epoch_in_stage < stage.epochs)
                        prog = _Progress(
                            stage=prog.stage + 1,
                            epoch=prog.epoch,
                            log=prog.log,
                            best_epochs=prog.best_epochs,
                            stopped_early=prog.stopped_early,
                        )
                        best, opt_state = None, None
                    else:
                        opt_state = optimizer.state_dict()
                    if checkpoint_dir is not None:
                        _save_checkpoint(
                            Path(checkpoint_dir),
                            model,
                            prog,
                            best,
                            opt_state,
                            gen,
                            device,
                            fingerprint,
                            columns,
                        )
                    if callback is not None:
                        callback(row)
                    if done:
                        break
    return TrainResult(
        model=model,
        columns=columns,
        log=prog.log,
        best_epochs=prog.best_epochs,
        stopped_early=prog.stopped_early,
        device=device,
        resumed_at=resumed_at,
    )


def _evaluate(
    model: HashModel,
    loss_fn: CompositeLoss,
    data: Batches,
    idx: torch.Tensor,
    angles: torch.Tensor | None,
    batch_size: int,
    where: str,
    lr: float,
) -> list[tuple[str, float]]:
    """Mean validation loss (total and per term), in fixed batches, without gradients."""
    if len(idx) == 0:
        return []
    model.eval()
    sums: dict[str, float] = {}
    with torch.no_grad():
        for idx_b in _batches(idx, batch_size, None):
            total, parts = _loss_of(model, loss_fn, data, idx_b, angles)
            _check_finite(total, parts, f"{where} (validation)", lr)
            for k, v in {"total": float(total.detach()), **parts}.items():
                sums[k] = sums.get(k, 0.0) + v * len(idx_b)
    return [(k, v / len(idx)) for k, v in sums.items()]


def _save_checkpoint(
    folder: Path,
    model: HashModel,
    prog: _Progress,
    best: dict[str, torch.Tensor] | None,
    opt_state: dict[str, Any] | None,
    gen: torch.Generator,
    device: torch.device,
    fingerprint: str,
    columns: list[str],
) -> None:
    """Write the checkpoint, then the CSV log; each atomically (never half a file)."""
    state = {
        "version": _CHECKPOINT_VERSION,
        "fingerprint": fingerprint,
        "model": {k: v.detach().cpu() for k, v in model.trainable_state().items()},
        "optimizer": opt_state,
        "progress": asdict(prog),
        "best": None if best is None else {k: v.cpu() for k, v in best.items()},
        "rng": _rng_state(gen, device),
    }
    with atomic_path(folder / CHECKPOINT_FILE) as tmp:
        torch.save(state, tmp)
    write_log_csv(folder / LOG_FILE, columns, prog.log)
