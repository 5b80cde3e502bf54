"""The loop that the fitting stages (fit, ablate, classify) share: read the inputs once, then fit
and save every (bits, seed) run of one method."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from usdh.data import load_split
from usdh.feature_store import load_features
from usdh.fitting import (
    Fitted,
    bank_for,
    fit_on_rows,
    merge_params,
    save_fitted,
    views_from_features,
)
from usdh.stages.common import RunContext, method_params

__all__ = ["Inputs", "fitted_runs"]


@dataclass
class Inputs:
    """What every run of a stage reads: the features of every image and the protocol's split."""

    features: np.ndarray
    split: Mapping[str, np.ndarray]


def fitted_runs(
    params: Mapping[str, Any],
    contexts: list[RunContext],
    overrides: Mapping[str, Any] | None = None,
    part: str | None = None,
) -> Iterator[tuple[RunContext, Fitted, Inputs]]:
    """Fit each context's run on its training rows, save it, and yield ``(ctx, fitted, data)``.

    The features and the split are read once for all runs (they share dataset and protocol);
    ``data`` holds ``features`` (an array of every image) and ``split``. ``overrides`` are merged
    into the method's params.yaml section (an ablation variant); ``part`` names the split part to
    train on instead of the training pool (an ablation variant's ``train_on``).
    """
    if not contexts:
        return
    first = contexts[0]
    fs = load_features(first.features_dir, mmap_mode="r")
    data = Inputs(np.asarray(fs.features), load_split(first.split_dir))
    views = views_from_features(fs, bank_for({c.method for c in contexts}, first.bank_dir))
    for ctx in contexts:
        own = merge_params(method_params(params, ctx.method), ctx.overrides)
        chosen = merge_params(own, overrides or {})
        fitted = fit_on_rows(
            ctx.method,
            ctx.run.bits,
            ctx.run.seed,
            data.features,
            data.split,
            method_params=chosen,
            views=views,
            run=ctx.run,
            part=part,
        )
        # the old codes belong to the old model: gone before the new one is saved, so a failure
        # before the new codes are written leaves a run without codes (which evaluate names),
        # never a new model beside codes it did not make
        shutil.rmtree(ctx.run.codes_dir, ignore_errors=True)
        save_fitted(ctx.run, fitted, ctx.record)
        yield ctx, fitted, data
