"""``python -m usdh ablate <variant> <bits> <seed>``: the ablated method with one variant's loss
overrides, fit to metrics in one stage."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from usdh.data import load_split
from usdh.features import load_features
from usdh.fitting import fit_on_rows, merge_params, save_fitted, views_from_features
from usdh.params import ParamsError, section
from usdh.stages.common import RunContext, method_params, run_context
from usdh.stages.encode import encode_run
from usdh.stages.evaluate import evaluate_context

log = logging.getLogger("usdh")


def _context(params: dict[str, Any], variant: str, bits: int, seed: int) -> RunContext:
    abl = section(params, "ablations")
    if variant not in abl["variants"]:
        raise ParamsError(
            f"ablation variant {variant!r} is not in ablations.variants "
            f"({', '.join(abl['variants'])})"
        )
    return run_context(params, abl["method"], bits, seed, group="ablations", name=variant)


def outputs(params: dict[str, Any], variant: str, bits: int, seed: int) -> list[Path]:
    run = _context(params, variant, bits, seed).run
    return [run.model_dir, run.codes_dir, run.metrics, run.pr_curve, run.p_at_n]


def run(params: dict[str, Any], variant: str, bits: int, seed: int) -> None:
    """One ablation run: the ablated method with one variant's loss overrides, fit to metrics."""
    ctx = _context(params, variant, bits, seed)
    overrides = section(params, "ablations", "variants", variant)
    fs = load_features(ctx.features_dir, mmap_mode="r")
    features = np.asarray(fs.features)
    split = load_split(ctx.split_dir)
    fitted = fit_on_rows(
        ctx.method,
        bits,
        seed,
        features,
        split,
        method_params=merge_params(method_params(params, ctx.method), {"loss": overrides}),
        views=views_from_features(fs),
        run=ctx.run,
    )
    record = {"variant": variant, "overrides": overrides}
    save_fitted(ctx.run, fitted, {**ctx.record, **record})
    encode_run(ctx.method, ctx.run, features, split)
    m = evaluate_context(params, ctx, **record)
    log.info("ablation %s %d bits seed %d: mAP %.4f", variant, bits, seed, m["mAP"])
