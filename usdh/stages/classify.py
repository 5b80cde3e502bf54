"""``python -m usdh classify <method> <bits> <seed>``: a linear classifier on a method's codes
(the classification section's dataset: train -> C on val -> test accuracy)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from usdh.classification import PARTS, classify_codes
from usdh.codes import unpack_bits
from usdh.data import load_prepared, load_split
from usdh.features import load_features
from usdh.fitting import fit_on_rows, save_fitted, views_from_features
from usdh.io import save_json
from usdh.stages.common import RunContext, method_params, run_context

log = logging.getLogger("usdh")


def _context(params: dict[str, Any], method: str, bits: int, seed: int) -> RunContext:
    return run_context(
        params, method, bits, seed, experiment="classification", group="classification"
    )


def outputs(params: dict[str, Any], method: str, bits: int, seed: int) -> list[Path]:
    run = _context(params, method, bits, seed).run
    return [run.model_dir, run.metrics]


def run(params: dict[str, Any], method: str, bits: int, seed: int) -> None:
    """A linear classifier on one method's codes (train -> C on val -> test accuracy)."""
    ctx = _context(params, method, bits, seed)
    ds = load_prepared(ctx.prepared_dir)
    split = load_split(ctx.split_dir, ds)
    fs = load_features(ctx.features_dir, mmap_mode="r")
    features = np.asarray(fs.features)
    fitted = fit_on_rows(
        method,
        bits,
        seed,
        features,
        split,
        method_params=method_params(params, method),
        views=views_from_features(fs),
        run=ctx.run,
    )
    save_fitted(ctx.run, fitted, ctx.record)
    codes = {p: unpack_bits(fitted.hasher.encode(features[split[p]])) for p in PARTS}
    y = ds.labels
    result = classify_codes(*(a for p in PARTS for a in (codes[p], y[split[p]])), seed)
    record = {
        **ctx.record,
        "source": ds.source,
        **result,
        **{f"n_{p}": len(split[p]) for p in PARTS},
    }
    save_json(ctx.run.metrics, record)
    log.info("classify %s %d bits seed %d: accuracy %.4f", method, bits, seed, result["accuracy"])
