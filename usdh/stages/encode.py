"""``python -m usdh encode <method> [bits seed]``: queries and database as packed codes, again,
from saved models (the fit stage encodes when it fits; this re-encodes, e.g. after a change of
the code format)."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import numpy as np

from usdh.data import load_split
from usdh.feature_store import load_features
from usdh.io import save_json, save_npy
from usdh.layout import Run
from usdh.paramcheck import method_checker
from usdh.registry import method_class
from usdh.stages.common import contexts, stage_outputs

log = logging.getLogger("usdh")

#: the whole file, with the class checks of this stage's method only (usdh.paramcheck)
check_params = method_checker()


outputs = stage_outputs(("codes",), lambda run: [run.codes_dir])


def encode_run(
    method: str, run: Run, features: np.ndarray, split: dict[str, np.ndarray]
) -> dict[str, float]:
    """Encode the split's queries and database with the run's saved hasher; codes/s of each."""
    hasher = method_class(method).load(run.model)
    rates: dict[str, float] = {}
    for part in ("query", "database"):
        start = time.perf_counter()
        codes = hasher.encode(features[split[part]])
        rates[f"{part}_codes_per_s"] = len(codes) / max(time.perf_counter() - start, 1e-9)
        save_npy(run.codes_dir / f"{part}.npy", codes)
    return rates


def record_encoding(run: Run, rates: dict[str, float]) -> None:
    """Add the encode throughput and the model's size on disk to the run's fit record."""
    record = json.loads(run.fit_record.read_text()) if run.fit_record.is_file() else {}
    record["encode"] = {
        **{k: round(v, 1) for k, v in rates.items()},
        "model_bytes": run.model.stat().st_size,
    }
    save_json(run.fit_record, record)


def run(params: dict[str, Any], method: str, *bits_seed: int | None, **where: Any) -> None:
    """Encode the protocol's queries and database with each fitted hasher of the method."""
    runs = contexts(params, method, *bits_seed, **where)
    fs = load_features(runs[0].features_dir, mmap_mode="r")
    features, split = np.asarray(fs.features), load_split(runs[0].split_dir)
    for ctx in runs:
        rates = encode_run(ctx.method, ctx.run, features, split)
        record_encoding(ctx.run, rates)
        log.info(
            "encoded %s/%d/%d: %.0f database codes/s",
            method,
            ctx.run.bits,
            ctx.run.seed,
            rates["database_codes_per_s"],
        )
