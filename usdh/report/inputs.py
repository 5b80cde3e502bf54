"""The report's two readers of pipeline files: a JSON record (metrics, fit records, provenance) and
a per-query ``.npz`` file. A file that is missing, truncated, garbage or not what its writer writes
is one error naming the file, what is wrong with it and the stage that writes it; numpy's advice
to unpickle a file is never passed on (:func:`usdh.io.reader_said`)."""

from __future__ import annotations

import struct
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.npyio import NpzFile

from usdh.io import read_json, unreadable
from usdh.layout import Run

__all__ = [
    "METRICS_KEYS",
    "read_fit_record",
    "read_metrics",
    "read_per_query",
    "read_run_queries",
    "rerun",
    "run_fix",
]

#: the stage of dvc.yaml that writes each group's metrics, curves and per-query files (``{name}``:
#: the method or variant, ``{protocol}``: its protocol)
EVALUATE_STAGES = {
    "retrieval": "evaluate@{name}-{protocol}",
    "ablations": "ablate@{name}",
    "classification": "classify@{name}",
    "finetune": "finetune@{name}",
    "calibration": "evaluate-calibration@{name}-{protocol}",
    # the settings' stages are numbered by their place in params.yaml's list: a glob
    "settings": "evaluate-settings@{name}-*",
}
#: ... and each group's fit records (models/.../fit.json)
FIT_STAGES = {
    **EVALUATE_STAGES,
    "retrieval": "fit@{name}-{protocol}",
    "calibration": "fit-calibration@{name}-{protocol}",
    "settings": "fit-settings@{name}-*",
}


#: what numpy and zipfile raise on a truncated or garbage file
_BROKEN = (
    OSError,
    EOFError,
    ValueError,
    KeyError,
    NotImplementedError,
    struct.error,
    zipfile.BadZipFile,
    zlib.error,
)


def rerun(stage: str) -> str:
    """How to get a good copy of a stage's output back."""
    if "*" in stage:  # a pattern of stage names (the settings' stages)
        stage = f"--glob -s '{stage}'"
    else:
        stage = f"-s {stage}"
    return f"rerun the stage that writes it (dvc repro {stage}, or dvc pull)"


def run_fix(run: Run, fit: bool = False) -> str:
    """:func:`rerun` of the stage that writes ``run``'s metrics and per-query file (``fit``: its
    fit record)."""
    stages = FIT_STAGES if fit else EVALUATE_STAGES
    return rerun(stages[run.group].format(name=run.name, protocol=run.protocol))


def read_per_query(path: str | Path, fix: str, required: Sequence[str] = ()) -> dict[str, Any]:
    """Every array of a per-query ``.npz`` file, read in full (a truncated member fails here, not
    later), with every key of ``required``; else FileNotFoundError (no file) or ValueError naming
    the file, what is wrong and ``fix``. Pickled arrays are never loaded."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; {fix}")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, NpzFile):
            raise ValueError("a single array, not an archive of per-query arrays")
        with data:
            arrays = {key: np.asarray(data[key]) for key in data.files}
    except _BROKEN as exc:
        raise unreadable(path, exc, fix) from exc
    missing = [k for k in required if k not in arrays]
    if missing:
        raise ValueError(
            f"{path} lacks the per-query array(s) {', '.join(map(repr, missing))} (holds "
            f"{', '.join(sorted(arrays)) or 'none'}); {fix}"
        )
    return arrays


#: the keys the report reads off each group's metrics files (the rest it reads when present)
_RETRIEVAL_KEYS = (
    "dataset",
    "protocol",
    "method",
    "bits",
    "seed",
    "mAP",
    "mAP_tie_aware",
    "mAP_all",
)
METRICS_KEYS = {
    "retrieval": _RETRIEVAL_KEYS,
    "ablations": ("dataset", "method", "variant", "bits", "seed", "mAP", "mAP_tie_aware"),
    "classification": ("dataset", "method", "bits", "seed", "accuracy"),
    "calibration": (*_RETRIEVAL_KEYS, "mAP_all_tie_aware"),
    "settings": _RETRIEVAL_KEYS,
}


def read_metrics(run: Run) -> dict[str, Any]:
    """A run's metrics record, with the keys the report reads (:data:`METRICS_KEYS`)."""
    return read_json(run.metrics, run_fix(run), METRICS_KEYS.get(run.group, ()))


def read_fit_record(run: Run) -> dict[str, Any]:
    """A run's fit record (``models/.../fit.json``), with the training-set size the report
    states."""
    return read_json(run.fit_record, run_fix(run, fit=True), ("n_train",))


def read_run_queries(run: Run, required: Sequence[str] = ()) -> dict[str, Any]:
    """A run's per-query arrays (``queries/...npz``)."""
    return read_per_query(run.per_query, run_fix(run), required)
