"""``python -m usdh encode <method> [bits seed]``: queries and database as packed codes, again,
from saved models (the fit stage encodes when it fits; this re-encodes, e.g. after a change of
the code format)."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from usdh.data import load_split
from usdh.feature_store import load_features
from usdh.hasher import BaseHasher
from usdh.io import read_json, save_json, save_npys
from usdh.layout import CODE_PARTS, Run
from usdh.paramcheck import method_checker
from usdh.registry import method_class
from usdh.stages.common import contexts, fit_command, stage_outputs

log = logging.getLogger("usdh")

#: the whole file, with the class checks of this stage's method only (usdh.paramcheck)
check_params = method_checker()


outputs = stage_outputs(("codes",), lambda run: [run.codes_dir])


def load_model(method: str, run: Run) -> BaseHasher:
    """The run's saved hasher, refused when it is not the run's: another method (the class
    check of ``load``), another code length or seed than its path says, or a fit record that
    names another method, length or seed. Such a model would be encoded and scored under the
    wrong name."""
    hasher = method_class(method).load(run.model)
    fix = f"fit it again ({fit_command(run)}, or dvc repro its stage)"
    if hasher.n_bits != run.bits:
        raise ValueError(
            f"{run.model} holds a {hasher.n_bits}-bit model, but its path is that of the "
            f"{run.bits}-bit run; {fix}"
        )
    if not run.fit_record.is_file():
        return hasher
    record = read_json(run.fit_record, fix)
    said = {k: record.get(k) for k in ("method", "bits", "seed")}
    expected = {"method": method, "bits": run.bits, "seed": run.seed}
    wrong = [k for k in expected if said[k] is not None and said[k] != expected[k]]
    if wrong:
        got = ", ".join(f"{k} {said[k]!r}" for k in wrong)
        want = ", ".join(f"{k} {expected[k]!r}" for k in wrong)
        raise ValueError(
            f"{run.fit_record} records {got}, but the run it belongs to has {want}; {fix}"
        )
    return hasher


def encode_run(
    method: str, run: Run, features: np.ndarray, split: dict[str, np.ndarray]
) -> dict[str, float]:
    """Encode the split's queries and database with the run's saved hasher; codes/s of each.
    Both code files are written together or not at all (a failure on the database leaves the
    old query codes, never new ones beside old database codes)."""
    hasher = load_model(method, run)
    rates: dict[str, float] = {}
    codes: dict[str, np.ndarray] = {}
    for part in CODE_PARTS:
        start = time.perf_counter()
        codes[part] = hasher.encode(features[split[part]])
        rates[f"{part}_codes_per_s"] = len(codes[part]) / max(time.perf_counter() - start, 1e-9)
    save_npys({run.code_file(part): codes[part] for part in CODE_PARTS})
    return rates


def record_encoding(run: Run, rates: dict[str, float]) -> None:
    """Add the encode throughput and the model's size on disk to the run's fit record."""
    record = read_json(run.fit_record, "fit the run again") if run.fit_record.is_file() else {}
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
