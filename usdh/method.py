"""USDH: a hash head on backbone features, trained by four unsupervised criteria.

What the paper's abstract states: VGG-19 features, a hash layer, and four criteria: semantic
(neighbourhoods in feature space kept in Hamming space), quantisation, maximum bit entropy and
rotation invariance. Everything else (term formulas, weights, schedule, threshold) is documented as
ours or DeepBit's in ``docs/usdh.md``; nothing here is presented as the paper's setting.

The class is the hasher face (:class:`usdh.hasher.BaseHasher`) over :func:`usdh.train.train` in
head mode: ``fit`` trains on cached features (plus rotated views when the rotation term is on),
``encode`` thresholds the relaxed codes. :class:`baselines.deepbit.DeepBit`,
:class:`baselines.greedyhash.GreedyHash` and :class:`baselines.bihalf.BiHalf` are this class with
their terms, weights, head, binarizer and threshold as defaults: one trainer for all of them.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
from numpy.typing import ArrayLike, NDArray

from usdh.hasher import BaseHasher, TrainingViews, check_features

__all__ = ["INITS", "THRESHOLDS", "USDH", "with_defaults"]

#: "half": b = 1[h > the activation's midpoint] (sigmoid: 0.5, the sign of the logit; identity:
#: 0, the sign of h); "mean": b = 1[h > mean of h over the training rows], per bit (DeepBit's
#: evaluation)
THRESHOLDS = ("half", "mean")
#: "random": our seeded init (He for the hidden layer, Gaussian std 0.01 for the hash layer, zero
#: biases; usdh.train.model.HashHead); "pytorch": ``nn.Linear``'s own default, which the
#: releases of GreedyHash, BiHalf and CIBHash leave in place (weights and biases uniform in
#: +-1/sqrt(fan_in)), drawn from a generator seeded by ``random_state``; "itq": the linear head
#: starts as ITQ's projection (PCA then ITQ's rotation, fitted on the same rows), scaled to
#: unit-variance logits
INITS = ("random", "pytorch", "itq")


class USDH(BaseHasher):
    """USDH on cached backbone features (head mode of :mod:`usdh.train`).

    Parameters (defaults are our choices unless noted; see ``docs/usdh.md``):

    * ``loss``: term -> options, merged term by term over ``DEFAULT_LOSS`` (so
      ``{"rotation": {"weight": 0}}`` switches one term off and keeps the rest). Terms: semantic,
      quantization, entropy, rotation (``usdh.losses``). ``None``: ``DEFAULT_LOSS``.
    * ``stages``: a list of ``{"epochs", "lr" or "lr_factor", "weights"}`` (missing epochs / lr
      come from ``epochs`` / ``lr``; ``lr_factor`` scales ``lr``; ``weights`` override the loss
      weights for that stage). ``None``: the class's ``DEFAULT_STAGES`` (USDH: one stage).
    * ``epochs``, ``lr``, ``batch_size``, ``momentum``, ``weight_decay``: SGD. Momentum 0.9,
      weight decay 5e-4 and batch 32 are DeepBit's release; lr 1e-2 was chosen on the validation
      split (DeepBit's 1e-3 leaves the head under-trained after 50 epochs).
    * ``val_fraction``, ``patience``: seeded validation rows held out of training; a stage stops
      after ``patience`` epochs without a lower validation loss and keeps its best epoch.
    * ``threshold``: ``"half"`` (b = 1[h > the activation's midpoint]) or ``"mean"`` (per-bit
      mean of h over the training rows).
    * ``activation``: ``"sigmoid"`` (h in (0, 1)), ``"relu"`` (DeepBit's released network),
      ``"identity"`` (GreedyHash, BiHalf) or ``"tanh"``.
    * ``hidden``: units of one hidden ReLU layer before the hash layer (an analogue of a
      trainable fc7); ``None``: the linear head.
    * ``binarizer``, ``binarizer_options``: what turns relaxed codes into the codes the loss
      compares during training (``usdh.train.model.BINARIZERS``: none, sign, bihalf).
    * ``optimizer``: ``"sgd"`` (with ``momentum``) or ``"adam"``.
    * ``init``: ``"random"`` (ours), ``"pytorch"`` (the releases') or ``"itq"`` (:data:`INITS`;
      the last a diagnostic: does USDH's objective keep ITQ's codes when it starts from them?).
    * ``device`` (``"auto"``: CUDA when present), ``threads`` (pin CPU threads for bitwise
      repeatability across machines), ``progress`` (tqdm bar): where and how, not what, it learns.

    Learned state: ``weight_`` (n_bits, D or H), ``bias_`` (n_bits,), ``hidden_weight_`` (H, D)
    and ``hidden_bias_`` (H,) (H = 0 without a hidden layer), ``threshold_`` (n_bits,),
    ``log_`` (epochs, columns) with ``log_columns_`` (the training log: per-term train and
    validation losses), ``best_epochs_`` (the epoch each stage kept) and ``config_`` (the resolved
    training configuration as JSON). ``device_`` says where it trained (not saved).
    """

    _state: ClassVar[tuple[str, ...]] = (
        "weight_",
        "bias_",
        "hidden_weight_",
        "hidden_bias_",
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
        hidden: int | None = None,
        binarizer: str = "none",
        binarizer_options: Mapping[str, Any] | None = None,
        optimizer: str = "sgd",
        init: str = "random",
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
        self.hidden = hidden
        self.binarizer = binarizer
        self.binarizer_options = binarizer_options
        self.optimizer = optimizer
        self.init = init
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
            stage = {"epochs": self.epochs, "lr": self.lr, **s}
            factor = stage.pop("lr_factor", None)
            if factor is not None:  # a stage's learning rate relative to ``lr``
                stage["lr"] = self.lr * factor
            resolved.append(stage)
        if self.threshold not in THRESHOLDS:
            raise ValueError(f"threshold must be one of {THRESHOLDS}, got {self.threshold!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if self.init == "itq" and self.hidden:
            raise ValueError("init='itq' sets a linear head; it needs hidden=None")
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
            hidden=self.hidden,
            binarizer=self.binarizer,
            binarizer_options=dict(self.binarizer_options or {}),
            optimizer=self.optimizer,
            device=self.device,
            threads=self.threads,
            progress=self.progress,
        )

    def _check_params(self) -> None:
        self.train_config()  # every training knob, the loss terms and their options

    # -- fit ---------------------------------------------------------------------------------------
    def fit(
        self,
        X: ArrayLike,
        y: Any = None,
        *,
        views: TrainingViews | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        resume: bool = False,
        monitor: Callable[[Callable[[NDArray[np.floating]], NDArray[np.uint8]]], float]
        | None = None,
    ) -> Self:
        """Train on features ``X`` (N, D); ``views.rotations`` are rows of X rotated by
        ``views.angles``, needed when the rotation term is on; with ``views.augmentations`` (a
        bank of augmented views of some rows) training runs on those rows only, drawing two of
        their views per step for the two-view terms. ``checkpoint_dir`` keeps a
        checkpoint and ``train_log.csv`` per epoch; ``resume`` continues from it.
        ``monitor(encode)`` is called after every epoch with the epoch's encoder (features to
        packed codes) and its value is logged as ``val_mAP`` (the validation command passes the
        validation mAP, the quantity hyperparameters are chosen on)."""
        from usdh.train import FeatureBatches, Monitor, train

        arr = self._check_fit_input(X)
        config = self.train_config()
        views = (views or TrainingViews()).checked(arr)
        self.train_part_ = None
        if views.augmentations is not None:
            # a method that learns from two views of an image trains on the images of the bank
            arr, views = _bank_rows(arr, views)
            self.train_part_ = "augmentation_subset"
        self.n_train_ = int(arr.shape[0])
        data = FeatureBatches(
            arr, views.rotations, views.angles, views.rows, augmentations=views.augmentations
        )
        watch = None
        if monitor is not None:
            watch = Monitor(("val_mAP",), lambda model: {"val_mAP": monitor(self._encoder(model))})
        init = None
        if self.init == "itq":
            init = self._itq_init(arr)
        elif self.init == "pytorch":
            init = self._pytorch_init(arr.shape[1])
        result = train(
            data,
            self.n_bits,
            config,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            monitor=watch,
            init=init,
        )
        self.set_trained(result, config, lambda: arr)
        self.n_features_in_ = arr.shape[1]
        return self

    def trained_on(self, part: str, n_rows: int) -> tuple[str, int]:
        """Given a bank of augmented views, ``fit`` trains on the images of the bank only: the
        split's ``augmentation_subset`` (``train_part_``), ``n_train_`` rows; otherwise on every
        row it was given."""
        if self.train_part_ == "augmentation_subset":
            return self.train_part_, self.n_train_
        return part, self.n_train_

    def _pytorch_init(self, in_features: int) -> dict[str, Any]:
        """``nn.Linear``'s default initialisation of every layer of the head (kaiming-uniform with
        ``a = sqrt(5)``, which is uniform in +-1/sqrt(fan_in), and the bias uniform in the same
        bound), drawn from a generator of its own seeded by ``random_state``, so the start depends
        on the seed only (``nn.Linear`` itself draws from the global generator)."""
        import torch

        gen = torch.Generator().manual_seed(int(self.random_state))
        shapes = {"linear": (self.n_bits, self.hidden or in_features)}
        if self.hidden:
            shapes = {"hidden": (self.hidden, in_features), **shapes}
        out: dict[str, Any] = {}
        for layer, (n_out, fan_in) in shapes.items():
            bound = 1.0 / float(np.sqrt(fan_in))
            for name, shape in (("weight", (n_out, fan_in)), ("bias", (n_out,))):
                t = torch.empty(shape, dtype=torch.float32)
                out[f"{layer}.{name}"] = t.uniform_(-bound, bound, generator=gen)
        return out

    def _itq_init(self, X: NDArray[np.floating]) -> dict[str, Any]:
        """The linear head as ITQ's projection ``(x - mean) P R`` fitted on ``X`` (same bits and
        seed, :class:`baselines.itq.ITQ`'s steps), scaled so the training logits have unit
        standard deviation."""
        import torch

        from usdh.linear import check_pca_size, fit_pca, itq_rotation, project

        check_pca_size(f"ITQ(n_bits={self.n_bits})", self.n_bits, *X.shape)
        mean, components = fit_pca(X, self.n_bits)
        V = project(X, mean, components)
        R, _ = itq_rotation(V, self.random_state)
        W = components @ R  # (D, K)
        scale = 1.0 / max(float((V @ R).std()), 1e-12)
        weight = torch.from_numpy(np.ascontiguousarray((W * scale).T)).float()
        bias = torch.from_numpy(-(mean @ W) * scale).float()
        return {"linear.weight": weight, "linear.bias": bias}

    def _encoder(self, model: Any) -> Callable[[NDArray[np.floating]], NDArray[np.uint8]]:
        """Features -> packed codes through a model being trained (threshold: the midpoint)."""
        import torch

        from usdh.codes import pack_bits

        midpoint = model.head.activation_fn.midpoint
        device = next(model.parameters()).device

        def encode(features: NDArray[np.floating]) -> NDArray[np.uint8]:
            out = []
            for chunk in np.array_split(features, max(1, len(features) // 8192)):
                x = torch.as_tensor(np.asarray(chunk, dtype=np.float32), device=device)
                out.append((model.head(x) - midpoint).cpu().numpy())
            return pack_bits(np.concatenate(out))

        return encode

    def set_trained(
        self, result: Any, config: Any, train_features: Callable[[], NDArray[np.floating]]
    ) -> None:
        """Take the learned state from a :class:`usdh.train.TrainResult` (``fit`` and the
        finetune stage share this). ``train_features()`` gives the training rows' features, read
        only for the ``"mean"`` threshold."""
        head = result.head
        self.weight_ = head.linear.weight.detach().cpu().numpy().copy()
        self.bias_ = head.linear.bias.detach().cpu().numpy().copy()
        if head.hidden is not None:
            self.hidden_weight_ = head.hidden.weight.detach().cpu().numpy().copy()
            self.hidden_bias_ = head.hidden.bias.detach().cpu().numpy().copy()
        else:
            d = self.weight_.shape[1]
            self.hidden_weight_ = np.zeros((0, d), dtype=self.weight_.dtype)
            self.hidden_bias_ = np.zeros(0, dtype=self.weight_.dtype)
        self.threshold_ = np.full(self.n_bits, float(head.activation_fn.midpoint))
        if self.threshold == "mean":
            self.threshold_ = self._relaxed(train_features()).mean(axis=0)
        self.log_ = result.log_array()
        self.log_columns_ = np.asarray(result.columns, dtype=str)
        self.best_epochs_ = np.asarray(result.best_epochs, dtype=np.int64)
        self.config_ = json.dumps(config.fingerprint(), sort_keys=True)
        self.device_ = str(result.device)
        # not saved with the model (an interrupted run's model equals an uninterrupted one's);
        # the fit record says where training resumed
        self.resumed_at_ = getattr(result, "resumed_at", None)

    # -- encode ------------------------------------------------------------------------------------
    def _relaxed(self, X: NDArray[np.floating]) -> NDArray[np.float64]:
        """The trained head's forward pass, ``activation(relu(X W1^T + b1) W^T + b)`` (without
        the hidden layer: ``activation(X W^T + b)``), on the CPU in float64, with the head's own
        activation module (:func:`usdh.train.model.build_activation`), so there is one definition
        of each activation."""
        import torch
        import torch.nn.functional as F

        from usdh.train.model import build_activation

        def t(a: NDArray[Any]) -> torch.Tensor:
            return torch.from_numpy(np.asarray(a, dtype=np.float64))

        # F.linear is what nn.Linear computes; building an nn.Linear would also draw an unused
        # initialisation from torch's global generator
        activation = build_activation(self.activation)
        with torch.no_grad():
            x = t(X)
            if len(self.hidden_bias_):
                x = torch.relu(F.linear(x, t(self.hidden_weight_), t(self.hidden_bias_)))
            h = activation(F.linear(x, t(self.weight_), t(self.bias_)))
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


def _bank_rows(
    X: NDArray[np.floating], views: TrainingViews
) -> tuple[NDArray[np.floating], TrainingViews]:
    """The rows of ``X`` that the bank holds views of, and the views re-indexed to them (rotated
    views of other rows are dropped)."""
    n = X.shape[0]
    rows = np.arange(n) if views.augmentation_rows is None else np.asarray(views.augmentation_rows)
    rotations, angles, rot_rows = views.rotations, views.angles, None
    if rotations is not None:
        where = np.full(n, -1, dtype=np.int64)
        where[rows] = np.arange(len(rows))
        old = np.arange(n) if views.rows is None else np.asarray(views.rows)
        keep = where[old] >= 0
        rotations, rot_rows = (rotations[keep], where[old[keep]]) if keep.any() else (None, None)
        angles = angles if rotations is not None else None
    return X[rows], TrainingViews(rotations, angles, rot_rows, views.augmentations, None)


def with_defaults(**defaults: Any) -> Callable[[type[USDH]], type[USDH]]:
    """Class decorator: the class's inherited ``__init__`` with other default values.

    A method that is USDH's trainer with other defaults (DeepBit, GreedyHash, BiHalf) states only
    what differs; ``get_params`` and ``save``/``load`` see the new defaults through the signature.
    """

    def wrap(cls: type[USDH]) -> type[USDH]:
        base_init = cls.__init__
        sig = inspect.signature(base_init)
        unknown = sorted(set(defaults) - set(sig.parameters))
        if unknown:
            raise TypeError(f"{cls.__name__}: no parameter(s) {unknown} to set defaults for")
        new_sig = sig.replace(
            parameters=[
                p.replace(default=defaults[p.name]) if p.name in defaults else p
                for p in sig.parameters.values()
            ]
        )

        def __init__(self: USDH, *args: Any, **kwargs: Any) -> None:
            bound = new_sig.bind(self, *args, **kwargs)
            bound.apply_defaults()
            base_init(*bound.args, **bound.kwargs)

        __init__.__signature__ = new_sig  # type: ignore[attr-defined]
        __init__.__doc__ = base_init.__doc__
        cls.__init__ = __init__  # type: ignore[method-assign]
        return cls

    return wrap
