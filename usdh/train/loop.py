"""The training loop: :func:`train` and the steps it is made of.

:func:`train` reads as the outline of a run: check the inputs, build the stage losses, seed and
build the model (:func:`_start`), resume from a checkpoint (:func:`_resume`), then run the stages
(:func:`_run_stage`), each of epochs (:func:`_epoch`: a shuffled training pass, validation, the
weight check), model selection within the stage (:func:`_select`) and a checkpoint after each.
The order of every random draw and every float operation is the one the committed results were
made with; a change here that alters either changes the trained weights.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from usdh.checks import check_positive_int
from usdh.device import resolve_device, seed_everything, torch_determinism
from usdh.losses import PAIR_TERMS, CompositeLoss, build_loss
from usdh.train.batches import Batches, FeatureBatches, ImageBatches
from usdh.train.checkpoint import (
    CHECKPOINT_FILE,
    Progress,
    load_checkpoint,
    run_fingerprint,
    save_checkpoint,
    set_rng_state,
    snapshot,
)
from usdh.train.config import TrainConfig, TrainResult
from usdh.train.model import HashHead, HashModel

__all__ = ["Monitor", "NonFiniteLossError", "train"]

Callback = Callable[[dict[str, float]], None]


@dataclass(frozen=True)
class Monitor:
    """Extra log columns computed from the model after every epoch (e.g. validation mAP).

    ``fn(model)`` returns a value for each of ``columns``; it runs without gradients, in eval
    mode, and draws no random numbers, so it changes nothing about the training it watches.
    """

    columns: tuple[str, ...]
    fn: Callable[[HashModel], Mapping[str, float]]


class NonFiniteLossError(RuntimeError):
    """A loss term (or the weights) became NaN or infinite; the message names epoch and terms."""


@dataclass
class _Run:
    """What every epoch of one :func:`train` call reads; made once by :func:`_start`."""

    config: TrainConfig
    data: Batches
    model: HashModel
    loss_fns: list[CompositeLoss]
    gen: torch.Generator  # head init, validation split, shuffling
    device: torch.device
    angles: torch.Tensor | None
    train_idx: torch.Tensor
    val_idx: torch.Tensor
    columns: list[str]
    fingerprint: str
    checkpoint_dir: Path | None
    callback: Callback | None
    monitor: Monitor | None


@dataclass
class _State:
    """What changes from epoch to epoch and a checkpoint keeps: progress, the stage's best
    weights so far (None without validation), the optimiser's state within the stage."""

    prog: Progress = field(default_factory=Progress)
    best: dict[str, torch.Tensor] | None = None
    opt_state: dict[str, Any] | None = None


def train(
    data: Batches,
    n_bits: int,
    config: TrainConfig,
    *,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    callback: Callback | None = None,
    monitor: Monitor | None = None,
    init: Mapping[str, torch.Tensor] | None = None,
) -> TrainResult:
    """Train a hash head (and, in finetune mode, the backbone's tail) through ``config.stages``.

    ``data`` is :class:`FeatureBatches` (head mode) or :class:`ImageBatches` (finetune mode).
    With ``checkpoint_dir``, ``checkpoint.pt`` and ``train_log.csv`` are rewritten there
    (atomically) after every epoch; ``resume=True`` continues from the checkpoint when it was made
    by the same configuration and data (otherwise it warns and starts afresh) and returns at once
    if that run had finished. ``callback(row)`` is called with each epoch's log row after its
    checkpoint is written (an exception from it interrupts training, as a crash would);
    ``monitor`` adds columns to every row. ``init`` replaces the head's initial tensors (e.g. a
    projection learnt by another method; they are part of the checkpoint's fingerprint).
    Raises :class:`NonFiniteLossError` naming the stage, epoch, batch and term when a loss goes
    NaN or infinite.
    """
    if not isinstance(data, FeatureBatches | ImageBatches):
        raise TypeError(f"data must be FeatureBatches or ImageBatches, got {type(data).__name__}")
    check_positive_int("n_bits", n_bits)
    device = resolve_device(config.device)
    loss_fns = _stage_losses(config, data)
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    cuda_devices = [device.index or 0] if device.type == "cuda" else []

    with torch.random.fork_rng(devices=cuda_devices), torch_determinism(config.threads):
        threads = torch.get_num_threads()  # the run's own, inside torch_determinism
        fingerprint = run_fingerprint(
            config, data, n_bits, init, device=str(device), threads=threads
        )
        run = _start(data, n_bits, config, loss_fns, device, fingerprint, folder, callback, monitor)
        if init is not None:
            _initialise(run.model, init)
        resumed = _resume(run) if resume and folder is not None else None
        state = resumed or _State()
        resumed_at = None if resumed is None else resumed.prog.epoch
        with _progress_bar(run, state.prog) as bar:
            while state.prog.stage < len(config.stages):
                _run_stage(run, state, bar)
    return TrainResult(
        model=run.model,
        columns=run.columns,
        log=state.prog.log,
        best_epochs=state.prog.best_epochs,
        stopped_early=state.prog.stopped_early,
        device=device,
        resumed_at=resumed_at,
    )


# -- before the first epoch ------------------------------------------------------------------------
def _stage_losses(config: TrainConfig, data: Batches) -> list[CompositeLoss]:
    """Each stage's loss; every stage must train something, with the views its terms need."""
    loss_fns = [build_loss(config.stage_loss_config(s)) for s in range(len(config.stages))]
    for s, fn in enumerate(loss_fns):
        if not fn.active:
            raise ValueError(f"stage {s + 1} has no active loss term (every weight is 0)")
        if "rotations" in fn.needs and not data.has_rotations:
            raise ValueError(
                f"the rotation term is active in stage {s + 1} but there are no rotated views; "
                f"pass rotations and angles, or set the rotation weight to 0"
            )
        if "pairs" in fn.needs and not data.has_pairs:
            raise ValueError(
                f"a two-view term ({', '.join(t for t in fn.active if t in PAIR_TERMS)}) is active "
                f"in stage {s + 1} but there are no augmented views; pass the bank of augmented "
                f"views (usdh.augment), or set the term's weight to 0"
            )
    return loss_fns


def _log_columns(loss_fns: list[CompositeLoss], monitor: Monitor | None) -> list[str]:
    """The log's columns: every term active in some stage, in order of first appearance, then
    the monitor's."""
    terms: list[str] = []
    for fn in loss_fns:
        terms.extend(t for t in fn.active if t not in terms)
    columns = ["epoch", "stage", "lr", "total", *terms, "val_total"]
    extra = list(monitor.columns) if monitor is not None else []
    return columns + [f"val_{t}" for t in terms] + extra + ["seconds"]


def _initialise(model: HashModel, init: Mapping[str, torch.Tensor]) -> None:
    """Copy ``init`` (head tensors by name, e.g. ``linear.weight``) into the head."""
    state = model.head.state_dict()
    for name, value in init.items():
        if name not in state or tuple(state[name].shape) != tuple(value.shape):
            raise ValueError(
                f"init tensor {name!r} of shape {tuple(value.shape)} does not fit the head "
                f"({', '.join(f'{k} {tuple(v.shape)}' for k, v in state.items())})"
            )
        state[name] = value.to(state[name].dtype)
    model.head.load_state_dict(state)


def _start(
    data: Batches,
    n_bits: int,
    config: TrainConfig,
    loss_fns: list[CompositeLoss],
    device: torch.device,
    fingerprint: str,
    checkpoint_dir: Path | None,
    callback: Callback | None,
    monitor: Monitor | None = None,
) -> _Run:
    """Seed, build the model, move everything to ``device``, prepare the losses, split the rows.

    The draws, in this order: the head's init (global generator in ``nn.Linear``, then ``gen``),
    the validation split (``gen``); the losses' global targets use a generator of their own.
    """
    seed_everything(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    head = HashHead(
        data.in_features,
        n_bits,
        gen,
        config.activation,
        hidden=config.hidden,
        binarizer=config.binarizer,
        binarizer_options=config.binarizer_options,
    )
    model = data.build_model(head).to(device)
    data.to(device)
    for fn in loss_fns:
        fn.to(device)
        # global targets (a kNN graph, distance thresholds) from every training row, seeded
        fn.prepare(data.features, torch.Generator().manual_seed(config.seed))
    angles = torch.tensor(data.angles, dtype=torch.float32, device=device) if data.angles else None
    train_idx, val_idx = _split(len(data), config.val_fraction, gen)
    return _Run(
        config=config,
        data=data,
        model=model,
        loss_fns=loss_fns,
        gen=gen,
        device=device,
        angles=angles,
        train_idx=train_idx,
        val_idx=val_idx,
        columns=_log_columns(loss_fns, monitor),
        fingerprint=fingerprint,
        checkpoint_dir=checkpoint_dir,
        callback=callback,
        monitor=monitor,
    )


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


def _resume(run: _Run) -> _State | None:
    """The state of the run's checkpoint, with weights and RNG restored; None if none fits."""
    assert run.checkpoint_dir is not None
    # stacklevel 3: the warning points at train()'s caller (train -> _resume -> load_checkpoint)
    ckpt = load_checkpoint(run.checkpoint_dir / CHECKPOINT_FILE, run.fingerprint, stacklevel=3)
    if ckpt is None:
        return None
    run.model.load_trainable_state(ckpt["model"])
    state = _State(Progress(**ckpt["progress"]), ckpt["best"], ckpt["optimizer"])
    set_rng_state(ckpt["rng"], run.gen, run.device)
    return state


def _progress_bar(run: _Run, prog: Progress) -> tqdm:
    """A bar over every batch of every stage, starting where ``prog`` stands."""
    n_train, bs = len(run.train_idx), run.config.batch_size
    n_batches = n_train // bs if n_train > bs else 1
    stages = run.config.stages
    return tqdm(
        total=sum(s.epochs for s in stages) * n_batches,
        initial=sum(s.epochs for s in stages[: prog.stage]) * n_batches
        + prog.epoch_in_stage * n_batches,
        unit="batch",
        desc=f"train {run.data.mode}",
        disable=not run.config.progress,
    )


# -- a stage and its epochs ------------------------------------------------------------------------
def _run_stage(run: _Run, state: _State, bar: tqdm) -> None:
    """The rest of the current stage: a fresh SGD optimiser (or the checkpoint's), then epochs,
    a checkpoint and the callback after each, until the stage ends."""
    stage = run.config.stages[state.prog.stage]
    optimizer = _optimizer(run, stage.lr)
    if state.opt_state is not None:
        optimizer.load_state_dict(state.opt_state)
    done = False
    while not done:
        row = _epoch(run, state.prog, optimizer, bar)
        done = _select(run, state, row, optimizer)
        if run.checkpoint_dir is not None:
            save_checkpoint(
                run.checkpoint_dir,
                run.model,
                state.prog,
                state.best,
                state.opt_state,
                run.gen,
                run.device,
                run.fingerprint,
                run.columns,
            )
        if run.callback is not None:
            run.callback(row)


def _optimizer(run: _Run, lr: float) -> torch.optim.Optimizer:
    """A fresh optimiser of the configured kind for one stage."""
    params, config = run.model.trainable_parameters(), run.config
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        params, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


def _epoch(
    run: _Run, prog: Progress, optimizer: torch.optim.Optimizer, bar: tqdm
) -> dict[str, float]:
    """One epoch of the current stage: train, validate, check the weights; log it in ``prog``."""
    start = time.perf_counter()
    stage, loss_fn = run.config.stages[prog.stage], run.loss_fns[prog.stage]
    where = f"stage {prog.stage + 1}, epoch {prog.epoch + 1}"
    row: dict[str, float] = {"epoch": prog.epoch + 1, "stage": prog.stage + 1, "lr": stage.lr}
    row.update(_train_pass(run, loss_fn, optimizer, where, stage.lr, bar))
    val_rows = _evaluate(
        run.model,
        loss_fn,
        run.data,
        run.val_idx,
        run.angles,
        run.config.batch_size,
        where,
        stage.lr,
    )
    row.update({f"val_{k}": v for k, v in val_rows})
    _check_weights(run.model, where, stage.lr)
    if run.monitor is not None:
        run.model.eval()
        with torch.no_grad():
            row.update({k: float(v) for k, v in run.monitor.fn(run.model).items()})
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
    return row


def _train_pass(
    run: _Run,
    loss_fn: CompositeLoss,
    optimizer: torch.optim.Optimizer,
    where: str,
    lr: float,
    bar: tqdm,
) -> dict[str, float]:
    """One SGD step per shuffled batch; the row-weighted mean loss (total and per term)."""
    run.model.train()
    sums: dict[str, float] = {}
    count = 0
    for i, idx in enumerate(_batches(run.train_idx, run.config.batch_size, run.gen)):
        total, parts = _loss_of(run.model, loss_fn, run.data, idx, run.angles, run.gen)
        _check_finite(total, parts, f"{where}, batch {i + 1}", lr)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        n = len(idx)
        count += n
        _accumulate(sums, total, parts, n)
        bar.update(1)
    return {k: v / count for k, v in sums.items()}


def _select(
    run: _Run, state: _State, row: Mapping[str, float], optimizer: torch.optim.Optimizer
) -> bool:
    """Model selection within the stage (without validation: the last epoch); end the stage on
    its best weights when its epochs are done or patience ran out. True if the stage ended."""
    prog, has_val = state.prog, len(run.val_idx) > 0
    stage = run.config.stages[prog.stage]
    val = row.get("val_total", math.nan)
    if not has_val or val < prog.best_val:
        prog.best_val = val if has_val else math.inf
        prog.best_epoch = prog.epoch
        prog.bad_epochs = 0
        state.best = snapshot(run.model) if has_val else None
    else:
        prog.bad_epochs += 1
    early = run.config.patience is not None and prog.bad_epochs >= run.config.patience
    if not (early or prog.epoch_in_stage >= stage.epochs):
        state.opt_state = optimizer.state_dict()
        return False
    if state.best is not None:
        run.model.load_trainable_state(state.best)
    state.prog = prog.next_stage(stopped_early=early and prog.epoch_in_stage < stage.epochs)
    state.best, state.opt_state = None, None
    return True


# -- one batch -------------------------------------------------------------------------------------
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
    gen: torch.Generator,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The one place a batch becomes ``(h, u, features, h_rot, h_pair, u_pair)`` and a loss.

    ``gen`` draws the two views of each row for the two-view terms (only when one is active, so
    the other methods' draws are unchanged)."""
    need_rot = "rotations" in loss_fn.needs
    need_pairs = "pairs" in loss_fn.needs
    b = data.batch(idx, need_rot, gen if need_pairs else None)
    x = b.x if b.x_rot is None else torch.cat([b.x, b.x_rot])
    if b.x_pair is not None:
        x = torch.cat([x, b.x_pair])
    out = model(x)
    n = b.x.shape[0]
    h = out[:n]
    h_rot = h_pair = codes_pair = None
    if need_pairs:
        h_pair = out[out.shape[0] - n :]
        codes_pair = model.head.codes(h_pair)
    if need_rot:
        n_rot = n if b.rot_mask is None else int(b.rot_mask.sum())
        n_views = len(angles) if angles is not None else 0
        h_rot = out[n : n + n_rot * n_views].reshape(n_rot, n_views, out.shape[1])
    features = b.features if "features" in loss_fn.needs else None
    index = idx if "index" in loss_fn.needs else None
    return loss_fn(
        h,
        codes=model.head.codes(h),
        features=features,
        h_rot=h_rot,
        angles=angles if need_rot else None,
        index=index,
        rot_mask=b.rot_mask,
        h_pair=h_pair,
        codes_pair=codes_pair,
    )


def _accumulate(
    sums: dict[str, float], total: torch.Tensor, parts: Mapping[str, float], n: int
) -> None:
    """Add a batch's total and terms, weighted by its ``n`` rows, to ``sums``."""
    for k, v in {"total": float(total.detach()), **parts}.items():
        sums[k] = sums.get(k, 0.0) + v * n


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
    views = torch.Generator().manual_seed(0)  # the same validation views after every epoch
    with torch.no_grad():
        for idx_b in _batches(idx, batch_size, None):
            total, parts = _loss_of(model, loss_fn, data, idx_b, angles, views)
            _check_finite(total, parts, f"{where} (validation)", lr)
            _accumulate(sums, total, parts, len(idx_b))
    return [(k, v / len(idx)) for k, v in sums.items()]


# -- failures --------------------------------------------------------------------------------------
def _check_finite(total: torch.Tensor, terms: Mapping[str, float], where: str, lr: float) -> None:
    if bool(torch.isfinite(total)):
        return
    bad = [f"{k}={v}" for k, v in terms.items() if not math.isfinite(v)]
    what = ", ".join(bad) if bad else f"the weighted total ({float(total.detach())})"
    raise NonFiniteLossError(
        f"the loss became non-finite in {where}: {what}. Check the features for NaN/inf and "
        f"try a lower learning rate (this stage's lr = {lr:g})"
    )


def _check_weights(model: HashModel, where: str, lr: float) -> None:
    for p in model.trainable_parameters():
        if not bool(torch.isfinite(p).all()):
            raise NonFiniteLossError(
                f"the weights became non-finite in {where} (the loss was still "
                f"finite); try a lower learning rate (lr = {lr:g})"
            )
