"""What survives an interruption: the checkpoint, the RNG state, the run's fingerprint, the CSV log.

After every epoch :func:`save_checkpoint` writes, each atomically, ``checkpoint.pt`` (trainable
weights, optimiser state, :class:`Progress`, the stage's best weights so far, every RNG state) and
``train_log.csv``. :func:`load_checkpoint` gives a checkpoint back only when its fingerprint (the
configuration, the data, the number of bits, the device and thread count, :func:`run_fingerprint`)
is the run's, so a resumed run ends bitwise where an uninterrupted one does; an unreadable
checkpoint (truncated, not torch's format, not ours) is set aside with a warning, as a foreign
one is.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import pickle
import warnings
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from usdh.io import atomic_path, reader_said
from usdh.train.batches import Batches
from usdh.train.config import TrainConfig
from usdh.train.model import HashModel

__all__ = [
    "CHECKPOINT_FILE",
    "CHECKPOINT_VERSION",
    "LOG_FILE",
    "Progress",
    "load_checkpoint",
    "rng_state",
    "run_fingerprint",
    "save_checkpoint",
    "set_rng_state",
    "snapshot",
    "write_log_csv",
]

CHECKPOINT_FILE = "checkpoint.pt"
LOG_FILE = "train_log.csv"
CHECKPOINT_VERSION = 1


@dataclass
class Progress:
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

    def next_stage(self, stopped_early: bool) -> Progress:
        """The progress at the start of the next stage, this one's best epoch recorded."""
        self.best_epochs.append(self.best_epoch)
        self.stopped_early.append(stopped_early)
        return Progress(
            stage=self.stage + 1,
            epoch=self.epoch,
            log=self.log,
            best_epochs=self.best_epochs,
            stopped_early=self.stopped_early,
        )


def run_fingerprint(
    config: TrainConfig,
    data: Batches,
    n_bits: int,
    init: Mapping[str, torch.Tensor] | None = None,
    *,
    device: str | None = None,
    threads: int | None = None,
) -> str:
    """SHA-256 of what decides the weights: the configuration, the data, the number of bits, any
    initial tensors, and where they are computed (``device`` and torch's thread count: another
    thread count sums in another order, so its weights match neither run bitwise)."""
    record: dict[str, Any] = {
        "config": config.fingerprint(),
        "data": data.fingerprint(),
        "n_bits": n_bits,
        "device": device,
        "threads": threads,
    }
    if init is not None:
        digest = hashlib.sha256()
        for name in sorted(init):
            digest.update(name.encode())
            digest.update(init[name].detach().cpu().numpy().tobytes())
        record["init"] = digest.hexdigest()
    text = json.dumps(record, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def rng_state(gen: torch.Generator, device: torch.device) -> dict[str, Any]:
    """The run's generator and torch's global generators (the CUDA one on a GPU)."""
    state: dict[str, Any] = {"generator": gen.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: Mapping[str, Any], gen: torch.Generator, device: torch.device) -> None:
    """Restore what :func:`rng_state` recorded."""
    gen.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def snapshot(model: HashModel) -> dict[str, torch.Tensor]:
    """A detached copy of the model's trainable tensors (a stage's best weights)."""
    return {k: v.detach().clone() for k, v in model.trainable_state().items()}


#: what reading a damaged or foreign file can raise (torch's zip reader, its restricted unpickler)
_UNREADABLE = (
    OSError,
    EOFError,
    RuntimeError,
    ValueError,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
)
_CHECKPOINT_KEYS = ("version", "fingerprint", "model", "optimizer", "progress", "best", "rng")


def load_checkpoint(path: Path, fingerprint: str, stacklevel: int = 2) -> dict[str, Any] | None:
    """The checkpoint at ``path``, or None when there is none, when it cannot be read, or when
    another configuration, data or machine wrote it (then with a warning naming the file,
    attributed ``stacklevel`` frames up); training then starts afresh and overwrites it."""
    if not path.is_file():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except _UNREADABLE as exc:
        warnings.warn(
            f"{path} cannot be read ({reader_said(exc)}); ignoring it and training from scratch",
            stacklevel=stacklevel + 1,
        )
        return None
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in _CHECKPOINT_KEYS):
        warnings.warn(
            f"{path} is not a training checkpoint of this project; ignoring it and training "
            "from scratch",
            stacklevel=stacklevel + 1,
        )
        return None
    if ckpt.get("version") != CHECKPOINT_VERSION or ckpt.get("fingerprint") != fingerprint:
        warnings.warn(
            f"{path} was written by a different configuration, data, device or thread count; "
            f"ignoring it and training from scratch",
            stacklevel=stacklevel + 1,
        )
        return None
    return ckpt


def save_checkpoint(
    folder: Path,
    model: HashModel,
    prog: Progress,
    best: dict[str, torch.Tensor] | None,
    opt_state: dict[str, Any] | None,
    gen: torch.Generator,
    device: torch.device,
    fingerprint: str,
    columns: list[str],
) -> None:
    """Write the checkpoint, then the CSV log; each atomically (never half a file)."""
    state = {
        "version": CHECKPOINT_VERSION,
        "fingerprint": fingerprint,
        "model": {k: v.detach().cpu() for k, v in model.trainable_state().items()},
        "optimizer": opt_state,
        "progress": asdict(prog),
        "best": None if best is None else {k: v.cpu() for k, v in best.items()},
        "rng": rng_state(gen, device),
    }
    with atomic_path(folder / CHECKPOINT_FILE) as tmp:
        torch.save(state, tmp)
    write_log_csv(folder / LOG_FILE, columns, prog.log)


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
