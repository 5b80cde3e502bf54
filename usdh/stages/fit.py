"""``python -m usdh fit <method> <bits> <seed>``: fit one method on the experiment's rows."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from usdh.data import load_split
from usdh.features import load_features
from usdh.fitting import fit_on_rows, save_fitted, views_from_features
from usdh.stages.common import method_params, run_context

log = logging.getLogger("usdh")


def outputs(params: dict[str, Any], method: str, bits: int, seed: int) -> list[Path]:
    return [run_context(params, method, bits, seed).run.model_dir]


def run(params: dict[str, Any], method: str, bits: int, seed: int) -> None:
    """Fit one method at one code length and seed on the experiment's training rows."""
    ctx = run_context(params, method, bits, seed)
    fs = load_features(ctx.features_dir, mmap_mode="r")
    fitted = fit_on_rows(
        method,
        bits,
        seed,
        fs.features,
        load_split(ctx.split_dir),
        method_params=method_params(params, method),
        views=views_from_features(fs),
        run=ctx.run,
    )
    save_fitted(ctx.run, fitted, ctx.record)
    log.info("fitted %s -> %s", fitted.hasher, ctx.run.model)
